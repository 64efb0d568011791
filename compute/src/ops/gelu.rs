//! Exact GELU, `y = x · Φ(x) = ½x(1 + erf(x/√2))`, as `nn.GELU()` (not the tanh
//! approximation). `dy/dx = Φ(x) + x·φ(x)`. Shader: `shaders/gelu.wgsl`.
use super::{exp, for_chunks};
use crate::gpu::{Bind, Gpu, GpuBuf, Shader};

const CHUNK: usize = 4096;

/// `(Φ(x), φ(x))` with one exponential, `e^{−x²/2}`. Φ is Abramowitz & Stegun 7.1.26 as
/// in `shaders/gelu.wgsl` (absolute error below 1.5e-7), written as `½·erfc(|x|/√2)` for
/// the left tail so that it keeps its relative precision there.
#[inline(always)]
fn cdf_pdf(x: f32) -> (f32, f32) {
    let a = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let e = exp(-a * a);
    let tail = 0.5 * poly * e;
    (if x < 0.0 { tail } else { 1.0 - tail }, e * 0.398_942_3)
}

pub fn gelu(x: f32) -> f32 {
    x * cdf_pdf(x).0
}

pub fn gelu_grad(x: f32) -> f32 {
    let (cdf, pdf) = cdf_pdf(x);
    cdf + x * pdf
}

pub fn gelu_forward(x: &[f32], y: &mut [f32], n: usize) {
    for_chunks(&mut y[..n], CHUNK, |i, out| {
        for (o, v) in out.iter_mut().zip(&x[i * CHUNK..]) {
            *o = gelu(*v);
        }
    });
}

pub fn gelu_backward(dy: &[f32], x: &[f32], dx: &mut [f32], n: usize) {
    for_chunks(&mut dx[..n], CHUNK, |i, out| {
        let base = i * CHUNK;
        for (j, o) in out.iter_mut().enumerate() {
            *o += dy[base + j] * gelu_grad(x[base + j]);
        }
    });
}

// ---- GPU launchers ----

pub const SHADER: Shader = Shader { op: "gelu", source: include_str!("../../../shaders/gelu.wgsl") };

pub fn gelu_forward_gpu(gpu: &Gpu, x: &GpuBuf, y: &GpuBuf, n: usize) {
    let groups = gpu.groups_1d(n.div_ceil(256));
    gpu.dispatch(&SHADER.entry("forward"), &[n as u32], &[Bind::Read(x), Bind::Write(y)], groups);
}

pub fn gelu_backward_gpu(gpu: &Gpu, dy: &GpuBuf, x: &GpuBuf, dx: &GpuBuf, n: usize) {
    let groups = gpu.groups_1d(n.div_ceil(256));
    gpu.dispatch(&SHADER.entry("backward"), &[n as u32], &[Bind::Read(dy), Bind::Read(x), Bind::Write(dx)], groups);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::*;

    #[test]
    fn gelu_backward_matches_finite_differences() {
        let x: Vec<f32> = randn(37, 3).iter().map(|v| v * 3.0).collect();
        let w = randn(37, 4);
        let mut dx = vec![0.0; 37];
        gelu_backward(&w, &x, &mut dx, 37);
        let fd = finite_diff(&x, 1e-3, |x| x.iter().zip(&w).map(|(x, w)| gelu(*x) as f64 * *w as f64).sum());
        assert_close_f64("dx", &dx, &fd, 1e-3, 1e-3);
    }

    #[test]
    fn gelu_is_exact_not_tanh() {
        // torch: F.gelu(torch.tensor(1.0)) = 0.8413447, tanh approximation gives 0.8411920
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6, "{}", gelu(1.0));
        assert!((gelu(-2.5) - -0.015_524_5).abs() < 1e-6, "{}", gelu(-2.5));
    }

    /// Φ against libm's `erff` (the shader uses the same polynomial), and φ against `exp`.
    #[test]
    fn cdf_is_within_3e7_of_libm() {
        let (mut worst, mut worst_pdf) = (0f32, 0f32);
        for i in -10000..=10000 {
            let x = i as f32 * 1e-3;
            let (cdf, pdf) = cdf_pdf(x);
            worst = worst.max((cdf - 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))).abs());
            worst_pdf = worst_pdf.max((pdf - (-0.5 * x * x).exp() * 0.398_942_3).abs());
        }
        assert!(worst < 3e-7, "max |Φ − ½(1 + erff)| = {worst}"); // 1.5e-7 and f32 rounding
        assert!(worst_pdf < 1e-7, "max |φ − φ_libm| = {worst_pdf}");
        assert!(gelu(f32::NAN).is_nan() && gelu_grad(f32::NAN).is_nan());
    }

    #[test]
    fn gpu_gelu_matches_reference() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        use crate::backend::Backend;
        let n = 1000; // not a multiple of the 256-wide workgroup
        let x: Vec<f32> = randn(n, 1).iter().map(|v| v * 3.0).collect();
        let (dy, dx0) = (randn(n, 2), randn(n, 3));
        let mut y = vec![0.0; n];
        gelu_forward(&x, &mut y, n);
        let mut dx = dx0.clone();
        gelu_backward(&dy, &x, &mut dx, n);
        let (gx, gy, gdy, gdx) = (gpu.upload(&x), gpu.alloc(n), gpu.upload(&dy), gpu.upload(&dx0));
        gpu.gelu_forward(&gx, &gy, n);
        gpu.gelu_backward(&gdy, &gx, &gdx, n);
        assert_close("y", &crate::block_on(gpu.read(&gy)), &y, 1e-6, 1e-6);
        assert_close("dx", &crate::block_on(gpu.read(&gdx)), &dx, 2e-6, 1e-5);
    }
}
