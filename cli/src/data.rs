//! Training and evaluation images: Fashion-MNIST (idx files), the bundled photos, or a
//! directory of images (class subfolders give labels). Everything becomes `[B, C, H, W]`
//! f32, scaled to [0, 1] and normalised with the data set's per-channel mean and std.
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use image::DynamicImage;
use patchwork_compute::augment::{grayscale, Augmentation, ColorJitter, Image};
use patchwork_compute::rng::Rng;
use patchwork_compute::train::{Scene, Views};

/// Where the Debian package `dataset-fashion-mnist` puts the full data set.
pub const SYSTEM_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

pub use patchwork_compute::model_file::Normalize;

/// How training draws a view of an image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Augment {
    /// The whole image (resized when its size differs from the model's).
    None,
    /// A random view ([`Augmentation`]; its `size` is replaced by the model's input side).
    Views(Augmentation),
}

/// What `--data` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    FashionMnist,
    Photos,
    /// A folder of idx files (Fashion-MNIST format) or of images.
    Dir(PathBuf),
}

impl DataSpec {
    pub fn parse(s: &str) -> Self {
        match s {
            "fashion-mnist" => DataSpec::FashionMnist,
            "photos" => DataSpec::Photos,
            path => DataSpec::Dir(PathBuf::from(path)),
        }
    }
    /// Channels of the images this data set gives by default.
    pub fn default_channels(&self) -> usize {
        match self {
            DataSpec::FashionMnist => 1,
            DataSpec::Photos => 3,
            DataSpec::Dir(p) if is_idx_dir(p) => 1,
            DataSpec::Dir(_) => 3,
        }
    }
    /// The training split at `channels`, images kept at most `2 × size` on their shorter side.
    pub fn load_train(&self, channels: usize, size: usize) -> Result<Dataset> {
        match self {
            DataSpec::FashionMnist => load_idx(&fashion_mnist_dir(), "train"),
            DataSpec::Photos => load_dir(&assets_dir().join("photos/train"), channels, size),
            DataSpec::Dir(p) if is_idx_dir(p) => load_idx(p, "train"),
            DataSpec::Dir(p) => load_dir(p, channels, size),
        }
    }
}

/// The repository's `assets/` folder: `$PATCHWORK_ASSETS`, else the one this binary was
/// built from.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("PATCHWORK_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets"),
    }
}

/// The full Fashion-MNIST when the Debian package is installed, else the bundled subset.
pub fn fashion_mnist_dir() -> PathBuf {
    let system = Path::new(SYSTEM_FASHION_MNIST);
    if is_idx_dir(system) {
        system.to_path_buf()
    } else {
        assets_dir().join("fashion-mnist")
    }
}

fn idx_path(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()].into_iter().map(|f| dir.join(f)).find(|p| p.is_file())
}

fn is_idx_dir(dir: &Path) -> bool {
    idx_path(dir, "train-images-idx3-ubyte").is_some()
}

/// Images with optional labels, held as decoded 8-bit images.
pub struct Dataset {
    pub name: String,
    pub channels: usize,
    pub images: Vec<DynamicImage>,
    /// One per image when the source has classes.
    pub labels: Option<Vec<u32>>,
    pub classes: Vec<String>,
    pub augment: Augment,
    pub norm: Normalize,
    /// Photos that cut-outs' backdrops may be cut from (`--backdrops`; no photos: plain
    /// colours and colour noise only, see [`backdrop`]).
    pub backdrops: PhotoBackdrops,
}

/// `--backdrops`' photos and how [`photo_backdrop`] draws from them.
#[derive(Clone, Debug)]
pub struct PhotoBackdrops {
    pub photos: Vec<image::RgbImage>,
    /// The share of backdrops cut from the photos (`--photo-share`); plain colours and colour
    /// noise split the rest evenly.
    pub share: f32,
    /// The sides in px, `LO,HI`, a photo's crop is shrunk to before it is stretched back
    /// (`--backdrop-blur`): smaller is blurrier.
    pub shrink: (u32, u32),
    /// The share of backdrops recoloured in their object's own colours (`--camouflage`,
    /// see [`camouflage`]).
    pub camouflage: f32,
    /// The probability that an image's object is recoloured in all its views of a step
    /// (`--object-jitter`, see [`jitter_object`]).
    pub object_jitter: f32,
}

impl PhotoBackdrops {
    pub const SHARE: f32 = 1.0 / 3.0;
    pub const SHRINK: (u32, u32) = (4, 16);
}

impl Default for PhotoBackdrops {
    fn default() -> Self {
        PhotoBackdrops {
            photos: Vec::new(),
            share: Self::SHARE,
            shrink: Self::SHRINK,
            camouflage: 0.0,
            object_jitter: 0.0,
        }
    }
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Put every cut-out (an image with an alpha channel) on a transparent square canvas
    /// `factor` times its longer side, at a spot drawn from `seed` and its index. Returns
    /// how many images were cut-outs.
    pub fn pad_cutouts(&mut self, factor: f32, seed: u64) -> usize {
        let mut padded = 0;
        for (i, img) in self.images.iter_mut().enumerate() {
            if !img.color().has_alpha() {
                continue;
            }
            let rgba = img.to_rgba8();
            let (w, h) = rgba.dimensions();
            let side = ((w.max(h) as f32 * factor).round() as u32).max(w).max(h);
            let mut rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            let (x, y) = (rng.below((side - w + 1) as usize) as i64, rng.below((side - h + 1) as usize) as i64);
            let mut canvas = image::RgbaImage::new(side, side);
            image::imageops::replace(&mut canvas, &rgba, x, y);
            *img = DynamicImage::ImageRgba8(canvas);
            padded += 1;
        }
        padded
    }
}

