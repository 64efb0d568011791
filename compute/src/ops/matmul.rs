//! Strided batched matmul `C = βC + α·A·B (+ bias)` (see [`Matmul`]), the bias gradient
//! `sum_rows`, and elementwise `add`. Shader: `shaders/matmul.wgsl`.
use crate::backend::Matmul;

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
        let p = Matmul {
            a: Strides::transposed(k),
            alpha: 0.5,
            beta: 1.0,
            ..Matmul::plain(k, n, m)
        };
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
}
