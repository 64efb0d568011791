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
use serde::{Deserialize, Serialize};

use super::{adam_step, load_into, part, tensor_f32, LocalFut, Scene, Trainer, Views};
use crate::augment::MultiCrop;
use crate::heads::DinoHead;
use crate::methods::dino_train::{Dino, DinoConfig, DinoStep};
use crate::optim::{cosine, AdamWState, StepConfig};
use crate::rng::Rng;
use crate::{Backend, Params, Tensor, TensorFile, Vit};

/// The schedule-side settings a DINO run keeps in its checkpoint and model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DinoRecipe {
    pub global_scale: (f32, f32),
    pub local_scale: (f32, f32),
    pub teacher_temp: f32,
    pub warmup_teacher_temp: f32,
    pub warmup_teacher_temp_steps: usize,
    pub momentum_teacher: f32,
    pub weight_decay_end: f32,
    pub freeze_last_layer_steps: usize,
    /// The blurs' σ range in pixels (DINO's (0.1, 2.0); checkpoints from before this field
    /// read as that, which they were trained with).
    #[serde(default = "legacy_blur_sigma")]
    pub blur_sigma: (f32, f32),
    /// Cut-outs: every view gets its own backdrop, so only the object is common to an
    /// image's views (default: its views share one backdrop, drawn afresh each step).
    #[serde(default)]
    pub backdrop_per_view: bool,
    /// No colour jitter, grayscale or solarisation in any view: crops, flips and blurs only.
    #[serde(default)]
    pub no_color_aug: bool,
}

fn legacy_blur_sigma() -> (f32, f32) {
    crate::augment::DINO_BLUR_SIGMA
}

impl DinoRecipe {
    /// `main_dino.py`'s defaults, with the last layer frozen for `freeze_last_layer_steps`.
    pub fn defaults(freeze_last_layer_steps: usize) -> Self {
        DinoRecipe {
            global_scale: (0.4, 1.0),
            local_scale: (0.05, 0.4),
            teacher_temp: 0.04,
            warmup_teacher_temp: 0.04,
            warmup_teacher_temp_steps: 0,
            momentum_teacher: 0.996,
            weight_decay_end: 0.4,
            freeze_last_layer_steps,
            blur_sigma: crate::augment::DINO_BLUR_SIGMA,
            backdrop_per_view: false,
            no_color_aug: false,
        }
    }

    /// The teacher temperature at `step`: `np.linspace(warmup, temp, warmup_steps)`, then `temp`.
    pub fn teacher_temp(&self, step: usize) -> f32 {
        warmed_up(self.warmup_teacher_temp, self.teacher_temp, self.warmup_teacher_temp_steps, step)
    }

    pub fn crops(&self, global_size: usize, local_size: usize, n_local: usize) -> MultiCrop {
        let mut crops =
            MultiCrop::dino(global_size, local_size, n_local, self.global_scale, self.local_scale, self.blur_sigma);
        if self.no_color_aug {
            for a in crops.global.iter_mut().chain([&mut crops.local]) {
                (a.color_jitter, a.grayscale, a.solarize) = (0.0, 0.0, 0.0);
            }
        }
        crops
    }
}

/// `np.linspace(warmup, fin, steps)` then `fin`, at `step`.
pub fn warmed_up(warmup: f32, fin: f32, steps: usize, step: usize) -> f32 {
    match steps {
        w if step < w && w > 1 => warmup + (fin - warmup) * step as f32 / (w - 1) as f32,
        _ => fin,
    }
}

/// What `config` holds for a DINO run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DinoRun {
    pub model: DinoConfig,
    pub recipe: DinoRecipe,
}

