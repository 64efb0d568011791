//! The Train page's one owner of compute: it loads the data, builds the method's
//! [`Trainer`] on the CPU backend or WebGPU, runs the schedule step by step (yielding to the
//! browser between steps), evaluates frozen features every K steps (DINO's weighted kNN and
//! a linear probe on the held-out split), checkpoints to browser storage every N steps, and
//! publishes plain structs ([`Curves`], [`Status`], [`Progress`]) through signals. No
//! buffer leaves this module.
//!
//! ```text
//! trainer = RunConfig::standard(method, preset).trainer()  | restore(checkpoint)
//! for step in start..steps:
//!     loss = trainer.step(batch(step), lr[step]).await     # as `patchwork train`
//!     stop on a non-finite loss (the last checkpoint stays)
//!     every eval_every: kNN / linear probe of the backbone's [CLS] features
//!     every checkpoint_every: store::save(config, curves, checkpoint)
//! ```
pub mod page;

use std::rc::Rc;

use leptos::prelude::*;
use patchwork_compute::attention::{backbone_from_file, vit_from_file, BackboneModel};
use patchwork_compute::augment::Image;
use patchwork_compute::eval::{knn_votes, l2_normalize, top_k_accuracy, train_linear, LinearConfig};
use patchwork_compute::model_file::Normalize;
use patchwork_compute::rng::Rng;
use patchwork_compute::train::supervised::{Arch, SupervisedRun, SupervisedTrainer};
use patchwork_compute::train::{
    checkpoint_file, model_file, read_checkpoint, restore, swin_like, BackboneKind, ImageSet, Method, RunConfig,
    Sampler, Schedule, Sizes, Trainer,
};
use patchwork_compute::{Backbone, Backend, Cpu, Gpu, Swin, TensorFile, Vit};
use serde::{Deserialize, Serialize};

use crate::browser;
use crate::engine::{next_tick, BackendKind};
use crate::reconstruct::{cell_size, grid, Picture};
use crate::store::{self, SavedRun};

/// Model sizes offered on the page; all take 28×28 grey images (Fashion-MNIST).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 32 wide, 1 block, 7-px patches: seconds per step even on a software GPU.
    Micro,
    /// 64 wide, 2 blocks, 4-px patches.
    Tiny,
    /// The bundled Fashion-MNIST models' size: 128 wide, 4 blocks.
    Small,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Micro, Preset::Tiny, Preset::Small];

    pub fn slug(self) -> &'static str {
        match self {
            Preset::Micro => "micro",
            Preset::Tiny => "tiny",
            Preset::Small => "small",
        }
    }

    /// E.g. "tiny (ViT 64×2, patch 4)" or "tiny (Swin 32→64, 1+1 blocks, patch 4)"; on the
    /// photos also the input side.
    pub fn label_for(self, data: &DataChoice, backbone: BackboneKind) -> String {
        let s = TrainForm { preset: self, data: data.clone(), ..TrainForm::default() }.sizes();
        let input = if *data == DataChoice::Photos { format!("{} px colour, ", s.img_size) } else { String::new() };
        let model = match backbone {
            BackboneKind::Vit => format!("ViT {}×{}", s.embed_dim, s.depth),
            BackboneKind::Swin => {
                let c = swin_like(&s.vit());
                let widths: Vec<String> = (0..c.stages()).map(|i| c.dim(i).to_string()).collect();
                let depths: Vec<String> = c.depths.iter().map(|d| d.to_string()).collect();
                format!("Swin {}, {} blocks", widths.join("→"), depths.join("+"))
            }
        };
        format!("{} ({model}, {input}patch {})", self.slug(), s.patch_size)
    }

    pub fn parse(s: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.slug() == s)
    }

    pub fn sizes(self) -> Sizes {
        let (embed_dim, depth, heads, patch_size, out_dim, hidden, bottleneck, local_size, local_crops) = match self {
            Preset::Micro => (32, 1, 2, 7, 64, 64, 32, 14, 2),
            Preset::Tiny => (64, 2, 2, 4, 256, 256, 64, 12, 4),
            Preset::Small => (128, 4, 4, 4, 1024, 512, 128, 12, 6),
        };
        Sizes {
            img_size: 28,
            patch_size,
            in_chans: 1,
            embed_dim,
            depth,
            heads,
            decoder_dim: (embed_dim / 2).max(16),
            decoder_depth: if self == Preset::Micro { 1 } else { 2 },
            decoder_heads: 2,
            out_dim,
            head_hidden_dim: hidden,
            bottleneck_dim: bottleneck,
            local_size,
            local_crops,
            classes: 10,
            backbone: BackboneKind::Vit,
        }
    }
}

