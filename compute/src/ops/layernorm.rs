//! LayerNorm over the last dimension: `y = (x − μ) · rstd · w + b`,
//! `rstd = 1/sqrt(var + eps)` with the biased variance, as `torch.nn.LayerNorm`.
//! Shader: `shaders/layernorm.wgsl`.
use super::for_rows;

#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    rows: usize,
    cols: usize,
    eps: f32,
) {
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        let mu = xr.iter().map(|v| *v as f64).sum::<f64>() / cols as f64;
        let var = xr.iter().map(|v| (*v as f64 - mu).powi(2)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        mean[r] = mu as f32;
        rstd[r] = rs as f32;
    }
    let (mean, rstd) = (&*mean, &*rstd);
    for_rows(&mut y[..rows * cols], cols, |r, yr| {
        let xr = &x[r * cols..(r + 1) * cols];
        for c in 0..cols {
            yr[c] = (xr[c] - mean[r]) * rstd[r] * weight[c] + bias[c];
        }
    });
}

/// With `x̂ = (x − μ)·rstd` and `g = dy ⊙ w`:
/// `dx += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂))`, `dw += Σ_rows dy ⊙ x̂`, `db += Σ_rows dy`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    rows: usize,
    cols: usize,
) {
    for_rows(&mut dx[..rows * cols], cols, |r, dxr| {
        let (xr, dyr) = (&x[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let (mut g_mean, mut gx_mean) = (0f32, 0f32);
        for c in 0..cols {
            let xhat = (xr[c] - mean[r]) * rstd[r];
            let g = dyr[c] * weight[c];
            g_mean += g;
            gx_mean += g * xhat;
        }
        g_mean /= cols as f32;
        gx_mean /= cols as f32;
        for c in 0..cols {
            let xhat = (xr[c] - mean[r]) * rstd[r];
            let g = dyr[c] * weight[c];
            dxr[c] += rstd[r] * (g - g_mean - xhat * gx_mean);
        }
    });
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            let xhat = (x[i] - mean[r]) * rstd[r];
            dweight[c] += dy[i] * xhat;
            dbias[c] += dy[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    #[test]
    fn layernorm_backward_matches_finite_differences() {
        let (rows, cols) = (3, 7);
        let x = randn(rows * cols, 1);
        let w = randn(cols, 2);
        let b = randn(cols, 3);
        let out_w = randn(rows * cols, 4);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0.0; rows * cols];
            let (mut m, mut s) = (vec![0.0; rows], vec![0.0; rows]);
            layernorm_forward(x, w, b, &mut y, &mut m, &mut s, rows, cols, 1e-6);
            weighted_sum(&y, &out_w)
        };
        let mut y = vec![0.0; rows * cols];
        let (mut m, mut s) = (vec![0.0; rows], vec![0.0; rows]);
        layernorm_forward(&x, &w, &b, &mut y, &mut m, &mut s, rows, cols, 1e-6);
        let (mut dx, mut dw, mut db) = (vec![0.0; rows * cols], vec![0.0; cols], vec![0.0; cols]);
        layernorm_backward(&out_w, &x, &w, &m, &s, &mut dx, &mut dw, &mut db, rows, cols);
        assert_close_f64("dx", &dx, &finite_diff(&x, 1e-3, |x| loss(x, &w, &b)), 2e-3, 2e-3);
        assert_close_f64("dw", &dw, &finite_diff(&w, 1e-3, |w| loss(&x, w, &b)), 2e-3, 2e-3);
        assert_close_f64("db", &db, &finite_diff(&b, 1e-3, |b| loss(&x, &w, b)), 2e-3, 2e-3);
    }

    #[test]
    fn layernorm_output_has_zero_mean_unit_variance() {
        let x = randn(2 * 64, 9);
        let mut y = vec![0.0; 128];
        let (mut m, mut s) = (vec![0.0; 2], vec![0.0; 2]);
        layernorm_forward(&x, &[1.0; 64], &[0.0; 64], &mut y, &mut m, &mut s, 2, 64, 1e-6);
        for r in y.chunks(64) {
            let mu: f32 = r.iter().sum::<f32>() / 64.0;
            let var: f32 = r.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / 64.0;
            assert!(mu.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "mean {mu} var {var}");
        }
    }
}
// GPU-STUB
#[allow(clippy::too_many_arguments, unused)]
pub fn layernorm_forward_gpu(
    g: &crate::gpu::Gpu,
    x: &crate::gpu::GpuBuf,
    w: &crate::gpu::GpuBuf,
    b: &crate::gpu::GpuBuf,
    y: &crate::gpu::GpuBuf,
    m: &crate::gpu::GpuBuf,
    r: &crate::gpu::GpuBuf,
    rows: usize,
    cols: usize,
    eps: f32,
) {
    unimplemented!()
}
#[allow(clippy::too_many_arguments, unused)]
pub fn layernorm_backward_gpu(
    g: &crate::gpu::Gpu,
    dy: &crate::gpu::GpuBuf,
    x: &crate::gpu::GpuBuf,
    w: &crate::gpu::GpuBuf,
    m: &crate::gpu::GpuBuf,
    r: &crate::gpu::GpuBuf,
    dx: &crate::gpu::GpuBuf,
    dw: &crate::gpu::GpuBuf,
    db: &crate::gpu::GpuBuf,
    rows: usize,
    cols: usize,
) {
    unimplemented!()
}
