//! `patchwork reconstruct --model M --image IMG --out OUT.png`: what a trained MAE makes of
//! a masked image, one row per mask ratio: the masked input (removed patches grey), the
//! reconstruction, the reconstruction with the visible patches pasted back, the original.
//! `--json` prints, per ratio, the mean squared error on the removed patches in pixel space
//! ([0, 1], predictions clamped) and the same for a baseline that fills every removed patch
//! with the mean colour of the visible pixels. `--eval-dataset fashion-mnist --count N`
//! averages those errors over the first N test images instead.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{DynamicImage, Rgb, RgbImage};
use patchwork_compute::methods::mae::{Mae, MaeConfig, Masking};
use patchwork_compute::model_file::MaeModel;
use patchwork_compute::rng::Rng;
use patchwork_compute::{block_on, Backend, TensorFile};
use serde_json::json;

use crate::backend::{BackendChoice, OnBackend, Probe};
use crate::data::{self, Normalize};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// A model written by `patchwork train --method mae` (or its checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// The image (any size and format the decoder reads; resized and centre-cropped).
    #[arg(long, required_unless_present = "eval_dataset", conflicts_with = "eval_dataset")]
    pub image: Option<PathBuf>,
    /// Mask ratios, one grid row each.
    #[arg(long = "mask-ratio", num_args = 1.., default_values_t = [0.25, 0.5, 0.75, 0.9])]
    pub mask_ratios: Vec<f64>,
    /// Seed of the masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The PNG grid.
    #[arg(long, required_unless_present = "eval_dataset")]
    pub out: Option<PathBuf>,
    /// Print the errors as JSON.
    #[arg(long)]
    pub json: bool,
    /// Average the errors over a data set instead: `fashion-mnist` (its test split), `photos`
    /// (the held-out photos, `assets/photos/heldout/`) or a folder of images.
    #[arg(long)]
    pub eval_dataset: Option<String>,
    /// Images of --eval-dataset to use (the first N).
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// Side of one grid cell in pixels [default: the input scaled up to at least 128].
    #[arg(long)]
    pub cell: Option<u32>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

/// A trained MAE on the host: weights, config, and the input normalisation it was trained
/// with (a `patchwork train` file, or an official checkpoint with no metadata).
pub type Model = MaeModel;

pub fn load_model(path: &Path) -> Result<Model> {
    let file = TensorFile::load(path).with_context(|| format!("loading model {}", path.display()))?;
    let model = MaeModel::from_file(file).with_context(|| format!("{} is not an MAE this can run", path.display()))?;
    if model.inferred {
        eprintln!(
            "{}: no metadata; read as an official MAE checkpoint: {}",
            path.display(),
            serde_json::to_string(&model.cfg)?
        );
    }
    Ok(model)
}

/// Masked reconstructions of `n` images at one ratio, in pixel space.
pub struct Recon {
    pub n: usize,
    /// `[n, L]`: 1 where the patch was removed.
    pub mask: Vec<f32>,
    /// `[n, C, S, S]` in [0, 1].
    pub pred: Vec<f32>,
    pub orig: Vec<f32>,
}

/// Per-image errors on the removed patches: `(model, mean-fill baseline)`.
pub fn masked_errors(cfg: &MaeConfig, r: &Recon) -> Vec<(f64, f64)> {
    let (c, s, p, g) = (cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.grid());
    let masked = |b: usize, y: usize, x: usize| r.mask[b * g * g + (y / p) * g + x / p] > 0.5;
    (0..r.n)
        .map(|b| {
            let img = |v: &[f32], ch: usize, y: usize, x: usize| v[((b * c + ch) * s + y) * s + x] as f64;
            let mut fill = vec![0.0; c];
            let mut visible = 0usize;
            for y in 0..s {
                for x in 0..s {
                    if !masked(b, y, x) {
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
                        if masked(b, y, x) {
                            let o = img(&r.orig, ch, y, x);
                            model += (img(&r.pred, ch, y, x) - o).powi(2);
                            base += (f - o).powi(2);
                            count += 1;
                        }
                    }
                }
            }
            (model / count.max(1) as f64, base / count.max(1) as f64)
        })
        .collect()
}

