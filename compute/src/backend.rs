//! The contract between model code and the machines that run it.
//!
//! Model code (`vit.rs`, the methods) is written once against [`Backend`]; the CPU
//! reference ([`crate::cpu::Cpu`]) and the GPU ([`crate::gpu::Gpu`]) implement it alike.
//!
//! Conventions, after llm.c:
//! - Buffers are flat arrays of 4-byte words (f32, or u32 where an op says so). Shapes are
//!   passed to each op as plain sizes; row-major, last index fastest.
//! - Forward ops overwrite their outputs. Backward ops take the upstream gradient first,
//!   then what forward saved, then the inputs, and ADD into every gradient they write
//!   (`+=`); zeroing is its own step ([`Backend::fill`]).
//! - On the GPU an op only records a dispatch; nothing runs until a [`Backend::read`] (or
//!   [`Backend::flush`]) submits the recorded work, so a training step is one submit.
//!   On the CPU every op runs at once.
use std::future::Future;

/// How a strided batched matmul sees one operand. Element `(z, r, c)` of the operand is
/// at `offset + (z / batch[1]) * batch_stride[0] + (z % batch[1]) * batch_stride[1]
/// + r * row + c * col`, where `batch` is [`Matmul::batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Strides {
    pub offset: usize,
    pub row: usize,
    pub col: usize,
    pub batch_stride: [usize; 2],
}

impl Strides {
    /// A plain row-major `[rows, cols]` matrix (no batch).
    pub fn row_major(cols: usize) -> Self {
        Strides { offset: 0, row: cols, col: 1, batch_stride: [0, 0] }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(cols: usize) -> Self {
        Strides { offset: 0, row: 1, col: cols, batch_stride: [0, 0] }
    }
    pub fn at(self, offset: usize) -> Self {
        Strides { offset, ..self }
    }
    pub fn batched(self, outer: usize, inner: usize) -> Self {
        Strides { batch_stride: [outer, inner], ..self }
    }
    /// Word index of element `(z, r, c)`.
    pub fn index(&self, batch_inner: usize, z: usize, r: usize, c: usize) -> usize {
        self.offset
            + (z / batch_inner) * self.batch_stride[0]
            + (z % batch_inner) * self.batch_stride[1]
            + r * self.row
            + c * self.col
    }
}

/// `C[z] = beta * C[z] + alpha * A[z] · B[z] (+ bias)` for `z` in `0..batch[0]*batch[1]`,
/// with `A[z]: [m, k]`, `B[z]: [k, n]`, `C[z]: [m, n]`, each seen through its [`Strides`],
/// and `bias: [n]` added to every row when given. `beta` is 0 (overwrite) or 1 (add).
/// One op serves linear layers (`y = x · Wᵀ + b` with timm's `W: [out, in]`), every
/// transpose their backward needs, and attention's `Q·Kᵀ` and `P·V` read in place from
/// the fused qkv buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: [usize; 2],
    pub a: Strides,
    pub b: Strides,
    pub c: Strides,
    pub alpha: f32,
    pub beta: f32,
}

impl Matmul {
    /// Row-major `C[m,n] = A[m,k] · B[k,n]`.
    pub fn plain(m: usize, n: usize, k: usize) -> Self {
        Matmul {
            m,
            n,
            k,
            batch: [1, 1],
            a: Strides::row_major(k),
            b: Strides::row_major(n),
            c: Strides::row_major(n),
            alpha: 1.0,
            beta: 0.0,
        }
    }
    pub fn batch_count(&self) -> usize {
        self.batch[0] * self.batch[1]
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k * self.batch_count()) as f64
    }
    /// Highest word index (exclusive) each operand touches: a, b, c. Strides are
    /// non-negative, so the last batch's last element reaches furthest.
    pub fn extents(&self) -> [usize; 3] {
        let ext = |s: &Strides, r: usize, c: usize| {
            if r == 0 || c == 0 || self.batch_count() == 0 {
                return 0;
            }
            s.offset
                + (self.batch[0] - 1) * s.batch_stride[0]
                + (self.batch[1] - 1) * s.batch_stride[1]
                + (r - 1) * s.row
                + (c - 1) * s.col
                + 1
        };
        [ext(&self.a, self.m, self.k), ext(&self.b, self.k, self.n), ext(&self.c, self.m, self.n)]
    }
}

