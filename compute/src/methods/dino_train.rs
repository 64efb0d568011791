//! DINO's training step, as `main_dino.py`'s `train_one_epoch`, over the shared parts
//! (ViT backbone at any crop size, DINO head, momentum teacher, AdamW):
//! ```text
//! teacher_out = teacher_head(teacher(global_crops))            # 2 views, no gradient
//! student_out = student_head(cat(student(global_crops),        # 2 + K views; local crops
//!                                student(local_crops)))        #   use interpolated pos_embed
//! loss = DINOLoss(student_out, teacher_out, center, temp[step]) # then center ← EMA
//! loss.backward(); clip_gradients(student, 3.0)                # each parameter on its own
//! if step < freeze_last_layer: last_layer gets no update
//! adamw.step(lr[step], wd[step]); teacher ← m[step]·teacher + (1−m[step])·student
//! ```
//! Views are laid out view-major: `globals: [2·B, C, G, G]` is all images' first global
//! crop, then all second ones; `locals: [K·B, C, L, L]` likewise. One read (the loss) per
//! step, so the GPU gets one submit.
use serde::{Deserialize, Serialize};

use crate::backbone::Backbone;
use crate::backend::Backend;
use crate::heads::{DinoHead, DinoHeadConfig};
use crate::methods::dino::{DinoLoss, DinoLossConfig, SoftTargets};
use crate::optim::{AdamWState, StepConfig};
use crate::params::Params;
use crate::rng::Rng;
use crate::teacher::{copy_of, ema_update};
use crate::vit::{Vit, VitConfig};
use crate::weights::WeightsError;

/// The model side of a DINO run (schedules are per step, in [`DinoStep`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DinoConfig {
    /// The backbone; its `img_size` is the global crops' size.
    pub vit: VitConfig,
    pub head: DinoHeadConfig,
    /// Side of the local crops (a multiple of the patch size).
    pub local_size: usize,
    /// Local crops per image (`ncrops = 2 + n_local`).
    pub n_local: usize,
    pub student_temp: f32,
    pub center_momentum: f32,
}

impl DinoConfig {
    pub fn validate(&self) -> Result<(), WeightsError> {
        self.vit.validate()?;
        self.head.validate()?;
        let bad = |m: String| Err(WeightsError::Config(m));
        if self.vit.img_size[0] != self.vit.img_size[1] {
            return bad("DINO's global crops are square".into());
        }
        if self.n_local > 0 && (self.local_size == 0 || !self.local_size.is_multiple_of(self.vit.patch_size)) {
            return bad(format!("local crops of {} px are not a multiple of the patch size", self.local_size));
        }
        if self.head.in_dim != self.vit.embed_dim {
            return bad(format!(
                "the head takes {} features, the backbone gives {}",
                self.head.in_dim, self.vit.embed_dim
            ));
        }
        if self.vit.num_classes != 0 {
            return bad("the backbone must have no classifier (num_classes 0)".into());
        }
        Ok(())
    }
    pub fn global_size(&self) -> usize {
        self.vit.img_size[0]
    }
    pub fn ncrops(&self) -> usize {
        2 + self.n_local
    }
    fn loss(&self) -> DinoLoss {
        DinoLoss {
            cfg: DinoLossConfig {
                out_dim: self.head.out_dim,
                ncrops: self.ncrops(),
                student_temp: self.student_temp,
                teacher_temp: 0.04,
                center_momentum: self.center_momentum,
            },
        }
    }
}

/// One step's schedule values.
#[derive(Clone, Copy, Debug)]
pub struct DinoStep {
    pub opt: StepConfig,
    pub teacher_temp: f32,
    pub momentum: f32,
    /// DINO's `freeze_last_layer`: the head's last layer is not updated.
    pub freeze_last_layer: bool,
}

pub struct Dino<B: Backend> {
    pub cfg: DinoConfig,
    pub student: Vit<B>,
    pub student_head: DinoHead<B>,
    pub teacher: Vit<B>,
    pub teacher_head: DinoHead<B>,
    pub center: B::Buf,
    pub grads: Params<B>,
    pub head_grads: Params<B>,
    pub opt: AdamWState<B>,
    pub head_opt: AdamWState<B>,
}

