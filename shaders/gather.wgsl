// Row gather: dst[r, :] = src[idx[r], :], or fill[:] (zeros without a fill row) where
// idx[r] is NO_ROW (0xffffffff). MAE keeps its visible tokens, unshuffles the decoder
// input with mask tokens, and drops or adds the class-token row with it; since each
// index map there is injective, every backward is another gather (no scatter-add).
//
// Parallel plan: one invocation per output element; a workgroup covers WG consecutive
// words of dst, so neighbouring invocations read neighbouring words of a source row.
// Large outputs fold the workgroup grid into two dimensions.

override WG: u32 = 256u;

const NO_ROW: u32 = 0xffffffffu;

struct Params {
    rows: u32,     // rows of dst
    cols: u32,     // words per row
    has_fill: u32, // 1 when `fill` is bound
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;       // [*, cols]
@group(0) @binding(2) var<storage, read> idx: array<u32>;       // [rows]
@group(0) @binding(3) var<storage, read> fill: array<f32>;      // [cols] (or a dummy)
@group(0) @binding(4) var<storage, read_write> dst: array<f32>; // [rows, cols]

@compute @workgroup_size(WG)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if i >= p.rows * p.cols {
        return;
    }
    let r = i / p.cols;
    let c = i % p.cols;
    let s = idx[r];
    if s != NO_ROW {
        dst[i] = src[s * p.cols + c];
    } else if p.has_fill == 1u {
        dst[i] = fill[c];
    } else {
        dst[i] = 0.0;
    }
}
