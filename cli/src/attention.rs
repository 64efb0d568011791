//! `patchwork attention --model M --image IMG --out OUT.png`: where a ViT's class token
//! looks. For one layer (default the last) it shows each head's CLS → patch attention over
//! the image, their mean, and DINO's mask of the patches holding 60% of the attention mass
//! (`visualize_attention.py`). `--json` prints the maps on the patch grid.
//!
//! Models: files of `patchwork train --method mae` (the encoder is used), files with a
//! `vit_config` metadata entry, and plain timm-named state dicts (e.g. the official DINO
//! checkpoints saved as safetensors), whose config is read off the tensor shapes. Reading
//! the model and the maps and masks are `patchwork_compute::attention`, shared with the
//! app's Attention page; this file is the command and its PNG.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use image::{DynamicImage, Rgb, RgbImage};
use patchwork_compute::attention::{cls_maps, min_max, viridis, vit_from_file, ClsMaps};
use patchwork_compute::{block_on, AttentionMap, Backbone, TensorFile, Vit, VitConfig};
use serde_json::json;

use crate::backend::{BackendChoice, OnBackend, Probe};
use crate::data;

pub use patchwork_compute::attention::{VitModel, MASS};

const TILES: &str = "\
The PNG is a grid of tiles, left to right then top to bottom (at most 8 a row):
  1. the input as the model sees it (resized, centre-cropped; grey for 1-channel models),
  2. one tile per head: its CLS attention (viridis, min-max scaled per tile) over the image,
  3. the mean over heads, drawn the same way,
  4. the 60%-mass mask of that mean map: kept patches as they are, outlined in red; the
     others washed out grey.
Patch maps are upscaled to pixels nearest-neighbour; inputs under 128 px are scaled up by a
whole factor.";

