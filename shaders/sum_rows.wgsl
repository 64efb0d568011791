// Column sums added into out: `out[c] += Σ_r x[r, c]` (a linear layer's bias gradient).
//
// Parallel plan: one workgroup per strip of WX columns; its WY rows of invocations walk
// the rows with stride WY (reads along a row are contiguous across lid.x), then the WY
// partial sums of each column are reduced in workgroup memory by a tree.

override WX: u32 = 64u; // columns per workgroup
override WY: u32 = 4u; // row walkers, a power of two

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [cols]

var<workgroup> partial: array<f32, WX * WY>; // [ly * WX + lx]

@compute @workgroup_size(WX, WY)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wid.x * WX + lid.x;
    var s = 0.0;
    if col < p.cols {
        for (var r = lid.y; r < p.rows; r += WY) {
            s += x[r * p.cols + col];
        }
    }
    partial[lid.y * WX + lid.x] = s;
    workgroupBarrier();
    for (var half = WY / 2u; half > 0u; half /= 2u) {
        if lid.y < half {
            partial[lid.y * WX + lid.x] += partial[(lid.y + half) * WX + lid.x];
        }
        workgroupBarrier();
    }
    if lid.y == 0u && col < p.cols {
        out[col] += partial[lid.x];
    }
}
