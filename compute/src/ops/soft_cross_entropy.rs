//! Cross-entropy against a soft target with a temperature, per row:
//! `z = scale · logits`, `probs = softmax(z)`, `loss[r] = −Σ_c target[r,c] · log_softmax(z)_c`.
//! `scale` is the inverse temperature (DINO's `1 / student_temp`). Targets need not sum to
//! one (DINO adds the distributions of several teacher views into one target), so backward
//! is `dlogits += dloss[r] · scale · (probs · Σ_c target − target)`. Shader:
//! `shaders/soft_cross_entropy.wgsl`.
use super::{for_rows, softmax_in_place};
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

pub fn soft_cross_entropy_forward(
    logits: &[f32],
    targets: &[f32],
    losses: &mut [f32],
    probs: &mut [f32],
    rows: usize,
    cols: usize,
    scale: f32,
) {
    for r in 0..rows {
        let (z, t) = (&logits[r * cols..(r + 1) * cols], &targets[r * cols..(r + 1) * cols]);
        let p = &mut probs[r * cols..(r + 1) * cols];
        for (p, z) in p.iter_mut().zip(z) {
            *p = z * scale;
        }
        let (max, sum) = softmax_in_place(p);
        let lse = max + sum.ln();
        losses[r] = z.iter().zip(t).map(|(z, t)| t * (lse - z * scale)).sum();
    }
}

pub fn soft_cross_entropy_backward(
    dloss: &[f32],
    probs: &[f32],
    targets: &[f32],
    dlogits: &mut [f32],
    rows: usize,
    cols: usize,
    scale: f32,
) {
    for_rows(&mut dlogits[..rows * cols], cols, |r, dz| {
        let (p, t) = (&probs[r * cols..(r + 1) * cols], &targets[r * cols..(r + 1) * cols]);
        let mass: f32 = t.iter().sum();
        let k = dloss[r] * scale;
        for c in 0..cols {
            dz[c] += k * (p[c] * mass - t[c]);
        }
    });
}

// ---- GPU launchers ----

pub const SHADER: Shader =
    Shader { op: "soft_cross_entropy", source: include_str!("../../../shaders/soft_cross_entropy.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
}

pub fn soft_cross_entropy_forward_gpu(
    gpu: &Gpu,
    logits: &GpuBuf,
    targets: &GpuBuf,
    losses: &GpuBuf,
    probs: &GpuBuf,
    rows: usize,
    cols: usize,
    scale: f32,
) {
    let params = Params { rows: rows as u32, cols: cols as u32, scale };
    let binds = [Bind::Read(logits), Bind::Read(targets), Bind::Write(losses), Bind::Write(probs)];
    gpu.dispatch(&SHADER.entry("forward"), &params, &binds, gpu.groups_1d(rows));
}

pub fn soft_cross_entropy_backward_gpu(
    gpu: &Gpu,
    dloss: &GpuBuf,
    probs: &GpuBuf,
    targets: &GpuBuf,
    dlogits: &GpuBuf,
    rows: usize,
    cols: usize,
    scale: f32,
) {
    let params = Params { rows: rows as u32, cols: cols as u32, scale };
    let binds = [Bind::Read(dloss), Bind::Read(probs), Bind::Read(targets), Bind::Write(dlogits)];
    gpu.dispatch(&SHADER.entry("backward"), &params, &binds, gpu.groups_1d(rows));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    fn forward(z: &[f32], t: &[f32], rows: usize, cols: usize, scale: f32) -> (Vec<f32>, Vec<f32>) {
        let (mut l, mut p) = (vec![0.0; rows], vec![0.0; rows * cols]);
        soft_cross_entropy_forward(z, t, &mut l, &mut p, rows, cols, scale);
        (l, p)
    }

    /// Targets: row 0 a distribution, row 1 the sum of two (mass 2), row 2 one-hot.
    fn targets(cols: usize) -> Vec<f32> {
        let mut t = vec![0.0; 3 * cols];
        let mut p = vec![0.0; cols];
        crate::ops::softmax::softmax_forward(&randn(cols, 11), &mut p, 1, cols);
        t[..cols].copy_from_slice(&p);
        let mut q = vec![0.0; cols];
        crate::ops::softmax::softmax_forward(&randn(cols, 12), &mut q, 1, cols);
        for c in 0..cols {
            t[cols + c] = p[c] + q[c];
        }
        t[2 * cols + 1] = 1.0;
        t
    }

    #[test]
    fn soft_cross_entropy_with_a_one_hot_target_is_cross_entropy() {
        let (rows, cols) = (3, 5);
        let z = randn(rows * cols, 1);
        let (l, p) = forward(&z, &targets(cols), rows, cols, 1.0);
        let labels = [f32::from_bits(1); 1];
        let (mut l1, mut p1) = (vec![0.0; 1], vec![0.0; cols]);
        crate::ops::cross_entropy::cross_entropy_forward(&z[2 * cols..], &labels, &mut l1, &mut p1, 1, cols);
        assert_close("loss", &l[2..], &l1, 1e-6, 1e-6);
        assert_close("probs", &p[2 * cols..], &p1, 1e-7, 1e-6);
    }

    #[test]
    fn soft_cross_entropy_backward_matches_finite_differences() {
        let (rows, cols) = (3, 7);
        let z = randn(rows * cols, 2);
        let t = targets(cols);
        let dloss = [0.5, -1.5, 2.0];
        let scale = 1.0 / 0.3;
        let loss = |z: &[f32]| weighted_sum(&forward(z, &t, rows, cols, scale).0, &dloss);
        let (_, p) = forward(&z, &t, rows, cols, scale);
        let mut dz = vec![0.0; rows * cols];
        soft_cross_entropy_backward(&dloss, &p, &t, &mut dz, rows, cols, scale);
        assert_close_f64("dlogits", &dz, &finite_diff(&z, 1e-3, loss), 2e-3, 2e-3);
    }

    #[test]
    fn gpu_soft_cross_entropy_matches_reference_on_awkward_sizes() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        // 37 rows of 70 (not a multiple of the 64-wide workgroup), then 3 rows of 1000.
        for (rows, cols) in [(37, 70), (3, 1000)] {
            let z: Vec<f32> = randn(rows * cols, 1).iter().map(|v| v * 0.3).collect();
            let t: Vec<f32> = randn(rows * cols, 2).iter().map(|v| v.abs() / cols as f32).collect();
            let (dloss, dz0) = (randn(rows, 3), randn(rows * cols, 4));
            let scale = 10.0;
            let (l, p) = forward(&z, &t, rows, cols, scale);
            let mut dz = dz0.clone();
            soft_cross_entropy_backward(&dloss, &p, &t, &mut dz, rows, cols, scale);
            let (gz, gt, gl, gp) = (gpu.upload(&z), gpu.upload(&t), gpu.alloc(rows), gpu.alloc(rows * cols));
            gpu.soft_cross_entropy_forward(&gz, &gt, &gl, &gp, rows, cols, scale);
            let gdz = gpu.upload(&dz0);
            gpu.soft_cross_entropy_backward(&gpu.upload(&dloss), &gp, &gt, &gdz, rows, cols, scale);
            let read = |b| crate::block_on(gpu.read(b));
            assert_close("losses", &read(&gl), &l, 1e-5, 1e-5);
            assert_close("probs", &read(&gp), &p, 1e-6, 1e-4);
            assert_close("dlogits", &read(&gdz), &dz, 1e-5, 1e-4);
        }
    }
}
