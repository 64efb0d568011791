//! iBOT's training step (Zhou et al. 2022), as bytedance/ibot `main_ibot.py`'s
//! `train_one_epoch`, over the parts DINO uses (ViT, DINO head shared by [CLS] and patch
//! tokens, momentum teacher, AdamW) plus a masked student:
//! ```text
//! t_cls, t_patch = teacher_head(teacher(global_crops))           # 2 views, unmasked, no gradient
//! s_cls, s_patch = student_head(student(global_crops, masks))    # masked patches → masked_embed
//! s_local = student_head(student(local_crops))[CLS]              # unmasked, [CLS] only
//! loss = λ1 · DINO([CLS] of other views) + λ2 · Σ mask·CE(t_patch, s_patch) / Σ mask
//! loss.backward(); clip_gradients(student, 3.0); freeze last layer for a while
//! adamw.step(lr[step], wd[step]); center, center2 ← EMA                # [CLS] and patch centres
//! teacher ← m[step]·teacher + (1−m[step])·student                  # common names: the teacher
//!                                                                  # has no masked_embed
//! ```
//! Views are laid out view-major as in DINO; `masks: [2·B, L]` is each global view's mask
//! (row `v·B + b`), drawn on the CPU by [`crate::masking::MaskingGenerator`]. iBOT's default
//! shared head is one [`DinoHead`]: its `last_layer` maps the patch tokens too (so
//! `patch_out_dim == out_dim`).
//!
//! Only masked patches enter the patch term, so the student's head runs on those alone,
//! packed per view-image into as many rows as the most masked one has ([`Packing`]; the
//! padding rows' mask is 0, which leaves the loss as it is). The teacher's head still maps
//! every patch token: the patch centre is their mean.
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::backend::{Backend, NO_ROW};
use crate::heads::{DinoHead, DinoHeadConfig};
use crate::masking::MaskingGenerator;
use crate::methods::dino::{IbotForward, IbotLoss, IbotLossConfig, IbotOutputs};
use crate::methods::dino_train::DinoConfig;
use crate::optim::{AdamWState, StepConfig};
use crate::params::Params;
use crate::rng::Rng;
use crate::teacher::{copy_of, ema_update};
use crate::vit::{PatchMask, Vit, VitConfig, MASKED_EMBED};
use crate::weights::{TensorFile, WeightsError};

/// The model side of an iBOT run (schedules are per step, in [`IbotStep`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IbotConfig {
    /// The backbone; its `img_size` is the global crops' size.
    pub vit: VitConfig,
    /// The shared head of [CLS] and patch tokens.
    pub head: DinoHeadConfig,
    pub local_size: usize,
    pub n_local: usize,
    pub student_temp: f32,
    pub center_momentum: f32,
    pub center_momentum2: f32,
    /// Weights of the [CLS] and the patch (MIM) terms.
    pub lambda1: f32,
    pub lambda2: f32,
    /// How the global crops' masks are drawn.
    pub masking: MaskingGenerator,
}

impl IbotConfig {
    /// The DINO part of the config (backbone, head, crops).
    pub fn dino(&self) -> DinoConfig {
        DinoConfig {
            vit: self.vit.clone(),
            head: self.head.clone(),
            local_size: self.local_size,
            n_local: self.n_local,
            student_temp: self.student_temp,
            center_momentum: self.center_momentum,
        }
    }

    pub fn validate(&self) -> Result<(), WeightsError> {
        self.dino().validate()?;
        self.masking.validate()
    }

    pub fn global_size(&self) -> usize {
        self.vit.img_size[0]
    }

    /// The student's parameters: the backbone's timm names, then `masked_embed`.
    pub fn student_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = self.vit.param_shapes();
        v.push((MASKED_EMBED.into(), vec![1, self.vit.embed_dim]));
        v
    }

    fn loss(&self, teacher_temp: f32, teacher_temp2: f32) -> IbotLoss {
        IbotLoss {
            cfg: IbotLossConfig {
                out_dim: self.head.out_dim,
                patch_out_dim: self.head.out_dim,
                ngcrops: 2,
                nlcrops: self.n_local,
                student_temp: self.student_temp,
                teacher_temp,
                teacher_temp2,
                center_momentum: self.center_momentum,
                center_momentum2: self.center_momentum2,
                lambda1: self.lambda1,
                lambda2: self.lambda2,
            },
        }
    }
}

