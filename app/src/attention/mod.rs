//! The Attention page's pure part, wasm-safe and tested natively: read a model file as a
//! ViT, fit an image to its input exactly as `patchwork attention` does (cli/src/attention.rs),
//! and paint the tiles: the input as the model sees it, a heat map (viridis, min-max scaled
//! per tile, over the grey image) per head and for the mean, and the mass mask. The maps and
//! the mask themselves are `patchwork_compute::attention`, shared with the CLI.
pub mod compute;
pub mod page;

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use patchwork_compute::attention::{min_max, viridis, vit_from_file, VitModel};
use patchwork_compute::model_file::Normalize;
use patchwork_compute::{TensorFile, VitConfig};

use crate::reconstruct::Picture;

/// Parse a model file's bytes (a bundled model, or one the user picked) as a ViT: the
/// config and normalisation, and the tensors `Vit::from_file` takes.
pub fn parse_vit(bytes: &[u8]) -> Result<(VitModel, TensorFile), String> {
    let file = TensorFile::from_bytes(bytes).map_err(|e| format!("not a safetensors model: {e}"))?;
    vit_from_file(file, None).map_err(|e| format!("not a ViT this page can read: {e}"))
}

/// One image fitted to a model: what goes in and what the model sees.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// `[C, H, W]`, normalised.
    pub x: Vec<f32>,
    /// The fitted image as opaque RGBA at `img_size` (grey for one-channel models).
    pub seen: Picture,
}

/// Fit `pic` to the model as `patchwork attention` fits a file: alpha composited over white
/// (the CLI drops alpha; for opaque images both agree), shorter side resized and the centre
/// cropped to `img_size` (Triangle filter), grey by Rec. 709 luma for one channel, then
/// normalised.
pub fn model_input(pic: &Picture, cfg: &VitConfig, norm: &Normalize) -> Input {
    let rgb: Vec<u8> = pic
        .rgba
        .chunks_exact(4)
        .flat_map(|p| {
            let a = u32::from(p[3]);
            [0, 1, 2].map(|c| ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8)
        })
        .collect();
    let img = DynamicImage::ImageRgb8(RgbImage::from_raw(pic.width, pic.height, rgb).expect("RGB size"));
    let img = fit_to(&img, cfg.img_size);
    let c = cfg.in_chans;
    let raw: Vec<u8> = if c == 1 { img.to_luma8().into_raw() } else { img.to_rgb8().into_raw() };
    let n = cfg.img_size[0] * cfg.img_size[1];
    let x = (0..c)
        .flat_map(|ch| (0..n).map(move |p| (ch, p)))
        .map(|(ch, p)| norm.apply(ch, raw[p * c + ch] as f32 / 255.0))
        .collect();
    let rgba = raw.chunks_exact(c).flat_map(|px| [px[0], px[1.min(c - 1)], px[2.min(c - 1)], 255]).collect();
    Input { x, seen: Picture::new(cfg.img_size[1] as u32, cfg.img_size[0] as u32, rgba) }
}

/// Resize the shorter side and crop the centre to `[h, w]`, as the CLI's `fit_to` (and
/// `data::fit` for squares, which is the identity at the model's size).
fn fit_to(img: &DynamicImage, [h, w]: [usize; 2]) -> DynamicImage {
    let (iw, ih) = (img.width(), img.height());
    if h == w {
        if iw as usize == h && ih as usize == h {
            return img.clone();
        }
        let side = iw.min(ih);
        return img.crop_imm((iw - side) / 2, (ih - side) / 2, side, side).resize_exact(
            w as u32,
            h as u32,
            FilterType::Triangle,
        );
    }
    let s = (w as f64 / iw as f64).max(h as f64 / ih as f64);
    let (cw, ch) = (((w as f64 / s).round() as u32).clamp(1, iw), ((h as f64 / s).round() as u32).clamp(1, ih));
    img.crop_imm((iw - cw) / 2, (ih - ch) / 2, cw, ch).resize_exact(w as u32, h as u32, FilterType::Triangle)
}

