//! Supervised classification as a training method: the baseline every self-supervised
//! method is compared with, and fine-tuning (the same step from a pretrained backbone with
//! a fresh head, as MAE's and DINO's fine-tuning recipes start):
//! ```text
//! x, y  = batch(step)                      # whole images and their labels
//! loss  = cross_entropy(model(x), y).mean()  # a ViT or Swin with its classification head
//! adamw.step(lr[step])
//! ```
use serde::{Deserialize, Serialize};

use super::{adam_step, load_into, LocalFut, Trainer, Views};
use crate::methods::supervised::{Classifier, Supervised};
use crate::optim::StepConfig;
use crate::rng::Rng;
use crate::{Backend, Swin, SwinConfig, TensorFile, Vit, VitConfig};

/// The classifier a supervised run trains, with its head (`num_classes` > 0). In the
/// run's config it is a `vit` or a `swin` key holding timm's config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Vit(VitConfig),
    Swin(SwinConfig),
}

impl Arch {
    pub fn img_size(&self) -> usize {
        match self {
            Arch::Vit(c) => c.img_size[0],
            Arch::Swin(c) => c.img_size[0],
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Arch::Vit(c) => c.num_classes,
            Arch::Swin(c) => c.num_classes,
        }
    }

    pub fn set_num_classes(&mut self, n: usize) {
        match self {
            Arch::Vit(c) => c.num_classes = n,
            Arch::Swin(c) => c.num_classes = n,
        }
    }

    /// `vit_config` or `swin_config`: the model file's metadata key for the config.
    pub fn metadata(&self) -> (String, String) {
        let (key, json) = match self {
            Arch::Vit(c) => ("vit_config", serde_json::to_string(c)),
            Arch::Swin(c) => ("swin_config", serde_json::to_string(c)),
        };
        (key.into(), json.expect("a config serialises"))
    }

    fn init<B: Backend>(&self, be: &B, seed: u64) -> Classifier<B> {
        match self {
            Arch::Vit(c) => Classifier::Vit(Vit::init(be, c.clone(), seed)),
            Arch::Swin(c) => Classifier::Swin(Swin::init(be, c.clone(), seed)),
        }
    }

    /// The classifier with `file`'s weights (timm's names, head included).
    pub fn classifier<B: Backend>(&self, be: &B, file: &TensorFile) -> Result<Classifier<B>, String> {
        Ok(match self {
            Arch::Vit(c) => Classifier::Vit(Vit::from_file(be, c.clone(), file).map_err(|e| e.to_string())?),
            Arch::Swin(c) => Classifier::Swin(Swin::from_file(be, c.clone(), file).map_err(|e| e.to_string())?),
        })
    }
}

impl Arch {
    /// The classifier a model file holds (`vit_config` or `swin_config` metadata and the
    /// weights with their head), as a supervised run writes it.
    pub fn from_model_file(file: &TensorFile) -> Result<Self, String> {
        let (vit, swin) = (file.metadata.get("vit_config"), file.metadata.get("swin_config"));
        let arch = match (vit, swin) {
            (Some(s), _) => Arch::Vit(VitConfig::from_json(s).map_err(|e| format!("its vit_config: {e}"))?),
            (None, Some(s)) => Arch::Swin(SwinConfig::from_json(s).map_err(|e| format!("its swin_config: {e}"))?),
            (None, None) => return Err("the model has no vit_config or swin_config metadata".into()),
        };
        if arch.num_classes() == 0 {
            return Err("the model has no classification head".into());
        }
        Ok(arch)
    }
}

/// What `config` holds for a supervised run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SupervisedRun {
    #[serde(flatten)]
    pub arch: Arch,
    /// Where the backbone came from when fine-tuning (a model's name), or absent.
    #[serde(default)]
    pub fine_tuned_from: Option<String>,
}

pub struct SupervisedTrainer<B: Backend> {
    run: SupervisedRun,
    pub sup: Supervised<B>,
    /// The batch's images, reused across steps (labels are a few words, uploaded each step).
    input: Option<B::Buf>,
}

impl<B: Backend> SupervisedTrainer<B> {
    pub fn new(be: &B, run: SupervisedRun, seed: u64) -> Self {
        let sup = Supervised::new(be, run.arch.init(be, seed));
        SupervisedTrainer { run, sup, input: None }
    }

    /// A fresh head on the backbone tensors of `backbone` (timm names, as
    /// [`crate::attention::vit_from_file`] returns them): fine-tuning.
    pub fn fine_tune(be: &B, run: SupervisedRun, backbone: &TensorFile, seed: u64) -> Result<Self, String> {
        let t = Self::new(be, run, seed);
        for p in &t.sup.model.params().list {
            if !p.name.starts_with("head.") {
                load_into_one(be, &p.buf, backbone, &p.name)?;
            }
        }
        Ok(t)
    }

    /// Weights, Adam's moments and step from a checkpoint.
    pub fn from_checkpoint(be: &B, run: SupervisedRun, file: &TensorFile) -> Result<Self, String> {
        let mut weights = file.clone();
        weights.tensors.retain(|k, _| !k.starts_with("opt."));
        let mut sup = Supervised::new(be, run.arch.classifier(be, &weights)?);
        load_into(be, &sup.opt.m, file, "opt.m.")?;
        load_into(be, &sup.opt.v, file, "opt.v.")?;
        sup.opt.step = adam_step(file)?;
        Ok(SupervisedTrainer { run, sup, input: None })
    }
}

fn load_into_one<B: Backend>(be: &B, buf: &B::Buf, file: &TensorFile, name: &str) -> Result<(), String> {
    let t = super::tensor_f32(file, name).map_err(|_| format!("the pretrained model has no `{name}`"))?;
    if t.len() != be.len(buf) {
        return Err(format!("`{name}` has {} values in the pretrained model, {} here", t.len(), be.len(buf)));
    }
    be.write(buf, t);
    Ok(())
}

impl<B: Backend> Trainer<B> for SupervisedTrainer<B> {
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
            let x = data.batch(indices, self.run.arch.img_size(), rng);
            let labels: Option<Vec<u32>> = indices.iter().map(|&i| data.label(i)).collect();
            let Some(labels) = labels else { return f64::NAN };
            let xb = self.input.get_or_insert_with(|| be.alloc(x.len()));
            if be.len(xb) != x.len() {
                *xb = be.alloc(x.len());
            }
            be.write(xb, &x);
            let (xb, yb) = (xb.clone(), be.upload_u32(&labels));
            let losses = self.sup.step(be, &xb, &yb, indices.len(), &hp);
            let losses = be.read(&losses).await;
            losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len().max(1) as f64
        })
    }

    fn weights<'a>(&'a self, be: &'a B) -> LocalFut<'a, TensorFile> {
        Box::pin(self.sup.model.params().download(be, ""))
    }

    fn state<'a>(&'a self, be: &'a B) -> LocalFut<'a, (TensorFile, u32)> {
        Box::pin(async move {
            let mut file = self.sup.opt.m.download(be, "opt.m.").await;
            file.tensors.extend(self.sup.opt.v.download(be, "opt.v.").await.tensors);
            (file, self.sup.opt.step)
        })
    }

    fn config_json(&self) -> String {
        serde_json::to_string(&self.run).expect("a config serialises")
    }

    fn model_metadata(&self) -> Vec<(String, String)> {
        vec![self.run.arch.metadata()]
    }
}