/// One step's schedule values.
#[derive(Clone, Copy, Debug)]
pub struct IbotStep {
    pub opt: StepConfig,
    /// The [CLS] and the patch teacher temperatures.
    pub teacher_temp: f32,
    pub teacher_patch_temp: f32,
    pub momentum: f32,
    pub freeze_last_layer: bool,
}

pub struct Ibot<B: Backend> {
    pub cfg: IbotConfig,
    /// The backbone with `masked_embed`, last.
    pub student: Vit<B>,
    pub student_head: DinoHead<B>,
    /// The backbone alone (timm's names).
    pub teacher: Vit<B>,
    pub teacher_head: DinoHead<B>,
    /// `[out_dim]` and `[patch_out_dim]`.
    pub center: B::Buf,
    pub center_patch: B::Buf,
    pub grads: Params<B>,
    pub head_grads: Params<B>,
    pub opt: AdamWState<B>,
    pub head_opt: AdamWState<B>,
}

impl<B: Backend> Ibot<B> {
    /// Fresh student (timm init, zero `masked_embed`, DINO head init) and a teacher copied
    /// from it (`load_state_dict(strict=False)`: all but `masked_embed`).
    pub fn init(be: &B, cfg: IbotConfig, seed: u64) -> Self {
        let student = Vit::init(be, cfg.vit.clone(), seed).with_masked_embed(be);
        let student_head = DinoHead::new(be, cfg.head.clone(), &mut Rng::new(seed ^ 0x4845_4144));
        let teacher = Vit { cfg: cfg.vit.clone(), params: copy_of(be, &backbone_only(&student.params)) };
        let teacher_head = DinoHead { cfg: cfg.head.clone(), params: copy_of(be, &student_head.params) };
        Self::assemble(be, cfg, student, student_head, teacher, teacher_head)
    }

    /// The student (backbone and `masked_embed`, [`IbotConfig::student_shapes`]) from a file.
    pub fn load_student(be: &B, cfg: &IbotConfig, file: &TensorFile) -> Result<Vit<B>, WeightsError> {
        Ok(Vit { cfg: cfg.vit.clone(), params: Params::load(be, &cfg.student_shapes(), &[], file)? })
    }

    /// From four parameter sets (a checkpoint); centres and optimiser moments start at zero.
    pub fn assemble(
        be: &B,
        cfg: IbotConfig,
        student: Vit<B>,
        student_head: DinoHead<B>,
        teacher: Vit<B>,
        teacher_head: DinoHead<B>,
    ) -> Self {
        assert!(student.params.try_get(MASKED_EMBED).is_some(), "iBOT's student has a masked_embed");
        let (center, center_patch) = (be.alloc(cfg.head.out_dim), be.alloc(cfg.head.out_dim));
        let (grads, head_grads) = (student.params.zeros_like(be), student_head.params.zeros_like(be));
        let (opt, head_opt) = (AdamWState::new(be, &student.params), AdamWState::new(be, &student_head.params));
        Ibot {
            cfg,
            student,
            student_head,
            teacher,
            teacher_head,
            center,
            center_patch,
            grads,
            head_grads,
            opt,
            head_opt,
        }
    }

