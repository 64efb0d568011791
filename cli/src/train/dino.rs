//! DINO training (`main_dino.py`): multi-crop views drawn on the CPU from the run's rng,
//! then the engine's [`Dino`] step, with DINO's schedules indexed by the step:
//! ```text
//! views  = 2 global crops (G px) + K local crops (L px) of each image   # DataAugmentationDINO
//! wd     = cosine(wd, wd_end)[step]; m = cosine(m, 1)[step]             # momentum 0.996 → 1
//! temp   = linspace(warmup_temp, temp, warmup_steps) then temp
//! loss   = dino.step(views, lr[step], wd, m, temp, freeze = step < freeze_last_layer)
//! ```
//! The model file is the teacher's backbone under timm's names (as the official
//! `dino_*_pretrain.pth`), with its `vit_config`; the checkpoint adds the student, both
//! heads, the centre and Adam's moments.
use anyhow::{bail, Result};
use patchwork_compute::augment::DINO_BLUR_SIGMA;
use patchwork_compute::heads::DinoHeadConfig;
use patchwork_compute::methods::dino_train::DinoConfig;
pub use patchwork_compute::train::dino::{DinoRecipe, DinoRun};
use patchwork_compute::VitConfig;

use super::parse_scale;
use crate::data::DataSpec;

/// DINO's flags (the backbone's size comes from `--img-size`, `--patch-size`,
/// `--embed-dim`, `--depth`, `--heads`, `--reg-tokens`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DinoArgs {
    /// DINO: side of the local crops [default: 12 for fashion-mnist and idx files,
    /// 32 otherwise].
    #[arg(long)]
    pub local_size: Option<usize>,
    /// DINO: local crops per image [default: 6].
    #[arg(long)]
    pub local_crops: Option<usize>,
    /// DINO: area fractions `LO,HI` of the global crops [default: 0.4,1].
    #[arg(long, value_parser = parse_scale)]
    pub global_scale: Option<(f32, f32)>,
    /// DINO: area fractions `LO,HI` of the local crops [default: 0.05,0.4].
    #[arg(long, value_parser = parse_scale)]
    pub local_scale: Option<(f32, f32)>,
    /// DINO: head output dimension K [default: 1024].
    #[arg(long)]
    pub out_dim: Option<usize>,
    /// DINO: the head MLP's hidden width [default: 512].
    #[arg(long)]
    pub head_hidden_dim: Option<usize>,
    /// DINO: the head's bottleneck width [default: 128].
    #[arg(long)]
    pub bottleneck_dim: Option<usize>,
    /// DINO: let the last layer's weight-norm gain train (`--norm_last_layer false`).
    #[arg(long)]
    pub no_norm_last_layer: bool,
    /// DINO: teacher temperature after warm-up [default: 0.04].
    #[arg(long)]
    pub teacher_temp: Option<f32>,
    /// DINO: teacher temperature at the first step [default: 0.04].
    #[arg(long)]
    pub warmup_teacher_temp: Option<f32>,
    /// DINO: steps of the teacher temperature's linear warm-up [default: 0].
    #[arg(long)]
    pub warmup_teacher_temp_steps: Option<usize>,
    /// DINO: the teacher's EMA momentum at the first step; it rises to 1 on a cosine
    /// [default: 0.996].
    #[arg(long)]
    pub momentum_teacher: Option<f32>,
    /// DINO: weight decay at the last step (cosine from --weight-decay) [default: 0.4].
    #[arg(long)]
    pub weight_decay_end: Option<f32>,
    /// DINO: steps during which the head's last layer is not updated [default: one epoch].
    #[arg(long)]
    pub freeze_last_layer_steps: Option<usize>,
    /// DINO: σ range `LO,HI` of the Gaussian blurs, in pixels [default: DINO's 0.1,2, meant
    /// for 224-px crops]
    #[arg(long, value_parser = parse_sigma)]
    pub blur_sigma: Option<(f32, f32)>,
    /// DINO: give every view of a cut-out its own backdrop, so that only the object is
    /// common to an image's views [default: the views share one backdrop, drawn each step].
    #[arg(long)]
    pub backdrop_per_view: bool,
    /// DINO: no colour jitter, grayscale or solarisation (crops, flips and blurs only).
    #[arg(long)]
    pub no_color_aug: bool,
}

fn parse_sigma(s: &str) -> Result<(f32, f32), String> {
    let (lo, hi) = s.split_once(',').ok_or_else(|| format!("expected LO,HI, got {s:?}"))?;
    let num = |v: &str| v.trim().parse::<f32>().map_err(|e| format!("{v:?}: {e}"));
    let (lo, hi) = (num(lo)?, num(hi)?);
    if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
        return Err(format!("need 0 < LO <= HI, got {lo},{hi}"));
    }
    Ok((lo, hi))
}

/// A DINO run from the flags: the backbone from the shared model flags, the rest from `d`.
pub fn run_from_args(
    m: &super::mae::MaeArgs,
    d: &DinoArgs,
    spec: &DataSpec,
    in_chans: usize,
    images: usize,
    batch: usize,
) -> Result<DinoRun> {
    let small = spec.default_channels() == 1;
    let pick = |v: Option<usize>, fashion: usize, photos: usize| v.unwrap_or(if small { fashion } else { photos });
    let embed_dim = pick(m.embed_dim, 128, 192);
    let vit = VitConfig {
        img_size: [pick(m.img_size, 28, 64); 2],
        patch_size: pick(m.patch_size, 4, 8),
        in_chans,
        embed_dim,
        depth: pick(m.depth, 4, 6),
        num_heads: pick(m.heads, 4, 3),
        mlp_ratio: 4.0,
        qkv_bias: true,
        num_classes: 0,
        global_pool: "token".into(),
        reg_tokens: m.reg_tokens.unwrap_or(0),
        ..VitConfig::default()
    };
    let model = DinoConfig {
        head: DinoHeadConfig {
            in_dim: embed_dim,
            out_dim: d.out_dim.unwrap_or(1024),
            hidden_dim: d.head_hidden_dim.unwrap_or(512),
            bottleneck_dim: d.bottleneck_dim.unwrap_or(128),
            nlayers: 3,
            norm_last_layer: !d.no_norm_last_layer,
        },
        local_size: d.local_size.unwrap_or(if small { 12 } else { 32 }),
        n_local: d.local_crops.unwrap_or(6),
        student_temp: 0.1,
        center_momentum: 0.9,
        vit,
    };
    model.validate()?;
    let recipe = DinoRecipe {
        global_scale: d.global_scale.unwrap_or((0.4, 1.0)),
        local_scale: d.local_scale.unwrap_or((0.05, 0.4)),
        teacher_temp: d.teacher_temp.unwrap_or(0.04),
        warmup_teacher_temp: d.warmup_teacher_temp.unwrap_or(0.04),
        warmup_teacher_temp_steps: d.warmup_teacher_temp_steps.unwrap_or(0),
        momentum_teacher: d.momentum_teacher.unwrap_or(0.996),
        weight_decay_end: d.weight_decay_end.unwrap_or(0.4),
        freeze_last_layer_steps: d.freeze_last_layer_steps.unwrap_or(images.div_ceil(batch.max(1))),
        blur_sigma: d.blur_sigma.unwrap_or(DINO_BLUR_SIGMA),
        backdrop_per_view: d.backdrop_per_view,
        no_color_aug: d.no_color_aug,
    };
    if !(0.0..=1.0).contains(&recipe.momentum_teacher) {
        bail!("--momentum-teacher {} must be in [0, 1]", recipe.momentum_teacher);
    }
    Ok(DinoRun { model, recipe })
}
