//! DINO — self-distillation with no labels (Caron et al. 2021) — and the loss of iBOT
//! (Zhou et al. 2022), which adds masked image modelling on patch tokens. The losses as
//! facebookresearch/dino `DINOLoss` and bytedance/ibot `iBOTLoss`:
//! ```text
//! s = student_output / student_temp               # ncrops views of B rows
//! q = softmax((teacher_output - center) / temp)   # 2 global views; no gradient
//! loss = mean over (iq, v), v != iq, of mean_b sum(-q[iq] * log_softmax(s[v]))
//! center = m * center + (1 - m) * mean(teacher_output)
//! ```
//! Each student view's terms share its log-softmax, so the pairs fold into one soft
//! cross-entropy per student row whose target is the sum of the other views' teacher
//! distributions; every row's loss is weighted by `1 / (n_terms · B)`. iBOT's patch term
//! pairs each global view with itself: per image, `Σ_patches mask · CE(q_patch, s_patch)`
//! over `max(1, Σ mask)`, a mean over images and views, i.e. one more soft cross-entropy
//! per patch row, weighted by `mask / max(1, Σ mask) / (B · 2)`. Masks are drawn on the
//! CPU and the weights are computed there; the arithmetic runs on the backend. The
//! teacher temperature follows [`teacher_temp_schedule`], an array indexed by the epoch.
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::weights::WeightsError;

/// DINO's teacher-temperature schedule: `np.linspace(warmup, final, warmup_epochs)` then
/// `final` up to `nepochs` entries; index it by the epoch.
pub fn teacher_temp_schedule(warmup: f32, fin: f32, warmup_epochs: usize, nepochs: usize) -> Vec<f32> {
    let ramp = (0..warmup_epochs).map(|i| match warmup_epochs {
        1 => warmup,
        n => (warmup as f64 + (fin as f64 - warmup as f64) * i as f64 / (n - 1) as f64) as f32,
    });
    ramp.chain(std::iter::repeat_n(fin, nepochs.saturating_sub(warmup_epochs))).collect()
}

/// A soft cross-entropy over rows with a fixed weight per row: the weighted sum of the
/// row losses is the loss term, so the weights are also the rows' upstream gradient.
pub struct SoftTargets<B: Backend> {
    rows: usize,
    cols: usize,
    scale: f32,
    targets: B::Buf,
    probs: B::Buf,
    /// `[rows]`, each `−Σ target · log_softmax(scale · logits)`.
    pub losses: B::Buf,
    /// `∂ loss / ∂ losses[r]`.
    pub weights: Vec<f32>,
}

impl<B: Backend> SoftTargets<B> {
    fn forward(be: &B, logits: &B::Buf, targets: B::Buf, weights: Vec<f32>, cols: usize, scale: f32) -> Self {
        let rows = weights.len();
        let (losses, probs) = (be.alloc(rows), be.alloc(rows * cols));
        be.soft_cross_entropy_forward(logits, &targets, &losses, &probs, rows, cols, scale);
        SoftTargets { rows, cols, scale, targets, probs, losses, weights }
    }

    /// The term's value from its row losses read back.
    pub fn value(&self, losses: &[f32]) -> f64 {
        losses.iter().zip(&self.weights).map(|(l, w)| *l as f64 * *w as f64).sum()
    }

    /// `dlogits += ∂ term / ∂ logits`.
    fn backward(&self, be: &B, dlogits: &B::Buf) {
        let dloss = be.upload(&self.weights);
        be.soft_cross_entropy_backward(&dloss, &self.probs, &self.targets, dlogits, self.rows, self.cols, self.scale);
    }
}

/// `DINOLoss`'s arguments for one step (the temperature is the schedule's entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DinoLossConfig {
    pub out_dim: usize,
    /// Student views: 2 global crops, then the local ones.
    pub ncrops: usize,
    pub student_temp: f32,
    pub teacher_temp: f32,
    pub center_momentum: f32,
}

impl Default for DinoLossConfig {
    fn default() -> Self {
        DinoLossConfig { out_dim: 65536, ncrops: 10, student_temp: 0.1, teacher_temp: 0.04, center_momentum: 0.9 }
    }
}

impl DinoLossConfig {
    pub fn from_json(s: &str) -> Result<Self, WeightsError> {
        let cfg: DinoLossConfig = serde_json::from_str(s).map_err(|e| WeightsError::Config(e.to_string()))?;
        if cfg.out_dim == 0 || cfg.ncrops == 0 || cfg.student_temp <= 0.0 || cfg.teacher_temp <= 0.0 {
            return Err(WeightsError::Config(format!("DINOLoss needs positive sizes and temperatures: {cfg:?}")));
        }
        Ok(cfg)
    }
}