    /// One step on `batch` images; returns the total, [CLS] and patch losses.
    pub async fn step(
        &mut self,
        be: &B,
        globals: &B::Buf,
        locals: Option<&B::Buf>,
        masks: &[f32],
        batch: usize,
        s: &IbotStep,
    ) -> [f64; 3] {
        let pass = self.forward_backward(be, globals, locals, masks, batch, s.teacher_temp, s.teacher_patch_temp);
        // updates: student, teacher, centres
        self.opt.update(be, &self.student.params, &self.grads, &s.opt);
        let head = &self.student_head;
        let trains = |name: &str| head.trainable(name) && !(s.freeze_last_layer && name.starts_with("last_layer."));
        self.head_opt.update_where(be, &head.params, &self.head_grads, &s.opt, trains);
        ema_update(be, &self.teacher.params, &backbone_only(&self.student.params), s.momentum);
        ema_update(be, &self.teacher_head.params, &self.student_head.params, s.momentum);
        let teacher = IbotOutputs { cls: &pass.teacher_cls, patch: &pass.teacher_patch };
        pass.loss_fn.update_center(be, teacher, &self.center, &self.center_patch, batch, self.cfg.vit.patches());
        pass.loss_fn.loss(be, &pass.loss).await
    }

    /// The loss, with the student's gradients left in `grads` and `head_grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward(
        &self,
        be: &B,
        globals: &B::Buf,
        locals: Option<&B::Buf>,
        masks: &[f32],
        batch: usize,
        teacher_temp: f32,
        teacher_patch_temp: f32,
    ) -> IbotPass<B> {
        let (cfg, d, out, l) = (&self.cfg, self.cfg.vit.embed_dim, self.cfg.head.out_dim, self.cfg.vit.patches());
        let (g_rows, l_rows) = (2 * batch, cfg.n_local * batch);
        let loss_fn = cfg.loss(teacher_temp, teacher_patch_temp);

        // teacher: global crops, unmasked; the shared head on [CLS] and on every patch token
        let t_saved = Backbone::forward(&self.teacher, be, globals, g_rows);
        let teacher_cls = self.teacher_head.forward(be, self.teacher.pooled(&t_saved), g_rows).output;
        let teacher_patch = self.teacher_head.forward(be, self.teacher.tokens(&t_saved), g_rows * l).output;

        // student: global crops masked, then local crops whole at their own grid ([CLS] only)
        let mask = PatchMask::new(be, masks);
        let s_global = self.student.views(be, self.student.forward_masked(be, globals, g_rows, Some(&mask)));
        let feats = be.alloc((g_rows + l_rows) * d);
        be.copy(self.student.pooled(&s_global), 0, &feats, 0, g_rows * d);
        let local = match (locals, cfg.n_local) {
            (Some(x), n) if n > 0 => {
                let at = self.student.at_size(be, [cfg.local_size; 2]).expect("validated local size");
                let saved = Backbone::forward(&at.vit, be, x, l_rows);
                be.copy(at.vit.pooled(&saved), 0, &feats, g_rows * d, l_rows * d);
                Some((at, saved))
            }
            _ => None,
        };
        let s_cls = self.student_head.forward(be, &feats, g_rows + l_rows);
        // the patch term over the masked patches, packed
        let pack = Packing::new(masks, g_rows, l);
        let (rows, take) = (g_rows * pack.slots, be.upload_u32(&pack.take));
        let s_tokens = be.alloc(rows * d);
        be.gather_rows(self.student.tokens(&s_global), &take, None, &s_tokens, rows, d);
        let s_patch = self.student_head.forward(be, &s_tokens, rows);
        let t_patch = be.alloc(rows * out);
        be.gather_rows(&teacher_patch, &take, None, &t_patch, rows, out);
        let student = IbotOutputs { cls: &s_cls.output, patch: &s_patch.output };
        let teacher = IbotOutputs { cls: &teacher_cls, patch: &t_patch };
        let loss =
            loss_fn.forward(be, student, teacher, &pack.mask, &self.center, &self.center_patch, batch, pack.slots);

        // backward
        self.grads.fill(be, 0.0);
        self.head_grads.fill(be, 0.0);
        let (dcls, dpatch) = (be.alloc((g_rows + l_rows) * out), be.alloc(rows * out));
        loss_fn.backward(be, &loss, &dcls, &dpatch);
        let (dfeats, dpacked) = (be.alloc((g_rows + l_rows) * d), be.alloc(rows * d));
        self.student_head.backward(be, &s_cls, &dcls, &self.head_grads, Some(&dfeats));
        self.student_head.backward(be, &s_patch, &dpatch, &self.head_grads, Some(&dpacked));
        let dtokens = be.alloc(g_rows * l * d);
        be.gather_rows(&dpacked, &be.upload_u32(&pack.put), None, &dtokens, g_rows * l, d);
        let dg = be.alloc(g_rows * d);
        be.copy(&dfeats, 0, &dg, 0, g_rows * d);
        Backbone::backward(&self.student, be, &s_global, Some(&dg), Some(&dtokens), &self.grads, None);
        if let Some((at, saved)) = &local {
            let dl = be.alloc(l_rows * d);
            be.copy(&dfeats, g_rows * d, &dl, 0, l_rows * d);
            let view_grads = at.grads(be, &self.grads);
            Backbone::backward(&at.vit, be, saved, Some(&dl), None, &view_grads, None);
            at.fold_grads(be, &view_grads, &self.grads);
        }
        IbotPass { loss, loss_fn, teacher_cls, teacher_patch }
    }
}

