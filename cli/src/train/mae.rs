//! MAE training: the official recipe's step (`engine_pretrain.train_one_epoch`) over the
//! engine's [`Mae`]:
//! ```text
//! mask  = random_masking(noise ~ U[0,1)^(B×L), ratio)   # drawn on the CPU, uploaded
//! loss  = mae(imgs, mask)                               # forward on the backend
//! grads = 0; loss.backward(); adamw.step(lr[step])      # recorded; one read of the loss
//! ```
use anyhow::{bail, Result};
use patchwork_compute::methods::mae::{Mae, MaeConfig, Masking};
use patchwork_compute::optim::{AdamWState, StepConfig};
use patchwork_compute::rng::Rng;
use patchwork_compute::{block_on, Backend, Params, TensorFile};

use super::{download, tensor_f32, Trainer};
use crate::data::{DataSpec, Dataset};

/// The model-size flags of `--method mae` (defaults depend on the data set).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MaeArgs {
    /// Input side in pixels [default: 28 for fashion-mnist, 64 otherwise].
    #[arg(long)]
    pub img_size: Option<usize>,
    /// Patch side [default: 4 for fashion-mnist, 8 otherwise].
    #[arg(long)]
    pub patch_size: Option<usize>,
    /// Encoder width [default: 128 for fashion-mnist, 192 otherwise].
    #[arg(long)]
    pub embed_dim: Option<usize>,
    /// Encoder blocks [default: 4 for fashion-mnist, 6 otherwise].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Encoder attention heads [default: 4 for fashion-mnist, 3 otherwise].
    #[arg(long)]
    pub heads: Option<usize>,
    /// Decoder width [default: 64 for fashion-mnist, 128 otherwise].
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

pub struct MaeTrainer<B: Backend> {
    model: Mae<B>,
    grads: Params<B>,
    opt: AdamWState<B>,
    /// The batch's images, reused across steps.
    input: Option<B::Buf>,
}

impl<B: Backend> MaeTrainer<B> {
    pub fn new(be: &B, cfg: MaeConfig, seed: u64) -> Self {
        let model = Mae::init(be, cfg, seed);
        let (grads, opt) = (model.params.zeros_like(be), AdamWState::new(be, &model.params));
        MaeTrainer { model, grads, opt, input: None }
    }

    /// Weights, Adam's moments and step from a checkpoint [`Trainer::weights`] +
    /// [`Trainer::optimizer`] wrote.
    pub fn from_checkpoint(be: &B, cfg: MaeConfig, file: &TensorFile) -> Result<Self> {
        let mut weights = file.clone();
        weights.tensors.retain(|k, _| !k.starts_with("opt."));
        let model = Mae::from_file(be, cfg, &weights)?;
        let grads = model.params.zeros_like(be);
        let mut opt = AdamWState::new(be, &model.params);
        for (moments, prefix) in [(&opt.m, "opt.m."), (&opt.v, "opt.v.")] {
            for p in &moments.list {
                be.write(&p.buf, tensor_f32(file, &format!("{prefix}{}", p.name))?);
            }
        }
        opt.step = file.metadata.get("adam_step").map(|s| s.parse()).transpose()?.unwrap_or(0);
        Ok(MaeTrainer { model, grads, opt, input: None })
    }
}

impl<B: Backend> MaeTrainer<B> {
    /// One step on `imgs: [batch, C, H, W]` (normalised); masks from `rng`.
    pub fn step_on(&mut self, be: &B, imgs: &B::Buf, batch: usize, rng: &mut Rng, hp: &StepConfig) -> f64 {
        let cfg = &self.model.cfg;
        let masking = Masking::random(rng, batch, cfg.patches(), cfg.keep());
        self.grads.fill(be, 0.0);
        let fwd = self.model.forward(be, imgs, masking);
        self.model.backward(be, &fwd, &self.grads);
        self.opt.update(be, &self.model.params, &self.grads, hp);
        let losses = block_on(be.read(&fwd.losses));
        Mae::<B>::loss(&fwd.masking, &losses)
    }
}

impl<B: Backend> Trainer<B> for MaeTrainer<B> {
    fn step(
        &mut self,
        be: &B,
        data: &Dataset,
        indices: &[usize],
        _step: usize,
        rng: &mut Rng,
        hp: &StepConfig,
    ) -> Result<f64> {
        let cfg = &self.model.cfg;
        let x = data.batch(indices, cfg.img_size, rng);
        let buf = self.input.get_or_insert_with(|| be.alloc(x.len()));
        if be.len(buf) != x.len() {
            *buf = be.alloc(x.len());
        }
        be.write(buf, &x);
        let buf = buf.clone();
        Ok(self.step_on(be, &buf, indices.len(), rng, hp))
    }

    fn weights(&self, be: &B) -> TensorFile {
        let mut file = download(be, &self.model.params, "");
        file.tensors.extend(download(be, &self.model.fixed, "").tensors);
        file
    }

    fn state(&self, be: &B) -> (TensorFile, u32) {
        let mut file = download(be, &self.opt.m, "opt.m.");
        file.tensors.extend(download(be, &self.opt.v, "opt.v.").tensors);
        (file, self.opt.step)
    }

    fn config_json(&self) -> String {
        serde_json::to_string(&self.model.cfg).expect("a config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchwork_compute::Cpu;

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
            let (lc, lg) = (cpu.step_on(&Cpu, &xc, 4, &mut rc, &hp), dev.step_on(&gpu, &xg, 4, &mut rg, &hp));
            assert!((lc - lg).abs() <= 1e-4 * lc.abs(), "step {step}: loss {lc} on the CPU, {lg} on the GPU");
        }
        let (wc, wg) = (cpu.weights(&Cpu), dev.weights(&gpu));
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
        t.step_on(&be, &x, 2, &mut Rng::new(1), &StepConfig { lr: 1e-3, ..StepConfig::default() });
        let mut file = t.weights(&be);
        let (opt, step) = t.state(&be);
        file.tensors.extend(opt.tensors.clone());
        file.metadata.insert("adam_step".into(), step.to_string());
        let back = MaeTrainer::from_checkpoint(&be, cfg, &file).unwrap();
        assert_eq!(back.opt.step, 1);
        assert_eq!(back.state(&be).0.tensors, opt.tensors);
        assert_eq!(back.weights(&be).tensors, t.weights(&be).tensors);
    }
}