impl Preset {
    /// The preset's sizes for the bundled photos: colour, 32 px (micro, tiny) or 64 px (small).
    pub fn photo_sizes(self) -> Sizes {
        let (img_size, patch_size, local_size) = match self {
            Preset::Micro => (32, 8, 16),
            Preset::Tiny => (32, 4, 16),
            Preset::Small => (64, 8, 32),
        };
        Sizes { img_size, patch_size, in_chans: 3, local_size, ..self.sizes() }
    }
}

/// What the form sets; saved with every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainForm {
    pub method: Method,
    pub preset: Preset,
    pub steps: usize,
    pub batch: usize,
    /// Empty: the method's default.
    pub lr: Option<f32>,
    pub eval_every: usize,
    pub checkpoint_every: usize,
    pub seed: u64,
    /// Held-out images for kNN / linear probe (and training images as their memory bank).
    pub eval_train: usize,
    pub eval_test: usize,
    /// Supervised only: a bundled model (file name under `models/`) whose backbone the run
    /// fine-tunes with a fresh head; absent: train from random weights.
    #[serde(default)]
    pub fine_tune_from: Option<String>,
    #[serde(default)]
    pub data: DataChoice,
    /// ViT, or Swin for the supervised baseline.
    #[serde(default)]
    pub backbone: BackboneKind,
}

impl TrainForm {
    /// The model sizes of the form's preset and backbone for its data (28×28 grey, or
    /// colour photos).
    pub fn sizes(&self) -> Sizes {
        let sizes = match self.data {
            DataChoice::Photos => self.preset.photo_sizes(),
            _ => self.preset.sizes(),
        };
        Sizes { backbone: self.backbone, ..sizes }
    }
}

impl Default for TrainForm {
    fn default() -> Self {
        TrainForm {
            method: Method::Dino,
            preset: Preset::Micro,
            steps: 200,
            batch: 32,
            lr: None,
            eval_every: 50,
            checkpoint_every: 50,
            seed: 0,
            eval_train: 1000,
            eval_test: 500,
            fine_tune_from: None,
            data: DataChoice::Fashion,
            backbone: BackboneKind::Vit,
        }
    }
}

impl TrainForm {
    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0 || self.batch == 0 {
            return Err("steps and batch must be at least 1".into());
        }
        if self.eval_every == 0 || self.checkpoint_every == 0 {
            return Err("evaluate and checkpoint every ≥ 1 step".into());
        }
        if let Some(lr) = self.lr.filter(|lr| !(lr.is_finite() && *lr > 0.0)) {
            return Err(format!("learning rate {lr} must be a positive number"));
        }
        if !self.backbone.trains(self.method) {
            return Err(format!("{} trains a ViT here; Swin is for the supervised baseline", self.method.info().title));
        }
        if self.backbone == BackboneKind::Swin && self.fine_tune_from.is_some() {
            return Err("the bundled models are ViTs: a Swin trains from random weights".into());
        }
        Ok(())
    }

    /// The method's own learning rate, used when the form leaves it empty.
    pub fn schedule_default_lr(&self) -> f32 {
        Schedule::defaults(self.method, "", 1, 1, 1).lr
    }

    pub fn schedule(&self) -> Schedule {
        let mut s = Schedule::defaults(self.method, &self.data.label(), 1, self.steps, self.batch);
        s.seed = self.seed;
        if let Some(lr) = self.lr {
            s.lr = lr;
        }
        s
    }
}

/// One curve: `(step, value)` points.
pub type Curve = Vec<(f64, f64)>;

/// Everything the charts draw; saved with every checkpoint, so a resumed run's curves
/// continue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    pub loss: Curve,
    pub lr: Curve,
    pub images_per_s: Curve,
    /// Top-1 accuracy in percent on the held-out split.
    pub knn: Curve,
    pub linear: Curve,
    /// Supervised runs: the classifier's own top-1 accuracy on the held-out split.
    #[serde(default)]
    pub classifier: Curve,
}

