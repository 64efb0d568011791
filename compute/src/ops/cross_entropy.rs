//! Softmax cross-entropy per row, `loss = logsumexp(z) − z[label]`; backward
//! `dz += dloss · (softmax(z) − onehot)`. The mean over a batch is `dloss = 1/rows`.
//! Labels are u32 words (stored bit-for-bit in the f32 buffer). Shader:
//! `shaders/cross_entropy.wgsl`.

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
}
// GPU-STUB
#[allow(unused)]
pub fn cross_entropy_forward_gpu(
    g: &crate::gpu::Gpu,
    a: &crate::gpu::GpuBuf,
    b: &crate::gpu::GpuBuf,
    c: &crate::gpu::GpuBuf,
    d: &crate::gpu::GpuBuf,
    rows: usize,
    classes: usize,
) {
    unimplemented!()
}
#[allow(unused)]
pub fn cross_entropy_backward_gpu(
    g: &crate::gpu::Gpu,
    a: &crate::gpu::GpuBuf,
    b: &crate::gpu::GpuBuf,
    c: &crate::gpu::GpuBuf,
    d: &crate::gpu::GpuBuf,
    rows: usize,
    classes: usize,
) {
    unimplemented!()
}
