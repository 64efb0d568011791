//! MAE training: the official recipe's step (`engine_pretrain.train_one_epoch`) over the
//! engine's [`Mae`]:
//! ```text
//! mask  = random_masking(noise ~ U[0,1)^(B×L), ratio)   # drawn on the CPU, uploaded
//! loss  = mae(imgs, mask)                               # forward on the backend
//! grads = 0; loss.backward(); adamw.step(lr[step])      # recorded; one read of the loss
//! ```
use anyhow::{bail, Result};
use patchwork_compute::methods::mae::MaeConfig;

use crate::data::DataSpec;

/// The model-size flags of every method (MAE's decoder flags are MAE's alone; defaults depend
/// on the data set).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MaeArgs {
    /// Input side in pixels [default: 28 for fashion-mnist and idx files, 64 otherwise].
    #[arg(long)]
    pub img_size: Option<usize>,
    /// Patch side [default: 4 for fashion-mnist and idx files, 8 otherwise].
    #[arg(long)]
    pub patch_size: Option<usize>,
    /// Encoder width [default: 128 for fashion-mnist and idx files, 192 otherwise].
    #[arg(long)]
    pub embed_dim: Option<usize>,
    /// Encoder blocks [default: 4 for fashion-mnist and idx files, 6 otherwise].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Encoder attention heads [default: 4 for fashion-mnist and idx files, 3 otherwise].
    #[arg(long)]
    pub heads: Option<usize>,
    /// ViT register tokens after the class token (timm's `reg_tokens`, Darcet et al. 2023),
    /// for DINO, iBOT and the supervised ViT; MAE's encoder has none [default: 0].
    #[arg(long)]
    pub reg_tokens: Option<usize>,
    /// Decoder width [default: 64 for fashion-mnist and idx files, 128 otherwise].
    #[arg(long)]
    pub decoder_dim: Option<usize>,
    /// Decoder blocks [default: 2].
    #[arg(long)]
    pub decoder_depth: Option<usize>,
    /// Decoder attention heads [default: 4].
    #[arg(long)]
    pub decoder_heads: Option<usize>,
    /// Fraction of patches removed [default: 0.75].
    #[arg(long)]
    pub mask_ratio: Option<f64>,
    /// Regress per-patch normalised pixels (MAE's `norm_pix_loss`).
    #[arg(long)]
    pub norm_pix_loss: bool,
}

