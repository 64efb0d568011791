//! Reading a model file the way every face of Patchwork does (CLI, app): its method,
//! config and input normalisation from the safetensors `__metadata__` that `patchwork
//! train` writes, or — for an official checkpoint saved as safetensors with no metadata
//! (`save_file(torch.load(p)["model"], out)`) — a config read off the tensors' shapes.
use serde::{Deserialize, Serialize};

use crate::methods::mae::MaeConfig;
use crate::weights::{TensorFile, WeightsError};

/// Per-channel `x = (pixel − mean) / std` of pixels in [0, 1], as the model was trained;
/// stored in model metadata as `normalize`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// The usual Fashion-MNIST statistics of the 60 000 training images.
    pub fn fashion_mnist() -> Self {
        Normalize { mean: vec![0.2860], std: vec![0.3530] }
    }
    /// ImageNet's, for photos (their grey-level average for one channel).
    pub fn imagenet(channels: usize) -> Self {
        if channels == 1 {
            Normalize { mean: vec![0.449], std: vec![0.226] }
        } else {
            Normalize { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
        }
    }
    pub fn apply(&self, c: usize, pixel: f32) -> f32 {
        (pixel - self.mean[c]) / self.std[c]
    }
    pub fn undo(&self, c: usize, x: f32) -> f32 {
        x * self.std[c] + self.mean[c]
    }
}

fn config_err(m: String) -> WeightsError {
    WeightsError::Config(m)
}

/// A shape of `file`'s tensor, or an error naming it.
fn shape<'a>(file: &'a TensorFile, name: &str) -> Result<&'a [usize], WeightsError> {
    file.tensors.get(name).map(|t| t.shape.as_slice()).ok_or_else(|| config_err(format!("no tensor `{name}`")))
}

