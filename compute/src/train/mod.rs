//! Self-supervised training, shared by `patchwork train` and the app's Train page: a method
//! is a [`Trainer`] (one file each: [`mae`], [`dino`], [`ibot`]); the loop that drives it
//! lives with its caller (the CLI's progress bar and files, the page's signals and browser
//! storage), and both precompute the same [`Schedule`] and checkpoint through the same
//! [`checkpoint_file`] / [`restore`]:
//! ```text
//! lr = warmup_cosine(lr, min_lr, steps, warmup)      # precomputed, indexed by the step
//! for step in start..steps:
//!     x = data[order(seed, epoch)][step·B : (step+1)·B]  # crops and masks from one seeded rng
//!     loss = trainer.step(x, lr[step]).await             # forward, backward, AdamW: one submit
//!     stop if loss is not finite; checkpoint every K steps
//! ```
//! A checkpoint holds the weights, Adam's moments, the step, the rng state and every setting,
//! so a resumed run continues bit for bit (on the CPU) where it stopped.
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::augment::{Augmentation, Image};
use crate::model_file::Normalize;
use crate::optim::StepConfig;
use crate::rng::Rng;
use crate::{Backend, Params, Tensor, TensorFile, Vit};

pub mod dino;
pub mod ibot;
pub mod mae;
pub mod supervised;

pub const MODEL_FORMAT: &str = "patchwork-model/1";
pub const CHECKPOINT_FORMAT: &str = "patchwork-checkpoint/1";

/// A future that may hold borrows and need not be `Send` (the browser's are not).
pub type LocalFut<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The self-supervised methods a run can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Mae,
    Dino,
    Ibot,
    Supervised,
}

/// What the CLI's `--method` and the Train page's method list show.
pub struct MethodInfo {
    pub method: Method,
    pub name: &'static str,
    pub title: &'static str,
    pub summary: &'static str,
}

/// Every method, in the order the interfaces list them. A new method adds its line here.
pub const METHODS: &[MethodInfo] = &[
    MethodInfo { method: Method::Mae, name: "mae", title: "MAE", summary: "Masked autoencoders (He et al. 2021)" },
    MethodInfo {
        method: Method::Dino,
        name: "dino",
        title: "DINO",
        summary: "Self-distillation with no labels (Caron et al. 2021): multi-crop, EMA teacher",
    },
    MethodInfo {
        method: Method::Ibot,
        name: "ibot",
        title: "iBOT",
        summary: "iBOT (Zhou et al. 2022): DINO's [CLS] loss plus masked image modelling on patch tokens",
    },
    MethodInfo {
        method: Method::Supervised,
        name: "supervised",
        title: "Supervised",
        summary: "Supervised classification with cross-entropy: the baseline (needs labels)",
    },
];

impl Method {
    pub fn info(self) -> &'static MethodInfo {
        METHODS.iter().find(|m| m.method == self).expect("every method has an entry")
    }
    pub fn name(self) -> &'static str {
        self.info().name
    }
    pub fn parse(name: &str) -> Option<Method> {
        METHODS.iter().find(|m| m.name == name).map(|m| m.method)
    }
    /// DINO and iBOT share DINO's optimiser settings.
    pub fn distills(self) -> bool {
        matches!(self, Method::Dino | Method::Ibot)
    }
}

/// Everything that fixes a run's trajectory besides the model config; saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub method: Method,
    pub data: String,
    pub steps: usize,
    pub batch: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub warmup_steps: usize,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub clip: Option<f32>,
    pub seed: u64,
    pub in_chans: usize,
    /// Crop area fractions for augmenting data sets (absent: the method's default).
    #[serde(default)]
    pub crop_scale: Option<(f32, f32)>,
    #[serde(default)]
    pub color_jitter: bool,
    /// Cut-outs are placed on a transparent canvas this many times their side (at a
    /// random spot) before cropping, so their objects come out smaller (absent: 1).
    #[serde(default)]
    pub cutout_canvas: Option<f32>,
    /// A folder of photos that cut-outs' backdrops are also cut from, blurred (absent:
    /// plain colours and colour noise only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backdrops: Option<String>,
    /// The share of those backdrops cut from the photos (absent: a third).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_share: Option<f32>,
    /// The sides in px a photo's crop is shrunk to before it is stretched back, `(lo, hi)`:
    /// smaller is blurrier (absent: 4 to 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backdrop_blur: Option<(u32, u32)>,
    /// The share of cut-outs' backdrops recoloured in the object's own colours (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camouflage: Option<f32>,
    /// The photo backdrops are also cut from the training cut-outs (close-ups of other
    /// objects).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backdrop_cutouts: bool,
    /// The probability that a cut-out's object is recoloured (DINO's colour jitter) in all
    /// views of an image in a step (absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_jitter: Option<f32>,
    /// A model file whose weights the run starts from instead of `seed`'s (a second stage
    /// of training); the seed still draws data, crops and masks.
    #[serde(default)]
    pub init: Option<String>,
}

