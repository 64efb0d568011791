//! The CPU backend: every op runs at once through the references in `ops/`. It is the
//! test oracle for the GPU and the fallback where WebGPU is missing (it compiles to wasm).
use std::cell::RefCell;
use std::rc::Rc;

use crate::backend::{AdamW, Backend, Matmul, PatchOrder};
use crate::ops;

#[derive(Clone, Debug, Default)]
pub struct Cpu;

/// CPU memory: a shared, mutable vector of words. When the last handle drops, the vector
/// goes back to a per-thread pool, so a training step reuses the last step's memory
/// instead of faulting in fresh pages for every activation.
#[derive(Clone, Debug)]
pub struct CpuBuf(Rc<Storage>);

#[derive(Debug)]
struct Storage(RefCell<Vec<f32>>);

impl Drop for Storage {
    fn drop(&mut self) {
        let v = std::mem::take(self.0.get_mut());
        POOL.with(|p| p.borrow_mut().put(v));
    }
}

/// Free vectors by length, up to a cap on the words kept.
#[derive(Default)]
struct Pool {
    free: std::collections::HashMap<usize, Vec<Vec<f32>>>,
    words: usize,
}

const POOL_CAP_WORDS: usize = 1 << 30; // 4 GiB

impl Pool {
    fn put(&mut self, v: Vec<f32>) {
        if v.len() >= 1024 && self.words + v.len() <= POOL_CAP_WORDS {
            self.words += v.len();
            self.free.entry(v.len()).or_default().push(v);
        }
    }
    fn take(&mut self, len: usize) -> Option<Vec<f32>> {
        let v = self.free.get_mut(&len)?.pop()?;
        self.words -= len;
        Some(v)
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

impl CpuBuf {
    fn new(v: Vec<f32>) -> Self {
        CpuBuf(Rc::new(Storage(RefCell::new(v))))
    }
    fn r(&self) -> std::cell::Ref<'_, Vec<f32>> {
        self.0 .0.borrow()
    }
    fn w(&self) -> std::cell::RefMut<'_, Vec<f32>> {
        self.0 .0.try_borrow_mut().expect("an op's output aliases one of its inputs")
    }
}

impl Backend for Cpu {
    type Buf = CpuBuf;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn alloc(&self, len: usize) -> CpuBuf {
        match POOL.with(|p| p.borrow_mut().take(len)) {
            Some(mut v) => {
                v.fill(0.0);
                CpuBuf::new(v)
            }
            None => CpuBuf::new(vec![0.0; len]),
        }
    }
    fn upload(&self, data: &[f32]) -> CpuBuf {
        let b = self.alloc(data.len());
        b.w().copy_from_slice(data);
        b
    }
    fn upload_u32(&self, data: &[u32]) -> CpuBuf {
        self.upload(&data.iter().map(|v| f32::from_bits(*v)).collect::<Vec<_>>())
    }
    fn write(&self, dst: &CpuBuf, data: &[f32]) {
        dst.w()[..data.len()].copy_from_slice(data);
    }
    fn len(&self, buf: &CpuBuf) -> usize {
        buf.r().len()
    }
    fn fill(&self, buf: &CpuBuf, value: f32) {
        buf.w().fill(value);
    }
    fn copy(&self, src: &CpuBuf, src_off: usize, dst: &CpuBuf, dst_off: usize, n: usize) {
        if Rc::ptr_eq(&src.0, &dst.0) {
            dst.w().copy_within(src_off..src_off + n, dst_off);
        } else {
            dst.w()[dst_off..dst_off + n].copy_from_slice(&src.r()[src_off..src_off + n]);
        }
    }
    fn flush(&self) {}
    async fn read(&self, buf: &CpuBuf) -> Vec<f32> {
        buf.r().clone()
    }

    fn matmul(&self, p: &Matmul, a: &CpuBuf, b: &CpuBuf, bias: Option<&CpuBuf>, c: &CpuBuf) {
        let bias = bias.map(|x| x.r());
        ops::matmul::matmul(p, &a.r(), &b.r(), bias.as_deref().map(|v| v.as_slice()), &mut c.w());
    }
    fn sum_rows(&self, x: &CpuBuf, out: &CpuBuf, rows: usize, cols: usize) {
        ops::matmul::sum_rows(&x.r(), &mut out.w(), rows, cols);
    }
    fn add(&self, a: &CpuBuf, b: &CpuBuf, out: &CpuBuf, n: usize) {
        ops::matmul::add(&a.r(), &b.r(), &mut out.w(), n);
    }

