//! Row L2 normalisation with an optional per-row gain:
//! `y[r] = g[r] · x[r] / max(‖x[r]‖, eps)` (`g = 1` without a gain).
//! Without a gain and with eps 1e-12 it is `F.normalize(x, dim=-1)` (DINO's bottleneck);
//! with the gain and eps 0 it is `nn.utils.weight_norm` over `v: [out, in]`
//! (`w = g · v / ‖v‖` per output row, no eps). Backward, with `n = max(‖x‖, eps)` and
//! `x̂ = x / n`: `dx += g/n · (dy − x̂ (x̂·dy))` (just `g/n · dy` where the eps clamps, as the
//! clamp passes no gradient), `dg += x̂·dy`. Shader: `shaders/l2norm.wgsl`.
use super::for_rows;
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

/// `norm: [rows]` receives the unclamped `‖x[r]‖` for backward.
pub fn l2norm_forward(
    x: &[f32],
    gain: Option<&[f32]>,
    y: &mut [f32],
    norm: &mut [f32],
    rows: usize,
    cols: usize,
    eps: f32,
) {
    for r in 0..rows {
        let xr = &x[r * cols..(r + 1) * cols];
        norm[r] = xr.iter().map(|v| *v as f64 * *v as f64).sum::<f64>().sqrt() as f32;
    }
    let norm = &*norm;
    for_rows(&mut y[..rows * cols], cols, |r, yr| {
        let s = gain.map_or(1.0, |g| g[r]) / norm[r].max(eps);
        for (o, v) in yr.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
            *o = v * s;
        }
    });
}