impl Schedule {
    /// The method's defaults (MAE's recipe, or DINO's for DINO and iBOT) for `steps` steps.
    pub fn defaults(method: Method, data: &str, in_chans: usize, steps: usize, batch: usize) -> Self {
        let dino = method.distills();
        Schedule {
            method,
            data: data.to_string(),
            steps,
            batch,
            lr: if dino { 5e-4 } else { 1.5e-3 },
            min_lr: if dino { 1e-6 } else { 1e-5 },
            warmup_steps: steps / 20,
            weight_decay: if dino { 0.04 } else { 0.05 },
            // MAE's AdamW betas; DINO keeps PyTorch's
            beta1: 0.9,
            beta2: if dino { 0.999 } else { 0.95 },
            // DINO clips each parameter's gradient to 3
            clip: dino.then_some(3.0),
            seed: 0,
            in_chans,
            crop_scale: None,
            color_jitter: false,
            cutout_canvas: None,
            backdrops: None,
            photo_share: None,
            backdrop_blur: None,
            camouflage: None,
            backdrop_cutouts: false,
            object_jitter: None,
            init: None,
        }
    }

    /// The learning rate of every step.
    pub fn lrs(&self) -> Vec<f32> {
        crate::optim::warmup_cosine(self.lr, self.min_lr, self.steps, self.warmup_steps)
    }

    pub fn step_config(&self, lr: f32) -> StepConfig {
        StepConfig {
            lr,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: 1e-8,
            clip: self.clip,
            clip_per_param: self.method.distills(),
        }
    }

    /// The rng that draws data order, crops and masks at step 0 (the weights take `seed`).
    pub fn data_rng(&self) -> Rng {
        Rng::new(self.seed.wrapping_add(1))
    }
}

/// The views of one image in one step: views with the same `seed` show a cut-out's object in
/// the same colours (`--object-jitter`), and with `shared_backdrop` on the same backdrop
/// (otherwise each view draws its own from the step's random stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scene {
    pub seed: u64,
    pub shared_backdrop: bool,
}

/// Training images as a method sees them; the CLI's data sets and the app's implement it.
pub trait Views {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn norm(&self) -> &Normalize;
    /// `[indices.len(), C, size, size]`, normalised; crops and flips (where the data set
    /// augments) drawn from `rng`.
    fn batch(&self, indices: &[usize], size: usize, rng: &mut Rng) -> Vec<f32>;
    /// One view of image `index` drawn by `aug` (DINO's multi-crop), in [0, 1].
    fn view(&self, index: usize, aug: &Augmentation, rng: &mut Rng) -> Image;
    /// [`Views::view`] as one of several views of a [`Scene`] (DINO's views of one image in
    /// one step). Data sets without such scenes ignore it.
    fn view_in(&self, index: usize, aug: &Augmentation, _scene: Scene, rng: &mut Rng) -> Image {
        self.view(index, aug, rng)
    }
    /// Image `index`'s class, where the data set has labels.
    fn label(&self, _index: usize) -> Option<u32> {
        None
    }
}

/// In-memory images in [0, 1] (HWC): the app's data sets. Batches take them whole, or, with
/// `crops`, as a random view each (the bundled photos: MAE's random resized crop and flip).
pub struct ImageSet {
    pub images: Vec<Image>,
    pub labels: Option<Vec<u32>>,
    pub norm: Normalize,
    /// A view per image and batch (its `size` is replaced by the model's input side).
    pub crops: Option<Augmentation>,
}

impl Views for ImageSet {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn norm(&self) -> &Normalize {
        &self.norm
    }
    fn batch(&self, indices: &[usize], size: usize, rng: &mut Rng) -> Vec<f32> {
        let mut out = Vec::new();
        for &i in indices {
            let view = match &self.crops {
                Some(a) => Augmentation { size, ..*a }.view(&self.images[i], rng),
                None => crate::augment::centre_fit(&self.images[i], size),
            };
            view.push_chw(&self.norm.mean, &self.norm.std, &mut out);
        }
        out
    }
    fn view(&self, index: usize, aug: &Augmentation, rng: &mut Rng) -> Image {
        aug.view(&self.images[index], rng)
    }
    fn label(&self, index: usize) -> Option<u32> {
        self.labels.as_ref().and_then(|l| l.get(index).copied())
    }
}

/// The order of the data set in epoch `epoch`: a Fisher–Yates shuffle seeded by the run's
/// seed and the epoch, so any step's batch follows from the step number alone.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ epoch.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// Indices of the `batch` images of `step` when every epoch is a fresh shuffle.
pub struct Sampler {
    seed: u64,
    n: usize,
    epoch: u64,
    order: Vec<usize>,
}

impl Sampler {
    pub fn new(seed: u64, n: usize) -> Self {
        Sampler { seed, n, epoch: 0, order: epoch_order(seed, 0, n) }
    }
    pub fn indices(&mut self, step: usize, batch: usize) -> Vec<usize> {
        (step * batch..(step + 1) * batch)
            .map(|pos| {
                let epoch = (pos / self.n) as u64;
                if epoch != self.epoch {
                    self.epoch = epoch;
                    self.order = epoch_order(self.seed, epoch, self.n);
                }
                self.order[pos % self.n]
            })
            .collect()
    }
}

