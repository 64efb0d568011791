//! Where a ViT's class token looks, shared by `patchwork attention` and the app's Attention
//! page: reading any ViT from a safetensors file, one image's attention in every layer,
//! per-head CLS → patch maps with their mean, DINO's 60%-mass mask
//! (`visualize_attention.py --threshold 0.6`), one patch's row of the patch → patch
//! attention, and the viridis colour map both draw with. Pure and wasm-safe.
//!
//! Models (see [`vit_from_file`]): files with a `vit_config` metadata entry (`patchwork train
//! --method dino|ibot`: the teacher's backbone under timm's names), files of `patchwork train
//! --method mae` (the encoder; decoder and mask token left out), and plain timm-named state
//! dicts (e.g. the official DINO checkpoints saved as safetensors), whose config is read off
//! the tensor shapes.
use crate::backbone::{AttentionMap, Backbone};
use crate::backend::Backend;
use crate::methods::mae::{sincos_pos_embed, MaeConfig};
use crate::model_file::{default_heads, Normalize};
use crate::train::{Method, RunConfig};
use crate::vit::{Vit, VitConfig};
use crate::weights::{Tensor, TensorFile};

/// DINO's `--threshold`: a mask keeps the patches holding this share of the attention mass.
pub const MASS: f32 = 0.6;

// ---- the mask ----

/// DINO's thresholded attention (`visualize_attention.py`): sort ascending, normalise by the
/// total, and keep the entries whose cumulative share exceeds `1 − mass`, so the largest
/// entries holding `mass` of the total are kept (the largest always is). Ties fall in raster
/// order: of equal values the later patch counts as larger. A map with no mass keeps nothing.
pub fn mass_mask(attn: &[f32], mass: f32) -> Vec<bool> {
    let mut order: Vec<usize> = (0..attn.len()).collect();
    order.sort_by(|&a, &b| attn[a].total_cmp(&attn[b]));
    let total: f32 = attn.iter().sum();
    let mut keep = vec![false; attn.len()];
    let mut cum = 0.0f32;
    for &i in &order {
        cum += attn[i] / total;
        keep[i] = cum > 1.0 - mass;
    }
    keep
}

// ---- the maps ----

/// One image's CLS → patch attention in one layer, on the patch grid (raster order).
#[derive(Clone, Debug, PartialEq)]
pub struct ClsMaps {
    pub grid: [usize; 2],
    /// `[heads][l]`: each sums to 1 − the class token's attention on itself and on the
    /// registers.
    pub heads: Vec<Vec<f32>>,
    /// `[heads]`: the class token's attention on the registers (empty without registers).
    pub registers: Vec<f32>,
    /// `[l]`: the average over heads.
    pub mean: Vec<f32>,
    /// `[heads][l]`: each head's `mass` mask.
    pub masks: Vec<Vec<bool>>,
    /// `[l]`: the `mass` mask of the mean map.
    pub mean_mask: Vec<bool>,
}

/// Image `b`'s CLS maps of `map`, with masks keeping `mass` of each map's attention.
/// `None` for a backbone without a class token.
pub fn cls_maps(map: &AttentionMap, b: usize, mass: f32) -> Option<ClsMaps> {
    let l = map.grid[0] * map.grid[1];
    let cls = map.cls.as_ref()?;
    // cls: [batch, heads, l]
    let heads: Vec<Vec<f32>> = cls[b * map.heads * l..][..map.heads * l].chunks(l).map(<[f32]>::to_vec).collect();
    let mean = mean_of(&heads, l);
    let masks = heads.iter().map(|m| mass_mask(m, mass)).collect();
    let mean_mask = mass_mask(&mean, mass);
    let registers = map.cls_to_registers.get(b * map.heads..(b + 1) * map.heads).unwrap_or_default().to_vec();
    Some(ClsMaps { grid: map.grid, heads, registers, mean, masks, mean_mask })
}