/// In a row-index map, "no source row" (see [`Backend::gather_rows`]).
pub const NO_ROW: u32 = u32::MAX;

/// Which element order a patch vector has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchOrder {
    /// `(c, py, px)`: a Conv2d weight `[D, C, p, p]` flattened, as timm's patch embedding.
    ChannelFirst = 0,
    /// `(py, px, c)`: MAE's `patchify` (`nchpwq->nhwpqc`).
    ChannelLast = 1,
}

/// `torch.optim.AdamW`'s hyper-parameters for one update; `step` counts from 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, step: 1 }
    }
}

pub trait Backend {
    /// A handle to device memory; clones share the memory.
    type Buf: Clone;

    /// Human-readable name ("cpu", or the GPU adapter).
    fn name(&self) -> String;

    /// Why the device is gone, once it is (a GPU device lost or destroyed); reads after that
    /// return NaN, so a caller checks this before trusting a result. The CPU never is.
    fn lost(&self) -> Option<String> {
        None
    }

    // ---- memory ----
    /// `len` words, zeroed.
    fn alloc(&self, len: usize) -> Self::Buf;
    fn upload(&self, data: &[f32]) -> Self::Buf;
    /// u32 data (labels, indices) in a buffer of the same kind.
    fn upload_u32(&self, data: &[u32]) -> Self::Buf;
    /// Overwrite the start of `dst` with `data`, in order with the recorded ops.
    fn write(&self, dst: &Self::Buf, data: &[f32]);
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Set every word to `value` (zero-grad is `fill(g, 0.0)`).
    fn fill(&self, buf: &Self::Buf, value: f32);
    /// `dst[dst_off..][..n] = src[src_off..][..n]`.
    fn copy(&self, src: &Self::Buf, src_off: usize, dst: &Self::Buf, dst_off: usize, n: usize);
    /// Submit what has been recorded (no-op on the CPU).
    fn flush(&self);
    /// Finish the recorded work and return the buffer's contents.
    fn read(&self, buf: &Self::Buf) -> impl Future<Output = Vec<f32>>;

    // ---- ops (see each op's file in `ops/` for the math) ----
    /// See [`Matmul`]. `bias: [n]`.
    fn matmul(&self, p: &Matmul, a: &Self::Buf, b: &Self::Buf, bias: Option<&Self::Buf>, c: &Self::Buf);
    /// `out[c] += Σ_r x[r, c]` — the bias gradient. `x: [rows, cols]`, `out: [cols]`.
    fn sum_rows(&self, x: &Self::Buf, out: &Self::Buf, rows: usize, cols: usize);
    /// `out = a + b`, all `[n]`.
    fn add(&self, a: &Self::Buf, b: &Self::Buf, out: &Self::Buf, n: usize);