impl Views for Dataset {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn norm(&self) -> &Normalize {
        &self.norm
    }

    fn view(&self, index: usize, aug: &Augmentation, rng: &mut Rng) -> Image {
        augmented_view(&self.images[index], self.channels, aug, &self.backdrops, None, rng)
    }

    fn view_in(&self, index: usize, aug: &Augmentation, scene: Scene, rng: &mut Rng) -> Image {
        augmented_view(&self.images[index], self.channels, aug, &self.backdrops, Some(scene), rng)
    }

    fn label(&self, index: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[index])
    }

    fn batch(&self, indices: &[usize], size: usize, rng: &mut Rng) -> Vec<f32> {
        let mut out = Vec::with_capacity(indices.len() * self.channels * size * size);
        for &i in indices {
            let img = &self.images[i];
            match self.augment {
                Augment::None => push_chw(&fit(img, size), self.channels, &self.norm, &mut out),
                Augment::Views(a) => {
                    augmented_view(img, self.channels, &Augmentation { size, ..a }, &self.backdrops, None, rng)
                        .push_chw(&self.norm.mean, &self.norm.std, &mut out);
                }
            }
        }
        out
    }
}

/// Append `img` (already `size × size`) as normalised CHW values.
pub fn push_chw(img: &DynamicImage, channels: usize, norm: &Normalize, out: &mut Vec<f32>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw: Vec<u8> = if channels == 1 { img.to_luma8().into_raw() } else { img.to_rgb8().into_raw() };
    for c in 0..channels {
        out.extend((0..w * h).map(|p| norm.apply(c, raw[p * channels + c] as f32 / 255.0)));
    }
}

