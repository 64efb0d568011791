//! iBOT training (`main_ibot.py`): DINO's multi-crop views and schedules, plus a block mask
//! for each global crop, drawn on the CPU from the run's rng (`ImageFolderMask`), then the
//! engine's [`Ibot`] step:
//! ```text
//! views  = 2 global crops (G px) + K local crops (L px) of each image    # as DINO
//! masks  = MaskingGenerator(pred_ratio, pred_ratio_var) per global crop  # [2·B, L] 0/1
//! temp   = linspace(warmup_temp, temp, warmup_steps) then temp; temp2 likewise for patches
//! loss   = ibot.step(views, masks, lr[step], wd[step], m[step], temp, temp2,
//!                    freeze = step < freeze_last_layer)
//! ```
//! The DINO flags set the backbone, the shared head, the crops and the schedules; iBOT adds
//! the masking, λ2 and the patch temperature. The model file is the teacher's backbone
//! under timm's names with its `vit_config` (the teacher has no `masked_embed`, as in
//! bytedance/ibot); the checkpoint adds the student (with `masked_embed`), both heads, both
//! centres and Adam's moments.
use anyhow::Result;
use patchwork_compute::masking::MaskingGenerator;
pub use patchwork_compute::train::ibot::IbotRun;

use super::dino::DinoArgs;
use crate::data::DataSpec;

/// iBOT's own flags (the rest are DINO's and the model-size flags).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IbotArgs {
    /// iBOT: masking ratios `R1,R2,…`; each global crop draws one [default: 0,0.3].
    #[arg(long, value_delimiter = ',')]
    pub pred_ratio: Option<Vec<f32>>,
    /// iBOT: half-widths of the uniform around each ratio, one or one per ratio
    /// [default: 0,0.2].
    #[arg(long, value_delimiter = ',')]
    pub pred_ratio_var: Option<Vec<f32>>,
    /// iBOT: weight of the masked-patch loss [default: 1].
    #[arg(long)]
    pub lambda2: Option<f32>,
    /// iBOT: patch-token teacher temperature after warm-up [default: 0.07].
    #[arg(long)]
    pub teacher_patch_temp: Option<f32>,
    /// iBOT: patch-token teacher temperature at the first step (it warms up over
    /// --warmup-teacher-temp-steps) [default: 0.04].
    #[arg(long)]
    pub warmup_teacher_patch_temp: Option<f32>,
}

/// An iBOT run from the flags: DINO's run, then iBOT's additions.
pub fn run_from_args(
    m: &super::mae::MaeArgs,
    d: &DinoArgs,
    i: &IbotArgs,
    spec: &DataSpec,
    in_chans: usize,
    images: usize,
    batch: usize,
) -> Result<IbotRun> {
    let dino = super::dino::run_from_args(m, d, spec, in_chans, images, batch)?;
    let defaults = MaskingGenerator::default();
    let masking = MaskingGenerator {
        pred_ratio: i.pred_ratio.clone().unwrap_or(defaults.pred_ratio),
        pred_ratio_var: i.pred_ratio_var.clone().unwrap_or(defaults.pred_ratio_var),
        ..defaults
    };
    let run = IbotRun::on_dino(
        dino,
        masking,
        i.lambda2.unwrap_or(1.0),
        i.teacher_patch_temp.unwrap_or(0.07),
        i.warmup_teacher_patch_temp.unwrap_or(0.04),
    )
    .map_err(|e| anyhow::anyhow!("--pred-ratio / --pred-ratio-var / --lambda2 / patch temperatures: {e}"))?;
    Ok(run)
}