    fn layernorm_forward(
        &self,
        x: &CpuBuf,
        weight: &CpuBuf,
        bias: &CpuBuf,
        y: &CpuBuf,
        mean: &CpuBuf,
        rstd: &CpuBuf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) {
        ops::layernorm::layernorm_forward(
            &x.r(),
            &weight.r(),
            &bias.r(),
            &mut y.w(),
            &mut mean.w(),
            &mut rstd.w(),
            rows,
            cols,
            eps,
        );
    }
    fn layernorm_backward(
        &self,
        dy: &CpuBuf,
        x: &CpuBuf,
        weight: &CpuBuf,
        mean: &CpuBuf,
        rstd: &CpuBuf,
        dx: &CpuBuf,
        dweight: &CpuBuf,
        dbias: &CpuBuf,
        rows: usize,
        cols: usize,
    ) {
        ops::layernorm::layernorm_backward(
            &dy.r(),
            &x.r(),
            &weight.r(),
            &mean.r(),
            &rstd.r(),
            &mut dx.w(),
            &mut dweight.w(),
            &mut dbias.w(),
            rows,
            cols,
        );
    }

    fn gelu_forward(&self, x: &CpuBuf, y: &CpuBuf, n: usize) {
        ops::gelu::gelu_forward(&x.r(), &mut y.w(), n);
    }
    fn gelu_backward(&self, dy: &CpuBuf, x: &CpuBuf, dx: &CpuBuf, n: usize) {
        ops::gelu::gelu_backward(&dy.r(), &x.r(), &mut dx.w(), n);
    }

    fn softmax_forward(&self, x: &CpuBuf, y: &CpuBuf, rows: usize, cols: usize) {
        ops::softmax::softmax_forward(&x.r(), &mut y.w(), rows, cols);
    }
    fn softmax_backward(&self, dy: &CpuBuf, y: &CpuBuf, dx: &CpuBuf, rows: usize, cols: usize) {
        ops::softmax::softmax_backward(&dy.r(), &y.r(), &mut dx.w(), rows, cols);
    }

    fn patchify_forward(
        &self,
        img: &CpuBuf,
        out: &CpuBuf,
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        p: usize,
        order: PatchOrder,
    ) {
        ops::patchify::patchify_forward(&img.r(), &mut out.w(), b, c, h, w, p, order);
    }
    fn patchify_backward(
        &self,
        dout: &CpuBuf,
        dimg: &CpuBuf,
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        p: usize,
        order: PatchOrder,
    ) {
        ops::patchify::patchify_backward(&dout.r(), &mut dimg.w(), b, c, h, w, p, order);
    }

    fn cls_pos_forward(&self, patches: &CpuBuf, cls: &CpuBuf, pos: &CpuBuf, x: &CpuBuf, b: usize, l: usize, d: usize) {
        ops::cls_pos::cls_pos_forward(&patches.r(), &cls.r(), &pos.r(), &mut x.w(), b, l, d);
    }
    fn cls_pos_backward(
        &self,
        dx: &CpuBuf,
        dpatches: &CpuBuf,
        dcls: &CpuBuf,
        dpos: Option<&CpuBuf>,
        b: usize,
        l: usize,
        d: usize,
    ) {
        let mut dpos = dpos.map(|x| x.w());
        ops::cls_pos::cls_pos_backward(
            &dx.r(),
            &mut dpatches.w(),
            &mut dcls.w(),
            dpos.as_deref_mut().map(|v| v.as_mut_slice()),
            b,
            l,
            d,
        );
    }

    fn cross_entropy_forward(
        &self,
        logits: &CpuBuf,
        labels: &CpuBuf,
        losses: &CpuBuf,
        probs: &CpuBuf,
        rows: usize,
        classes: usize,
    ) {
        ops::cross_entropy::cross_entropy_forward(
            &logits.r(),
            &labels.r(),
            &mut losses.w(),
            &mut probs.w(),
            rows,
            classes,
        );
    }
    fn cross_entropy_backward(
        &self,
        dloss: &CpuBuf,
        probs: &CpuBuf,
        labels: &CpuBuf,
        dlogits: &CpuBuf,
        rows: usize,
        classes: usize,
    ) {
        ops::cross_entropy::cross_entropy_backward(
            &dloss.r(),
            &probs.r(),
            &labels.r(),
            &mut dlogits.w(),
            rows,
            classes,
        );
    }

    fn mse_forward(&self, pred: &CpuBuf, target: &CpuBuf, losses: &CpuBuf, rows: usize, cols: usize) {
        ops::mse::mse_forward(&pred.r(), &target.r(), &mut losses.w(), rows, cols);
    }
    fn mse_backward(&self, dloss: &CpuBuf, pred: &CpuBuf, target: &CpuBuf, dpred: &CpuBuf, rows: usize, cols: usize) {
        ops::mse::mse_backward(&dloss.r(), &pred.r(), &target.r(), &mut dpred.w(), rows, cols);
    }

