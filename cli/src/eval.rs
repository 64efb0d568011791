//! `patchwork eval --model M --data D`: how good a ViT (or Swin) backbone's frozen features
//! are for classification, as the self-supervised papers measure it:
//! ```text
//! f_train, f_test = backbone(x).pooled                 # CLS after the final norm (DINO); Swin: mean
//! knn    = knn_classifier(normalize(f_train), normalize(f_test), k=20, T=0.07)
//! linear = softmax regression on standardised f_train (Adam, cosine lr), scored on f_test
//! ```
//! The math is `patchwork_compute::eval` (shared with the browser); this file loads the
//! model and the labelled images, extracts the features in batches on the chosen backend
//! and prints a table or one JSON object. `--baseline pixels` scores the same classifiers
//! on the model's input pixels, `--baseline random` on a freshly initialised ViT of the
//! model's config, so a model card can say what the training bought.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::DynamicImage;
use patchwork_compute::attention::{backbone_from_file, BackboneModel};
use patchwork_compute::eval::{knn_votes, l2_normalize, top_k_accuracy, train_linear, LinearConfig};
use patchwork_compute::{block_on, Backbone, Backend, Swin, TensorFile, Vit};
use serde_json::{json, Value};

use crate::backend::{BackendChoice, OnBackend, Probe};
use crate::data::{self, DataSpec, Normalize};
use crate::progress::Progress;

const DATA: &str = "\
Data (--data):
  fashion-mnist   the full set when the Debian package dataset-fashion-mnist is installed
                  (60 000 train / 10 000 test), else the bundled subset (2000 / 1000)
  DIR of idx files  train-* and t10k-* (Fashion-MNIST format)
  DIR/train/<class>/… with DIR/val/<class>/… (or DIR/test/…)   that split, as it is
  DIR/<class>/…    images sorted by file name within each class; every 5th (the 5th,
                  10th, …) is held out for testing, the rest train
Images are resized (shorter side) and centre-cropped to the model's input, converted to its
channels (grey replicated for 3-channel models) and normalised with its statistics.
--train-count / --test-count take a seeded random subset (--seed) of each split.
Accuracies: fractions in the JSON, percentages in the table.";