impl<B: Backend> Dino<B> {
    /// Fresh student (timm init, DINO head init) and a teacher copied from it.
    pub fn init(be: &B, cfg: DinoConfig, seed: u64) -> Self {
        let student = Vit::init(be, cfg.vit.clone(), seed);
        let student_head = DinoHead::new(be, cfg.head.clone(), &mut Rng::new(seed ^ 0x4845_4144));
        let teacher = Vit { cfg: cfg.vit.clone(), params: copy_of(be, &student.params) };
        let teacher_head = DinoHead { cfg: cfg.head.clone(), params: copy_of(be, &student_head.params) };
        Self::assemble(be, cfg, student, student_head, teacher, teacher_head)
    }

    /// From four parameter sets (a checkpoint); optimiser moments start at zero.
    pub fn assemble(
        be: &B,
        cfg: DinoConfig,
        student: Vit<B>,
        student_head: DinoHead<B>,
        teacher: Vit<B>,
        teacher_head: DinoHead<B>,
    ) -> Self {
        let center = be.alloc(cfg.head.out_dim);
        let (grads, head_grads) = (student.params.zeros_like(be), student_head.params.zeros_like(be));
        let (opt, head_opt) = (AdamWState::new(be, &student.params), AdamWState::new(be, &student_head.params));
        Dino { cfg, student, student_head, teacher, teacher_head, center, grads, head_grads, opt, head_opt }
    }

    /// One step on `batch` images; returns the loss.
    pub async fn step(&mut self, be: &B, globals: &B::Buf, locals: Option<&B::Buf>, batch: usize, s: &DinoStep) -> f64 {
        let pass = self.forward_backward(be, globals, locals, batch, s.teacher_temp);
        // updates: student, teacher, centre
        self.opt.update(be, &self.student.params, &self.grads, &s.opt);
        let head = &self.student_head;
        let trains = |name: &str| head.trainable(name) && !(s.freeze_last_layer && name.starts_with("last_layer."));
        self.head_opt.update_where(be, &head.params, &self.head_grads, &s.opt, trains);
        ema_update(be, &self.teacher.params, &self.student.params, s.momentum);
        ema_update(be, &self.teacher_head.params, &self.student_head.params, s.momentum);
        self.cfg.loss().update_center(be, &pass.teacher_out, &self.center, batch);
        pass.loss.value(&be.read(&pass.loss.losses).await)
    }

    /// The loss, with the student's gradients left in `grads` and `head_grads`.
    pub fn forward_backward(
        &self,
        be: &B,
        globals: &B::Buf,
        locals: Option<&B::Buf>,
        batch: usize,
        teacher_temp: f32,
    ) -> DinoPass<B> {
        let (cfg, d, out) = (&self.cfg, self.cfg.vit.embed_dim, self.cfg.head.out_dim);
        let (g_rows, l_rows) = (2 * batch, cfg.n_local * batch);
        let loss = cfg.loss();

        // teacher: global crops only
        let t_saved = Backbone::forward(&self.teacher, be, globals, g_rows);
        let teacher_out = self.teacher_head.forward(be, self.teacher.pooled(&t_saved), g_rows).output;

        // student: global crops, then local crops at their own grid
        let s_global = Backbone::forward(&self.student, be, globals, g_rows);
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
        let s_head = self.student_head.forward(be, &feats, g_rows + l_rows);
        let lf = loss.forward(be, &s_head.output, &teacher_out, &self.center, batch, teacher_temp);

        // backward
        self.grads.fill(be, 0.0);
        self.head_grads.fill(be, 0.0);
        let dout = be.alloc((g_rows + l_rows) * out);
        loss.backward(be, &lf, &dout);
        let dfeats = be.alloc((g_rows + l_rows) * d);
        self.student_head.backward(be, &s_head, &dout, &self.head_grads, Some(&dfeats));
        let dg = be.alloc(g_rows * d);
        be.copy(&dfeats, 0, &dg, 0, g_rows * d);
        Backbone::backward(&self.student, be, &s_global, Some(&dg), None, &self.grads, None);
        if let Some((at, saved)) = &local {
            let dl = be.alloc(l_rows * d);
            be.copy(&dfeats, g_rows * d, &dl, 0, l_rows * d);
            let view_grads = at.grads(be, &self.grads);
            Backbone::backward(&at.vit, be, saved, Some(&dl), None, &view_grads, None);
            at.fold_grads(be, &view_grads, &self.grads);
        }
        DinoPass { loss: lf, teacher_out }
    }
}

/// What [`Dino::forward_backward`] leaves: the loss terms and the teacher's outputs (for
/// the centre's update).
pub struct DinoPass<B: Backend> {
    pub loss: SoftTargets<B>,
    pub teacher_out: B::Buf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::ops::testing::*;