impl Curves {
    /// The curves as CSV: one row per step, empty cells where a curve has no point.
    pub fn to_csv(&self) -> String {
        let mut steps: Vec<f64> = self.loss.iter().chain(&self.knn).chain(&self.linear).map(|p| p.0).collect();
        steps.sort_by(f64::total_cmp);
        steps.dedup();
        let at = |c: &Curve, s: f64| c.iter().find(|p| p.0 == s).map(|p| p.1.to_string()).unwrap_or_default();
        let mut out = String::from("step,loss,lr,images_per_s,knn_top1,linear_top1,classifier_top1\n");
        for s in steps {
            let row =
                [&self.loss, &self.lr, &self.images_per_s, &self.knn, &self.linear, &self.classifier].map(|c| at(c, s));
            out += &format!("{s},{}\n", row.join(","));
        }
        out
    }
}

/// Where the run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Idle,
    Working(String),
    Running,
    Paused,
    Stopped(String),
    Finished(String),
    Failed(String),
}

impl Status {
    pub fn active(&self) -> bool {
        matches!(self, Status::Working(_) | Status::Running | Status::Paused)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub images_per_s: f64,
    pub eta_s: f64,
    pub last_checkpoint: Option<usize>,
}

/// What the page asks of a running loop, checked between steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Run,
    Pause,
    Stop,
}

/// A classifier's confusion matrix at a step: `(step, counts[true][predicted], class names)`.
pub type Confusion = (usize, Vec<Vec<u32>>, Vec<String>);

/// The signals a run publishes to, and the command cell it reads.
#[derive(Clone, Copy)]
pub struct RunSignals {
    pub status: RwSignal<Status>,
    pub curves: RwSignal<Curves>,
    pub progress: RwSignal<Progress>,
    pub form: RwSignal<TrainForm>,
    pub run_id: RwSignal<Option<String>>,
    /// For MAE runs: reconstructions of a few fixed held-out images, and the step they show.
    pub recon: RwSignal<Option<(usize, Picture)>>,
    /// For supervised runs: the classifier's confusion matrix on the held-out split
    /// (`[true class][predicted class]` counts) and the step it is from.
    pub confusion: RwSignal<Option<Confusion>>,
}

impl RunSignals {
    /// Fresh signals: nothing run yet, the default form.
    pub fn new() -> Self {
        RunSignals {
            status: RwSignal::new(Status::Idle),
            curves: RwSignal::new(Curves::default()),
            progress: RwSignal::new(Progress::default()),
            form: RwSignal::new(TrainForm::default()),
            run_id: RwSignal::new(None),
            recon: RwSignal::new(None),
            confusion: RwSignal::new(None),
        }
    }
}

impl Default for RunSignals {
    fn default() -> Self {
        Self::new()
    }
}

/// What a run trains and evaluates on: 28×28 grey images, a training split and a held-out
/// split (labelled where the source has classes).
pub struct TrainData {
    pub train: ImageSet,
    pub test: ImageSet,
    /// Class names by label; empty when the images have no labels.
    pub classes: Vec<String>,
}

impl TrainData {
    /// Whether the held-out scores (kNN, probe, classifier) can be computed.
    pub fn labelled(&self) -> bool {
        !self.classes.is_empty()
            && self.train.labels.is_some()
            && self.test.labels.is_some()
            && !self.test.images.is_empty()
    }
}

/// The data a run uses; saved with its checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataChoice {
    /// The bundled Fashion-MNIST subset.
    #[default]
    Fashion,
    /// A folder the user picked (its name), `CLASS/IMAGE` inside for labels.
    Folder(String),
    /// The bundled photos (`assets/photos`, unlabelled), in colour, as random crops.
    Photos,
}

impl DataChoice {
    pub fn label(&self) -> String {
        match self {
            DataChoice::Fashion => "Fashion-MNIST (bundled subset)".into(),
            DataChoice::Folder(name) => format!("your folder “{name}”"),
            DataChoice::Photos => "the bundled photos".into(),
        }
    }
}

/// Side of the images every preset takes (Fashion-MNIST's).
pub const SIDE: usize = 28;

/// A picture as the presets take it: composited over white, centre square, resized to
/// 28×28, grey (ITU-R 601 luma, as the `image` crate converts).
pub fn to_grey_28(pic: &Picture) -> Image {
    let img = over_white(pic);
    let side = pic.width.min(pic.height);
    let square = img.crop_imm((pic.width - side) / 2, (pic.height - side) / 2, side, side);
    let grey = square.resize_exact(SIDE as u32, SIDE as u32, image::imageops::FilterType::Triangle).to_luma8();
    Image::from_u8(SIDE, SIDE, 1, grey.as_raw())
}