    fn sum_squares(&self, x: &CpuBuf, n: usize, out: &CpuBuf, slot: usize) {
        let s = ops::adamw::sum_squares(&x.r(), n);
        out.w()[slot] = s;
    }
    fn clip_coef(&self, sums: &CpuBuf, count: usize, max_norm: f32, coef: &CpuBuf) {
        let c = ops::adamw::clip_coef(&sums.r(), count, max_norm);
        coef.w()[..2].copy_from_slice(&c);
    }
    fn adamw(
        &self,
        param: &CpuBuf,
        grad: &CpuBuf,
        m: &CpuBuf,
        v: &CpuBuf,
        coef: Option<&CpuBuf>,
        n: usize,
        hp: &AdamW,
    ) {
        let coef = coef.map(|c| c.r()[0]).unwrap_or(1.0);
        ops::adamw::adamw(&mut param.w(), &grad.r(), &mut m.w(), &mut v.w(), coef, n, hp);
    }

    fn gather_rows(&self, src: &CpuBuf, idx: &CpuBuf, fill: Option<&CpuBuf>, dst: &CpuBuf, rows: usize, cols: usize) {
        let fill = fill.map(|f| f.r());
        ops::gather::gather_rows(&src.r(), &idx.r(), fill.as_deref().map(|v| v.as_slice()), &mut dst.w(), rows, cols);
    }
    fn add_pos(&self, x: &CpuBuf, pos: &CpuBuf, batch: usize, tokens: usize, dim: usize) {
        ops::gather::add_pos(&mut x.w(), &pos.r(), batch, tokens, dim);
    }
    fn rel_pos_bias_forward(
        &self,
        scores: &CpuBuf,
        table: &CpuBuf,
        index: &CpuBuf,
        mask: Option<&CpuBuf>,
        windows: usize,
        nw: usize,
        heads: usize,
        n: usize,
    ) {
        let mask = mask.map(|m| m.r());
        let mask = mask.as_deref().map(|v| v.as_slice());
        ops::rel_pos_bias::rel_pos_bias_forward(&mut scores.w(), &table.r(), &index.r(), mask, windows, nw, heads, n);
    }
    fn rel_pos_bias_backward(
        &self,
        dscores: &CpuBuf,
        offsets: &CpuBuf,
        entries: &CpuBuf,
        dtable: &CpuBuf,
        windows: usize,
        heads: usize,
        n: usize,
        rows: usize,
    ) {
        ops::rel_pos_bias::rel_pos_bias_backward(
            &dscores.r(),
            &offsets.r(),
            &entries.r(),
            &mut dtable.w(),
            windows,
            heads,
            n,
            rows,
        );
    }

    fn l2norm_forward(
        &self,
        x: &CpuBuf,
        gain: Option<&CpuBuf>,
        y: &CpuBuf,
        norm: &CpuBuf,
        rows: usize,
        cols: usize,
        eps: f32,
    ) {
        let gain = gain.map(|g| g.r());
        let gain = gain.as_deref().map(|v| v.as_slice());
        ops::l2norm::l2norm_forward(&x.r(), gain, &mut y.w(), &mut norm.w(), rows, cols, eps);
    }
    fn l2norm_backward(
        &self,
        dy: &CpuBuf,
        norm: &CpuBuf,
        x: &CpuBuf,
        gain: Option<&CpuBuf>,
        dx: &CpuBuf,
        dgain: Option<&CpuBuf>,
        rows: usize,
        cols: usize,
        eps: f32,
    ) {
        let gain = gain.map(|g| g.r());
        let gain = gain.as_deref().map(|v| v.as_slice());
        let mut dgain = dgain.map(|g| g.w());
        let dgain = dgain.as_deref_mut().map(|v| v.as_mut_slice());
        ops::l2norm::l2norm_backward(&dy.r(), &norm.r(), &x.r(), gain, &mut dx.w(), dgain, rows, cols, eps);
    }

    fn soft_cross_entropy_forward(
        &self,
        logits: &CpuBuf,
        targets: &CpuBuf,
        losses: &CpuBuf,
        probs: &CpuBuf,
        rows: usize,
        cols: usize,
        scale: f32,
    ) {
        ops::soft_cross_entropy::soft_cross_entropy_forward(
            &logits.r(),
            &targets.r(),
            &mut losses.w(),
            &mut probs.w(),
            rows,
            cols,
            scale,
        );
    }
    fn soft_cross_entropy_backward(
        &self,
        dloss: &CpuBuf,
        probs: &CpuBuf,
        targets: &CpuBuf,
        dlogits: &CpuBuf,
        rows: usize,
        cols: usize,
        scale: f32,
    ) {
        ops::soft_cross_entropy::soft_cross_entropy_backward(
            &dloss.r(),
            &probs.r(),
            &targets.r(),
            &mut dlogits.w(),
            rows,
            cols,
            scale,
        );
    }

    fn center_sharpen(&self, x: &CpuBuf, center: &CpuBuf, q: &CpuBuf, rows: usize, cols: usize, temp: f32) {
        ops::center::center_sharpen(&x.r(), &center.r(), &mut q.w(), rows, cols, temp);
    }
    fn center_update(&self, x: &CpuBuf, center: &CpuBuf, rows: usize, cols: usize, momentum: f32) {
        ops::center::center_update(&x.r(), &mut center.w(), rows, cols, momentum);
    }
}
