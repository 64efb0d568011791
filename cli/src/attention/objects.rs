//! `patchwork attention --objects SRC`: does a model's attention find the object? For each
//! image with an object mask, DINO's 60%-mass mask of every head's CLS attention (last
//! layer, or `--layer`) is compared with the patches the object covers (IoU); the best
//! head, the mean map and a centred Gaussian blob (a model that always looks at the middle)
//! are reported.
use std::path::Path;

use anyhow::{bail, Context, Result};
use image::DynamicImage;
use patchwork_compute::attention::{centred_blob, cls_maps, iou, mass_mask, object_patches, MASS};
use patchwork_compute::{block_on, AttentionMap, Backbone, TensorFile, Vit, VitConfig};
use serde_json::{json, Value};

use super::{at_size, fit_to, load_vit, resolve_layer, Args};
use crate::backend::{OnBackend, Probe};
use crate::data;

/// A named image and its object mask (white = object).
type Item = (String, DynamicImage, image::GrayImage);

/// One image's scores: name, each head's IoU, the best head's, the mean map's, the blob's.
struct Scores {
    name: String,
    heads: Vec<f32>,
    best: f32,
    mean_map: f32,
    blob: f32,
}

/// Images and their object masks, at any size, and the source's name.
fn load_objects(src: &str, count: usize) -> Result<(String, Vec<Item>)> {
    let mut out = Vec::new();
    if src == "fashion-mnist" {
        let set = data::load_idx(&data::fashion_mnist_dir(), "test")?;
        for (i, img) in set.images.iter().take(count).enumerate() {
            let grey = img.to_luma8();
            let mask = image::GrayImage::from_fn(grey.width(), grey.height(), |x, y| {
                image::Luma([if grey.get_pixel(x, y).0[0] > 25 { 255 } else { 0 }])
            });
            out.push((format!("test {i}"), img.clone(), mask));
        }
        return Ok((set.name, out));
    }
    let dir = Path::new(src);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("--objects {src}: not `fashion-mnist` nor a folder"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.to_string_lossy().contains(".mask."))
        .collect();
    names.sort();
    for path in names.into_iter() {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mask_path = dir.join(format!("{stem}.mask.png"));
        if !mask_path.is_file() {
            continue;
        }
        let img = data::decode(&path)?;
        let mask = data::decode(&mask_path)?.to_luma8();
        if (mask.width(), mask.height()) != (img.width(), img.height()) {
            bail!(
                "{} is {}×{}, its image {}×{}",
                mask_path.display(),
                mask.width(),
                mask.height(),
                img.width(),
                img.height()
            );
        }
        out.push((stem, img, mask));
        if out.len() == count {
            break;
        }
    }
    if out.is_empty() {
        bail!("{src} has no NAME.png|jpg with a NAME.mask.png beside it");
    }
    Ok((dir.display().to_string(), out))
}

/// The attention of `layer` for `n` images, in batches.
struct Batches {
    cfg: VitConfig,
    file: TensorFile,
    /// The input size (the model's own or `--size`).
    size: [usize; 2],
    x: Vec<f32>,
    n: usize,
    layer: usize,
}

impl OnBackend for Batches {
    type Output = Result<(Vec<AttentionMap>, String)>;
    fn run<B: Probe>(self, be: &B) -> Self::Output {
        let vit = Vit::from_file(be, self.cfg.clone(), &self.file)?.at_size(be, self.size)?.vit;
        let per = self.x.len() / self.n;
        let mut maps = Vec::new();
        for chunk in self.x.chunks(per * 64) {
            let saved = Backbone::forward(&vit, be, &be.upload(chunk), chunk.len() / per);
            maps.push(block_on(Backbone::attention(&vit, be, &saved, self.layer)));
        }
        Ok((maps, be.name()))
    }
}

