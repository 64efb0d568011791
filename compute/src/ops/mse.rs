//! Mean squared error per row, `loss[r] = mean_c (pred − target)²`; a weighted sum of the
//! rows (`dloss`) gives the plain mean or MAE's loss on masked patches only.
//! Shader: `shaders/mse.wgsl`.
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

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

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "mse", source: include_str!("../../../shaders/mse.wgsl") };

pub fn mse_forward_gpu(gpu: &Gpu, pred: &GpuBuf, target: &GpuBuf, losses: &GpuBuf, rows: usize, cols: usize) {
    let params = [rows as u32, cols as u32];
    let binds = [Bind::Read(pred), Bind::Read(target), Bind::Write(losses)];
    gpu.dispatch(&SHADER.entry("forward"), &params, &binds, gpu.groups_1d(rows.div_ceil(64)));
}

pub fn mse_backward_gpu(
    gpu: &Gpu,
    dloss: &GpuBuf,
    pred: &GpuBuf,
    target: &GpuBuf,
    dpred: &GpuBuf,
    rows: usize,
    cols: usize,
) {
    let params = [rows as u32, cols as u32];
    let binds = [Bind::Read(dloss), Bind::Read(pred), Bind::Read(target), Bind::Write(dpred)];
    gpu.dispatch(&SHADER.entry("backward"), &params, &binds, gpu.groups_1d((rows * cols).div_ceil(64)));
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

    #[test]
    fn gpu_mse_matches_reference() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        let (rows, cols) = (65, 48);
        let (x, t, w, dx0) = (randn(rows * cols, 1), randn(rows * cols, 2), randn(rows, 3), randn(rows * cols, 4));
        let mut l = vec![0.0; rows];
        mse_forward(&x, &t, &mut l, rows, cols);
        let mut dx = dx0.clone();
        mse_backward(&w, &x, &t, &mut dx, rows, cols);
        let (gx, gt, gl, gw, gdx) = (gpu.upload(&x), gpu.upload(&t), gpu.alloc(rows), gpu.upload(&w), gpu.upload(&dx0));
        gpu.mse_forward(&gx, &gt, &gl, rows, cols);
        gpu.mse_backward(&gw, &gx, &gt, &gdx, rows, cols);
        assert_close("losses", &crate::block_on(gpu.read(&gl)), &l, 1e-5, 1e-5);
        assert_close("dpred", &crate::block_on(gpu.read(&gdx)), &dx, 1e-6, 1e-5);
    }
}