/// What a method gives the training loop, on one backend.
pub trait Trainer<B: Backend> {
    /// One optimiser step (0-based `step` of the schedule) on the images `indices` of
    /// `data`: the method draws its views and masks from `rng`, records forward, backward
    /// and updates, then reads the loss once (one submit on the GPU).
    fn step<'a>(
        &'a mut self,
        be: &'a B,
        data: &'a dyn Views,
        indices: &'a [usize],
        step: usize,
        rng: &'a mut Rng,
        hp: StepConfig,
    ) -> LocalFut<'a, f64>;
    /// The model's tensors under their official names (what the model file holds).
    fn weights<'a>(&'a self, be: &'a B) -> LocalFut<'a, TensorFile>;
    /// Everything else a checkpoint needs to resume exactly (optimiser moments, named
    /// `opt.*`; a teacher; …) and Adam's step count.
    fn state<'a>(&'a self, be: &'a B) -> LocalFut<'a, (TensorFile, u32)>;
    /// The model config as JSON (the `config` metadata).
    fn config_json(&self) -> String;
    /// More metadata for the model file (e.g. the backbone's `vit_config`).
    fn model_metadata(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The last step's loss terms besides the total, for the log (iBOT's `cls`, `patch`).
    fn loss_terms(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

/// A method's model settings, as a run's `config` metadata holds them.
#[derive(Clone, Debug, PartialEq)]
pub enum RunConfig {
    Mae(crate::methods::mae::MaeConfig),
    Dino(dino::DinoRun),
    Ibot(ibot::IbotRun),
    Supervised(supervised::SupervisedRun),
}

impl RunConfig {
    pub fn method(&self) -> Method {
        match self {
            RunConfig::Mae(_) => Method::Mae,
            RunConfig::Dino(_) => Method::Dino,
            RunConfig::Ibot(_) => Method::Ibot,
            RunConfig::Supervised(_) => Method::Supervised,
        }
    }

    /// Read a `config` metadata string of `method`.
    pub fn from_json(method: Method, json: &str) -> Result<Self, String> {
        let bad = |e: serde_json::Error| format!("the {} config: {e}", method.name());
        Ok(match method {
            Method::Mae => RunConfig::Mae(serde_json::from_str(json).map_err(bad)?),
            Method::Dino => RunConfig::Dino(serde_json::from_str(json).map_err(bad)?),
            Method::Ibot => RunConfig::Ibot(serde_json::from_str(json).map_err(bad)?),
            Method::Supervised => RunConfig::Supervised(serde_json::from_str(json).map_err(bad)?),
        })
    }

    /// A fresh trainer: weights from the schedule's seed.
    pub fn trainer<'b, B: Backend + 'b>(&self, be: &B, s: &Schedule) -> Box<dyn Trainer<B> + 'b> {
        match self {
            RunConfig::Mae(c) => Box::new(mae::MaeTrainer::new(be, c.clone(), s.seed)),
            RunConfig::Dino(r) => Box::new(dino::DinoTrainer::new(be, r.clone(), s.seed, s.steps, s.weight_decay)),
            RunConfig::Ibot(r) => Box::new(ibot::IbotTrainer::new(be, r.clone(), s.seed, s.steps, s.weight_decay)),
            RunConfig::Supervised(r) => Box::new(supervised::SupervisedTrainer::new(be, r.clone(), s.seed)),
        }
    }

    /// A trainer whose weights start from a model file's (`--init`), with a fresh optimiser
    /// and schedule: for MAE a finished MAE of the same config; for DINO and iBOT any file
    /// holding this backbone under timm's names (a DINO/iBOT teacher, or an MAE's encoder),
    /// loaded into student and teacher, with fresh heads (from the schedule's seed) and centres.
    pub fn trainer_from_model<'b, B: Backend + 'b>(
        &self,
        be: &B,
        model: &TensorFile,
        s: &Schedule,
    ) -> Result<Box<dyn Trainer<B> + 'b>, String> {
        match self {
            RunConfig::Mae(c) => Ok(Box::new(mae::MaeTrainer::from_model(be, c.clone(), model)?)),
            RunConfig::Dino(r) => {
                let t = dino::DinoTrainer::new(be, r.clone(), s.seed, s.steps, s.weight_decay);
                init_backbone(be, &r.model.vit, model, [&t.dino.student.params, &t.dino.teacher.params])?;
                Ok(Box::new(t))
            }
            RunConfig::Ibot(r) => {
                let t = ibot::IbotTrainer::new(be, r.clone(), s.seed, s.steps, s.weight_decay);
                init_backbone(be, &r.model.vit, model, [&t.ibot.student.params, &t.ibot.teacher.params])?;
                Ok(Box::new(t))
            }
            other => Err(format!("starting from a model file is not supported for {} yet", other.method().name())),
        }
    }

    /// The ViT a DINO/iBOT teacher or a ViT classifier is (not MAE's, whose encoder has no
    /// `VitConfig` of its own, nor a Swin classifier's: see [`RunConfig::swin`]).
    pub fn backbone(&self) -> Option<crate::VitConfig> {
        match self {
            RunConfig::Mae(_) => None,
            RunConfig::Dino(r) => Some(r.model.vit.clone()),
            RunConfig::Ibot(r) => Some(r.model.vit.clone()),
            RunConfig::Supervised(r) => match &r.arch {
                supervised::Arch::Vit(c) => Some(c.clone()),
                supervised::Arch::Swin(_) => None,
            },
        }
    }

    /// The Swin a supervised Swin run trains.
    pub fn swin(&self) -> Option<crate::SwinConfig> {
        match self {
            RunConfig::Supervised(supervised::SupervisedRun { arch: supervised::Arch::Swin(c), .. }) => Some(c.clone()),
            _ => None,
        }
    }

    /// The input side the backbone takes (MAE's, or the global crops').
    pub fn img_size(&self) -> usize {
        match self {
            RunConfig::Mae(c) => c.img_size,
            RunConfig::Dino(r) => r.model.vit.img_size[0],
            RunConfig::Ibot(r) => r.model.vit.img_size[0],
            RunConfig::Supervised(r) => r.arch.img_size(),
        }
    }
}