/// `pic` with its alpha laid over white (as the model sees transparent pixels).
fn over_white(pic: &Picture) -> image::DynamicImage {
    let mut rgba = pic.rgba.clone();
    for px in rgba.chunks_mut(4) {
        let a = px[3] as f32 / 255.0;
        for c in &mut px[..3] {
            *c = (*c as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        }
        px[3] = 255;
    }
    image::DynamicImage::ImageRgba8(image::RgbaImage::from_raw(pic.width, pic.height, rgba).expect("RGBA size"))
}

/// A picked folder as training data: `(relative path, picture)` per decoded image. A path
/// `ROOT/CLASS/…/IMAGE` gives the image the class `CLASS` (every image must then have one);
/// images straight in the root leave the data unlabelled. A seeded fifth (at least one
/// image) is held out for the scores.
pub fn folder_data(files: Vec<(String, Picture)>) -> Result<TrainData, String> {
    if files.len() < 2 {
        return Err(format!("the folder has {} readable image(s); a run needs at least 2", files.len()));
    }
    let class_of = |path: &str| {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        (parts.len() >= 3).then(|| parts[1].to_string())
    };
    let mut classes: Vec<String> = files.iter().filter_map(|(p, _)| class_of(p)).collect();
    classes.sort();
    classes.dedup();
    let labelled = files.iter().all(|(p, _)| class_of(p).is_some());
    if !labelled {
        classes.clear();
    }
    let mut order: Vec<usize> = (0..files.len()).collect();
    let mut sorted: Vec<&String> = files.iter().map(|(p, _)| p).collect();
    sorted.sort();
    order.sort_by_key(|&i| sorted.binary_search(&&files[i].0).unwrap_or(i));
    let mut rng = Rng::new(0);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let n_test = (files.len() / 5).max(1);
    let norm = fashion_norm();
    let split = |idx: &[usize]| ImageSet {
        images: idx.iter().map(|&i| to_grey_28(&files[i].1)).collect(),
        labels: labelled.then(|| {
            idx.iter()
                .map(|&i| {
                    let c = class_of(&files[i].0).expect("labelled");
                    classes.iter().position(|k| *k == c).expect("a listed class") as u32
                })
                .collect()
        }),
        norm: norm.clone(),
        crops: None,
    };
    Ok(TrainData { test: split(&order[..n_test]), train: split(&order[n_test..]), classes })
}

/// Fashion-MNIST's statistics (as `patchwork train` normalises it).
pub fn fashion_norm() -> Normalize {
    Normalize { mean: vec![0.2860], std: vec![0.3530] }
}

fn gunzip(raw: &[u8], what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw).read_to_end(&mut out).map_err(|e| format!("{what}: {e}"))?;
    Ok(out)
}

/// A split from its gzipped idx image and label files.
pub fn split_from_gz(images: &[u8], labels: &[u8], what: &str) -> Result<ImageSet, String> {
    let images = gunzip(images, what)?;
    let labels = gunzip(labels, what)?;
    let (n, rows, cols, pixels) = patchwork_compute::idx::parse_images(&images).map_err(|e| format!("{what}: {e}"))?;
    let labels = patchwork_compute::idx::parse_labels(&labels).map_err(|e| format!("{what}: {e}"))?;
    if labels.len() != n {
        return Err(format!("{what}: {n} images but {} labels", labels.len()));
    }
    let images = pixels.chunks(rows * cols).map(|p| Image::from_u8(cols, rows, 1, p)).collect();
    Ok(ImageSet { images, labels: Some(labels), norm: fashion_norm(), crops: None })
}

async fn fetch_split(split: &str) -> Result<ImageSet, String> {
    let images = browser::fetch_bytes(&format!("fashion-mnist/{split}-images-idx3-ubyte.gz")).await?;
    let labels = browser::fetch_bytes(&format!("fashion-mnist/{split}-labels-idx1-ubyte.gz")).await?;
    split_from_gz(&images, &labels, split)
}

/// The bundled photos (`photos.txt` lists `train/…` and `heldout/…`), as `patchwork train
/// --data photos` uses them: colour, shrunk to 128 px on the shorter side, a random resized
/// crop (scale 0.2–1) and flip per training view, ImageNet statistics. The held-out photos
/// are the MAE reconstructions' images. Unlabelled: no held-out scores.
pub async fn load_photos() -> Result<TrainData, String> {
    let list = browser::fetch_text("photos.txt").await?;
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for path in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let blob = browser::fetch_blob(&format!("photos/{path}")).await?;
        let pic = browser::decode_image(&blob, path).await?;
        let img = shrink_rgb(&pic, PHOTO_SHORT_SIDE);
        if path.starts_with("heldout/") {
            test.push(img);
        } else {
            train.push(img);
        }
    }
    if train.is_empty() {
        return Err("photos.txt lists no training photos".into());
    }
    let norm = Normalize::imagenet(3);
    let crops = Some(patchwork_compute::augment::Augmentation::mae(0));
    Ok(TrainData {
        train: ImageSet { images: train, labels: None, norm: norm.clone(), crops },
        test: ImageSet { images: test, labels: None, norm, crops: None },
        classes: Vec::new(),
    })
}

