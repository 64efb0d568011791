//! Frozen-feature evaluation of a backbone: DINO's weighted k-nearest-neighbour classifier
//! and a linear probe. No I/O: features are `[rows, dim]` f32 slices, labels u32 class
//! indices, so the CLI and the browser share it.
//!
//! kNN, as DINO's `eval_knn.py` (`knn_classifier`):
//! ```text
//! train, test = F.normalize(train), F.normalize(test)     # cosine similarity
//! sim         = test @ train.T                              # [n_test, n_train]
//! s, idx      = sim.topk(k)                                 # k nearest, most similar first
//! votes[c]    = Σ_j exp(s_j / T) · [label(idx_j) == c]      # one-hot votes, weighted
//! prediction  = argmax votes (top-5: the five largest)
//! ```
//! with k = 20 and T = 0.07. Ties, which torch leaves to its sort, are broken here toward
//! the lower index: of equally similar neighbours the earlier training row is taken, and of
//! classes with equal votes the lower class ranks higher.
//!
//! The linear probe is softmax regression `logits = W·x̂ + b` on standardised features
//! `x̂ = (x − mean) / sqrt(var + 1e-6)`, with the mean and variance of the training
//! features: MAE's linear probe (`BatchNorm1d(affine=False, eps=1e-6)` before the
//! classifier, whose statistics after training are the training set's). It trains
//! over [`Backend`] (so it runs on the GPU too) with mini-batch Adam, DINO's
//! `LinearClassifier` initialisation (weight ~ N(0, 0.01), zero bias), DINO's per-epoch
//! cosine learning rate to 0, and no weight decay unless asked.
use crate::backend::{AdamW, Backend, Matmul, Strides};
use crate::ops::matmul::matmul;
use crate::optim::cosine;
use crate::rng::Rng;

// ---- shared ----

/// `F.normalize(x, dim=1)`: each row divided by `max(‖row‖, 1e-12)`. `x: [rows, dim]`.
pub fn l2_normalize(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
}

/// Share of rows whose label is among the `top` highest `scores` (`[rows, classes]`).
/// A class ranks above the label when it scores more, or the same with a lower index.
pub fn top_k_accuracy(scores: &[f32], labels: &[u32], classes: usize, top: usize) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let hits = labels
        .iter()
        .zip(scores.chunks(classes))
        .filter(|(&label, s)| {
            let (label, own) = (label as usize, s[label as usize]);
            let above = s.iter().enumerate().filter(|&(c, &v)| v > own || (v == own && c < label)).count();
            above < top
        })
        .count();
    hits as f64 / labels.len() as f64
}

// ---- kNN ----

/// Test rows per similarity block: `[64, n_train]` floats at a time.
const KNN_CHUNK: usize = 64;

/// DINO's weighted kNN votes (see the module docs): `[n_test, classes]`, the summed
/// `exp(sim / temperature)` of each test row's `k` most similar training rows by class.
/// `train: [n_train, dim]`, `test: [n_test, dim]`, both already L2-normalised
/// ([`l2_normalize`]); `k` is capped at `n_train`.
pub fn knn_votes(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    dim: usize,
    classes: usize,
    k: usize,
    temperature: f32,
) -> Vec<f32> {
    let (n_train, n_test) = (train_labels.len(), test.len() / dim.max(1));
    assert_eq!(train.len(), n_train * dim, "train features are [n_train, dim]");
    assert!(train_labels.iter().all(|&l| (l as usize) < classes), "a train label is out of range");
    let k = k.min(n_train);
    let mut votes = vec![0.0f32; n_test * classes];
    if k == 0 {
        return votes;
    }
    let mut sim = vec![0.0f32; KNN_CHUNK * n_train];
    // the k best (similarity, train row) so far, most similar first
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    for start in (0..n_test).step_by(KNN_CHUNK) {
        let rows = KNN_CHUNK.min(n_test - start);
        // sim[r, j] = test[start + r] · train[j]
        let mm = Matmul {
            a: Strides::row_major(dim).at(start * dim),
            b: Strides::transposed(dim),
            ..Matmul::plain(rows, n_train, dim)
        };
        matmul(&mm, test, train, None, &mut sim[..rows * n_train]);
        for r in 0..rows {
            best.clear();
            for (j, &s) in sim[r * n_train..(r + 1) * n_train].iter().enumerate() {
                // strictly better than the current k-th: ties keep the earlier row
                if best.len() == k && s <= best[k - 1].0 {
                    continue;
                }
                let at = best.partition_point(|&(b, _)| b >= s);
                best.insert(at, (s, j));
                best.truncate(k);
            }
            let v = &mut votes[(start + r) * classes..(start + r + 1) * classes];
            for &(s, j) in &best {
                v[train_labels[j] as usize] += (s / temperature).exp();
            }
        }
    }
    votes
}

