//! Softmax cross-entropy per row, `loss = logsumexp(z) − z[label]`; backward
//! `dz += dloss · (softmax(z) − onehot)`. The mean over a batch is `dloss = 1/rows`.
//! Labels are u32 words (stored bit-for-bit in the f32 buffer). Shader:
//! `shaders/cross_entropy.wgsl`.
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

pub fn cross_entropy_forward(
    logits: &[f32],
    labels: &[f32],
    losses: &mut [f32],
    probs: &mut [f32],
    rows: usize,
    classes: usize,
) {
    for r in 0..rows {
        let z = &logits[r * classes..(r + 1) * classes];
        let max = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = z.iter().map(|v| (v - max).exp()).sum();
        for c in 0..classes {
            probs[r * classes + c] = (z[c] - max).exp() / sum;
        }
        let label = labels[r].to_bits() as usize;
        assert!(label < classes, "label {label} out of range for {classes} classes");
        losses[r] = max + sum.ln() - z[label];
    }
}

pub fn cross_entropy_backward(
    dloss: &[f32],
    probs: &[f32],
    labels: &[f32],
    dlogits: &mut [f32],
    rows: usize,
    classes: usize,
) {
    for r in 0..rows {
        let label = labels[r].to_bits() as usize;
        for c in 0..classes {
            let onehot = if c == label { 1.0 } else { 0.0 };
            dlogits[r * classes + c] += dloss[r] * (probs[r * classes + c] - onehot);
        }
    }
}

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "cross_entropy", source: include_str!("../../../shaders/cross_entropy.wgsl") };

pub fn cross_entropy_forward_gpu(
    gpu: &Gpu,
    logits: &GpuBuf,
    labels: &GpuBuf,
    losses: &GpuBuf,
    probs: &GpuBuf,
    rows: usize,
    classes: usize,
) {
    let params = [rows as u32, classes as u32];
    let binds = [Bind::Read(logits), Bind::Read(labels), Bind::Write(losses), Bind::Write(probs)];
    gpu.dispatch(&SHADER.entry("forward"), &params, &binds, gpu.groups_1d(rows.div_ceil(64)));
}

pub fn cross_entropy_backward_gpu(
    gpu: &Gpu,
    dloss: &GpuBuf,
    probs: &GpuBuf,
    labels: &GpuBuf,
    dlogits: &GpuBuf,
    rows: usize,
    classes: usize,
) {
    let params = [rows as u32, classes as u32];
    let binds = [Bind::Read(dloss), Bind::Read(probs), Bind::Read(labels), Bind::Write(dlogits)];
    gpu.dispatch(&SHADER.entry("backward"), &params, &binds, gpu.groups_1d((rows * classes).div_ceil(64)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    #[test]
    fn cross_entropy_backward_matches_finite_differences() {
        let (rows, classes) = (3, 4);
        let z = randn(rows * classes, 8);
        let labels: Vec<f32> = [2u32, 0, 3].iter().map(|l| f32::from_bits(*l)).collect();
        let loss = |z: &[f32]| {
            let (mut l, mut p) = (vec![0.0; rows], vec![0.0; rows * classes]);
            cross_entropy_forward(z, &labels, &mut l, &mut p, rows, classes);
            l.iter().map(|v| *v as f64).sum::<f64>() / rows as f64
        };
        let (mut l, mut p) = (vec![0.0; rows], vec![0.0; rows * classes]);
        cross_entropy_forward(&z, &labels, &mut l, &mut p, rows, classes);
        let mut dz = vec![0.0; rows * classes];
        cross_entropy_backward(&[1.0 / rows as f32; 3], &p, &labels, &mut dz, rows, classes);
        assert_close_f64("dz", &dz, &finite_diff(&z, 1e-3, loss), 1e-3, 1e-3);
    }

    #[test]
    fn gpu_cross_entropy_matches_reference() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        let (rows, classes) = (65, 10);
        let z: Vec<f32> = randn(rows * classes, 1).iter().map(|v| v * 5.0).collect();
        let labels_u32: Vec<u32> = (0..rows as u32).map(|r| (r * 7) % classes as u32).collect();
        let labels: Vec<f32> = labels_u32.iter().map(|l| f32::from_bits(*l)).collect();
        let (dloss, dz0) = (randn(rows, 2), randn(rows * classes, 3));
        let (mut l, mut p) = (vec![0.0; rows], vec![0.0; rows * classes]);
        cross_entropy_forward(&z, &labels, &mut l, &mut p, rows, classes);
        let mut dz = dz0.clone();
        cross_entropy_backward(&dloss, &p, &labels, &mut dz, rows, classes);
        let (gz, glab) = (gpu.upload(&z), gpu.upload_u32(&labels_u32));
        let (gl, gp) = (gpu.alloc(rows), gpu.alloc(rows * classes));
        gpu.cross_entropy_forward(&gz, &glab, &gl, &gp, rows, classes);
        let (gdl, gdz) = (gpu.upload(&dloss), gpu.upload(&dz0));
        gpu.cross_entropy_backward(&gdl, &gp, &glab, &gdz, rows, classes);
        assert_close("losses", &crate::block_on(gpu.read(&gl)), &l, 1e-5, 1e-5);
        assert_close("probs", &crate::block_on(gpu.read(&gp)), &p, 1e-6, 1e-5);
        assert_close("dlogits", &crate::block_on(gpu.read(&gdz)), &dz, 1e-5, 1e-5);
    }
}