pub fn score(args: &Args) -> Result<Value> {
    let src = args.objects.as_deref().expect("--objects");
    let (vit, file) = load_vit(&args.model, args.heads)?;
    let cfg = at_size(&vit.cfg, args.size)?;
    let layer = resolve_layer(args.layer, cfg.depth)?;
    let (name, items) = load_objects(src, args.count.max(1))?;
    let (mut x, mut objects) = (Vec::new(), Vec::new());
    for (_, img, mask) in &items {
        let input = fit_to(&DynamicImage::ImageRgb8(img.to_rgb8()), cfg.img_size);
        let input = if cfg.in_chans == 1 { DynamicImage::ImageLuma8(input.to_luma8()) } else { input };
        data::push_chw(&input, cfg.in_chans, &vit.norm, &mut x);
        let m = fit_to(&DynamicImage::ImageLuma8(mask.clone()), cfg.img_size).to_luma8();
        let px: Vec<bool> = m.pixels().map(|p| p.0[0] > 127).collect();
        objects.push(object_patches(&px, cfg.grid(), cfg.patch_size));
    }
    let batches = Batches { cfg: vit.cfg.clone(), file, size: cfg.img_size, x, n: items.len(), layer };
    let (maps, backend) = crate::train::with_compute_backend(args.backend, batches)??;
    let blob = mass_mask(&centred_blob(cfg.grid()), MASS);
    let mut rows = Vec::new();
    let mut k = 0;
    for map in &maps {
        for b in 0..map.batch {
            let c = cls_maps(map, b, MASS).context("the model has no class token")?;
            let obj = &objects[k];
            let heads: Vec<f32> = c.masks.iter().map(|m| iou(m, obj)).collect();
            let best = heads.iter().cloned().fold(0.0f32, f32::max);
            rows.push(Scores {
                name: items[k].0.clone(),
                heads,
                best,
                mean_map: iou(&c.mean_mask, obj),
                blob: iou(&blob, obj),
            });
            k += 1;
        }
    }
    let n = rows.len() as f64;
    let mean = |f: &dyn Fn(&Scores) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let hit = mean(&|r| (r.best >= 0.5) as u8 as f64);
    let (best, mean_map, blob_iou) = (mean(&|r| r.best as f64), mean(&|r| r.mean_map as f64), mean(&|r| r.blob as f64));
    let beats = mean(&|r| (r.best > r.blob) as u8 as f64);
    let per_head: Vec<f64> =
        (0..cfg.num_heads).map(|h| rows.iter().map(|r| r.heads[h] as f64).sum::<f64>() / n).collect();
    if !args.json {
        println!(
            "{} on {name}: {} images at {}×{} px, layer {layer}, {} backend",
            args.model.display(),
            rows.len(),
            cfg.img_size[0],
            cfg.img_size[1],
            backend
        );
        // per image, up to a screenful: the IoU of each head's 60% mask, the best, the blob's
        if rows.len() <= 50 {
            let width = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(5).max(5);
            println!("{:width$}  {:^w$}  best   blob", "image", "IoU per head", w = 5 * cfg.num_heads - 1);
            for r in &rows {
                let heads: Vec<String> = r.heads.iter().map(|v| format!("{v:.2}")).collect();
                let mark = if r.best >= 0.5 { "" } else { "  (no head at 0.5)" };
                println!("{:width$}  {}  {:.2}   {:.2}{mark}", r.name, heads.join(" "), r.best, r.blob);
            }
        }
        println!("images where some head's 60% mask overlaps the object with IoU >= 0.5: {:.1}%", 100.0 * hit);
        println!("mean IoU: best head {best:.3}, mean map {mean_map:.3}, centred blob {blob_iou:.3}");
        println!("best head beats the blob on {:.1}% of images", 100.0 * beats);
        println!("mean IoU per head: {}", per_head.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(" "));
    }
    Ok(json!({
        "model": args.model.display().to_string(),
        "objects": name,
        "images": rows.len(),
        "layer": layer,
        "img_size": cfg.img_size,
        "backend": backend,
        "threshold": MASS,
        "best_head_iou_at_least_half": hit,
        "mean_iou_best_head": best,
        "mean_iou_mean_map": mean_map,
        "mean_iou_centred_blob": blob_iou,
        "best_head_beats_blob": beats,
        "mean_iou_per_head": per_head,
        "per_image": rows
            .iter()
            .map(|r| json!({"image": r.name, "heads": r.heads, "best": r.best, "mean_map": r.mean_map, "blob": r.blob}))
            .collect::<Vec<_>>(),
    }))
}