// ---- linear probe ----

/// The linear probe's training schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Adam's peak learning rate; cosine-decayed to 0 over the epochs (per epoch).
    pub lr: f32,
    /// Mini-batch size; the last batch of an epoch may be smaller (no rows dropped).
    pub batch: usize,
    /// Decoupled (AdamW) weight decay of `W`; never of the bias.
    pub weight_decay: f32,
    /// Draws the initial weights and each epoch's shuffle.
    pub seed: u64,
}

impl Default for LinearConfig {
    fn default() -> Self {
        LinearConfig { epochs: 100, lr: 1e-3, batch: 256, weight_decay: 0.0, seed: 0 }
    }
}

/// Per-feature standardisation with the training set's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardize {
    pub mean: Vec<f32>,
    /// `sqrt(var + 1e-6)`, the population variance as BatchNorm keeps it.
    pub std: Vec<f32>,
}

impl Standardize {
    /// The statistics of `x: [rows, dim]` (accumulated in f64).
    pub fn fit(x: &[f32], dim: usize) -> Self {
        let rows = (x.len() / dim.max(1)).max(1) as f64;
        let (mut sum, mut sq) = (vec![0.0f64; dim], vec![0.0f64; dim]);
        for row in x.chunks(dim) {
            for (c, &v) in row.iter().enumerate() {
                sum[c] += v as f64;
                sq[c] += v as f64 * v as f64;
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / rows).collect();
        let std = sq.iter().zip(&mean).map(|(q, m)| ((q / rows - m * m).max(0.0) + 1e-6).sqrt() as f32).collect();
        Standardize { mean: mean.into_iter().map(|m| m as f32).collect(), std }
    }
    /// `(x − mean) / std`, row by row.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let dim = self.mean.len();
        x.chunks(dim).flat_map(|row| row.iter().zip(&self.mean).zip(&self.std).map(|((v, m), s)| (v - m) / s)).collect()
    }
}

/// A trained linear probe, on the host.
#[derive(Clone, Debug)]
pub struct LinearProbe {
    pub dim: usize,
    pub classes: usize,
    pub standardize: Standardize,
    /// `[classes, dim]`, for standardised inputs.
    pub weight: Vec<f32>,
    /// `[classes]`.
    pub bias: Vec<f32>,
    /// The mean training cross-entropy of each epoch (with the weights as they moved).
    pub losses: Vec<f32>,
}

impl LinearProbe {
    /// `[rows, classes]` logits of raw (unstandardised) features `x: [rows, dim]`.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.dim.max(1);
        let xs = self.standardize.apply(x);
        let mut out = vec![0.0; rows * self.classes];
        let mm = Matmul { b: Strides::transposed(self.dim), ..Matmul::plain(rows, self.classes, self.dim) };
        matmul(&mm, &xs, &self.weight, Some(&self.bias), &mut out);
        out
    }
}

