//! Seeded image augmentations on the CPU, shared by every method, the CLI and the app
//! (plain Rust, so a seed gives the same views natively and in wasm). torchvision's
//! semantics, as the official MAE and DINO code use them:
//! ```text
//! view  = RandomResizedCrop(size, scale, ratio=(3/4, 4/3))   # box drawn, then resampled
//!       → RandomHorizontalFlip(0.5)
//!       → RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p)     # in a random order
//!       → RandomGrayscale(p) → GaussianBlur(σ ∈ [0.1, 2], p) → Solarize(0.5, p)
//! DINO multi-crop = 2 global views (blur 1.0 | blur 0.1 + solarize 0.2)
//!                 + K local views at a smaller size (blur 0.5)
//! ```
//! Images are `f32` in [0, 1], height × width × channels (1 or 3).
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// An image in [0, 1], row-major HWC.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), width * height * channels, "image data does not match {width}×{height}×{channels}");
        Image { width, height, channels, data }
    }

    /// From 8-bit HWC pixels.
    pub fn from_u8(width: usize, height: usize, channels: usize, pixels: &[u8]) -> Self {
        Image::new(width, height, channels, pixels.iter().map(|&p| p as f32 / 255.0).collect())
    }

    fn at(&self, x: usize, y: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// Append as CHW, each channel normalised `(x − mean[c]) / std[c]`.
    pub fn push_chw(&self, mean: &[f32], std: &[f32], out: &mut Vec<f32>) {
        for c in 0..self.channels {
            out.extend((0..self.width * self.height).map(|p| (self.data[p * self.channels + c] - mean[c]) / std[c]));
        }
    }

    /// 8-bit HWC pixels (rounded, clamped).
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }
}

