// Prepend the class token and add position embeddings (timm's _pos_embed):
//   x[s, 0] = cls + pos[0],   x[s, 1 + l] = patches[s, l] + pos[1 + l].
// Backward: dpatches += dx[:, 1:],  dcls += Σ_s dx[s, 0],  dpos += Σ_s dx[s] (optional).
//
// Parallel plan: `forward` and `backward_patches` run one invocation per element;
// `backward_pos` runs one invocation per (token, channel) of pos, summing over the batch
// in a serial loop (the batch is small; no atomics needed). 2-D folded grids.

override WG: u32 = 256u;

struct Params {
    b: u32,
    l: u32,
    d: u32,
    has_pos: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(patches, cls, pos, x)
@group(0) @binding(1) var<storage, read> patches: array<f32>; // [b, l, d]
@group(0) @binding(2) var<storage, read> cls: array<f32>; // [d]
@group(0) @binding(3) var<storage, read> pos: array<f32>; // [1 + l, d]
@group(0) @binding(4) var<storage, read_write> x: array<f32>; // [b, 1 + l, d]

// backward(dx, dpatches, dcls, dpos)
@group(0) @binding(1) var<storage, read> dx: array<f32>; // [b, 1 + l, d]
@group(0) @binding(2) var<storage, read_write> dpatches: array<f32>; // [b, l, d]
@group(0) @binding(3) var<storage, read_write> dcls: array<f32>; // [d]
@group(0) @binding(4) var<storage, read_write> dpos: array<f32>; // [1 + l, d], written when has_pos

fn index(wid: vec3<u32>, nwg: vec3<u32>, li: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + li;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li);
    let n = p.l + 1u;
    if i >= p.b * n * p.d {
        return;
    }
    let c = i % p.d;
    let t = (i / p.d) % n;
    let s = i / (p.d * n);
    var v: f32;
    if t == 0u {
        v = cls[c];
    } else {
        v = patches[(s * p.l + t - 1u) * p.d + c];
    }
    x[i] = v + pos[t * p.d + c];
}

@compute @workgroup_size(WG)
fn backward_patches(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li); // into dpatches [b, l, d]
    if i >= p.b * p.l * p.d {
        return;
    }
    let c = i % p.d;
    let t = (i / p.d) % p.l;
    let s = i / (p.d * p.l);
    dpatches[i] += dx[(s * (p.l + 1u) + t + 1u) * p.d + c];
}

@compute @workgroup_size(WG)
fn backward_pos(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = index(wid, nwg, li); // into pos [1 + l, d]
    let n = p.l + 1u;
    if i >= n * p.d {
        return;
    }
    var s = 0.0;
    for (var b = 0u; b < p.b; b++) {
        s += dx[b * n * p.d + i];
    }
    if p.has_pos != 0u {
        dpos[i] += s;
    }
    if i < p.d {
        dcls[i] += s;
    }
}
