//! Row-wise softmax, numerically stable (subtract the row max). Attention's scale is
//! applied by the matmul that produces the scores. Shader: `shaders/softmax.wgsl`.
use super::{for_rows, softmax_in_place};
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

pub fn softmax_forward(x: &[f32], y: &mut [f32], rows: usize, cols: usize) {
    for_rows(&mut y[..rows * cols], cols, |r, yr| {
        yr.copy_from_slice(&x[r * cols..(r + 1) * cols]);
        softmax_in_place(yr);
    });
}

/// `dx += y ⊙ (dy − Σ dy⊙y)`.
pub fn softmax_backward(dy: &[f32], y: &[f32], dx: &mut [f32], rows: usize, cols: usize) {
    for_rows(&mut dx[..rows * cols], cols, |r, dxr| {
        let (yr, dyr) = (&y[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let dot: f32 = yr.iter().zip(dyr).map(|(a, b)| a * b).sum();
        for c in 0..cols {
            dxr[c] += yr[c] * (dyr[c] - dot);
        }
    });
}

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "softmax", source: include_str!("../../../shaders/softmax.wgsl") };

pub fn softmax_forward_gpu(gpu: &Gpu, x: &GpuBuf, y: &GpuBuf, rows: usize, cols: usize) {
    let params = [rows as u32, cols as u32];
    gpu.dispatch(&SHADER.entry("forward"), &params, &[Bind::Read(x), Bind::Write(y)], gpu.groups_1d(rows.div_ceil(64)));
}

pub fn softmax_backward_gpu(gpu: &Gpu, dy: &GpuBuf, y: &GpuBuf, dx: &GpuBuf, rows: usize, cols: usize) {
    let params = [rows as u32, cols as u32];
    let binds = [Bind::Read(dy), Bind::Read(y), Bind::Write(dx)];
    gpu.dispatch(&SHADER.entry("backward"), &params, &binds, gpu.groups_1d(rows.div_ceil(64)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    #[test]
    fn softmax_backward_matches_finite_differences() {
        let (rows, cols) = (3, 5);
        let x = randn(rows * cols, 5);
        let w = randn(rows * cols, 6);
        let loss = |x: &[f32]| {
            let mut y = vec![0.0; rows * cols];
            softmax_forward(x, &mut y, rows, cols);
            weighted_sum(&y, &w)
        };
        let mut y = vec![0.0; rows * cols];
        softmax_forward(&x, &mut y, rows, cols);
        let mut dx = vec![0.0; rows * cols];
        softmax_backward(&w, &y, &mut dx, rows, cols);
        assert_close_f64("dx", &dx, &finite_diff(&x, 1e-3, loss), 1e-3, 1e-3);
    }

    #[test]
    fn softmax_survives_large_logits() {
        let mut y = [0.0; 3];
        softmax_forward(&[1000.0, 1000.0, -1000.0], &mut y, 1, 3);
        assert_close("y", &y, &[0.5, 0.5, 0.0], 1e-6, 0.0);
    }

    #[test]
    fn gpu_softmax_matches_reference_on_attention_rows() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        // 2 images × 3 heads × 17 tokens rows of 17 scores.
        let (rows, cols) = (2 * 3 * 17, 17);
        let x: Vec<f32> = randn(rows * cols, 1).iter().map(|v| v * 4.0).collect();
        let (dy, dx0) = (randn(rows * cols, 2), randn(rows * cols, 3));
        let mut y = vec![0.0; rows * cols];
        softmax_forward(&x, &mut y, rows, cols);
        let mut dx = dx0.clone();
        softmax_backward(&dy, &y, &mut dx, rows, cols);
        let (gx, gy, gdy, gdx) = (gpu.upload(&x), gpu.alloc(rows * cols), gpu.upload(&dy), gpu.upload(&dx0));
        gpu.softmax_forward(&gx, &gy, rows, cols);
        gpu.softmax_backward(&gdy, &gy, &gdx, rows, cols);
        assert_close("y", &crate::block_on(gpu.read(&gy)), &y, 1e-6, 1e-5);
        assert_close("dx", &crate::block_on(gpu.read(&gdx)), &dx, 1e-5, 1e-5);
    }
}