/// A model's sizes, from which every method builds its config (the Train page's presets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sizes {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub heads: usize,
    /// MAE's decoder.
    pub decoder_dim: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
    /// DINO's head: output K, hidden and bottleneck widths.
    pub out_dim: usize,
    pub head_hidden_dim: usize,
    pub bottleneck_dim: usize,
    /// DINO's local crops: side and count.
    pub local_size: usize,
    pub local_crops: usize,
    /// Classes of the supervised head.
    pub classes: usize,
    /// The backbone's kind (MAE, DINO and iBOT train a ViT; the supervised baseline either).
    #[serde(default)]
    pub backbone: BackboneKind,
}

impl Sizes {
    /// The ViT backbone (no head, class-token pooling) these sizes give.
    pub fn vit(&self) -> crate::VitConfig {
        crate::VitConfig {
            img_size: [self.img_size; 2],
            patch_size: self.patch_size,
            in_chans: self.in_chans,
            embed_dim: self.embed_dim,
            depth: self.depth,
            num_heads: self.heads,
            mlp_ratio: 4.0,
            qkv_bias: true,
            num_classes: 0,
            global_pool: "token".into(),
            ..crate::VitConfig::default()
        }
    }
}

/// Which transformer a run trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    #[default]
    Vit,
    Swin,
}

impl BackboneKind {
    pub const ALL: [BackboneKind; 2] = [BackboneKind::Vit, BackboneKind::Swin];

    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::Vit => "vit",
            BackboneKind::Swin => "swin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            BackboneKind::Vit => "ViT",
            BackboneKind::Swin => "Swin",
        }
    }

    /// Whether `method` trains this backbone here.
    pub fn trains(self, method: Method) -> bool {
        self == BackboneKind::Vit || method == Method::Supervised
    }
}

/// The Swin classifier a ViT's sizes give: the ViT's patches; two stages (one on a grid
/// under 4×4) whose last has the ViT's width and heads, the first half of each; the ViT's
/// depth split between them; windows of half the grid (rounded up), so stage 0 has 2×2
/// windows and its odd blocks shift.
pub fn swin_like(v: &crate::VitConfig) -> crate::SwinConfig {
    let grid = v.img_size[0] / v.patch_size.max(1);
    let (half, rest) = ((v.depth / 2).max(1), (v.depth - v.depth / 2).max(1));
    let (embed_dim, depths, num_heads) = if grid >= 4 && v.embed_dim.is_multiple_of(2) && v.num_heads >= 2 {
        (v.embed_dim / 2, vec![half, rest], vec![v.num_heads / 2, v.num_heads])
    } else {
        (v.embed_dim, vec![v.depth.max(1)], vec![v.num_heads])
    };
    crate::SwinConfig {
        img_size: v.img_size,
        patch_size: v.patch_size,
        in_chans: v.in_chans,
        embed_dim,
        depths,
        num_heads,
        window_size: crate::swin::WindowSize::One(grid.div_ceil(2).max(1)),
        num_classes: v.num_classes,
        drop_path_rate: 0.0,
        ..crate::SwinConfig::default()
    }
}

