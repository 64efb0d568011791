//! The layers a transformer is made of, each forward next to its backward, over
//! [`Backend`] ops. Backward functions take the upstream gradient first, then what forward
//! saved, then inputs, and add into gradients, as the ops do.
use crate::backend::{Backend, Matmul, Strides};

/// `y = x · Wᵀ + b` with timm's `W: [out, inp]`, `b: [out]`.
pub struct Linear<B: Backend> {
    pub w: B::Buf,
    pub b: Option<B::Buf>,
    pub inp: usize,
    pub out: usize,
}

impl<B: Backend> Linear<B> {
    /// The matmul computing `y (+)= x · Wᵀ + b` with `x` rows `x_row` words apart.
    fn forward_mm(&self, rows: usize, x_row: usize, beta: f32) -> Matmul {
        Matmul {
            a: Strides { row: x_row, ..Strides::row_major(self.inp) },
            b: Strides::transposed(self.inp),
            beta,
            ..Matmul::plain(rows, self.out, self.inp)
        }
    }

    /// `y = x · Wᵀ + b`; `x: [rows, inp]`, `y: [rows, out]`.
    pub fn forward(&self, be: &B, x: &B::Buf, y: &B::Buf, rows: usize) {
        be.matmul(&self.forward_mm(rows, self.inp, 0.0), x, &self.w, self.b.as_ref(), y);
    }

    /// `y += x · Wᵀ + b`: the residual branch lands on the stream without a copy.
    pub fn forward_add(&self, be: &B, x: &B::Buf, y: &B::Buf, rows: usize) {
        be.matmul(&self.forward_mm(rows, self.inp, 1.0), x, &self.w, self.b.as_ref(), y);
    }

    /// `forward` on rows `x_row` words apart, e.g. the class token of every sample.
    pub fn forward_strided(&self, be: &B, x: &B::Buf, x_row: usize, y: &B::Buf, rows: usize) {
        be.matmul(&self.forward_mm(rows, x_row, 0.0), x, &self.w, self.b.as_ref(), y);
    }

    /// `dx += dy · W`, `dW += dyᵀ · x`, `db += Σ_rows dy`.
    pub fn backward(&self, be: &B, dy: &B::Buf, x: &B::Buf, grad: &Linear<B>, dx: Option<&B::Buf>, rows: usize) {
        self.backward_strided(be, dy, x, self.inp, grad, dx, rows)
    }

    /// `backward` for [`Linear::forward_strided`]: `x` and `dx` rows are `x_row` apart.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_strided(
        &self,
        be: &B,
        dy: &B::Buf,
        x: &B::Buf,
        x_row: usize,
        grad: &Linear<B>,
        dx: Option<&B::Buf>,
        rows: usize,
    ) {
        let rowed = Strides { row: x_row, ..Strides::row_major(self.inp) };
        if let Some(dx) = dx {
            let mm = Matmul { c: rowed, beta: 1.0, ..Matmul::plain(rows, self.inp, self.out) };
            be.matmul(&mm, dy, &self.w, None, dx);
        }
        let dw =
            Matmul { a: Strides::transposed(self.out), b: rowed, beta: 1.0, ..Matmul::plain(self.out, self.inp, rows) };
        be.matmul(&dw, dy, x, None, &grad.w);
        if let Some(db) = &grad.b {
            be.sum_rows(dy, db, rows, self.out);
        }
    }
}

/// LayerNorm over the last dimension (timm's ViT uses eps 1e-6).
pub struct LayerNorm<B: Backend> {
    pub w: B::Buf,
    pub b: B::Buf,
    pub dim: usize,
    pub eps: f32,
}

/// What a LayerNorm forward keeps for its backward.
pub struct NormSaved<B: Backend> {
    pub mean: B::Buf,
    pub rstd: B::Buf,
}

impl<B: Backend> LayerNorm<B> {
    pub fn forward(&self, be: &B, x: &B::Buf, y: &B::Buf, rows: usize) -> NormSaved<B> {
        let saved = NormSaved { mean: be.alloc(rows), rstd: be.alloc(rows) };
        be.layernorm_forward(x, &self.w, &self.b, y, &saved.mean, &saved.rstd, rows, self.dim, self.eps);
        saved
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        be: &B,
        dy: &B::Buf,
        saved: &NormSaved<B>,
        x: &B::Buf,
        grad: &LayerNorm<B>,
        dx: &B::Buf,
        rows: usize,
    ) {
        be.layernorm_backward(dy, x, &self.w, &saved.mean, &saved.rstd, dx, &grad.w, &grad.b, rows, self.dim);
    }
}