/// Photos are kept at this many pixels on their shorter side (twice the largest preset's
/// input, as the CLI keeps them).
pub const PHOTO_SHORT_SIDE: usize = 128;

/// `pic` (alpha over white) as an RGB [`Image`] in [0, 1], shrunk so its shorter side is
/// at most `side`.
pub fn shrink_rgb(pic: &Picture, side: usize) -> Image {
    let img = over_white(pic);
    let f = (pic.width.min(pic.height) as f64 / side as f64).max(1.0);
    let (w, h) = (((pic.width as f64 / f).round() as u32).max(1), ((pic.height as f64 / f).round() as u32).max(1));
    let rgb = img.resize_exact(w, h, image::imageops::FilterType::Triangle).to_rgb8();
    Image::from_u8(w as usize, h as usize, 3, rgb.as_raw())
}

/// The bundled subset, fetched from the app's `fashion-mnist/` folder.
pub async fn load_fashion() -> Result<TrainData, String> {
    let classes = patchwork_compute::idx::FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect();
    Ok(TrainData { train: fetch_split("train").await?, test: fetch_split("t10k").await?, classes })
}

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// The pooled ([CLS]) features `[n, D]` of the first `n` images of `set`, normalised with
/// the model's `norm` (as `patchwork eval` feeds them).
async fn features<B: Backend, M: Backbone<B>>(
    be: &B,
    model: &M,
    size: usize,
    set: &ImageSet,
    n: usize,
    norm: &Normalize,
) -> Vec<f32> {
    let n = n.min(set.images.len());
    let mut out = Vec::with_capacity(n * model.embed_dim());
    for chunk in set.images[..n].chunks(100) {
        let mut x = Vec::with_capacity(chunk.len() * size * size * norm.mean.len());
        for img in chunk {
            patchwork_compute::augment::centre_fit(img, size).push_chw(&norm.mean, &norm.std, &mut x);
        }
        let saved = model.forward(be, &be.upload(&x), chunk.len());
        out.extend(be.read(model.pooled(&saved)).await);
        next_tick().await;
    }
    out
}

/// kNN (k = 20, T = 0.07) and linear-probe top-1 accuracy, in percent, of the backbone in
/// `model` (a model file), as `patchwork eval --knn --linear` computes them: features of the
/// first `eval_train` training images (the memory bank / probe training set) and the first
/// `eval_test` test images.
pub async fn evaluate<B: Backend>(
    be: &B,
    model: TensorFile,
    data: &TrainData,
    eval_train: usize,
    eval_test: usize,
) -> Result<(f64, f64), String> {
    let (bm, file) = backbone_from_file(model, None)?;
    let (size, _, dim) = bm.shape();
    let norm = bm.norm().clone();
    let (mut tr, mut te) = match &bm {
        BackboneModel::Vit(vm) => {
            let m = Vit::from_file(be, vm.cfg.clone(), &file).map_err(|e| e.to_string())?;
            (
                features(be, &m, size, &data.train, eval_train, &norm).await,
                features(be, &m, size, &data.test, eval_test, &norm).await,
            )
        }
        BackboneModel::Swin(cfg, _) => {
            let m = Swin::from_file(be, cfg.clone(), &file).map_err(|e| e.to_string())?;
            (
                features(be, &m, size, &data.train, eval_train, &norm).await,
                features(be, &m, size, &data.test, eval_test, &norm).await,
            )
        }
    };
    let label = |s: &ImageSet, n: usize| s.labels.as_ref().map(|l| l[..n.min(l.len())].to_vec()).unwrap_or_default();
    let (ytr, yte) = (label(&data.train, eval_train), label(&data.test, eval_test));
    let classes = data.classes.len().max(1);
    let probe = train_linear(be, &tr, &ytr, dim, classes, &LinearConfig::default(), |_, _| {}).await;
    let linear = top_k_accuracy(&probe.logits(&te), &yte, classes, 1) * 100.0;
    l2_normalize(&mut tr, dim);
    l2_normalize(&mut te, dim);
    let votes = knn_votes(&tr, &ytr, &te, dim, classes, 20, 0.07);
    Ok((top_k_accuracy(&votes, &yte, classes, 1) * 100.0, linear))
}