/// What patch `query` (raster index) of image `b` attends to: its row of the patch → patch
/// attention, `[heads][l]`, and their mean `[l]`. Each row sums to 1 − that patch's
/// attention on the class token.
pub fn patch_row(map: &AttentionMap, b: usize, query: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    let l = map.grid[0] * map.grid[1];
    assert!(query < l, "patch {query} of a {l}-patch grid");
    // patches: [batch, heads, l, l]
    let heads: Vec<Vec<f32>> =
        (0..map.heads).map(|h| map.patches[((b * map.heads + h) * l + query) * l..][..l].to_vec()).collect();
    let mean = mean_of(&heads, l);
    (heads, mean)
}

fn mean_of(maps: &[Vec<f32>], l: usize) -> Vec<f32> {
    (0..l).map(|i| maps.iter().map(|m| m[i]).sum::<f32>() / maps.len().max(1) as f32).collect()
}

/// Every layer's attention for one normalised image `x: [1, C, H, W]`, first to last.
pub async fn all_layers<B: Backend>(be: &B, vit: &Vit<B>, x: &[f32]) -> Vec<AttentionMap> {
    let saved = Backbone::forward(vit, be, &be.upload(x), 1);
    let mut maps = Vec::with_capacity(vit.cfg.depth);
    for layer in 0..vit.cfg.depth {
        maps.push(Backbone::attention(vit, be, &saved, layer).await);
    }
    maps
}

// ---- colour ----

/// matplotlib's viridis at 0, 0.1, …, 1.
const VIRIDIS: [[u8; 3]; 11] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x24, 0x75],
    [0x41, 0x44, 0x87],
    [0x35, 0x5f, 0x8d],
    [0x2a, 0x78, 0x8e],
    [0x21, 0x91, 0x8c],
    [0x22, 0xa8, 0x84],
    [0x44, 0xbf, 0x70],
    [0x7a, 0xd1, 0x51],
    [0xbd, 0xdf, 0x26],
    [0xfd, 0xe7, 0x25],
];

/// Viridis at `t` in [0, 1], as RGB in [0, 1].
pub fn viridis(t: f32) -> [f32; 3] {
    let x = t.clamp(0.0, 1.0) * 10.0;
    let i = (x as usize).min(9);
    let f = x - i as f32;
    [0, 1, 2].map(|c| (VIRIDIS[i][c] as f32 * (1.0 - f) + VIRIDIS[i + 1][c] as f32 * f) / 255.0)
}

/// `map` scaled to [0, 1] by its own minimum and maximum (a flat map is 0.5 everywhere).
pub fn min_max(map: &[f32]) -> Vec<f32> {
    let (lo, hi) = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    map.iter().map(|v| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 }).collect()
}

// ---- reading a ViT ----

/// A ViT's config, its input normalisation, and where they came from.
#[derive(Clone, Debug)]
pub struct VitModel {
    pub cfg: VitConfig,
    pub norm: Normalize,
    /// Where `cfg` came from, in words.
    pub source: String,
    /// The prefix stripped from the names (e.g. `teacher.backbone.`), or "".
    pub prefix: String,
    /// Tensors of the file that are not the ViT's and were left out (MAE's decoder,
    /// optimiser moments, modules beside a prefixed backbone).
    pub ignored: Vec<String>,
}

