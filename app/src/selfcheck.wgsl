// Self-check kernel: y[i] = 2 * x[i] + 1 for i < n.
//
// Plan: one invocation per element; the last workgroup is partial whenever n is not a multiple
// of WG, so every invocation checks its index against n before touching memory.
struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;       // [n]
@group(0) @binding(2) var<storage, read_write> y: array<f32>; // [n]

override WG: u32 = 64;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= params.n {
        return;
    }
    y[i] = 2.0 * x[i] + 1.0;
}