impl RunConfig {
    /// `method`'s config for `sizes` with the method's defaults (MAE: ratio 0.75, pixel
    /// targets; DINO/iBOT: `main_dino.py`'s recipe with the last layer frozen for one epoch
    /// of `images` at `batch`; iBOT: prediction ratio 0 or 0.3 ± 0.2).
    pub fn standard(method: Method, z: &Sizes, images: usize, batch: usize) -> Result<Self, String> {
        use crate::heads::DinoHeadConfig;
        if !z.backbone.trains(method) {
            return Err(format!(
                "{} trains a ViT here; a {} backbone is for the supervised baseline",
                method.name(),
                z.backbone.title()
            ));
        }
        use crate::methods::dino_train::DinoConfig;
        let vit = z.vit();
        let head = DinoHeadConfig {
            in_dim: z.embed_dim,
            out_dim: z.out_dim,
            hidden_dim: z.head_hidden_dim,
            bottleneck_dim: z.bottleneck_dim,
            nlayers: 3,
            norm_last_layer: true,
        };
        let dino = DinoConfig {
            head,
            local_size: z.local_size,
            n_local: z.local_crops,
            student_temp: 0.1,
            center_momentum: 0.9,
            vit,
        };
        let recipe = dino::DinoRecipe::defaults(images.div_ceil(batch.max(1)));
        let config = match method {
            Method::Mae => {
                let cfg = crate::methods::mae::MaeConfig {
                    img_size: z.img_size,
                    patch_size: z.patch_size,
                    in_chans: z.in_chans,
                    embed_dim: z.embed_dim,
                    depth: z.depth,
                    num_heads: z.heads,
                    decoder_embed_dim: z.decoder_dim,
                    decoder_depth: z.decoder_depth,
                    decoder_num_heads: z.decoder_heads,
                    mlp_ratio: 4.0,
                    norm_pix_loss: false,
                    mask_ratio: 0.75,
                    norm_eps: 1e-6,
                };
                cfg.validate().map_err(|e| e.to_string())?;
                RunConfig::Mae(cfg)
            }
            Method::Dino => {
                dino.validate().map_err(|e| e.to_string())?;
                RunConfig::Dino(dino::DinoRun { model: dino, recipe })
            }
            Method::Supervised => {
                if z.classes == 0 {
                    return Err("supervised training needs labelled data (classes > 0)".into());
                }
                let arch = match z.backbone {
                    BackboneKind::Vit => supervised::Arch::Vit(crate::VitConfig { num_classes: z.classes, ..dino.vit }),
                    BackboneKind::Swin => {
                        let swin = swin_like(&crate::VitConfig { num_classes: z.classes, ..dino.vit });
                        swin.validate().map_err(|e| e.to_string())?;
                        supervised::Arch::Swin(swin)
                    }
                };
                RunConfig::Supervised(supervised::SupervisedRun { arch, fine_tuned_from: None })
            }
            Method::Ibot => {
                let run = dino::DinoRun { model: dino, recipe };
                RunConfig::Ibot(ibot::IbotRun::on_dino(run, Default::default(), 1.0, 0.07, 0.04)?)
            }
        };
        Ok(config)
    }
}

/// Where a checkpoint says its run stands.
#[derive(Clone, Debug)]
pub struct Resumed {
    pub schedule: Schedule,
    pub config: RunConfig,
    pub normalize: Normalize,
    pub step: usize,
    pub rng: Rng,
    pub elapsed_s: f64,
}

fn meta<'a>(file: &'a TensorFile, key: &str) -> Result<&'a str, String> {
    file.metadata.get(key).map(|s| s.as_str()).ok_or_else(|| format!("the checkpoint has no `{key}` metadata"))
}

/// Read a checkpoint's settings and position (not its tensors: see [`restore`]).
pub fn read_checkpoint(file: &TensorFile) -> Result<Resumed, String> {
    if file.metadata.get("format").map(|s| s.as_str()) != Some(CHECKPOINT_FORMAT) {
        return Err(format!("not a patchwork training checkpoint (format {CHECKPOINT_FORMAT})"));
    }
    let schedule: Schedule =
        serde_json::from_str(meta(file, "schedule")?).map_err(|e| format!("the checkpoint's schedule: {e}"))?;
    let config = RunConfig::from_json(schedule.method, meta(file, "config")?)?;
    let normalize = serde_json::from_str(meta(file, "normalize")?).map_err(|e| format!("normalize: {e}"))?;
    let step = meta(file, "step")?.parse().map_err(|e| format!("step: {e}"))?;
    let rng: [u64; 4] = serde_json::from_str(meta(file, "rng")?).map_err(|e| format!("rng: {e}"))?;
    let elapsed_s = meta(file, "elapsed_s")?.parse().map_err(|e| format!("elapsed_s: {e}"))?;
    Ok(Resumed { schedule, config, normalize, step, rng: Rng::from_state(rng), elapsed_s })
}

/// The trainer a checkpoint holds, on `be`.
pub fn restore<'b, B: Backend + 'b>(
    be: &B,
    r: &Resumed,
    file: &TensorFile,
) -> Result<Box<dyn Trainer<B> + 'b>, String> {
    let (steps, wd) = (r.schedule.steps, r.schedule.weight_decay);
    Ok(match &r.config {
        RunConfig::Mae(c) => Box::new(mae::MaeTrainer::from_checkpoint(be, c.clone(), file)?),
        RunConfig::Dino(run) => Box::new(dino::DinoTrainer::from_checkpoint(be, run.clone(), file, steps, wd)?),
        RunConfig::Ibot(run) => Box::new(ibot::IbotTrainer::from_checkpoint(be, run.clone(), file, steps, wd)?),
        RunConfig::Supervised(run) => Box::new(supervised::SupervisedTrainer::from_checkpoint(be, run.clone(), file)?),
    })
}

fn metadata(pairs: Vec<(&str, String)>) -> std::collections::HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The checkpoint after `step` steps: weights, the method's state and every setting.
pub async fn checkpoint_file<B: Backend>(
    be: &B,
    trainer: &dyn Trainer<B>,
    s: &Schedule,
    norm: &Normalize,
    step: usize,
    rng: &Rng,
    elapsed_s: f64,
) -> TensorFile {
    let mut file = trainer.weights(be).await;
    let (opt, adam_step) = trainer.state(be).await;
    file.tensors.extend(opt.tensors);
    file.metadata = metadata(vec![
        ("format", CHECKPOINT_FORMAT.to_string()),
        ("method", s.method.name().to_string()),
        ("config", trainer.config_json()),
        ("schedule", serde_json::to_string(s).expect("a schedule serialises")),
        ("normalize", serde_json::to_string(norm).expect("normalize serialises")),
        ("step", step.to_string()),
        ("adam_step", adam_step.to_string()),
        ("rng", serde_json::to_string(&rng.state()).expect("an rng state serialises")),
        ("elapsed_s", elapsed_s.to_string()),
    ]);
    file
}

