//! The Reconstruct page's arithmetic, pure and wasm-safe: fit an uploaded image to the
//! model, undo the input normalisation, score the masked patches against a mean-fill
//! baseline, lay out the grid. It follows `patchwork reconstruct` (cli/src/reconstruct.rs)
//! step for step, so the page and the CLI give the same numbers for the same image, seed
//! and list of ratios.
pub mod page;

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use patchwork_compute::methods::mae::MaeConfig;
use patchwork_compute::model_file::MaeModel;
use patchwork_compute::TensorFile;

pub use patchwork_compute::model_file::Normalize;

/// An MAE for the page: weights, config and input normalisation, read as `patchwork
/// reconstruct` reads them (`patchwork train` metadata, or an official checkpoint's shapes).
pub type ModelFile = MaeModel;

/// Parse a model file's bytes (a bundled model, or one the user picked).
pub fn parse_model(bytes: &[u8]) -> Result<ModelFile, String> {
    let file = TensorFile::from_bytes(bytes).map_err(|e| format!("not a safetensors model: {e}"))?;
    MaeModel::from_file(file).map_err(|e| e.to_string())
}

/// 8-bit RGBA pixels, row-major, straight (not premultiplied) alpha: what a canvas's
/// `getImageData` gives and `putImageData` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Picture {
    pub fn new(width: u32, height: u32, rgba: Vec<u8>) -> Self {
        assert_eq!(rgba.len(), (width * height * 4) as usize, "{width}×{height} RGBA");
        Picture { width, height, rgba }
    }
}

/// `[C, S, S]` normalised model input from any picture: alpha composited over white (the
/// CLI drops alpha; for opaque images both agree), then as the CLI does: shorter side
/// resized to `S` and centre-cropped (Triangle filter), grey by Rec. 709 luma for one channel.
pub fn model_input(pic: &Picture, cfg: &MaeConfig, norm: &Normalize) -> Vec<f32> {
    let rgb: Vec<u8> = pic
        .rgba
        .chunks_exact(4)
        .flat_map(|p| {
            let a = u32::from(p[3]);
            [0, 1, 2].map(|c| ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8)
        })
        .collect();
    let img = DynamicImage::ImageRgb8(RgbImage::from_raw(pic.width, pic.height, rgb).expect("RGB size"));
    let img = fit(&img, cfg.img_size);
    let c = cfg.in_chans;
    let raw: Vec<u8> = if c == 1 { img.to_luma8().into_raw() } else { img.to_rgb8().into_raw() };
    let n = cfg.img_size * cfg.img_size;
    (0..c)
        .flat_map(|ch| (0..n).map(move |p| (ch, p)))
        .map(|(ch, p)| norm.apply(ch, raw[p * c + ch] as f32 / 255.0))
        .collect()
}

/// Resize the shorter side to `size` and crop the centre square (the identity at `size`).
fn fit(img: &DynamicImage, size: usize) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    if w as usize == size && h as usize == size {
        return img.clone();
    }
    let side = w.min(h);
    img.crop_imm((w - side) / 2, (h - side) / 2, side, side).resize_exact(
        size as u32,
        size as u32,
        FilterType::Triangle,
    )
}

/// Patches kept at `ratio` out of `patches`, as the CLI counts them; `None` when the ratio
/// is out of [0, 1) or would hide every patch.
pub fn keep_count(patches: usize, ratio: f64) -> Option<usize> {
    let keep = (patches as f64 * (1.0 - ratio)) as usize;
    ((0.0..1.0).contains(&ratio) && keep > 0).then_some(keep)
}

/// One image's reconstruction at one ratio, in pixel space.
#[derive(Clone, Debug, PartialEq)]
pub struct Recon {
    /// `[L]`: 1 where the patch was removed.
    pub mask: Vec<f32>,
    /// `[C, S, S]` in [0, 1], predictions clamped.
    pub pred: Vec<f32>,
    pub orig: Vec<f32>,
}

