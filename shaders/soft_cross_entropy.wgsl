// Cross-entropy against a soft target with a temperature, per row:
//   z = scale · logits,  probs = softmax(z),  loss = −Σ_c target_c · log_softmax(z)_c
//                                                  = Σ_c target_c · (logsumexp(z) − z_c).
// Backward (targets need not sum to one): dlogits += dloss · scale · (probs · Σ target − target).
//
// Parallel plan: one workgroup per row (rows are crops × batch, or patch tokens; columns
// are the head's out_dim, up to 65536): WG invocations stride over the columns and
// combine max, sums and dot products by a tree in workgroup memory. Rows fold into a
// 2-D grid past 65535 workgroups.

override WG: u32 = 64u; // invocations per row, a power of two

struct Params {
    rows: u32,
    cols: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(logits, targets, losses, probs)
@group(0) @binding(1) var<storage, read> logits: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> targets: array<f32>; // [rows, cols]
@group(0) @binding(3) var<storage, read_write> losses: array<f32>; // [rows]
@group(0) @binding(4) var<storage, read_write> probs: array<f32>; // [rows, cols]

// backward(dloss, probs, targets, dlogits)
@group(0) @binding(1) var<storage, read> dloss: array<f32>; // [rows]
@group(0) @binding(2) var<storage, read> bw_probs: array<f32>; // [rows, cols]
@group(0) @binding(3) var<storage, read> bw_targets: array<f32>; // [rows, cols]
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>; // [rows, cols]

var<workgroup> red: array<f32, WG>;

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
    // -f32::MAX (the literal -3.4028235e38 rounds past it and Tint, in Chromium, rejects it)
    var m = -3.4028234663852886e38;
    for (var c = li; c < p.cols; c += WG) {
        m = max(m, logits[base + c] * p.scale);
    }
    let mx = workgroup_max(li, m);
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += exp(logits[base + c] * p.scale - mx);
    }
    let sum = workgroup_sum(li, s);
    let lse = mx + log(sum);
    let inv = 1.0 / sum;
    var l = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        let z = logits[base + c] * p.scale;
        probs[base + c] = exp(z - mx) * inv;
        l += targets[base + c] * (lse - z);
    }
    let loss = workgroup_sum(li, l);
    if li == 0u {
        losses[r] = loss;
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
    var s = 0.0;
    for (var c = li; c < p.cols; c += WG) {
        s += bw_targets[base + c];
    }
    let mass = workgroup_sum(li, s);
    let k = dloss[r] * p.scale;
    for (var c = li; c < p.cols; c += WG) {
        dlogits[base + c] += k * (bw_probs[base + c] * mass - bw_targets[base + c]);
    }
}