/// The model file of a finished (or exported) run; `train` is the run's record (command,
/// schedule, backend, time, final loss).
pub async fn model_file<B: Backend>(
    be: &B,
    trainer: &dyn Trainer<B>,
    s: &Schedule,
    norm: &Normalize,
    train: serde_json::Value,
) -> TensorFile {
    let mut model = trainer.weights(be).await;
    let mut meta = metadata(vec![
        ("format", MODEL_FORMAT.to_string()),
        ("method", s.method.name().to_string()),
        ("config", trainer.config_json()),
        ("normalize", serde_json::to_string(norm).expect("normalize serialises")),
        ("train", train.to_string()),
    ]);
    meta.extend(trainer.model_metadata());
    model.metadata = meta;
    model
}

/// A host tensor file's f32 tensor by name.
pub fn tensor_f32<'a>(file: &'a TensorFile, name: &str) -> Result<&'a [f32], String> {
    file.tensors.get(name).and_then(Tensor::as_f32).ok_or_else(|| format!("the checkpoint has no f32 tensor `{name}`"))
}

/// Write `file`'s `{prefix}{name}` tensors into the parameters `p`.
pub fn load_into<B: Backend>(be: &B, p: &Params<B>, file: &TensorFile, prefix: &str) -> Result<(), String> {
    for t in &p.list {
        be.write(&t.buf, tensor_f32(file, &format!("{prefix}{}", t.name))?);
    }
    Ok(())
}

/// Write the backbone `vit` of `file` (checked against its shapes) into each of `into`;
/// parameters a backbone does not have (iBOT's `masked_embed`) keep their values.
pub fn init_backbone<B: Backend>(
    be: &B,
    vit: &crate::VitConfig,
    file: &TensorFile,
    into: [&Params<B>; 2],
) -> Result<(), String> {
    // an MAE's decoder and mask token, or a classifier's head, are not the backbone's
    let names: Vec<String> = vit.param_shapes().into_iter().map(|(n, _)| n).collect();
    let mut backbone = file.clone();
    backbone.tensors.retain(|k, _| names.contains(k));
    if let Some(pos) = resized_pos_embed(vit, file)? {
        backbone.tensors.insert("pos_embed".into(), pos);
    }
    let loaded = Vit::from_file(be, vit.clone(), &backbone).map_err(|e| format!("not this run's backbone: {e}"))?;
    for p in into {
        for t in p.list.iter().filter(|t| loaded.params.try_get(&t.name).is_some()) {
            be.write(&t.buf, tensor_f32(&backbone, &t.name)?);
        }
    }
    Ok(())
}

/// `file`'s position embeddings on `vit`'s patch grid when the file was trained on another
/// (square) grid: the class token's and registers' rows kept, the grid's interpolated as
/// DINO's `interpolate_pos_encoding` does, so a run can go on at a higher resolution
/// (DINOv2's last phase) or a lower one. `None` when the grids agree.
fn resized_pos_embed(vit: &crate::VitConfig, file: &TensorFile) -> Result<Option<Tensor>, String> {
    let Some(old) = file.tensors.get("pos_embed").and_then(Tensor::as_f32) else {
        return Ok(None); // reported as a missing tensor by the shape check
    };
    let (d, prefix, dst) = (vit.embed_dim, vit.prefix_tokens(), vit.grid());
    let want = prefix + dst[0] * dst[1];
    if old.len() == want * d || old.len() % d != 0 || old.len() / d <= prefix {
        return Ok(None);
    }
    let n = old.len() / d - prefix;
    let s = (n as f64).sqrt().round() as usize;
    if s * s != n {
        return Err(format!(
            "pos_embed holds {n} patch positions, not a square grid: cannot interpolate it to {dst:?}"
        ));
    }
    let m = crate::pos_embed::interp_matrix([s, s], dst);
    let mut pos = old[..prefix * d].to_vec();
    for row in m.chunks_exact(n) {
        let mut out = vec![0.0f32; d];
        for (w, src) in row.iter().zip(old[prefix * d..].chunks_exact(d)) {
            out.iter_mut().zip(src).for_each(|(o, x)| *o += w * x);
        }
        pos.extend(out);
    }
    Ok(Some(Tensor::f32(vec![1, want, d], pos)))
}

/// The tensors of `file` under `prefix`, with the prefix removed.
pub fn part(file: &TensorFile, prefix: &str) -> TensorFile {
    let mut t = TensorFile::default();
    for (k, v) in &file.tensors {
        if let Some(name) = k.strip_prefix(prefix) {
            t.tensors.insert(name.to_string(), v.clone());
        }
    }
    t
}