/// The masked patches of each of `views` images of `l` patches, packed into `slots` rows
/// per image (the largest masked count, at least 1).
struct Packing {
    slots: usize,
    /// `[views · slots]` u32: the patch row (`v·l + t`) each packed row takes, or [`NO_ROW`].
    take: Vec<u32>,
    /// `[views · slots]`: 1 for a masked patch, 0 for padding.
    mask: Vec<f32>,
    /// `[views · l]` u32: the packed row of each patch, [`NO_ROW`] for the unmasked ones.
    put: Vec<u32>,
}

impl Packing {
    fn new(masks: &[f32], views: usize, l: usize) -> Self {
        assert_eq!(masks.len(), views * l, "masks are [2 · batch, patches]");
        let counts = masks.chunks(l).map(|m| m.iter().filter(|v| **v != 0.0).count());
        let slots = counts.max().unwrap_or(0).max(1);
        let (mut take, mut mask, mut put) =
            (vec![NO_ROW; views * slots], vec![0.0; views * slots], vec![NO_ROW; views * l]);
        for v in 0..views {
            let masked = (0..l).filter(|t| masks[v * l + t] != 0.0);
            for (slot, t) in masked.enumerate() {
                take[v * slots + slot] = (v * l + t) as u32;
                mask[v * slots + slot] = 1.0;
                put[v * l + t] = (v * slots + slot) as u32;
            }
        }
        Packing { slots, take, mask, put }
    }
}

/// The student's backbone parameters without `masked_embed` (shared buffers): what the
/// teacher has, and follows.
fn backbone_only<B: Backend>(student: &Params<B>) -> Params<B> {
    let mut out = Params::new();
    for p in student.list.iter().filter(|p| p.name != MASKED_EMBED) {
        out.push(p.name.clone(), p.shape.clone(), p.buf.clone());
    }
    out
}

/// What [`Ibot::forward_backward`] leaves: the loss terms, and the teacher's outputs for
/// the centres' update.
pub struct IbotPass<B: Backend> {
    pub loss: IbotForward<B>,
    pub loss_fn: IbotLoss,
    pub teacher_cls: B::Buf,
    pub teacher_patch: B::Buf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::ops::testing::*;

    fn micro() -> IbotConfig {
        IbotConfig {
            vit: VitConfig {
                img_size: [8, 8],
                patch_size: 4,
                in_chans: 1,
                embed_dim: 8,
                depth: 1,
                num_heads: 2,
                mlp_ratio: 2.0,
                num_classes: 0,
                ..VitConfig::default()
            },
            head: DinoHeadConfig {
                in_dim: 8,
                out_dim: 6,
                hidden_dim: 8,
                bottleneck_dim: 4,
                nlayers: 3,
                norm_last_layer: false,
            },
            local_size: 4,
            n_local: 2,
            student_temp: 0.1,
            center_momentum: 0.9,
            center_momentum2: 0.9,
            lambda1: 1.0,
            lambda2: 0.7,
            masking: MaskingGenerator::default(),
        }
    }

