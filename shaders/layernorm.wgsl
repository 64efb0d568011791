// LayerNorm over the last dimension, as torch.nn.LayerNorm (biased variance):
//   μ = mean(x),  rstd = 1/sqrt(mean((x − μ)²) + eps),  x̂ = (x − μ)·rstd,  y = x̂·w + b.
// Backward, with g = dy ⊙ w:
//   dx += rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)),  dw += Σ_rows dy ⊙ x̂,  db += Σ_rows dy.
//
// Parallel plan: `forward` and `backward_input` run one workgroup per row; its WG
// invocations stride over the columns and combine their partial sums by a tree in
// workgroup memory (two passes for the variance, so no cancellation). `backward_params`
// runs one workgroup per strip of PX columns with PY invocations walking the rows, then
// a tree over PY, as sum_rows.wgsl. Rows fold into a 2-D grid past 65535 workgroups.

override WG: u32 = 64u; // invocations per row, a power of two
override PX: u32 = 64u; // columns per backward_params workgroup
override PY: u32 = 4u; // row walkers per backward_params workgroup, a power of two

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(x, weight, bias, y, mean, rstd)
@group(0) @binding(1) var<storage, read> x: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> weight: array<f32>; // [cols]
@group(0) @binding(3) var<storage, read> bias: array<f32>; // [cols]
@group(0) @binding(4) var<storage, read_write> y: array<f32>; // [rows, cols]
@group(0) @binding(5) var<storage, read_write> mean: array<f32>; // [rows]
@group(0) @binding(6) var<storage, read_write> rstd: array<f32>; // [rows]

// backward(dy, x, weight, mean, rstd, dx, dweight, dbias): the same binding slots, in the
// order of the backward signature (an entry point sees only the variables it uses).
@group(0) @binding(1) var<storage, read> dy: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> bw_x: array<f32>; // [rows, cols]
@group(0) @binding(3) var<storage, read> bw_weight: array<f32>; // [cols]
@group(0) @binding(4) var<storage, read> bw_mean: array<f32>; // [rows]
@group(0) @binding(5) var<storage, read> bw_rstd: array<f32>; // [rows]
@group(0) @binding(6) var<storage, read_write> dx: array<f32>; // [rows, cols]
@group(0) @binding(7) var<storage, read_write> dweight: array<f32>; // [cols]
@group(0) @binding(8) var<storage, read_write> dbias: array<f32>; // [cols]

var<workgroup> red: array<f32, WG>;
var<workgroup> pw: array<f32, PX * PY>; // backward_params partials [ly * PX + lx]
var<workgroup> pb: array<f32, PX * PY>;

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
    let n = f32(p.cols);
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += x[base + c];
    }
    let mu = workgroup_sum(li, s) / n;
    var v = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        let d = x[base + c] - mu;
        v += d * d;
    }
    let rs = inverseSqrt(workgroup_sum(li, v) / n + p.eps);
    for (var c = li; c < p.cols; c += WG) {
        y[base + c] = (x[base + c] - mu) * rs * weight[c] + bias[c];
    }
    if li == 0u {
        mean[r] = mu;
        rstd[r] = rs;
    }
}

@compute @workgroup_size(WG)
fn backward_input(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = wid.x + wid.y * nwg.x;
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    let mu = bw_mean[r];
    let rs = bw_rstd[r];
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        let g = dy[base + c] * bw_weight[c];
        sg += g;
        sgx += g * (bw_x[base + c] - mu) * rs;
    }
    let n = f32(p.cols);
    let g_mean = workgroup_sum(li, sg) / n;
    let gx_mean = workgroup_sum(li, sgx) / n;
    for (var c = li; c < p.cols; c += WG) {
        let xhat = (bw_x[base + c] - mu) * rs;
        let g = dy[base + c] * bw_weight[c];
        dx[base + c] += rs * (g - g_mean - xhat * gx_mean);
    }
}

@compute @workgroup_size(PX, PY)
fn backward_params(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * PX + lid.x;
    var sw = 0.0;
    var sb = 0.0;
    if c < p.cols {
        for (var r = lid.y; r < p.rows; r += PY) {
            let i = r * p.cols + c;
            sw += dy[i] * (bw_x[i] - bw_mean[r]) * bw_rstd[r];
            sb += dy[i];
        }
    }
    let slot = lid.y * PX + lid.x;
    pw[slot] = sw;
    pb[slot] = sb;
    workgroupBarrier();
    for (var half = PY / 2u; half > 0u; half /= 2u) {
        if lid.y < half {
            pw[slot] += pw[slot + half * PX];
            pb[slot] += pb[slot + half * PX];
        }
        workgroupBarrier();
    }
    if lid.y == 0u && c < p.cols {
        dweight[c] += pw[lid.x];
        dbias[c] += pb[lid.x];
    }
}