/// The classifier in `model` (a ViT or Swin with its head) on the first `n` images of `set`:
/// top-1 accuracy in percent and the confusion matrix `[true][predicted]`.
pub async fn classify<B: Backend>(
    be: &B,
    model: TensorFile,
    set: &ImageSet,
    n: usize,
) -> Result<(f64, Vec<Vec<u32>>), String> {
    let arch = Arch::from_model_file(&model)?;
    let classes = arch.num_classes();
    let classifier = arch.classifier(be, &model)?;
    let labels = set.labels.as_ref().ok_or("the held-out images have no labels")?;
    let (n, size, norm) = (n.min(set.images.len()), arch.img_size(), set.norm.clone());
    let mut confusion = vec![vec![0u32; classes]; classes];
    for (c, chunk) in set.images[..n].chunks(100).enumerate() {
        let mut x = Vec::new();
        for img in chunk {
            patchwork_compute::augment::centre_fit(img, size).push_chw(&norm.mean, &norm.std, &mut x);
        }
        let logits = be.read(&classifier.logits(be, &be.upload(&x), chunk.len())).await;
        for (i, row) in logits.chunks(classes).enumerate() {
            let pred = row.iter().enumerate().fold(0, |best, (k, &v)| if v > row[best] { k } else { best });
            let truth = labels[c * 100 + i] as usize;
            if truth < classes {
                confusion[truth][pred] += 1;
            }
        }
        next_tick().await;
    }
    let right: u32 = (0..classes).map(|k| confusion[k][k]).sum();
    Ok((right as f64 * 100.0 / n.max(1) as f64, confusion))
}

/// The backbone of a bundled model (`models/NAME`) and a supervised run on it with a fresh
/// head for Fashion-MNIST's ten classes.
async fn fine_tune_source(name: &str) -> Result<(SupervisedRun, TensorFile), String> {
    let bytes = browser::fetch_bytes(&format!("models/{name}")).await?;
    let file = TensorFile::from_bytes(&bytes).map_err(|e| format!("{name}: {e}"))?;
    let (vm, backbone) = vit_from_file(file, None).map_err(|e| format!("{name}: {e}"))?;
    if vm.cfg.img_size != [28, 28] || vm.cfg.in_chans != 1 {
        return Err(format!(
            "{name} takes {}×{}×{} images; the Fashion-MNIST run needs 28×28 grey",
            vm.cfg.img_size[0], vm.cfg.img_size[1], vm.cfg.in_chans
        ));
    }
    let vit = patchwork_compute::VitConfig { num_classes: 1, ..vm.cfg };
    Ok((SupervisedRun { arch: Arch::Vit(vit), fine_tuned_from: Some(name.to_string()) }, backbone))
}

/// Images of the test split an MAE run reconstructs at every evaluation.
pub const RECON_IMAGES: usize = 4;

/// The MAE in `model` on the first [`RECON_IMAGES`] images of `set` at mask ratio 0.75,
/// with the same masks every time (seed 0), so the rows show the model learning: a grid as
/// the Reconstruct page draws it (masked input, reconstruction, with the visible patches
/// pasted back, original).
async fn reconstructions<B: Backend>(be: &B, model: &TensorFile, set: &ImageSet) -> Result<Picture, String> {
    let m = patchwork_compute::model_file::MaeModel::from_file(model.clone()).map_err(|e| e.to_string())?;
    let mae = patchwork_compute::methods::mae::Mae::from_file(be, m.cfg.clone(), &m.file).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(0);
    let mut rows = Vec::new();
    for img in set.images.iter().take(RECON_IMAGES) {
        let mut x = Vec::new();
        patchwork_compute::augment::centre_fit(img, m.cfg.img_size).push_chw(&m.norm.mean, &m.norm.std, &mut x);
        rows.push(crate::engine::one(be, &mae, &m, &x, 0.75, &mut rng).await?.recon);
    }
    Ok(grid(&m.cfg, &rows, cell_size(&m.cfg) / 2))
}

/// Start (or, with `resume`, continue) a run on `kind`. Returns when it ends; the page
/// reads everything through `sig`.
pub async fn run(
    kind: BackendKind,
    form: TrainForm,
    resume: Option<SavedRun>,
    data: Rc<TrainData>,
    command: RwSignal<Command>,
    sig: RunSignals,
) {
    let result = match kind {
        BackendKind::Cpu => drive(&Cpu, form, resume, &data, command, sig).await,
        BackendKind::WebGpu => match Gpu::new().await {
            Ok(gpu) => drive(&gpu, form, resume, &data, command, sig).await,
            Err(e) => Err(format!("WebGPU: {e}")),
        },
    };
    if let Err(e) = result {
        sig.status.set(Status::Failed(e));
    }
}