/// Multi-head scaled dot-product attention read in place from timm's fused
/// `qkv: [b, n, 3, heads, hd]` buffer; the output `[b, n, heads·hd]` is what timm feeds
/// its `proj`. Probabilities `[b, heads, n, n]` are kept (backward and visualisation).
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Attention {
    fn dim(&self) -> usize {
        self.heads * self.head_dim
    }
    fn scale(&self) -> f32 {
        (self.head_dim as f32).powf(-0.5)
    }
    fn probs_len(&self) -> usize {
        self.batch * self.heads * self.tokens * self.tokens
    }
    /// `part` 0, 1, 2 = q, k, v of the qkv buffer as `[tokens, head_dim]` per (b, h).
    fn qkv_part(&self, part: usize) -> Strides {
        let (n, c) = (self.tokens, self.dim());
        Strides { offset: part * c, row: 3 * c, col: 1, batch_stride: [n * 3 * c, self.head_dim] }
    }
    fn qkv_part_t(&self, part: usize) -> Strides {
        let s = self.qkv_part(part);
        Strides { row: s.col, col: s.row, ..s }
    }
    /// `[tokens, tokens]` per (b, h) of a probabilities-shaped buffer.
    fn probs(&self) -> Strides {
        let n = self.tokens;
        Strides { offset: 0, row: n, col: 1, batch_stride: [self.heads * n * n, n * n] }
    }
    fn probs_t(&self) -> Strides {
        let s = self.probs();
        Strides { row: s.col, col: s.row, ..s }
    }
    /// `[tokens, head_dim]` per (b, h) of the `[b, n, heads·hd]` output.
    fn out(&self) -> Strides {
        let (n, c) = (self.tokens, self.dim());
        Strides { offset: 0, row: c, col: 1, batch_stride: [n * c, self.head_dim] }
    }
    fn mm(&self, m: usize, n: usize, k: usize, a: Strides, b: Strides, c: Strides, alpha: f32, beta: f32) -> Matmul {
        Matmul { m, n, k, batch: [self.batch, self.heads], a, b, c, alpha, beta }
    }

    /// `probs = softmax(q·kᵀ·scale)`, `out = probs · v`. Returns the probabilities.
    pub fn forward<B: Backend>(&self, be: &B, qkv: &B::Buf, out: &B::Buf) -> B::Buf {
        self.forward_biased(be, qkv, out, |_| {})
    }

    /// [`Attention::forward`] with `bias` applied in place to the scores
    /// `[b, heads, n, n]` before the softmax (Swin's relative position bias and mask).
    pub fn forward_biased<B: Backend>(&self, be: &B, qkv: &B::Buf, out: &B::Buf, bias: impl FnOnce(&B::Buf)) -> B::Buf {
        let (n, hd) = (self.tokens, self.head_dim);
        let scores = be.alloc(self.probs_len());
        be.matmul(
            &self.mm(n, n, hd, self.qkv_part(0), self.qkv_part_t(1), self.probs(), self.scale(), 0.0),
            qkv,
            qkv,
            None,
            &scores,
        );
        let probs = be.alloc(self.probs_len());
        bias(&scores);
        be.softmax_forward(&scores, &probs, self.batch * self.heads * n, n);
        be.matmul(&self.mm(n, hd, n, self.probs(), self.qkv_part(2), self.out(), 1.0, 0.0), &probs, qkv, None, out);
        probs
    }

    /// `dqkv += ∂/∂qkv` given `dout`: `dP = dout·vᵀ`, `dv += Pᵀ·dout`,
    /// `dS = softmax'(dP)`, `dq += scale·dS·k`, `dk += scale·dSᵀ·q`.
    pub fn backward<B: Backend>(&self, be: &B, dout: &B::Buf, probs: &B::Buf, qkv: &B::Buf, dqkv: &B::Buf) {
        self.backward_biased(be, dout, probs, qkv, dqkv, |_| {})
    }

    /// Backward of [`Attention::forward_biased`]: `dbias` receives the scores gradient
    /// `[b, heads, n, n]` (which is also the bias's output gradient).
    pub fn backward_biased<B: Backend>(
        &self,
        be: &B,
        dout: &B::Buf,
        probs: &B::Buf,
        qkv: &B::Buf,
        dqkv: &B::Buf,
        dbias: impl FnOnce(&B::Buf),
    ) {
        let (n, hd, s) = (self.tokens, self.head_dim, self.scale());
        let dprobs = be.alloc(self.probs_len());
        be.matmul(&self.mm(n, n, hd, self.out(), self.qkv_part_t(2), self.probs(), 1.0, 0.0), dout, qkv, None, &dprobs);
        be.matmul(&self.mm(n, hd, n, self.probs_t(), self.out(), self.qkv_part(2), 1.0, 1.0), probs, dout, None, dqkv);
        let dscores = be.alloc(self.probs_len());
        be.softmax_backward(&dprobs, probs, &dscores, self.batch * self.heads * n, n);
        dbias(&dscores);
        be.matmul(
            &self.mm(n, hd, n, self.probs(), self.qkv_part(1), self.qkv_part(0), s, 1.0),
            &dscores,
            qkv,
            None,
            dqkv,
        );
        be.matmul(
            &self.mm(n, hd, n, self.probs_t(), self.qkv_part(0), self.qkv_part(1), s, 1.0),
            &dscores,
            qkv,
            None,
            dqkv,
        );
    }
}
