//! Exact GELU, `y = x · Φ(x) = ½x(1 + erf(x/√2))`, as `nn.GELU()` (not the tanh
//! approximation). `dy/dx = Φ(x) + x·φ(x)`. Shader: `shaders/gelu.wgsl`.
use super::for_chunks;

const CHUNK: usize = 4096;

pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

pub fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
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
}
// GPU-STUB
#[allow(unused)]
pub fn gelu_forward_gpu(g: &crate::gpu::Gpu, x: &crate::gpu::GpuBuf, y: &crate::gpu::GpuBuf, n: usize) {
    unimplemented!()
}
#[allow(unused)]
pub fn gelu_backward_gpu(
    g: &crate::gpu::Gpu,
    dy: &crate::gpu::GpuBuf,
    x: &crate::gpu::GpuBuf,
    dx: &crate::gpu::GpuBuf,
    n: usize,
) {
    unimplemented!()
}