/// Read `file` as a ViT (see the module docs for the formats). `heads` is a head count the
/// user gave (the CLI's `--heads`): it sets the heads of a checkpoint without metadata and
/// must agree with a config's. The file returned holds exactly the tensors
/// `cfg.param_shapes()` names, with those shapes, ready for `Vit::from_file`.
pub fn vit_from_file(file: TensorFile, heads: Option<usize>) -> Result<(VitModel, TensorFile), String> {
    let prefix = backbone_prefix(&file);
    let (mut file, mut ignored) = strip_prefix(file, &prefix);
    let meta = |k: &str| file.metadata.get(k).cloned();
    let check_heads = |cfg: &VitConfig| match heads {
        Some(h) if h != cfg.num_heads => Err(format!(
            "the head count given ({h}) disagrees with the model's config ({} heads); \
             a head count is for checkpoints without metadata",
            cfg.num_heads
        )),
        _ => Ok(()),
    };
    // A DINO/iBOT/supervised training checkpoint (`MODEL.ckpt.safetensors`) keeps its run's
    // `config` instead: its backbone (the teacher, for DINO and iBOT) is at the top level.
    let run_backbone = match (meta("vit_config"), meta("method").and_then(|m| Method::parse(&m)), meta("config")) {
        (None, Some(method), Some(config)) if method != Method::Mae => {
            let run = RunConfig::from_json(method, &config)?;
            Some(run.backbone().ok_or("a Swin classifier's checkpoint, not a ViT's")?)
        }
        _ => None,
    };
    let (cfg, source) = if meta("vit_config").is_some() || run_backbone.is_some() {
        let cfg = match (meta("vit_config"), run_backbone) {
            (Some(s), _) => {
                VitConfig::from_json(&s).map_err(|e| format!("reading the model's `vit_config` metadata: {e}"))?
            }
            (None, cfg) => cfg.expect("a run's backbone"),
        };
        check_heads(&cfg)?;
        // The config is the model; what else the file holds (method heads, optimiser
        // moments, iBOT's `masked_embed`) cannot change the encoder's attention.
        let names: Vec<String> = cfg.param_shapes().into_iter().map(|(n, _)| n).collect();
        ignored.extend(file.tensors.keys().filter(|k| !names.contains(k)).cloned());
        file.tensors.retain(|k, _| names.contains(k));
        let source =
            if meta("vit_config").is_some() { "vit_config metadata" } else { "a training checkpoint's config" };
        (cfg, source.to_string())
    } else if let Some(method) = meta("method") {
        if method != "mae" {
            return Err(format!("a {method} model without `vit_config` metadata: cannot tell its ViT"));
        }
        let mae = MaeConfig::from_json(&meta("config").ok_or("the MAE model has no `config` metadata")?)
            .map_err(|e| e.to_string())?;
        let cfg = VitConfig {
            img_size: [mae.img_size; 2],
            patch_size: mae.patch_size,
            in_chans: mae.in_chans,
            embed_dim: mae.embed_dim,
            depth: mae.depth,
            num_heads: mae.num_heads,
            mlp_ratio: mae.mlp_ratio,
            qkv_bias: true,
            num_classes: 0,
            global_pool: "token".into(),
            ..VitConfig::default()
        };
        check_heads(&cfg)?;
        ignored.extend(drop_mae_decoder(&mut file));
        // MAE's position embedding is a fixed sin-cos table, optional in its files.
        if !file.tensors.contains_key("pos_embed") {
            let table = sincos_pos_embed(mae.embed_dim, mae.grid());
            file.tensors.insert("pos_embed".into(), Tensor::f32(vec![1, mae.patches() + 1, mae.embed_dim], table));
        }
        (cfg, "MAE encoder (config metadata)".to_string())
    } else {
        // An official MAE checkpoint (models_mae.py names) is a timm ViT plus its decoder.
        let mae = file.tensors.contains_key("decoder_embed.weight");
        if mae {
            ignored.extend(drop_mae_decoder(&mut file));
        }
        let (cfg, heads_from) = infer_vit_config(&file, heads)?;
        let what = if mae { "an MAE's encoder, " } else { "" };
        (cfg, format!("{what}inferred from the tensor shapes; heads {heads_from}"))
    };
    file.check_names(&cfg.param_shapes(), |_| true).map_err(|e| {
        let c = &cfg;
        format!(
            "does not fit a ViT with {source} ({}×{}, patch {}, {} channel(s), width {}, depth {}, {} heads): {e}",
            c.img_size[0], c.img_size[1], c.patch_size, c.in_chans, c.embed_dim, c.depth, c.num_heads
        )
    })?;
    let norm = match file.metadata.get("normalize") {
        Some(s) => serde_json::from_str(s).map_err(|e| format!("reading the model's `normalize` metadata: {e}"))?,
        None => Normalize::imagenet(cfg.in_chans),
    };
    if norm.mean.len() != cfg.in_chans || norm.std.len() != cfg.in_chans {
        return Err(format!(
            "the model's normalisation has {} channel(s), its config {}",
            norm.mean.len(),
            cfg.in_chans
        ));
    }
    Ok((VitModel { cfg, norm, source, prefix, ignored }, file))
}