/// The whole factor that brings the model's input to at least 128 px (the CLI's tiles).
pub fn tile_scale(cfg: &VitConfig) -> u32 {
    128u32.div_ceil(cfg.img_size[0].min(cfg.img_size[1]) as u32)
}

/// How a tile is drawn over the model's input.
#[derive(Clone, Copy, Debug)]
pub enum Layer<'a> {
    /// The input itself.
    Image,
    /// A patch map `[l]`: viridis of its min-max scaling, 60% over the input's grey.
    Heat(&'a [f32]),
    /// A patch mask `[l]`: kept patches as they are with a red outline, the rest washed out.
    Mask(&'a [bool]),
}

/// One tile: `seen` (`img_size`, RGBA) scaled by `scale`, with `layer` on top and, when
/// given, patch `mark` outlined white-on-black (the patch whose attention is shown).
pub fn tile(seen: &Picture, patch: usize, grid: [usize; 2], layer: Layer, scale: u32, mark: Option<usize>) -> Picture {
    let (w, h) = (seen.width * scale, seen.height * scale);
    let heat = match layer {
        Layer::Heat(map) => min_max(map),
        _ => Vec::new(),
    };
    let patch_px = patch as u32 * scale;
    let edge = (patch_px / 10).max(1);
    let inside = |gy: isize, gx: isize| gy >= 0 && gx >= 0 && gy < grid[0] as isize && gx < grid[1] as isize;
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = (x / scale, y / scale);
            let p = &seen.rgba[((sy * seen.width + sx) * 4) as usize..][..3];
            let px = [0, 1, 2].map(|c| p[c] as f32 / 255.0);
            let grey = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
            let (gy, gx) = ((sy as usize / patch).min(grid[0] - 1), (sx as usize / patch).min(grid[1] - 1));
            let i = gy * grid[1] + gx;
            let (ix, iy) = (x - gx as u32 * patch_px, y - gy as u32 * patch_px);
            // distance in pixels from this patch's nearest side
            let from_side = ix.min(iy).min(patch_px - 1 - ix).min(patch_px - 1 - iy);
            let mut rgb = match layer {
                Layer::Image => px,
                Layer::Heat(_) => viridis(heat[i]).map(|c| 0.6 * c + 0.4 * grey),
                Layer::Mask(mask) if !mask[i] => px.map(|v| 0.45 * v + 0.55 * 0.5),
                Layer::Mask(mask) => {
                    let (gy, gx) = (gy as isize, gx as isize);
                    let kept = |y: isize, x: isize| !inside(y, x) || mask[y as usize * grid[1] + x as usize];
                    let border = (ix < edge && !kept(gy, gx - 1))
                        || (ix >= patch_px - edge && !kept(gy, gx + 1))
                        || (iy < edge && !kept(gy - 1, gx))
                        || (iy >= patch_px - edge && !kept(gy + 1, gx));
                    if border {
                        [230.0 / 255.0, 40.0 / 255.0, 40.0 / 255.0]
                    } else {
                        px
                    }
                }
            };
            if mark == Some(i) && from_side < 2 * edge {
                rgb = if from_side < edge { [1.0; 3] } else { [0.0; 3] };
            }
            rgba.extend(rgb.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8));
            rgba.push(255);
        }
    }
    Picture::new(w, h, rgba)
}