/// [`run`] on a backend the caller made (tests destroy a GPU device under it).
pub async fn run_on<B: Backend>(
    be: &B,
    form: TrainForm,
    resume: Option<SavedRun>,
    data: Rc<TrainData>,
    command: RwSignal<Command>,
    sig: RunSignals,
) {
    if let Err(e) = drive(be, form, resume, &data, command, sig).await {
        sig.status.set(Status::Failed(e));
    }
}

async fn drive<B: Backend>(
    be: &B,
    form: TrainForm,
    resume: Option<SavedRun>,
    data: &TrainData,
    command: RwSignal<Command>,
    sig: RunSignals,
) -> Result<(), String> {
    let norm = data.train.norm.clone();
    let (mut trainer, s, start, mut rng, id): (Box<dyn Trainer<B> + '_>, Schedule, usize, Rng, String) = match &resume {
        Some(saved) => {
            sig.status.set(Status::Working(format!("restoring the checkpoint at step {}…", saved.step)));
            let file = TensorFile::from_bytes(&saved.checkpoint).map_err(|e| format!("the saved checkpoint: {e}"))?;
            let r = read_checkpoint(&file)?;
            let curves: Curves =
                serde_json::from_str(&saved.curves_json).map_err(|e| format!("the saved curves: {e}"))?;
            sig.curves.set(curves);
            (restore(be, &r, &file)?, r.schedule, r.step, r.rng, saved.id.clone())
        }
        None => {
            let s = form.schedule();
            sig.curves.set(Curves::default());
            let id = format!("{}-{}-{}", form.method.name(), form.preset.slug(), js_sys::Date::now() as u64);
            let trainer: Box<dyn Trainer<B> + '_> = match (&form.fine_tune_from, form.method) {
                (Some(name), Method::Supervised) => {
                    sig.status.set(Status::Working(format!("loading {name} to fine-tune…")));
                    let (mut run, backbone) = fine_tune_source(name).await?;
                    if data.classes.is_empty() {
                        return Err("fine-tuning needs labelled images (class subfolders)".into());
                    }
                    run.arch.set_num_classes(data.classes.len());
                    Box::new(SupervisedTrainer::fine_tune(be, run, &backbone, s.seed)?)
                }
                _ => {
                    let sizes = Sizes { classes: data.classes.len(), ..form.sizes() };
                    RunConfig::standard(form.method, &sizes, data.train.images.len(), s.batch)?.trainer(be, &s)
                }
            };
            (trainer, s.clone(), 0, s.data_rng(), id)
        }
    };
    sig.run_id.set(Some(id.clone()));
    let lrs = s.lrs();
    let mut sampler = Sampler::new(s.seed, data.train.images.len());
    let mut last_ckpt = resume.as_ref().map(|r| r.step);
    let (t0, mut ips_avg) = (now_ms(), 0.0);
    sig.progress.set(Progress { step: start, steps: s.steps, last_checkpoint: last_ckpt, ..Progress::default() });
    sig.status.set(Status::Running);
    for (step, &lr) in lrs.iter().enumerate().skip(start) {
        loop {
            match command.get_untracked() {
                Command::Run => break,
                Command::Stop => {
                    let kept = last_ckpt.map_or("nothing was saved yet".into(), |k| format!("checkpoint at step {k}"));
                    sig.status.set(Status::Stopped(format!("stopped at step {step}; {kept}")));
                    return Ok(());
                }
                Command::Pause => {
                    if sig.status.get_untracked() != Status::Paused {
                        sig.status.set(Status::Paused);
                    }
                    sleep_ms(100).await;
                }
            }
        }
        if sig.status.get_untracked() != Status::Running {
            sig.status.set(Status::Running);
        }
        let t = now_ms();
        let indices = sampler.indices(step, s.batch);
        let loss = trainer.step(be, &data.train, &indices, step, &mut rng, s.step_config(lr)).await;
        let done = step + 1;
        if let Some(why) = be.lost() {
            return Err(lost_message(&why, done, last_ckpt));
        }
        if !loss.is_finite() {
            let kept = last_ckpt.map_or("no checkpoint was saved yet".into(), |k| {
                format!("the last checkpoint (step {k}) is kept in browser storage")
            });
            return Err(format!(
                "the loss is {loss} at step {done}; training stopped, {kept}. Try a lower learning rate."
            ));
        }
        let ips = s.batch as f64 / ((now_ms() - t) / 1000.0).max(1e-6);
        ips_avg = if step == start { ips } else { 0.9 * ips_avg + 0.1 * ips };
        sig.curves.update(|c| {
            c.loss.push((done as f64, loss));
            c.lr.push((done as f64, lr as f64));
            c.images_per_s.push((done as f64, ips));
        });
        let per_step = (now_ms() - t0) / 1000.0 / (done - start) as f64;
        sig.progress.set(Progress {
            step: done,
            steps: s.steps,
            images_per_s: ips_avg,
            eta_s: per_step * (s.steps - done) as f64,
            last_checkpoint: last_ckpt,
        });
        if done.is_multiple_of(form.eval_every) || done == s.steps {
            let model = model_file(be, trainer.as_ref(), &s, &norm, serde_json::json!({})).await;
            if s.method == Method::Mae && !data.test.images.is_empty() {
                sig.recon.set(Some((done, reconstructions(be, &model, &data.test).await?)));
            }
            if data.labelled() {
                sig.status.set(Status::Working(format!("step {done}: kNN and linear probe on held-out images…")));
                if s.method == Method::Supervised {
                    let (accuracy, confusion) = classify(be, model.clone(), &data.test, form.eval_test).await?;
                    sig.curves.update(|c| c.classifier.push((done as f64, accuracy)));
                    sig.confusion.set(Some((done, confusion, data.classes.clone())));
                }
                let (knn, linear) = evaluate(be, model, data, form.eval_train, form.eval_test).await?;
                sig.curves.update(|c| {
                    c.knn.push((done as f64, knn));
                    c.linear.push((done as f64, linear));
                });
            }
        }
        if let Some(why) = be.lost() {
            return Err(lost_message(&why, done, last_ckpt));
        }
        if done.is_multiple_of(form.checkpoint_every) || done == s.steps {
            sig.status.set(Status::Working(format!("step {done}: saving a checkpoint to browser storage…")));
            let file = checkpoint_file(be, trainer.as_ref(), &s, &norm, done, &rng, 0.0).await;
            let saved = SavedRun {
                id: id.clone(),
                config_json: serde_json::to_string(&form).expect("a form serialises"),
                curves_json: serde_json::to_string(&sig.curves.get_untracked()).expect("curves serialise"),
                checkpoint: file.to_bytes(),
                step: done,
                saved_unix_ms: js_sys::Date::now(),
            };
            if let Err(e) = store::save(&saved).await {
                let kept = last_ckpt
                    .map_or("no checkpoint was saved before".into(), |k| format!("the checkpoint at step {k} is kept"));
                return Err(format!("could not save the checkpoint at step {done}: {e}; training stopped, {kept}"));
            }
            last_ckpt = Some(done);
            sig.progress.update(|p| p.last_checkpoint = last_ckpt);
        }
        if sig.status.get_untracked() != Status::Running {
            sig.status.set(Status::Running);
        }
        next_tick().await;
    }
    sig.status.set(Status::Finished(format!("finished {} steps; checkpoint at step {} saved", s.steps, s.steps)));
    Ok(())
}

fn lost_message(why: &str, step: usize, last_ckpt: Option<usize>) -> String {
    let kept = last_ckpt.map_or("no checkpoint was saved yet".into(), |k| {
        format!("the checkpoint at step {k} is kept; resume it (on WebGPU after a reload, or on the CPU backend)")
    });
    format!("the GPU device was lost at step {step} ({why}); training stopped, {kept}")
}

/// The model file of a saved run (the method's weights with timm names and metadata), for
/// export: read from the checkpoint on the CPU backend.
pub async fn export_model(saved: &SavedRun) -> Result<Vec<u8>, String> {
    let file = TensorFile::from_bytes(&saved.checkpoint).map_err(|e| e.to_string())?;
    let r = read_checkpoint(&file)?;
    let t = restore(&Cpu, &r, &file)?;
    let record = serde_json::json!({ "schedule": r.schedule, "backend": "browser", "step": r.step });
    Ok(model_file(&Cpu, t.as_ref(), &r.schedule, &r.normalize, record).await.to_bytes())
}

/// For the resume offer: what a saved run was.
pub fn describe(saved_form: &str) -> Option<TrainForm> {
    serde_json::from_str(saved_form).ok()
}