/// A model file's backbone for frozen features: a ViT, or a Swin classifier.
#[derive(Clone, Debug)]
pub enum BackboneModel {
    Vit(VitModel),
    Swin(crate::SwinConfig, Normalize),
}

impl BackboneModel {
    /// Input side, channels and the width of the pooled features.
    pub fn shape(&self) -> (usize, usize, usize) {
        match self {
            BackboneModel::Vit(m) => (m.cfg.img_size[0], m.cfg.in_chans, m.cfg.embed_dim),
            BackboneModel::Swin(c, _) => (c.img_size[0], c.in_chans, c.num_features()),
        }
    }
    pub fn norm(&self) -> &Normalize {
        match self {
            BackboneModel::Vit(m) => &m.norm,
            BackboneModel::Swin(_, n) => n,
        }
    }
}

/// Read `file` as a backbone: a Swin classifier (`swin_config` metadata, or a supervised
/// Swin run's checkpoint), else a ViT as [`vit_from_file`] reads it (`heads` as there). The
/// file returned holds exactly the backbone's tensors (with a Swin's head).
pub fn backbone_from_file(file: TensorFile, heads: Option<usize>) -> Result<(BackboneModel, TensorFile), String> {
    let meta = |k: &str| file.metadata.get(k).cloned();
    let swin = match (meta("swin_config"), meta("method").and_then(|m| Method::parse(&m)), meta("config")) {
        (Some(s), _, _) => {
            Some(crate::SwinConfig::from_json(&s).map_err(|e| format!("reading the model's `swin_config`: {e}"))?)
        }
        (None, Some(method), Some(config)) if meta("vit_config").is_none() => {
            RunConfig::from_json(method, &config)?.swin()
        }
        _ => None,
    };
    let Some(cfg) = swin else {
        let (vm, file) = vit_from_file(file, heads)?;
        return Ok((BackboneModel::Vit(vm), file));
    };
    let mut file = file;
    let names: Vec<String> = cfg.param_shapes().into_iter().map(|(n, _)| n).collect();
    file.tensors.retain(|k, _| names.contains(k));
    file.check_names(&cfg.param_shapes(), |_| true).map_err(|e| format!("does not fit its Swin config: {e}"))?;
    let norm = match file.metadata.get("normalize") {
        Some(s) => serde_json::from_str(s).map_err(|e| format!("reading the model's `normalize` metadata: {e}"))?,
        None => Normalize::imagenet(cfg.in_chans),
    };
    Ok((BackboneModel::Swin(cfg, norm), file))
}

/// Take MAE's decoder, mask token and any optimiser moments out of `file`; their names.
fn drop_mae_decoder(file: &mut TensorFile) -> Vec<String> {
    let decoder = |k: &str| k.starts_with("decoder_") || k == "mask_token" || k.starts_with("opt.");
    let gone: Vec<String> = file.tensors.keys().filter(|k| decoder(k)).cloned().collect();
    file.tensors.retain(|k, _| !decoder(k));
    gone
}

/// The prefix in front of a backbone's timm names: "" for a plain state dict, else the one
/// before some `…patch_embed.proj.weight`, a teacher's first (DINO visualises the teacher).
fn backbone_prefix(file: &TensorFile) -> String {
    const KEY: &str = "patch_embed.proj.weight";
    if file.tensors.contains_key(KEY) {
        return String::new();
    }
    let mut found: Vec<&str> = file.tensors.keys().filter_map(|k| k.strip_suffix(KEY)).collect();
    found.sort_by_key(|p| (!p.contains("teacher"), p.len()));
    found.first().map(|p| p.to_string()).unwrap_or_default()
}