    fn randomise<B: Backend>(be: &B, p: &Params<B>, seed: u64) {
        for (i, t) in p.list.iter().enumerate() {
            let n: usize = t.shape.iter().product();
            be.write(&t.buf, &randn(n, seed + i as u64).iter().map(|x| x * 0.5).collect::<Vec<_>>());
        }
    }

    /// `[2·2, 4]` masks: some patches of three views, none of the fourth.
    const MASKS: [f32; 16] = [1., 0., 0., 1., 0., 1., 1., 1., 0., 0., 0., 0., 1., 0., 0., 0.];

    /// The student's gradients (masked backbone with `masked_embed`, the local view, the
    /// shared head through both token kinds) against finite differences of the loss.
    #[test]
    fn ibot_gradients_match_finite_differences() {
        let be = Cpu;
        let ibot = Ibot::init(&be, micro(), 0);
        randomise(&be, &ibot.student.params, 10);
        randomise(&be, &ibot.student_head.params, 50);
        randomise(&be, &ibot.teacher.params, 90);
        randomise(&be, &ibot.teacher_head.params, 130);
        be.write(&ibot.center, &randn(6, 7));
        be.write(&ibot.center_patch, &randn(6, 8));
        let batch = 2;
        let (g, l) = (randn(2 * batch * 64, 1), randn(2 * batch * 16, 2));
        let (gb, lb) = (be.upload(&g), be.upload(&l));
        let loss_of = |ibot: &Ibot<Cpu>| {
            let pass = ibot.forward_backward(&be, &gb, Some(&lb), &MASKS, batch, 0.07, 0.05);
            let [total, cls, patch] = crate::block_on(pass.loss_fn.loss(&be, &pass.loss));
            assert!(cls > 0.0 && patch > 0.0);
            total
        };
        loss_of(&ibot);
        let read = |p: &Params<Cpu>| p.list.iter().map(|t| crate::block_on(be.read(&t.buf))).collect::<Vec<_>>();
        let (grads, head_grads) = (read(&ibot.grads), read(&ibot.head_grads));
        assert!(grads.last().unwrap().iter().any(|v| *v != 0.0), "masked_embed gets a gradient");
        for (params, analytic) in [(&ibot.student.params, &grads), (&ibot.student_head.params, &head_grads)] {
            for (t, g) in params.list.iter().zip(analytic) {
                let w0 = crate::block_on(be.read(&t.buf));
                let fd = finite_diff(&w0, 1e-2, |w| {
                    be.write(&t.buf, w);
                    loss_of(&ibot)
                });
                be.write(&t.buf, &w0);
                assert_close_f64(&format!("d {}", t.name), g, &fd, 2e-3, 3e-2);
            }
        }
    }

