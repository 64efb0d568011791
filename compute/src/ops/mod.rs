//! One file per op: the CPU reference (plain Rust over slices), the GPU launcher for the
//! op's WGSL entry points (`shaders/<op>.wgsl`, pipeline labels `<op>.<entry>`), and the
//! op's tests: finite differences against the reference's backward, and the GPU against
//! the reference on awkward sizes.
pub mod adamw;
pub mod center;
pub mod cls_pos;
pub mod cross_entropy;
pub mod gather;
pub mod gelu;
pub mod l2norm;
pub mod layernorm;
pub mod matmul;
pub mod mse;
pub mod patchify;
pub mod rel_pos_bias;
pub mod soft_cross_entropy;
pub mod softmax;

#[cfg(test)]
pub(crate) mod testing;

/// Run `f(row_index, row)` over the rows of `data` (`cols` wide), in parallel natively.
pub(crate) fn for_rows(data: &mut [f32], cols: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if cols == 0 {
        return;
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        if data.len() >= 1 << 14 {
            data.par_chunks_mut(cols).enumerate().for_each(|(i, r)| f(i, r));
            return;
        }
    }
    data.chunks_mut(cols).enumerate().for_each(|(i, r)| f(i, r));
}

/// `eˣ` in f32 without a libm call, so that the loops of softmax and GELU vectorise:
/// Cody–Waite reduction to `r ∈ [−ln2/2, ln2/2]`, Cephes' `expf` polynomial, and `2ⁿ`
/// from the exponent bits, in two halves so that results down to the subnormals come out
/// as libm's do. Within 2 ulp of the exact value on [−87.3, 88.7] (tested below); 0 below
/// −103.9, +∞ above 88.7; NaN stays NaN. The shaders use WGSL's `exp`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let xc = x.clamp(-103.9, 88.7);
    let t = xc * std::f32::consts::LOG2_E + SHIFT;
    let nf = t - SHIFT;
    let r = xc - nf * 0.693_359_4 - nf * -2.121_944_4e-4; // ln 2 = 355/512 (exact in f32) + the rest
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // n ∈ [−150, 128]: 2ⁿ = 2ʰ·2ⁿ⁻ʰ with both factors normal
    let n = t.to_bits() as i32 - SHIFT.to_bits() as i32;
    let h = n >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
    if x < -103.9 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else {
        e * pow2(h) * pow2(n - h)
    }
}

/// Softmax of one row in place, `row ← exp(row − max) / sum`; returns `(max, sum)` for
/// callers that want the log-sum-exp `max + ln sum`. Shared by softmax, DINO's centring
/// and the soft cross-entropy.
#[inline]
pub(crate) fn softmax_in_place(row: &mut [f32]) -> (f32, f32) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let sum: f32 = row.iter().sum();
    for v in row.iter_mut() {
        *v /= sum;
    }
    (max, sum)
}

/// Apply `f(i, out_chunk)` over `chunk`-sized pieces of `out`, in parallel natively.
pub(crate) fn for_chunks(out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    for_rows(out, chunk.max(1), f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_2_ulp_of_the_exact_value() {
        let mut worst = 0f64;
        for i in -873_000..=887_000 {
            let x = i as f32 * 1e-4;
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        // one ulp of f32 is 2⁻²³ ≈ 1.19e-7 relative at most
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
        // subnormal results, as libm's
        for x in [-88.0f32, -95.0, -100.0, -103.0] {
            let (got, want) = (super::exp(x), (x as f64).exp());
            assert!(
                got > 0.0 && (got as f64 - want).abs() <= 2.0 * 1.4e-45 + want * 2.4e-7,
                "exp({x}) = {got:e}, want {want:e}"
            );
        }
        assert_eq!(super::exp(-110.0), 0.0);
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp(100.0), f32::INFINITY);
        assert!(super::exp(f32::NAN).is_nan());
        assert_eq!(super::exp(0.0), 1.0);
    }
}
