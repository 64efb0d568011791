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
//! The model file is the teacher's backbone under timm's names with its `vit_config` (the
//! teacher has no `masked_embed`, as in bytedance/ibot); the checkpoint adds the student
//! (with `masked_embed`), both heads, both centres and Adam's moments.
use serde::{Deserialize, Serialize};

use super::dino::{download_state, load_moments, teacher_part, upload_views, warmed_up, DinoRecipe};
use super::{part, tensor_f32, LocalFut, Trainer, Views};
use crate::augment::MultiCrop;
use crate::heads::DinoHead;
use crate::methods::ibot_train::{Ibot, IbotConfig, IbotStep};
use crate::optim::{cosine, StepConfig};
use crate::rng::Rng;
use crate::{Backend, TensorFile, Vit};

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
    /// iBOT on DINO's run: its backbone, head, crops and schedules, plus `masking`, λ2 and
    /// the patch temperatures (`main_ibot.py`'s defaults: 1, 0.07 after a warm-up from 0.04).
    pub fn on_dino(
        dino: super::dino::DinoRun,
        masking: crate::masking::MaskingGenerator,
        lambda2: f32,
        teacher_patch_temp: f32,
        warmup_teacher_patch_temp: f32,
    ) -> Result<Self, String> {
        let d = dino.model;
        let model = IbotConfig {
            vit: d.vit,
            head: d.head,
            local_size: d.local_size,
            n_local: d.n_local,
            student_temp: d.student_temp,
            center_momentum: d.center_momentum,
            center_momentum2: 0.9,
            lambda1: 1.0,
            lambda2,
            masking,
        };
        model.validate().map_err(|e| format!("the masking ratios: {e}"))?;
        if teacher_patch_temp <= 0.0 || warmup_teacher_patch_temp <= 0.0 || lambda2 < 0.0 {
            return Err("the patch temperatures must be positive and λ2 not negative".into());
        }
        Ok(IbotRun { model, recipe: dino.recipe, teacher_patch_temp, warmup_teacher_patch_temp })
    }
}

pub struct IbotTrainer<B: Backend> {
    run: IbotRun,
    pub ibot: Ibot<B>,
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
        let crops = r.crops(m.global_size(), m.local_size, m.n_local);
        let wd = cosine(weight_decay, r.weight_decay_end, steps);
        let momentum = cosine(r.momentum_teacher, 1.0, steps);
        IbotTrainer { run, ibot, crops, wd, momentum, buffers: None, terms: [f64::NAN; 2] }
    }

    /// Student, teacher, heads, centres and Adam's moments from a checkpoint.
    pub fn from_checkpoint(
        be: &B,
        run: IbotRun,
        file: &TensorFile,
        steps: usize,
        weight_decay: f32,
    ) -> Result<Self, String> {
        let m = &run.model;
        let err = |what: &'static str| move |e: crate::WeightsError| format!("{what} in the checkpoint: {e}");
        let plain = teacher_part(file, &["center", "center_patch"]);
        let teacher = Vit::from_file(be, m.vit.clone(), &plain).map_err(err("the teacher"))?;
        let student = Ibot::load_student(be, m, &part(file, "student.")).map_err(err("the student"))?;
        let sh =
            DinoHead::from_file(be, m.head.clone(), &part(file, "student_head.")).map_err(err("the student's head"))?;
        let th =
            DinoHead::from_file(be, m.head.clone(), &part(file, "teacher_head.")).map_err(err("the teacher's head"))?;
        let ibot = Ibot::assemble(be, m.clone(), student, sh, teacher, th);
        be.write(&ibot.center, tensor_f32(file, "center")?);
        be.write(&ibot.center_patch, tensor_f32(file, "center_patch")?);
        let mut t = Self::around(run, ibot, steps, weight_decay);
        let i = &mut t.ibot;
        load_moments(be, [&mut i.opt, &mut i.head_opt], file)?;
        Ok(t)
    }
}

impl<B: Backend> Trainer<B> for IbotTrainer<B> {
    fn step<'a>(
        &'a mut self,
        be: &'a B,
        data: &'a dyn Views,
        indices: &'a [usize],
        step: usize,
        rng: &'a mut Rng,
        hp: StepConfig,
    ) -> LocalFut<'a, f64> {
        Box::pin(async move {
            let batch = indices.len();
            let (g, l) =
                upload_views(be, &self.crops, data, indices, self.run.recipe.backdrop_per_view, rng, &mut self.buffers);
            let masks = self.run.model.masking.masks(self.run.model.vit.grid(), 2 * batch, rng);
            let r = &self.run.recipe;
            let s = IbotStep {
                opt: StepConfig { weight_decay: self.wd[step], ..hp },
                teacher_temp: r.teacher_temp(step),
                teacher_patch_temp: warmed_up(
                    self.run.warmup_teacher_patch_temp,
                    self.run.teacher_patch_temp,
                    r.warmup_teacher_temp_steps,
                    step,
                ),
                momentum: self.momentum[step],
                freeze_last_layer: step < r.freeze_last_layer_steps,
            };
            let [total, cls, patch] = self.ibot.step(be, &g, l.as_ref(), &masks, batch, &s).await;
            self.terms = [cls, patch];
            total
        })
    }

    fn weights<'a>(&'a self, be: &'a B) -> LocalFut<'a, TensorFile> {
        Box::pin(self.ibot.teacher.params.download(be, ""))
    }

    fn state<'a>(&'a self, be: &'a B) -> LocalFut<'a, (TensorFile, u32)> {
        Box::pin(async move {
            let t = &self.ibot;
            let heads = [&t.student_head.params, &t.teacher_head.params];
            let centres = [("center", &t.center), ("center_patch", &t.center_patch)];
            let file = download_state(be, &t.student.params, heads, [&t.opt, &t.head_opt], &centres);
            (file.await, t.opt.step)
        })
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