pub fn l2norm_backward(
    dy: &[f32],
    norm: &[f32],
    x: &[f32],
    gain: Option<&[f32]>,
    dx: &mut [f32],
    mut dgain: Option<&mut [f32]>,
    rows: usize,
    cols: usize,
    eps: f32,
) {
    for r in 0..rows {
        let (xr, dyr) = (&x[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let n = norm[r].max(eps);
        // x̂·dy
        let dot = xr.iter().zip(dyr).map(|(a, b)| a * b).sum::<f32>() / n;
        let g = gain.map_or(1.0, |g| g[r]);
        let clamped = norm[r] <= eps;
        let dxr = &mut dx[r * cols..(r + 1) * cols];
        for c in 0..cols {
            let proj = if clamped { 0.0 } else { xr[c] / n * dot };
            dxr[c] += g / n * (dyr[c] - proj);
        }
        if let Some(dg) = dgain.as_deref_mut() {
            dg[r] += dot;
        }
    }
}

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "l2norm", source: include_str!("../../../shaders/l2norm.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    has_gain: u32,
}

fn params(rows: usize, cols: usize, eps: f32, gain: Option<&GpuBuf>) -> Params {
    Params { rows: rows as u32, cols: cols as u32, eps, has_gain: gain.is_some() as u32 }
}

pub fn l2norm_forward_gpu(
    gpu: &Gpu,
    x: &GpuBuf,
    gain: Option<&GpuBuf>,
    y: &GpuBuf,
    norm: &GpuBuf,
    rows: usize,
    cols: usize,
    eps: f32,
) {
    let binds = [Bind::Read(x), gain.map_or(Bind::Dummy, Bind::Read), Bind::Write(y), Bind::Write(norm)];
    gpu.dispatch(&SHADER.entry("forward"), &params(rows, cols, eps, gain), &binds, gpu.groups_1d(rows));
}

/// Without `dgain`, the gain's gradient goes to a scratch row (a frozen gain).
pub fn l2norm_backward_gpu(
    gpu: &Gpu,
    dy: &GpuBuf,
    norm: &GpuBuf,
    x: &GpuBuf,
    gain: Option<&GpuBuf>,
    dx: &GpuBuf,
    dgain: Option<&GpuBuf>,
    rows: usize,
    cols: usize,
    eps: f32,
) {
    let scratch;
    let dgain = match dgain {
        Some(d) => d,
        None => {
            scratch = gpu.alloc_uncleared(rows);
            &scratch
        }
    };
    let binds = [
        Bind::Read(dy),
        Bind::Read(norm),
        Bind::Read(x),
        gain.map_or(Bind::Dummy, Bind::Read),
        Bind::Write(dx),
        Bind::Write(dgain),
    ];
    gpu.dispatch(&SHADER.entry("backward"), &params(rows, cols, eps, gain), &binds, gpu.groups_1d(rows));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    fn forward(x: &[f32], g: Option<&[f32]>, rows: usize, cols: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
        let (mut y, mut n) = (vec![0.0; rows * cols], vec![0.0; rows]);
        l2norm_forward(x, g, &mut y, &mut n, rows, cols, eps);
        (y, n)
    }

    #[test]
    fn l2norm_rows_have_the_gain_as_norm() {
        let (rows, cols) = (3, 5);
        let (x, g) = (randn(rows * cols, 1), [0.5, 2.0, -1.0]);
        let (y, _) = forward(&x, Some(&g), rows, cols, 0.0);
        for (r, yr) in y.chunks(cols).enumerate() {
            let n = yr.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - g[r].abs()).abs() < 1e-6, "row {r}: norm {n}");
        }
        // A zero row stays zero under F.normalize's eps.
        let (y, n) = forward(&[0.0; 4], None, 1, 4, 1e-12);
        assert_eq!((y, n), (vec![0.0; 4], vec![0.0]));
    }

    #[test]
    fn l2norm_backward_matches_finite_differences() {
        let (rows, cols) = (4, 6);
        let x = randn(rows * cols, 2);
        let g = randn(rows, 3);
        let w = randn(rows * cols, 4);
        for gain in [None, Some(&g[..])] {
            let loss = |x: &[f32], g: Option<&[f32]>| weighted_sum(&forward(x, g, rows, cols, 1e-12).0, &w);
            let (_, n) = forward(&x, gain, rows, cols, 1e-12);
            let (mut dx, mut dg) = (vec![0.0; rows * cols], vec![0.0; rows]);
            l2norm_backward(&w, &n, &x, gain, &mut dx, Some(&mut dg), rows, cols, 1e-12);
            assert_close_f64("dx", &dx, &finite_diff(&x, 1e-3, |x| loss(x, gain)), 1e-3, 1e-3);
            if gain.is_some() {
                assert_close_f64("dgain", &dg, &finite_diff(&g, 1e-3, |g| loss(&x, Some(g))), 1e-3, 1e-3);
            }
        }
    }

    #[test]
    fn l2norm_backward_below_eps_is_the_plain_scale() {
        // ‖x‖ = 5e-4 < eps 1e-3: y = x / eps, so dx = dy / eps.
        let x = [3e-4, -4e-4];
        let (_, n) = forward(&x, None, 1, 2, 1e-3);
        let mut dx = [0.0; 2];
        l2norm_backward(&[1.0, 2.0], &n, &x, None, &mut dx, None, 1, 2, 1e-3);
        assert_close("dx", &dx, &[1000.0, 2000.0], 1e-3, 1e-6);
    }

    #[test]
    fn gpu_l2norm_matches_reference_on_awkward_sizes() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        // 37 rows of 70 (not a multiple of the 64-wide workgroup), then 5 rows of 300.
        for (rows, cols) in [(37, 70), (5, 300)] {
            let x = randn(rows * cols, 1);
            let (g, dy, dx0, dg0) = (randn(rows, 2), randn(rows * cols, 3), randn(rows * cols, 4), randn(rows, 5));
            for (gain, eps) in [(None, 1e-12), (Some(&g[..]), 0.0)] {
                let (y, n) = forward(&x, gain, rows, cols, eps);
                let (mut dx, mut dg) = (dx0.clone(), dg0.clone());
                l2norm_backward(&dy, &n, &x, gain, &mut dx, Some(&mut dg), rows, cols, eps);
                let (gx, gg) = (gpu.upload(&x), gpu.upload(&g));
                let (gy, gn) = (gpu.alloc(rows * cols), gpu.alloc(rows));
                let gain_buf = gain.map(|_| &gg);
                gpu.l2norm_forward(&gx, gain_buf, &gy, &gn, rows, cols, eps);
                let (gdx, gdg) = (gpu.upload(&dx0), gpu.upload(&dg0));
                gpu.l2norm_backward(&gpu.upload(&dy), &gn, &gx, gain_buf, &gdx, Some(&gdg), rows, cols, eps);
                let read = |b| crate::block_on(gpu.read(b));
                assert_close("y", &read(&gy), &y, 1e-6, 1e-5);
                assert_close("norm", &read(&gn), &n, 1e-5, 1e-5);
                assert_close("dx", &read(&gdx), &dx, 1e-5, 1e-4);
                assert_close("dgain", &read(&gdg), &dg, 1e-5, 1e-4);
            }
        }
    }
}
