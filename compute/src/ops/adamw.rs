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
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

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

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "adamw", source: include_str!("../../../shaders/adamw.wgsl") };

/// Workgroup width of every entry point (`WG` in the shader).
const WG: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    slot: u32,
    chunk: u32,
    has_coef: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
    max_norm: f32,
}

/// `out[slot] = Σ x²` in two stages: partial sums over chunks, then their sum.
pub fn sum_squares_gpu(gpu: &Gpu, x: &GpuBuf, n: usize, out: &GpuBuf, slot: usize) {
    assert!(slot < out.len(), "sum_squares: slot {slot} outside a buffer of {}", out.len());
    // Enough workgroups to fill a GPU, each with enough work to amortise its reduction.
    let chunk = n.div_ceil(1024).max(16 * WG).next_multiple_of(WG);
    let groups = n.div_ceil(chunk).max(1);
    let partials = gpu.alloc_uncleared(groups);
    let p1 = Params { n: n as u32, chunk: chunk as u32, ..Params::default() };
    gpu.dispatch(
        &SHADER.entry("sum_squares_partials"),
        &p1,
        &[Bind::Read(x), Bind::Write(&partials)],
        [groups as u32, 1, 1],
    );
    let p2 = Params { n: groups as u32, slot: slot as u32, ..Params::default() };
    gpu.dispatch(&SHADER.entry("sum_squares_final"), &p2, &[Bind::Read(&partials), Bind::Write(out)], [1, 1, 1]);
}

pub fn clip_coef_gpu(gpu: &Gpu, sums: &GpuBuf, count: usize, max_norm: f32, coef: &GpuBuf) {
    let params = Params { n: count as u32, max_norm, ..Params::default() };
    gpu.dispatch(&SHADER.entry("clip_coef"), &params, &[Bind::Read(sums), Bind::Write(coef)], [1, 1, 1]);
}

/// The bias corrections are computed here exactly as [`adamw`] computes them, so the
/// GPU's update differs from the reference only by f32 rounding inside the shader.
#[allow(clippy::too_many_arguments)]
pub fn adamw_gpu(
    gpu: &Gpu,
    param: &GpuBuf,
    grad: &GpuBuf,
    m: &GpuBuf,
    v: &GpuBuf,
    coef: Option<&GpuBuf>,
    n: usize,
    hp: &AdamW,
) {
    let t = hp.step as i32;
    let params = Params {
        n: n as u32,
        has_coef: coef.is_some() as u32,
        lr: hp.lr,
        beta1: hp.beta1,
        beta2: hp.beta2,
        eps: hp.eps,
        weight_decay: hp.weight_decay,
        step_size: hp.lr / (1.0 - hp.beta1.powi(t)),
        bc2_sqrt: (1.0 - hp.beta2.powi(t)).sqrt(),
        ..Params::default()
    };
    let binds =
        [Bind::Write(param), Bind::Read(grad), Bind::Write(m), Bind::Write(v), coef.map_or(Bind::Dummy, Bind::Read)];
    gpu.dispatch(&SHADER.entry("update"), &params, &binds, gpu.groups_1d(n.div_ceil(WG)));
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

    #[test]
    fn gpu_adamw_and_clipping_match_reference() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        use crate::ops::testing::{assert_close, randn};
        // Two "tensors", one larger than a sum_squares chunk and not a multiple of 256.
        let (n1, n2) = (70_001, 65);
        let (g1, g2) = (randn(n1, 1), randn(n2, 2));
        let sums = [sum_squares(&g1, n1), sum_squares(&g2, n2)];
        let coef = clip_coef(&sums, 2, 1.0);
        let (gg1, gg2, gsums, gcoef) = (gpu.upload(&g1), gpu.upload(&g2), gpu.alloc(2), gpu.alloc(2));
        gpu.sum_squares(&gg1, n1, &gsums, 0);
        gpu.sum_squares(&gg2, n2, &gsums, 1);
        gpu.clip_coef(&gsums, 2, 1.0, &gcoef);
        assert_close("sums", &crate::block_on(gpu.read(&gsums)), &sums, 0.0, 1e-5);
        assert_close("coef", &crate::block_on(gpu.read(&gcoef)), &coef, 0.0, 1e-5);

        let (p0, m0, v0) = (randn(n2, 3), randn(n2, 4), randn(n2, 5).iter().map(|v| v * v).collect::<Vec<_>>());
        let hp = AdamW { lr: 0.01, weight_decay: 0.05, step: 3, ..AdamW::default() };
        for use_coef in [false, true] {
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            adamw(&mut p, &g2, &mut m, &mut v, if use_coef { coef[0] } else { 1.0 }, n2, &hp);
            let (gp, gm, gv) = (gpu.upload(&p0), gpu.upload(&m0), gpu.upload(&v0));
            gpu.adamw(&gp, &gg2, &gm, &gv, use_coef.then_some(&gcoef), n2, &hp);
            assert_close("param", &crate::block_on(gpu.read(&gp)), &p, 1e-6, 1e-5);
            assert_close("m", &crate::block_on(gpu.read(&gm)), &m, 1e-6, 1e-5);
            assert_close("v", &crate::block_on(gpu.read(&gv)), &v, 1e-6, 1e-5);
        }
    }
}
