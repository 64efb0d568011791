//! Mean squared error per row, `loss[r] = mean_c (pred − target)²`; a weighted sum of the
//! rows (`dloss`) gives the plain mean or MAE's loss on masked patches only.
//! Shader: `shaders/mse.wgsl`.

pub fn mse_forward(pred: &[f32], target: &[f32], losses: &mut [f32], rows: usize, cols: usize) {
    for r in 0..rows {
        let s: f32 = (0..cols).map(|c| (pred[r * cols + c] - target[r * cols + c]).powi(2)).sum();
        losses[r] = s / cols as f32;
    }
}

pub fn mse_backward(dloss: &[f32], pred: &[f32], target: &[f32], dpred: &mut [f32], rows: usize, cols: usize) {
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            dpred[i] += dloss[r] * 2.0 * (pred[i] - target[i]) / cols as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    #[test]
    fn mse_backward_matches_finite_differences() {
        let (rows, cols) = (3, 5);
        let (x, t, w) = (randn(15, 1), randn(15, 2), randn(3, 3));
        let loss = |x: &[f32]| {
            let mut l = vec![0.0; rows];
            mse_forward(x, &t, &mut l, rows, cols);
            weighted_sum(&l, &w)
        };
        let mut dx = vec![0.0; 15];
        mse_backward(&w, &x, &t, &mut dx, rows, cols);
        assert_close_f64("dx", &dx, &finite_diff(&x, 1e-3, loss), 1e-3, 1e-3);
    }
}
// GPU-STUB
#[allow(unused)]
pub fn mse_forward_gpu(
    g: &crate::gpu::Gpu,
    a: &crate::gpu::GpuBuf,
    b: &crate::gpu::GpuBuf,
    c: &crate::gpu::GpuBuf,
    rows: usize,
    cols: usize,
) {
    unimplemented!()
}
#[allow(unused)]
pub fn mse_backward_gpu(
    g: &crate::gpu::Gpu,
    a: &crate::gpu::GpuBuf,
    b: &crate::gpu::GpuBuf,
    c: &crate::gpu::GpuBuf,
    d: &crate::gpu::GpuBuf,
    rows: usize,
    cols: usize,
) {
    unimplemented!()
}