    /// Row-wise LayerNorm of `x: [rows, cols]` into `y`, saving `mean, rstd: [rows]`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        x: &Self::Buf,
        weight: &Self::Buf,
        bias: &Self::Buf,
        y: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        rows: usize,
        cols: usize,
        eps: f32,
    );
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dy: &Self::Buf,
        x: &Self::Buf,
        weight: &Self::Buf,
        mean: &Self::Buf,
        rstd: &Self::Buf,
        dx: &Self::Buf,
        dweight: &Self::Buf,
        dbias: &Self::Buf,
        rows: usize,
        cols: usize,
    );

    /// Exact GELU `y = x·Φ(x)`, `[n]`.
    fn gelu_forward(&self, x: &Self::Buf, y: &Self::Buf, n: usize);
    fn gelu_backward(&self, dy: &Self::Buf, x: &Self::Buf, dx: &Self::Buf, n: usize);

    /// Row-wise `y = softmax(x)` over `cols`; `x, y: [rows, cols]` (may not alias).
    fn softmax_forward(&self, x: &Self::Buf, y: &Self::Buf, rows: usize, cols: usize);
    /// `dx += y ⊙ (dy − Σ_c dy⊙y)`.
    fn softmax_backward(&self, dy: &Self::Buf, y: &Self::Buf, dx: &Self::Buf, rows: usize, cols: usize);

    /// Cut `img: [b, c, h, w]` into non-overlapping `p×p` patches:
    /// `out: [b, (h/p)*(w/p), c*p*p]` in the given element order.
    #[allow(clippy::too_many_arguments)]
    fn patchify_forward(
        &self,
        img: &Self::Buf,
        out: &Self::Buf,
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        p: usize,
        order: PatchOrder,
    );
    /// `dimg += unpatchify(dout)`.
    #[allow(clippy::too_many_arguments)]
    fn patchify_backward(
        &self,
        dout: &Self::Buf,
        dimg: &Self::Buf,
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        p: usize,
        order: PatchOrder,
    );

    /// Prepend the class token and add position embeddings:
    /// `x[b, 0] = cls + pos[0]`, `x[b, 1 + l] = patches[b, l] + pos[1 + l]`.
    /// `patches: [b, l, d]`, `cls: [d]`, `pos: [1 + l, d]`, `x: [b, 1 + l, d]`.
    #[allow(clippy::too_many_arguments)]
    fn cls_pos_forward(
        &self,
        patches: &Self::Buf,
        cls: &Self::Buf,
        pos: &Self::Buf,
        x: &Self::Buf,
        b: usize,
        l: usize,
        d: usize,
    );
    /// `dpatches += dx[:, 1:]`, `dcls += Σ_b dx[b, 0]`, `dpos += Σ_b dx[b]` (`dpos`
    /// may be `None` for fixed sin-cos embeddings).
    #[allow(clippy::too_many_arguments)]
    fn cls_pos_backward(
        &self,
        dx: &Self::Buf,
        dpatches: &Self::Buf,
        dcls: &Self::Buf,
        dpos: Option<&Self::Buf>,
        b: usize,
        l: usize,
        d: usize,
    );

    /// Softmax cross-entropy per row: `logits: [rows, classes]`, `labels: [rows]` (u32),
    /// `losses: [rows]`, `probs: [rows, classes]` (saved for backward).
    fn cross_entropy_forward(
        &self,
        logits: &Self::Buf,
        labels: &Self::Buf,
        losses: &Self::Buf,
        probs: &Self::Buf,
        rows: usize,
        classes: usize,
    );
    /// `dlogits[r] += dloss[r] · (probs[r] − onehot(labels[r]))`; `dloss: [rows]`.
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_backward(
        &self,
        dloss: &Self::Buf,
        probs: &Self::Buf,
        labels: &Self::Buf,
        dlogits: &Self::Buf,
        rows: usize,
        classes: usize,
    );

    /// Mean squared error per row: `losses[r] = mean_c (pred[r,c] − target[r,c])²`.
    fn mse_forward(&self, pred: &Self::Buf, target: &Self::Buf, losses: &Self::Buf, rows: usize, cols: usize);
    /// `dpred[r,c] += dloss[r] · 2 (pred − target) / cols`.
    #[allow(clippy::too_many_arguments)]
    fn mse_backward(
        &self,
        dloss: &Self::Buf,
        pred: &Self::Buf,
        target: &Self::Buf,
        dpred: &Self::Buf,
        rows: usize,
        cols: usize,
    );

    /// `out[slot] = Σ x²` over `x: [n]` (the global-norm clip sums these slots).
    fn sum_squares(&self, x: &Self::Buf, n: usize, out: &Self::Buf, slot: usize);
    /// `coef[0] = min(1, max_norm / (sqrt(Σ sums) + 1e-6))`, as
    /// `torch.nn.utils.clip_grad_norm_`; also `coef[1] = sqrt(Σ sums)`, the norm.
    fn clip_coef(&self, sums: &Self::Buf, count: usize, max_norm: f32, coef: &Self::Buf);
    /// One `torch.optim.AdamW` update of `param: [n]` with `grad · coef[0]` when `coef`
    /// is given (gradient clipping) or `grad` alone.
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &self,
        param: &Self::Buf,
        grad: &Self::Buf,
        m: &Self::Buf,
        v: &Self::Buf,
        coef: Option<&Self::Buf>,
        n: usize,
        hp: &AdamW,
    );

    /// `dst[r] = src[idx[r]]` row by row (`cols` words each); where `idx[r]` is
    /// [`NO_ROW`] the row is `fill: [cols]`, or zeros. `idx: [rows]` (u32).
    fn gather_rows(
        &self,
        src: &Self::Buf,
        idx: &Self::Buf,
        fill: Option<&Self::Buf>,
        dst: &Self::Buf,
        rows: usize,
        cols: usize,
    );
    /// `x[b, t] += pos[t]`: `x: [batch, tokens, dim]`, `pos: [tokens, dim]`.
    fn add_pos(&self, x: &Self::Buf, pos: &Self::Buf, batch: usize, tokens: usize, dim: usize);

    /// Swin's window-attention bias, in place: `scores[bw, h, i, j] += table[index[i·n + j], h]
    /// + mask[bw % nw, i, j]`. `scores: [windows, heads, n, n]`, `table: [T, heads]`,
    /// `index: [n, n]` (u32), `mask: [nw, n, n]` (shifted windows only).
    #[allow(clippy::too_many_arguments)]
    fn rel_pos_bias_forward(
        &self,
        scores: &Self::Buf,
        table: &Self::Buf,
        index: &Self::Buf,
        mask: Option<&Self::Buf>,
        windows: usize,
        nw: usize,
        heads: usize,
        n: usize,
    );
    /// `dtable[t, h] += Σ_bw Σ_{ij: index[ij] = t} dscores[bw, h, ij]`, with each table
    /// row's positions listed by `offsets: [T + 1]`, `entries: [n²]` (u32; see
    /// [`crate::ops::rel_pos_bias::Csr`]). The scores gradient itself passes through.
    #[allow(clippy::too_many_arguments)]
    fn rel_pos_bias_backward(
        &self,
        dscores: &Self::Buf,
        offsets: &Self::Buf,
        entries: &Self::Buf,
        dtable: &Self::Buf,
        windows: usize,
        heads: usize,
        n: usize,
        rows: usize,
    );

    /// Row L2 normalisation `y[r] = g[r] · x[r] / max(‖x[r]‖, eps)`, `g = 1` without a gain
    /// (`F.normalize`; `weight_norm` with the gain and eps 0). `x, y: [rows, cols]`,
    /// `gain: [rows]`, `norm: [rows]` (the unclamped norms, saved for backward).
    fn l2norm_forward(
        &self,
        x: &Self::Buf,
        gain: Option<&Self::Buf>,
        y: &Self::Buf,
        norm: &Self::Buf,
        rows: usize,
        cols: usize,
        eps: f32,
    );
    /// `dx += g/n · (dy − x̂ (x̂·dy))`, `dgain += x̂·dy` with `n = max(‖x‖, eps)`, `x̂ = x/n`
    /// (`dgain` `None` for a frozen gain).
    fn l2norm_backward(
        &self,
        dy: &Self::Buf,
        norm: &Self::Buf,
        x: &Self::Buf,
        gain: Option<&Self::Buf>,
        dx: &Self::Buf,
        dgain: Option<&Self::Buf>,
        rows: usize,
        cols: usize,
        eps: f32,
    );

    /// Per row `losses[r] = −Σ_c targets[r,c] · log_softmax(scale · logits[r])_c`, saving
    /// `probs = softmax(scale · logits)`; all `[rows, cols]` but `losses: [rows]`.
    fn soft_cross_entropy_forward(
        &self,
        logits: &Self::Buf,
        targets: &Self::Buf,
        losses: &Self::Buf,
        probs: &Self::Buf,
        rows: usize,
        cols: usize,
        scale: f32,
    );
    /// `dlogits[r] += dloss[r] · scale · (probs[r] · Σ_c targets[r,c] − targets[r])`.
    fn soft_cross_entropy_backward(
        &self,
        dloss: &Self::Buf,
        probs: &Self::Buf,
        targets: &Self::Buf,
        dlogits: &Self::Buf,
        rows: usize,
        cols: usize,
        scale: f32,
    );

    /// DINO's teacher targets `q[r] = softmax((x[r] − center) / temp)`; `x, q: [rows, cols]`,
    /// `center: [cols]`.
    fn center_sharpen(&self, x: &Self::Buf, center: &Self::Buf, q: &Self::Buf, rows: usize, cols: usize, temp: f32);
    /// In place: `center ← momentum · center + (1 − momentum) · mean_r x[r]`.
    fn center_update(&self, x: &Self::Buf, center: &Self::Buf, rows: usize, cols: usize, momentum: f32);
}
