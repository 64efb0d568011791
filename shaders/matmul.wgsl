// Strided batched matmul: C[z] = β·C[z] + α·A[z]·B[z] (+ bias), for z in 0..batch,
// with A[z]: [m, k], B[z]: [k, n], C[z]: [m, n], each read through its own strides
// (`offset + zo·batch_stride0 + zi·batch_stride1 + r·row + c·col`, z = zo·inner + zi),
// so transposes and attention's views into the fused qkv buffer cost nothing.
// β is 0 (overwrite: C is not read) or 1 (accumulate, for `+=` gradients).
//
// Parallel plan: one workgroup per (BM × BN) tile of one C[z], BM = 4·RG·WY, BN = 4·WX;
// each invocation owns a (4·RG) × 4 block of the tile in vec4 accumulators (RG is a
// const: private arrays cannot be override-sized). The k axis
// is walked BK at a time: the workgroup stages an A tile [BK][BM] and a B tile [BK][BN]
// in workgroup memory (as vec4 so an invocation's four rows / columns are one load),
// then every invocation does BK rank-1 updates of its block. Out-of-range k loads
// as zeros, so any size works; stores are bounds-checked.
// Tile knobs are override constants; shapes live in `Params`, so one pipeline serves
// every size.

override WX: u32 = 16u; // invocations along n
override WY: u32 = 16u; // invocations along m
override BK: u32 = 16u; // k depth of a staged tile
const RG: u32 = 2u; // groups of 4 rows per invocation

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch_inner: u32,
    a_off: u32,
    a_row: u32,
    a_col: u32,
    a_b0: u32,
    a_b1: u32,
    b_off: u32,
    b_row: u32,
    b_col: u32,
    b_b0: u32,
    b_b1: u32,
    c_off: u32,
    c_row: u32,
    c_col: u32,
    c_b0: u32,
    c_b1: u32,
    alpha: f32,
    beta: f32,
    has_bias: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>; // A[z]: [m, k] through a_* strides
@group(0) @binding(2) var<storage, read> b: array<f32>; // B[z]: [k, n] through b_* strides
@group(0) @binding(3) var<storage, read> bias: array<f32>; // [n], read only when has_bias
@group(0) @binding(4) var<storage, read_write> c: array<f32>; // C[z]: [m, n] through c_* strides

var<workgroup> a_tile: array<vec4<f32>, BK * WY * RG>; // [kk * WY·RG + g] = A[row0 + 4g .. +4, k0 + kk]
var<workgroup> b_tile: array<vec4<f32>, BK * WX>; // [kk * WX + tx] = B[k0 + kk, col0 + 4tx .. +4]

// Rows and columns past the edge read a clamped (valid) element whose product is never
// stored; k past the edge must read zero, as it is summed.
fn load_a(base: u32, r: u32, kk: u32) -> f32 {
    let v = a[base + min(r, p.m - 1u) * p.a_row + min(kk, p.k - 1u) * p.a_col];
    return select(0.0, v, kk < p.k);
}

fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    let v = b[base + min(kk, p.k - 1u) * p.b_row + min(col, p.n - 1u) * p.b_col];
    return select(0.0, v, kk < p.k);
}

fn store(base: u32, r: u32, col: u32, v: f32) {
    if r < p.m && col < p.n {
        let i = base + r * p.c_row + col * p.c_col;
        var out = p.alpha * v;
        if p.beta != 0.0 {
            out += p.beta * c[i];
        }
        if p.has_bias != 0u {
            out += bias[col];
        }
        c[i] = out;
    }
}

fn store_row(base: u32, r: u32, col: u32, v: vec4<f32>) {
    store(base, r, col, v.x);
    store(base, r, col + 1u, v.y);
    store(base, r, col + 2u, v.z);
    store(base, r, col + 3u, v.w);
}

@compute @workgroup_size(WX, WY)
fn forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let zo = wid.z / p.batch_inner;
    let zi = wid.z % p.batch_inner;
    let a0 = p.a_off + zo * p.a_b0 + zi * p.a_b1;
    let b0 = p.b_off + zo * p.b_b0 + zi * p.b_b1;
    let c0 = p.c_off + zo * p.c_b0 + zi * p.c_b1;
    let row0 = wid.y * 4u * WY * RG;
    let col0 = wid.x * 4u * WX;
    let threads = WX * WY;

    var acc: array<vec4<f32>, 4 * RG>;
    for (var i = 0u; i < 4u * RG; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    let wyg = WY * RG;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = li; i < BK * wyg; i += threads) {
            let kk = k0 + i / wyg;
            let r = row0 + 4u * (i % wyg);
            a_tile[i] = vec4<f32>(load_a(a0, r, kk), load_a(a0, r + 1u, kk), load_a(a0, r + 2u, kk), load_a(a0, r + 3u, kk));
        }
        for (var i = li; i < BK * WX; i += threads) {
            let kk = k0 + i / WX;
            let col = col0 + 4u * (i % WX);
            b_tile[i] = vec4<f32>(load_b(b0, kk, col), load_b(b0, kk, col + 1u), load_b(b0, kk, col + 2u), load_b(b0, kk, col + 3u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let bv = b_tile[kk * WX + lid.x];
            for (var g = 0u; g < RG; g++) {
                let av = a_tile[kk * wyg + lid.y * RG + g];
                acc[4u * g] += av.x * bv;
                acc[4u * g + 1u] += av.y * bv;
                acc[4u * g + 2u] += av.z * bv;
                acc[4u * g + 3u] += av.w * bv;
            }
        }
        workgroupBarrier();
    }
    let r = row0 + 4u * RG * lid.y;
    let col = col0 + 4u * lid.x;
    for (var i = 0u; i < 4u * RG; i++) {
        store_row(c0, r + i, col, acc[i]);
    }
}