#[derive(clap::Args, Clone, Debug)]
#[command(after_help = TILES)]
pub struct Args {
    /// A ViT: a `patchwork train --method mae` model (its encoder), a file with `vit_config`
    /// metadata, or a plain timm-named state dict as safetensors (e.g. official DINO weights).
    #[arg(long)]
    pub model: PathBuf,
    /// The image (any size and format the decoder reads; resized and centre-cropped).
    #[arg(long, required_unless_present = "objects")]
    pub image: Option<PathBuf>,
    /// The attention layer (block), from 0; negative counts from the end (-1 = the last).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub layer: i64,
    /// The PNG grid (see below for the tiles).
    #[arg(long, required_unless_present_any = ["json", "objects"])]
    pub out: Option<PathBuf>,
    /// Print the maps on the patch grid as JSON (one line): per head, the mean, and the 60% masks.
    #[arg(long)]
    pub json: bool,
    /// Attention heads of a checkpoint without metadata [default: embed_dim / 64, the
    /// DINO/timm convention: 6 for ViT-S, 12 for ViT-B; 16 for ViT-H's 1280]. Files with a
    /// config know theirs.
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Instead of one image, score whether attention finds objects: `fashion-mnist` (its
    /// test images; the object is every pixel brighter than 10% grey on the black ground) or
    /// a folder of `NAME.png|jpg` with `NAME.mask.png` (white = object). Per image: the IoU
    /// of each head's 60%-mass mask with the object's patches, the best head's, the mean
    /// map's, and a centred Gaussian blob's (the baseline).
    #[arg(long)]
    pub objects: Option<String>,
    /// Run the model at N×N px instead of its own `img_size`, its position embeddings
    /// interpolated as DINO's `interpolate_pos_encoding` (bicubic); N is a multiple of the
    /// patch size. A finer grid than training's, as DINO's `visualize_attention.py` does
    /// (480 px for models trained at 224).
    #[arg(long)]
    pub size: Option<usize>,
    /// Images of --objects to score (the first N).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
}

// ---- loading a ViT ----

/// Load `path` as a ViT ([`vit_from_file`]: `vit_config` metadata, an MAE's encoder, or a
/// plain timm state dict, maybe under a prefix). `heads` is `--heads`. The file returned
/// holds exactly the tensors `cfg.param_shapes()` names, ready for `Vit::from_file`.
pub fn load_vit(path: &Path, heads: Option<usize>) -> Result<(VitModel, TensorFile)> {
    let file = TensorFile::load(path).with_context(|| format!("loading model {}", path.display()))?;
    vit_from_file(file, heads).map_err(|e| anyhow!("{}: {e}", path.display()))
}

// ---- the picture ----

/// The grid PNG (the tile order is [`TILES`]). `input` is the model's input (`img_size`),
/// each tile is it scaled by `scale`; `maps` are the heads' maps then the mean, `[h·w]` each.
fn render(
    input: &DynamicImage,
    patch: usize,
    grid: [usize; 2],
    maps: &[Vec<f32>],
    mask: &[bool],
    scale: u32,
) -> RgbImage {
    let base = input.to_rgb8();
    let (w, h) = (base.width() * scale, base.height() * scale);
    // pixel of a tile → (input pixel [0, 1] RGB, its grey, patch index, patch row, patch col)
    let at = |tx: u32, ty: u32| {
        let px = base.get_pixel(tx / scale, ty / scale).0.map(|v| v as f32 / 255.0);
        let grey = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
        let (gy, gx) = ((ty / scale) as usize / patch, (tx / scale) as usize / patch);
        (px, grey, gy * grid[1] + gx, gy, gx)
    };
    let mut tiles: Vec<RgbImage> = vec![RgbImage::from_fn(w, h, |x, y| Rgb(at(x, y).0.map(to_u8)))];
    for map in maps {
        let m = min_max(map);
        tiles.push(RgbImage::from_fn(w, h, |x, y| {
            let (_, grey, i, ..) = at(x, y);
            let c = viridis(m[i]);
            Rgb(c.map(|c| to_u8(0.6 * c + 0.4 * grey)))
        }));
    }
    // the mask: an outline `edge` pixels wide inside kept patches where a neighbour is dropped
    let patch_px = patch as u32 * scale;
    let edge = (patch_px / 10).max(1);
    let kept = |gy: isize, gx: isize| {
        gy < 0
            || gx < 0
            || gy >= grid[0] as isize
            || gx >= grid[1] as isize
            || mask[gy as usize * grid[1] + gx as usize]
    };
    tiles.push(RgbImage::from_fn(w, h, |x, y| {
        let (px, _, i, gy, gx) = at(x, y);
        if !mask[i] {
            return Rgb(px.map(|v| to_u8(0.45 * v + 0.55 * 0.5)));
        }
        let (ix, iy) = (x % patch_px, y % patch_px);
        let (gy, gx) = (gy as isize, gx as isize);
        let border = (ix < edge && !kept(gy, gx - 1))
            || (ix >= patch_px - edge && !kept(gy, gx + 1))
            || (iy < edge && !kept(gy - 1, gx))
            || (iy >= patch_px - edge && !kept(gy + 1, gx));
        if border {
            Rgb([230, 40, 40])
        } else {
            Rgb(px.map(to_u8))
        }
    }));
    let gap = 2u32;
    let rows = tiles.len().div_ceil(8);
    let cols = tiles.len().div_ceil(rows) as u32;
    let mut out = RgbImage::from_pixel(cols * (w + gap) + gap, rows as u32 * (h + gap) + gap, Rgb([255; 3]));
    for (k, tile) in tiles.iter().enumerate() {
        let (c, r) = (k as u32 % cols, k as u32 / cols);
        image::imageops::replace(&mut out, tile, (gap + c * (w + gap)) as i64, (gap + r * (h + gap)) as i64);
    }
    out
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Resize the shorter side and crop the centre to `[h, w]` (`data::fit` for squares).
fn fit_to(img: &DynamicImage, [h, w]: [usize; 2]) -> DynamicImage {
    if h == w {
        return data::fit(img, h);
    }
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let s = (w as f64 / iw).max(h as f64 / ih);
    let (cw, ch) =
        (((w as f64 / s).round() as u32).clamp(1, img.width()), ((h as f64 / s).round() as u32).clamp(1, img.height()));
    img.crop_imm((img.width() - cw) / 2, (img.height() - ch) / 2, cw, ch).resize_exact(
        w as u32,
        h as u32,
        FilterType::Triangle,
    )
}

// ---- the command ----

mod objects;

/// One layer's attention map, computed on a backend.
struct Forward {
    cfg: VitConfig,
    file: TensorFile,
    /// The input size (the model's own or `--size`).
    size: [usize; 2],
    /// `[1, C, H, W]`, normalised.
    x: Vec<f32>,
    layer: usize,
}

impl OnBackend for Forward {
    type Output = Result<(AttentionMap, String)>;
    fn run<B: Probe>(self, be: &B) -> Self::Output {
        let vit = Vit::from_file(be, self.cfg, &self.file)?.at_size(be, self.size)?.vit;
        let saved = Backbone::forward(&vit, be, &be.upload(&self.x), 1);
        Ok((block_on(Backbone::attention(&vit, be, &saved, self.layer)), be.name()))
    }
}

/// The model's config at the input size `--size` asks for (its own without it).
pub fn at_size(cfg: &VitConfig, size: Option<usize>) -> Result<VitConfig> {
    let Some(n) = size else { return Ok(cfg.clone()) };
    let p = cfg.patch_size;
    if n == 0 || !n.is_multiple_of(p) {
        bail!("--size {n} is not a positive multiple of the model's patch size {p}: try {}", (n / p).max(1) * p);
    }
    Ok(VitConfig { img_size: [n, n], ..cfg.clone() })
}

/// `--layer` as a block index: 0..depth, or −depth..−1 counted from the end.
pub fn resolve_layer(layer: i64, depth: usize) -> Result<usize> {
    let d = depth as i64;
    match layer {
        l if (0..d).contains(&l) => Ok(l as usize),
        l if (-d..0).contains(&l) => Ok((d + l) as usize),
        l => bail!(
            "--layer {l} is out of range: the model has {depth} layer(s), \
             so give 0..={} or -{depth}..=-1 (-1 = the last)",
            d - 1
        ),
    }
}

/// One layer's maps for one image, on the patch grid (`[l]` each, raster order).
pub struct Report {
    pub vit: VitModel,
    /// The input size the model ran at (its own `img_size`, or `--size`).
    pub img_size: [usize; 2],
    pub backend: String,
    pub layer: usize,
    /// `[heads][l]`: CLS → patch attention (each sums to 1 − the CLS's attention on itself
    /// and on the registers).
    pub heads: Vec<Vec<f32>>,
    /// `[heads]`: CLS → registers, summed (empty for a model without registers).
    pub registers: Vec<f32>,
    pub mean: Vec<f32>,
    /// `[heads][l]`: DINO's 60%-mass masks.
    pub masks: Vec<Vec<bool>>,
    /// The 60%-mass mask of the mean map (the PNG's last tile).
    pub mean_mask: Vec<bool>,
}

/// Run the model on the image; writes the PNG when `--out` is given.
pub fn evaluate(args: &Args) -> Result<Report> {
    let (vit, file) = load_vit(&args.model, args.heads)?;
    let cfg = at_size(&vit.cfg, args.size)?;
    let layer = resolve_layer(args.layer, cfg.depth)?;
    let path = args.image.as_ref().context("give --image")?;
    let img = data::decode(path)?;
    if img.width() == 0 || img.height() == 0 {
        bail!("{} is an empty image", path.display());
    }
    let input = fit_to(&DynamicImage::ImageRgb8(img.to_rgb8()), cfg.img_size);
    let input = if cfg.in_chans == 1 { DynamicImage::ImageLuma8(input.to_luma8()) } else { input };
    let mut x = Vec::new();
    data::push_chw(&input, cfg.in_chans, &vit.norm, &mut x);
    let (map, backend) = crate::train::with_compute_backend(
        args.backend,
        Forward { cfg: vit.cfg.clone(), file, size: cfg.img_size, x, layer },
    )??;
    let ClsMaps { heads, registers, mean, masks, mean_mask, .. } =
        cls_maps(&map, 0, MASS).context("the model has no class token")?;
    if let Some(out) = &args.out {
        let scale = 128u32.div_ceil(cfg.img_size[0].min(cfg.img_size[1]) as u32);
        let maps: Vec<Vec<f32>> = heads.iter().chain([&mean]).cloned().collect();
        render(&input, cfg.patch_size, cfg.grid(), &maps, &mean_mask, scale)
            .save(out)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(Report { vit, img_size: cfg.img_size, backend, layer, heads, registers, mean, masks, mean_mask })
}

impl Report {
    /// The patch grid of the input the model ran at.
    pub fn grid(&self) -> [usize; 2] {
        let p = self.vit.cfg.patch_size;
        [self.img_size[0] / p, self.img_size[1] / p]
    }

    pub fn to_json(&self, args: &Args) -> serde_json::Value {
        let (v, [_, gw]) = (&self.vit, self.grid());
        // f32s as their shortest decimals, not their f64 expansions
        let short = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::NAN);
        let grid =
            |m: &[f32]| -> Vec<Vec<f64>> { m.chunks(gw).map(|r| r.iter().map(|x| short(*x)).collect()).collect() };
        let bits =
            |m: &[bool]| -> Vec<Vec<u8>> { m.chunks(gw).map(|r| r.iter().map(|k| *k as u8).collect()).collect() };
        json!({
            "model": {
                "path": args.model.display().to_string(),
                "source": v.source,
                "prefix": v.prefix,
                "ignored_tensors": v.ignored.len(),
                "config": v.cfg,
                "normalize": {"mean": v.norm.mean, "std": v.norm.std},
            },
            "image": args.image.as_ref().map(|p| p.display().to_string()),
            "backend": self.backend,
            "layer": self.layer,
            "layers": v.cfg.depth,
            "img_size": self.img_size,
            "grid": self.grid(),
            "num_heads": self.heads.len(),
            "threshold": MASS,
            "cls_to_cls": self
                .heads
                .iter()
                .enumerate()
                .map(|(h, m)| short(1.0 - m.iter().sum::<f32>() - self.registers.get(h).unwrap_or(&0.0)))
                .collect::<Vec<_>>(),
            "cls_to_registers": self.registers.iter().map(|r| short(*r)).collect::<Vec<_>>(),
            "heads": self.heads.iter().map(|m| grid(m)).collect::<Vec<_>>(),
            "mean": grid(&self.mean),
            "masks": self.masks.iter().map(|m| bits(m)).collect::<Vec<_>>(),
            "mean_mask": bits(&self.mean_mask),
            "png": args.out.as_ref().map(|p| p.display().to_string()),
        })
    }

    /// Per head (and the mean): the CLS → patch mass, the patches in the 60% mask, the peak.
    pub fn print_table(&self, args: &Args) {
        let (c, [gh, gw]) = (&self.vit.cfg, self.grid());
        println!(
            "{} ({}): ViT {}×{}, patch {}, {} channel(s), width {}, depth {}, {} heads; on {}",
            args.model.display(),
            self.vit.source,
            c.img_size[0],
            c.img_size[1],
            c.patch_size,
            c.in_chans,
            c.embed_dim,
            c.depth,
            c.num_heads,
            self.backend
        );
        if !self.vit.ignored.is_empty() {
            println!(
                "left out {} tensor(s) that are not the ViT's, e.g. {}",
                self.vit.ignored.len(),
                self.vit.ignored[0]
            );
        }
        let at = if self.img_size == c.img_size {
            String::new()
        } else {
            format!(", run at {}×{} px (position embeddings interpolated)", self.img_size[0], self.img_size[1])
        };
        println!("layer {} of 0..={}, patch grid {gh}×{gw}{at}", self.layer, c.depth - 1);
        println!("{:>6} {:>12} {:>12} {:>12}", "head", "CLS→patches", "60% mask", "peak (y, x)");
        let row = |name: String, m: &[f32], mask: &[bool]| {
            let peak = (0..m.len()).max_by(|a, b| m[*a].total_cmp(&m[*b])).unwrap_or(0);
            let kept = format!("{}/{}", mask.iter().filter(|k| **k).count(), m.len());
            let peak = format!("({}, {})", peak / gw, peak % gw);
            println!("{name:>6} {:>12.4} {kept:>12} {peak:>12}", m.iter().sum::<f32>());
        };
        for (h, (m, mask)) in self.heads.iter().zip(&self.masks).enumerate() {
            row(h.to_string(), m, mask);
        }
        row("mean".into(), &self.mean, &self.mean_mask);
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.objects.is_some() {
        let r = objects::score(&args)?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(());
    }
    if let Some(out) = &args.out {
        crate::create_parent(out)?;
    }
    let report = evaluate(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report.to_json(&args))?);
    } else {
        report.print_table(&args);
        if let Some(out) = &args.out {
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use patchwork_compute::methods::mae::{Mae, MaeConfig};
    use patchwork_compute::rng::Rng;
    use patchwork_compute::weights::Data;
    use patchwork_compute::Cpu;
    use patchwork_compute::Tensor;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["t", "--backend", "cpu"];
        argv.extend(extra);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn layers_count_from_either_end_and_out_of_range_names_the_range() {
        assert_eq!(resolve_layer(0, 4).unwrap(), 0);
        assert_eq!(resolve_layer(3, 4).unwrap(), 3);
        assert_eq!(resolve_layer(-1, 4).unwrap(), 3);
        assert_eq!(resolve_layer(-4, 4).unwrap(), 0);
        for l in [4, -5] {
            let e = resolve_layer(l, 4).unwrap_err().to_string();
            assert!(e.contains("out of range") && e.contains("0..=3") && e.contains("-4..=-1"), "{e}");
        }
    }

    fn tiny() -> VitConfig {
        VitConfig {
            img_size: [16, 16],
            patch_size: 4,
            in_chans: 3,
            embed_dim: 16,
            depth: 2,
            num_heads: 2,
            num_classes: 0,
            ..VitConfig::default()
        }
    }

    /// A ViT's timm-named tensors with random weights (large enough that heads differ).
    fn vit_file(cfg: &VitConfig) -> TensorFile {
        let vit = Vit::init(&Cpu, cfg.clone(), 0);
        let mut file = block_on(vit.params.download(&Cpu, ""));
        let mut rng = Rng::new(3);
        for t in file.tensors.values_mut() {
            if let Data::F32(v) = &mut t.data {
                v.iter_mut().for_each(|x| *x = rng.normal() * 0.5);
            }
        }
        file
    }

    /// Write `file` under `dir` and return its path as a string.
    fn save(dir: &Path, name: &str, file: &TensorFile) -> String {
        let path = dir.join(name);
        file.save(&path).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn photo(dir: &Path) -> String {
        let path = dir.join("in.png");
        RgbImage::from_fn(40, 30, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8])).save(&path).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// The JSON's maps: finite, in (0, 1] per head, the mean their average, a mask per head.
    fn check_maps(r: &serde_json::Value, heads: usize, grid: [usize; 2]) {
        let flat = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect()
        };
        assert_eq!(r["grid"], json!(grid));
        let maps: Vec<Vec<f64>> = r["heads"].as_array().unwrap().iter().map(flat).collect();
        assert_eq!(maps.len(), heads);
        for (h, m) in maps.iter().enumerate() {
            assert_eq!(m.len(), grid[0] * grid[1]);
            let sum: f64 = m.iter().sum();
            assert!(m.iter().all(|v| v.is_finite() && *v >= 0.0) && sum > 0.0 && sum <= 1.0 + 1e-5, "head {h}: {m:?}");
            let own = r["cls_to_cls"][h].as_f64().unwrap();
            let regs = r["cls_to_registers"].get(h).map_or(0.0, |v| v.as_f64().unwrap());
            assert!(
                (sum + own + regs - 1.0).abs() < 1e-5,
                "head {h}: patches {sum} + CLS {own} + registers {regs} != 1"
            );
            let mask = flat(&r["masks"][h]);
            assert!(mask.iter().all(|k| *k == 0.0 || *k == 1.0) && mask.contains(&1.0), "head {h}: {mask:?}");
        }
        for (i, v) in flat(&r["mean"]).iter().enumerate() {
            let avg = maps.iter().map(|m| m[i]).sum::<f64>() / heads as f64;
            assert!((v - avg).abs() < 1e-6, "mean[{i}] = {v}, the heads' average {avg}");
        }
        assert!(flat(&r["mean_mask"]).contains(&1.0));
    }

    #[test]
    fn a_plain_timm_checkpoint_gives_a_grid_png_and_json_maps() {
        let dir = tempfile::tempdir().unwrap();
        let model = save(dir.path(), "vit.safetensors", &vit_file(&tiny()));
        let (img, out) = (photo(dir.path()), dir.path().join("att.png"));
        let a = args(&["--model", &model, "--image", &img, "--out", out.to_str().unwrap(), "--heads", "2", "--json"]);
        let r = evaluate(&a).unwrap().to_json(&a);
        assert_eq!((r["layer"].as_u64(), r["layers"].as_u64()), (Some(1), Some(2)));
        assert_eq!(r["model"]["source"], "inferred from the tensor shapes; heads as given");
        check_maps(&r, 2, [4, 4]);
        let png = image::open(&out).unwrap();
        // `run` makes the folders of --out before it computes
        let nested = dir.path().join("new/folder/att.png");
        run(args(&["--model", &model, "--image", &img, "--out", nested.to_str().unwrap(), "--heads", "2"])).unwrap();
        let again = image::open(&nested).unwrap();
        assert_eq!((again.width(), again.height()), (png.width(), png.height()));
        // 16 px inputs scaled ×8 to 128 px tiles: input, 2 heads, mean, mask in one row, 2 px gaps
        assert_eq!((png.width(), png.height()), (5 * 130 + 2, 132));
        // layer 0 differs from the last
        let a0 = args(&["--model", &model, "--image", &img, "--json", "--heads", "2", "--layer", "-2"]);
        let r0 = evaluate(&a0).unwrap().to_json(&a0);
        assert_eq!(r0["layer"], 0);
        assert_ne!(r0["heads"], r["heads"]);
        // --size runs the model on a finer grid (interpolated position embeddings); its own
        // size changes nothing; a size off the patch grid is refused
        let a2 = args(&["--model", &model, "--image", &img, "--heads", "2", "--json", "--size", "32"]);
        let r2 = evaluate(&a2).unwrap().to_json(&a2);
        check_maps(&r2, 2, [8, 8]);
        assert_eq!(
            (r2["img_size"].clone(), r2["model"]["config"]["img_size"].clone()),
            (json!([32, 32]), json!([16, 16]))
        );
        let a1 = args(&["--model", &model, "--image", &img, "--heads", "2", "--json", "--size", "16"]);
        assert_eq!(evaluate(&a1).unwrap().to_json(&a1)["heads"], r["heads"]);
        let a3 = args(&["--model", &model, "--image", &img, "--heads", "2", "--json", "--size", "30"]);
        let e = evaluate(&a3).err().unwrap().to_string();
        assert!(e.contains("--size 30") && e.contains("patch size 4") && e.contains("try 28"), "{e}");
        // without --heads a 16-wide model cannot be guessed
        let e = evaluate(&args(&["--model", &model, "--image", &img, "--json"])).err().unwrap();
        assert!(format!("{e:#}").contains("cannot be guessed") && format!("{e:#}").contains("--heads"), "{e:#}");
    }

    /// A timm checkpoint with register tokens: their count is read off `reg_token`, and the
    /// maps cover the patches only, with the class token's share on the registers reported.
    #[test]
    fn a_checkpoint_with_registers_reports_their_share() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VitConfig { reg_tokens: 3, ..tiny() };
        let model = save(dir.path(), "reg.safetensors", &vit_file(&cfg));
        let img = photo(dir.path());
        let a = args(&["--model", &model, "--image", &img, "--heads", "2", "--json"]);
        let report = evaluate(&a).unwrap();
        assert_eq!(report.vit.cfg, cfg);
        let r = report.to_json(&a);
        assert_eq!(r["model"]["config"]["reg_tokens"], 3);
        check_maps(&r, 2, [4, 4]);
        let regs: Vec<f64> = r["cls_to_registers"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert!(regs.len() == 2 && regs.iter().all(|v| *v > 0.0 && *v < 1.0), "{regs:?}");
        // without registers the list is empty
        let plain = save(dir.path(), "plain.safetensors", &vit_file(&tiny()));
        let a = args(&["--model", &plain, "--image", &img, "--heads", "2", "--json"]);
        assert_eq!(evaluate(&a).unwrap().to_json(&a)["cls_to_registers"], serde_json::json!([]));
    }

    #[test]
    fn vit_config_files_and_prefixed_checkpoints_load_with_their_extras_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let img = photo(dir.path());
        let cfg = VitConfig { num_heads: 4, ..tiny() };
        let mut file = vit_file(&cfg);
        file.metadata.insert("vit_config".into(), serde_json::to_string(&cfg).unwrap());
        file.metadata.insert("normalize".into(), r#"{"mean":[0.5,0.5,0.5],"std":[0.25,0.25,0.25]}"#.into());
        file.tensors.insert("opt.m.cls_token".into(), Tensor::f32(vec![1, 1, 16], vec![0.0; 16]));
        file.tensors.insert("dino_head.last_layer.weight".into(), Tensor::f32(vec![2, 16], vec![0.0; 32]));
        let model = save(dir.path(), "dino.safetensors", &file);
        let a = args(&["--model", &model, "--image", &img, "--json"]);
        let r = evaluate(&a).unwrap();
        assert_eq!((r.vit.source.as_str(), r.vit.ignored.len(), r.vit.norm.std[0]), ("vit_config metadata", 2, 0.25));
        check_maps(&r.to_json(&a), 4, [4, 4]);
        let e = evaluate(&args(&["--model", &model, "--image", &img, "--json", "--heads", "2"])).err().unwrap();
        assert!(format!("{e:#}").contains("disagrees with the model's config (4 heads)"), "{e:#}");

        // a DINO-style checkpoint: the teacher's backbone under a prefix, beside other modules
        let mut both = TensorFile::default();
        for (who, seed_shift) in [("teacher.backbone.", 0.0), ("student.module.backbone.", 1.0)] {
            for (k, t) in vit_file(&tiny()).tensors {
                let v = t.to_f32().iter().map(|x| x + seed_shift).collect();
                both.tensors.insert(format!("{who}{k}"), Tensor::f32(t.shape.clone(), v));
            }
        }
        both.tensors.insert("teacher.head.last_layer.weight".into(), Tensor::f32(vec![2, 16], vec![0.0; 32]));
        let model = save(dir.path(), "full.safetensors", &both);
        let (vit, file) = load_vit(Path::new(&model), Some(2)).unwrap();
        assert_eq!((vit.prefix.as_str(), vit.cfg.clone()), ("teacher.backbone.", tiny()));
        assert_eq!(vit.ignored.len(), both.tensors.len() - file.tensors.len());
        assert_eq!(file.tensors["cls_token"], vit_file(&tiny()).tensors["cls_token"]);
    }

    #[test]
    fn an_mae_model_is_read_as_its_encoder() {
        let dir = tempfile::tempdir().unwrap();
        let mae_cfg = MaeConfig {
            img_size: 16,
            patch_size: 4,
            in_chans: 1,
            embed_dim: 16,
            depth: 2,
            num_heads: 2,
            decoder_embed_dim: 8,
            decoder_depth: 1,
            decoder_num_heads: 2,
            ..MaeConfig::default()
        };
        let mae = Mae::init(&Cpu, mae_cfg.clone(), 0);
        // as `train` writes it minus the fixed tables: pos_embed is rebuilt from the config
        let mut file = block_on(mae.params.download(&Cpu, ""));
        file.metadata.insert("method".into(), "mae".into());
        file.metadata.insert("config".into(), serde_json::to_string(&mae_cfg).unwrap());
        file.metadata.insert("normalize".into(), r#"{"mean":[0.286],"std":[0.353]}"#.into());
        let model = save(dir.path(), "mae.safetensors", &file);
        let img = photo(dir.path());
        let out = dir.path().join("a.png");
        let a = args(&["--model", &model, "--image", &img, "--out", out.to_str().unwrap(), "--layer", "0"]);
        let r = evaluate(&a).unwrap();
        assert_eq!((r.vit.cfg.in_chans, r.vit.cfg.num_heads, r.vit.cfg.mlp_ratio), (1, 2, 4.0));
        assert!(r.vit.ignored.iter().all(|k| k.starts_with("decoder_") || k == "mask_token"), "{:?}", r.vit.ignored);
        check_maps(&r.to_json(&a), 2, [4, 4]);
        assert!(image::open(&out).is_ok());
    }

    #[test]
    fn bad_inputs_are_refused_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let model = save(dir.path(), "vit.safetensors", &vit_file(&tiny()));
        let img = photo(dir.path());
        let out = dir.path().join("o.png");
        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "hello, I am text").unwrap();
        let fail = |extra: &[&str]| {
            let mut argv = vec!["--heads", "2", "--out", out.to_str().unwrap()];
            argv.extend(extra);
            format!("{:#}", evaluate(&args(&argv)).err().expect("an error"))
        };
        let e = fail(&["--model", &model, "--image", text.to_str().unwrap()]);
        assert!(e.contains("not an image"), "{e}");
        let e = fail(&["--model", text.to_str().unwrap(), "--image", &img]);
        assert!(e.contains("loading model") && e.contains("not a valid safetensors file"), "{e}");
        for layer in ["2", "-3"] {
            let e = fail(&["--model", &model, "--image", &img, "--layer", layer]);
            assert!(e.contains(&format!("--layer {layer} is out of range")) && e.contains("0..=1"), "{e}");
        }
        // a block missing one tensor, and a misshapen one
        let mut file = vit_file(&tiny());
        file.tensors.remove("blocks.1.norm2.bias");
        let e = fail(&["--model", &save(dir.path(), "cut.safetensors", &file), "--image", &img]);
        assert!(e.contains("missing 1 parameter(s): blocks.1.norm2.bias"), "{e}");
        let mut file = vit_file(&tiny());
        file.tensors.insert("blocks.0.attn.proj.bias".into(), Tensor::f32(vec![3], vec![0.0; 3]));
        let e = fail(&["--model", &save(dir.path(), "bent.safetensors", &file), "--image", &img]);
        assert!(e.contains("`blocks.0.attn.proj.bias` has shape [3]"), "{e}");
        // a tensor timm's ViT does not have (e.g. DINOv2's LayerScale) is not ignored
        let mut file = vit_file(&tiny());
        file.tensors.insert("blocks.0.ls1.gamma".into(), Tensor::f32(vec![16], vec![1.0; 16]));
        let e = fail(&["--model", &save(dir.path(), "ls.safetensors", &file), "--image", &img]);
        assert!(e.contains("unexpected tensor(s) for this model: blocks.0.ls1.gamma"), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn many_heads_wrap_the_grid_into_rows_of_at_most_eight() {
        let input = DynamicImage::ImageRgb8(RgbImage::new(8, 8));
        let maps = vec![vec![0.5; 4]; 13];
        let png = render(&input, 4, [2, 2], &maps, &[true, false, false, true], 2);
        // 1 + 12 heads + mean + mask = 15 tiles of 16 px: two rows of 8
        assert_eq!((png.width(), png.height()), (8 * 18 + 2, 2 * 18 + 2));
    }

    #[test]
    fn inputs_are_fitted_to_square_and_oblong_models() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(40, 30));
        for ([h, w], size) in [([16, 16], (16, 16)), ([8, 16], (16, 8)), ([24, 8], (8, 24))] {
            let f = fit_to(&img, [h, w]);
            assert_eq!((f.width(), f.height()), size);
        }
    }

    #[test]
    fn objects_mode_scores_each_image_against_its_mask_and_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let model = save(dir.path(), "vit.safetensors", &vit_file(&tiny()));
        let objs = dir.path().join("objects");
        std::fs::create_dir(&objs).unwrap();
        for (i, (x0, x1)) in [(0u32, 8u32), (8, 16)].into_iter().enumerate() {
            RgbImage::from_fn(16, 16, |x, y| Rgb([(x * 9) as u8, (y * 9) as u8, 99]))
                .save(objs.join(format!("{i}.png")))
                .unwrap();
            image::GrayImage::from_fn(16, 16, |x, _| image::Luma([if (x0..x1).contains(&x) { 255 } else { 0 }]))
                .save(objs.join(format!("{i}.mask.png")))
                .unwrap();
        }
        std::fs::write(objs.join("notes.txt"), "no mask beside me").unwrap();
        let a = args(&["--model", &model, "--heads", "2", "--objects", objs.to_str().unwrap(), "--json"]);
        let r = objects::score(&a).unwrap();
        assert_eq!(r["images"], 2);
        let rows = r["per_image"].as_array().unwrap();
        for row in rows {
            let heads: Vec<f64> = row["heads"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(heads.len(), 2);
            assert!(heads.iter().all(|v| (0.0..=1.0).contains(v)));
            assert_eq!(row["best"].as_f64().unwrap(), heads.iter().cloned().fold(0.0, f64::max));
        }
        // the blob covers the centre columns: a half-image object on either side overlaps it equally
        assert_eq!(rows[0]["blob"], rows[1]["blob"]);
        assert_eq!(r["img_size"], json!([16, 16]));
        // on a finer grid the scores are still IoUs, and the grid is reported
        let a =
            args(&["--model", &model, "--heads", "2", "--objects", objs.to_str().unwrap(), "--json", "--size", "32"]);
        let r2 = objects::score(&a).unwrap();
        assert_eq!((r2["images"].clone(), r2["img_size"].clone()), (json!(2), json!([32, 32])));
        assert_ne!(r2["per_image"], r["per_image"]);
        assert!(r2["per_image"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| (0.0..=1.0).contains(&row["best"].as_f64().unwrap())));
        let empty = tempfile::tempdir().unwrap();
        let a = args(&["--model", &model, "--heads", "2", "--objects", empty.path().to_str().unwrap()]);
        assert!(objects::score(&a).unwrap_err().to_string().contains("NAME.mask.png"));
    }
}
