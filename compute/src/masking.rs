//! iBOT's masks for masked image modelling, as bytedance/ibot's `ImageFolderMask`
//! (`loader.py`) draws them for each crop, here from the run's seeded [`Rng`]:
//! ```text
//! pred_ratio = choice([U(m − v, m + v) if v > 0 else m  for m, v in zip(ratios, vars)])
//! high = pred_ratio · H · W                       # patches to mask, at most
//! block:                                          # BEiT's MaskingGenerator, iBOT's variant
//!     while count < high:
//!         up to 10 attempts:
//!             area = U((min(H, W) // 3)², high − count); aspect = exp(U(log 0.3, log 1/0.3))
//!             h, w = round(√(area · aspect)), round(√(area / aspect))
//!             if h < H and w < W: a rectangle at a random (top, left), kept if it masks
//!                 0 < new ≤ high − count patches; stop attempting once one is kept
//!         stop when no attempt masked anything
//! rand:   int(high) patches, uniformly
//! ```
//! With iBOT's multi-crop recipe (`--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`) half the
//! crops are not masked at all and the others mask up to U(0.1, 0.5) of their patches.
//! A mask is `[H, W]` flattened in raster order (the patch order), 1 where the student
//! sees `masked_embed` instead of the patch.
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::weights::WeightsError;

/// `pred_shape`: rectangles (BEiT's blocks) or single patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PredShape {
    Block,
    Rand,
}

/// `ImageFolderMask`'s arguments (their names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaskingGenerator {
    /// One mean ratio, or several of which each crop draws one.
    pub pred_ratio: Vec<f32>,
    /// Half-width of the uniform around each ratio (0: the ratio itself); one value
    /// applies to every ratio.
    pub pred_ratio_var: Vec<f32>,
    /// The blocks' height/width range, drawn log-uniformly.
    pub pred_aspect_ratio: (f32, f32),
    pub pred_shape: PredShape,
}

/// iBOT's multi-crop recipe (the README's `--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`).
impl Default for MaskingGenerator {
    fn default() -> Self {
        MaskingGenerator {
            pred_ratio: vec![0.0, 0.3],
            pred_ratio_var: vec![0.0, 0.2],
            pred_aspect_ratio: (0.3, 1.0 / 0.3),
            pred_shape: PredShape::Block,
        }
    }
}

/// A rectangle of patches: `[top, left, height, width]`.
pub type Block = [usize; 4];

impl MaskingGenerator {
    pub fn validate(&self) -> Result<(), WeightsError> {
        let bad = |m: String| Err(WeightsError::Config(m));
        let (r, v) = (&self.pred_ratio, &self.pred_ratio_var);
        if r.is_empty() || !(v.len() == r.len() || v.len() == 1) {
            return bad(format!("pred_ratio {r:?} needs one pred_ratio_var, or one per ratio (got {v:?})"));
        }
        for (i, m) in r.iter().enumerate() {
            let var = self.var(i);
            if !(0.0..=1.0).contains(m) || var < 0.0 || var > *m || m + var > 1.0 {
                return bad(format!("pred_ratio {m} ± {var} must lie in [0, 1], with the variance at most the ratio"));
            }
        }
        let (lo, hi) = self.pred_aspect_ratio;
        if !(lo > 0.0 && lo <= hi) {
            return bad(format!("pred_aspect_ratio ({lo}, {hi}) must be positive and ordered"));
        }
        Ok(())
    }

    fn var(&self, i: usize) -> f32 {
        self.pred_ratio_var.get(i).or(self.pred_ratio_var.first()).copied().unwrap_or(0.0)
    }

    /// `get_pred_ratio`: every ratio with a variance draws its uniform, then one is chosen.
    pub fn pred_ratio(&self, rng: &mut Rng) -> f64 {
        let drawn: Vec<f64> = (0..self.pred_ratio.len())
            .map(|i| {
                let (m, v) = (self.pred_ratio[i] as f64, self.var(i) as f64);
                if v > 0.0 {
                    uniform(rng, m - v, m + v)
                } else {
                    m
                }
            })
            .collect();
        drawn[rng.below(drawn.len())]
    }

    /// One crop's mask over a `grid` of patches: `[h · w]`, 1 where masked.
    pub fn mask(&self, grid: [usize; 2], rng: &mut Rng) -> Vec<f32> {
        let high = self.pred_ratio(rng) * (grid[0] * grid[1]) as f64;
        let mask = match self.pred_shape {
            PredShape::Block => {
                let (lo, hi) = self.pred_aspect_ratio;
                block_mask(grid, high, ((lo as f64).ln(), (hi as f64).ln()), rng).0
            }
            PredShape::Rand => rand_mask(grid[0] * grid[1], high as usize, rng),
        };
        mask.into_iter().map(|m| m as u8 as f32).collect()
    }

    /// `crops` masks one after the other: `[crops, h · w]`.
    pub fn masks(&self, grid: [usize; 2], crops: usize, rng: &mut Rng) -> Vec<f32> {
        (0..crops).flat_map(|_| self.mask(grid, rng)).collect()
    }
}

/// Python's `random.uniform(a, b)`.
fn uniform(rng: &mut Rng, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.uniform() as f64
}