/// Resize the shorter side to `size` and crop the centre square (the identity at `size`).
pub fn fit(img: &DynamicImage, size: usize) -> DynamicImage {
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

/// One view of `img` drawn by `aug`; only the crop's pixels are converted to floats. A
/// cut-out (an image with transparent pixels) is laid over a random backdrop ([`backdrop`],
/// or [`photo_backdrop`] when there are photos): the one seeded by the scene when its views
/// share a backdrop (DINO's views of an image in one step), else a fresh one. So an object
/// is seen on a new background every time it is drawn, and only the object is the same from
/// one epoch to the next. With `--object-jitter` the scene's seed also recolours the object
/// ([`jitter_object`]), alike in all its views.
pub fn augmented_view(
    img: &DynamicImage,
    channels: usize,
    aug: &Augmentation,
    backdrops: &PhotoBackdrops,
    scene: Option<Scene>,
    rng: &mut Rng,
) -> Image {
    let b = aug.crop_box(img.width() as usize, img.height() as usize, rng);
    let recoloured = match scene {
        Some(s) if backdrops.object_jitter > 0.0 && img.color().has_alpha() => {
            jitter_object(img, backdrops.object_jitter, s.seed)
        }
        _ => None,
    };
    let img = recoloured.as_ref().unwrap_or(img);
    let crop = img.crop_imm(b.x as u32, b.y as u32, b.w as u32, b.h as u32);
    let crop = match (crop.color().has_alpha(), scene) {
        (false, _) => crop,
        (true, Some(s)) if s.shared_backdrop => over_backdrop(&crop.to_rgba8(), backdrops, &mut Rng::new(s.seed)),
        (true, _) => over_backdrop(&crop.to_rgba8(), backdrops, rng),
    };
    let raw = if channels == 1 { crop.to_luma8().into_raw() } else { crop.to_rgb8().into_raw() };
    aug.finish(&Image::from_u8(b.w, b.h, channels, &raw), rng)
}

/// A random background for a cut-out, `[h·w]` RGB in [0, 1]: a plain colour (half the time)
/// or smooth colour noise, a 4×4 grid of random colours bilinearly upsampled (like a blurred
/// photo).
pub fn backdrop(w: usize, h: usize, rng: &mut Rng) -> Vec<[f32; 3]> {
    if rng.uniform() < 0.5 {
        return vec![[rng.uniform(), rng.uniform(), rng.uniform()]; w * h];
    }
    colour_noise(w, h, rng)
}

/// Smooth colour noise: a 4×4 grid of random colours bilinearly upsampled to `w × h`.
fn colour_noise(w: usize, h: usize, rng: &mut Rng) -> Vec<[f32; 3]> {
    let grid: Vec<[f32; 3]> = (0..16).map(|_| [rng.uniform(), rng.uniform(), rng.uniform()]).collect();
    let at = |u: f32, v: f32| {
        let (x, y) = (u * 3.0, v * 3.0);
        let (x0, y0) = ((x as usize).min(2), (y as usize).min(2));
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let g = |i: usize, j: usize| grid[j * 4 + i];
        std::array::from_fn(|c| {
            let top = g(x0, y0)[c] * (1.0 - fx) + g(x0 + 1, y0)[c] * fx;
            let bottom = g(x0, y0 + 1)[c] * (1.0 - fx) + g(x0 + 1, y0 + 1)[c] * fx;
            top * (1.0 - fy) + bottom * fy
        })
    };
    let (sw, sh) = ((w.max(2) - 1) as f32, (h.max(2) - 1) as f32);
    (0..w * h).map(|i| at((i % w) as f32 / sw, (i / w) as f32 / sh)).collect()
}

/// A backdrop drawn with `--backdrops`' photos: `b.share` of them (a third by default) cut
/// from the photos, the rest split evenly between
/// - plain: a random colour half the time, else a grey (20%), near-white (15%) or near-black
///   (15%), so the extremes of plain studio backgrounds are seen;
/// - smooth colour noise, as [`backdrop`]'s;
///
/// and from the photos: a square of 0.2–1 of a random photo's shorter side at a random spot,
/// shrunk to `b.shrink` px (4–16 by default) and stretched back bilinearly (a background out
/// of focus: the smaller, the blurrier).
pub fn photo_backdrop(w: usize, h: usize, b: &PhotoBackdrops, rng: &mut Rng) -> Vec<[f32; 3]> {
    let photos = &b.photos;
    let kind = rng.uniform();
    if kind < (1.0 - b.share) / 2.0 {
        let r = rng.uniform();
        let c = if r < 0.5 {
            [rng.uniform(), rng.uniform(), rng.uniform()]
        } else {
            let g = rng.uniform();
            let g = if r < 0.7 {
                g
            } else if r < 0.85 {
                0.9 + 0.1 * g
            } else {
                0.1 * g
            };
            [g; 3]
        };
        return vec![c; w * h];
    }
    if kind < 1.0 - b.share || photos.is_empty() {
        return colour_noise(w, h, rng);
    }
    let photo = &photos[rng.below(photos.len())];
    let (pw, ph) = (photo.width(), photo.height());
    let side = (((0.2 + 0.8 * rng.uniform()) * pw.min(ph) as f32) as u32).clamp(1, pw.min(ph));
    let (x, y) = ((rng.uniform() * (pw - side + 1) as f32) as u32, (rng.uniform() * (ph - side + 1) as f32) as u32);
    let (lo, hi) = b.shrink;
    let small = lo + rng.below((hi.max(lo) - lo + 1) as usize) as u32;
    let crop = image::imageops::crop_imm(photo, x.min(pw - side), y.min(ph - side), side, side).to_image();
    let tiny = image::imageops::resize(&crop, small, small, FilterType::Triangle);
    let out = image::imageops::resize(&tiny, w.max(1) as u32, h.max(1) as u32, FilterType::Triangle);
    out.pixels().map(|p| std::array::from_fn(|c| p.0[c] as f32 / 255.0)).collect()
}

/// Close-ups for backdrops from cut-outs (`--backdrop-cutouts`): each cut-out cropped to its
/// object's bounding box, its transparent pixels filled with the object's mean colour, so a
/// backdrop cut from it is a blurred close-up of another object (fur, feathers, an eye) as a
/// photo's background often is. Images without an opaque pixel are left out.
pub fn flattened_cutouts(images: &[DynamicImage]) -> Vec<image::RgbImage> {
    let mut out = Vec::new();
    for img in images.iter().filter(|i| i.color().has_alpha()) {
        let rgba = img.to_rgba8();
        let (mut x0, mut y0, mut x1, mut y1, mut sum, mut n) = (u32::MAX, u32::MAX, 0, 0, [0.0f64; 3], 0.0);
        for (x, y, p) in rgba.enumerate_pixels().filter(|(_, _, p)| p.0[3] >= 128) {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            (0..3).for_each(|c| sum[c] += p.0[c] as f64);
            n += 1.0;
        }
        if n == 0.0 {
            continue;
        }
        let mean: [f32; 3] = std::array::from_fn(|c| (sum[c] / n) as f32);
        let crop = image::RgbImage::from_fn(x1 - x0 + 1, y1 - y0 + 1, |x, y| {
            let p = rgba.get_pixel(x0 + x, y0 + y).0;
            let a = p[3] as f32 / 255.0;
            image::Rgb(std::array::from_fn(|c| (p[c] as f32 * a + mean[c] * (1.0 - a)).round() as u8))
        });
        out.push(crop);
    }
    out
}

/// `--object-jitter P`: with probability `p`, the cut-out's colours through DINO's
/// `ColorJitter(0.4, 0.4, 0.2, 0.1)`, then to grey with probability `p`/4 (DINO's 0.8 and
/// 0.2 at `p` = 0.8), its alpha kept. Drawn from `seed` alone, so every view of an image in
/// a step shows the object in the same colours: the views still match, and colour no longer
/// names the object from step to step. `None`: left as it is.
pub fn jitter_object(img: &DynamicImage, p: f32, seed: u64) -> Option<DynamicImage> {
    let mut rng = Rng::new(seed ^ 0x6A09_E667_F3BC_C908);
    let (jitter, grey) = (rng.uniform() < p, rng.uniform() < p / 4.0);
    if !jitter && !grey {
        return None;
    }
    let rgba = img.to_rgba8();
    let (w, h) = (rgba.width() as usize, rgba.height() as usize);
    let rgb: Vec<u8> = rgba.pixels().flat_map(|q| [q.0[0], q.0[1], q.0[2]]).collect();
    let mut v = Image::from_u8(w, h, 3, &rgb);
    if jitter {
        v = ColorJitter::DINO.apply(&v, &mut rng);
    }
    if grey {
        v = grayscale(&v);
    }
    let out = image::RgbaImage::from_fn(w as u32, h as u32, |x, y| {
        let i = (y as usize * w + x as usize) * 3;
        let c = |k: usize| (v.data[i + k] * 255.0).round().clamp(0.0, 255.0) as u8;
        image::Rgba([c(0), c(1), c(2), rgba.get_pixel(x, y).0[3]])
    });
    Some(DynamicImage::ImageRgba8(out))
}

/// Recolour the backdrop `bg` in the colours of `img`'s object (its opaque pixels), as a
/// camouflaged animal's surroundings are: its variations around their mean are scaled to the
/// object's contrast (at most doubled) and centred on one of the object's pixels, drawn at
/// random. A plain backdrop becomes that pixel's colour. Then colour no longer tells the
/// object from its background, and only its shape and texture do. A crop with no opaque
/// pixel keeps its backdrop.
pub fn camouflage(bg: &mut [[f32; 3]], img: &image::RgbaImage, rng: &mut Rng) {
    let object: Vec<[f32; 3]> =
        img.pixels().filter(|p| p.0[3] >= 128).map(|p| std::array::from_fn(|c| p.0[c] as f32 / 255.0)).collect();
    if object.is_empty() || bg.is_empty() {
        return;
    }
    let stats = |px: &[[f32; 3]]| {
        let n = px.len() as f32;
        let mean: [f32; 3] = std::array::from_fn(|c| px.iter().map(|p| p[c]).sum::<f32>() / n);
        let std: [f32; 3] =
            std::array::from_fn(|c| (px.iter().map(|p| (p[c] - mean[c]).powi(2)).sum::<f32>() / n).sqrt());
        (mean, std)
    };
    let (_, object_std) = stats(&object);
    let (bg_mean, bg_std) = stats(bg);
    let anchor = object[rng.below(object.len())];
    let gain: [f32; 3] =
        std::array::from_fn(|c| if bg_std[c] > 1e-3 { (object_std[c] / bg_std[c]).min(2.0) } else { 0.0 });
    for p in bg.iter_mut() {
        *p = std::array::from_fn(|c| (anchor[c] + (p[c] - bg_mean[c]) * gain[c]).clamp(0.0, 1.0));
    }
}

/// `img` laid over a [`backdrop`] (a [`photo_backdrop`] when there are photos) by its alpha.
fn over_backdrop(img: &image::RgbaImage, backdrops: &PhotoBackdrops, rng: &mut Rng) -> DynamicImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut bg = if backdrops.photos.is_empty() { backdrop(w, h, rng) } else { photo_backdrop(w, h, backdrops, rng) };
    if backdrops.camouflage > 0.0 && rng.uniform() < backdrops.camouflage {
        camouflage(&mut bg, img, rng);
    }
    let mut out = image::RgbImage::new(w as u32, h as u32);
    for (i, (px, o)) in img.pixels().zip(out.pixels_mut()).enumerate() {
        let a = px.0[3] as f32 / 255.0;
        o.0 = std::array::from_fn(|c| ((px.0[c] as f32 / 255.0 * a + bg[i][c] * (1.0 - a)) * 255.0).round() as u8);
    }
    DynamicImage::ImageRgb8(out)
}