impl MaeArgs {
    /// The config these flags give on `spec` with `in_chans` channels.
    pub fn config(&self, spec: &DataSpec, in_chans: usize) -> Result<MaeConfig> {
        let small = spec.default_channels() == 1;
        let pick = |v: Option<usize>, fashion: usize, photos: usize| v.unwrap_or(if small { fashion } else { photos });
        let cfg = MaeConfig {
            img_size: pick(self.img_size, 28, 64),
            patch_size: pick(self.patch_size, 4, 8),
            in_chans,
            embed_dim: pick(self.embed_dim, 128, 192),
            depth: pick(self.depth, 4, 6),
            num_heads: pick(self.heads, 4, 3),
            decoder_embed_dim: pick(self.decoder_dim, 64, 128),
            decoder_depth: pick(self.decoder_depth, 2, 2),
            decoder_num_heads: pick(self.decoder_heads, 4, 4),
            mlp_ratio: 4.0,
            norm_pix_loss: self.norm_pix_loss,
            mask_ratio: self.mask_ratio.unwrap_or(0.75),
            norm_eps: 1e-6,
        };
        cfg.validate()?;
        if self.reg_tokens.unwrap_or(0) > 0 {
            bail!("--reg-tokens is for DINO, iBOT and the supervised ViT: MAE's encoder (the official code's) has no registers");
        }
        for (flag, dim) in [("--embed-dim", cfg.embed_dim), ("--decoder-dim", cfg.decoder_embed_dim)] {
            if !dim.is_multiple_of(4) {
                bail!("{flag} {dim} must be a multiple of 4 (2-D sin-cos position embeddings)");
            }
        }
        if cfg.keep() == 0 {
            bail!("--mask-ratio {} leaves no visible patch of {}", cfg.mask_ratio, cfg.patches());
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchwork_compute::optim::StepConfig;
    use patchwork_compute::rng::Rng;
    use patchwork_compute::train::mae::MaeTrainer;
    use patchwork_compute::train::Trainer;
    use patchwork_compute::{block_on, Backend, Cpu};

    #[test]
    fn defaults_follow_the_data_set() {
        let a = MaeArgs::default();
        let f = a.config(&DataSpec::FashionMnist, 1).unwrap();
        assert_eq!((f.img_size, f.patch_size, f.in_chans, f.embed_dim), (28, 4, 1, 128));
        let p = a.config(&DataSpec::Photos, 3).unwrap();
        assert_eq!((p.img_size, p.patch_size, p.in_chans), (64, 8, 3));
        let bad = MaeArgs { embed_dim: Some(18), heads: Some(2), ..MaeArgs::default() };
        assert!(bad.config(&DataSpec::FashionMnist, 1).unwrap_err().to_string().contains("multiple of 4"));
    }

    fn micro() -> MaeConfig {
        let a = MaeArgs {
            embed_dim: Some(16),
            depth: Some(1),
            heads: Some(2),
            decoder_dim: Some(8),
            decoder_depth: Some(1),
            decoder_heads: Some(2),
            patch_size: Some(7),
            ..MaeArgs::default()
        };
        a.config(&DataSpec::FashionMnist, 1).unwrap()
    }

    /// Three steps from the same seed, inputs and masks on the CPU and the GPU adapter:
    /// losses within 1e-4 relative; weights within 1e-3 absolute, a third of the steps'
    /// reach: the key bias has a zero gradient up to rounding, which Adam scales to ±lr,
    /// so rounding differences in f32 sums move it by up to lr per step on either side.
    #[test]
    fn mae_training_steps_agree_on_cpu_and_gpu() {
        let Some(gpu) = patchwork_compute::gpu::test_gpu() else { return };
        let mut rng = Rng::new(5);
        let x: Vec<f32> = (0..4 * 28 * 28).map(|_| rng.normal()).collect();
        let hp = StepConfig { lr: 1e-3, ..StepConfig::default() };
        let (mut cpu, mut dev) = (MaeTrainer::new(&Cpu, micro(), 3), MaeTrainer::new(&gpu, micro(), 3));
        let (xc, xg) = (Cpu.upload(&x), gpu.upload(&x));
        let (mut rc, mut rg) = (Rng::new(9), Rng::new(9));
        for step in 0..3 {
            let (lc, lg) =
                (block_on(cpu.step_on(&Cpu, &xc, 4, &mut rc, &hp)), block_on(dev.step_on(&gpu, &xg, 4, &mut rg, &hp)));
            assert!((lc - lg).abs() <= 1e-4 * lc.abs(), "step {step}: loss {lc} on the CPU, {lg} on the GPU");
        }
        let (wc, wg) = (block_on(cpu.weights(&Cpu)), block_on(dev.weights(&gpu)));
        for (name, t) in &wc.tensors {
            let (a, b) = (t.as_f32().unwrap(), wg.tensors[name].as_f32().unwrap());
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-3,
                "{name}: largest difference {worst} (first values {:?} vs {:?})",
                &a[..3.min(a.len())],
                &b[..3.min(b.len())]
            );
        }
    }

    #[test]
    fn checkpoint_round_trip_restores_weights_and_moments() {
        let be = Cpu;
        let cfg = micro();
        let mut t = MaeTrainer::new(&be, cfg.clone(), 3);
        let x = be.upload(&vec![0.5; 2 * 28 * 28]);
        block_on(t.step_on(&be, &x, 2, &mut Rng::new(1), &StepConfig { lr: 1e-3, ..StepConfig::default() }));
        let mut file = block_on(t.weights(&be));
        let (opt, step) = block_on(t.state(&be));
        file.tensors.extend(opt.tensors.clone());
        file.metadata.insert("adam_step".into(), step.to_string());
        let back = MaeTrainer::from_checkpoint(&be, cfg, &file).unwrap();
        let (back_opt, back_step) = block_on(back.state(&be));
        assert_eq!(back_step, 1);
        assert_eq!(back_opt.tensors, opt.tensors);
        assert_eq!(block_on(back.weights(&be)).tensors, block_on(t.weights(&be)).tensors);
    }
}