/// The teacher's two global views, sharpened and spread over the student's views:
/// `targets[v] = Σ_{iq ∈ {0, 1}, iq ≠ v} q[iq]`, `[ncrops · batch, d]`; and the number of
/// (iq, v) pairs.
fn dino_targets<B: Backend>(be: &B, q: &B::Buf, ncrops: usize, batch: usize, d: usize) -> (B::Buf, usize) {
    let n = batch * d;
    let (q0, q1, both) = (be.alloc(n), be.alloc(n), be.alloc(n));
    be.copy(q, 0, &q0, 0, n);
    be.copy(q, n, &q1, 0, n);
    be.add(&q0, &q1, &both, n);
    let targets = be.alloc(ncrops * n);
    let mut terms = 0;
    for v in 0..ncrops {
        let (src, pairs) = match v {
            0 => (&q1, 1),
            1 => (&q0, 1),
            _ => (&both, 2),
        };
        be.copy(src, 0, &targets, v * n, n);
        terms += pairs;
    }
    (targets, terms)
}

pub struct DinoLoss {
    pub cfg: DinoLossConfig,
}

impl DinoLoss {
    /// `student_output: [ncrops · batch, out_dim]`, `teacher_output: [2 · batch, out_dim]`,
    /// `center: [out_dim]`; `teacher_temp` from [`teacher_temp_schedule`].
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        student_output: &B::Buf,
        teacher_output: &B::Buf,
        center: &B::Buf,
        batch: usize,
        teacher_temp: f32,
    ) -> SoftTargets<B> {
        let (d, ncrops) = (self.cfg.out_dim, self.cfg.ncrops);
        let q = be.alloc(2 * batch * d);
        be.center_sharpen(teacher_output, center, &q, 2 * batch, d, teacher_temp);
        let (targets, terms) = dino_targets(be, &q, ncrops, batch, d);
        let weights = vec![1.0 / (terms * batch) as f32; ncrops * batch];
        SoftTargets::forward(be, student_output, targets, weights, d, 1.0 / self.cfg.student_temp)
    }

    /// `dstudent += ∂ loss / ∂ student_output`.
    pub fn backward<B: Backend>(&self, be: &B, fwd: &SoftTargets<B>, dstudent: &B::Buf) {
        fwd.backward(be, dstudent);
    }

    /// `center ← m · center + (1 − m) · mean(teacher_output)`, after the loss.
    pub fn update_center<B: Backend>(&self, be: &B, teacher_output: &B::Buf, center: &B::Buf, batch: usize) {
        be.center_update(teacher_output, center, 2 * batch, self.cfg.out_dim, self.cfg.center_momentum);
    }
}

/// `iBOTLoss`'s arguments for one step (2 global crops; local crops add [CLS] rows only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IbotLossConfig {
    pub out_dim: usize,
    pub patch_out_dim: usize,
    pub ngcrops: usize,
    pub nlcrops: usize,
    pub student_temp: f32,
    /// The [CLS] and the patch teacher temperatures (schedule entries).
    pub teacher_temp: f32,
    pub teacher_temp2: f32,
    pub center_momentum: f32,
    pub center_momentum2: f32,
    pub lambda1: f32,
    pub lambda2: f32,
}

impl Default for IbotLossConfig {
    fn default() -> Self {
        IbotLossConfig {
            out_dim: 8192,
            patch_out_dim: 8192,
            ngcrops: 2,
            nlcrops: 0,
            student_temp: 0.1,
            teacher_temp: 0.04,
            teacher_temp2: 0.04,
            center_momentum: 0.9,
            center_momentum2: 0.9,
            lambda1: 1.0,
            lambda2: 1.0,
        }
    }
}

impl IbotLossConfig {
    pub fn from_json(s: &str) -> Result<Self, WeightsError> {
        let cfg: IbotLossConfig = serde_json::from_str(s).map_err(|e| WeightsError::Config(e.to_string()))?;
        if cfg.ngcrops != 2 {
            return Err(WeightsError::Config(format!("iBOTLoss takes 2 global crops (got ngcrops {})", cfg.ngcrops)));
        }
        if cfg.out_dim == 0 || cfg.patch_out_dim == 0 || cfg.student_temp <= 0.0 {
            return Err(WeightsError::Config(format!("iBOTLoss needs positive sizes and temperatures: {cfg:?}")));
        }
        Ok(cfg)
    }

