//! MAE training: the official recipe's step (`engine_pretrain.train_one_epoch`) over the
//! engine's [`Mae`]:
//! ```text
//! mask  = random_masking(noise ~ U[0,1)^(B×L), ratio)   # drawn on the CPU, uploaded
//! loss  = mae(imgs, mask)                               # forward on the backend
//! grads = 0; loss.backward(); adamw.step(lr[step])      # recorded; one read of the loss
//! ```
use super::{adam_step, load_into, LocalFut, Trainer, Views};
use crate::methods::mae::{Mae, MaeConfig, Masking};
use crate::optim::{AdamWState, StepConfig};
use crate::rng::Rng;
use crate::{Backend, Params, TensorFile};

pub struct MaeTrainer<B: Backend> {
    pub model: Mae<B>,
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

    /// The weights of a model file (same config), with a fresh optimiser.
    pub fn from_model(be: &B, cfg: MaeConfig, file: &TensorFile) -> Result<Self, String> {
        let model = Mae::from_file(be, cfg, file).map_err(|e| e.to_string())?;
        let (grads, opt) = (model.params.zeros_like(be), AdamWState::new(be, &model.params));
        Ok(MaeTrainer { model, grads, opt, input: None })
    }

    /// Weights, Adam's moments and step from a checkpoint.
    pub fn from_checkpoint(be: &B, cfg: MaeConfig, file: &TensorFile) -> Result<Self, String> {
        let mut weights = file.clone();
        weights.tensors.retain(|k, _| !k.starts_with("opt."));
        let model = Mae::from_file(be, cfg, &weights).map_err(|e| e.to_string())?;
        let grads = model.params.zeros_like(be);
        let mut opt = AdamWState::new(be, &model.params);
        load_into(be, &opt.m, file, "opt.m.")?;
        load_into(be, &opt.v, file, "opt.v.")?;
        opt.step = adam_step(file)?;
        Ok(MaeTrainer { model, grads, opt, input: None })
    }

    /// One step on `imgs: [batch, C, H, W]` (normalised); masks from `rng`.
    pub async fn step_on(&mut self, be: &B, imgs: &B::Buf, batch: usize, rng: &mut Rng, hp: &StepConfig) -> f64 {
        let cfg = &self.model.cfg;
        let masking = Masking::random(rng, batch, cfg.patches(), cfg.keep());
        self.grads.fill(be, 0.0);
        let fwd = self.model.forward(be, imgs, masking);
        self.model.backward(be, &fwd, &self.grads);
        self.opt.update(be, &self.model.params, &self.grads, hp);
        let losses = be.read(&fwd.losses).await;
        Mae::<B>::loss(&fwd.masking, &losses)
    }
}

impl<B: Backend> Trainer<B> for MaeTrainer<B> {
    fn step<'a>(
        &'a mut self,
        be: &'a B,
        data: &'a dyn Views,
        indices: &'a [usize],
        _step: usize,
        rng: &'a mut Rng,
        hp: StepConfig,
    ) -> LocalFut<'a, f64> {
        Box::pin(async move {
            let x = data.batch(indices, self.model.cfg.img_size, rng);
            let buf = self.input.get_or_insert_with(|| be.alloc(x.len()));
            if be.len(buf) != x.len() {
                *buf = be.alloc(x.len());
            }
            be.write(buf, &x);
            let buf = buf.clone();
            self.step_on(be, &buf, indices.len(), rng, &hp).await
        })
    }

    fn weights<'a>(&'a self, be: &'a B) -> LocalFut<'a, TensorFile> {
        Box::pin(async move {
            let mut file = self.model.params.download(be, "").await;
            file.tensors.extend(self.model.fixed.download(be, "").await.tensors);
            file
        })
    }

    fn state<'a>(&'a self, be: &'a B) -> LocalFut<'a, (TensorFile, u32)> {
        Box::pin(async move {
            let mut file = self.opt.m.download(be, "opt.m.").await;
            file.tensors.extend(self.opt.v.download(be, "opt.v.").await.tensors);
            (file, self.opt.step)
        })
    }

    fn config_json(&self) -> String {
        serde_json::to_string(&self.model.cfg).expect("a config serialises")
    }
}
