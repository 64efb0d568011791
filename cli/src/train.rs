//! `patchwork train --method mae --data D --steps N --out MODEL.safetensors`: self-supervised
//! training of a ViT on a data set, as the method's paper does it:
//! ```text
//! lr = warmup_cosine(lr, min_lr, steps, warmup)      # precomputed, indexed by the step
//! for step in start..steps:
//!     x = data[order(seed, epoch)][step·B : (step+1)·B]  # crops and masks from one seeded rng
//!     loss = method.step(x, lr[step])                    # forward, backward, AdamW: one submit
//!     stop if loss is not finite; checkpoint every K steps (atomically)
//! ```
//! A checkpoint holds the weights, Adam's moments, the step, the rng state and every setting,
//! so `--resume` continues bit for bit (on the CPU) where the run stopped. Methods live in
//! their own modules ([`mae`]); this file is the loop they share.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use patchwork_compute::rng::Rng;
use patchwork_compute::train::{self as engine, BackboneKind, RunConfig, Sampler, Trainer};
pub use patchwork_compute::train::{Method, Schedule, METHODS};
use patchwork_compute::{block_on, TensorFile};
use serde_json::json;

use crate::backend::{with_backend, BackendChoice, OnBackend, Probe};
use crate::data::{Augment, DataSpec, Dataset, Normalize, PhotoBackdrops};
use crate::progress::Progress;

pub mod dino;
pub mod ibot;
pub mod mae;

/// `--method`'s values, from the engine's list of methods (a new method appears by itself).
fn method_parser() -> impl clap::builder::TypedValueParser<Value = Method> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(METHODS.iter().map(|m| PossibleValue::new(m.name).help(m.summary)))
        .map(|name| Method::parse(&name).expect("a listed method"))
}

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// The training method.
    #[arg(long, value_parser = method_parser(), required_unless_present = "resume")]
    pub method: Option<Method>,
    /// `fashion-mnist`, `photos` (bundled), or a folder of images (class subfolders give
    /// labels) or of idx files.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<String>,
    /// The backbone: `vit`, or `swin` for the supervised baseline (two stages of shifted
    /// windows built from the ViT's sizes: half the width and heads, then the full ones).
    #[arg(long, default_value = "vit", value_parser = backbone_parser)]
    pub backbone: BackboneKind,
    /// Optimiser steps of the whole run (the schedule spans them).
    #[arg(long, required_unless_present = "resume")]
    pub steps: Option<usize>,
    /// Images per step [default: 128 for MAE and supervised on fashion-mnist and idx files,
    /// 32 otherwise].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate after warm-up [default: 1.5e-3; 5e-4 for DINO and iBOT].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning rate at the last step of the cosine [default: 1e-5; 1e-6 for DINO and iBOT].
    #[arg(long)]
    pub min_lr: Option<f32>,
    /// Linear warm-up steps [default: 5% of --steps].
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// AdamW weight decay (not on biases, norms, tokens) [default: 0.05; for DINO and iBOT
    /// 0.04 at the first step, on a cosine to --weight-decay-end].
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Clip the gradient norm to this: the global norm for MAE and supervised [default: no
    /// clipping, as MAE]; each parameter's for DINO and iBOT [default: 3, as `main_dino.py`].
    #[arg(long)]
    pub clip: Option<f32>,
    /// Seed of the initial weights, the data order, crops and masks [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// The trained model (safetensors, official parameter names).
    #[arg(long)]
    pub out: PathBuf,
    /// Append one JSON line per step (step, loss, lr, images/s).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Continue from a checkpoint; its settings are kept (flags that differ are refused).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Write the checkpoint (`MODEL.ckpt.safetensors`) every this many steps, and at the end.
    #[arg(long, default_value_t = 200)]
    pub checkpoint_every: usize,
    /// Stop after this step with a checkpoint, to resume later (the schedule still spans
    /// --steps; no model file is written).
    #[arg(long)]
    pub stop_at: Option<usize>,
    /// Start from this model file's weights instead of random ones, with a fresh optimiser
    /// and schedule: for MAE a finished MAE of the same sizes (a second stage); for DINO and
    /// iBOT any model holding the same backbone (a DINO/iBOT teacher or an MAE's encoder),
    /// with fresh heads; its position embeddings are interpolated when --img-size gives
    /// another patch grid (DINOv2's last, higher-resolution phase).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Input channels [default: 1 for fashion-mnist and idx files, 3 otherwise].
    #[arg(long)]
    pub in_chans: Option<usize>,
    /// MAE and supervised: area fractions `LO,HI` of the random crops of photos and image
    /// folders [default: 0.2,1 as MAE].
    #[arg(long, value_parser = parse_scale)]
    pub crop_scale: Option<(f32, f32)>,
    /// MAE and supervised: add DINO's colour augmentation to every crop: ColorJitter(0.4,
    /// 0.4, 0.2, 0.1) with probability 0.8, then grayscale with probability 0.2.
    #[arg(long)]
    pub color_jitter: bool,
    /// Place each cut-out (an image with transparency) on a transparent canvas F times its
    /// side, at a random spot, before cropping: its object comes out smaller in the views
    /// (F ≥ 1) [default: 1].
    #[arg(long, value_name = "F")]
    pub cutout_canvas: Option<f32>,
    /// Lay cut-outs over backdrops of three kinds, a third each: plain (colours, greys,
    /// near-white and near-black), smooth colour noise, and blurred crops of the photos in
    /// DIR [default: half plain colours, half colour noise].
    #[arg(long, value_name = "DIR")]
    pub backdrops: Option<PathBuf>,
    /// With --backdrops: the share of backdrops cut from the photos; plain colours and colour
    /// noise split the rest evenly [default: 1/3].
    #[arg(long, value_name = "S", requires = "backdrops")]
    pub photo_share: Option<f32>,
    /// With --backdrops: the sides in px, `LO,HI`, a photo's crop is shrunk to (drawn
    /// uniformly) before it is stretched back to the view: the smaller, the blurrier
    /// [default: 4,16].
    #[arg(long, value_name = "LO,HI", value_parser = parse_blur, requires = "backdrops")]
    pub backdrop_blur: Option<(u32, u32)>,
    /// Recolour a share S of cut-outs' backdrops in the object's own colours (centred on one
    /// of its pixels, with its contrast), so that an object must be told from its background
    /// by its shape and texture, not by its colour [default: 0].
    #[arg(long, value_name = "S")]
    pub camouflage: Option<f32>,
    /// With --backdrops: also cut the photo backdrops from the training cut-outs themselves,
    /// each flattened on its mean colour: blurred close-ups of other objects (fur, feathers,
    /// eyes) behind the object, as in a photo's background.
    #[arg(long, requires = "backdrops")]
    pub backdrop_cutouts: bool,
    /// DINO and iBOT: recolour a cut-out's object with probability P (DINO's colour jitter,
    /// then grey with probability P/4), alike in all views of the image in a step, so that
    /// the views still match but an object's colours change from step to step [default: 0].
    #[arg(long, value_name = "P")]
    pub object_jitter: Option<f32>,
    #[command(flatten)]
    pub mae: mae::MaeArgs,
    #[command(flatten)]
    pub dino: dino::DinoArgs,
    #[command(flatten)]
    pub ibot: ibot::IbotArgs,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

fn backbone_parser(s: &str) -> Result<BackboneKind, String> {
    BackboneKind::parse(s).ok_or_else(|| format!("`{s}` is not a backbone: vit or swin"))
}

pub fn parse_scale(s: &str) -> Result<(f32, f32), String> {
    let bad = || format!("`{s}` is not `LO,HI` with 0 < LO ≤ HI ≤ 1 (e.g. 0.2,1)");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (f32, f32) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
        return Err(bad());
    }
    Ok((lo, hi))
}

