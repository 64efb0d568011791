// Elementwise sum `out = a + b` over n words (residual connections).
//
// Parallel plan: one invocation per element, WG per workgroup; large n folds the
// workgroup grid into two dimensions (index = (wid.x + wid.y·nwg.x)·WG + lid.x).

override WG: u32 = 256u;

struct Params {
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>; // [n]
@group(0) @binding(2) var<storage, read> b: array<f32>; // [n]
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [n]

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if i < p.n {
        out[i] = a[i] + b[i];
    }
}
