//! AdamW with global-norm gradient clipping, over every parameter of a model, and the
//! schedules training uses (precomputed arrays indexed by the iteration, as DINO/MAE do).
use crate::backend::{AdamW, Backend};
use crate::params::Params;

/// Optimiser state: Adam's moments under the parameters' names, and the step count.
pub struct AdamWState<B: Backend> {
    pub m: Params<B>,
    pub v: Params<B>,
    pub step: u32,
    /// One sum of squares per parameter, then the clip coefficient and the norm.
    sums: B::Buf,
    coef: B::Buf,
}

/// Hyper-parameters of one optimiser step.
#[derive(Clone, Copy, Debug)]
pub struct StepConfig {
    pub lr: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `clip_grad_norm_(max_norm)` before the update; `None` to skip.
    pub clip: Option<f32>,
    /// Clip each parameter's gradient to norm `clip` on its own (DINO's
    /// `utils.clip_gradients`) instead of the global norm.
    pub clip_per_param: bool,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            lr: 1e-3,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip: None,
            clip_per_param: false,
        }
    }
}

/// Whether a parameter gets weight decay: as DINO's `get_params_groups` and timm, biases
/// and other 1-D parameters (norms) are not regularised, nor the class token, the
/// registers (timm's `no_weight_decay`) or position embeddings.
pub fn decays(name: &str, shape: &[usize]) -> bool {
    shape.len() > 1
        && !name.ends_with("bias")
        && !matches!(name, "cls_token" | "reg_token" | "pos_embed" | "mask_token")
}

impl<B: Backend> AdamWState<B> {
    pub fn new(be: &B, params: &Params<B>) -> Self {
        AdamWState {
            m: params.zeros_like(be),
            v: params.zeros_like(be),
            step: 0,
            sums: be.alloc(params.list.len().max(1)),
            coef: be.alloc(2),
        }
    }

    /// One update of every parameter from `grads` (same names). With clipping, the
    /// gradient norm before clipping lands in [`AdamWState::grad_norm_buf`].
    pub fn update(&mut self, be: &B, params: &Params<B>, grads: &Params<B>, cfg: &StepConfig) {
        self.update_where(be, params, grads, cfg, |_| true)
    }

    /// [`AdamWState::update`] of the parameters `trains` accepts; the others are left as
    /// PyTorch leaves a parameter whose `.grad` is `None` (frozen, or DINO's last layer in
    /// its first epoch): no decay, moments unchanged.
    pub fn update_where(
        &mut self,
        be: &B,
        params: &Params<B>,
        grads: &Params<B>,
        cfg: &StepConfig,
        trains: impl Fn(&str) -> bool,
    ) {
        self.step += 1;
        let global = cfg.clip.filter(|_| !cfg.clip_per_param).map(|max_norm| {
            for (i, g) in grads.list.iter().enumerate() {
                be.sum_squares(&g.buf, g.shape.iter().product(), &self.sums, i);
            }
            be.clip_coef(&self.sums, grads.list.len(), max_norm, &self.coef);
            self.coef.clone()
        });
        for (((p, g), m), v) in params.list.iter().zip(&grads.list).zip(&self.m.list).zip(&self.v.list) {
            if !trains(&p.name) {
                continue;
            }
            let n = p.shape.iter().product();
            let coef = match (cfg.clip, cfg.clip_per_param) {
                (Some(max_norm), true) => {
                    let (sum, coef) = (be.alloc(1), be.alloc(2));
                    be.sum_squares(&g.buf, n, &sum, 0);
                    be.clip_coef(&sum, 1, max_norm, &coef);
                    Some(coef)
                }
                _ => global.clone(),
            };
            let hp = AdamW {
                lr: cfg.lr,
                beta1: cfg.beta1,
                beta2: cfg.beta2,
                eps: cfg.eps,
                weight_decay: if decays(&p.name, &p.shape) { cfg.weight_decay } else { 0.0 },
                step: self.step,
            };
            be.adamw(&p.buf, &g.buf, &m.buf, &v.buf, coef.as_ref(), n, &hp);
        }
    }

    /// `[clip coefficient, gradient norm]` of the last clipped update.
    pub fn grad_norm_buf(&self) -> &B::Buf {
        &self.coef
    }
}

/// DINO's `cosine_scheduler` without warm-up: `final + ½(base − final)(1 + cos(π i/steps))`
/// (the teacher momentum 0.996 → 1, the weight decay 0.04 → 0.4).
pub fn cosine(base: f32, final_value: f32, steps: usize) -> Vec<f32> {
    warmup_cosine(base, final_value, steps, 0)
}

/// Linear warm-up from 0 to `base` over `warmup` steps, then cosine decay to `final_value`
/// (MAE's `adjust_learning_rate`, DINO's `cosine_scheduler`), one entry per step.
pub fn warmup_cosine(base: f32, final_value: f32, steps: usize, warmup: usize) -> Vec<f32> {
    (0..steps)
        .map(|i| {
            if i < warmup {
                base * i as f32 / warmup as f32
            } else {
                let t = (i - warmup) as f32 / (steps - warmup).max(1) as f32;
                final_value + 0.5 * (base - final_value) * (1.0 + (std::f32::consts::PI * t).cos())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_starts_at_zero_peaks_and_ends_at_final() {
        let s = warmup_cosine(1.0, 0.1, 110, 10);
        assert_eq!(s[0], 0.0);
        assert!((s[10] - 1.0).abs() < 1e-6);
        assert!((s[109] - 0.1).abs() < 1e-3, "{}", s[109]);
        assert!(s.windows(2).skip(10).all(|w| w[1] <= w[0] + 1e-7));
    }

    #[test]
    fn no_decay_for_biases_norms_and_embeddings() {
        assert!(decays("blocks.0.attn.qkv.weight", &[12, 4]));
        assert!(!decays("blocks.0.attn.qkv.bias", &[12]));
        assert!(!decays("norm.weight", &[4]));
        assert!(!decays("pos_embed", &[1, 5, 4]));
    }
}