    fn cls(&self) -> DinoLoss {
        DinoLoss {
            cfg: DinoLossConfig {
                out_dim: self.out_dim,
                ncrops: self.ngcrops + self.nlcrops,
                student_temp: self.student_temp,
                teacher_temp: self.teacher_temp,
                center_momentum: self.center_momentum,
            },
        }
    }
}

/// One network's outputs for iBOT: `cls: [ncrops · batch, out_dim]` (the teacher's:
/// `[2 · batch, out_dim]`), `patch: [2 · batch, patches, patch_out_dim]`.
pub struct IbotOutputs<'a, B: Backend> {
    pub cls: &'a B::Buf,
    pub patch: &'a B::Buf,
}

pub struct IbotForward<B: Backend> {
    pub cls: SoftTargets<B>,
    pub patch: SoftTargets<B>,
}

pub struct IbotLoss {
    pub cfg: IbotLossConfig,
}

impl IbotLoss {
    /// `student_mask: [2 · batch, patches]` (0/1; row `v · batch + b` is image b of view v),
    /// `center: [out_dim]`, `center_patch: [patch_out_dim]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        student: IbotOutputs<B>,
        teacher: IbotOutputs<B>,
        student_mask: &[f32],
        center: &B::Buf,
        center_patch: &B::Buf,
        batch: usize,
        patches: usize,
    ) -> IbotForward<B> {
        let c = &self.cfg;
        let mut cls = c.cls().forward(be, student.cls, teacher.cls, center, batch, c.teacher_temp);
        cls.weights.iter_mut().for_each(|w| *w *= c.lambda1);

        let (rows, d2) = (c.ngcrops * batch * patches, c.patch_out_dim);
        assert_eq!(student_mask.len(), c.ngcrops * batch * patches, "student_mask is [2 · batch, patches]");
        let q = be.alloc(rows * d2);
        be.center_sharpen(teacher.patch, center_patch, &q, rows, d2, c.teacher_temp2);
        let mut weights = Vec::with_capacity(rows);
        for image in student_mask.chunks(patches) {
            let masked = image.iter().sum::<f32>().max(1.0);
            weights.extend(image.iter().map(|m| c.lambda2 * m / masked / (batch * c.ngcrops) as f32));
        }
        let patch = SoftTargets::forward(be, student.patch, q, weights, d2, 1.0 / c.student_temp);
        IbotForward { cls, patch }
    }

    /// The total, [CLS] and patch terms (each with its lambda), from the losses read back.
    pub async fn loss<B: Backend>(&self, be: &B, fwd: &IbotForward<B>) -> [f64; 3] {
        let cls = fwd.cls.value(&be.read(&fwd.cls.losses).await);
        let patch = fwd.patch.value(&be.read(&fwd.patch.losses).await);
        [cls + patch, cls, patch]
    }

    pub fn backward<B: Backend>(&self, be: &B, fwd: &IbotForward<B>, dstudent_cls: &B::Buf, dstudent_patch: &B::Buf) {
        fwd.cls.backward(be, dstudent_cls);
        fwd.patch.backward(be, dstudent_patch);
    }

    /// Both centres' EMA, after the loss.
    pub fn update_center<B: Backend>(
        &self,
        be: &B,
        teacher: IbotOutputs<B>,
        center: &B::Buf,
        center_patch: &B::Buf,
        batch: usize,
        patches: usize,
    ) {
        let c = &self.cfg;
        c.cls().update_center(be, teacher.cls, center, batch);
        let rows = c.ngcrops * batch * patches;
        be.center_update(teacher.patch, center_patch, rows, c.patch_out_dim, c.center_momentum2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_temp_schedule_is_numpy_linspace_then_constant() {
        let s = teacher_temp_schedule(0.04, 0.07, 4, 6);
        let want = [0.04, 0.05, 0.06, 0.07, 0.07, 0.07];
        assert!(s.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-7), "{s:?}");
        assert_eq!(teacher_temp_schedule(0.04, 0.07, 0, 2), [0.07, 0.07]);
        assert_eq!(teacher_temp_schedule(0.03, 0.07, 1, 2), [0.03, 0.07]);
    }

    #[test]
    fn dino_targets_pair_each_view_with_the_other_teachers() {
        use crate::Cpu;
        // batch 1, d 1: q0 = 1, q1 = 10.
        let (t, terms) = dino_targets(&Cpu, &Cpu.upload(&[1.0, 10.0]), 4, 1, 1);
        assert_eq!(crate::block_on(Cpu.read(&t)), [10.0, 1.0, 11.0, 11.0]);
        assert_eq!(terms, 6);
    }
}
