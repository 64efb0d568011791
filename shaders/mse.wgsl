// Mean squared error per row: loss[r] = mean_c (pred − target)²;
// backward dpred += dloss[r] · 2(pred − target)/cols.
//
// Parallel plan: `forward` runs one invocation per row (a patch's pixels, a few hundred);
// `backward` one invocation per element. 2-D folded grids.

override WG: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(pred, target, losses)
@group(0) @binding(1) var<storage, read> pred: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> tgt: array<f32>; // target [rows, cols] (`target` is reserved in WGSL)
@group(0) @binding(3) var<storage, read_write> losses: array<f32>; // [rows]

// backward(dloss, pred, target, dpred)
@group(0) @binding(1) var<storage, read> dloss: array<f32>; // [rows]
@group(0) @binding(2) var<storage, read> bw_pred: array<f32>; // [rows, cols]
@group(0) @binding(3) var<storage, read> bw_target: array<f32>; // [rows, cols]
@group(0) @binding(4) var<storage, read_write> dpred: array<f32>; // [rows, cols]

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
    var s = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let d = pred[r * p.cols + c] - tgt[r * p.cols + c];
        s += d * d;
    }
    losses[r] = s / f32(p.cols);
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    if i >= p.rows * p.cols {
        return;
    }
    dpred[i] += dloss[i / p.cols] * 2.0 * (bw_pred[i] - bw_target[i]) / f32(p.cols);
}