/// Mask `x: [n, C, S, S]` (normalised) at `ratio` and reconstruct every patch.
pub fn reconstruct<B: Backend>(
    be: &B,
    mae: &Mae<B>,
    norm: &Normalize,
    x: &[f32],
    n: usize,
    ratio: f64,
    rng: &mut Rng,
) -> Result<Recon> {
    let cfg = &mae.cfg;
    let (c, s, p, g, l) = (cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.grid(), cfg.patches());
    let keep = (l as f64 * (1.0 - ratio)) as usize;
    if !(0.0..1.0).contains(&ratio) || keep == 0 {
        bail!("mask ratio {ratio} must be in [0, 1) and leave a visible patch of {l}");
    }
    let masking = Masking::random(rng, n, l, keep);
    let mask = masking.mask.clone();
    let fwd = mae.forward(be, &be.upload(x), masking);
    // pred: [n, L, p·p·c] in (p, p, c) order, in the normalised input space
    let pred = block_on(be.read(&fwd.pred));
    let at = |b: usize, ch: usize, y: usize, xx: usize| ((b * c + ch) * s + y) * s + xx;
    let mut out = vec![0.0f32; n * c * s * s];
    for b in 0..n {
        for gy in 0..g {
            for gx in 0..g {
                let patch = &pred[((b * l) + gy * g + gx) * cfg.patch_len()..][..cfg.patch_len()];
                let pixel = |k: usize| {
                    let (i, j, ch) = (k / (p * c), (k / c) % p, k % c);
                    at(b, ch, gy * p + i, gx * p + j)
                };
                // norm_pix_loss predicts (t − mean)/sqrt(var + 1e-6) per patch; undo it with
                // the patch's own statistics, as the MAE demo does (this uses hidden pixels).
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
    }
    let to_pixels = |v: &[f32]| -> Vec<f32> {
        v.iter().enumerate().map(|(i, v)| norm.undo((i / (s * s)) % c, *v).clamp(0.0, 1.0)).collect()
    };
    Ok(Recon { n, mask, pred: to_pixels(&out), orig: to_pixels(x) })
}

/// The grid: one row per ratio of masked input, reconstruction, reconstruction + visible,
/// original; cells `cell` pixels wide (nearest-neighbour), 2-pixel white gaps.
fn grid(cfg: &MaeConfig, rows: &[Recon], cell: u32) -> RgbImage {
    let (c, s, p, g) = (cfg.in_chans, cfg.img_size, cfg.patch_size, cfg.grid());
    let gap = 2u32;
    let mut img = RgbImage::from_pixel(4 * cell + 5 * gap, rows.len() as u32 * (cell + gap) + gap, Rgb([255; 3]));
    for (row, r) in rows.iter().enumerate() {
        for col in 0..4u32 {
            for cy in 0..cell {
                for cx in 0..cell {
                    let (y, x) = ((cy as usize * s) / cell as usize, (cx as usize * s) / cell as usize);
                    let masked = r.mask[(y / p) * g + x / p] > 0.5;
                    let px = |v: &[f32], ch: usize| v[(ch.min(c - 1) * s + y) * s + x];
                    let rgb: [f32; 3] = match col {
                        0 if masked => [0.5; 3],
                        1 => [0, 1, 2].map(|ch| px(&r.pred, ch)),
                        2 if masked => [0, 1, 2].map(|ch| px(&r.pred, ch)),
                        _ => [0, 1, 2].map(|ch| px(&r.orig, ch)),
                    };
                    let (ox, oy) = (gap + col * (cell + gap) + cx, gap + row as u32 * (cell + gap) + cy);
                    img.put_pixel(ox, oy, Rgb(rgb.map(|v| (v * 255.0).round() as u8)));
                }
            }
        }
    }
    img
}

struct Task {
    args: Args,
    model: Model,
    /// `[n, C, S, S]` normalised inputs.
    x: Vec<f32>,
    n: usize,
}

impl OnBackend for Task {
    type Output = Result<serde_json::Value>;
    fn run<B: Probe>(self, be: &B) -> Result<serde_json::Value> {
        let Task { args, model, x, n } = self;
        let mae = Mae::from_file(be, model.cfg.clone(), &model.file)?;
        let per_image = model.cfg.in_chans * model.cfg.img_size * model.cfg.img_size;
        let mut rng = Rng::new(args.seed);
        let mut results = Vec::new();
        let mut rows = Vec::new();
        for &ratio in &args.mask_ratios {
            let (mut sum_model, mut sum_base) = (0.0, 0.0);
            // batches of 50 keep memory small for large --count
            for start in (0..n).step_by(50) {
                let m = (n - start).min(50);
                let r = reconstruct(
                    be,
                    &mae,
                    &model.norm,
                    &x[start * per_image..(start + m) * per_image],
                    m,
                    ratio,
                    &mut rng,
                )?;
                for (e_model, e_base) in masked_errors(&model.cfg, &r) {
                    sum_model += e_model;
                    sum_base += e_base;
                }
                if n == 1 {
                    rows.push(r);
                }
            }
            let (mse, base) = (sum_model / n as f64, sum_base / n as f64);
            results.push(json!({
                "mask_ratio": ratio,
                "masked_patches": model.cfg.patches() - (model.cfg.patches() as f64 * (1.0 - ratio)) as usize,
                "mse_masked": mse,
                "mse_mean_fill": base,
                "mse_ratio_to_baseline": mse / base,
            }));
        }
        if let Some(out) = args.out.as_ref().filter(|_| n == 1) {
            let cell = args.cell.unwrap_or_else(|| {
                let s = model.cfg.img_size as u32;
                s * 128u32.div_ceil(s)
            });
            grid(&model.cfg, &rows, cell).save(out).with_context(|| format!("writing {}", out.display()))?;
        }
        Ok(json!({
            "model": args.model.display().to_string(),
            "backend": be.name(),
            "images": n,
            "seed": args.seed,
            "pixel_space": "[0, 1], predictions clamped; MSE over the removed patches",
            "norm_pix_denormalised_with_own_patch_stats": model.cfg.norm_pix_loss,
            "ratios": results,
        }))
    }
}

/// `[n, C, S, S]` normalised inputs for `model` from a data set's first `count` images.
fn eval_inputs(spec: &str, count: usize, m: &Model) -> Result<(Vec<f32>, usize, String)> {
    let d = match data::DataSpec::parse(spec) {
        data::DataSpec::FashionMnist => data::load_idx(&data::fashion_mnist_dir(), "test")?,
        data::DataSpec::Photos => {
            data::load_dir(&data::assets_dir().join("photos/heldout"), m.cfg.in_chans, m.cfg.img_size)?
        }
        data::DataSpec::Dir(p) => data::load_dir(&p, m.cfg.in_chans, m.cfg.img_size)?,
    };
    let n = count.min(d.len());
    if n == 0 {
        bail!("--count must be at least 1");
    }
    let mut x = Vec::new();
    for img in &d.images[..n] {
        data::push_chw(&data::fit(img, m.cfg.img_size), m.cfg.in_chans, &m.norm, &mut x);
    }
    Ok((x, n, d.name))
}

pub fn run(args: Args) -> Result<()> {
    if let Some(out) = args.out.as_ref().filter(|_| args.eval_dataset.is_none()) {
        crate::create_parent(out)?;
    }
    let report = evaluate(args.clone())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{:>10} {:>14} {:>14} {:>8}", "mask ratio", "MSE (model)", "MSE (mean fill)", "ratio");
        for r in report["ratios"].as_array().unwrap() {
            println!(
                "{:>10} {:>14.5} {:>14.5} {:>8.3}",
                r["mask_ratio"],
                r["mse_masked"].as_f64().unwrap_or(f64::NAN),
                r["mse_mean_fill"].as_f64().unwrap_or(f64::NAN),
                r["mse_ratio_to_baseline"].as_f64().unwrap_or(f64::NAN)
            );
        }
        if let Some(out) = args.out.as_ref().filter(|_| args.eval_dataset.is_none()) {
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}

/// The report `run` prints (and the grid PNG, for one image).
pub fn evaluate(args: Args) -> Result<serde_json::Value> {
    let model = load_model(&args.model)?;
    let (x, n, source) = match (&args.eval_dataset, &args.image) {
        (Some(spec), _) => eval_inputs(spec, args.count, &model)?,
        (None, Some(path)) => {
            let img = data::decode(path)?;
            if img.width() == 0 || img.height() == 0 {
                bail!("{} is an empty image", path.display());
            }
            let mut x = Vec::new();
            let img = DynamicImage::ImageRgb8(img.to_rgb8());
            data::push_chw(&data::fit(&img, model.cfg.img_size), model.cfg.in_chans, &model.norm, &mut x);
            (x, 1, path.display().to_string())
        }
        (None, None) => bail!("give --image or --eval-dataset"),
    };
    let backend = args.backend;
    let mut report = crate::train::with_compute_backend(backend, Task { args, model, x, n })??;
    report["source"] = json!(source);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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

    /// `--model MODEL --image IMG --out OUT`.
    fn image_args(model: &Path, img: &Path, out: &Path) -> Args {
        args(&["--model", model.to_str().unwrap(), "--image", img.to_str().unwrap(), "--out", out.to_str().unwrap()])
    }

    /// A micro MAE trained for two steps on a tiny idx set, saved as `train` saves it.
    fn micro_model(dir: &Path) -> PathBuf {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        crate::data::tests_support::write_idx(&data, "train", 8);
        let out = dir.join("m.safetensors");
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: crate::train::Args,
        }
        let t = T::try_parse_from([
            "t",
            "--method",
            "mae",
            "--data",
            data.to_str().unwrap(),
            "--steps",
            "2",
            "--batch",
            "4",
            "--patch-size",
            "7",
            "--embed-dim",
            "16",
            "--depth",
            "1",
            "--heads",
            "2",
            "--decoder-dim",
            "16",
            "--decoder-depth",
            "1",
            "--decoder-heads",
            "2",
            "--backend",
            "cpu",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        crate::train::train(t.a).unwrap();
        out
    }

    #[test]
    fn reconstruct_of_a_micro_model_gives_finite_errors_and_a_grid() {
        let dir = tempfile::tempdir().unwrap();
        let model = micro_model(dir.path());
        let img = dir.path().join("in.jpg");
        // any size and colour: resized, centre-cropped and turned grey
        image::RgbImage::from_fn(50, 37, |x, y| Rgb([(x * 5) as u8, (y * 6) as u8, 90])).save(&img).unwrap();
        let out = dir.path().join("grid.png");
        let report = evaluate(image_args(&model, &img, &out)).unwrap();
        let ratios = report["ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 4);
        for r in ratios {
            for k in ["mse_masked", "mse_mean_fill"] {
                let v = r[k].as_f64().unwrap();
                assert!(v.is_finite() && v >= 0.0, "{k} = {v} in {r}");
            }
        }
        assert_eq!(ratios[2]["masked_patches"], 12);
        let grid = image::open(&out).unwrap();
        // `run` makes the folders of --out before it computes
        let nested = dir.path().join("new/folder/grid.png");
        run(image_args(&model, &img, &nested)).unwrap();
        assert_eq!(image::open(&nested).unwrap().width(), grid.width());
        // 28 px cells scaled ×5, 4 columns and 4 rows with 2 px gaps
        assert_eq!((grid.width(), grid.height()), (4 * 140 + 10, 4 * 142 + 2));
    }

    #[test]
    fn eval_mode_averages_over_a_data_set() {
        let dir = tempfile::tempdir().unwrap();
        let model = micro_model(dir.path());
        let report = evaluate(args(&[
            "--model",
            model.to_str().unwrap(),
            "--eval-dataset",
            "fashion-mnist",
            "--count",
            "60",
            "--mask-ratio",
            "0.75",
        ]))
        .unwrap();
        assert_eq!(report["images"], 60);
        let r = &report["ratios"][0];
        assert!(r["mse_masked"].as_f64().unwrap().is_finite() && r["mse_mean_fill"].as_f64().unwrap() > 0.0, "{r}");
    }

    #[test]
    fn non_images_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let model = micro_model(dir.path());
        let out = dir.path().join("o.png");
        let mut png = Vec::new();
        image::RgbImage::new(8, 8).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        png.truncate(png.len() / 2);
        for (name, bytes, says) in [
            ("empty.png", &b""[..], "is empty, not an image"),
            ("notes.txt", &b"hello, I am text"[..], "not an image"),
            ("cut.png", &png[..], "not a readable image"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let e = evaluate(image_args(&model, &path, &out)).unwrap_err();
            assert!(format!("{e:#}").contains(says), "{name}: {e:#}");
        }
        let e = evaluate(args(&[
            "--model",
            dir.path().join("data/train-labels-idx1-ubyte.gz").to_str().unwrap(),
            "--image",
            "x",
            "--out",
            "y",
        ]))
        .unwrap_err();
        assert!(format!("{e:#}").contains("loading model"), "{e:#}");
        assert!(!out.exists());
    }

    #[test]
    fn a_perfect_prediction_has_zero_error_and_the_baseline_does_not() {
        let cfg = MaeConfig { img_size: 4, patch_size: 2, in_chans: 1, ..MaeConfig::default() };
        let orig: Vec<f32> = (0..16).map(|i| i as f32 / 15.0).collect();
        let r = Recon { n: 1, mask: vec![1.0, 0.0, 0.0, 1.0], pred: orig.clone(), orig };
        let (model, base) = masked_errors(&cfg, &r)[0];
        assert_eq!(model, 0.0);
        assert!(base > 0.01, "{base}");
    }
}
