// Cut images [b, c, h, w] into non-overlapping p×p patches [b, gh·gw, c·p·p]
// (gh = h/p, gw = w/p, patches in row-major grid order). Element e of a patch is
// (ch, py, px) = (e / p², (e / p) % p, e % p) in ChannelFirst order (a Conv2d weight
// flattened) or (e % c, e / (p·c), (e / c) % p) in ChannelLast order (MAE's patchify).
// The map is a permutation, so backward is the inverse scatter, `dimg[src] += dout`.
//
// Parallel plan: one invocation per patch element, 2-D folded grid; no two
// invocations touch the same image word.

override WG: u32 = 256u;

struct Params {
    b: u32,
    c: u32,
    h: u32,
    w: u32,
    p: u32,
    order: u32, // 0 ChannelFirst, 1 ChannelLast
}

@group(0) @binding(0) var<uniform> pr: Params;

// forward(img, out)
@group(0) @binding(1) var<storage, read> img: array<f32>; // [b, c, h, w]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [b, gh·gw, c·p·p]

// backward(dout, dimg)
@group(0) @binding(1) var<storage, read> dout: array<f32>; // [b, gh·gw, c·p·p]
@group(0) @binding(2) var<storage, read_write> dimg: array<f32>; // [b, c, h, w]

// Image index of patch-tensor element i, as ops::patchify::source_index.
fn source_index(i: u32) -> u32 {
    let p = pr.p;
    let e_len = pr.c * p * p;
    let l_len = (pr.h / p) * (pr.w / p);
    let e = i % e_len;
    let l = (i / e_len) % l_len;
    let n = i / (e_len * l_len);
    let gw = pr.w / p;
    let gy = l / gw;
    let gx = l % gw;
    var ch: u32;
    var py: u32;
    var px: u32;
    if pr.order == 0u {
        ch = e / (p * p);
        py = (e / p) % p;
        px = e % p;
    } else {
        ch = e % pr.c;
        py = e / (p * pr.c);
        px = (e / pr.c) % p;
    }
    return ((n * pr.c + ch) * pr.h + gy * p + py) * pr.w + gx * p + px;
}

fn total() -> u32 {
    return pr.b * pr.c * (pr.h / pr.p) * (pr.w / pr.p) * pr.p * pr.p;
}

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if i < total() {
        out[i] = img[source_index(i)];
    }
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if i < total() {
        let s = source_index(i);
        dimg[s] += dout[i];
    }
}