pub use patchwork_compute::train::epoch_order;

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse idx3 (images) bytes: `(n, rows, cols, pixels)`.
pub fn parse_idx_images(b: &[u8]) -> Result<(usize, usize, usize, &[u8])> {
    patchwork_compute::idx::parse_images(b).map_err(anyhow::Error::msg)
}

/// Parse idx1 (labels, `[n]` u8) bytes.
pub fn parse_idx_labels(b: &[u8]) -> Result<Vec<u32>> {
    patchwork_compute::idx::parse_labels(b).map_err(anyhow::Error::msg)
}

pub use patchwork_compute::idx::FASHION_MNIST_CLASSES;

/// The `split` ("train" or "t10k"/"test") of an idx folder, as grey images with labels.
pub fn load_idx(dir: &Path, split: &str) -> Result<Dataset> {
    let stem = if split == "test" { "t10k" } else { split };
    let find = |kind: &str| {
        idx_path(dir, &format!("{stem}-{kind}")).with_context(|| format!("no {stem}-{kind}(.gz) in {}", dir.display()))
    };
    let img_bytes = read_maybe_gz(&find("images-idx3-ubyte")?)?;
    let (n, rows, cols, pixels) = parse_idx_images(&img_bytes)?;
    let labels = parse_idx_labels(&read_maybe_gz(&find("labels-idx1-ubyte")?)?)?;
    if labels.len() != n {
        bail!("{}: {n} images but {} labels", dir.display(), labels.len());
    }
    let images = pixels
        .chunks_exact(rows * cols)
        .map(|p| DynamicImage::ImageLuma8(image::GrayImage::from_raw(cols as u32, rows as u32, p.to_vec()).unwrap()))
        .collect();
    Ok(Dataset {
        name: format!("fashion-mnist ({}, {split})", dir.display()),
        channels: 1,
        images,
        labels: Some(labels),
        classes: FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
        augment: Augment::None,
        norm: Normalize::fashion_mnist(),
        backdrops: PhotoBackdrops::default(),
    })
}

/// Decode an image file by its content, whatever its extension.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    if std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?.len() == 0 {
        bail!("{} is empty, not an image", path.display());
    }
    let reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if reader.format().is_none() {
        bail!(
            "{} is not an image the decoder recognises (PNG, JPEG, GIF, BMP, WebP, TIFF, PNM, TGA, ICO, QOI)",
            path.display()
        );
    }
    reader.decode().with_context(|| format!("{} is not a readable image", path.display()))
}

/// Keep an image's shorter side at most `max_side` (training crops never need more).
fn shrink(img: DynamicImage, max_side: u32) -> DynamicImage {
    let side = img.width().min(img.height());
    if side <= max_side {
        return img;
    }
    let s = max_side as f64 / side as f64;
    let (w, h) = ((img.width() as f64 * s).round() as u32, (img.height() as f64 * s).round() as u32);
    img.resize_exact(w.max(1), h.max(1), FilterType::Triangle)
}

