// Softmax cross-entropy per row: loss = logsumexp(z) − z[label], probs = softmax(z)
// saved for backward; backward dz += dloss · (probs − onehot(label)).
//
// Parallel plan: `forward` runs one invocation per row (rows are the batch, classes
// are few); `backward` one invocation per logit. 2-D folded grids.

override WG: u32 = 64u;

struct Params {
    rows: u32,
    classes: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(logits, labels, losses, probs)
@group(0) @binding(1) var<storage, read> logits: array<f32>; // [rows, classes]
@group(0) @binding(2) var<storage, read> labels: array<u32>; // [rows]
@group(0) @binding(3) var<storage, read_write> losses: array<f32>; // [rows]
@group(0) @binding(4) var<storage, read_write> probs: array<f32>; // [rows, classes]

// backward(dloss, probs, labels, dlogits)
@group(0) @binding(1) var<storage, read> dloss: array<f32>; // [rows]
@group(0) @binding(2) var<storage, read> bw_probs: array<f32>; // [rows, classes]
@group(0) @binding(3) var<storage, read> bw_labels: array<u32>; // [rows]
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>; // [rows, classes]

fn index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + li;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = index(wid, nwg, li);
    if r >= p.rows {
        return;
    }
    let base = r * p.classes;
    var mx = logits[base];
    for (var c = 1u; c < p.classes; c++) {
        mx = max(mx, logits[base + c]);
    }
    var sum = 0.0;
    for (var c = 0u; c < p.classes; c++) {
        sum += exp(logits[base + c] - mx);
    }
    let inv = 1.0 / sum;
    for (var c = 0u; c < p.classes; c++) {
        probs[base + c] = exp(logits[base + c] - mx) * inv;
    }
    let label = min(labels[r], p.classes - 1u);
    losses[r] = mx + log(sum) - logits[base + label];
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    if i >= p.rows * p.classes {
        return;
    }
    let r = i / p.classes;
    let c = i % p.classes;
    let onehot = select(0.0, 1.0, c == bw_labels[r]);
    dlogits[i] += dloss[r] * (bw_probs[i] - onehot);
}