/// `file` with `prefix` taken off the names under it; the others, left out, are returned.
fn strip_prefix(mut file: TensorFile, prefix: &str) -> (TensorFile, Vec<String>) {
    if prefix.is_empty() {
        return (file, Vec::new());
    }
    let all = std::mem::take(&mut file.tensors);
    let mut ignored = Vec::new();
    for (name, t) in all {
        match name.strip_prefix(prefix) {
            Some(rest) => {
                file.tensors.insert(rest.to_string(), t);
            }
            None => ignored.push(name),
        }
    }
    (file, ignored)
}

/// A timm ViT's config from its tensors' shapes: `patch_embed.proj.weight [D, C, p, p]`,
/// `pos_embed [1, 1 + R + g², D]` (so `img_size = g·p`; `R` registers from `reg_token`), depth from the highest `blocks.N.`,
/// the MLP width from `blocks.0.mlp.fc1.weight`, the qkv bias, a head and `fc_norm` (mean
/// pooling) by presence. Heads cannot be seen in the shapes: `heads`, else the official
/// count for the width ([`default_heads`]: 64-wide heads, 16 for ViT-H's 1280).
/// Returns the config and where its head count came from.
pub fn infer_vit_config(file: &TensorFile, heads: Option<usize>) -> Result<(VitConfig, &'static str), String> {
    let shape = |name: &str| file.tensors.get(name).map(|t| t.shape.as_slice());
    let Some(&[d, c, p, p2]) = shape("patch_embed.proj.weight") else {
        let names: Vec<&str> = file.tensors.keys().take(5).map(|s| s.as_str()).collect();
        return Err(format!(
            "no `patch_embed.proj.weight` of shape [embed_dim, in_chans, patch, patch], and no `vit_config` or \
             `method` metadata: not a timm-named ViT (its first tensors: {})",
            names.join(", ")
        ));
    };
    if p != p2 {
        return Err(format!("patches of {p}×{p2} pixels: only square patches are supported"));
    }
    let regs = match shape("reg_token") {
        None => 0,
        Some(&[1, r, dd]) if dd == d => r,
        Some(s) => return Err(format!("`reg_token` should have shape [1, registers, {d}], found {s:?}")),
    };
    let n = match shape("pos_embed") {
        Some(&[1, n, dd]) if dd == d => n,
        other => return Err(format!("`pos_embed` should have shape [1, 1 + {regs} + grid², {d}], found {other:?}")),
    };
    let cells = n.saturating_sub(1 + regs);
    let g = (1..=cells).find(|g| g * g >= cells).unwrap_or(0);
    if cells == 0 || g * g != cells {
        return Err(format!(
            "`pos_embed` has {n} rows, not a class token, {regs} registers and a square grid \
             (models without class-token and register positions are not supported)"
        ));
    }
    let depth = file
        .tensors
        .keys()
        .filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .ok_or("no `blocks.N.` tensors")?
        + 1;
    let hidden = match shape("blocks.0.mlp.fc1.weight") {
        Some(&[h, dd]) if dd == d && h > 0 => h,
        other => return Err(format!("`blocks.0.mlp.fc1.weight` should have shape [hidden, {d}], found {other:?}")),
    };
    let num_classes = match shape("head.weight") {
        None => 0,
        Some(&[k, dd]) if dd == d => k,
        Some(s) => return Err(format!("`head.weight` should have shape [classes, {d}], found {s:?}")),
    };
    let (num_heads, heads_from) = match heads {
        Some(h) => (h, "as given"),
        None if d.is_multiple_of(64) => (default_heads(d), "as the official models of that width"),
        None => {
            return Err(format!(
                "embed_dim {d} is not a multiple of 64, so the head count cannot be guessed: \
                 give it (`--heads` on the command line) or add `vit_config` metadata"
            ))
        }
    };
    let cfg = VitConfig {
        img_size: [g * p; 2],
        patch_size: p,
        in_chans: c,
        embed_dim: d,
        depth,
        num_heads,
        mlp_ratio: mlp_ratio(d, hidden),
        qkv_bias: file.tensors.contains_key("blocks.0.attn.qkv.bias"),
        num_classes,
        global_pool: if file.tensors.contains_key("fc_norm.weight") { "avg" } else { "token" }.into(),
        reg_tokens: regs,
        ..VitConfig::default()
    };
    cfg.validate().map_err(|e| format!("the inferred config: {e}"))?;
    Ok((cfg, heads_from))
}

