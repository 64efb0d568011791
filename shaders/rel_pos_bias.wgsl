// Swin's window-attention score bias, between q·kᵀ·scale and the softmax:
//   scores[bw, h, i, j] += table[index[i·n + j], h] + mask[bw % nw, i, j]
// for window bw of windows = batch·nw, head h, tokens i, j of a window of n tokens. The
// table is the relative position bias table [(2·wh − 1)(2·ww − 1), heads]; the mask (only
// for shifted windows) holds 0 or −100 and is a constant.
// Backward: the scores gradient passes through unchanged (the op is in place), and
//   dtable[t, h] += Σ_bw Σ_{(i, j): index[i·n + j] = t} dscores[bw, h, i, j],
// a many-to-one reduction. WGSL has no float atomics, so the CPU lists, for each table
// row t, the flat positions i·n + j with that index (CSR: offsets [T + 1], entries [n²]).
//
// Parallel plan: `forward` runs one invocation per score, workgroups folded into a 2-D
// grid. `backward` runs one workgroup per (t, h): its WG invocations stride over the
// (bw, entry) pairs of row t and combine their partial sums by a tree in workgroup memory.

override WG: u32 = 64u; // a power of two

struct Params {
    windows: u32,  // batch · nw
    nw: u32,       // windows per image (the mask's first dimension)
    heads: u32,
    n: u32,        // tokens per window
    has_mask: u32, // 1 when `mask` is bound
    rows: u32,     // T, rows of the table
}

@group(0) @binding(0) var<uniform> p: Params;

// forward(scores, table, index, mask)
@group(0) @binding(1) var<storage, read_write> scores: array<f32>; // [windows, heads, n, n]
@group(0) @binding(2) var<storage, read> table: array<f32>;        // [T, heads]
@group(0) @binding(3) var<storage, read> index: array<u32>;        // [n, n], values in 0..T
@group(0) @binding(4) var<storage, read> mask: array<f32>;         // [nw, n, n] (or a dummy)

// backward(dscores, offsets, entries, dtable)
@group(0) @binding(1) var<storage, read> dscores: array<f32>;      // [windows, heads, n, n]
@group(0) @binding(2) var<storage, read> offsets: array<u32>;      // [T + 1]
@group(0) @binding(3) var<storage, read> entries: array<u32>;      // [n²], i·n + j grouped by t
@group(0) @binding(4) var<storage, read_write> dtable: array<f32>; // [T, heads]

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let nn = p.n * p.n;
    let k = (wid.x + wid.y * nwg.x) * WG + li;
    if k >= p.windows * p.heads * nn {
        return;
    }
    let ij = k % nn;
    let h = (k / nn) % p.heads;
    let bw = k / (nn * p.heads);
    var bias = table[index[ij] * p.heads + h];
    if p.has_mask == 1u {
        bias += mask[(bw % p.nw) * nn + ij];
    }
    scores[k] += bias;
}

@compute @workgroup_size(WG)
fn backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let th = wid.x + wid.y * nwg.x; // uniform across the workgroup
    let t = th / p.heads;
    if th >= p.rows * p.heads {
        return; // past the end of a folded grid
    }
    let h = th % p.heads;
    let nn = p.n * p.n;
    let start = offsets[t];
    let count = offsets[t + 1u] - start;
    var sum = 0.0;
    for (var k = li; k < p.windows * count; k += WG) {
        let bw = k / count;
        let ij = entries[start + k % count];
        sum += dscores[(bw * p.heads + h) * nn + ij];
    }
    partial[li] = sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if li < s {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    if li == 0u {
        dtable[t * p.heads + h] += partial[0];
    }
}