pub fn parse_blur(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not `LO,HI` px with 1 ≤ LO ≤ HI ≤ 256 (e.g. 4,16)");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let (lo, hi): (u32, u32) = (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?);
    if !(1 <= lo && lo <= hi && hi <= 256) {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// The schedule `args` give: the method's defaults where a flag is absent.
fn schedule_from_args(a: &Args) -> Result<Schedule> {
    let data = a.data.clone().context("--data is required")?;
    let spec = DataSpec::parse(&data);
    let steps = a.steps.context("--steps is required")?;
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let fashion = spec.default_channels() == 1;
    let method = a.method.context("--method is required")?;
    let in_chans = a.in_chans.unwrap_or(spec.default_channels());
    let batch = a.batch.unwrap_or(if fashion && !method.distills() { 128 } else { 32 });
    let d = Schedule::defaults(method, &data, in_chans, steps, batch);
    Ok(Schedule {
        lr: a.lr.unwrap_or(d.lr),
        min_lr: a.min_lr.unwrap_or(d.min_lr),
        warmup_steps: a.warmup_steps.unwrap_or(d.warmup_steps),
        weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
        clip: a.clip.or(d.clip),
        seed: a.seed.unwrap_or(0),
        crop_scale: a.crop_scale,
        color_jitter: a.color_jitter,
        cutout_canvas: a.cutout_canvas,
        backdrops: a.backdrops.as_ref().map(|p| p.display().to_string()),
        photo_share: a.photo_share,
        backdrop_blur: a.backdrop_blur,
        camouflage: a.camouflage,
        backdrop_cutouts: a.backdrop_cutouts,
        object_jitter: a.object_jitter,
        init: a.init.as_ref().map(|p| p.display().to_string()),
        ..d
    })
}

/// Refuse flags that would change a resumed run's trajectory.
fn check_flags(s: &Schedule, a: &Args) -> Result<()> {
    let mut differ = Vec::new();
    let mut same = |flag: &str, given: Option<String>, kept: String| {
        if let Some(g) = given.filter(|g| *g != kept) {
            differ.push(format!("{flag} {g} (checkpoint: {kept})"));
        }
    };
    same("--method", a.method.map(|m| m.name().into()), s.method.name().into());
    same("--data", a.data.clone(), s.data.clone());
    same("--steps", a.steps.map(|v| v.to_string()), s.steps.to_string());
    same("--batch", a.batch.map(|v| v.to_string()), s.batch.to_string());
    same("--lr", a.lr.map(|v| v.to_string()), s.lr.to_string());
    same("--min-lr", a.min_lr.map(|v| v.to_string()), s.min_lr.to_string());
    same("--warmup-steps", a.warmup_steps.map(|v| v.to_string()), s.warmup_steps.to_string());
    same("--weight-decay", a.weight_decay.map(|v| v.to_string()), s.weight_decay.to_string());
    same("--seed", a.seed.map(|v| v.to_string()), s.seed.to_string());
    same("--in-chans", a.in_chans.map(|v| v.to_string()), s.in_chans.to_string());
    same(
        "--backdrops",
        a.backdrops.as_ref().map(|p| p.display().to_string()),
        s.backdrops.clone().unwrap_or_else(|| "none".into()),
    );
    // flags whose absence is a setting of its own: compared as written (`Some(…)`, `None`)
    same("--crop-scale", given(&a.crop_scale), format!("{:?}", s.crop_scale));
    same("--cutout-canvas", given(&a.cutout_canvas), format!("{:?}", s.cutout_canvas));
    same("--photo-share", given(&a.photo_share), format!("{:?}", s.photo_share));
    same("--backdrop-blur", given(&a.backdrop_blur), format!("{:?}", s.backdrop_blur));
    same("--object-jitter", given(&a.object_jitter), format!("{:?}", s.object_jitter));
    same("--camouflage", given(&a.camouflage), format!("{:?}", s.camouflage));
    same("--clip", given(&a.clip), format!("{:?}", s.clip));
    if a.color_jitter && !s.color_jitter {
        differ.push("--color-jitter (checkpoint: off)".into());
    }
    if a.backdrop_cutouts && !s.backdrop_cutouts {
        differ.push("--backdrop-cutouts (checkpoint: off)".into());
    }
    if !differ.is_empty() {
        bail!("a resumed run keeps its checkpoint's settings; these flags differ: {}", differ.join(", "));
    }
    Ok(())
}

/// A flag's value as `{:?}` (`Some(…)`), where it was given.
fn given<T: std::fmt::Debug>(flag: &Option<T>) -> Option<String> {
    flag.as_ref().map(|_| format!("{flag:?}"))
}

/// The checkpoint written next to the model: `m.safetensors` → `m.ckpt.safetensors`.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    out.with_file_name(format!("{stem}.ckpt.safetensors"))
}

/// Write through a temporary file and a rename, so a crash never leaves half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// A run ready to go: its settings, where it starts and what it resumes from.
struct Run {
    args: Args,
    schedule: Schedule,
    config: RunConfig,
    data: Dataset,
    /// The checkpoint to resume from, with its step, rng state and elapsed seconds.
    resume: Option<(TensorFile, engine::Resumed)>,
    norm: Normalize,
}

pub fn run(args: Args) -> Result<()> {
    let summary = train(args)?;
    eprintln!("{summary}");
    Ok(())
}

/// Train as `args` say; returns a one-line summary.
pub fn train(args: Args) -> Result<String> {
    let resume = match &args.resume {
        None => None,
        Some(path) => {
            let file = TensorFile::load(path).with_context(|| format!("loading checkpoint {}", path.display()))?;
            let r = engine::read_checkpoint(&file).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            check_flags(&r.schedule, &args)?;
            Some((file, r))
        }
    };
    let schedule = match &resume {
        Some((_, r)) => r.schedule.clone(),
        None => schedule_from_args(&args)?,
    };
    if let Some(stop) = args.stop_at {
        if stop == 0 || stop > schedule.steps {
            bail!("--stop-at {stop} must be in 1..={}", schedule.steps);
        }
    }
    for path in [Some(&args.out), args.log.as_ref()].into_iter().flatten() {
        crate::create_parent(path)?;
    }
    let spec = DataSpec::parse(&schedule.data);
    let mae = match (&resume, schedule.method) {
        (None, Method::Mae) => Some(args.mae.config(&spec, schedule.in_chans)?),
        _ => None,
    };
    let img_size = match (&resume, &mae) {
        (Some((_, r)), _) => r.config.img_size(),
        (None, Some(c)) => c.img_size,
        (None, None) => args.mae.img_size.unwrap_or(if spec.default_channels() == 1 { 28 } else { 64 }),
    };
    if schedule.method.distills() && (schedule.crop_scale.is_some() || schedule.color_jitter) {
        bail!(
            "--crop-scale and --color-jitter set the crops of MAE and the supervised baseline; --method {} draws \
             DINO's multi-crop views: use --global-scale and --local-scale (colour jitter is on \
             unless --no-color-aug)",
            schedule.method.name()
        );
    }
    let mut data = spec.load_train(schedule.in_chans, img_size)?;
    if let Augment::Views(a) = &mut data.augment {
        if let Some(scale) = schedule.crop_scale {
            a.scale = scale;
        }
        if schedule.color_jitter {
            a.color_jitter = 0.8;
            a.grayscale = 0.2;
        }
    } else if schedule.crop_scale.is_some() || schedule.color_jitter {
        bail!(
            "{} is used whole (no crops); --crop-scale and --color-jitter apply to photos and image folders",
            data.name
        );
    }
    if let Some(f) = schedule.cutout_canvas {
        if !(1.0..=8.0).contains(&f) {
            bail!("--cutout-canvas {f} must be between 1 and 8");
        }
        if data.pad_cutouts(f, schedule.seed) == 0 {
            bail!("--cutout-canvas applies to cut-outs (images with transparency); {} has none", data.name);
        }
    }
    if let Some(dir) = &schedule.backdrops {
        if !data.images.iter().any(|i| i.color().has_alpha()) {
            bail!("--backdrops applies to cut-outs (images with transparency); {} has none", data.name);
        }
        let photos = crate::data::load_dir(Path::new(dir), 3, 64).with_context(|| format!("--backdrops {dir}"))?;
        let share = schedule.photo_share.unwrap_or(PhotoBackdrops::SHARE);
        if !(0.0..=1.0).contains(&share) {
            bail!("--photo-share {share} must be between 0 and 1");
        }
        let mut pool: Vec<image::RgbImage> = photos.images.iter().map(|i| i.to_rgb8()).collect();
        if schedule.backdrop_cutouts {
            pool.extend(crate::data::flattened_cutouts(&data.images));
        }
        data.backdrops = PhotoBackdrops {
            photos: pool,
            share,
            shrink: schedule.backdrop_blur.unwrap_or(PhotoBackdrops::SHRINK),
            ..PhotoBackdrops::default()
        };
    }
    let has_cutouts = data.images.iter().any(|i| i.color().has_alpha());
    for (flag, value, slot) in [
        ("--camouflage", schedule.camouflage, &mut data.backdrops.camouflage),
        ("--object-jitter", schedule.object_jitter, &mut data.backdrops.object_jitter),
    ] {
        let Some(v) = value else { continue };
        if !(0.0..=1.0).contains(&v) {
            bail!("{flag} {v} must be between 0 and 1");
        }
        if !has_cutouts {
            bail!("{flag} applies to cut-outs (images with transparency); {} has none", data.name);
        }
        *slot = v;
    }
    if schedule.object_jitter.is_some() && !matches!(schedule.method, Method::Dino | Method::Ibot) {
        bail!("--object-jitter applies to DINO and iBOT, whose views of an image share its colours");
    }
    if data.channels != schedule.in_chans {
        bail!("{} has {} channel(s); the model takes {}", data.name, data.channels, schedule.in_chans);
    }
    let (images, batch, chans) = (data.len(), schedule.batch, schedule.in_chans);
    let classes =
        data.labels.as_ref().map_or(0, |l| data.classes.len().max(l.iter().max().map_or(0, |m| *m as usize + 1)));
    if resume.is_none() && !args.backbone.trains(schedule.method) {
        bail!(
            "--backbone {}: {} trains a ViT here; Swin is for the supervised baseline",
            args.backbone.name(),
            schedule.method.name()
        );
    }
    let config = match (&resume, schedule.method) {
        (None, Method::Supervised) => {
            if classes == 0 {
                bail!(
                    "{} has no labels (class subfolders or idx label files); supervised training needs them",
                    data.name
                );
            }
            use patchwork_compute::train::supervised::{Arch, SupervisedRun};
            let run = dino::run_from_args(&args.mae, &args.dino, &spec, chans, images, batch)?;
            let vit = patchwork_compute::VitConfig { num_classes: classes, ..run.model.vit };
            let arch = match args.backbone {
                BackboneKind::Vit => Arch::Vit(vit),
                BackboneKind::Swin => {
                    if vit.reg_tokens > 0 {
                        bail!("--reg-tokens is for the ViT backbone: Swin has no class token or registers");
                    }
                    let swin = patchwork_compute::train::swin_like(&vit);
                    swin.validate()?;
                    Arch::Swin(swin)
                }
            };
            RunConfig::Supervised(SupervisedRun { arch, fine_tuned_from: None })
        }
        (Some((_, r)), _) => r.config.clone(),
        (None, Method::Mae) => RunConfig::Mae(mae.expect("an MAE config")),
        (None, Method::Dino) => {
            RunConfig::Dino(dino::run_from_args(&args.mae, &args.dino, &spec, chans, images, batch)?)
        }
        (None, Method::Ibot) => {
            RunConfig::Ibot(ibot::run_from_args(&args.mae, &args.dino, &args.ibot, &spec, chans, images, batch)?)
        }
    };
    let norm = data.norm.clone();
    let backend = args.backend;
    with_compute_backend(backend, Run { args, schedule, config, data, resume, norm })?
}

/// [`with_backend`], except that `auto` passes over a software GPU adapter (lavapipe,
/// llvmpipe, …): the CPU backend trains far faster than WGSL emulated on the CPU.
pub fn with_compute_backend<T: OnBackend>(choice: BackendChoice, task: T) -> Result<T::Output> {
    if choice != BackendChoice::Auto {
        return with_backend(choice, task);
    }
    match crate::backend::gpu() {
        Ok(g) if !g.is_software() => Ok(task.run(&g)),
        Ok(g) => {
            eprintln!("the GPU adapter is a software one ({}); running on the CPU backend", g.adapter_summary());
            Ok(task.run(&patchwork_compute::Cpu))
        }
        Err(e) => {
            eprintln!("{e}; running on the CPU backend");
            Ok(task.run(&patchwork_compute::Cpu))
        }
    }
}

impl OnBackend for Run {
    type Output = Result<String>;
    fn run<B: Probe>(self, be: &B) -> Result<String> {
        let mut trainer = match (&self.resume, &self.schedule.init) {
            (Some((file, r)), _) => engine::restore(be, r, file).map_err(anyhow::Error::msg)?,
            (None, Some(init)) => {
                let file = TensorFile::load(Path::new(init)).with_context(|| format!("loading --init {init}"))?;
                self.config.trainer_from_model(be, &file, &self.schedule).map_err(|e| anyhow!("--init {init}: {e}"))?
            }
            (None, None) => self.config.trainer(be, &self.schedule),
        };
        train_loop(be, trainer.as_mut(), self)
    }
}

fn train_loop<B: Probe>(be: &B, trainer: &mut dyn Trainer<B>, run: Run) -> Result<String> {
    let Run { args, schedule: s, data, resume, norm, .. } = run;
    let lrs = s.lrs();
    let (start, mut rng, elapsed_before) = match &resume {
        Some((_, r)) => (r.step, r.rng.clone(), r.elapsed_s),
        // the weights take `seed`; data order, crops and masks a stream of their own
        None => (0, s.data_rng(), 0.0),
    };
    drop(resume);
    let end = args.stop_at.unwrap_or(s.steps);
    if start >= end {
        bail!("the checkpoint is at step {start}; nothing to do up to step {end}");
    }
    let ckpt = checkpoint_path(&args.out);
    let mut log = match &args.log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(start > 0)
                .write(true)
                .truncate(start == 0)
                .open(p)
                .with_context(|| format!("opening log {}", p.display()))?,
        ),
        None => None,
    };
    let mut sampler = Sampler::new(s.seed, data.len());
    let mut progress = Progress::new(start as u64, s.steps as u64, args.quiet);
    progress.println(&format!(
        "{} on {} ({} images{}, batch {}), {} backend, steps {}..{} of {}",
        s.method.name(),
        data.name,
        data.len(),
        match &data.labels {
            Some(l) => format!(" in {} classes", data.classes.len().max(l.iter().max().map_or(0, |m| *m as usize + 1))),
            None => String::new(),
        },
        s.batch,
        be.name(),
        start,
        end,
        s.steps
    ));
    let t0 = Instant::now();
    let mut last_ckpt: Option<(usize, PathBuf)> = args.resume.clone().map(|p| (start, p));
    let mut ips_avg = 0.0;
    let mut loss = f64::NAN;
    let save_checkpoint = |trainer: &dyn Trainer<B>, step: usize, rng: &Rng, elapsed: f64| -> Result<()> {
        let file = block_on(engine::checkpoint_file(be, trainer, &s, &norm, step, rng, elapsed));
        write_atomic(&ckpt, &file.to_bytes())
    };
    for (step, &lr) in lrs.iter().enumerate().take(end).skip(start) {
        let t = Instant::now();
        let indices = sampler.indices(step, s.batch);
        loss = block_on(trainer.step(be, &data, &indices, step, &mut rng, s.step_config(lr)));
        if !loss.is_finite() {
            progress.finish();
            let kept = match last_ckpt {
                Some((k, path)) => format!("the last checkpoint (step {k}) is kept at {}", path.display()),
                None => "no checkpoint was written yet".into(),
            };
            bail!(
                "the loss is {loss} at step {} (lr {lr:e}); training stopped, {kept}. \
                 Try a lower --lr or --clip 1.0.",
                step + 1
            );
        }
        let ips = s.batch as f64 / t.elapsed().as_secs_f64();
        ips_avg = if step == start { ips } else { 0.95 * ips_avg + 0.05 * ips };
        if let Some(f) = log.as_mut() {
            let mut line = json!({ "step": step + 1, "loss": loss, "lr": lr, "images_per_s": ips,
                "elapsed_s": elapsed_before + t0.elapsed().as_secs_f64() });
            for (term, value) in trainer.loss_terms() {
                line[term] = json!(value);
            }
            writeln!(f, "{line}")?;
        }
        progress.update((step + 1) as u64, &format!("loss {loss:.4} lr {lr:.2e} {ips_avg:.0} img/s"));
        let done = step + 1;
        if done.is_multiple_of(args.checkpoint_every.max(1)) || done == end {
            save_checkpoint(trainer, done, &rng, elapsed_before + t0.elapsed().as_secs_f64())?;
            last_ckpt = Some((done, ckpt.clone()));
        }
    }
    progress.finish();
    let elapsed = elapsed_before + t0.elapsed().as_secs_f64();
    if end < s.steps {
        return Ok(format!(
            "stopped at step {end} of {} (loss {loss:.4}); resume with --resume {}",
            s.steps,
            ckpt.display()
        ));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let train_meta = json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "schedule": s,
        "backend": be.name(),
        "final_loss": loss,
        "wall_time_s": elapsed,
        "finished_unix": now,
        "resumed": start > 0,
    });
    let model = block_on(engine::model_file(be, trainer, &s, &norm, train_meta));
    write_atomic(&args.out, &model.to_bytes())?;
    Ok(format!(
        "trained {} steps in {:.0} s (final loss {loss:.4}); model {}, checkpoint {}",
        s.steps,
        elapsed,
        args.out.display(),
        ckpt.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    /// A micro MAE on a tiny idx data set: 16 patches of 7×7, width 16, one block each.
    fn micro(dir: &Path, extra: &[&str]) -> Args {
        let data = dir.join("data");
        if !data.exists() {
            std::fs::create_dir(&data).unwrap();
            crate::data::tests_support::write_idx(&data, "train", 12);
        }
        let method: &[&str] = if extra.contains(&"--method") { &[] } else { &["--method", "mae"] };
        let mut argv: Vec<String> = ["t"].iter().chain(method).map(|s| s.to_string()).collect();
        argv.extend(
            [
                "--data",
                data.to_str().unwrap(),
                "--batch",
                "4",
                "--patch-size",
                "7",
                "--embed-dim",
                "16",
                "--depth",
                "1",
                "--heads",
                "2",
                "--decoder-dim",
                "16",
                "--decoder-depth",
                "1",
                "--decoder-heads",
                "2",
                "--backend",
                "cpu",
                "--quiet",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        argv.extend(extra.iter().map(|s| s.to_string()));
        Cli::try_parse_from(argv).unwrap().args
    }

    fn losses(log: &Path) -> Vec<f64> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
            .collect()
    }

    const DINO_MICRO: [&str; 12] = [
        "--method",
        "dino",
        "--local-size",
        "14",
        "--local-crops",
        "2",
        "--out-dim",
        "32",
        "--head-hidden-dim",
        "16",
        "--bottleneck-dim",
        "8",
    ];

    /// DINO's micro flags with iBOT's method and masking (every global crop masked).
    fn ibot_micro() -> Vec<&'static str> {
        let mut v = DINO_MICRO.to_vec();
        v[1] = "ibot";
        v.extend(["--pred-ratio", "0.3", "--pred-ratio-var", "0.2", "--lambda2", "0.5"]);
        v
    }

    #[test]
    fn resumed_training_is_bit_identical_to_an_uninterrupted_run() {
        for method in ["mae", "dino", "ibot"] {
            let ibot = ibot_micro();
            let method_args: &[&str] = match method {
                "dino" => &DINO_MICRO,
                "ibot" => &ibot,
                _ => &[],
            };
            resume_matches(method, method_args);
        }
    }

    fn resume_matches(method: &str, method_args: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let with = |v: &[&str]| -> Vec<String> { v.iter().chain(method_args).map(|s| s.to_string()).collect() };
        let args = |v: &[&str]| {
            let owned = with(v);
            micro(dir.path(), &owned.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        };
        let whole = args(&["--steps", "4", "--out", &p("a.safetensors"), "--log", &p("a.jsonl")]);
        train(whole).unwrap();
        let first = args(&["--steps", "4", "--stop-at", "2", "--out", &p("b.safetensors"), "--log", &p("b.jsonl")]);
        train(first).unwrap();
        assert!(!dir.path().join("b.safetensors").exists(), "no model file before the run ends");
        let ckpt = p("b.ckpt.safetensors");
        let argv = [
            "t",
            "--resume",
            &ckpt,
            "--out",
            &p("b.safetensors"),
            "--log",
            &p("b.jsonl"),
            "--backend",
            "cpu",
            "--quiet",
        ];
        let rest = Cli::try_parse_from(argv).unwrap().args;
        train(rest).unwrap();
        let (la, lb) = (losses(&dir.path().join("a.jsonl")), losses(&dir.path().join("b.jsonl")));
        assert_eq!(la.len(), 4);
        assert_eq!(la, lb, "{method}: losses of the whole run vs the resumed one");
        for (name, other) in [("a.safetensors", "b.safetensors"), ("a.ckpt.safetensors", "b.ckpt.safetensors")] {
            let a = TensorFile::load(&dir.path().join(name)).unwrap();
            let b = TensorFile::load(&dir.path().join(other)).unwrap();
            assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
            for (k, ta) in &a.tensors {
                let (va, vb) = (ta.as_f32().unwrap(), b.tensors[k].as_f32().unwrap());
                let first = va.iter().zip(vb).position(|(x, y)| x.to_bits() != y.to_bits());
                assert!(
                    first.is_none(),
                    "{name} {k}[{}]: {} vs {}",
                    first.unwrap(),
                    va[first.unwrap()],
                    vb[first.unwrap()]
                );
            }
        }
        let model = TensorFile::load(&dir.path().join("a.safetensors")).unwrap();
        assert_eq!(model.metadata["format"], patchwork_compute::train::MODEL_FORMAT);
        assert_eq!(model.metadata["method"], method);
        assert!(model.tensors.contains_key("blocks.0.attn.qkv.weight"));
        if method == "mae" {
            assert!(model.tensors.contains_key("decoder_pos_embed"));
        } else {
            // the teacher backbone alone, loadable as a timm ViT from its vit_config
            let cfg = patchwork_compute::VitConfig::from_json(&model.metadata["vit_config"]).unwrap();
            patchwork_compute::Vit::from_file(&patchwork_compute::Cpu, cfg, &model).unwrap();
            let ckpt = TensorFile::load(&dir.path().join("a.ckpt.safetensors")).unwrap();
            assert!(ckpt.tensors.contains_key("center") && ckpt.tensors.contains_key("student_head.mlp.0.weight"));
            if method == "ibot" {
                // the student's mask token and the patch centre; the model is the teacher, without it
                assert!(ckpt.tensors.contains_key("student.masked_embed") && ckpt.tensors.contains_key("center_patch"));
                assert!(!model.tensors.contains_key("masked_embed"));
                let log = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap();
                let line: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
                let (cls, patch) = (line["cls"].as_f64().unwrap(), line["patch"].as_f64().unwrap());
                assert!(cls > 0.0 && patch > 0.0, "{line}");
                assert!((cls + patch - line["loss"].as_f64().unwrap()).abs() < 1e-9, "{line}");
            }
        }
        assert!(!model.tensors.keys().any(|k| k.starts_with("opt.")));
        let train: serde_json::Value = serde_json::from_str(&model.metadata["train"]).unwrap();
        assert_eq!(train["schedule"]["steps"], 4);
    }

    #[test]
    fn resume_refuses_a_changed_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.safetensors");
        train(micro(dir.path(), &["--steps", "3", "--stop-at", "1", "--out", out.to_str().unwrap()])).unwrap();
        let mut again = micro(dir.path(), &["--steps", "5", "--out", out.to_str().unwrap()]);
        again.resume = Some(checkpoint_path(&out));
        let e = train(again).unwrap_err().to_string();
        assert!(e.contains("--steps 5 (checkpoint: 3)"), "{e}");
    }

    #[test]
    fn a_diverging_run_stops_with_a_message_and_keeps_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.safetensors");
        let args = micro(
            dir.path(),
            &[
                "--steps",
                "20",
                "--lr",
                "1e30",
                "--warmup-steps",
                "0",
                "--checkpoint-every",
                "1",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        let e = train(args).unwrap_err().to_string();
        assert!(e.contains("training stopped") && e.contains("the last checkpoint (step"), "{e}");
        assert!(!out.exists(), "no model from a diverged run");
        let ckpt = TensorFile::load(&checkpoint_path(&out)).unwrap();
        assert_eq!(ckpt.metadata["format"], patchwork_compute::train::CHECKPOINT_FORMAT);
        let step: usize = ckpt.metadata["step"].parse().unwrap();
        assert!(e.contains(&format!("(step {step})")), "{e}");
    }

    /// `--backbone swin` trains a Swin classifier whose model file `patchwork eval` scores on
    /// its pooled features; the self-supervised methods refuse it.
    #[test]
    fn a_swin_classifier_trains_and_evaluates() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("swin.safetensors");
        let o = out.to_str().unwrap();
        let flags = ["--method", "supervised", "--backbone", "swin", "--local-size", "14", "--steps", "3", "--out", o];
        let args = micro(dir.path(), &flags);
        train(args).unwrap();
        let file = TensorFile::load(&out).unwrap();
        let cfg = patchwork_compute::SwinConfig::from_json(&file.metadata["swin_config"]).unwrap();
        assert_eq!((cfg.depths.clone(), cfg.num_features(), cfg.num_classes), (vec![1, 1], 16, 10));
        assert!(file.tensors.contains_key("layers.1.blocks.0.attn.relative_position_bias_table"));
        let data = dir.path().join("data");
        crate::data::tests_support::write_idx(&data, "t10k", 10);
        let eval_args = crate::eval::tests_support::args(&["--model", o, "--data", data.to_str().unwrap(), "--json"]);
        let r = crate::eval::evaluate(&eval_args).unwrap().to_json(&eval_args);
        assert_eq!(
            (r["backbone"].as_str(), r["dim"].as_u64(), r["pooling"].as_str()),
            (Some("swin"), Some(16), Some("avg"))
        );
        assert!(r["knn"]["top1"].as_f64().unwrap() >= 0.0 && r["linear"]["top1"].as_f64().unwrap() >= 0.0);
        let dino = micro(dir.path(), &["--method", "dino", "--backbone", "swin", "--steps", "1", "--out", o]);
        let e = train(dino).unwrap_err().to_string();
        assert!(e.contains("--backbone swin") && e.contains("supervised"), "{e}");
    }

    /// `--reg-tokens` gives DINO's ViT timm's register tokens: the model file holds
    /// `reg_token` and says so in `vit_config`, and the teacher's registers move with
    /// training. MAE and Swin refuse the flag.
    #[test]
    fn dino_trains_a_vit_with_registers() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("reg.safetensors");
        let o = out.to_str().unwrap();
        let mut flags = DINO_MICRO.to_vec();
        flags.extend(["--reg-tokens", "2", "--steps", "3", "--out", o]);
        train(micro(dir.path(), &flags)).unwrap();
        let file = TensorFile::load(&out).unwrap();
        let cfg = patchwork_compute::VitConfig::from_json(&file.metadata["vit_config"]).unwrap();
        assert_eq!((cfg.reg_tokens, cfg.tokens()), (2, 1 + 2 + 16));
        assert_eq!(file.tensors["reg_token"].shape, vec![1, 2, 16]);
        assert_eq!(file.tensors["pos_embed"].shape, vec![1, 19, 16]);
        let init = patchwork_compute::Vit::init(&patchwork_compute::Cpu, cfg, 0);
        let init = block_on(init.params.download(&patchwork_compute::Cpu, ""));
        assert_ne!(file.tensors["reg_token"].to_f32(), init.tensors["reg_token"].to_f32());
        for (method, backbone) in [("mae", "vit"), ("supervised", "swin")] {
            let flags = [
                "--method",
                method,
                "--backbone",
                backbone,
                "--local-size",
                "14",
                "--reg-tokens",
                "1",
                "--steps",
                "1",
                "--out",
                o,
            ];
            let e = train(micro(dir.path(), &flags)).unwrap_err().to_string();
            assert!(e.contains("--reg-tokens"), "{method}: {e}");
        }
    }

    /// `--backdrops DIR` lays cut-outs over blurred crops of DIR's photos (among plain and
    /// noise backdrops); the run records the folder, and data without cut-outs, or a folder
    /// without images, are refused.
    #[test]
    fn cut_outs_train_on_photo_backdrops() {
        let dir = tempfile::tempdir().unwrap();
        let (data, photos) = (dir.path().join("data"), dir.path().join("photos"));
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&photos).unwrap();
        for i in 0..4u32 {
            image::RgbaImage::from_fn(28, 28, |x, y| {
                let inside = (x as i32 - 14).pow(2) + (y as i32 - 14).pow(2) < 64 + 9 * i as i32;
                image::Rgba([200, 40 * i as u8, 90, if inside { 255 } else { 0 }])
            })
            .save(data.join(format!("{i}.png")))
            .unwrap();
        }
        image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([x as u8 * 5, y as u8 * 6, 30]))
            .save(photos.join("p.png"))
            .unwrap();
        let out = dir.path().join("m.safetensors");
        let o = out.to_str().unwrap();
        let mut flags = DINO_MICRO.to_vec();
        let p = photos.to_str().unwrap();
        flags.extend([
            "--in-chans",
            "3",
            "--img-size",
            "28",
            "--backdrop-per-view",
            "--backdrops",
            p,
            "--photo-share",
            "0.6",
            "--backdrop-blur",
            "8,24",
            "--backdrop-cutouts",
            "--camouflage",
            "0.4",
            "--object-jitter",
            "0.5",
            "--steps",
            "2",
            "--out",
            o,
        ]);
        train(micro(dir.path(), &flags)).unwrap();
        let file = TensorFile::load(&out).unwrap();
        let record: serde_json::Value = serde_json::from_str(&file.metadata["train"]).unwrap();
        assert_eq!(record["schedule"]["backdrops"], p, "{record}");
        assert!((record["schedule"]["photo_share"].as_f64().unwrap() - 0.6).abs() < 1e-6, "{record}");
        assert_eq!(record["schedule"]["backdrop_blur"], serde_json::json!([8, 24]), "{record}");
        assert!((record["schedule"]["camouflage"].as_f64().unwrap() - 0.4).abs() < 1e-6, "{record}");
        assert_eq!(record["schedule"]["backdrop_cutouts"], true, "{record}");
        assert!((record["schedule"]["object_jitter"].as_f64().unwrap() - 0.5).abs() < 1e-6, "{record}");
        // a resumed run keeps its backdrops, their share, their blur and their camouflage
        let mut again = micro(dir.path(), &flags);
        again.backdrops = Some(dir.path().join("elsewhere"));
        again.photo_share = Some(0.5);
        again.backdrop_blur = Some((4, 16));
        again.camouflage = Some(0.2);
        again.object_jitter = Some(0.1);
        again.resume = Some(checkpoint_path(&out));
        let e = train(again).unwrap_err().to_string();
        assert!(e.contains("--backdrops") && e.contains(&format!("(checkpoint: {p})")), "{e}");
        assert!(e.contains("--photo-share Some(0.5) (checkpoint: Some(0.6))"), "{e}");
        assert!(e.contains("--backdrop-blur Some((4, 16)) (checkpoint: Some((8, 24)))"), "{e}");
        assert!(e.contains("--camouflage Some(0.2) (checkpoint: Some(0.4))"), "{e}");
        assert!(e.contains("--object-jitter Some(0.1) (checkpoint: Some(0.5))"), "{e}");
        let mut share = micro(dir.path(), &flags);
        share.photo_share = Some(1.5);
        let e = train(share).unwrap_err().to_string();
        assert!(e.contains("--photo-share 1.5 must be between 0 and 1"), "{e}");
        let mut camouflage = micro(dir.path(), &flags);
        camouflage.camouflage = Some(-0.1);
        let e = train(camouflage).unwrap_err().to_string();
        assert!(e.contains("--camouflage -0.1 must be between 0 and 1"), "{e}");
        let mut mae = micro(dir.path(), &flags);
        mae.method = Some(Method::Mae);
        let e = train(mae).unwrap_err().to_string();
        assert!(e.contains("--object-jitter applies to DINO and iBOT"), "{e}");
        // MAE's crop flags would do nothing to DINO's multi-crop views: refused, not ignored
        for (scale, jitter) in [(Some((0.3, 1.0)), false), (None, true)] {
            let mut crops = micro(dir.path(), &flags);
            crops.crop_scale = scale;
            crops.color_jitter = jitter;
            let e = train(crops).unwrap_err().to_string();
            assert!(e.contains("--method dino draws DINO's multi-crop views: use --global-scale"), "{e}");
        }
        assert!(parse_blur("16,4").is_err() && parse_blur("0,4").is_err() && parse_blur("4").is_err());
        assert_eq!(parse_blur("4, 32"), Ok((4, 32)));
        // a folder without images, and data without cut-outs
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let mut flags = DINO_MICRO.to_vec();
        flags.extend([
            "--in-chans",
            "3",
            "--img-size",
            "28",
            "--backdrops",
            empty.to_str().unwrap(),
            "--steps",
            "1",
            "--out",
            o,
        ]);
        let e = format!("{:#}", train(micro(dir.path(), &flags)).unwrap_err());
        assert!(e.contains("--backdrops") && e.contains("no readable images"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let mut flags = DINO_MICRO.to_vec();
        flags.extend(["--backdrops", p, "--steps", "1", "--out", o]);
        let e = train(micro(other.path(), &flags)).unwrap_err().to_string();
        assert!(e.contains("--backdrops applies to cut-outs"), "{e}");
        let mut flags = DINO_MICRO.to_vec();
        flags.extend(["--camouflage", "0.5", "--steps", "1", "--out", o]);
        let e = train(micro(other.path(), &flags)).unwrap_err().to_string();
        assert!(e.contains("--camouflage applies to cut-outs"), "{e}");
    }

    #[test]
    fn checkpoint_sits_next_to_the_model() {
        assert_eq!(checkpoint_path(Path::new("out/m.safetensors")), Path::new("out/m.ckpt.safetensors"));
        assert_eq!(checkpoint_path(Path::new("m.bin")), Path::new("m.bin.ckpt.safetensors"));
    }
}