/// A crop rectangle in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl CropBox {
    /// The whole of a `w × h` image.
    pub fn full(w: usize, h: usize) -> Self {
        CropBox { x: 0, y: 0, w, h }
    }
    /// The largest centred square.
    pub fn centre_square(w: usize, h: usize) -> Self {
        let s = w.min(h);
        CropBox { x: (w - s) / 2, y: (h - s) / 2, w: s, h: s }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at an area fraction in `scale` and
/// a log-uniform aspect ratio in `ratio`, then a centre crop clamped to `ratio`.
pub fn random_crop_box(w: usize, h: usize, scale: (f32, f32), ratio: (f32, f32), rng: &mut Rng) -> CropBox {
    let area = (w * h) as f64;
    let (lo, hi) = ((ratio.0 as f64).ln(), (ratio.1 as f64).ln());
    for _ in 0..10 {
        let target = area * (scale.0 as f64 + (scale.1 - scale.0) as f64 * rng.uniform() as f64);
        let r = (lo + (hi - lo) * rng.uniform() as f64).exp();
        let (cw, ch) = ((target * r).sqrt().round() as usize, (target / r).sqrt().round() as usize);
        if cw >= 1 && ch >= 1 && cw <= w && ch <= h {
            let x = rng.below(w - cw + 1);
            let y = rng.below(h - ch + 1);
            return CropBox { x, y, w: cw, h: ch };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < ratio.0 as f64 {
        (w, ((w as f64 / ratio.0 as f64).round() as usize).clamp(1, h))
    } else if in_ratio > ratio.1 as f64 {
        (((h as f64 * ratio.1 as f64).round() as usize).clamp(1, w), h)
    } else {
        (w, h)
    };
    CropBox { x: (w - cw) / 2, y: (h - ch) / 2, w: cw, h: ch }
}

/// One axis of a triangle-filter resample: for each output index, `(first source, weights)`.
/// The filter widens by the shrink factor (PIL's antialiased bilinear), so downscaling
/// averages instead of aliasing.
fn triangle_taps(start: usize, len: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = len as f64 / out as f64;
    let support = scale.max(1.0);
    (0..out)
        .map(|o| {
            let centre = start as f64 + (o as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(start as f64)) as usize;
            let hi = ((centre + support).ceil() as usize).min(start + len);
            let mut w: Vec<f32> =
                (lo..hi).map(|s| (1.0 - ((s as f64 + 0.5 - centre).abs() / support)).max(0.0) as f32).collect();
            let sum: f32 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                // a box narrower than one tap: nearest source pixel
                w.iter_mut().for_each(|v| *v = 0.0);
                let near = (centre.floor() as usize).clamp(lo, hi - 1);
                w[near - lo] = 1.0;
            }
            (lo, w)
        })
        .collect()
}

/// Resample `region` of `img` to `out_w × out_h` (separable triangle filter).
pub fn resize_region(img: &Image, region: CropBox, out_w: usize, out_h: usize) -> Image {
    assert!(region.w >= 1 && region.h >= 1 && region.x + region.w <= img.width && region.y + region.h <= img.height);
    let c = img.channels;
    let (tx, ty) = (triangle_taps(region.x, region.w, out_w), triangle_taps(region.y, region.h, out_h));
    // horizontal pass over the rows of the region
    let mut rows = vec![0.0f32; region.h * out_w * c];
    for y in 0..region.h {
        for (ox, (lo, w)) in tx.iter().enumerate() {
            for ch in 0..c {
                rows[(y * out_w + ox) * c + ch] =
                    w.iter().enumerate().map(|(k, wk)| wk * img.at(lo + k, region.y + y, ch)).sum();
            }
        }
    }
    let mut out = vec![0.0f32; out_h * out_w * c];
    for (oy, (lo, w)) in ty.iter().enumerate() {
        for i in 0..out_w * c {
            out[oy * out_w * c + i] =
                w.iter().enumerate().map(|(k, wk)| wk * rows[(lo - region.y + k) * out_w * c + i]).sum();
        }
    }
    Image::new(out_w, out_h, c, out)
}

/// Resize the shorter side to `size` and keep the centre square (evaluation's view).
pub fn centre_fit(img: &Image, size: usize) -> Image {
    resize_region(img, CropBox::centre_square(img.width, img.height), size, size)
}

pub fn hflip(img: &Image) -> Image {
    let (w, c) = (img.width, img.channels);
    let mut out = img.data.clone();
    for y in 0..img.height {
        for x in 0..w {
            for ch in 0..c {
                out[(y * w + x) * c + ch] = img.data[(y * w + (w - 1 - x)) * c + ch];
            }
        }
    }
    Image { data: out, ..*img }
}

fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// `RandomGrayscale`'s output: three equal channels (a grey image is returned as it is).
pub fn grayscale(img: &Image) -> Image {
    if img.channels == 1 {
        return img.clone();
    }
    let data = img
        .data
        .chunks_exact(3)
        .flat_map(|p| {
            let l = luma(p[0], p[1], p[2]);
            [l, l, l]
        })
        .collect();
    Image { data, ..*img }
}

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)`: factors drawn from
/// `[1 − s, 1 + s]` (hue: a shift in `[−h, h]` turns), applied in a random order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColorJitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl ColorJitter {
    /// BYOL's, used by DINO and iBOT: `ColorJitter(0.4, 0.4, 0.2, 0.1)`.
    pub const DINO: ColorJitter = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1 };

    pub fn apply(&self, img: &Image, rng: &mut Rng) -> Image {
        let mut order = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let factor = |s: f32, rng: &mut Rng| 1.0 - s + 2.0 * s * rng.uniform();
        let (b, c, s) = (factor(self.brightness, rng), factor(self.contrast, rng), factor(self.saturation, rng));
        let h = self.hue * (2.0 * rng.uniform() - 1.0);
        let mut out = img.clone();
        let grey = |d: &[f32], ch: usize, i: usize| -> f32 {
            if ch == 1 {
                d[i]
            } else {
                luma(d[3 * i], d[3 * i + 1], d[3 * i + 2])
            }
        };
        let n = img.width * img.height;
        for op in order {
            let d = &mut out.data;
            match op {
                0 => d.iter_mut().for_each(|v| *v = (*v * b).clamp(0.0, 1.0)),
                1 => {
                    let mean = (0..n).map(|i| grey(d, img.channels, i)).sum::<f32>() / n as f32;
                    d.iter_mut().for_each(|v| *v = (c * *v + (1.0 - c) * mean).clamp(0.0, 1.0));
                }
                2 if img.channels == 3 => {
                    for p in d.chunks_exact_mut(3) {
                        let l = luma(p[0], p[1], p[2]);
                        p.iter_mut().for_each(|v| *v = (s * *v + (1.0 - s) * l).clamp(0.0, 1.0));
                    }
                }
                3 if img.channels == 3 => d.chunks_exact_mut(3).for_each(|p| shift_hue(p, h)),
                _ => {}
            }
        }
        out
    }
}

/// Rotate a pixel's hue by `turns` (HSV, as torchvision's `adjust_hue`).
fn shift_hue(p: &mut [f32], turns: f32) {
    let (r, g, b) = (p[0], p[1], p[2]);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    if delta <= 0.0 {
        return;
    }
    let hue = if max == r {
        ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    } / 6.0;
    let hue = (hue + turns).rem_euclid(1.0) * 6.0;
    let (v, s) = (max, delta / max);
    let i = hue.floor();
    let f = hue - i;
    let (pp, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (nr, ng, nb) = match i as i32 % 6 {
        0 => (v, t, pp),
        1 => (q, v, pp),
        2 => (pp, v, t),
        3 => (pp, q, v),
        4 => (t, pp, v),
        _ => (v, pp, q),
    };
    p[0] = nr;
    p[1] = ng;
    p[2] = nb;
}

/// Separable Gaussian blur with standard deviation `sigma` pixels (edges clamped).
pub fn gaussian_blur(img: &Image, sigma: f32) -> Image {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let kernel: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let (w, h, c) = (img.width as isize, img.height as isize, img.channels);
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let mut acc = 0.0;
                    for (k, kv) in kernel.iter().enumerate() {
                        let o = k as isize - radius;
                        let (sx, sy) =
                            if horizontal { ((x + o).clamp(0, w - 1), y) } else { (x, (y + o).clamp(0, h - 1)) };
                        acc += kv * src[((sy * w + sx) as usize) * c + ch];
                    }
                    out[((y * w + x) as usize) * c + ch] = acc;
                }
            }
        }
        out
    };
    let data = pass(&pass(&img.data, true), false);
    Image { data, ..*img }
}

/// PIL's `ImageOps.solarize`: invert every value at or above `threshold`.
pub fn solarize(img: &Image, threshold: f32) -> Image {
    Image { data: img.data.iter().map(|&v| if v >= threshold { 1.0 - v } else { v }).collect(), ..*img }
}

/// How one view of an image is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Output side in pixels.
    pub size: usize,
    /// Area fraction of the crop (`RandomResizedCrop`'s `scale`).
    pub scale: (f32, f32),
    /// Horizontal flip with probability ½.
    pub flip: bool,
    /// Probability of [`ColorJitter::DINO`].
    pub color_jitter: f32,
    /// Probability of grayscale.
    pub grayscale: f32,
    /// Probability of a Gaussian blur with σ uniform in [`Self::blur_sigma`].
    pub blur: f32,
    /// The blur's σ range in pixels of the view; DINO's `GaussianBlur` draws (0.1, 2.0) on
    /// 224-px crops (files written before this field existed read as that).
    #[serde(default = "dino_blur_sigma")]
    pub blur_sigma: (f32, f32),
    /// Probability of solarisation at ½.
    pub solarize: f32,
}

impl Augmentation {
    /// The official MAE's: `RandomResizedCrop(size, scale=(0.2, 1.0))` + horizontal flip.
    pub fn mae(size: usize) -> Self {
        Augmentation {
            size,
            scale: (0.2, 1.0),
            flip: true,
            color_jitter: 0.0,
            grayscale: 0.0,
            blur: 0.0,
            blur_sigma: DINO_BLUR_SIGMA,
            solarize: 0.0,
        }
    }

    /// DINO's `flip_and_color_jitter` on a crop of `scale` (blur and solarisation off).
    pub fn flip_and_color_jitter(size: usize, scale: (f32, f32)) -> Self {
        Augmentation { blur: 0.0, color_jitter: 0.8, grayscale: 0.2, scale, ..Augmentation::mae(size) }
    }

    /// The crop this view takes of a `w × h` image.
    pub fn crop_box(&self, w: usize, h: usize, rng: &mut Rng) -> CropBox {
        random_crop_box(w, h, self.scale, (3.0 / 4.0, 4.0 / 3.0), rng)
    }

    /// The view, given the pixels of the box [`Self::crop_box`] drew (so a caller holding
    /// large 8-bit images converts only the crop).
    pub fn finish(&self, crop: &Image, rng: &mut Rng) -> Image {
        let mut v = resize_region(crop, CropBox::full(crop.width, crop.height), self.size, self.size);
        if self.flip && rng.uniform() < 0.5 {
            v = hflip(&v);
        }
        if self.color_jitter > 0.0 && rng.uniform() < self.color_jitter {
            v = ColorJitter::DINO.apply(&v, rng);
        }
        if self.grayscale > 0.0 && rng.uniform() < self.grayscale {
            v = grayscale(&v);
        }
        if self.blur > 0.0 && rng.uniform() < self.blur {
            let (lo, hi) = self.blur_sigma;
            v = gaussian_blur(&v, lo + (hi - lo) * rng.uniform());
        }
        if self.solarize > 0.0 && rng.uniform() < self.solarize {
            v = solarize(&v, 0.5);
        }
        v
    }

    pub fn view(&self, img: &Image, rng: &mut Rng) -> Image {
        let b = self.crop_box(img.width, img.height, rng);
        let crop =
            if b == CropBox::full(img.width, img.height) { img.clone() } else { resize_region(img, b, b.w, b.h) };
        self.finish(&crop, rng)
    }
}

/// DINO's blur σ range in pixels (`GaussianBlur(radius=uniform(0.1, 2.0))`, meant for
/// 224-px crops: on 28-px images it is a far stronger blur).
pub const DINO_BLUR_SIGMA: (f32, f32) = (0.1, 2.0);

fn dino_blur_sigma() -> (f32, f32) {
    DINO_BLUR_SIGMA
}

/// DINO's `DataAugmentationDINO`: two global views and `n_local` local ones.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiCrop {
    pub global: [Augmentation; 2],
    pub local: Augmentation,
    pub n_local: usize,
}

impl MultiCrop {
    /// As `main_dino.py`: global crops at `global_scale` (default (0.4, 1)), local crops at
    /// `local_scale` (default (0.05, 0.4)), blurs with σ in `blur_sigma` px (DINO's
    /// [`DINO_BLUR_SIGMA`]).
    pub fn dino(
        global_size: usize,
        local_size: usize,
        n_local: usize,
        global_scale: (f32, f32),
        local_scale: (f32, f32),
        blur_sigma: (f32, f32),
    ) -> Self {
        let g = Augmentation { blur_sigma, ..Augmentation::flip_and_color_jitter(global_size, global_scale) };
        MultiCrop {
            global: [Augmentation { blur: 1.0, ..g }, Augmentation { blur: 0.1, solarize: 0.2, ..g }],
            local: Augmentation { blur: 0.5, size: local_size, scale: local_scale, ..g },
            n_local,
        }
    }

    /// Every view's augmentation, globals first.
    pub fn views(&self) -> impl Iterator<Item = &Augmentation> {
        self.global.iter().chain(std::iter::repeat_n(&self.local, self.n_local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize, c: usize) -> Image {
        Image::new(w, h, c, (0..w * h * c).map(|i| (i % 251) as f32 / 250.0).collect())
    }

    #[test]
    fn crop_boxes_respect_scale_and_bounds() {
        let mut rng = Rng::new(1);
        for _ in 0..500 {
            let b = random_crop_box(300, 200, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(b.x + b.w <= 300 && b.y + b.h <= 200 && b.w >= 1 && b.h >= 1);
            let frac = (b.w * b.h) as f32 / 60000.0;
            // rounding of the sides lets the area stray a little; the fallback gives ≤ 1
            assert!((0.19..=1.0).contains(&frac), "{b:?} covers {frac}");
        }
        // a strip that no try fits: the centre crop clamped to the ratio range
        let b = random_crop_box(1000, 10, (0.9, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!((b.w, b.h), (13, 10));
    }

    #[test]
    fn resize_is_identity_at_same_size_and_averages_when_shrinking() {
        let img = ramp(7, 5, 3);
        let same = resize_region(&img, CropBox::full(7, 5), 7, 5);
        for (a, b) in same.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-6);
        }
        // 2× shrink of a checkerboard is uniform grey
        let checker = Image::new(8, 8, 1, (0..64).map(|i| ((i % 8 + i / 8) % 2) as f32).collect());
        let half = resize_region(&checker, CropBox::full(8, 8), 4, 4);
        for v in &half.data[4..12] {
            assert!((v - 0.5).abs() < 0.13, "{:?}", half.data);
        }
        // a constant stays constant at any size
        let flat = Image::new(9, 4, 3, vec![0.3; 108]);
        assert!(resize_region(&flat, CropBox { x: 1, y: 1, w: 5, h: 3 }, 11, 6)
            .data
            .iter()
            .all(|v| (v - 0.3).abs() < 1e-6));
    }

    #[test]
    fn flip_grey_solarize_and_blur() {
        let img = ramp(5, 3, 3);
        assert_eq!(hflip(&hflip(&img)), img);
        assert_eq!(hflip(&img).data[0..3], img.data[12..15]);
        let g = grayscale(&img);
        assert!(g.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        let s = solarize(&Image::new(2, 1, 1, vec![0.2, 0.7]), 0.5);
        assert!((s.data[0] - 0.2).abs() < 1e-7 && (s.data[1] - 0.3).abs() < 1e-6);
        let flat = Image::new(6, 6, 1, vec![0.4; 36]);
        assert!(gaussian_blur(&flat, 1.5).data.iter().all(|v| (v - 0.4).abs() < 1e-6));
        // blur keeps the mean of an impulse away from the edges and spreads it
        let mut imp = vec![0.0; 121];
        imp[60] = 1.0;
        let b = gaussian_blur(&Image::new(11, 11, 1, imp), 1.0);
        assert!((b.data.iter().sum::<f32>() - 1.0).abs() < 1e-4 && b.data[60] < 0.2 && b.data[61] > 0.05);
    }

    #[test]
    fn hue_shift_round_trips_and_jitter_stays_in_range() {
        let mut p = [0.8, 0.3, 0.1];
        shift_hue(&mut p, 0.25);
        shift_hue(&mut p, -0.25);
        assert!((p[0] - 0.8).abs() < 1e-5 && (p[1] - 0.3).abs() < 1e-5 && (p[2] - 0.1).abs() < 1e-5, "{p:?}");
        // a third of a turn maps red to green
        let mut red = [1.0, 0.0, 0.0];
        shift_hue(&mut red, 1.0 / 3.0);
        assert!(red[1] > 0.99 && red[0] < 1e-5, "{red:?}");
        let mut rng = Rng::new(3);
        let img = ramp(8, 8, 3);
        for _ in 0..20 {
            let j = ColorJitter::DINO.apply(&img, &mut rng);
            assert!(j.data.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn views_are_seeded_and_sized() {
        let img = ramp(40, 30, 3);
        let mc = MultiCrop::dino(16, 8, 3, (0.4, 1.0), (0.05, 0.4), DINO_BLUR_SIGMA);
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            mc.views().map(|a| a.view(&img, &mut rng)).collect::<Vec<_>>()
        };
        let (a, b, c) = (draw(5), draw(5), draw(6));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.iter().map(|v| v.width).collect::<Vec<_>>(), vec![16, 16, 8, 8, 8]);
        assert!(a.iter().all(|v| v.data.iter().all(|x| (0.0..=1.0).contains(x))));
    }
}