/// Turn the decoder's `pred: [L, p·p·c]` (in (p, p, c) order, normalised pixel space) and
/// the normalised input `x: [C, S, S]` into pixel-space images. `norm_pix_loss` models
/// predict per-patch standardised pixels; they are undone with the patch's own statistics,
/// as the MAE demo and the CLI do (this peeks at hidden pixels).
pub fn to_pixels(cfg: &MaeConfig, norm: &Normalize, x: &[f32], pred: &[f32], mask: Vec<f32>) -> Recon {
    let (c, s, p, g) = (cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.grid());
    let at = |ch: usize, y: usize, xx: usize| (ch * s + y) * s + xx;
    let mut out = vec![0.0f32; c * s * s];
    for gy in 0..g {
        for gx in 0..g {
            let patch = &pred[(gy * g + gx) * cfg.patch_len()..][..cfg.patch_len()];
            let pixel = |k: usize| {
                let (i, j, ch) = (k / (p * c), (k / c) % p, k % c);
                at(ch, gy * p + i, gx * p + j)
            };
            let (mean, scale) = if cfg.norm_pix_loss {
                let t: Vec<f64> = (0..patch.len()).map(|k| x[pixel(k)] as f64).collect();
                let m = t.iter().sum::<f64>() / t.len() as f64;
                let var = t.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (t.len() as f64 - 1.0).max(1.0);
                (m, (var + 1e-6).sqrt())
            } else {
                (0.0, 1.0)
            };
            for (k, v) in patch.iter().enumerate() {
                out[pixel(k)] = (*v as f64 * scale + mean) as f32;
            }
        }
    }
    let pixels = |v: &[f32]| -> Vec<f32> {
        v.iter().enumerate().map(|(i, v)| norm.undo(i / (s * s), *v).clamp(0.0, 1.0)).collect()
    };
    Recon { mask, pred: pixels(&out), orig: pixels(x) }
}

/// Mean squared error over the removed patches: `(model, mean-fill baseline)`, where the
/// baseline paints every removed pixel with the mean colour of the visible ones.
pub fn masked_errors(cfg: &MaeConfig, r: &Recon) -> (f64, f64) {
    let (c, s, p, g) = (cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.grid());
    let masked = |y: usize, x: usize| r.mask[(y / p) * g + x / p] > 0.5;
    let img = |v: &[f32], ch: usize, y: usize, x: usize| v[(ch * s + y) * s + x] as f64;
    let mut fill = vec![0.0; c];
    let mut visible = 0usize;
    for y in 0..s {
        for x in 0..s {
            if !masked(y, x) {
                visible += 1;
                for (ch, f) in fill.iter_mut().enumerate() {
                    *f += img(&r.orig, ch, y, x);
                }
            }
        }
    }
    fill.iter_mut().for_each(|f| *f /= visible.max(1) as f64);
    let (mut model, mut base, mut count) = (0.0, 0.0, 0usize);
    for (ch, f) in fill.iter().enumerate() {
        for y in 0..s {
            for x in 0..s {
                if masked(y, x) {
                    let o = img(&r.orig, ch, y, x);
                    model += (img(&r.pred, ch, y, x) - o).powi(2);
                    base += (f - o).powi(2);
                    count += 1;
                }
            }
        }
    }
    (model / count.max(1) as f64, base / count.max(1) as f64)
}

/// The four pictures of a grid row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panel {
    /// The input with removed patches grey.
    Masked,
    /// The decoder's output for every patch.
    Reconstruction,
    /// The reconstruction where patches were removed, the input where they were visible.
    Pasted,
    Original,
}

impl Panel {
    pub const ALL: [Panel; 4] = [Panel::Masked, Panel::Reconstruction, Panel::Pasted, Panel::Original];
    pub fn title(self) -> &'static str {
        match self {
            Panel::Masked => "masked input",
            Panel::Reconstruction => "reconstruction",
            Panel::Pasted => "reconstruction + visible",
            Panel::Original => "original",
        }
    }
}

/// One panel at `cell × cell` pixels (nearest neighbour), opaque RGBA.
pub fn panel(cfg: &MaeConfig, r: &Recon, which: Panel, cell: u32) -> Picture {
    let mut rgba = Vec::with_capacity((cell * cell * 4) as usize);
    for cy in 0..cell {
        for cx in 0..cell {
            let rgb = panel_pixel(cfg, r, which, cy, cx, cell);
            rgba.extend(rgb.map(|v| (v * 255.0).round() as u8));
            rgba.push(255);
        }
    }
    Picture::new(cell, cell, rgba)
}

fn panel_pixel(cfg: &MaeConfig, r: &Recon, which: Panel, cy: u32, cx: u32, cell: u32) -> [f32; 3] {
    let (c, s, p, g) = (cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.grid());
    let (y, x) = ((cy as usize * s) / cell as usize, (cx as usize * s) / cell as usize);
    let masked = r.mask[(y / p) * g + x / p] > 0.5;
    let px = |v: &[f32], ch: usize| v[(ch.min(c - 1) * s + y) * s + x];
    match which {
        Panel::Masked if masked => [0.5; 3],
        Panel::Reconstruction => [0, 1, 2].map(|ch| px(&r.pred, ch)),
        Panel::Pasted if masked => [0, 1, 2].map(|ch| px(&r.pred, ch)),
        _ => [0, 1, 2].map(|ch| px(&r.orig, ch)),
    }
}