#[derive(clap::Args, Clone, Debug)]
#[command(after_help = DATA)]
pub struct Args {
    /// A ViT: a `patchwork train` model (MAE's encoder; DINO/iBOT files with `vit_config`
    /// metadata) or a plain timm-named state dict as safetensors.
    #[arg(long)]
    pub model: PathBuf,
    /// `fashion-mnist`, or a folder of idx files or of labelled images (see below).
    #[arg(long)]
    pub data: String,
    /// Run DINO's weighted kNN classifier (with --linear: both; neither: both).
    #[arg(long)]
    pub knn: bool,
    /// Train and score a linear probe.
    #[arg(long)]
    pub linear: bool,
    /// Neighbours that vote in the kNN.
    #[arg(long, default_value_t = 20)]
    pub k: usize,
    /// kNN temperature: a neighbour's vote is exp(cosine similarity / T).
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f32,
    /// Linear probe: passes over the training features.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Linear probe: Adam's peak learning rate (cosine to 0 over the epochs).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Linear probe: mini-batch size.
    #[arg(long, default_value_t = 256)]
    pub linear_batch: usize,
    /// Linear probe: AdamW's decoupled weight decay (not on the bias).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Training images to use [default: all]; a seeded random subset.
    #[arg(long)]
    pub train_count: Option<usize>,
    /// Test images to use [default: all]; a seeded random subset.
    #[arg(long)]
    pub test_count: Option<usize>,
    /// Also score a baseline: the raw normalised pixels, or a randomly initialised ViT of
    /// the model's config.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Images per forward pass when extracting features.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Attention heads of a checkpoint without metadata (see `patchwork attention --help`).
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Seeds the subsets, the linear probe and the random baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Baseline {
    /// The model's input pixels, flattened.
    Pixels,
    /// A ViT of the model's config with fresh weights (`Vit::init` with --seed).
    Random,
}

impl Args {
    /// `(knn, linear)`: both when neither flag is given.
    fn which(&self) -> (bool, bool) {
        if self.knn || self.linear {
            (self.knn, self.linear)
        } else {
            (true, true)
        }
    }
}

// ---- data ----

/// Labelled images.
struct Images {
    images: Vec<DynamicImage>,
    labels: Vec<u32>,
}

/// A data set's two splits, its class names and where they came from, in words.
struct Split {
    train: Images,
    test: Images,
    classes: Vec<String>,
    source: String,
}

fn labelled(d: data::Dataset, dir: &Path) -> Result<(Images, Vec<String>)> {
    let Some(labels) = d.labels else {
        if d.classes.is_empty() {
            bail!(
                "{} has no class subfolders, so its images have no labels: eval needs DIR/<class>/<image> \
                 (or DIR/train/<class>/… beside DIR/val/<class>/…)",
                dir.display()
            );
        }
        bail!("{} has images outside its class subfolders; eval needs every image in one", dir.display());
    };
    Ok((Images { images: d.images, labels }, d.classes))
}

/// The labelled train and test images `--data` names (see [`DATA`]). `channels` and
/// `size` are the model's: folders of images are decoded to them.
fn load_split(spec: &str, channels: usize, size: usize) -> Result<Split> {
    let idx = |dir: &Path, source: String| -> Result<Split> {
        let (train, classes) = labelled(data::load_idx(dir, "train")?, dir)?;
        let (test, _) = labelled(data::load_idx(dir, "test")?, dir)?;
        Ok(Split { train, test, classes, source })
    };
    let dir = match DataSpec::parse(spec) {
        DataSpec::FashionMnist => {
            let dir = data::fashion_mnist_dir();
            let source = if dir == Path::new(data::SYSTEM_FASHION_MNIST) {
                format!("the full Fashion-MNIST (Debian package dataset-fashion-mnist, {})", dir.display())
            } else {
                format!(
                    "the bundled Fashion-MNIST subset ({}); install dataset-fashion-mnist for the full set",
                    dir.display()
                )
            };
            return idx(&dir, source);
        }
        DataSpec::Photos => data::assets_dir().join("photos/train"),
        DataSpec::Dir(dir) => dir,
    };
    let idx_files = ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"];
    if idx_files.iter().any(|f| dir.join(f).is_file()) {
        return idx(&dir, format!("idx files in {} (train, t10k)", dir.display()));
    }
    let held_out = ["val", "test"].into_iter().map(|s| dir.join(s)).find(|p| p.is_dir());
    if let (true, Some(test_dir)) = (dir.join("train").is_dir(), held_out) {
        let (train, classes) = labelled(data::load_dir(&dir.join("train"), channels, size)?, &dir.join("train"))?;
        let (test, test_classes) = labelled(data::load_dir(&test_dir, channels, size)?, &test_dir)?;
        if test_classes != classes {
            bail!("{} has classes {test_classes:?}, but train/ has {classes:?}", test_dir.display());
        }
        let source = format!("{}: train/ and {}/", dir.display(), test_dir.file_name().unwrap().to_string_lossy());
        return Ok(Split { train, test, classes, source });
    }
    let (all, classes) = labelled(data::load_dir(&dir, channels, size)?, &dir)?;
    let mut seen = vec![0usize; classes.len()];
    let (mut train, mut test) = (Images { images: vec![], labels: vec![] }, Images { images: vec![], labels: vec![] });
    // load_dir lists each class's files in sorted order, so the split is by file name
    for (img, label) in all.images.into_iter().zip(all.labels) {
        seen[label as usize] += 1;
        let to = if seen[label as usize] % 5 == 0 { &mut test } else { &mut train };
        to.images.push(img);
        to.labels.push(label);
    }
    if test.labels.is_empty() {
        bail!("{} has no class with 5 images or more, so nothing is held out for testing", dir.display());
    }
    let source = format!("{}: every 5th image of each class (by file name) held out for testing", dir.display());
    Ok(Split { train, test, classes, source })
}

/// `images` cut to a seeded random `count` of them (in their original order).
fn subset(images: Images, count: Option<usize>, seed: u64, stream: u64, flag: &str) -> Result<Images> {
    let n = images.labels.len();
    match count {
        Some(0) => bail!("{flag} 0: nothing to evaluate"),
        Some(c) if c < n => {
            let mut keep = data::epoch_order(seed, stream, n);
            keep.truncate(c);
            keep.sort_unstable();
            Ok(Images {
                images: keep.iter().map(|&i| images.images[i].clone()).collect(),
                labels: keep.iter().map(|&i| images.labels[i]).collect(),
            })
        }
        _ => Ok(images),
    }
}

/// `[images.len(), C, S, S]`: fitted to the model's side, in its channels, normalised
/// with its statistics.
fn inputs(images: &[DynamicImage], size: usize, channels: usize, norm: &Normalize) -> Vec<f32> {
    let mut x = Vec::with_capacity(images.len() * channels * size * size);
    for img in images {
        data::push_chw(&data::fit(img, size), channels, norm, &mut x);
    }
    x
}

// ---- features and scores ----

/// The feature-extraction bar over every batch the run will forward.
struct Bar {
    progress: Progress,
    done: u64,
    total: u64,
    images: usize,
    start: Instant,
    plain: bool,
}

impl Bar {
    fn new(total: u64, quiet: bool) -> Self {
        let plain = !std::io::stderr().is_terminal();
        Bar { progress: Progress::new(0, total, quiet), done: 0, total, images: 0, start: Instant::now(), plain }
    }
    fn step(&mut self, what: &str, images: usize) {
        self.done += 1;
        self.images += images;
        let secs = self.start.elapsed().as_secs_f64();
        let mut msg = format!("{what}: {:.0} img/s", self.images as f64 / secs.max(1e-9));
        if self.plain {
            // a terminal's bar shows its own ETA
            let eta = secs / self.done as f64 * (self.total - self.done) as f64;
            msg += &format!(", ETA {eta:.0} s");
        }
        self.progress.update(self.done, &msg);
    }
}

/// The pooled features `[n, D]` of `images` (fitted to `size` px, `channels`), `batch` at
/// a time.
#[allow(clippy::too_many_arguments)]
fn features<B: Backend, M: Backbone<B>>(
    be: &B,
    model: &M,
    (size, channels): (usize, usize),
    images: &[DynamicImage],
    norm: &Normalize,
    batch: usize,
    what: &str,
    bar: &mut Bar,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(images.len() * model.embed_dim());
    for chunk in images.chunks(batch) {
        let x = be.upload(&inputs(chunk, size, channels, norm));
        let saved = model.forward(be, &x, chunk.len());
        out.extend(block_on(be.read(model.pooled(&saved))));
        bar.step(what, chunk.len());
    }
    out
}

/// DINO's kNN result.
#[derive(Clone, Debug)]
pub struct KnnScore {
    pub top1: f64,
    /// Among the min(5, k) best classes (DINO's top-5), when there are 5 classes or more.
    pub top5: Option<f64>,
    pub k: usize,
    pub seconds: f64,
}

#[derive(Clone, Debug)]
pub struct LinearScore {
    pub top1: f64,
    pub top5: Option<f64>,
    /// The last epoch's mean training cross-entropy.
    pub train_loss: f32,
    pub seconds: f64,
}

/// One feature set's scores.
#[derive(Clone, Debug)]
pub struct Scores {
    pub name: String,
    pub dim: usize,
    /// Extracting the features (both splits).
    pub feature_seconds: f64,
    pub knn: Option<KnnScore>,
    pub linear: Option<LinearScore>,
}

/// Features of both splits, `[n, dim]` each.
struct Features {
    train: Vec<f32>,
    test: Vec<f32>,
    dim: usize,
    seconds: f64,
}

fn score<B: Backend>(be: &B, name: &str, f: Features, split: &Split, args: &Args) -> Scores {
    let (do_knn, do_linear) = args.which();
    let (classes, dim) = (split.classes.len(), f.dim);
    let (train_y, test_y) = (&split.train.labels, &split.test.labels);
    let top5 = |scores: &[f32], top: usize| (classes >= 5).then(|| top_k_accuracy(scores, test_y, classes, top));
    let knn = do_knn.then(|| {
        let t0 = Instant::now();
        let (mut train, mut test) = (f.train.clone(), f.test.clone());
        l2_normalize(&mut train, dim);
        l2_normalize(&mut test, dim);
        let votes = knn_votes(&train, train_y, &test, dim, classes, args.k, args.temperature);
        let k = args.k.min(train_y.len());
        KnnScore {
            top1: top_k_accuracy(&votes, test_y, classes, 1),
            top5: top5(&votes, 5.min(k)),
            k,
            seconds: t0.elapsed().as_secs_f64(),
        }
    });
    let linear = do_linear.then(|| {
        let t0 = Instant::now();
        let cfg = LinearConfig {
            epochs: args.epochs,
            lr: args.lr,
            batch: args.linear_batch,
            weight_decay: args.weight_decay,
            seed: args.seed,
        };
        let mut progress = Progress::new(0, args.epochs as u64, args.quiet);
        let label = format!("linear probe on {name} features");
        let probe = block_on(train_linear(be, &f.train, train_y, dim, classes, &cfg, |e, loss| {
            progress.update(e as u64, &format!("{label}: epoch {e}, loss {loss:.4}"));
        }));
        progress.finish();
        let logits = probe.logits(&f.test);
        LinearScore {
            top1: top_k_accuracy(&logits, test_y, classes, 1),
            top5: top5(&logits, 5),
            train_loss: probe.losses.last().copied().unwrap_or(f32::NAN),
            seconds: t0.elapsed().as_secs_f64(),
        }
    });
    Scores { name: name.into(), dim, feature_seconds: f.seconds, knn, linear }
}

/// Everything the backend runs: features, then scores, for the model and the baseline.
struct Task {
    net: BackboneModel,
    file: TensorFile,
    norm: Normalize,
    split: Split,
    args: Args,
}

struct Outcome {
    backend: String,
    model: Scores,
    baseline: Option<Scores>,
    split: Split,
}

impl OnBackend for Task {
    type Output = Result<Outcome>;
    fn run<B: Probe>(self, be: &B) -> Result<Outcome> {
        let Task { net, file, norm, split, args } = self;
        let (size, c, dim) = net.shape();
        let bs = args.batch.max(1);
        let batches = (split.train.labels.len().div_ceil(bs) + split.test.labels.len().div_ceil(bs)) as u64;
        let random = args.baseline == Some(Baseline::Random);
        let mut bar = Bar::new(if random { 2 } else { 1 } * batches, args.quiet);
        fn extract<B: Backend, M: Backbone<B>>(
            be: &B,
            m: &M,
            input: (usize, usize),
            (split, norm, bs, bar): (&Split, &Normalize, usize, &mut Bar),
            name: &str,
        ) -> Features {
            let t0 = Instant::now();
            let train = features(be, m, input, &split.train.images, norm, bs, &format!("{name}: train features"), bar);
            let test = features(be, m, input, &split.test.images, norm, bs, &format!("{name}: test features"), bar);
            Features { train, test, dim: m.embed_dim(), seconds: t0.elapsed().as_secs_f64() }
        }
        let on = (&split, &norm, bs, &mut bar);
        let (model_f, random_f) = match &net {
            BackboneModel::Vit(vm) => {
                let m = extract(be, &Vit::from_file(be, vm.cfg.clone(), &file)?, (size, c), on, "model");
                let on = (&split, &norm, bs, &mut bar);
                (m, random.then(|| extract(be, &Vit::init(be, vm.cfg.clone(), args.seed), (size, c), on, "random")))
            }
            BackboneModel::Swin(cfg, _) => {
                let m = extract(be, &Swin::from_file(be, cfg.clone(), &file)?, (size, c), on, "model");
                let on = (&split, &norm, bs, &mut bar);
                (m, random.then(|| extract(be, &Swin::init(be, cfg.clone(), args.seed), (size, c), on, "random")))
            }
        };
        drop(file);
        debug_assert_eq!(model_f.dim, dim);
        bar.progress.finish();
        let model = score(be, "model", model_f, &split, &args);
        let baseline = match (args.baseline, random_f) {
            (Some(Baseline::Random), Some(f)) => Some(score(be, "random", f, &split, &args)),
            (Some(Baseline::Pixels), _) => {
                let t0 = Instant::now();
                let f = Features {
                    train: inputs(&split.train.images, size, c, &norm),
                    test: inputs(&split.test.images, size, c, &norm),
                    dim: c * size * size,
                    seconds: t0.elapsed().as_secs_f64(),
                };
                Some(score(be, "pixels", f, &split, &args))
            }
            _ => None,
        };
        Ok(Outcome { backend: be.name(), model, baseline, split })
    }
}

// ---- the command ----

/// An evaluation's results.
pub struct Report {
    /// The backbone evaluated.
    pub net: BackboneModel,
    pub data_source: String,
    pub classes: Vec<String>,
    pub train_count: usize,
    pub test_count: usize,
    pub backend: String,
    pub model: Scores,
    pub baseline: Option<Scores>,
    pub seconds: f64,
}

pub fn evaluate(args: &Args) -> Result<Report> {
    let t0 = Instant::now();
    let (net, file) = load_backbone(&args.model, args.heads)
        .with_context(|| format!("{} is not a ViT or Swin that eval can read", args.model.display()))?;
    let (h, in_chans, _) = net.shape();
    let w = match &net {
        BackboneModel::Vit(vm) => vm.cfg.img_size[1],
        BackboneModel::Swin(c, _) => c.img_size[1],
    };
    if h != w {
        bail!("the model's input is {h}×{w}; eval fits images to square inputs only");
    }
    if args.k == 0 || args.temperature.is_nan() || args.temperature <= 0.0 {
        bail!("--k must be at least 1 and --temperature positive");
    }
    let split = load_split(&args.data, in_chans, h)?;
    if split.classes.len() < 2 {
        bail!("{} has {} class(es); classification needs two or more", split.source, split.classes.len());
    }
    let split = Split {
        train: subset(split.train, args.train_count, args.seed, 0, "--train-count")?,
        test: subset(split.test, args.test_count, args.seed, 1, "--test-count")?,
        ..split
    };
    let (train_count, test_count) = (split.train.labels.len(), split.test.labels.len());
    if !args.quiet {
        eprintln!("{}: {train_count} train / {test_count} test images, {} classes", split.source, split.classes.len());
    }
    let norm = net.norm().clone();
    let task = Task { net: net.clone(), file, norm, split, args: args.clone() };
    let out = crate::train::with_compute_backend(args.backend, task)??;
    Ok(Report {
        net,
        data_source: out.split.source,
        classes: out.split.classes,
        train_count,
        test_count,
        backend: out.backend,
        model: out.model,
        baseline: out.baseline,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `path` as a backbone ([`backbone_from_file`]): a Swin classifier, or a ViT as
/// `patchwork attention` reads it (`heads` is `--heads`).
fn load_backbone(path: &Path, heads: Option<usize>) -> Result<(BackboneModel, TensorFile)> {
    let file = TensorFile::load(path).with_context(|| format!("loading model {}", path.display()))?;
    backbone_from_file(file, heads).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A fraction or a time to 6 decimals.
fn short(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap_or(f64::NAN)
}

/// An f32 as its shortest decimals (0.07, not 0.07000000029802322).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::NAN)
}

impl Scores {
    fn knn_json(&self, args: &Args) -> Option<Value> {
        self.knn.as_ref().map(|k| {
            json!({
                "top1": short(k.top1),
                "top5": k.top5.map(short),
                "k": k.k,
                "t": decimal(args.temperature),
                "seconds": short(k.seconds),
            })
        })
    }
    fn linear_json(&self, args: &Args) -> Option<Value> {
        self.linear.as_ref().map(|l| {
            json!({
                "top1": short(l.top1),
                "top5": l.top5.map(short),
                "epochs": args.epochs,
                "lr": decimal(args.lr),
                "batch": args.linear_batch,
                "weight_decay": decimal(args.weight_decay),
                "train_loss": decimal(l.train_loss),
                "seconds": short(l.seconds),
            })
        })
    }
}

impl Report {
    /// One object: the model's scores at the top level, the baseline's under `baseline`;
    /// the keys of what was not run (`knn`, `linear`, `baseline`) are left out.
    pub fn to_json(&self, args: &Args) -> Value {
        let m = &self.model;
        let parts = |s: &Scores, out: &mut serde_json::Map<String, Value>| {
            out.insert("dim".into(), json!(s.dim));
            out.insert("features_seconds".into(), json!(short(s.feature_seconds)));
            if let Some(k) = s.knn_json(args) {
                out.insert("knn".into(), k);
            }
            if let Some(l) = s.linear_json(args) {
                out.insert("linear".into(), l);
            }
        };
        let mut out = json!({
            "model": args.model.display().to_string(),
            "model_source": self.source(),
            "config": match &self.net {
                BackboneModel::Vit(vm) => json!(vm.cfg),
                BackboneModel::Swin(c, _) => json!(c),
            },
            "backbone": if matches!(self.net, BackboneModel::Swin(..)) { "swin" } else { "vit" },
            "pooling": match &self.net {
                BackboneModel::Vit(vm) => vm.cfg.global_pool.clone(),
                BackboneModel::Swin(c, _) => c.global_pool.clone(),
            },
            "data": args.data,
            "data_source": self.data_source,
            "classes": self.classes.len(),
            "train_count": self.train_count,
            "test_count": self.test_count,
            "backend": self.backend,
            "seed": args.seed,
            "seconds": short(self.seconds),
        });
        let obj = out.as_object_mut().expect("an object");
        parts(m, obj);
        if let Some(b) = &self.baseline {
            let mut base = serde_json::Map::new();
            base.insert("name".into(), json!(b.name));
            parts(b, &mut base);
            obj.insert("baseline".into(), Value::Object(base));
        }
        out
    }

    fn source(&self) -> String {
        match &self.net {
            BackboneModel::Vit(vm) => vm.source.clone(),
            BackboneModel::Swin(..) => "swin_config metadata".into(),
        }
    }

    pub fn print_table(&self, args: &Args) {
        let what = match &self.net {
            BackboneModel::Vit(vm) => {
                let c = &vm.cfg;
                let pooled = if c.global_pool == "avg" {
                    "mean of the patch tokens after fc_norm"
                } else {
                    "class token after the final norm"
                };
                format!(
                    "ViT {}×{}, patch {}, {} channel(s), width {}, depth {}; features: {pooled}",
                    c.img_size[0], c.img_size[1], c.patch_size, c.in_chans, c.embed_dim, c.depth
                )
            }
            BackboneModel::Swin(c, _) => {
                let widths: Vec<String> = (0..c.stages()).map(|i| c.dim(i).to_string()).collect();
                format!(
                    "Swin {}×{}, patch {}, {} channel(s), widths {}, depths {:?}; features: mean of the final tokens after the norm",
                    c.img_size[0],
                    c.img_size[1],
                    c.patch_size,
                    c.in_chans,
                    widths.join("→"),
                    c.depths
                )
            }
        };
        println!("model    {} ({}): {what}", args.model.display(), self.source());
        println!(
            "data     {}: {} train / {} test images, {} classes",
            self.data_source,
            self.train_count,
            self.test_count,
            self.classes.len()
        );
        println!("backend  {}", self.backend);
        println!();
        println!(
            "{:<8} {:>6} {:>10} {:>10} {:>13} {:>13} {:>10} {:>8} {:>8}",
            "features",
            "dim",
            "kNN top-1",
            "kNN top-5",
            "linear top-1",
            "linear top-5",
            "extract s",
            "kNN s",
            "linear s"
        );
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
        let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for s in std::iter::once(&self.model).chain(&self.baseline) {
            let (k, l) = (s.knn.as_ref(), s.linear.as_ref());
            println!(
                "{:<8} {:>6} {:>10} {:>10} {:>13} {:>13} {:>10.1} {:>8} {:>8}",
                s.name,
                s.dim,
                pct(k.map(|k| k.top1)),
                pct(k.and_then(|k| k.top5)),
                pct(l.map(|l| l.top1)),
                pct(l.and_then(|l| l.top5)),
                s.feature_seconds,
                secs(k.map(|k| k.seconds)),
                secs(l.map(|l| l.seconds)),
            );
        }
        println!();
        if let Some(k) = &self.model.knn {
            println!(
                "kNN: DINO's weighted vote, k = {}, T = {}, cosine similarity of L2-normalised features",
                k.k, args.temperature
            );
        }
        if self.model.linear.is_some() {
            println!(
                "linear: softmax regression on standardised features; Adam lr {} (cosine to 0), {} epochs, batch {}, \
                 weight decay {}, seed {}",
                args.lr, args.epochs, args.linear_batch, args.weight_decay, args.seed
            );
        }
        println!("{:.1} s in all", self.seconds);
    }
}

pub fn run(args: Args) -> Result<()> {
    let report = evaluate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report.to_json(&args))?);
    } else {
        report.print_table(&args);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::Args;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// Eval's flags for a test: the CPU backend, quiet, a 5-epoch probe, and `extra`.
    pub fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["t", "--backend", "cpu", "--quiet", "--epochs", "5"];
        argv.extend(extra);
        Cli::try_parse_from(argv).unwrap().args
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::args;
    use super::*;
    use image::{Rgb, RgbImage};
    use patchwork_compute::{Cpu, Tensor, VitConfig};

    /// A tiny random ViT with `vit_config` and `normalize` metadata, as DINO runs write.
    fn tiny_model(dir: &Path, img: usize, patch: usize, chans: usize) -> String {
        let cfg = VitConfig {
            img_size: [img, img],
            patch_size: patch,
            in_chans: chans,
            embed_dim: 16,
            depth: 1,
            num_heads: 2,
            num_classes: 0,
            ..VitConfig::default()
        };
        let mut file = block_on(Vit::init(&Cpu, cfg.clone(), 0).params.download(&Cpu, ""));
        file.metadata.insert("vit_config".into(), serde_json::to_string(&cfg).unwrap());
        let norm = if chans == 1 { Normalize::fashion_mnist() } else { Normalize::imagenet(3) };
        file.metadata.insert("normalize".into(), serde_json::to_string(&norm).unwrap());
        let path = dir.join(format!("vit{img}x{chans}.safetensors"));
        file.save(&path).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn unit(v: &Value) -> f64 {
        let x = v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"));
        assert!((0.0..=1.0).contains(&x), "{x} is not in [0, 1]");
        x
    }

    #[test]
    fn idx_data_gives_knn_and_linear_scores_for_the_model_and_the_pixels() {
        let dir = tempfile::tempdir().unwrap();
        crate::data::tests_support::write_idx(dir.path(), "train", 25); // values i·10 fit a byte up to 25
        crate::data::tests_support::write_idx(dir.path(), "t10k", 20);
        let model = tiny_model(dir.path(), 28, 7, 1);
        let data = dir.path().to_str().unwrap();
        let a = args(&["--model", &model, "--data", data, "--baseline", "pixels", "--json", "--batch", "8"]);
        let r = evaluate(&a).unwrap().to_json(&a);
        assert_eq!((r["model"].as_str(), r["data"].as_str()), (Some(model.as_str()), Some(data)));
        assert_eq!(
            (r["train_count"].as_u64(), r["test_count"].as_u64(), r["classes"].as_u64()),
            (Some(25), Some(20), Some(10))
        );
        assert_eq!((r["dim"].as_u64(), r["backend"].as_str()), (Some(16), Some("cpu")));
        assert_eq!(r["model_source"], "vit_config metadata");
        assert!(r["data_source"].as_str().unwrap().contains("idx files"), "{}", r["data_source"]);
        let (knn, linear) = (&r["knn"], &r["linear"]);
        assert!(unit(&knn["top1"]) <= unit(&knn["top5"]));
        assert_eq!((knn["k"].as_u64(), knn["t"].as_f64()), (Some(20), Some(0.07)));
        unit(&linear["top1"]);
        unit(&linear["top5"]);
        assert_eq!(linear["epochs"], 5);
        assert!(linear["train_loss"].as_f64().unwrap().is_finite());
        let b = &r["baseline"];
        assert_eq!((b["name"].as_str(), b["dim"].as_u64()), (Some("pixels"), Some(784)));
        unit(&b["knn"]["top1"]);
        unit(&b["linear"]["top1"]);
        assert!(r["seconds"].as_f64().unwrap() >= 0.0);

        // --knn alone, a subset, and the random baseline
        let a = args(&["--model", &model, "--data", data, "--knn", "--baseline", "random", "--train-count", "12"]);
        let r = evaluate(&a).unwrap().to_json(&a);
        assert_eq!((r["train_count"].as_u64(), r["test_count"].as_u64()), (Some(12), Some(20)));
        assert!(r.get("linear").is_none() && r["baseline"].get("linear").is_none(), "{r}");
        assert_eq!((r["knn"]["k"].as_u64(), r["baseline"]["name"].as_str()), (Some(12), Some("random")));
        unit(&r["baseline"]["knn"]["top1"]);
        // the same seed gives the same numbers
        assert_eq!(evaluate(&a).unwrap().to_json(&a)["knn"]["top1"], r["knn"]["top1"]);
        // --linear alone, no baseline: neither key is there
        let a = args(&["--model", &model, "--data", data, "--linear", "--json"]);
        let r = evaluate(&a).unwrap().to_json(&a);
        assert!(r.get("knn").is_none() && r.get("baseline").is_none(), "{r}");
        unit(&r["linear"]["top1"]);
    }

    /// `n` solid images per class under `dir/<class>/`, of varied sizes.
    fn write_classes(dir: &Path, n: u32) {
        for (class, colour) in [("green", [10u8, 200, 10]), ("red", [200, 10, 10])] {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in 0..n {
                let shade = (i * 3) as u8;
                let img = RgbImage::from_pixel(20 + i, 17 + 2 * i, Rgb(colour.map(|c| c.saturating_add(shade))));
                img.save(dir.join(format!("{class}/{i:02}.png"))).unwrap();
            }
        }
    }

    #[test]
    fn image_folders_split_every_fifth_image_or_use_train_and_val() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path(), 16, 4, 3);
        let flat = dir.path().join("flat");
        write_classes(&flat, 10);
        let a = args(&["--model", &model, "--data", flat.to_str().unwrap(), "--baseline", "pixels"]);
        let r = evaluate(&a).unwrap();
        assert_eq!((r.train_count, r.test_count, r.classes.clone()), (16, 4, vec!["green".into(), "red".into()]));
        assert!(r.data_source.contains("every 5th"), "{}", r.data_source);
        // red and green are far apart as pixels; two classes have no top-5
        let pixels = r.baseline.as_ref().unwrap();
        assert_eq!(pixels.knn.as_ref().unwrap().top1, 1.0);
        assert!(pixels.knn.as_ref().unwrap().top5.is_none());

        let split = dir.path().join("split");
        write_classes(&split.join("train"), 3);
        write_classes(&split.join("val"), 2);
        let a = args(&["--model", &model, "--data", split.to_str().unwrap(), "--knn"]);
        let r = evaluate(&a).unwrap();
        assert_eq!((r.train_count, r.test_count), (6, 4));
        assert!(r.data_source.ends_with("train/ and val/"), "{}", r.data_source);
    }

    #[test]
    fn a_model_that_is_not_a_vit_and_data_without_labels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("loose");
        std::fs::create_dir(&images).unwrap();
        for i in 0..3 {
            RgbImage::from_pixel(8, 8, Rgb([i * 50, 0, 0])).save(images.join(format!("{i}.png"))).unwrap();
        }
        let model = tiny_model(dir.path(), 16, 4, 3);
        let e =
            format!("{:#}", evaluate(&args(&["--model", &model, "--data", images.to_str().unwrap()])).err().unwrap());
        assert!(e.contains("no class subfolders"), "{e}");

        let mut not_vit = TensorFile::default();
        not_vit.tensors.insert("layers.0.weight".into(), Tensor::f32(vec![2, 2], vec![0.0; 4]));
        let path = dir.path().join("mlp.safetensors");
        not_vit.save(&path).unwrap();
        let e = format!(
            "{:#}",
            evaluate(&args(&["--model", path.to_str().unwrap(), "--data", "fashion-mnist"])).err().unwrap()
        );
        assert!(e.contains("is not a ViT or Swin that eval can read") && e.contains("not a timm-named ViT"), "{e}");

        let mut dino = TensorFile::default();
        dino.metadata.insert("method".into(), "dino".into());
        dino.save(&path).unwrap();
        let e = format!(
            "{:#}",
            evaluate(&args(&["--model", path.to_str().unwrap(), "--data", "fashion-mnist"])).err().unwrap()
        );
        assert!(e.contains("without `vit_config` metadata"), "{e}");

        let data = dir.path().join("idx");
        std::fs::create_dir(&data).unwrap();
        crate::data::tests_support::write_idx(&data, "train", 10);
        crate::data::tests_support::write_idx(&data, "t10k", 10);
        let e = format!(
            "{:#}",
            evaluate(&args(&["--model", &model, "--data", data.to_str().unwrap(), "--test-count", "0"])).err().unwrap()
        );
        assert!(e.contains("--test-count 0"), "{e}");
    }

    /// Every model in `assets/models/` reads as a backbone, says which method made it, and
    /// has a card (`NAME.md`) that names its file, as the README promises.
    #[test]
    fn every_bundled_model_loads_and_has_a_card() {
        let dir = crate::data::assets_dir().join("models");
        let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        models.sort();
        assert!(models.len() >= 8, "bundled models: {models:?}");
        for path in models {
            let (_, file) = load_backbone(&path, None).unwrap();
            let method = file.metadata.get("method").unwrap_or_else(|| panic!("{}: no `method`", path.display()));
            let stem = path.file_stem().unwrap().to_str().unwrap();
            let card = std::fs::read_to_string(dir.join(format!("{stem}.md")))
                .unwrap_or_else(|e| panic!("{stem}: no card: {e}"));
            assert!(card.contains(&format!("{stem}.safetensors")), "{stem}'s card does not name its file");
            assert!(stem.starts_with(method.as_str()), "{stem} was made by {method}");
        }
    }
}