    fn micro() -> DinoConfig {
        DinoConfig {
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
        }
    }

    fn randomise(be: &Cpu, p: &Params<Cpu>, seed: u64) {
        for (i, t) in p.list.iter().enumerate() {
            let n: usize = t.shape.iter().product();
            be.write(&t.buf, &randn(n, seed + i as u64).iter().map(|x| x * 0.5).collect::<Vec<_>>());
        }
    }

    /// The student's gradients (backbone at two crop sizes, head) against finite
    /// differences of the loss, with a teacher different from the student.
    #[test]
    fn dino_gradients_match_finite_differences() {
        let be = Cpu;
        let dino = Dino::init(&be, micro(), 0);
        randomise(&be, &dino.student.params, 10);
        randomise(&be, &dino.student_head.params, 50);
        randomise(&be, &dino.teacher.params, 90);
        be.write(&dino.center, &randn(6, 7));
        let batch = 2;
        let (g, l) = (randn(2 * batch * 64, 1), randn(2 * batch * 16, 2));
        let (gb, lb) = (be.upload(&g), be.upload(&l));
        let loss_of = |dino: &Dino<Cpu>| {
            let pass = dino.forward_backward(&be, &gb, Some(&lb), batch, 0.07);
            pass.loss.value(&crate::block_on(be.read(&pass.loss.losses)))
        };
        loss_of(&dino);
        let read = |p: &Params<Cpu>| p.list.iter().map(|t| crate::block_on(be.read(&t.buf))).collect::<Vec<_>>();
        let (grads, head_grads) = (read(&dino.grads), read(&dino.head_grads));
        for (params, analytic) in [(&dino.student.params, &grads), (&dino.student_head.params, &head_grads)] {
            for (t, g) in params.list.iter().zip(analytic) {
                if t.name == "last_layer.weight_g" && dino.cfg.head.norm_last_layer {
                    continue;
                }
                let w0 = crate::block_on(be.read(&t.buf));
                let fd = finite_diff(&w0, 1e-2, |w| {
                    be.write(&t.buf, w);
                    loss_of(&dino)
                });
                be.write(&t.buf, &w0);
                assert_close_f64(&format!("d {}", t.name), g, &fd, 2e-3, 3e-2);
            }
        }
    }

    /// A few steps: finite, the teacher moves toward the student, the frozen last layer
    /// stays put, and the CPU and the GPU adapter agree.
    #[test]
    fn dino_steps_train_the_student_and_move_the_teacher() {
        let be = Cpu;
        let mut dino = Dino::init(&be, micro(), 3);
        let batch = 3;
        let (gb, lb) = (be.upload(&randn(2 * batch * 64, 4)), be.upload(&randn(2 * batch * 16, 5)));
        let t0 = crate::block_on(be.read(dino.teacher.params.get("blocks.0.attn.qkv.weight")));
        let last0 = crate::block_on(be.read(dino.student_head.params.get("last_layer.weight_v")));
        let s = DinoStep {
            opt: StepConfig { lr: 1e-2, clip: Some(3.0), clip_per_param: true, ..StepConfig::default() },
            teacher_temp: 0.04,
            momentum: 0.9,
            freeze_last_layer: true,
        };
        for _ in 0..3 {
            assert!(crate::block_on(dino.step(&be, &gb, Some(&lb), batch, &s)).is_finite());
        }
        let t1 = crate::block_on(be.read(dino.teacher.params.get("blocks.0.attn.qkv.weight")));
        let s1 = crate::block_on(be.read(dino.student.params.get("blocks.0.attn.qkv.weight")));
        assert_ne!(t0, t1);
        // the teacher lies between where it started and the student
        let (d0, d1): (f32, f32) = (
            t0.iter().zip(&s1).map(|(a, b)| (a - b).abs()).sum(),
            t1.iter().zip(&s1).map(|(a, b)| (a - b).abs()).sum(),
        );
        assert!(d1 < d0, "{d1} !< {d0}");
        assert_eq!(crate::block_on(be.read(dino.student_head.params.get("last_layer.weight_v"))), last0);
        let s = DinoStep { freeze_last_layer: false, ..s };
        crate::block_on(dino.step(&be, &gb, Some(&lb), batch, &s));
        assert_ne!(crate::block_on(be.read(dino.student_head.params.get("last_layer.weight_v"))), last0);
    }
}