/// The f32 ratio whose `(d · ratio) as usize` (timm's int(d · mlp_ratio)) gives `hidden`.
fn mlp_ratio(d: usize, hidden: usize) -> f32 {
    let mut r = hidden as f32 / d as f32;
    for _ in 0..4 {
        if (d as f32 * r) as usize >= hidden {
            break;
        }
        r = f32::from_bits(r.to_bits() + 1);
    }
    r
}

// ---- does attention find the object? ----

/// The patches an object covers: patch `(gy, gx)` is the object's when at least half of its
/// pixels are. `pixels: [h·w]` (h = grid[0]·patch), true on the object.
pub fn object_patches(pixels: &[bool], grid: [usize; 2], patch: usize) -> Vec<bool> {
    let w = grid[1] * patch;
    assert_eq!(pixels.len(), grid[0] * patch * w, "object mask size");
    (0..grid[0] * grid[1])
        .map(|i| {
            let (gy, gx) = (i / grid[1], i % grid[1]);
            let on =
                (0..patch * patch).filter(|k| pixels[(gy * patch + k / patch) * w + gx * patch + k % patch]).count();
            2 * on >= patch * patch
        })
        .collect()
}

/// Intersection over union of two patch masks (1 when both are empty).
pub fn iou(a: &[bool], b: &[bool]) -> f32 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f32 / union as f32
    }
}

