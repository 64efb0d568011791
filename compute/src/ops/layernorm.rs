//! LayerNorm over the last dimension: `y = (x − μ) · rstd · w + b`,
//! `rstd = 1/sqrt(var + eps)` with the biased variance, as `torch.nn.LayerNorm`.
//! Shader: `shaders/layernorm.wgsl`.
use super::for_rows;
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

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

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "layernorm", source: include_str!("../../../shaders/layernorm.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward_gpu(
    gpu: &Gpu,
    x: &GpuBuf,
    weight: &GpuBuf,
    bias: &GpuBuf,
    y: &GpuBuf,
    mean: &GpuBuf,
    rstd: &GpuBuf,
    rows: usize,
    cols: usize,
    eps: f32,
) {
    let params = Params { rows: rows as u32, cols: cols as u32, eps };
    let binds =
        [Bind::Read(x), Bind::Read(weight), Bind::Read(bias), Bind::Write(y), Bind::Write(mean), Bind::Write(rstd)];
    gpu.dispatch(&SHADER.entry("forward"), &params, &binds, gpu.groups_1d(rows));
}

#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward_gpu(
    gpu: &Gpu,
    dy: &GpuBuf,
    x: &GpuBuf,
    weight: &GpuBuf,
    mean: &GpuBuf,
    rstd: &GpuBuf,
    dx: &GpuBuf,
    dweight: &GpuBuf,
    dbias: &GpuBuf,
    rows: usize,
    cols: usize,
) {
    let params = Params { rows: rows as u32, cols: cols as u32, eps: 0.0 };
    let binds = [
        Bind::Read(dy),
        Bind::Read(x),
        Bind::Read(weight),
        Bind::Read(mean),
        Bind::Read(rstd),
        Bind::Write(dx),
        Bind::Write(dweight),
        Bind::Write(dbias),
    ];
    gpu.dispatch(&SHADER.entry("backward_input"), &params, &binds, gpu.groups_1d(rows));
    gpu.dispatch(&SHADER.entry("backward_params"), &params, &binds, [cols.div_ceil(64) as u32, 1, 1]);
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

    #[test]
    fn gpu_layernorm_matches_reference_on_17_tokens() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        // 2 × 17 tokens; 70 columns is not a multiple of the 64-wide workgroup.
        let (rows, cols) = (34, 70);
        let x: Vec<f32> = randn(rows * cols, 1).iter().map(|v| v * 3.0 + 1.0).collect();
        let (w, b, dy) = (randn(cols, 2), randn(cols, 3), randn(rows * cols, 4));
        let (mut y, mut m, mut s) = (vec![0.0; rows * cols], vec![0.0; rows], vec![0.0; rows]);
        layernorm_forward(&x, &w, &b, &mut y, &mut m, &mut s, rows, cols, 1e-6);
        let (dx0, dw0, db0) = (randn(rows * cols, 5), randn(cols, 6), randn(cols, 7));
        let (mut dx, mut dw, mut db) = (dx0.clone(), dw0.clone(), db0.clone());
        layernorm_backward(&dy, &x, &w, &m, &s, &mut dx, &mut dw, &mut db, rows, cols);

        let (gx, gw, gb) = (gpu.upload(&x), gpu.upload(&w), gpu.upload(&b));
        let (gy, gm, gs) = (gpu.alloc(rows * cols), gpu.alloc(rows), gpu.alloc(rows));
        gpu.layernorm_forward(&gx, &gw, &gb, &gy, &gm, &gs, rows, cols, 1e-6);
        let (gdy, gdx, gdw, gdb) = (gpu.upload(&dy), gpu.upload(&dx0), gpu.upload(&dw0), gpu.upload(&db0));
        gpu.layernorm_backward(&gdy, &gx, &gw, &gm, &gs, &gdx, &gdw, &gdb, rows, cols);
        let read = |b| crate::block_on(gpu.read(b));
        assert_close("y", &read(&gy), &y, 1e-5, 1e-5);
        assert_close("mean", &read(&gm), &m, 1e-5, 1e-5);
        assert_close("rstd", &read(&gs), &s, 1e-5, 1e-5);
        assert_close("dx", &read(&gdx), &dx, 1e-5, 1e-4);
        assert_close("dweight", &read(&gdw), &dw, 1e-4, 1e-4);
        assert_close("dbias", &read(&gdb), &db, 1e-4, 1e-4);
    }
}