/// The batch's multi-crop views, drawn from `rng` view by view (globals first) and written to
/// `buffers` (kept across steps, reallocated when the batch changes): the global crops
/// `[2·B, C, G, G]` and, when there are local crops, `[K·B, C, L, L]`. With `per_view`
/// each view of a cut-out gets its own backdrop.
pub fn upload_views<B: Backend>(
    be: &B,
    crops: &MultiCrop,
    data: &dyn Views,
    indices: &[usize],
    per_view: bool,
    rng: &mut Rng,
    buffers: &mut Option<(B::Buf, B::Buf)>,
) -> (B::Buf, Option<B::Buf>) {
    let norm = data.norm();
    let (mut globals, mut locals) = (Vec::new(), Vec::new());
    // All views of an image in this step show one scene (a cut-out's backdrop, drawn afresh
    // every step). Peeked, so data sets without scenes draw exactly as before.
    let scene = rng.clone().next_u64();
    for (v, aug) in crops.views().enumerate() {
        for &i in indices {
            let seed = scene ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let view = data.view_in(i, aug, Scene { seed, shared_backdrop: !per_view }, rng);
            view.push_chw(&norm.mean, &norm.std, if v < 2 { &mut globals } else { &mut locals });
        }
    }
    let (g, l) = buffers.get_or_insert_with(|| (be.alloc(globals.len()), be.alloc(locals.len().max(1))));
    if be.len(g) != globals.len() || be.len(l) != locals.len().max(1) {
        (*g, *l) = (be.alloc(globals.len()), be.alloc(locals.len().max(1)));
    }
    be.write(g, &globals);
    if locals.is_empty() {
        return (g.clone(), None);
    }
    be.write(l, &locals);
    (g.clone(), Some(l.clone()))
}

/// The checkpoint's teacher backbone: every tensor not under a state prefix.
pub fn teacher_part(file: &TensorFile, centres: &[&str]) -> TensorFile {
    let mut t = file.clone();
    let state = ["student.", "student_head.", "teacher_head.", "opt."];
    t.tensors.retain(|k, _| !centres.contains(&k.as_str()) && !state.iter().any(|p| k.starts_with(p)));
    t
}

/// Adam's moments of the backbone and the head, `opt.{m,v}.` and `opt.{m,v}.head.`.
pub fn load_moments<B: Backend>(be: &B, opts: [&mut AdamWState<B>; 2], file: &TensorFile) -> Result<(), String> {
    let step = adam_step(file)?;
    for (opt, head) in opts.into_iter().zip(["", "head."]) {
        load_into(be, &opt.m, file, &format!("opt.m.{head}"))?;
        load_into(be, &opt.v, file, &format!("opt.v.{head}"))?;
        opt.step = step;
    }
    Ok(())
}

/// The student, both heads and Adam's moments under the checkpoint's prefixes.
pub async fn download_state<B: Backend>(
    be: &B,
    student: &Params<B>,
    heads: [&Params<B>; 2],
    opts: [&AdamWState<B>; 2],
    centres: &[(&str, &B::Buf)],
) -> TensorFile {
    let mut file = student.download(be, "student.").await;
    for (p, prefix) in [
        (heads[0], "student_head."),
        (heads[1], "teacher_head."),
        (&opts[0].m, "opt.m."),
        (&opts[0].v, "opt.v."),
        (&opts[1].m, "opt.m.head."),
        (&opts[1].v, "opt.v.head."),
    ] {
        file.tensors.extend(p.download(be, prefix).await.tensors);
    }
    for (name, c) in centres {
        let v = be.read(c).await;
        file.tensors.insert(name.to_string(), Tensor::f32(vec![v.len()], v));
    }
    file
}

pub struct DinoTrainer<B: Backend> {
    run: DinoRun,
    pub dino: Dino<B>,
    crops: MultiCrop,
    wd: Vec<f32>,
    momentum: Vec<f32>,
    buffers: Option<(B::Buf, B::Buf)>,
}

impl<B: Backend> DinoTrainer<B> {
    pub fn new(be: &B, run: DinoRun, seed: u64, steps: usize, weight_decay: f32) -> Self {
        let dino = Dino::init(be, run.model.clone(), seed);
        Self::around(run, dino, steps, weight_decay)
    }

    fn around(run: DinoRun, dino: Dino<B>, steps: usize, weight_decay: f32) -> Self {
        let (m, r) = (&run.model, &run.recipe);
        let crops = r.crops(m.global_size(), m.local_size, m.n_local);
        let wd = cosine(weight_decay, r.weight_decay_end, steps);
        let momentum = cosine(r.momentum_teacher, 1.0, steps);
        DinoTrainer { run, dino, crops, wd, momentum, buffers: None }
    }

