//! Supervised classification, the baseline every self-supervised method is compared with:
//! ```text
//! logits = vit(x)
//! loss   = cross_entropy(logits, labels).mean()
//! loss.backward(); clip_grad_norm_(params, clip); adamw.step()
//! ```
use crate::backend::Backend;
use crate::optim::{AdamWState, StepConfig};
use crate::params::Params;
use crate::vit::Vit;

pub struct Supervised<B: Backend> {
    pub model: Vit<B>,
    pub grads: Params<B>,
    pub opt: AdamWState<B>,
}

impl<B: Backend> Supervised<B> {
    pub fn new(be: &B, model: Vit<B>) -> Self {
        let grads = model.params.zeros_like(be);
        let opt = AdamWState::new(be, &model.params);
        Supervised { model, grads, opt }
    }

    /// One optimiser step on `x: [batch, c, h, w]` with `labels: [batch]` (a u32 buffer).
    /// Records everything; the returned per-sample losses buffer is read by the caller,
    /// which on the GPU makes the whole step one submit.
    pub fn step(&mut self, be: &B, x: &B::Buf, labels: &B::Buf, batch: usize, cfg: &StepConfig) -> B::Buf {
        let classes = self.model.cfg.num_classes;
        self.grads.fill(be, 0.0);
        let fwd = self.model.forward(be, x, batch);
        let logits = fwd.logits.as_ref().expect("a supervised model has a head");
        let (losses, probs) = (be.alloc(batch), be.alloc(batch * classes));
        be.cross_entropy_forward(logits, labels, &losses, &probs, batch, classes);
        let dlogits = be.alloc(batch * classes);
        be.cross_entropy_backward(
            &be.upload(&vec![1.0 / batch as f32; batch]),
            &probs,
            labels,
            &dlogits,
            batch,
            classes,
        );
        self.model.backward(be, &fwd, Some(&dlogits), None, &self.grads, None);
        self.opt.update(be, &self.model.params, &self.grads, cfg);
        losses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::rng::Rng;
    use crate::vit::VitConfig;

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
        let mut run = Supervised::new(&be, Vit::init(&be, cfg, 1));
        let mut rng = Rng::new(2);
        let x: Vec<f32> = (0..6 * 64).map(|_| rng.normal()).collect();
        let (xb, lb) = (be.upload(&x), be.upload_u32(&[0, 1, 2, 0, 1, 2]));
        let step = StepConfig { lr: 3e-3, clip: Some(1.0), ..StepConfig::default() };
        let mean = |v: Vec<f32>| v.iter().sum::<f32>() / v.len() as f32;
        let first = mean(crate::block_on(be.read(&run.step(&be, &xb, &lb, 6, &step))));
        let mut last = first;
        for _ in 0..60 {
            last = mean(crate::block_on(be.read(&run.step(&be, &xb, &lb, 6, &step))));
        }
        assert!(last < 0.1 * first, "loss went from {first} to {last}");
    }
}
