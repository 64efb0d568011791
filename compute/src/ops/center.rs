//! DINO's teacher centring and sharpening, and the centre's EMA:
//! `sharpen`: `q[r] = softmax((x[r] − center) / temp)` (the teacher's targets; no gradient);
//! `update`: `center ← m · center + (1 − m) · mean_r x[r]`.
//! iBOT's patch centre is the same op over all patch rows (every image has the same
//! patch count, so the mean of per-image patch means is the mean over rows). Shader:
//! `shaders/center.wgsl`.
use super::{for_rows, softmax_in_place};
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

/// `x, q: [rows, cols]`, `center: [cols]`.
pub fn center_sharpen(x: &[f32], center: &[f32], q: &mut [f32], rows: usize, cols: usize, temp: f32) {
    for_rows(&mut q[..rows * cols], cols, |r, qr| {
        let xr = &x[r * cols..(r + 1) * cols];
        for c in 0..cols {
            qr[c] = (xr[c] - center[c]) / temp;
        }
        softmax_in_place(qr);
    });
}

/// In place on `center: [cols]`; `x: [rows, cols]`.
pub fn center_update(x: &[f32], center: &mut [f32], rows: usize, cols: usize, momentum: f32) {
    for c in 0..cols {
        let mean = (0..rows).map(|r| x[r * cols + c] as f64).sum::<f64>() / rows as f64;
        center[c] = center[c] * momentum + mean as f32 * (1.0 - momentum);
    }
}

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "center", source: include_str!("../../../shaders/center.wgsl") };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    /// `temp` for sharpen, `momentum` for update.
    value: f32,
}

pub fn center_sharpen_gpu(gpu: &Gpu, x: &GpuBuf, center: &GpuBuf, q: &GpuBuf, rows: usize, cols: usize, temp: f32) {
    let params = Params { rows: rows as u32, cols: cols as u32, value: temp };
    let binds = [Bind::Read(x), Bind::Read(center), Bind::Write(q)];
    gpu.dispatch(&SHADER.entry("sharpen"), &params, &binds, gpu.groups_1d(rows));
}

pub fn center_update_gpu(gpu: &Gpu, x: &GpuBuf, center: &GpuBuf, rows: usize, cols: usize, momentum: f32) {
    let params = Params { rows: rows as u32, cols: cols as u32, value: momentum };
    let binds = [Bind::Read(x), Bind::Write(center)];
    gpu.dispatch(&SHADER.entry("update"), &params, &binds, [cols.div_ceil(64) as u32, 1, 1]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    #[test]
    fn sharpen_is_a_softmax_of_the_centred_scaled_rows() {
        let (rows, cols) = (2, 5);
        let x = randn(rows * cols, 1);
        let center = randn(cols, 2);
        let mut q = vec![0.0; rows * cols];
        center_sharpen(&x, &center, &mut q, rows, cols, 0.04);
        let shifted: Vec<f32> = (0..rows * cols).map(|i| (x[i] - center[i % cols]) * 25.0).collect();
        let mut want = vec![0.0; rows * cols];
        crate::ops::softmax::softmax_forward(&shifted, &mut want, rows, cols);
        assert_close("q", &q, &want, 1e-6, 1e-5);
    }

    #[test]
    fn update_moves_the_center_towards_the_batch_mean() {
        let x = [1.0, 10.0, 3.0, 20.0];
        let mut center = [0.0, 1.0];
        center_update(&x, &mut center, 2, 2, 0.75);
        assert_close("center", &center, &[0.5, 4.5], 1e-6, 0.0);
    }

    #[test]
    fn gpu_center_matches_reference_on_awkward_sizes() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        for (rows, cols) in [(37, 70), (300, 5)] {
            let x: Vec<f32> = randn(rows * cols, 1).iter().map(|v| v * 0.3).collect();
            let c0 = randn(cols, 2);
            let mut q = vec![0.0; rows * cols];
            center_sharpen(&x, &c0, &mut q, rows, cols, 0.04);
            let mut c = c0.clone();
            center_update(&x, &mut c, rows, cols, 0.9);
            let (gx, gc, gq) = (gpu.upload(&x), gpu.upload(&c0), gpu.alloc(rows * cols));
            gpu.center_sharpen(&gx, &gc, &gq, rows, cols, 0.04);
            gpu.center_update(&gx, &gc, rows, cols, 0.9);
            let read = |b| crate::block_on(gpu.read(b));
            assert_close("q", &read(&gq), &q, 1e-6, 1e-4);
            assert_close("center", &read(&gc), &c, 1e-6, 1e-5);
        }
    }
}
