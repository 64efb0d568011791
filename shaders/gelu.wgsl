// Exact GELU, as nn.GELU() (not the tanh approximation):
//   y = x·Φ(x) = ½x(1 + erf(x/√2)),   dy/dx = Φ(x) + x·φ(x),  φ(x) = e^{−x²/2}/√(2π).
// WGSL has no erf: Abramowitz & Stegun 7.1.26, erf(z) ≈ 1 − t(a1 + t(a2 + … a5))·e^{−z²}
// with t = 1/(1 + p·z) for z ≥ 0 and erf(−z) = −erf(z); its absolute error is below
// 1.5e-7 (checked against libm in ops/gelu.rs).
//
// Parallel plan: one invocation per element, 2-D folded grid as in add.wgsl.

override WG: u32 = 256u;

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(x, y)
@group(0) @binding(1) var<storage, read> x: array<f32>; // [n]
@group(0) @binding(2) var<storage, read_write> y: array<f32>; // [n]

// backward(dy, x, dx)
@group(0) @binding(1) var<storage, read> dy: array<f32>; // [n]
@group(0) @binding(2) var<storage, read> bw_x: array<f32>; // [n]
@group(0) @binding(3) var<storage, read_write> dx: array<f32>; // [n]

fn erf(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(z) * (1.0 - poly * exp(-a * a));
}

fn cdf(v: f32) -> f32 {
    return 0.5 * (1.0 + erf(v * 0.70710678118654752));
}

fn index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + li;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    if i < p.n {
        let v = x[i];
        y[i] = v * cdf(v);
    }
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    if i < p.n {
        let v = bw_x[i];
        let pdf = exp(-0.5 * v * v) * 0.3989422804014327;
        dx[i] += dy[i] * (cdf(v) + v * pdf);
    }
}