/// The patch under a click at `(x, y)` CSS pixels on a tile drawn `width × height` CSS pixels
/// large; `None` outside it.
pub fn patch_at(x: f64, y: f64, width: f64, height: f64, grid: [usize; 2]) -> Option<usize> {
    if !(0.0..width).contains(&x) || !(0.0..height).contains(&y) {
        return None;
    }
    let gx = ((x / width * grid[1] as f64) as usize).min(grid[1] - 1);
    let gy = ((y / height * grid[0] as f64) as usize).min(grid[0] - 1);
    Some(gy * grid[1] + gx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(img: [usize; 2], patch: usize, chans: usize) -> VitConfig {
        VitConfig { img_size: img, patch_size: patch, in_chans: chans, ..VitConfig::default() }
    }

    fn grey_ramp(w: u32, h: u32) -> Picture {
        let rgba = (0..w * h).flat_map(|i| [(i * 255 / (w * h)) as u8, 0, 0, 255]).collect();
        Picture::new(w, h, rgba)
    }

    #[test]
    fn inputs_are_fitted_to_square_and_oblong_models_as_the_cli_does() {
        let norm = Normalize { mean: vec![0.0; 3], std: vec![1.0; 3] };
        for (img, (w, h)) in [([16, 16], (16, 16)), ([8, 16], (16, 8)), ([24, 8], (8, 24))] {
            let input = model_input(&grey_ramp(40, 30), &cfg(img, 4, 3), &norm);
            assert_eq!((input.seen.width, input.seen.height), (w, h));
            assert_eq!(input.x.len(), 3 * img[0] * img[1]);
        }
        // one channel: the grey image, shown grey
        let norm = Normalize { mean: vec![0.5], std: vec![0.5] };
        let input = model_input(&grey_ramp(8, 8), &cfg([8, 8], 4, 1), &norm);
        assert!(input.seen.rgba.chunks_exact(4).all(|p| p[0] == p[1] && p[1] == p[2] && p[3] == 255));
        assert!((input.x[63] - (2.0 * input.seen.rgba[63 * 4] as f32 / 255.0 - 1.0)).abs() < 1e-6);
    }

    #[test]
    fn heat_tiles_are_viridis_over_grey_and_masks_outline_kept_patches() {
        let seen = Picture::new(2, 2, [0, 0, 0, 255].repeat(4));
        // 2×2 grid of 1-px patches, scale 10: each patch is a 10-px square
        let map = [0.0, 1.0, 0.5, 0.25];
        let t = tile(&seen, 1, [2, 2], Layer::Heat(&map), 10, None);
        assert_eq!((t.width, t.height), (20, 20));
        let at = |t: &Picture, x: u32, y: u32| t.rgba[((y * t.width + x) * 4) as usize..][..3].to_vec();
        // the lowest patch is viridis(0) × 0.6 over black, the highest viridis(1) × 0.6
        let v = |t: f32| viridis(t).map(|c| (0.6 * c * 255.0).round() as u8).to_vec();
        assert_eq!(at(&t, 5, 5), v(0.0));
        assert_eq!(at(&t, 15, 5), v(1.0));
        // a marked patch gets a white outer ring, a black inner one
        let t = tile(&seen, 1, [2, 2], Layer::Heat(&map), 10, Some(1));
        assert_eq!((at(&t, 10, 5), at(&t, 11, 5), at(&t, 15, 5)), (vec![255; 3], vec![0; 3], v(1.0)));
        // mask: kept patch 1 outlined red where its neighbours are dropped, patch 0 washed out
        let t = tile(&seen, 1, [2, 2], Layer::Mask(&[false, true, false, false]), 10, None);
        assert_eq!(at(&t, 10, 5), [230, 40, 40]);
        assert_eq!(at(&t, 19, 5), [0, 0, 0], "the image's edge counts as kept: no outline there");
        assert_eq!(at(&t, 15, 9), [230, 40, 40]);
        assert_eq!(at(&t, 5, 5), [70, 70, 70]);
    }

    #[test]
    fn clicks_land_on_the_patch_under_them() {
        // a 7×7 grid drawn 140 CSS px wide
        assert_eq!(patch_at(0.0, 0.0, 140.0, 140.0, [7, 7]), Some(0));
        assert_eq!(patch_at(139.9, 139.9, 140.0, 140.0, [7, 7]), Some(48));
        assert_eq!(patch_at(30.0, 50.0, 140.0, 140.0, [7, 7]), Some(2 * 7 + 1));
        assert_eq!(patch_at(-1.0, 5.0, 140.0, 140.0, [7, 7]), None);
        assert_eq!(patch_at(5.0, 140.0, 140.0, 140.0, [7, 7]), None);
        // an oblong grid: 2 rows of 4
        assert_eq!(patch_at(99.0, 40.0, 100.0, 50.0, [2, 4]), Some(7));
    }
}
