//! Test helpers shared by the op files: seeded data, finite differences, and comparisons
//! that print the first mismatching values.
use crate::rng::Rng;

pub fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal()).collect()
}

/// Central finite difference of the scalar `loss` at `x`, one coordinate at a time
/// (f64 arithmetic inside `loss` keeps the estimate sharp).
pub fn finite_diff(x: &[f32], eps: f64, loss: impl Fn(&[f32]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let v = x[i];
            x[i] = (v as f64 + eps) as f32;
            let up = loss(&x);
            x[i] = (v as f64 - eps) as f32;
            let down = loss(&x);
            x[i] = v;
            let h = (v as f64 + eps) as f32 as f64 - (v as f64 - eps) as f32 as f64;
            (up - down) / h
        })
        .collect()
}

/// `Σ w·y` with fixed pseudo-random weights: a scalar loss whose gradient w.r.t. `y` is `w`.
pub fn weighted_sum(y: &[f32], w: &[f32]) -> f64 {
    y.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Assert `|got − want| ≤ atol + rtol·|want|` elementwise, printing the first failures.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut bad = Vec::new();
    let mut max_abs = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        max_abs = max_abs.max(d);
        if d > atol + rtol * w.abs() || !g.is_finite() {
            bad.push((i, *g, *w));
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad.iter().take(8).map(|(i, g, w)| format!("[{i}] got {g} want {w}")).collect();
        panic!(
            "{what}: {} of {} values differ (atol {atol}, rtol {rtol}, max abs {max_abs}); first: {}",
            bad.len(),
            got.len(),
            first.join(", ")
        );
    }
}

pub fn assert_close_f64(what: &str, got: &[f32], want: &[f64], atol: f32, rtol: f32) {
    let want: Vec<f32> = want.iter().map(|v| *v as f32).collect();
    assert_close(what, got, &want, atol, rtol)
}
