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
use anyhow::{bail, Context, Result};
use patchwork_compute::augment::MultiCrop;
use patchwork_compute::heads::DinoHead;
use patchwork_compute::masking::MaskingGenerator;
use patchwork_compute::methods::ibot_train::{Ibot, IbotConfig, IbotStep};
use patchwork_compute::optim::{cosine, StepConfig};
use patchwork_compute::rng::Rng;
use patchwork_compute::{block_on, Backend, Tensor, TensorFile, Vit};
use serde::{Deserialize, Serialize};

use super::dino::{upload_views, DinoArgs, DinoRecipe, DinoRun};
use super::{download, tensor_f32, Trainer};
use crate::data::{DataSpec, Dataset};

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

/// What `config` holds for an iBOT run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IbotRun {
    pub model: IbotConfig,
    /// DINO's schedule settings ([CLS] temperature, momentum, weight decay, frozen last
    /// layer, crop scales).
    pub recipe: DinoRecipe,
    pub teacher_patch_temp: f32,
    pub warmup_teacher_patch_temp: f32,
}

impl IbotRun {
    /// From the flags: DINO's run, then iBOT's additions.
    pub fn from_args(
        m: &super::mae::MaeArgs,
        d: &DinoArgs,
        i: &IbotArgs,
        spec: &DataSpec,
        in_chans: usize,
        images: usize,
        batch: usize,
    ) -> Result<Self> {
        let DinoRun { model: dino, recipe } = DinoRun::from_args(m, d, spec, in_chans, images, batch)?;
        let defaults = MaskingGenerator::default();
        let model = IbotConfig {
            vit: dino.vit,
            head: dino.head,
            local_size: dino.local_size,
            n_local: dino.n_local,
            student_temp: dino.student_temp,
            center_momentum: dino.center_momentum,
            center_momentum2: 0.9,
            lambda1: 1.0,
            lambda2: i.lambda2.unwrap_or(1.0),
            masking: MaskingGenerator {
                pred_ratio: i.pred_ratio.clone().unwrap_or(defaults.pred_ratio),
                pred_ratio_var: i.pred_ratio_var.clone().unwrap_or(defaults.pred_ratio_var),
                ..defaults
            },
        };
        model.validate().context("--pred-ratio / --pred-ratio-var")?;
        let run = IbotRun {
            model,
            recipe,
            teacher_patch_temp: i.teacher_patch_temp.unwrap_or(0.07),
            warmup_teacher_patch_temp: i.warmup_teacher_patch_temp.unwrap_or(0.04),
        };
        if run.teacher_patch_temp <= 0.0 || run.warmup_teacher_patch_temp <= 0.0 || run.model.lambda2 < 0.0 {
            bail!("the patch temperatures must be positive and --lambda2 not negative");
        }
        Ok(run)
    }
}

pub struct IbotTrainer<B: Backend> {
    run: IbotRun,
    ibot: Ibot<B>,
    crops: MultiCrop,
    wd: Vec<f32>,
    momentum: Vec<f32>,
    buffers: Option<(B::Buf, B::Buf)>,
    /// The last step's [CLS] and patch terms, for the log.
    terms: [f64; 2],
}

impl<B: Backend> IbotTrainer<B> {
    pub fn new(be: &B, run: IbotRun, seed: u64, steps: usize, weight_decay: f32) -> Self {
        let ibot = Ibot::init(be, run.model.clone(), seed);
        Self::around(run, ibot, steps, weight_decay)
    }

    fn around(run: IbotRun, ibot: Ibot<B>, steps: usize, weight_decay: f32) -> Self {
        let (m, r) = (&run.model, &run.recipe);
        let crops = MultiCrop::dino(m.global_size(), m.local_size, m.n_local, r.global_scale, r.local_scale);
        let wd = cosine(weight_decay, r.weight_decay_end, steps);
        let momentum = cosine(r.momentum_teacher, 1.0, steps);
        IbotTrainer { run, ibot, crops, wd, momentum, buffers: None, terms: [f64::NAN; 2] }
    }

