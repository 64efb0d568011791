// Row L2 normalisation with an optional per-row gain (F.normalize; weight_norm with the
// gain g and eps 0):
//   norm = ‖x‖,  n = max(norm, eps),  y = g · x / n          (g = 1 without a gain)
// Backward, with x̂ = x / n:
//   dx += g/n · (dy − x̂ (x̂·dy))   (g/n · dy where the eps clamps),   dg += x̂·dy.
//
// Parallel plan: one workgroup per row; its WG invocations stride over the columns and
// combine their partial sums by a tree in workgroup memory (rows are a batch of
// bottleneck vectors, or the out_dim rows of a weight-normalised layer). Rows fold into a
// 2-D grid past 65535 workgroups.

override WG: u32 = 64u; // invocations per row, a power of two

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    has_gain: u32, // 1 when `gain` is bound
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(x, gain, y, norm)
@group(0) @binding(1) var<storage, read> x: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> gain: array<f32>; // [rows] (or a dummy)
@group(0) @binding(3) var<storage, read_write> y: array<f32>; // [rows, cols]
@group(0) @binding(4) var<storage, read_write> norm: array<f32>; // [rows]

// backward(dy, norm, x, gain, dx, dgain)
@group(0) @binding(1) var<storage, read> dy: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> bw_norm: array<f32>; // [rows]
@group(0) @binding(3) var<storage, read> bw_x: array<f32>; // [rows, cols]
@group(0) @binding(4) var<storage, read> bw_gain: array<f32>; // [rows] (or a dummy)
@group(0) @binding(5) var<storage, read_write> dx: array<f32>; // [rows, cols]
@group(0) @binding(6) var<storage, read_write> dgain: array<f32>; // [rows] (scratch when frozen)

var<workgroup> red: array<f32, WG>;

// Sum `v` over the workgroup; every invocation gets the total.
fn workgroup_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if li < half {
            red[li] += red[li + half];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    // `r` is uniform over the workgroup, so this exit keeps the barriers uniform.
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += x[base + c] * x[base + c];
    }
    let nrm = sqrt(workgroup_sum(li, s));
    var g = 1.0;
    if p.has_gain == 1u {
        g = gain[r];
    }
    let scale = g / max(nrm, p.eps);
    for (var c = li; c < p.cols; c += WG) {
        y[base + c] = x[base + c] * scale;
    }
    if li == 0u {
        norm[r] = nrm;
    }
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    let n = max(bw_norm[r], p.eps);
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += bw_x[base + c] * dy[base + c];
    }
    let dot = workgroup_sum(li, s) / n; // x̂·dy
    var g = 1.0;
    if p.has_gain == 1u {
        g = bw_gain[r];
    }
    // The clamp passes no gradient: below eps, y = g·x/eps is linear in x.
    let proj = select(dot / n, 0.0, bw_norm[r] <= p.eps);
    for (var c = li; c < p.cols; c += WG) {
        dx[base + c] += g / n * (dy[base + c] - bw_x[base + c] * proj);
    }
    if li == 0u {
        dgain[r] += dot;
    }
}
