// Row-wise softmax, numerically stable: y = exp(x − max) / Σ exp(x − max).
// Backward: dx += y ⊙ (dy − Σ_c dy ⊙ y).
//
// Parallel plan: one invocation per row. Rows are short here (attention rows are the
// token count, 65 or 197) and many (batch · heads · tokens), so a serial walk per row
// keeps every lane busy without barriers; rows fold into a 2-D grid.

override WG: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(x, y)
@group(0) @binding(1) var<storage, read> x: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read_write> y: array<f32>; // [rows, cols]

// backward(dy, y, dx)
@group(0) @binding(1) var<storage, read> dy: array<f32>; // [rows, cols]
@group(0) @binding(2) var<storage, read> bw_y: array<f32>; // [rows, cols]
@group(0) @binding(3) var<storage, read_write> dx: array<f32>; // [rows, cols]

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = (wid.x + wid.y * nwg.x) * WG + li;
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    var mx = x[base];
    for (var c = 1u; c < p.cols; c++) {
        mx = max(mx, x[base + c]);
    }
    var sum = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let e = exp(x[base + c] - mx);
        y[base + c] = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for (var c = 0u; c < p.cols; c++) {
        y[base + c] *= inv;
    }
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let r = (wid.x + wid.y * nwg.x) * WG + li;
    if r >= p.rows {
        return;
    }
    let base = r * p.cols;
    var dot = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        dot += dy[base + c] * bw_y[base + c];
    }
    for (var c = 0u; c < p.cols; c++) {
        dx[base + c] += bw_y[base + c] * (dy[base + c] - dot);
    }
}