    /// Student, teacher, heads, centre and Adam's moments from a checkpoint.
    pub fn from_checkpoint(
        be: &B,
        run: DinoRun,
        file: &TensorFile,
        steps: usize,
        weight_decay: f32,
    ) -> Result<Self, String> {
        let m = &run.model;
        let err = |what: &'static str| move |e: crate::WeightsError| format!("{what} in the checkpoint: {e}");
        let teacher =
            Vit::from_file(be, m.vit.clone(), &teacher_part(file, &["center"])).map_err(err("the teacher"))?;
        let student = Vit::from_file(be, m.vit.clone(), &part(file, "student.")).map_err(err("the student"))?;
        let sh =
            DinoHead::from_file(be, m.head.clone(), &part(file, "student_head.")).map_err(err("the student's head"))?;
        let th =
            DinoHead::from_file(be, m.head.clone(), &part(file, "teacher_head.")).map_err(err("the teacher's head"))?;
        let dino = Dino::assemble(be, m.clone(), student, sh, teacher, th);
        be.write(&dino.center, tensor_f32(file, "center")?);
        let mut t = Self::around(run, dino, steps, weight_decay);
        let d = &mut t.dino;
        load_moments(be, [&mut d.opt, &mut d.head_opt], file)?;
        Ok(t)
    }
}

impl<B: Backend> Trainer<B> for DinoTrainer<B> {
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
            let s = DinoStep {
                opt: StepConfig { weight_decay: self.wd[step], ..hp },
                teacher_temp: self.run.recipe.teacher_temp(step),
                momentum: self.momentum[step],
                freeze_last_layer: step < self.run.recipe.freeze_last_layer_steps,
            };
            self.dino.step(be, &g, l.as_ref(), batch, &s).await
        })
    }

    fn weights<'a>(&'a self, be: &'a B) -> LocalFut<'a, TensorFile> {
        Box::pin(self.dino.teacher.params.download(be, ""))
    }

    fn state<'a>(&'a self, be: &'a B) -> LocalFut<'a, (TensorFile, u32)> {
        Box::pin(async move {
            let d = &self.dino;
            let heads = [&d.student_head.params, &d.teacher_head.params];
            let centres = [("center", &d.center)];
            let file = download_state(be, &d.student.params, heads, [&d.opt, &d.head_opt], &centres);
            (file.await, d.opt.step)
        })
    }

    fn config_json(&self) -> String {
        serde_json::to_string(&self.run).expect("a config serialises")
    }

    fn model_metadata(&self) -> Vec<(String, String)> {
        vec![("vit_config".into(), serde_json::to_string(&self.run.model.vit).expect("a config serialises"))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_warms_up_like_numpy_linspace() {
        assert_eq!(warmed_up(0.04, 0.07, 0, 0), 0.07);
        assert_eq!(warmed_up(0.04, 0.07, 4, 0), 0.04);
        assert!((warmed_up(0.04, 0.07, 4, 2) - 0.06).abs() < 1e-7);
        assert!((warmed_up(0.04, 0.07, 4, 3) - 0.07).abs() < 1e-7);
        assert_eq!(warmed_up(0.04, 0.07, 4, 9), 0.07);
    }

    /// DINO's views carry its colour augmentations unless the recipe turns them off; crops,
    /// flips and blurs stay; recipes saved before the switches read as the defaults.
    #[test]
    fn colour_augmentations_can_be_turned_off() {
        let on = DinoRecipe::defaults(1).crops(32, 16, 2);
        assert!(on.views().all(|a| a.color_jitter > 0.0 && a.grayscale > 0.0));
        assert!(on.views().any(|a| a.solarize > 0.0));
        let off = DinoRecipe { no_color_aug: true, ..DinoRecipe::defaults(1) }.crops(32, 16, 2);
        for (a, b) in off.views().zip(on.views()) {
            assert_eq!((a.color_jitter, a.grayscale, a.solarize), (0.0, 0.0, 0.0));
            assert_eq!(
                (a.size, a.scale, a.flip, a.blur, a.blur_sigma),
                (b.size, b.scale, b.flip, b.blur, b.blur_sigma)
            );
        }
        let mut old = serde_json::to_value(DinoRecipe::defaults(1)).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("no_color_aug");
        o.remove("backdrop_per_view");
        assert_eq!(serde_json::from_value::<DinoRecipe>(old).unwrap(), DinoRecipe::defaults(1));
    }
}