/// Adam's step count of a checkpoint (0 when absent).
pub fn adam_step(file: &TensorFile) -> Result<u32, String> {
    file.metadata
        .get("adam_step")
        .map(|s| s.parse().map_err(|e| format!("adam_step: {e}")))
        .transpose()
        .map(|s| s.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_visits_every_image_once_per_epoch_and_depends_only_on_the_step() {
        let mut s = Sampler::new(7, 10);
        let mut seen: Vec<usize> = (0..5).flat_map(|step| s.indices(step, 2)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let later = s.indices(13, 3);
        assert_eq!(Sampler::new(7, 10).indices(13, 3), later);
    }

    /// `--init` at another image size: the backbone loads with its position embeddings as
    /// the engine's own resized model (`Vit::at_size`, DINO's interpolation) has them, the
    /// class token's and registers' rows unchanged; a grid that is not square is refused.
    #[test]
    fn init_backbone_interpolates_position_embeddings_to_the_runs_grid() {
        let be = crate::cpu::Cpu;
        let cfg = crate::pos_embed::tests::micro_config(1);
        let small = Vit::init(&be, cfg.clone(), 3);
        let file = crate::block_on(small.params.download(&be, ""));
        let big_cfg = crate::VitConfig { img_size: [12, 12], ..cfg };
        let big = Vit::init(&be, big_cfg.clone(), 4);
        init_backbone(&be, &big_cfg, &file, [&big.params, &big.params]).unwrap();
        let want = crate::block_on(be.read(small.at_size(&be, [12, 12]).unwrap().vit.params.get("pos_embed")));
        let got = crate::block_on(be.read(big.params.get("pos_embed")));
        assert_eq!(got.len(), (2 + 9) * 4);
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?} vs {want:?}");
        let cls = |v: &Vit<crate::cpu::Cpu>| crate::block_on(be.read(v.params.get("cls_token")));
        assert_eq!(cls(&big), cls(&small));
        let mut odd = file.clone();
        odd.tensors.insert("pos_embed".into(), Tensor::f32(vec![1, 2 + 3, 4], vec![0.5; 20]));
        let err = init_backbone(&be, &big_cfg, &odd, [&big.params, &big.params]).unwrap_err();
        assert!(err.contains("not a square grid"), "{err}");
    }

    #[test]
    fn every_method_is_listed_once_and_parses_back() {
        for m in METHODS {
            assert_eq!(Method::parse(m.name), Some(m.method));
            assert_eq!(m.method.name(), m.name);
        }
        assert_eq!(Method::parse("nope"), None);
    }

    fn micro() -> Sizes {
        Sizes {
            img_size: 28,
            patch_size: 7,
            in_chans: 1,
            embed_dim: 16,
            depth: 1,
            heads: 2,
            decoder_dim: 8,
            decoder_depth: 1,
            decoder_heads: 2,
            out_dim: 32,
            head_hidden_dim: 16,
            bottleneck_dim: 8,
            local_size: 14,
            local_crops: 2,
            classes: 10,
            backbone: BackboneKind::Vit,
        }
    }

    fn images(n: usize) -> ImageSet {
        let mut rng = Rng::new(3);
        let images = (0..n).map(|_| Image::new(28, 28, 1, (0..28 * 28).map(|_| rng.uniform()).collect())).collect();
        let labels = Some((0..n as u32).map(|i| i % 10).collect());
        ImageSet { images, labels, norm: Normalize { mean: vec![0.5], std: vec![0.25] }, crops: None }
    }

    /// Every method through the generic path the browser takes: build from sizes, two
    /// steps, checkpoint, restore, and the third step's loss is the same as without the
    /// round trip.
    #[test]
    fn every_method_resumes_from_its_checkpoint_exactly() {
        for info in METHODS {
            let cfg = RunConfig::standard(info.method, &micro(), 6, 2).unwrap();
            resumes_exactly(&cfg, info.name);
        }
    }

    /// Two steps, a checkpoint through bytes, a restore: the third step's loss is the same.
    fn resumes_exactly(cfg: &RunConfig, name: &str) -> TensorFile {
        let (be, data) = (crate::Cpu, images(6));
        let s = Schedule::defaults(cfg.method(), "test", 1, 3, 2);
        let mut t = cfg.trainer(&be, &s);
        let (lrs, mut rng, mut sampler) = (s.lrs(), s.data_rng(), Sampler::new(s.seed, data.len()));
        let mut run = |t: &mut Box<dyn Trainer<crate::Cpu>>, step: usize, rng: &mut Rng| {
            let idx = sampler.indices(step, s.batch);
            crate::block_on(t.step(&be, &data, &idx, step, rng, s.step_config(lrs[step])))
        };
        for step in 0..2 {
            assert!(run(&mut t, step, &mut rng).is_finite(), "{name}: step {step}");
        }
        let file = crate::block_on(checkpoint_file(&be, t.as_ref(), &s, &data.norm, 2, &rng, 1.0));
        let file = TensorFile::from_bytes(&file.to_bytes()).unwrap();
        let r = read_checkpoint(&file).unwrap();
        assert_eq!((r.step, &r.schedule, &r.config), (2, &s, cfg), "{name}");
        let mut back = restore(&be, &r, &file).unwrap();
        let mut rng2 = r.rng.clone();
        let (a, b) = (run(&mut t, 2, &mut rng), run(&mut back, 2, &mut rng2));
        assert_eq!(a, b, "{name}: the third step's loss after a restore");
        crate::block_on(model_file(&be, t.as_ref(), &s, &data.norm, serde_json::json!({})))
    }

    /// A Swin classifier resumes exactly too; the self-supervised methods refuse a Swin.
    #[test]
    fn a_swin_classifier_resumes_from_its_checkpoint_exactly() {
        let sizes = Sizes { backbone: BackboneKind::Swin, ..micro() };
        let cfg = RunConfig::standard(Method::Supervised, &sizes, 6, 2).unwrap();
        let swin = cfg.swin().expect("a Swin run");
        assert_eq!((swin.depths.clone(), swin.num_heads.clone(), swin.num_features()), (vec![1, 1], vec![1, 2], 16));
        assert_eq!(swin.geom(0, 1).windows(), 4, "stage 0: 2×2 windows of the 4×4 grid");
        assert!(swin.geom(0, 1).shifted());
        let model = resumes_exactly(&cfg, "supervised Swin");
        assert!(model.metadata.contains_key("swin_config"));
        assert!(model.tensors.contains_key("head.fc.weight"));
        assert!(model.tensors.contains_key("layers.1.blocks.0.attn.qkv.weight"));
        for method in [Method::Mae, Method::Dino, Method::Ibot] {
            let err = RunConfig::standard(method, &sizes, 6, 2).unwrap_err();
            assert!(err.contains("trains a ViT"), "{err}");
        }
    }

    /// `patchwork attention` and `eval` read a run's checkpoint as its backbone (the teacher
    /// for DINO and iBOT), like the finished model file.
    #[test]
    fn a_checkpoint_reads_as_its_backbone() {
        let be = crate::Cpu;
        for method in [Method::Dino, Method::Ibot, Method::Supervised] {
            let s = Schedule::defaults(method, "test", 1, 2, 2);
            let cfg = RunConfig::standard(method, &micro(), 4, 2).unwrap();
            let t = cfg.trainer(&be, &s);
            let ckpt = crate::block_on(checkpoint_file(&be, t.as_ref(), &s, &images(1).norm, 0, &Rng::new(0), 0.0));
            let model = crate::block_on(model_file(&be, t.as_ref(), &s, &images(1).norm, serde_json::json!({})));
            let (from_ckpt, weights) = crate::attention::vit_from_file(ckpt, None).unwrap();
            let (from_model, _) = crate::attention::vit_from_file(model.clone(), None).unwrap();
            assert_eq!(from_ckpt.cfg, from_model.cfg, "{method:?}");
            assert_eq!(Some(from_ckpt.cfg.clone()), cfg.backbone(), "{method:?}");
            for (name, _) in from_ckpt.cfg.param_shapes() {
                assert_eq!(weights.tensors[&name], model.tensors[&name], "{method:?} {name}");
            }
        }
    }

    /// `--init`: a trainer from a model file holds that model's weights.
    #[test]
    fn a_trainer_from_a_model_file_starts_from_its_weights() {
        let be = crate::Cpu;
        let s = Schedule::defaults(Method::Mae, "test", 1, 2, 2);
        let cfg = RunConfig::standard(Method::Mae, &micro(), 4, 2).unwrap();
        let first = cfg.trainer(&be, &s);
        let model = crate::block_on(model_file(&be, first.as_ref(), &s, &images(1).norm, serde_json::json!({})));
        let second = cfg.trainer_from_model(&be, &model, &s).unwrap();
        assert_eq!(crate::block_on(second.weights(&be)).tensors, model.tensors);
        // DINO and iBOT take the MAE's encoder as their backbone; the MAE's decoder is left out
        let encoder: Vec<_> =
            model.tensors.keys().filter(|k| !k.starts_with("decoder") && *k != "mask_token").collect();
        for method in [Method::Dino, Method::Ibot] {
            let cfg = RunConfig::standard(method, &micro(), 4, 2).unwrap();
            let s = Schedule::defaults(method, "test", 1, 2, 2);
            let t = cfg.trainer_from_model(&be, &model, &s).unwrap();
            let teacher = crate::block_on(t.weights(&be));
            assert_eq!(teacher.tensors.keys().collect::<Vec<_>>(), encoder, "{method:?}");
            for k in &encoder {
                assert_eq!(teacher.tensors[*k], model.tensors[*k], "{method:?} {k}");
            }
            // and it trains from there
            let data = images(4);
            let idx = [0, 1];
            let mut rng = Rng::new(0);
            let mut t = t;
            assert!(crate::block_on(t.step(&be, &data, &idx, 0, &mut rng, s.step_config(1e-3))).is_finite());
        }
        // a backbone of other sizes is refused by name
        let wide = Sizes { embed_dim: micro().embed_dim * 2, ..micro() };
        let dino = RunConfig::standard(Method::Dino, &wide, 4, 2).unwrap();
        let err = dino.trainer_from_model(&be, &model, &s).err().unwrap();
        assert!(err.contains("not this run's backbone"), "{err}");
    }
}