/// Number of `prefix{i}.` blocks (the highest index + 1).
fn count_blocks(file: &TensorFile, prefix: &str) -> usize {
    file.tensors
        .keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// Attention heads the official ViTs use for a width: 64-wide heads (ViT-S/B/L), 16 for
/// ViT-H's 1280.
pub fn default_heads(width: usize) -> usize {
    if width == 1280 {
        16
    } else {
        (width / 64).max(1)
    }
}

impl MaeConfig {
    /// The config of an official MAE checkpoint (facebookresearch/mae `models_mae.py`
    /// names) from its shapes: sizes from `patch_embed`, `pos_embed`, the block counts and
    /// `decoder_*`; heads as the official models have them (64-wide in the encoder,
    /// 16 in the decoder); `norm_pix_loss` off (the released visualisation models regress
    /// pixels); mask ratio 0.75.
    pub fn infer(file: &TensorFile) -> Result<Self, WeightsError> {
        let pe = shape(file, "patch_embed.proj.weight")?;
        if pe.len() != 4 || pe[2] != pe[3] {
            return Err(config_err(format!("patch_embed.proj.weight has shape {pe:?}, not [D, C, p, p]")));
        }
        let (embed_dim, in_chans, patch_size) = (pe[0], pe[1], pe[2]);
        let pos = shape(file, "pos_embed")?;
        let tokens = pos.get(1).copied().unwrap_or(0);
        let grid = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
        if grid * grid + 1 != tokens {
            return Err(config_err(format!("pos_embed {pos:?} is not 1 + a square grid of tokens")));
        }
        let dec = shape(file, "decoder_embed.weight").map_err(|_| {
            config_err("no decoder (`decoder_embed.weight`): an encoder-only checkpoint cannot reconstruct".into())
        })?;
        let fc1 = shape(file, "blocks.0.mlp.fc1.weight")?;
        let cfg = MaeConfig {
            img_size: grid * patch_size,
            patch_size,
            in_chans,
            embed_dim,
            depth: count_blocks(file, "blocks."),
            num_heads: default_heads(embed_dim),
            decoder_embed_dim: dec[0],
            decoder_depth: count_blocks(file, "decoder_blocks."),
            decoder_num_heads: 16.min(dec[0]).max(1),
            mlp_ratio: fc1[0] as f32 / embed_dim as f32,
            norm_pix_loss: false,
            mask_ratio: 0.75,
            norm_eps: 1e-6,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// An MAE ready to reconstruct: weights, config and input normalisation.
#[derive(Clone)]
pub struct MaeModel {
    pub file: TensorFile,
    pub cfg: MaeConfig,
    pub norm: Normalize,
    /// Whether the config was read off the shapes (no metadata).
    pub inferred: bool,
}

impl MaeModel {
    /// A `patchwork train` MAE (metadata `method` = "mae", `config`, `normalize`), or an
    /// official MAE checkpoint with no metadata. Optimiser state (`opt.*`) is dropped.
    pub fn from_file(mut file: TensorFile) -> Result<Self, WeightsError> {
        let (cfg, inferred) = match (file.metadata.get("method").map(String::as_str), file.metadata.get("config")) {
            (Some("mae"), Some(c)) => (MaeConfig::from_json(c)?, false),
            (Some("mae"), None) => return Err(config_err("an MAE file without `config` metadata".into())),
            (Some(other), _) => return Err(config_err(format!("a {other} model; reconstruction needs an MAE"))),
            (None, _) => (MaeConfig::infer(&file)?, true),
        };
        let norm = match file.metadata.get("normalize") {
            Some(s) => serde_json::from_str(s).map_err(|e| config_err(format!("bad `normalize` metadata: {e}")))?,
            None => Normalize::imagenet(cfg.in_chans),
        };
        if norm.mean.len() != cfg.in_chans || norm.std.len() != cfg.in_chans {
            return Err(config_err(format!(
                "the normalisation has {} channel(s), the config {}",
                norm.mean.len(),
                cfg.in_chans
            )));
        }
        file.tensors.retain(|k, _| !k.starts_with("opt."));
        let mut shapes = cfg.param_shapes();
        shapes.extend(cfg.fixed_shapes());
        file.check_names_optional(&shapes, &[], |_| true)?;
        Ok(MaeModel { file, cfg, norm, inferred })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::mae::Mae;
    use crate::Cpu;

    fn official_like(cfg: &MaeConfig) -> TensorFile {
        let mae = Mae::init(&Cpu, cfg.clone(), 0);
        let mut file = crate::block_on(mae.params.download(&Cpu, ""));
        file.tensors.extend(crate::block_on(mae.fixed.download(&Cpu, "")).tensors);
        file
    }

    #[test]
    fn an_official_checkpoint_without_metadata_gets_its_config_from_shapes() {
        let cfg = MaeConfig {
            img_size: 32,
            patch_size: 8,
            in_chans: 3,
            embed_dim: 128,
            depth: 3,
            num_heads: 2,
            decoder_embed_dim: 32,
            decoder_depth: 2,
            decoder_num_heads: 16,
            mlp_ratio: 4.0,
            ..MaeConfig::default()
        };
        let m = MaeModel::from_file(official_like(&cfg)).unwrap();
        assert!(m.inferred);
        assert_eq!(m.cfg, MaeConfig { num_heads: 2, ..cfg.clone() });
        assert_eq!(m.norm, Normalize::imagenet(3));
        // an encoder-only checkpoint is refused by name
        let mut enc = official_like(&cfg);
        enc.tensors.retain(|k, _| !k.starts_with("decoder") && k != "mask_token");
        let e = MaeModel::from_file(enc).err().unwrap().to_string();
        assert!(e.contains("encoder-only"), "{e}");
        // a DINO model is refused with its method
        let mut dino = official_like(&cfg);
        dino.metadata.insert("method".into(), "dino".into());
        assert!(MaeModel::from_file(dino).err().unwrap().to_string().contains("a dino model"));
        // a missing tensor is named
        let mut cut = official_like(&cfg);
        cut.tensors.remove("decoder_blocks.1.attn.proj.weight");
        let e = MaeModel::from_file(cut).err().unwrap().to_string();
        assert!(e.contains("decoder_blocks.1.attn.proj.weight"), "{e}");
    }

    #[test]
    fn official_widths_get_official_heads() {
        assert_eq!((default_heads(384), default_heads(768), default_heads(1024), default_heads(1280)), (6, 12, 16, 16));
    }
}
