// Set every word of a buffer to one value (`fill(g, 0.0)` is a clear instead).
//
// Parallel plan: one invocation per element, folded 2-D grid as in add.wgsl.

override WG: u32 = 256u;

struct Params {
    n: u32,
    value: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> buf: array<f32>; // [n]

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if i < p.n {
        buf[i] = p.value;
    }
}