    /// Student, teacher, heads, centres and Adam's moments from a checkpoint.
    pub fn from_checkpoint(be: &B, run: IbotRun, file: &TensorFile, steps: usize, weight_decay: f32) -> Result<Self> {
        let part = |prefix: &str| -> TensorFile {
            let mut t = TensorFile::default();
            for (k, v) in &file.tensors {
                if let Some(name) = k.strip_prefix(prefix) {
                    t.tensors.insert(name.to_string(), v.clone());
                }
            }
            t
        };
        let plain = {
            let mut t = file.clone();
            let state = ["student.", "student_head.", "teacher_head.", "opt."];
            t.tensors.retain(|k, _| k != "center" && k != "center_patch" && !state.iter().any(|p| k.starts_with(p)));
            t
        };
        let m = &run.model;
        let teacher = Vit::from_file(be, m.vit.clone(), &plain).context("the teacher in the checkpoint")?;
        let student = Ibot::load_student(be, m, &part("student.")).context("the student in the checkpoint")?;
        let sh = DinoHead::from_file(be, m.head.clone(), &part("student_head.")).context("the student's head")?;
        let th = DinoHead::from_file(be, m.head.clone(), &part("teacher_head.")).context("the teacher's head")?;
        let ibot = Ibot::assemble(be, m.clone(), student, sh, teacher, th);
        be.write(&ibot.center, tensor_f32(file, "center")?);
        be.write(&ibot.center_patch, tensor_f32(file, "center_patch")?);
        let adam_step = file.metadata.get("adam_step").map(|s| s.parse()).transpose()?.unwrap_or(0);
        let mut t = Self::around(run, ibot, steps, weight_decay);
        for (opt, head) in [(&mut t.ibot.opt, ""), (&mut t.ibot.head_opt, "head.")] {
            for (moments, kind) in [(&opt.m, "m"), (&opt.v, "v")] {
                for p in &moments.list {
                    be.write(&p.buf, tensor_f32(file, &format!("opt.{kind}.{head}{}", p.name))?);
                }
            }
            opt.step = adam_step;
        }
        Ok(t)
    }
}

/// `np.linspace(warmup, fin, steps)` then `fin`, at `step`.
fn warmed_up(warmup: f32, fin: f32, steps: usize, step: usize) -> f32 {
    match steps {
        w if step < w && w > 1 => warmup + (fin - warmup) * step as f32 / (w - 1) as f32,
        _ => fin,
    }
}

impl<B: Backend> Trainer<B> for IbotTrainer<B> {
    fn step(
        &mut self,
        be: &B,
        data: &Dataset,
        indices: &[usize],
        step: usize,
        rng: &mut Rng,
        hp: &StepConfig,
    ) -> Result<f64> {
        let batch = indices.len();
        let (g, l) = upload_views(be, &self.crops, data, indices, rng, &mut self.buffers);
        let masks = self.run.model.masking.masks(self.run.model.vit.grid(), 2 * batch, rng);
        let r = &self.run.recipe;
        let s = IbotStep {
            opt: StepConfig { weight_decay: self.wd[step], ..*hp },
            teacher_temp: warmed_up(r.warmup_teacher_temp, r.teacher_temp, r.warmup_teacher_temp_steps, step),
            teacher_patch_temp: warmed_up(
                self.run.warmup_teacher_patch_temp,
                self.run.teacher_patch_temp,
                r.warmup_teacher_temp_steps,
                step,
            ),
            momentum: self.momentum[step],
            freeze_last_layer: step < r.freeze_last_layer_steps,
        };
        let [total, cls, patch] = block_on(self.ibot.step(be, &g, l.as_ref(), &masks, batch, &s));
        self.terms = [cls, patch];
        Ok(total)
    }

    fn weights(&self, be: &B) -> TensorFile {
        download(be, &self.ibot.teacher.params, "")
    }

    fn state(&self, be: &B) -> (TensorFile, u32) {
        let t = &self.ibot;
        let mut file = download(be, &t.student.params, "student.");
        for (p, prefix) in [
            (&t.student_head.params, "student_head."),
            (&t.teacher_head.params, "teacher_head."),
            (&t.opt.m, "opt.m."),
            (&t.opt.v, "opt.v."),
            (&t.head_opt.m, "opt.m.head."),
            (&t.head_opt.v, "opt.v.head."),
        ] {
            file.tensors.extend(download(be, p, prefix).tensors);
        }
        for (name, c) in [("center", &t.center), ("center_patch", &t.center_patch)] {
            let v = block_on(be.read(c));
            file.tensors.insert(name.into(), Tensor::f32(vec![v.len()], v));
        }
        (file, t.opt.step)
    }

    fn config_json(&self) -> String {
        serde_json::to_string(&self.run).expect("a config serialises")
    }

    fn model_metadata(&self) -> Vec<(String, String)> {
        vec![("vit_config".into(), serde_json::to_string(&self.run.model.vit).expect("a config serialises"))]
    }

    fn loss_terms(&self) -> Vec<(&'static str, f64)> {
        vec![("cls", self.terms[0]), ("patch", self.terms[1])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_temperature_warms_up_like_numpy_linspace() {
        assert_eq!(warmed_up(0.04, 0.07, 0, 0), 0.07);
        assert_eq!(warmed_up(0.04, 0.07, 4, 0), 0.04);
        assert!((warmed_up(0.04, 0.07, 4, 2) - 0.06).abs() < 1e-7);
        assert!((warmed_up(0.04, 0.07, 4, 3) - 0.07).abs() < 1e-7);
        assert_eq!(warmed_up(0.04, 0.07, 4, 9), 0.07);
    }
}