/// `img` at `channels`; a cut-out (some pixel not opaque) keeps its alpha for
/// [`augmented_view`].
fn as_channels(img: DynamicImage, channels: usize) -> DynamicImage {
    if img.color().has_alpha() && img.to_rgba8().pixels().any(|p| p.0[3] < 255) {
        return DynamicImage::ImageRgba8(img.to_rgba8());
    }
    if channels == 1 {
        DynamicImage::ImageLuma8(img.to_luma8())
    } else {
        DynamicImage::ImageRgb8(img.to_rgb8())
    }
}

/// Every readable image in `dir` and its subfolders (one level; a subfolder is a class),
/// in sorted order; unreadable files are skipped with a warning.
pub fn load_dir(dir: &Path, channels: usize, size: usize) -> Result<Dataset> {
    let sorted = |p: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("cannot list {}", p.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        v.sort();
        Ok(v)
    };
    let entries = sorted(dir)?;
    let classes: Vec<String> =
        entries.iter().filter(|p| p.is_dir()).map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut files: Vec<(PathBuf, Option<u32>)> =
        entries.iter().filter(|p| p.is_file()).map(|p| (p.clone(), None)).collect();
    for (label, class) in classes.iter().enumerate() {
        files.extend(sorted(&dir.join(class))?.into_iter().filter(|p| p.is_file()).map(|p| (p, Some(label as u32))));
    }
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let mut skipped = 0;
    for (path, label) in files {
        match decode(&path) {
            Ok(img) => {
                images.push(as_channels(shrink(img, 2 * size as u32), channels));
                labels.push(label);
            }
            Err(e) => {
                if path.extension().is_some_and(|e| e == "md" || e == "txt") {
                    continue;
                }
                eprintln!("warning: skipping {}: {e:#}", path.display());
                skipped += 1;
            }
        }
    }
    if images.is_empty() {
        bail!("no readable images in {} ({skipped} file(s) skipped)", dir.display());
    }
    let labelled = labels.iter().all(|l| l.is_some()) && !classes.is_empty();
    Ok(Dataset {
        name: dir.display().to_string(),
        channels,
        images,
        labels: labelled.then(|| labels.into_iter().map(|l| l.unwrap()).collect()),
        classes,
        augment: Augment::Views(Augmentation::mae(size)),
        norm: Normalize::imagenet(channels),
        backdrops: PhotoBackdrops::default(),
    })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::io::Write;
    use std::path::Path;

    /// Write a tiny idx data set (`n` images of 28×28, image i filled with value i).
    pub fn write_idx(dir: &Path, split: &str, n: usize) {
        let mut img = vec![0, 0, 8, 3];
        for v in [n as u32, 28, 28] {
            img.extend(v.to_be_bytes());
        }
        for i in 0..n {
            img.extend(std::iter::repeat_n(i as u8 * 10, 28 * 28));
        }
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        lab.extend((0..n).map(|i| (i % 10) as u8));
        let gz = |bytes: &[u8], name: String| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            std::fs::write(dir.join(name), e.finish().unwrap()).unwrap();
        };
        gz(&img, format!("{split}-images-idx3-ubyte.gz"));
        gz(&lab, format!("{split}-labels-idx1-ubyte.gz"));
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::write_idx;
    use super::*;

    #[test]
    fn idx_files_load_as_labelled_grey_images() {
        let dir = tempfile::tempdir().unwrap();
        write_idx(dir.path(), "train", 5);
        let d = load_idx(dir.path(), "train").unwrap();
        assert_eq!((d.len(), d.channels), (5, 1));
        assert_eq!(d.labels.as_deref(), Some(&[0, 1, 2, 3, 4][..]));
        let x = d.batch(&[3], 28, &mut Rng::new(0));
        assert_eq!(x.len(), 28 * 28);
        let want = (30.0 / 255.0 - 0.2860) / 0.3530;
        assert!((x[0] - want).abs() < 1e-6, "pixel {} != {want}", x[0]);
        assert!(DataSpec::Dir(dir.path().into()).default_channels() == 1);
    }

    /// A cut-out keeps its alpha when loaded and gets a new backdrop in every view; its
    /// opaque pixels are the same in each, an opaque image is untouched.
    #[test]
    fn cut_outs_get_a_fresh_backdrop_in_every_view() {
        let dir = tempfile::tempdir().unwrap();
        // left half an opaque red object, right half transparent
        let cut = image::RgbaImage::from_fn(16, 16, |x, _| {
            if x < 8 {
                image::Rgba([200, 10, 10, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        cut.save(dir.path().join("cut.png")).unwrap();
        image::RgbImage::from_pixel(16, 16, image::Rgb([0, 0, 0])).save(dir.path().join("photo.png")).unwrap();
        let d = load_dir(dir.path(), 3, 16).unwrap();
        assert!(d.images[0].color().has_alpha() && !d.images[1].color().has_alpha());
        // the whole image, no flip or colour change: only the backdrop varies
        let whole = Augmentation { size: 16, scale: (1.0, 1.0), flip: false, ..Augmentation::mae(16) };
        let mut rng = Rng::new(1);
        let views: Vec<Image> = (0..4).map(|_| d.view(0, &whole, &mut rng)).collect();
        let at = |v: &Image, x: usize, c: usize| v.data[(3 * 16 + x) * 3 + c];
        for v in &views {
            assert_eq!((0..3).map(|c| (at(v, 2, c) * 255.0).round()).collect::<Vec<_>>(), [200.0, 10.0, 10.0]);
        }
        let backs: Vec<[f32; 3]> = views.iter().map(|v| std::array::from_fn(|c| at(v, 12, c))).collect();
        assert!(backs.windows(2).all(|w| w[0] != w[1]), "the backdrop changes from view to view: {backs:?}");
        assert!(d.view(1, &whole, &mut rng).data.iter().all(|&p| p == 0.0), "an opaque image has no backdrop");
        // views of one scene (the same `shared` seed) share the backdrop
        let seven = Scene { seed: 7, shared_backdrop: true };
        let (a, b) = (d.view_in(0, &whole, seven, &mut rng), d.view_in(0, &whole, seven, &mut rng));
        assert_eq!(a.data, b.data);
        // DINO's views of one image share a backdrop in a step, or with `per_view` do not
        let crops = patchwork_compute::augment::MultiCrop { global: [whole, whole], local: whole, n_local: 1 };
        use patchwork_compute::{block_on, Backend};
        for per_view in [false, true] {
            let be = patchwork_compute::Cpu;
            let (g, l) =
                patchwork_compute::train::dino::upload_views(&be, &crops, &d, &[0], per_view, &mut rng, &mut None);
            let (g, l) = (block_on(be.read(&g)), block_on(be.read(&l.unwrap())));
            let views: Vec<&[f32]> = g.chunks(3 * 16 * 16).chain(l.chunks(3 * 16 * 16)).collect();
            // two global views and a local one, whole images: they differ only in the backdrop
            assert_eq!(views.len(), 3);
            assert_eq!(views.windows(2).all(|w| w[0] == w[1]), !per_view, "per_view {per_view}");
        }
        // on a canvas twice the side the object keeps its pixels and the rest is transparent
        let mut d2 = load_dir(dir.path(), 3, 16).unwrap();
        assert_eq!(d2.pad_cutouts(2.0, 5), 1);
        let (big, small) = (d2.images[0].to_rgba8(), d.images[0].to_rgba8());
        assert_eq!((big.dimensions(), d2.images[1].width()), ((32, 32), 16));
        let opaque = big.pixels().filter(|p| p.0[3] == 255).count();
        assert_eq!(opaque, small.pixels().filter(|p| p.0[3] == 255).count());
        assert!(big.pixels().filter(|p| p.0[3] == 255).all(|p| p.0 == [200, 10, 10, 255]));
        // smooth noise is continuous: neighbours differ little
        let bg = loop {
            let b = backdrop(32, 32, &mut rng);
            if b[0] != b[31] {
                break b;
            }
        };
        for i in 0..31 {
            assert!((0..3).all(|c| (bg[i][c] - bg[i + 1][c]).abs() < 0.15), "{:?} {:?}", bg[i], bg[i + 1]);
        }
    }

    #[test]
    fn photo_backdrops_mix_plain_extremes_noise_and_blurred_photos() {
        // a photo of two flat halves, a colour no plain draw will hit exactly
        let photo =
            image::RgbImage::from_fn(40, 30, |x, _| image::Rgb(if x < 20 { [7, 200, 90] } else { [7, 20, 250] }));
        let mut rng = Rng::new(3);
        let photos = PhotoBackdrops { photos: vec![photo.clone()], ..PhotoBackdrops::default() };
        let (mut plain, mut grey, mut white, mut black, mut from_photo, mut noise) = (0, 0, 0, 0, 0, 0);
        let n = 600;
        for _ in 0..n {
            let b = photo_backdrop(12, 10, &photos, &mut rng);
            assert_eq!(b.len(), 120);
            assert!(b.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
            let p = b[0];
            if b.iter().all(|q| *q == p) {
                plain += 1;
                if p[0] == p[1] && p[1] == p[2] {
                    grey += 1;
                    white += (p[0] >= 0.9) as usize;
                    black += (p[0] < 0.1) as usize;
                }
            } else if b.iter().all(|q| (q[0] * 255.0 - 7.0).abs() < 1.5) {
                // every pixel a blend of the photo's two colours (red channel 7 in both)
                from_photo += 1;
            } else {
                noise += 1;
            }
        }
        let third = |k: usize| (k as f64 / n as f64 - 1.0 / 3.0).abs() < 0.08;
        // a photo crop inside one half is flat too, and counted as plain: allow for it
        assert!(third(noise) && (third(plain) || plain > n / 3) && from_photo > n / 6, "{plain} {noise} {from_photo}");
        assert!(white > 10 && black > 10 && grey > white + black, "{grey} {white} {black}");
        // without photos, colour noise takes the photos' third
        let none = PhotoBackdrops::default();
        let varied =
            (0..300).filter(|_| photo_backdrop(12, 10, &none, &mut rng).windows(2).any(|w| w[0] != w[1])).count();
        assert!((varied as f64 / 300.0 - 2.0 / 3.0).abs() < 0.08, "{varied}");
    }

    /// `--object-jitter`: DINO's views of an image in one step show its object in the same new
    /// colours, each on its own backdrop; other steps draw other colours; alpha is kept.
    #[test]
    fn object_jitter_recolours_an_object_alike_in_its_views() {
        let dir = tempfile::tempdir().unwrap();
        // left half an opaque object of two colours, right half transparent
        let cut = image::RgbaImage::from_fn(16, 16, |x, y| match (x < 8, y < 8) {
            (true, true) => image::Rgba([200, 60, 10, 255]),
            (true, false) => image::Rgba([30, 140, 90, 255]),
            _ => image::Rgba([0, 0, 0, 0]),
        });
        cut.save(dir.path().join("cut.png")).unwrap();
        let mut d = load_dir(dir.path(), 3, 16).unwrap();
        assert!(jitter_object(&d.images[0], 0.0, 5).is_none(), "p = 0 leaves every object alone");
        let recoloured = jitter_object(&d.images[0], 1.0, 5).unwrap().to_rgba8();
        assert_eq!(recoloured, jitter_object(&d.images[0], 1.0, 5).unwrap().to_rgba8(), "one seed, one colouring");
        assert!(recoloured.pixels().zip(cut.pixels()).all(|(a, b)| a.0[3] == b.0[3]), "alpha is kept");
        assert_ne!(recoloured.get_pixel(0, 0).0, [200, 60, 10, 255]);
        d.backdrops.object_jitter = 1.0;
        let whole = Augmentation { size: 16, scale: (1.0, 1.0), flip: false, ..Augmentation::mae(16) };
        let crops = patchwork_compute::augment::MultiCrop { global: [whole, whole], local: whole, n_local: 1 };
        use patchwork_compute::{block_on, Backend};
        let be = patchwork_compute::Cpu;
        let mut rng = Rng::new(3);
        // the object's pixels of a view (CHW): the left half of every row, all channels
        let object = |v: &[f32]| -> Vec<f32> { (0..3 * 16).flat_map(|r| v[r * 16..r * 16 + 8].to_vec()).collect() };
        let mut per_step = Vec::new();
        for _ in 0..4 {
            let (g, l) = patchwork_compute::train::dino::upload_views(&be, &crops, &d, &[0], true, &mut rng, &mut None);
            let (g, l) = (block_on(be.read(&g)), block_on(be.read(&l.unwrap())));
            let views: Vec<&[f32]> = g.chunks(3 * 16 * 16).chain(l.chunks(3 * 16 * 16)).collect();
            assert!(views.windows(2).all(|w| object(w[0]) == object(w[1])), "one colouring per step");
            assert!(views.windows(2).all(|w| w[0] != w[1]), "a backdrop per view");
            per_step.push(object(views[0]));
        }
        assert!(per_step.windows(2).all(|w| w[0] != w[1]), "each step draws new colours");
    }

    /// `--backdrop-cutouts`: a cut-out becomes a close-up cropped to its object, with its
    /// transparent pixels in the object's mean colour; images without an object are skipped.
    #[test]
    fn flattened_cutouts_crop_to_the_object_on_its_mean_colour() {
        // a 3×2 object (two colours) at (2, 1) on a transparent 8×6 canvas
        let obj = |x: u32, y: u32| (2..5).contains(&x) && (1..3).contains(&y);
        let cutout = image::RgbaImage::from_fn(8, 6, |x, y| match (obj(x, y), x == 3 && y == 2) {
            (true, false) => image::Rgba([200, 100, 0, 255]),
            (true, true) => image::Rgba([20, 40, 60, 255]),
            _ => image::Rgba([0, 0, 255, 0]),
        });
        let mut hole = cutout.clone();
        hole.put_pixel(4, 1, image::Rgba([9, 9, 9, 0]));
        let images = vec![
            DynamicImage::ImageRgba8(cutout),
            DynamicImage::ImageRgba8(image::RgbaImage::new(4, 4)),
            DynamicImage::ImageRgb8(image::RgbImage::new(4, 4)),
            DynamicImage::ImageRgba8(hole),
        ];
        let flat = flattened_cutouts(&images);
        assert_eq!(flat.len(), 2, "the empty cut-out and the opaque photo are skipped");
        assert_eq!(flat[0].dimensions(), (3, 2));
        assert_eq!(flat[0].get_pixel(0, 0).0, [200, 100, 0]);
        assert_eq!(flat[0].get_pixel(1, 1).0, [20, 40, 60]);
        // the hole takes the mean of the five opaque pixels: (4·200 + 20)/5 = 164, …
        assert_eq!(flat[1].get_pixel(2, 0).0, [164, 88, 12]);
    }

    /// `--camouflage`: the backdrop takes one of the object's colours and its contrast, a plain
    /// one becomes flat in that colour, and a crop without the object keeps its backdrop.
    #[test]
    fn camouflage_recolours_backdrops_in_the_objects_colours() {
        // an object of two colours (red and dark red) on a transparent 8×8 canvas
        let (red, dark) = ([220u8, 30, 30], [110u8, 10, 10]);
        let img = image::RgbaImage::from_fn(8, 8, |x, y| match (x < 4, y < 4) {
            (true, true) => image::Rgba([red[0], red[1], red[2], 255]),
            (true, false) => image::Rgba([dark[0], dark[1], dark[2], 255]),
            _ => image::Rgba([0, 0, 255, 0]),
        });
        let mut rng = Rng::new(7);
        let near = |p: [f32; 3], q: [u8; 3]| (0..3).all(|c| (p[c] * 255.0 - q[c] as f32).abs() < 0.6);
        let (mut saw_red, mut saw_dark) = (false, false);
        for _ in 0..40 {
            let mut plain = vec![[0.1, 0.8, 0.9]; 64];
            camouflage(&mut plain, &img, &mut rng);
            assert!(plain.iter().all(|p| *p == plain[0]), "a plain backdrop stays plain");
            assert!(near(plain[0], red) || near(plain[0], dark), "{:?}", plain[0]);
            saw_red |= near(plain[0], red);
            saw_dark |= near(plain[0], dark);
        }
        assert!(saw_red && saw_dark, "the colour is drawn from the object's pixels");
        // a blue-green ramp takes the object's contrast (red varies, green and blue barely)
        let mut ramp: Vec<[f32; 3]> = (0..64).map(|i| [0.0, i as f32 / 63.0, 1.0 - i as f32 / 63.0]).collect();
        camouflage(&mut ramp, &img, &mut rng);
        let spread = |c: usize| {
            let v: Vec<f32> = ramp.iter().map(|p| p[c]).collect();
            v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min)
        };
        assert!(spread(0) == 0.0, "no red in the ramp: {}", spread(0));
        assert!(spread(1) > 0.1 && spread(1) < 0.35, "green follows the object's contrast: {}", spread(1));
        assert!(ramp.iter().all(|p| p.iter().all(|v| (0.0..=1.0).contains(v))));
        // no opaque pixel: the backdrop is kept
        let empty = image::RgbaImage::new(4, 4);
        let mut kept = vec![[0.3, 0.4, 0.5]; 16];
        camouflage(&mut kept, &empty, &mut rng);
        assert!(kept.iter().all(|p| *p == [0.3, 0.4, 0.5]));
    }

    /// `--photo-share` sets how many backdrops come from the photos; `--backdrop-blur` how
    /// sharp they are: a crop shrunk to 2–4 px keeps no edge, one shrunk to 48 px does.
    #[test]
    fn photo_backdrops_share_and_blur() {
        // two flat halves; every blend of them has red 7 and blue tied to green
        let (left, right) = ([7u8, 200, 90], [7u8, 20, 250]);
        let photo = image::RgbImage::from_fn(400, 300, |x, _| image::Rgb(if x < 200 { left } else { right }));
        let from_photo = |q: &[f32; 3]| {
            let (r, g, b) = (q[0] * 255.0, q[1] * 255.0, q[2] * 255.0);
            (r - 7.0).abs() < 1.5 && (b - (90.0 + 160.0 * (200.0 - g) / 180.0)).abs() < 3.0
        };
        let draw = |share: f32, shrink: (u32, u32)| {
            let b = PhotoBackdrops { photos: vec![photo.clone()], share, shrink, ..PhotoBackdrops::default() };
            let mut rng = Rng::new(5);
            let (mut n, mut edges, mut contrast) = (0, 0, 0.0f32);
            for _ in 0..400 {
                let d = photo_backdrop(48, 48, &b, &mut rng);
                if d.iter().all(from_photo) {
                    n += 1;
                    // the largest step between neighbours in a row, where the crop holds the edge
                    let step =
                        d.chunks(48).flat_map(|r| r.windows(2)).map(|w| (w[0][1] - w[1][1]).abs()).fold(0.0, f32::max);
                    if d.iter().any(|q| q[1] > 0.5) && d.iter().any(|q| q[1] < 0.3) {
                        edges += 1;
                        contrast += step;
                    }
                }
            }
            (n, contrast / edges.max(1) as f32)
        };
        let (most, _) = draw(0.8, PhotoBackdrops::SHRINK);
        let (few, _) = draw(0.1, PhotoBackdrops::SHRINK);
        assert!(most > 280 && few < 70, "{most} {few}");
        let (_, blurred) = draw(0.5, (2, 4));
        let (_, sharp) = draw(0.5, (48, 48));
        assert!(blurred < 0.12 && sharp > 0.3, "{blurred} {sharp}");
    }

    #[test]
    fn bundled_fashion_mnist_subset_loads() {
        let dir = assets_dir().join("fashion-mnist");
        let train = load_idx(&dir, "train").unwrap();
        let test = load_idx(&dir, "test").unwrap();
        assert_eq!((train.len(), test.len()), (2000, 1000));
        assert!(train.labels.unwrap().iter().all(|&l| l < 10));
        assert_eq!((train.images[0].width(), train.images[0].height()), (28, 28));
    }

    #[test]
    fn truncated_idx_is_an_error() {
        let mut b = vec![0, 0, 8, 3];
        for v in [10u32, 28, 28] {
            b.extend(v.to_be_bytes());
        }
        b.extend([0u8; 100]);
        let e = parse_idx_images(&b).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(parse_idx_labels(b"garbage!").is_err());
    }

    #[test]
    fn image_directory_uses_subfolders_as_classes_and_skips_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        for (class, colour) in [("cats", [200u8, 10, 10]), ("dogs", [10, 200, 10])] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            for i in 0..2 {
                let img = image::RgbImage::from_pixel(40 + i * 7, 30, image::Rgb(colour));
                img.save(dir.path().join(format!("{class}/{i}.png"))).unwrap();
            }
        }
        std::fs::write(dir.path().join("dogs/broken.jpg"), b"not a jpeg").unwrap();
        let d = load_dir(dir.path(), 3, 16).unwrap();
        assert_eq!(d.len(), 4, "the broken file is skipped");
        assert_eq!(d.classes, ["cats", "dogs"]);
        assert_eq!(d.labels.as_deref(), Some(&[0, 0, 1, 1][..]));
        let x = d.batch(&[0, 3], 16, &mut Rng::new(1));
        assert_eq!(x.len(), 2 * 3 * 16 * 16);
        // a solid red image stays red through crop and resize
        let red = (200.0 / 255.0 - 0.485) / 0.229;
        assert!((x[0] - red).abs() < 1e-5, "{} != {red}", x[0]);
        let grey = load_dir(dir.path(), 1, 16).unwrap();
        assert_eq!(Views::batch(&grey, &[0], 16, &mut Rng::new(1)).len(), 16 * 16);
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.png"), b"").unwrap();
        let e = load_dir(dir.path(), 3, 16).err().unwrap();
        assert!(e.to_string().contains("no readable images"), "{e}");
    }
}
