// DINO's teacher centring and sharpening, and the centre's EMA:
//   sharpen: q = softmax((x − center) / temp) per row (no gradient flows through it);
//   update:  center ← m · center + (1 − m) · mean_r x[r].
//
// Parallel plan: `sharpen` runs one workgroup per row, WG invocations striding over the
// columns with tree reductions for the max and the sum, as softmax over wide rows
// needs (out_dim up to 65536); rows fold into a 2-D grid. `update` runs one workgroup
// per strip of PX columns with PY invocations walking the rows, then a tree over PY, as
// sum_rows.wgsl; it reads `center` before writing it, within the same invocation.

override WG: u32 = 64u; // sharpen: invocations per row, a power of two
override PX: u32 = 64u; // update: columns per workgroup
override PY: u32 = 4u; // update: row walkers, a power of two

struct Params {
    rows: u32,
    cols: u32,
    value: f32, // sharpen: temp; update: momentum
}

@group(0) @binding(0) var<uniform> p: Params;

// sharpen(x, center, q)
@group(0) @binding(1) var<storage, read> x: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> center: array<f32>; // [cols]
@group(0) @binding(3) var<storage, read_write> q: array<f32>; // [rows, cols]

// update(x, center)
@group(0) @binding(1) var<storage, read> up_x: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read_write> up_center: array<f32>; // [cols]

var<workgroup> red: array<f32, WG>;
var<workgroup> partial: array<f32, PX * PY>; // [ly * PX + lx]

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

fn workgroup_max(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if li < half {
            red[li] = max(red[li], red[li + half]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn sharpen(
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
    // -f32::MAX (the literal -3.4028235e38 rounds past it and Tint, in Chromium, rejects it)
    var m = -3.4028234663852886e38;
    for (var c = li; c < p.cols; c += WG) {
        m = max(m, (x[base + c] - center[c]) / p.value);
    }
    let mx = workgroup_max(li, m);
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += exp((x[base + c] - center[c]) / p.value - mx);
    }
    let inv = 1.0 / workgroup_sum(li, s);
    for (var c = li; c < p.cols; c += WG) {
        q[base + c] = exp((x[base + c] - center[c]) / p.value - mx) * inv;
    }
}

@compute @workgroup_size(PX, PY)
fn update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.x * PX + lid.x;
    var s = 0.0;
    if c < p.cols {
        for (var r = lid.y; r < p.rows; r += PY) {
            s += up_x[r * p.cols + c];
        }
    }
    let slot = lid.y * PX + lid.x;
    partial[slot] = s;
    workgroupBarrier();
    for (var half = PY / 2u; half > 0u; half /= 2u) {
        if lid.y < half {
            partial[slot] += partial[slot + half * PX];
        }
        workgroupBarrier();
    }
    if lid.y == 0u && c < p.cols {
        let mean = partial[lid.x] / f32(p.rows);
        up_center[c] = up_center[c] * p.value + mean * (1.0 - p.value);
    }
}
