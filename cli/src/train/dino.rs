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
use anyhow::{bail, Context, Result};
use patchwork_compute::augment::MultiCrop;
use patchwork_compute::heads::{DinoHead, DinoHeadConfig};
use patchwork_compute::methods::dino_train::{Dino, DinoConfig, DinoStep};
use patchwork_compute::optim::{cosine, StepConfig};
use patchwork_compute::rng::Rng;
use patchwork_compute::{block_on, Backend, Params, TensorFile, Vit, VitConfig};
use serde::{Deserialize, Serialize};

use super::{download, parse_scale, tensor_f32, Trainer};
use crate::data::{augmented_view, DataSpec, Dataset};

/// DINO's flags (the backbone's size comes from `--img-size`, `--patch-size`,
/// `--embed-dim`, `--depth`, `--heads`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DinoArgs {
    /// DINO: side of the local crops [default: 12 for fashion-mnist, 32 otherwise].
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
}

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
}

/// What `config` holds for a DINO run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DinoRun {
    pub model: DinoConfig,
    pub recipe: DinoRecipe,
}

impl DinoRun {
    /// From the flags: the backbone from the shared model flags, the rest from `d`.
    pub fn from_args(
        m: &super::mae::MaeArgs,
        d: &DinoArgs,
        spec: &DataSpec,
        in_chans: usize,
        images: usize,
        batch: usize,
    ) -> Result<Self> {
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
        };
        if !(0.0..=1.0).contains(&recipe.momentum_teacher) {
            bail!("--momentum-teacher {} must be in [0, 1]", recipe.momentum_teacher);
        }
        Ok(DinoRun { model, recipe })
    }
}

pub struct DinoTrainer<B: Backend> {
    run: DinoRun,
    dino: Dino<B>,
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
        let crops = MultiCrop::dino(m.global_size(), m.local_size, m.n_local, r.global_scale, r.local_scale);
        let wd = cosine(weight_decay, r.weight_decay_end, steps);
        let momentum = cosine(r.momentum_teacher, 1.0, steps);
        DinoTrainer { run, dino, crops, wd, momentum, buffers: None }
    }

    /// Student, teacher, heads, centre and Adam's moments from a checkpoint.
    pub fn from_checkpoint(be: &B, run: DinoRun, file: &TensorFile, steps: usize, weight_decay: f32) -> Result<Self> {
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
            t.tensors.retain(|k, _| k != "center" && !state.iter().any(|p| k.starts_with(p)));
            t
        };
        let m = &run.model;
        let teacher = Vit::from_file(be, m.vit.clone(), &plain).context("the teacher in the checkpoint")?;
        let student = Vit::from_file(be, m.vit.clone(), &part("student.")).context("the student in the checkpoint")?;
        let sh = DinoHead::from_file(be, m.head.clone(), &part("student_head.")).context("the student's head")?;
        let th = DinoHead::from_file(be, m.head.clone(), &part("teacher_head.")).context("the teacher's head")?;
        let dino = Dino::assemble(be, m.clone(), student, sh, teacher, th);
        be.write(&dino.center, tensor_f32(file, "center")?);
        let adam_step = file.metadata.get("adam_step").map(|s| s.parse()).transpose()?.unwrap_or(0);
        let mut t = Self::around(run, dino, steps, weight_decay);
        for (opt, head) in [(&mut t.dino.opt, ""), (&mut t.dino.head_opt, "head.")] {
            for (moments, kind) in [(&opt.m, "m"), (&opt.v, "v")] {
                for p in &moments.list {
                    be.write(&p.buf, tensor_f32(file, &format!("opt.{kind}.{head}{}", p.name))?);
                }
            }
            opt.step = adam_step;
        }
        Ok(t)
    }

    /// The teacher temperature at `step`.
    fn teacher_temp(&self, step: usize) -> f32 {
        let r = &self.run.recipe;
        match r.warmup_teacher_temp_steps {
            w if step < w && w > 1 => {
                r.warmup_teacher_temp + (r.teacher_temp - r.warmup_teacher_temp) * step as f32 / (w - 1) as f32
            }
            _ => r.teacher_temp,
        }
    }
}

/// The batch's multi-crop views, drawn from `rng` view by view (globals first) and written to
/// `buffers` (kept across steps, reallocated when the batch changes): the global crops
/// `[2·B, C, G, G]` and, when there are local crops, `[K·B, C, L, L]`.
pub fn upload_views<B: Backend>(
    be: &B,
    crops: &MultiCrop,
    data: &Dataset,
    indices: &[usize],
    rng: &mut Rng,
    buffers: &mut Option<(B::Buf, B::Buf)>,
) -> (B::Buf, Option<B::Buf>) {
    let (mean, std) = (&data.norm.mean, &data.norm.std);
    let (mut globals, mut locals) = (Vec::new(), Vec::new());
    for (v, aug) in crops.views().enumerate() {
        for &i in indices {
            let view = augmented_view(&data.images[i], data.channels, aug, rng);
            view.push_chw(mean, std, if v < 2 { &mut globals } else { &mut locals });
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

fn with_prefix<B: Backend>(be: &B, p: &Params<B>, prefix: &str) -> TensorFile {
    download(be, p, prefix)
}

impl<B: Backend> Trainer<B> for DinoTrainer<B> {
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
        let s = DinoStep {
            opt: StepConfig { weight_decay: self.wd[step], ..*hp },
            teacher_temp: self.teacher_temp(step),
            momentum: self.momentum[step],
            freeze_last_layer: step < self.run.recipe.freeze_last_layer_steps,
        };
        Ok(block_on(self.dino.step(be, &g, l.as_ref(), batch, &s)))
    }

    fn weights(&self, be: &B) -> TensorFile {
        download(be, &self.dino.teacher.params, "")
    }

    fn state(&self, be: &B) -> (TensorFile, u32) {
        let d = &self.dino;
        let mut file = with_prefix(be, &d.student.params, "student.");
        for (p, prefix) in [
            (&d.student_head.params, "student_head."),
            (&d.teacher_head.params, "teacher_head."),
            (&d.opt.m, "opt.m."),
            (&d.opt.v, "opt.v."),
            (&d.head_opt.m, "opt.m.head."),
            (&d.head_opt.v, "opt.v.head."),
        ] {
            file.tensors.extend(with_prefix(be, p, prefix).tensors);
        }
        let center = block_on(be.read(&d.center));
        file.tensors.insert("center".into(), patchwork_compute::Tensor::f32(vec![center.len()], center));
        (file, d.opt.step)
    }

    fn config_json(&self) -> String {
        serde_json::to_string(&self.run).expect("a config serialises")
    }

    fn model_metadata(&self) -> Vec<(String, String)> {
        vec![("vit_config".into(), serde_json::to_string(&self.run.model.vit).expect("a config serialises"))]
    }
}