/// The baseline "attention" of a model that always looks at the centre: a Gaussian blob on
/// the grid, σ a quarter of each side.
pub fn centred_blob(grid: [usize; 2]) -> Vec<f32> {
    let (cy, cx) = ((grid[0] as f32 - 1.0) / 2.0, (grid[1] as f32 - 1.0) / 2.0);
    let (sy, sx) = ((grid[0] as f32 / 4.0).max(0.5), (grid[1] as f32 / 4.0).max(0.5));
    (0..grid[0] * grid[1])
        .map(|i| {
            let (y, x) = ((i / grid[1]) as f32, (i % grid[1]) as f32);
            (-0.5 * (((y - cy) / sy).powi(2) + ((x - cx) / sx).powi(2))).exp()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::mae::Mae;
    use crate::rng::Rng;
    use crate::weights::Data;
    use crate::{block_on, Cpu};

    fn kept(mask: &[bool]) -> Vec<usize> {
        (0..mask.len()).filter(|i| mask[*i]).collect()
    }

    #[test]
    fn mass_mask_keeps_the_largest_patches_holding_sixty_percent() {
        // sorted ascending: 1/16 1/16 1/8 1/8 1/4 3/8 → cumulative 1/16 1/8 1/4 3/8 5/8 1;
        // DINO keeps cum > 1 − 0.6: the 1/4 and the 3/8, which hold 5/8 of the mass
        let attn = [0.375, 0.0625, 0.125, 0.0625, 0.25, 0.125];
        assert_eq!(kept(&mass_mask(&attn, 0.6)), [0, 4]);
        // unnormalised maps are normalised first, as DINO divides by the sum
        assert_eq!(kept(&mass_mask(&attn.map(|v| v * 7.0), 0.6)), [0, 4]);
        // 70%: cum > 0.3 adds one 1/8, the later in raster order (see the ties test)
        assert_eq!(kept(&mass_mask(&attn, 0.7)), [0, 4, 5]);
        // the largest patch is always kept, even with a tiny mass
        assert_eq!(kept(&mass_mask(&[0.1, 0.7, 0.2], 0.01)), [1]);
        assert_eq!(kept(&mass_mask(&[0.1, 0.7, 0.2], 1.0)), [0, 1, 2]);
    }

    #[test]
    fn mass_mask_breaks_ties_in_raster_order() {
        // all equal, 4 patches: cumulative 0.25 0.5 0.75 1 → the last three in raster order
        assert_eq!(kept(&mass_mask(&[0.25; 4], 0.6)), [1, 2, 3]);
        // 8 patches: 0.125 … 1 → the five with cumulative 0.5 and more
        assert_eq!(kept(&mass_mask(&[3.0; 8], 0.6)), [3, 4, 5, 6, 7]);
        // ties below the peak: of the four 0.125s, the later one completes the mass
        assert_eq!(kept(&mass_mask(&[0.5, 0.125, 0.125, 0.125, 0.125], 0.6)), [0, 4]);
        // no mass at all keeps nothing (DINO's 0/0 compares false)
        assert_eq!(kept(&mass_mask(&[0.0; 3], 0.6)), Vec::<usize>::new());
    }

    /// A map of 2 images × 2 heads on a 1×3 grid with known values.
    fn toy_map() -> AttentionMap {
        let (batch, heads, l) = (2, 2, 3);
        let cls: Vec<f32> = (0..batch * heads * l).map(|i| i as f32).collect();
        let patches: Vec<f32> = (0..batch * heads * l * l).map(|i| 100.0 + i as f32).collect();
        AttentionMap { batch, heads, grid: [1, 3], patches, cls: Some(cls), cls_to_registers: Vec::new() }
    }

    #[test]
    fn cls_maps_take_one_images_heads_and_average_them() {
        let m = cls_maps(&toy_map(), 1, MASS).unwrap();
        // image 1: cls[6..12] = head 0 [6, 7, 8], head 1 [9, 10, 11]
        assert_eq!(m.heads, [vec![6.0, 7.0, 8.0], vec![9.0, 10.0, 11.0]]);
        assert_eq!(m.mean, [7.5, 8.5, 9.5]);
        assert_eq!(m.masks[0], mass_mask(&m.heads[0], MASS));
        assert_eq!(m.mean_mask, mass_mask(&m.mean, MASS));
        assert_eq!(m.grid, [1, 3]);
        let swin_like = AttentionMap { cls: None, ..toy_map() };
        assert!(cls_maps(&swin_like, 0, MASS).is_none());
    }

    #[test]
    fn a_patch_row_is_that_query_patchs_attention_in_every_head() {
        // [batch 2, heads 2, l 3, l 3]: image 1, head h, query 2 starts at ((2 + h)·3 + 2)·3
        let (heads, mean) = patch_row(&toy_map(), 1, 2);
        let row = |h: usize| (0..3).map(|k| 100.0 + (((2 + h) * 3 + 2) * 3 + k) as f32).collect::<Vec<_>>();
        assert_eq!(heads, [row(0), row(1)]);
        assert_eq!(mean, (0..3).map(|k| (row(0)[k] + row(1)[k]) / 2.0).collect::<Vec<_>>());
    }

    #[test]
    fn viridis_runs_from_purple_to_yellow_and_min_max_spans_the_map() {
        let to_u8 = |c: [f32; 3]| c.map(|v| (v * 255.0).round() as u8);
        assert_eq!(to_u8(viridis(0.0)), VIRIDIS[0]);
        assert_eq!(to_u8(viridis(1.0)), VIRIDIS[10]);
        assert_eq!(to_u8(viridis(0.5)), VIRIDIS[5]);
        assert_eq!(to_u8(viridis(-3.0)), VIRIDIS[0]);
        assert_eq!(min_max(&[2.0, 4.0, 3.0]), [0.0, 1.0, 0.5]);
        assert_eq!(min_max(&[1.0; 3]), [0.5; 3]);
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

    #[test]
    fn timm_shapes_give_the_config_back() {
        for cfg in [
            tiny(),
            VitConfig { qkv_bias: false, num_classes: 5, mlp_ratio: 2.5, in_chans: 1, depth: 3, ..tiny() },
            VitConfig { global_pool: "avg".into(), img_size: [24, 24], embed_dim: 128, num_heads: 2, ..tiny() },
        ] {
            let file = vit_file(&cfg);
            let (got, from) = infer_vit_config(&file, Some(cfg.num_heads)).unwrap();
            assert_eq!((&got, from), (&cfg, "as given"));
            // without a count: the official one where the width allows, else a request for one
            match infer_vit_config(&file, None) {
                Ok((got, _)) => assert_eq!(got.num_heads, default_heads(cfg.embed_dim)),
                Err(e) => assert!(cfg.embed_dim % 64 != 0 && e.contains("cannot be guessed"), "{e}"),
            }
        }
        let e = infer_vit_config(&TensorFile::default(), None).unwrap_err();
        assert!(e.contains("not a timm-named ViT"), "{e}");
    }

    #[test]
    fn a_vit_h_width_gets_sixteen_heads() {
        // ViT-H/14's 1280 is 20 × 64 but the official models use 16 heads of 80
        let cfg = VitConfig { embed_dim: 1280, num_heads: 16, depth: 1, mlp_ratio: 0.25, ..tiny() };
        let (got, _) = infer_vit_config(&vit_file(&cfg), None).unwrap();
        assert_eq!(got.num_heads, 16);
    }

    #[test]
    fn an_official_mae_checkpoint_without_metadata_is_read_as_its_encoder() {
        let mae_cfg = MaeConfig {
            img_size: 16,
            patch_size: 4,
            in_chans: 3,
            embed_dim: 64,
            depth: 2,
            num_heads: 1,
            decoder_embed_dim: 16,
            decoder_depth: 1,
            decoder_num_heads: 2,
            ..MaeConfig::default()
        };
        let mae = Mae::init(&Cpu, mae_cfg, 0);
        let mut file = block_on(mae.params.download(&Cpu, ""));
        file.tensors.extend(block_on(mae.fixed.download(&Cpu, "")).tensors);
        let (vit, file) = vit_from_file(file, None).unwrap();
        assert!(vit.source.starts_with("an MAE's encoder, inferred"), "{}", vit.source);
        assert_eq!((vit.cfg.embed_dim, vit.cfg.num_heads, vit.cfg.depth), (64, 1, 2));
        assert!(vit.ignored.iter().all(|k| k.starts_with("decoder_") || k == "mask_token"));
        assert!(!vit.ignored.is_empty() && file.tensors.keys().all(|k| !k.starts_with("decoder")));
    }

    #[test]
    fn every_layers_maps_are_probabilities_over_the_class_token_and_patches() {
        let cfg = tiny();
        let vit = Vit::from_file(&Cpu, cfg.clone(), &vit_file(&cfg)).unwrap();
        let mut rng = Rng::new(1);
        let x: Vec<f32> = (0..3 * 16 * 16).map(|_| rng.normal()).collect();
        let maps = block_on(all_layers(&Cpu, &vit, &x));
        assert_eq!(maps.len(), 2);
        assert_ne!(maps[0], maps[1]);
        for map in &maps {
            let m = cls_maps(map, 0, MASS).unwrap();
            for h in &m.heads {
                let s: f32 = h.iter().sum();
                assert!(s > 0.0 && s < 1.0, "CLS → patches sums to {s}");
            }
            for q in 0..16 {
                let (heads, _) = patch_row(map, 0, q);
                for h in &heads {
                    let s: f32 = h.iter().sum();
                    assert!(s > 0.0 && s < 1.0 + 1e-6, "patch {q} → patches sums to {s}");
                }
            }
        }
    }

    #[test]
    fn object_patches_iou_and_the_centre_blob() {
        // a 4×4 image in 2×2 patches, the object the left column of patches plus one pixel
        let mut px = vec![false; 16];
        for y in 0..4 {
            px[y * 4] = true;
            px[y * 4 + 1] = true;
        }
        px[2 * 4 + 3] = true;
        assert_eq!(object_patches(&px, [2, 2], 2), [true, false, true, false]);
        assert_eq!(iou(&[true, false, true, false], &[true, true, false, false]), 1.0 / 3.0);
        assert_eq!(iou(&[false; 4], &[false; 4]), 1.0);
        let blob = centred_blob([5, 5]);
        assert_eq!((0..25).max_by(|a, b| blob[*a].total_cmp(&blob[*b])), Some(12));
        let m = mass_mask(&blob, MASS);
        assert!(m[12] && !m[0] && !m[24], "{m:?}");
    }
}