    /// The GPU records the same step as the CPU reference: the losses, every student
    /// gradient, and after an update the teacher and both centres.
    #[test]
    fn gpu_ibot_step_matches_the_cpu() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        fn run<B: Backend>(be: &B) -> (Vec<f64>, Vec<Vec<f32>>) {
            let mut ibot = Ibot::init(be, micro(), 0);
            randomise(be, &ibot.student.params, 10);
            randomise(be, &ibot.teacher.params, 90);
            let batch = 2;
            let (gb, lb) = (be.upload(&randn(2 * batch * 64, 1)), be.upload(&randn(2 * batch * 16, 2)));
            let pass = ibot.forward_backward(be, &gb, Some(&lb), &MASKS, batch, 0.07, 0.05);
            let mut losses = crate::block_on(pass.loss_fn.loss(be, &pass.loss)).to_vec();
            let mut out: Vec<Vec<f32>> = ibot.grads.list.iter().map(|t| crate::block_on(be.read(&t.buf))).collect();
            let s = IbotStep {
                opt: StepConfig { lr: 1e-2, clip: Some(3.0), clip_per_param: true, ..StepConfig::default() },
                teacher_temp: 0.04,
                teacher_patch_temp: 0.07,
                momentum: 0.9,
                freeze_last_layer: false,
            };
            losses.extend(crate::block_on(ibot.step(be, &gb, Some(&lb), &MASKS, batch, &s)));
            out.extend(ibot.teacher.params.list.iter().map(|t| crate::block_on(be.read(&t.buf))));
            out.extend([&ibot.center, &ibot.center_patch].map(|c| crate::block_on(be.read(c))));
            (losses, out)
        }
        let ((lc, want), (lg, got)) = (run(&Cpu), run(&gpu));
        for (a, b) in lc.iter().zip(&lg) {
            assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "losses: CPU {lc:?} vs GPU {lg:?}");
        }
        let names = micro().student_shapes().into_iter().map(|(n, _)| format!("d {n}"));
        let names = names.chain(micro().vit.param_shapes().into_iter().map(|(n, _)| format!("teacher {n}")));
        let names: Vec<String> = names.chain(["center".into(), "center_patch".into()]).collect();
        assert_eq!(names.len(), want.len());
        for ((name, w), g) in names.iter().zip(&want).zip(&got) {
            // Adam turns a near-zero gradient's rounding into a step of up to lr; the
            // teacher takes (1 − m) of it
            let atol = if name.starts_with("teacher") { 0.1 * 1e-2 * 2.0 } else { 1e-4 };
            assert_close(name, g, w, atol, 1e-3);
        }
    }

    #[test]
    fn packing_keeps_each_images_masked_patches_in_order() {
        let p = Packing::new(&MASKS, 4, 4);
        assert_eq!(p.slots, 3);
        let n = NO_ROW;
        assert_eq!(p.take, [0, 3, n, 5, 6, 7, n, n, n, 12, n, n]);
        assert_eq!(p.mask, [1., 1., 0., 1., 1., 1., 0., 0., 0., 1., 0., 0.]);
        assert_eq!(p.put, [0, n, n, 1, n, 3, 4, 5, n, n, n, n, 9, n, n, n]);
        let none = Packing::new(&[0.0; 8], 2, 4);
        assert_eq!((none.slots, none.take, none.mask), (1, vec![n, n], vec![0.0, 0.0]));
    }

    /// The packed patch term is iBOTLoss over every patch row with the masks as weights.
    #[test]
    fn packed_patch_loss_equals_the_loss_over_every_patch() {
        let be = Cpu;
        let cfg = IbotConfig { n_local: 0, ..micro() };
        let ibot = Ibot::init(&be, cfg.clone(), 5);
        randomise(&be, &ibot.student.params, 10);
        randomise(&be, &ibot.student_head.params, 50);
        randomise(&be, &ibot.teacher.params, 90);
        be.write(&ibot.center_patch, &randn(6, 8));
        let (batch, l) = (2, 4);
        let gb = be.upload(&randn(2 * batch * 64, 1));
        let pass = ibot.forward_backward(&be, &gb, None, &MASKS, batch, 0.07, 0.05);
        let packed = crate::block_on(pass.loss_fn.loss(&be, &pass.loss));

        let t = Backbone::forward(&ibot.teacher, &be, &gb, 2 * batch);
        let t_patch = ibot.teacher_head.forward(&be, ibot.teacher.tokens(&t), 2 * batch * l).output;
        let t_cls = ibot.teacher_head.forward(&be, ibot.teacher.pooled(&t), 2 * batch).output;
        let mask = PatchMask::new(&be, &MASKS);
        let s = ibot.student.views(&be, ibot.student.forward_masked(&be, &gb, 2 * batch, Some(&mask)));
        let s_patch = ibot.student_head.forward(&be, ibot.student.tokens(&s), 2 * batch * l).output;
        let s_cls = ibot.student_head.forward(&be, ibot.student.pooled(&s), 2 * batch).output;
        let loss_fn = cfg.loss(0.07, 0.05);
        let (student, teacher) =
            (IbotOutputs { cls: &s_cls, patch: &s_patch }, IbotOutputs { cls: &t_cls, patch: &t_patch });
        let full = loss_fn.forward(&be, student, teacher, &MASKS, &ibot.center, &ibot.center_patch, batch, l);
        let want = crate::block_on(loss_fn.loss(&be, &full));
        for (p, w) in packed.iter().zip(want) {
            assert!((p - w).abs() < 1e-6 * w.abs(), "packed {packed:?} vs every patch {want:?}");
        }
    }

    /// With nothing masked the patch term is 0 and the [CLS] term is DINO's loss (λ1 = 1).
    #[test]
    fn without_masks_the_loss_is_dinos() {
        let be = Cpu;
        let ibot = Ibot::init(&be, micro(), 4);
        randomise(&be, &ibot.teacher.params, 20);
        let batch = 2;
        let (gb, lb) = (be.upload(&randn(2 * batch * 64, 5)), be.upload(&randn(2 * batch * 16, 6)));
        let pass = ibot.forward_backward(&be, &gb, Some(&lb), &[0.0; 16], batch, 0.04, 0.07);
        let [total, cls, patch] = crate::block_on(pass.loss_fn.loss(&be, &pass.loss));
        assert_eq!((patch, total), (0.0, cls));
        let mut dino = crate::methods::dino_train::Dino::init(&be, ibot.cfg.dino(), 4);
        dino.teacher.params = copy_of(&be, &ibot.teacher.params);
        let dp = dino.forward_backward(&be, &gb, Some(&lb), batch, 0.04);
        let want = dp.loss.value(&crate::block_on(be.read(&dp.loss.losses)));
        assert!((cls - want).abs() < 1e-6 * want.abs().max(1.0), "{cls} vs DINO's {want}");
    }

    /// A few steps: finite, the teacher follows the student but has no `masked_embed`, the
    /// token trains, both centres move, the frozen last layer stays put.
    #[test]
    fn ibot_steps_train_the_student_and_move_the_teacher() {
        let be = Cpu;
        let mut ibot = Ibot::init(&be, micro(), 3);
        assert!(ibot.teacher.params.try_get(MASKED_EMBED).is_none());
        assert_eq!(ibot.teacher.params.list.len() + 1, ibot.student.params.list.len());
        let batch = 2;
        let (gb, lb) = (be.upload(&randn(2 * batch * 64, 4)), be.upload(&randn(2 * batch * 16, 5)));
        let t0 = crate::block_on(be.read(ibot.teacher.params.get("blocks.0.attn.qkv.weight")));
        let last0 = crate::block_on(be.read(ibot.student_head.params.get("last_layer.weight_v")));
        let s = IbotStep {
            opt: StepConfig { lr: 1e-2, clip: Some(3.0), clip_per_param: true, ..StepConfig::default() },
            teacher_temp: 0.04,
            teacher_patch_temp: 0.07,
            momentum: 0.9,
            freeze_last_layer: true,
        };
        for _ in 0..3 {
            let [total, cls, patch] = crate::block_on(ibot.step(&be, &gb, Some(&lb), &MASKS, batch, &s));
            assert!(total.is_finite() && (total - cls - patch).abs() < 1e-9, "{total} {cls} {patch}");
        }
        let t1 = crate::block_on(be.read(ibot.teacher.params.get("blocks.0.attn.qkv.weight")));
        let s1 = crate::block_on(be.read(ibot.student.params.get("blocks.0.attn.qkv.weight")));
        let (d0, d1): (f32, f32) = (
            t0.iter().zip(&s1).map(|(a, b)| (a - b).abs()).sum(),
            t1.iter().zip(&s1).map(|(a, b)| (a - b).abs()).sum(),
        );
        assert!(d1 < d0, "{d1} !< {d0}");
        assert!(crate::block_on(be.read(ibot.student.params.get(MASKED_EMBED))).iter().any(|v| *v != 0.0));
        for c in [&ibot.center, &ibot.center_patch] {
            assert!(crate::block_on(be.read(c)).iter().any(|v| *v != 0.0));
        }
        assert_eq!(crate::block_on(be.read(ibot.student_head.params.get("last_layer.weight_v"))), last0);
        let s = IbotStep { freeze_last_layer: false, ..s };
        crate::block_on(ibot.step(&be, &gb, Some(&lb), &MASKS, batch, &s));
        assert_ne!(crate::block_on(be.read(ibot.student_head.params.get("last_layer.weight_v"))), last0);
    }
}