/// Train the probe on `x: [rows, dim]` with `labels: [rows]` < `classes`. Everything after
/// the standardisation runs on `be`: per step a gather of the batch's rows, the logits, the
/// cross-entropy and its gradients, two AdamW updates; the loss is read once an epoch and
/// handed to `on_epoch(epoch, mean_loss)` (epochs from 1).
pub async fn train_linear<B: Backend>(
    be: &B,
    x: &[f32],
    labels: &[u32],
    dim: usize,
    classes: usize,
    cfg: &LinearConfig,
    mut on_epoch: impl FnMut(usize, f32),
) -> LinearProbe {
    let n = labels.len();
    assert_eq!(x.len(), n * dim, "features are [rows, dim]");
    assert!(labels.iter().all(|&l| (l as usize) < classes), "a label is out of range");
    let standardize = Standardize::fit(x, dim);
    let mut rng = Rng::new(cfg.seed);
    let w0: Vec<f32> = (0..classes * dim).map(|_| rng.normal() * 0.01).collect();
    let feats = be.upload(&standardize.apply(x)); // [n, dim]
    let (w, b) = (be.upload(&w0), be.alloc(classes)); // [classes, dim], [classes]
    let (dw, db) = (be.alloc(classes * dim), be.alloc(classes));
    let (mw, vw, mb, vb) = (be.alloc(classes * dim), be.alloc(classes * dim), be.alloc(classes), be.alloc(classes));
    let bs = cfg.batch.clamp(1, n.max(1));
    let lrs = cosine(cfg.lr, 0.0, cfg.epochs);
    let mut losses = Vec::with_capacity(cfg.epochs);
    let mut step = 0u32;
    let mut order: Vec<usize> = (0..n).collect();
    for (epoch, &lr) in lrs.iter().enumerate() {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let total = be.alloc(bs); // the epoch's losses, summed slot by slot
        for rows_idx in order.chunks(bs) {
            let rows = rows_idx.len();
            let idx: Vec<u32> = rows_idx.iter().map(|&r| r as u32).collect();
            let y: Vec<u32> = rows_idx.iter().map(|&r| labels[r]).collect();
            let (xb, yb) = (be.alloc(rows * dim), be.upload_u32(&y));
            be.gather_rows(&feats, &be.upload_u32(&idx), None, &xb, rows, dim);
            // logits = xb · Wᵀ + b : [rows, classes]
            let logits = be.alloc(rows * classes);
            let fwd = Matmul { b: Strides::transposed(dim), ..Matmul::plain(rows, classes, dim) };
            be.matmul(&fwd, &xb, &w, Some(&b), &logits);
            let (loss, probs) = (be.alloc(rows), be.alloc(rows * classes));
            be.cross_entropy_forward(&logits, &yb, &loss, &probs, rows, classes);
            be.sum_rows(&loss, &total, 1, rows);
            let dlogits = be.alloc(rows * classes);
            be.cross_entropy_backward(&be.upload(&vec![1.0 / rows as f32; rows]), &probs, &yb, &dlogits, rows, classes);
            // dW = dlogitsᵀ · xb : [classes, dim]; db = Σ_r dlogits[r]
            let back = Matmul { a: Strides::transposed(classes), ..Matmul::plain(classes, dim, rows) };
            be.matmul(&back, &dlogits, &xb, None, &dw);
            be.fill(&db, 0.0);
            be.sum_rows(&dlogits, &db, rows, classes);
            step += 1;
            let hp = AdamW { lr, weight_decay: cfg.weight_decay, step, ..AdamW::default() };
            be.adamw(&w, &dw, &mw, &vw, None, classes * dim, &hp);
            be.adamw(&b, &db, &mb, &vb, None, classes, &AdamW { weight_decay: 0.0, ..hp });
            be.flush();
        }
        let mean = be.read(&total).await.iter().sum::<f32>() / n.max(1) as f32;
        losses.push(mean);
        on_epoch(epoch + 1, mean);
    }
    LinearProbe { dim, classes, standardize, weight: be.read(&w).await, bias: be.read(&b).await, losses }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;
    use crate::cpu::Cpu;

    /// Unit vectors at the given angles (radians) in the plane.
    fn at(angles: &[f32]) -> Vec<f32> {
        angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect()
    }

    fn close(got: &[f32], want: &[f32], tol: f32) {
        let bad = got.iter().zip(want).position(|(g, w)| (g - w).abs() > tol * w.abs().max(1.0));
        assert!(got.len() == want.len() && bad.is_none(), "first mismatch at {bad:?}: got {got:?}, want {want:?}");
    }

    #[test]
    fn knn_votes_are_exp_similarity_over_temperature_summed_by_class() {
        // train at 0, 0.3, 1.0, 3.0 rad (classes 0, 1, 1, 0); the test point at 0.1 rad
        let train = at(&[0.0, 0.3, 1.0, 3.0]);
        let labels = [0, 1, 1, 0];
        let test = at(&[0.1]);
        let t = 0.5;
        // k = 3: the three nearest are rows 0, 1, 2 (cos 0.1, cos 0.2, cos 0.9)
        let got = knn_votes(&train, &labels, &test, 2, 3, 3, t);
        let w = |d: f32| (d.cos() / t).exp();
        close(&got, &[w(0.1), w(0.2) + w(0.9), 0.0], 1e-5);
        // k = 1: only the nearest votes
        close(&knn_votes(&train, &labels, &test, 2, 3, 1, t), &[w(0.1), 0.0, 0.0], 1e-5);
        // k above the training set is all of it
        let all = knn_votes(&train, &labels, &test, 2, 3, 50, t);
        close(&all, &[w(0.1) + w(2.9), w(0.2) + w(0.9), 0.0], 1e-5);
    }

    #[test]
    fn temperature_decides_between_the_nearest_neighbour_and_the_majority() {
        // one class-0 row right at the test point, two class-1 rows 0.5 rad away (cos 0.878):
        // with DINO's T = 0.07 one vote of e^(1/0.07) outweighs two of e^(0.878/0.07);
        // with T = 10 the weights are nearly equal and the majority wins
        let train = at(&[0.0, 0.5, -0.5]);
        let labels = [0, 1, 1];
        let test = at(&[0.0]);
        let sharp = knn_votes(&train, &labels, &test, 2, 2, 3, 0.07);
        assert!(sharp[0] > sharp[1], "{sharp:?}");
        assert_eq!(top_k_accuracy(&sharp, &[0], 2, 1), 1.0);
        let flat = knn_votes(&train, &labels, &test, 2, 2, 3, 10.0);
        assert!(flat[1] > flat[0], "{flat:?}");
        assert_eq!(top_k_accuracy(&flat, &[0], 2, 1), 0.0);
    }

    #[test]
    fn ties_take_the_earlier_training_row_and_the_lower_class() {
        // rows 1, 2 and 3 are equally similar; k = 2 takes rows 0 and 1
        let train = at(&[0.0, 0.4, -0.4, 0.4]);
        let labels = [2, 0, 1, 1];
        let votes = knn_votes(&train, &labels, &at(&[0.0]), 2, 3, 2, 1.0);
        let (near, far) = ((1.0f32).exp(), (0.4f32.cos()).exp());
        close(&votes, &[far, 0.0, near], 1e-6);
        // classes 0 and 1 with equal votes: class 0 ranks first, so label 1 is only top-2
        let scores = [1.0, 1.0, 0.5];
        assert_eq!(top_k_accuracy(&scores, &[0], 3, 1), 1.0);
        assert_eq!(top_k_accuracy(&scores, &[1], 3, 1), 0.0);
        assert_eq!(top_k_accuracy(&scores, &[1], 3, 2), 1.0);
        assert_eq!(top_k_accuracy(&scores, &[2], 3, 2), 0.0);
        // and two rows, one right, one wrong
        assert_eq!(top_k_accuracy(&[0.0, 3.0, 2.0, 1.0], &[1, 1], 2, 1), 0.5);
    }

    #[test]
    fn knn_over_many_chunks_matches_a_brute_force_vote() {
        // more test rows than one similarity block, random 5-d features, 4 classes
        let (dim, classes, k, t) = (5, 4, 7, 0.07);
        let mut rng = Rng::new(9);
        let mut train: Vec<f32> = (0..300 * dim).map(|_| rng.normal()).collect();
        let mut test: Vec<f32> = (0..150 * dim).map(|_| rng.normal()).collect();
        l2_normalize(&mut train, dim);
        l2_normalize(&mut test, dim);
        let labels: Vec<u32> = (0..300).map(|_| rng.below(classes) as u32).collect();
        let got = knn_votes(&train, &labels, &test, dim, classes, k, t);
        for (i, q) in test.chunks(dim).enumerate() {
            let mut sims: Vec<(f32, usize)> = train
                .chunks(dim)
                .enumerate()
                .map(|(j, r)| (r.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), j))
                .collect();
            sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut want = vec![0.0; classes];
            for &(s, j) in &sims[..k] {
                want[labels[j] as usize] += (s / t).exp();
            }
            close(&got[i * classes..(i + 1) * classes], &want, 1e-4);
        }
    }

    #[test]
    fn l2_normalize_gives_unit_rows_and_leaves_zero_rows_zero() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0, -2.0, 0.0];
        l2_normalize(&mut x, 2);
        assert_eq!(x, [0.6, 0.8, 0.0, 0.0, -1.0, 0.0]);
    }

    #[test]
    fn standardize_uses_the_training_mean_and_variance() {
        let s = Standardize::fit(&[1.0, 10.0, 3.0, 10.0], 2);
        close(&s.mean, &[2.0, 10.0], 1e-6);
        close(&s.std, &[(1.0f32 + 1e-6).sqrt(), 1e-3], 1e-4);
        close(&s.apply(&[3.0, 10.0]), &[1.0, 0.0], 1e-5);
    }

    /// A linearly separable set: class c is a blob around a corner of a simplex in 6-d,
    /// shifted and scaled so standardisation matters.
    fn blobs(n: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let dim = 6;
        let mut rng = Rng::new(seed);
        let mut x = Vec::with_capacity(n * dim);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = i % classes;
            for d in 0..dim {
                let centre = if d == c { 3.0 } else { 0.0 };
                x.push(100.0 + 5.0 * (centre + 0.3 * rng.normal()));
            }
            y.push(c as u32);
        }
        (x, y)
    }

    #[test]
    fn linear_probe_separates_a_separable_set_perfectly() {
        let classes = 4;
        let (x, y) = blobs(200, classes, 1);
        let (xt, yt) = blobs(100, classes, 2);
        let cfg = LinearConfig { epochs: 30, lr: 1e-2, batch: 32, seed: 3, ..LinearConfig::default() };
        let mut seen = Vec::new();
        let probe = block_on(train_linear(&Cpu, &x, &y, 6, classes, &cfg, |e, l| seen.push((e, l))));
        assert_eq!(seen.len(), 30);
        assert_eq!(seen[29].0, 30);
        assert!(seen[29].1 < 0.2 * seen[0].1, "loss {} → {}", seen[0].1, seen[29].1);
        assert_eq!(top_k_accuracy(&probe.logits(&x), &y, classes, 1), 1.0);
        assert_eq!(top_k_accuracy(&probe.logits(&xt), &yt, classes, 1), 1.0);
        // the same seed gives the same probe
        let again = block_on(train_linear(&Cpu, &x, &y, 6, classes, &cfg, |_, _| {}));
        assert_eq!(again.weight, probe.weight);
    }

    #[test]
    fn linear_probe_steps_match_a_plain_softmax_regression() {
        // one full-batch step from the seeded init, checked against the formulas by hand;
        // Adam's first step is `w − lr · g / (|g| + eps)` (m̂ = g, v̂ = g²). Three classes
        // over 8 rows (3, 3, 2) so no bias gradient cancels to nothing.
        let (dim, classes, rows) = (6, 3, 8);
        let (x, y) = blobs(rows, classes, 4);
        let cfg = LinearConfig { epochs: 1, lr: 0.01, batch: rows, seed: 5, ..LinearConfig::default() };
        let probe = block_on(train_linear(&Cpu, &x, &y, dim, classes, &cfg, |_, _| {}));
        let xs = Standardize::fit(&x, dim).apply(&x);
        let mut rng = Rng::new(5);
        let w0: Vec<f32> = (0..classes * dim).map(|_| rng.normal() * 0.01).collect();
        let (mut gw, mut gb) = (vec![0.0f32; classes * dim], vec![0.0f32; classes]);
        for (r, row) in xs.chunks(dim).enumerate() {
            let z: Vec<f32> = (0..classes).map(|c| (0..dim).map(|d| w0[c * dim + d] * row[d]).sum()).collect();
            let e: Vec<f32> = z.iter().map(|v| v.exp()).collect();
            let sum: f32 = e.iter().sum();
            for c in 0..classes {
                let g = (e[c] / sum - (y[r] as usize == c) as u32 as f32) / rows as f32;
                gb[c] += g;
                (0..dim).for_each(|d| gw[c * dim + d] += g * row[d]);
            }
        }
        let adam = |w: f32, g: f32| w - 0.01 * g / (g.abs() + 1e-8);
        close(&probe.weight, &w0.iter().zip(&gw).map(|(w, g)| adam(*w, *g)).collect::<Vec<_>>(), 1e-4);
        close(&probe.bias, &gb.iter().map(|g| adam(0.0, *g)).collect::<Vec<_>>(), 1e-4);
    }

    #[test]
    fn linear_probe_on_the_gpu_matches_the_cpu() {
        let Some(gpu) = crate::gpu::test_gpu() else { return };
        // 70 rows in batches of 32: two full batches and a short one each epoch
        let (x, y) = blobs(70, 3, 6);
        let cfg = LinearConfig { epochs: 3, lr: 1e-2, batch: 32, seed: 7, ..LinearConfig::default() };
        let (mut cpu_losses, mut gpu_losses) = (Vec::new(), Vec::new());
        let cpu = block_on(train_linear(&Cpu, &x, &y, 6, 3, &cfg, |_, l| cpu_losses.push(l)));
        let gpu = block_on(train_linear(&gpu, &x, &y, 6, 3, &cfg, |_, l| gpu_losses.push(l)));
        close(&gpu.weight, &cpu.weight, 1e-3);
        close(&gpu.bias, &cpu.bias, 1e-3);
        close(&gpu_losses, &cpu_losses, 1e-4);
    }
}
