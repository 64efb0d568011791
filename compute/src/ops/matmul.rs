//! Strided batched matmul `C = βC + α·A·B (+ bias)` (see [`Matmul`]), the bias gradient
//! `sum_rows`, and elementwise `add`. Shaders: `shaders/matmul.wgsl`,
//! `shaders/sum_rows.wgsl`, `shaders/add.wgsl`.
use crate::backend::{Matmul, Strides};
use crate::gpu::{Bind, Gpu, GpuBuf, Kernel, Shader};

/// CPU reference through `matrixmultiply::sgemm`, which takes arbitrary strides, so
/// transposed and in-place views of qkv cost nothing. Batches run in parallel natively.
pub fn matmul(p: &Matmul, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &mut [f32]) {
    let [ea, eb, ec] = p.extents();
    assert!(a.len() >= ea && b.len() >= eb && c.len() >= ec, "matmul: operand too small for {p:?}");
    if let Some(bias) = bias {
        assert!(bias.len() >= p.n, "matmul: bias shorter than n");
    }
    let batches = p.batch_count();
    let inner = p.batch[1];
    let run = |z: usize, c: *mut f32| {
        let (ao, bo, co) = (p.a.index(inner, z, 0, 0), p.b.index(inner, z, 0, 0), p.c.index(inner, z, 0, 0));
        let mut beta = p.beta;
        // SAFETY: `c` points into the output slice, whose extent was checked above; the
        // batches handed to different threads write disjoint elements (every caller uses
        // non-overlapping output batches).
        unsafe {
            if let Some(bias) = bias {
                for i in 0..p.m {
                    for j in 0..p.n {
                        let e = c.add(co + i * p.c.row + j * p.c.col);
                        *e = if beta == 0.0 { bias[j] } else { beta * *e + bias[j] };
                    }
                }
                beta = 1.0;
            }
            matrixmultiply::sgemm(
                p.m,
                p.k,
                p.n,
                p.alpha,
                a.as_ptr().add(ao),
                p.a.row as isize,
                p.a.col as isize,
                b.as_ptr().add(bo),
                p.b.row as isize,
                p.b.col as isize,
                beta,
                c.add(co),
                p.c.row as isize,
                p.c.col as isize,
            );
        }
    };
    let cptr = SendPtr(c.as_mut_ptr());
    #[cfg(not(target_arch = "wasm32"))]
    if batches > 1 {
        use rayon::prelude::*;
        (0..batches).into_par_iter().for_each(|z| {
            let c = cptr;
            run(z, c.get())
        });
        return;
    }
    for z in 0..batches {
        run(z, cptr.get());
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used to hand disjoint output batches to rayon workers.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out[c] += Σ_r x[r, c]`.
pub fn sum_rows(x: &[f32], out: &mut [f32], rows: usize, cols: usize) {
    for r in 0..rows {
        for (o, v) in out[..cols].iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
            *o += v;
        }
    }
}

/// `out = a + b`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32], n: usize) {
    for i in 0..n {
        out[i] = a[i] + b[i];
    }
}

// ---- GPU launchers ----

pub const MATMUL: Shader = Shader { op: "matmul", source: include_str!("../../../shaders/matmul.wgsl") };
pub const SUM_ROWS: Shader = Shader { op: "sum_rows", source: include_str!("../../../shaders/sum_rows.wgsl") };
pub const ADD: Shader = Shader { op: "add", source: include_str!("../../../shaders/add.wgsl") };

/// The matmul's workgroup shape: `wx × wy` invocations, each owning a `TM × TN` block, so
/// a workgroup owns a `(TM·wy) × (TN·wx)` tile of C; `bk` is the staged k depth.
#[derive(Clone, Copy, Debug)]
pub struct MatmulTile {
    pub name: &'static str,
    pub wx: u32,
    pub wy: u32,
    pub bk: u32,
}

/// Rows and columns of C per invocation (`4·RG` and 4 in the shader).
const TM: usize = 8;
const TN: usize = 4;

/// Tuned on lavapipe for ViT shapes (see the `matmul_gflops` test).
pub const MATMUL_TILE: MatmulTile = MatmulTile { name: "", wx: 16, wy: 16, bk: 16 };

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch_inner: u32,
    a: [u32; 5],
    b: [u32; 5],
    c: [u32; 5],
    alpha: f32,
    beta: f32,
    has_bias: u32,
    _pad: [u32; 2],
}

fn strides(s: &Strides) -> [u32; 5] {
    [s.offset, s.row, s.col, s.batch_stride[0], s.batch_stride[1]].map(|v| u32::try_from(v).expect("stride over u32"))
}

pub fn matmul_gpu(gpu: &Gpu, p: &Matmul, a: &GpuBuf, b: &GpuBuf, bias: Option<&GpuBuf>, c: &GpuBuf) {
    matmul_gpu_tiled(gpu, &MATMUL_TILE, p, a, b, bias, c)
}

pub fn matmul_gpu_tiled(
    gpu: &Gpu,
    tile: &MatmulTile,
    p: &Matmul,
    a: &GpuBuf,
    b: &GpuBuf,
    bias: Option<&GpuBuf>,
    c: &GpuBuf,
) {
    let [ea, eb, ec] = p.extents();
    assert!(a.len() >= ea && b.len() >= eb && c.len() >= ec, "matmul: operand too small for {p:?}");
    assert!(p.beta == 0.0 || p.beta == 1.0, "matmul: beta must be 0 or 1");
    if let Some(bias) = bias {
        assert!(bias.len() >= p.n, "matmul: bias shorter than n");
    }
    let params = MatmulParams {
        m: p.m as u32,
        n: p.n as u32,
        k: p.k as u32,
        batch_inner: p.batch[1].max(1) as u32,
        a: strides(&p.a),
        b: strides(&p.b),
        c: strides(&p.c),
        alpha: p.alpha,
        beta: p.beta,
        has_bias: bias.is_some() as u32,
        _pad: [0; 2],
    };
    let constants = [("WX", tile.wx as f64), ("WY", tile.wy as f64), ("BK", tile.bk as f64)];
    let kernel = Kernel { shader: MATMUL, entry: "forward", variant: tile.name, constants: &constants };
    let bias = bias.map_or(Bind::Dummy, Bind::Read);
    let groups = [
        p.n.div_ceil(TN * tile.wx as usize) as u32,
        p.m.div_ceil(TM * tile.wy as usize) as u32,
        p.batch_count() as u32,
    ];
    gpu.dispatch(&kernel, &params, &[Bind::Read(a), Bind::Read(b), bias, Bind::Write(c)], groups);
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowsCols {
    rows: u32,
    cols: u32,
}

pub fn sum_rows_gpu(gpu: &Gpu, x: &GpuBuf, out: &GpuBuf, rows: usize, cols: usize) {
    let params = RowsCols { rows: rows as u32, cols: cols as u32 };
    let groups = [cols.div_ceil(64) as u32, 1, 1];
    gpu.dispatch(&SUM_ROWS.entry("forward"), &params, &[Bind::Read(x), Bind::Write(out)], groups);
}

pub fn add_gpu(gpu: &Gpu, a: &GpuBuf, b: &GpuBuf, out: &GpuBuf, n: usize) {
    let params = [n as u32];
    let groups = gpu.groups_1d(n.div_ceil(256));
    gpu.dispatch(&ADD.entry("forward"), &params, &[Bind::Read(a), Bind::Read(b), Bind::Write(out)], groups);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Strides;
    use crate::ops::testing::*;

    /// The definition, element by element, in f64.
    fn naive(p: &Matmul, a: &[f32], b: &[f32], bias: Option<&[f32]>, c: &[f32]) -> Vec<f32> {
        let mut out = c.to_vec();
        let inner = p.batch[1];
        for z in 0..p.batch_count() {
            for i in 0..p.m {
                for j in 0..p.n {
                    let mut s = 0f64;
                    for k in 0..p.k {
                        s += a[p.a.index(inner, z, i, k)] as f64 * b[p.b.index(inner, z, k, j)] as f64;
                    }
                    let ci = p.c.index(inner, z, i, j);
                    let mut v = p.alpha as f64 * s + p.beta as f64 * c[ci] as f64;
                    if let Some(bias) = bias {
                        v += bias[j] as f64;
                    }
                    out[ci] = v as f32;
                }
            }
        }
        out
    }

    #[test]
    fn matmul_matches_definition_for_linear_and_transposes() {
        let (m, n, k) = (17, 13, 11);
        let a = randn(m * k, 1);
        let w = randn(n * k, 2);
        let bias = randn(n, 3);
        // y = x · Wᵀ + b with W: [n, k]
        let p = Matmul { b: Strides::transposed(k), ..Matmul::plain(m, n, k) };
        let mut c = vec![0.0; m * n];
        matmul(&p, &a, &w, Some(&bias), &mut c);
        assert_close("linear", &c, &naive(&p, &a, &w, Some(&bias), &vec![0.0; m * n]), 1e-5, 1e-5);
        // accumulate Aᵀ·B into an existing C with alpha
        let p = Matmul { a: Strides::transposed(k), alpha: 0.5, beta: 1.0, ..Matmul::plain(k, n, m) };
        let b2 = randn(m * n, 4);
        let c0 = randn(k * n, 5);
        let mut c = c0.clone();
        matmul(&p, &a, &b2, None, &mut c);
        assert_close("at_b_acc", &c, &naive(&p, &a, &b2, None, &c0), 1e-5, 1e-5);
    }

    #[test]
    fn matmul_batched_views_into_qkv() {
        // Q·Kᵀ read straight out of a [b, n, 3, h, d] qkv buffer.
        let (bsz, n, h, d) = (2, 5, 3, 4);
        let c3 = 3 * h * d;
        let qkv = randn(bsz * n * c3, 7);
        let p = Matmul {
            m: n,
            n,
            k: d,
            batch: [bsz, h],
            a: Strides { offset: 0, row: c3, col: 1, batch_stride: [n * c3, d] },
            b: Strides { offset: h * d, row: 1, col: c3, batch_stride: [n * c3, d] },
            c: Strides { offset: 0, row: n, col: 1, batch_stride: [h * n * n, n * n] },
            alpha: 0.5,
            beta: 0.0,
        };
        let mut s = vec![0.0; bsz * h * n * n];
        matmul(&p, &qkv, &qkv, None, &mut s);
        assert_close("qk", &s, &naive(&p, &qkv, &qkv, None, &vec![0.0; s.len()]), 1e-5, 1e-5);
    }

    #[test]
    fn sum_rows_adds_column_sums() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = [1.0, 1.0, 1.0];
        sum_rows(&x, &mut out, 2, 3);
        assert_eq!(out, [6.0, 8.0, 10.0]);
    }

    // ---- GPU against the reference ----

    use crate::backend::Backend;
    use crate::block_on;
    use crate::gpu::test_gpu;

    /// Run `p` on the GPU and on the CPU reference from the same starting C.
    fn check_gpu(gpu: &Gpu, what: &str, p: &Matmul, with_bias: bool, seed: u64) {
        let [ea, eb, ec] = p.extents();
        let a = randn(ea, seed);
        let b = randn(eb, seed + 1);
        let c0 = randn(ec, seed + 2);
        let bias = randn(p.n, seed + 3);
        let mut want = c0.clone();
        matmul(p, &a, &b, with_bias.then_some(&bias[..]), &mut want);
        let (ga, gb, gc, gbias) = (gpu.upload(&a), gpu.upload(&b), gpu.upload(&c0), gpu.upload(&bias));
        gpu.matmul(p, &ga, &gb, with_bias.then_some(&gbias), &gc);
        let got = block_on(gpu.read(&gc));
        assert_close(what, &got, &want, 1e-4, 1e-4);
    }

    #[test]
    fn gpu_matmul_matches_reference_on_awkward_sizes() {
        let Some(gpu) = test_gpu() else { return };
        for (m, n, k) in [(1, 1, 1), (17, 13, 11), (65, 70, 37), (33, 129, 64)] {
            let plain = Matmul::plain(m, n, k);
            check_gpu(&gpu, &format!("plain {m}x{n}x{k}"), &plain, false, 1);
            // y = x · Wᵀ + b, W: [n, k]
            let linear = Matmul { b: Strides::transposed(k), ..plain };
            check_gpu(&gpu, &format!("linear {m}x{n}x{k}"), &linear, true, 2);
            // dW += dyᵀ · x: A = dyᵀ with dy: [k, m] seen transposed, accumulate
            let at_b = Matmul { a: Strides::transposed(m), alpha: 0.5, beta: 1.0, ..plain };
            check_gpu(&gpu, &format!("at_b beta=1 {m}x{n}x{k}"), &at_b, false, 3);
            // C written transposed into a strided destination
            let ct = Matmul { c: Strides::transposed(m), ..linear };
            check_gpu(&gpu, &format!("c transposed {m}x{n}x{k}"), &ct, true, 4);
        }
    }

    #[test]
    fn gpu_matmul_reads_attention_views_in_qkv() {
        let Some(gpu) = test_gpu() else { return };
        // Q·Kᵀ then P·V straight out of a [b, n, 3, h, d] qkv buffer, 17 tokens.
        let (bsz, n, h, d) = (2, 17, 3, 8);
        let c3 = 3 * h * d;
        let qk = Matmul {
            m: n,
            n,
            k: d,
            batch: [bsz, h],
            a: Strides { offset: 0, row: c3, col: 1, batch_stride: [n * c3, d] },
            b: Strides { offset: h * d, row: 1, col: c3, batch_stride: [n * c3, d] },
            c: Strides { offset: 0, row: n, col: 1, batch_stride: [h * n * n, n * n] },
            alpha: 0.125,
            beta: 0.0,
        };
        check_gpu(&gpu, "q·kᵀ", &qk, false, 11);
        // out[b, t, h, d] = P[b, h] · V: V at offset 2hd, output interleaved by head
        let pv = Matmul {
            m: n,
            n: d,
            k: n,
            batch: [bsz, h],
            a: Strides { offset: 0, row: n, col: 1, batch_stride: [h * n * n, n * n] },
            b: Strides { offset: 2 * h * d, row: c3, col: 1, batch_stride: [n * c3, d] },
            c: Strides { offset: 0, row: h * d, col: 1, batch_stride: [n * h * d, d] },
            alpha: 1.0,
            beta: 0.0,
        };
        check_gpu(&gpu, "p·v", &pv, false, 12);
    }

    #[test]
    fn gpu_sum_rows_and_add_match_reference() {
        let Some(gpu) = test_gpu() else { return };
        let (rows, cols) = (65, 70);
        let x = randn(rows * cols, 1);
        let out0 = randn(cols, 2);
        let mut want = out0.clone();
        sum_rows(&x, &mut want, rows, cols);
        let (gx, gout) = (gpu.upload(&x), gpu.upload(&out0));
        gpu.sum_rows(&gx, &gout, rows, cols);
        assert_close("sum_rows", &block_on(gpu.read(&gout)), &want, 1e-4, 1e-5);

        let n = 1000;
        let (a, b) = (randn(n, 3), randn(n, 4));
        let mut want = vec![0.0; n];
        add(&a, &b, &mut want, n);
        let (ga, gb, gout) = (gpu.upload(&a), gpu.upload(&b), gpu.alloc(n));
        gpu.add(&ga, &gb, &gout, n);
        assert_close("add", &block_on(gpu.read(&gout)), &want, 0.0, 0.0);
    }
}