/// The whole grid as one picture, laid out as the CLI's PNG: a row per ratio, the four
/// panels in [`Panel::ALL`] order, 2-pixel white gaps.
pub fn grid(cfg: &MaeConfig, rows: &[Recon], cell: u32) -> Picture {
    let gap = 2u32;
    let (w, h) = (4 * cell + 5 * gap, rows.len() as u32 * (cell + gap) + gap);
    let mut rgba = vec![255u8; (w * h * 4) as usize];
    for (row, r) in rows.iter().enumerate() {
        for (col, which) in Panel::ALL.into_iter().enumerate() {
            for cy in 0..cell {
                for cx in 0..cell {
                    let rgb = panel_pixel(cfg, r, which, cy, cx, cell);
                    let (ox, oy) = (gap + col as u32 * (cell + gap) + cx, gap + row as u32 * (cell + gap) + cy);
                    let i = ((oy * w + ox) * 4) as usize;
                    for (k, v) in rgb.into_iter().enumerate() {
                        rgba[i + k] = (v * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    Picture::new(w, h, rgba)
}

/// A grid cell side: the model's input scaled by a whole factor to at least 112 pixels.
pub fn cell_size(cfg: &MaeConfig) -> u32 {
    let s = cfg.img_size as u32;
    s * 112u32.div_ceil(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> MaeConfig {
        MaeConfig { img_size: 4, patch_size: 2, in_chans: 1, ..MaeConfig::default() }
    }

    #[test]
    fn a_perfect_prediction_has_zero_error_and_the_baseline_does_not() {
        let orig: Vec<f32> = (0..16).map(|i| i as f32 / 15.0).collect();
        let r = Recon { mask: vec![1.0, 0.0, 0.0, 1.0], pred: orig.clone(), orig };
        let (model, base) = masked_errors(&tiny(), &r);
        assert_eq!(model, 0.0);
        assert!(base > 0.01, "{base}");
    }

    #[test]
    fn transparent_pixels_become_white_and_grey_stays_grey() {
        let cfg = MaeConfig { img_size: 2, patch_size: 1, in_chans: 1, ..MaeConfig::default() };
        let norm = Normalize { mean: vec![0.0], std: vec![1.0] };
        let pic = Picture::new(2, 2, vec![0, 0, 0, 0, 51, 51, 51, 255, 0, 0, 0, 255, 255, 0, 0, 128]);
        let x = model_input(&pic, &cfg, &norm);
        assert_eq!(&x[..3], &[1.0, 0.2, 0.0], "{x:?}");
        // red at half alpha over white: (255, 127, 127), luma ≈ 0.6
        assert!((x[3] - 0.6).abs() < 0.02, "{x:?}");
    }

    #[test]
    fn model_input_crops_the_centre_of_a_wide_image() {
        let cfg = MaeConfig { img_size: 2, patch_size: 1, in_chans: 3, ..MaeConfig::default() };
        let norm = Normalize { mean: vec![0.0; 3], std: vec![1.0; 3] };
        // 4×2: black, white, white, black columns
        let col = |x: u32| if x == 1 || x == 2 { 255 } else { 0 };
        let rgba = (0..8)
            .flat_map(|i| {
                let v = col(i % 4);
                [v, v, v, 255]
            })
            .collect();
        let x = model_input(&Picture::new(4, 2, rgba), &cfg, &norm);
        assert!(x.iter().all(|v| *v == 1.0), "{x:?}");
    }

    #[test]
    fn keep_count_matches_the_cli_and_refuses_hiding_everything() {
        assert_eq!(keep_count(49, 0.75), Some(12));
        assert_eq!(keep_count(49, 0.9), Some(4));
        assert_eq!(keep_count(49, 0.95), Some(2));
        assert_eq!(keep_count(4, 0.9), None);
        assert_eq!(keep_count(49, 1.0), None);
    }

    #[test]
    fn grid_has_the_clis_layout() {
        let cfg = tiny();
        let r = Recon { mask: vec![1.0, 0.0, 0.0, 0.0], pred: vec![0.0; 16], orig: vec![1.0; 16] };
        let g = grid(&cfg, &[r.clone(), r], 8);
        assert_eq!((g.width, g.height), (4 * 8 + 10, 2 * 10 + 2));
        // masked input, top-left patch: grey
        assert_eq!(&g.rgba[((2 * g.width + 2) * 4) as usize..][..4], &[128, 128, 128, 255]);
    }
}