/// iBOT's block masking of at most `high` patches of a `[H, W]` grid; also returns the
/// rectangles it placed, in order.
pub fn block_mask(grid: [usize; 2], high: f64, log_aspect: (f64, f64), rng: &mut Rng) -> (Vec<bool>, Vec<Block>) {
    let [gh, gw] = grid;
    let mut mask = vec![false; gh * gw];
    let mut blocks = Vec::new();
    let low = ((gh.min(gw) / 3) * (gh.min(gw) / 3)) as f64;
    let mut count = 0;
    while (count as f64) < high {
        let max_mask = high - count as f64;
        let mut delta = 0;
        for _attempt in 0..10 {
            let area = uniform(rng, low, max_mask);
            let aspect = uniform(rng, log_aspect.0, log_aspect.1).exp();
            // Python's round() rounds half to even
            let h = (area * aspect).sqrt().round_ties_even() as usize;
            let w = (area / aspect).sqrt().round_ties_even() as usize;
            if w < gw && h < gh {
                let top = rng.below(gh - h + 1);
                let left = rng.below(gw - w + 1);
                let cells = || (top..top + h).flat_map(move |i| (left..left + w).map(move |j| i * gw + j));
                let new = cells().filter(|c| !mask[*c]).count();
                if new > 0 && new as f64 <= max_mask {
                    cells().for_each(|c| mask[c] = true);
                    blocks.push([top, left, h, w]);
                    delta += new;
                }
            }
            if delta > 0 {
                break;
            }
        }
        if delta == 0 {
            break;
        }
        count += delta;
    }
    (mask, blocks)
}

/// `pred_shape='rand'`: `count` of `n` patches, shuffled.
fn rand_mask(n: usize, count: usize, rng: &mut Rng) -> Vec<bool> {
    let mut mask: Vec<bool> = (0..n).map(|i| i >= n - count.min(n)).collect();
    for i in (1..n).rev() {
        mask.swap(i, rng.below(i + 1));
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG_ASPECT: (f64, f64) = (-1.2039728043259361, 1.2039728043259361);

    #[test]
    fn block_masks_are_unions_of_their_rectangles_and_stay_at_most_the_target() {
        let mut total = (0.0, 0.0);
        for seed in 0..300 {
            let mut rng = Rng::new(seed);
            let grid = [[14, 14], [7, 7], [6, 9]][seed as usize % 3];
            let high = (0.1 + 0.4 * (seed as f64 / 300.0)) * (grid[0] * grid[1]) as f64;
            let (mask, blocks) = block_mask(grid, high, LOG_ASPECT, &mut rng);
            let mut painted = vec![false; mask.len()];
            for &[top, left, h, w] in &blocks {
                assert!(h >= 1 && w >= 1 && h < grid[0] && w < grid[1], "seed {seed}: block {h}×{w} on {grid:?}");
                assert!(top + h <= grid[0] && left + w <= grid[1], "seed {seed}: block outside the grid");
                for i in top..top + h {
                    for j in left..left + w {
                        painted[i * grid[1] + j] = true;
                    }
                }
            }
            assert_eq!(mask, painted, "seed {seed}: the mask is not the union of its blocks {blocks:?}");
            let count = mask.iter().filter(|m| **m).count() as f64;
            assert!(count <= high, "seed {seed}: {count} masked > target {high}");
            total = (total.0 + count, total.1 + high);
        }
        // the attempts rarely give up far from the target
        assert!(total.0 > 0.85 * total.1, "masked {} of a target of {}", total.0, total.1);
    }

    #[test]
    fn pred_ratio_is_zero_or_uniform_around_the_mean() {
        let g = MaskingGenerator::default();
        g.validate().unwrap();
        let mut rng = Rng::new(1);
        let r: Vec<f64> = (0..2000).map(|_| g.pred_ratio(&mut rng)).collect();
        let zeros = r.iter().filter(|v| **v == 0.0).count();
        assert!((850..1150).contains(&zeros), "{zeros} of 2000 crops unmasked, want about half");
        let drawn: Vec<f64> = r.into_iter().filter(|v| *v != 0.0).collect();
        assert!(drawn.iter().all(|v| (0.1..0.5).contains(v)), "ratios outside U(0.1, 0.5)");
        let mean = drawn.iter().sum::<f64>() / drawn.len() as f64;
        assert!((mean - 0.3).abs() < 0.01, "mean ratio {mean}");
        let fixed = MaskingGenerator { pred_ratio: vec![0.3], pred_ratio_var: vec![0.0], ..g };
        assert_eq!(fixed.pred_ratio(&mut rng), 0.3f32 as f64);
    }

    #[test]
    fn masks_are_determined_by_the_seed() {
        let g = MaskingGenerator::default();
        let draw = |seed| g.masks([7, 7], 16, &mut Rng::new(seed));
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let m = draw(3);
        assert_eq!(m.len(), 16 * 49);
        assert!(m.iter().all(|v| *v == 0.0 || *v == 1.0));
        let per_crop: Vec<usize> = m.chunks(49).map(|c| c.iter().filter(|v| **v == 1.0).count()).collect();
        assert!(per_crop.contains(&0) && per_crop.iter().any(|c| *c > 0), "{per_crop:?}");
    }

    #[test]
    fn rand_masks_hold_int_high_patches() {
        let g = MaskingGenerator {
            pred_ratio: vec![0.4],
            pred_ratio_var: vec![0.0],
            pred_shape: PredShape::Rand,
            ..MaskingGenerator::default()
        };
        let m = g.mask([5, 5], &mut Rng::new(2));
        assert_eq!(m.iter().filter(|v| **v == 1.0).count(), (0.4f32 as f64 * 25.0) as usize);
    }

    #[test]
    fn bad_ratios_are_refused() {
        let bad = MaskingGenerator { pred_ratio: vec![0.1], pred_ratio_var: vec![0.2], ..Default::default() };
        assert!(bad.validate().is_err());
        let lengths = MaskingGenerator { pred_ratio: vec![0.1, 0.3, 0.5], ..Default::default() };
        assert!(lengths.validate().is_err());
        let one_var = MaskingGenerator { pred_ratio: vec![0.3, 0.5], pred_ratio_var: vec![0.1], ..Default::default() };
        one_var.validate().unwrap();
    }
}
