//! Supervised classification, the baseline every self-supervised method is compared with:
//! ```text
//! logits = model(x)                        # a ViT or a Swin with its classification head
//! loss   = cross_entropy(logits, labels).mean()
//! loss.backward(); clip_grad_norm_(params, clip); adamw.step()
//! ```
use crate::backend::Backend;
use crate::optim::{AdamWState, StepConfig};
use crate::params::Params;
use crate::swin::Swin;
use crate::vit::Vit;

/// A backbone with its classification head (timm's `head` / `head.fc`).
pub enum Classifier<B: Backend> {
    Vit(Vit<B>),
    Swin(Swin<B>),
}

impl<B: Backend> Classifier<B> {
    pub fn params(&self) -> &Params<B> {
        match self {
            Classifier::Vit(m) => &m.params,
            Classifier::Swin(m) => &m.params,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Classifier::Vit(m) => m.cfg.num_classes,
            Classifier::Swin(m) => m.cfg.num_classes,
        }
    }

    /// `[batch, num_classes]`: the logits of `x: [batch, c, h, w]`.
    pub fn logits(&self, be: &B, x: &B::Buf, batch: usize) -> B::Buf {
        match self {
            Classifier::Vit(m) => m.forward(be, x, batch).logits,
            Classifier::Swin(m) => m.forward(be, x, batch).logits,
        }
        .expect("a classifier has a head")
    }

    /// The input side and channels.
    pub fn input(&self) -> (usize, usize) {
        match self {
            Classifier::Vit(m) => (m.cfg.img_size[0], m.cfg.in_chans),
            Classifier::Swin(m) => (m.cfg.img_size[0], m.cfg.in_chans),
        }
    }

    /// The logits of `x`, then the parameter gradients of the upstream gradient `dlogits`
    /// gives for them (added into `grads`).
    fn train_pass(&self, be: &B, x: &B::Buf, batch: usize, grads: &Params<B>, dlogits: impl FnOnce(&B::Buf) -> B::Buf) {
        match self {
            Classifier::Vit(m) => {
                let fwd = m.forward(be, x, batch);
                let d = dlogits(fwd.logits.as_ref().expect("a classifier has a head"));
                m.backward(be, &fwd, Some(&d), None, grads, None);
            }
            Classifier::Swin(m) => {
                let fwd = m.forward(be, x, batch);
                let d = dlogits(fwd.logits.as_ref().expect("a classifier has a head"));
                m.backward(be, &fwd, Some(&d), None, None, grads, None);
            }
        }
    }
}

pub struct Supervised<B: Backend> {
    pub model: Classifier<B>,
    pub grads: Params<B>,
    pub opt: AdamWState<B>,
}

impl<B: Backend> Supervised<B> {
    pub fn new(be: &B, model: Classifier<B>) -> Self {
        let grads = model.params().zeros_like(be);
        let opt = AdamWState::new(be, model.params());
        Supervised { model, grads, opt }
    }

    /// One optimiser step on `x: [batch, c, h, w]` with `labels: [batch]` (a u32 buffer).
    /// Records everything; the returned per-sample losses buffer is read by the caller,
    /// which on the GPU makes the whole step one submit.
    pub fn step(&mut self, be: &B, x: &B::Buf, labels: &B::Buf, batch: usize, cfg: &StepConfig) -> B::Buf {
        let classes = self.model.num_classes();
        self.grads.fill(be, 0.0);
        let losses = be.alloc(batch);
        self.model.train_pass(be, x, batch, &self.grads, |logits| {
            let probs = be.alloc(batch * classes);
            be.cross_entropy_forward(logits, labels, &losses, &probs, batch, classes);
            let dlogits = be.alloc(batch * classes);
            let mean = be.upload(&vec![1.0 / batch as f32; batch]);
            be.cross_entropy_backward(&mean, &probs, labels, &dlogits, batch, classes);
            dlogits
        });
        self.opt.update(be, self.model.params(), &self.grads, cfg);
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::rng::Rng;
    use crate::swin::SwinConfig;
    use crate::vit::VitConfig;

    fn fits_a_small_batch(be: &Cpu, model: Classifier<Cpu>) {
        let mut run = Supervised::new(be, model);
        let mut rng = Rng::new(2);
        let x: Vec<f32> = (0..6 * 64).map(|_| rng.normal()).collect();
        let (xb, lb) = (be.upload(&x), be.upload_u32(&[0, 1, 2, 0, 1, 2]));
        let step = StepConfig { lr: 3e-3, clip: Some(1.0), ..StepConfig::default() };
        let mean = |v: Vec<f32>| v.iter().sum::<f32>() / v.len() as f32;
        let first = mean(crate::block_on(be.read(&run.step(be, &xb, &lb, 6, &step))));
        let mut last = first;
        for _ in 0..60 {
            last = mean(crate::block_on(be.read(&run.step(be, &xb, &lb, 6, &step))));
        }
        assert!(last < 0.1 * first, "loss went from {first} to {last}");
    }

    #[test]
    fn supervised_training_fits_a_small_batch() {
        let be = Cpu;
        let cfg = VitConfig {
            img_size: [8, 8],
            patch_size: 4,
            in_chans: 1,
            embed_dim: 16,
            depth: 1,
            num_heads: 2,
            num_classes: 3,
            ..VitConfig::default()
        };
        fits_a_small_batch(&be, Classifier::Vit(Vit::init(&be, cfg, 1)));
    }

    #[test]
    fn supervised_swin_fits_a_small_batch() {
        let be = Cpu;
        let cfg = SwinConfig {
            img_size: [8, 8],
            patch_size: 2,
            in_chans: 1,
            embed_dim: 8,
            depths: vec![2, 1],
            num_heads: vec![2, 2],
            window_size: crate::swin::WindowSize::One(2),
            num_classes: 3,
            ..SwinConfig::default()
        };
        fits_a_small_batch(&be, Classifier::Swin(Swin::init(&be, cfg, 1)));
    }
}
