//! `torch.optim.AdamW` (decoupled weight decay, `amsgrad=False`), one step:
//! ```text
//! p  ← p · (1 − lr·wd)
//! m  ← β1·m + (1 − β1)·g ;  v ← β2·v + (1 − β2)·g²
//! p  ← p − (lr / (1 − β1ᵗ)) · m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps)
//! ```
//! and `clip_grad_norm_`: `coef = min(1, max_norm / (‖g‖ + 1e-6))` over all parameters'
//! gradients, applied here as `g · coef` inside the update so gradients stay as computed.
//! Shader: `shaders/adamw.wgsl`.
use crate::backend::AdamW;

pub fn sum_squares(x: &[f32], n: usize) -> f32 {
    x[..n].iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() as f32
}

pub fn clip_coef(sums: &[f32], count: usize, max_norm: f32) -> [f32; 2] {
    let norm = sums[..count].iter().map(|v| *v as f64).sum::<f64>().sqrt() as f32;
    [(max_norm / (norm + 1e-6)).min(1.0), norm]
}

pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], coef: f32, n: usize, hp: &AdamW) {
    let t = hp.step as i32;
    let bc1 = 1.0 - hp.beta1.powi(t);
    let bc2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
    let step_size = hp.lr / bc1;
    for i in 0..n {
        let g = grad[i] * coef;
        param[i] *= 1.0 - hp.lr * hp.weight_decay;
        m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
        v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
        param[i] -= step_size * m[i] / (v[i].sqrt() / bc2_sqrt + hp.eps);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_first_steps_match_torch() {
        // torch: p = torch.tensor([1.0, -2.0]); AdamW([p], lr=0.1, weight_decay=0.1),
        // grads [0.5, -0.25] then [0.1, 0.3] -> p = [0.8007959, -1.8754945]
        let (mut p, mut m, mut v) = (vec![1.0f32, -2.0], vec![0.0; 2], vec![0.0; 2]);
        let mut hp = AdamW { lr: 0.1, weight_decay: 0.1, ..AdamW::default() };
        adamw(&mut p, &[0.5, -0.25], &mut m, &mut v, 1.0, 2, &hp);
        hp.step = 2;
        adamw(&mut p, &[0.1, 0.3], &mut m, &mut v, 1.0, 2, &hp);
        assert!((p[0] - 0.800_795_9).abs() < 1e-5 && (p[1] + 1.875_494_5).abs() < 1e-5, "{p:?}");
    }

    #[test]
    fn clip_coef_scales_only_above_max_norm() {
        assert_eq!(clip_coef(&[9.0, 16.0], 2, 10.0)[0], 1.0);
        let c = clip_coef(&[9.0, 16.0], 2, 1.0);
        assert!((c[0] - 0.2).abs() < 1e-6 && (c[1] - 5.0).abs() < 1e-6);
    }
}
// GPU-STUB
#[allow(unused)]
pub fn sum_squares_gpu(g: &crate::gpu::Gpu, x: &crate::gpu::GpuBuf, n: usize, out: &crate::gpu::GpuBuf, slot: usize) {
    unimplemented!()
}
#[allow(unused)]
pub fn clip_coef_gpu(
    g: &crate::gpu::Gpu,
    s: &crate::gpu::GpuBuf,
    count: usize,
    max_norm: f32,
    coef: &crate::gpu::GpuBuf,
) {
    unimplemented!()
}
#[allow(clippy::too_many_arguments, unused)]
pub fn adamw_gpu(
    g: &crate::gpu::Gpu,
    p: &crate::gpu::GpuBuf,
    gr: &crate::gpu::GpuBuf,
    m: &crate::gpu::GpuBuf,
    v: &crate::gpu::GpuBuf,
    coef: Option<&crate::gpu::GpuBuf>,
    n: usize,
    hp: &AdamW,
) {
    unimplemented!()
}
