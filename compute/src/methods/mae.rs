//! MAE — masked autoencoders (He et al. 2021), as facebookresearch/mae `models_mae.py`:
//! ```text
//! x      = patch_embed(imgs) + pos_embed[1:]          # fixed 2-D sin-cos
//! x, mask, ids_restore = random_masking(x, ratio)     # argsort of per-sample noise
//! x      = norm(blocks(cat(cls + pos_embed[0], x)))   # encoder sees visible patches only
//! x      = decoder_embed(x)
//! x      = unshuffle(cat(x, mask_tokens), ids_restore) + decoder_pos_embed
//! pred   = decoder_pred(decoder_norm(decoder_blocks(x)))[:, 1:]
//! target = patchify(imgs)            # (p, p, c) order; per-patch normalised if norm_pix_loss
//! loss   = (((pred - target)**2).mean(-1) * mask).sum() / mask.sum()
//! ```
//! Masks are drawn on the CPU from the noise and uploaded as row-index maps; the gathers
//! (`random_masking`'s keep, the decoder's unshuffle) and everything else run on the
//! backend. The two maps are each other's inverse, so every backward gather is a gather
//! too — no scatter with colliding writes.
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Matmul, PatchOrder, Strides, NO_ROW};
use crate::layers::{LayerNorm, Linear, NormSaved};
use crate::params::Params;
use crate::rng::Rng;
use crate::transformer::{backward_blocks, block_param_shapes, forward_blocks, layernorm, linear, Block, BlockSaved};
use crate::weights::{TensorFile, WeightsError};

/// `MaskedAutoencoderViT`'s constructor arguments, with the training mask ratio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaeConfig {
    pub img_size: usize,
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub decoder_embed_dim: usize,
    pub decoder_depth: usize,
    pub decoder_num_heads: usize,
    pub mlp_ratio: f32,
    pub norm_pix_loss: bool,
    pub mask_ratio: f64,
    /// LayerNorm eps (the official factories pass `partial(nn.LayerNorm, eps=1e-6)`).
    pub norm_eps: f32,
}

impl Default for MaeConfig {
    /// `mae_vit_base_patch16_dec512d8b`.
    fn default() -> Self {
        MaeConfig {
            img_size: 224,
            patch_size: 16,
            in_chans: 3,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            decoder_embed_dim: 512,
            decoder_depth: 8,
            decoder_num_heads: 16,
            mlp_ratio: 4.0,
            norm_pix_loss: false,
            mask_ratio: 0.75,
            norm_eps: 1e-6,
        }
    }
}

impl MaeConfig {
    pub fn from_json(s: &str) -> Result<Self, WeightsError> {
        let cfg: MaeConfig = serde_json::from_str(s).map_err(|e| WeightsError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), WeightsError> {
        let bad = |m: String| Err(WeightsError::Config(m));
        if self.patch_size == 0 || !self.img_size.is_multiple_of(self.patch_size) {
            return bad(format!("img_size {} is not a multiple of patch_size {}", self.img_size, self.patch_size));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads));
        }
        if self.decoder_num_heads == 0 || !self.decoder_embed_dim.is_multiple_of(self.decoder_num_heads) {
            return bad(format!(
                "decoder_embed_dim {} is not divisible by decoder_num_heads {}",
                self.decoder_embed_dim, self.decoder_num_heads
            ));
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return bad(format!("mask_ratio {} must be in [0, 1)", self.mask_ratio));
        }
        Ok(())
    }

    pub fn grid(&self) -> usize {
        self.img_size / self.patch_size
    }
    /// Patches per image, `L`.
    pub fn patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Values per patch, `p·p·c`.
    pub fn patch_len(&self) -> usize {
        self.patch_size * self.patch_size * self.in_chans
    }
    fn hidden(&self, dim: usize) -> usize {
        (dim as f32 * self.mlp_ratio) as usize
    }

    /// Trainable parameters, official names, `state_dict()` order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, dd) = (self.embed_dim, self.decoder_embed_dim);
        let mut v: Vec<(String, Vec<usize>)> = vec![
            ("cls_token".into(), vec![1, 1, d]),
            ("patch_embed.proj.weight".into(), vec![d, self.in_chans, self.patch_size, self.patch_size]),
            ("patch_embed.proj.bias".into(), vec![d]),
        ];
        for i in 0..self.depth {
            v.extend(block_param_shapes(&format!("blocks.{i}."), d, self.hidden(d), true));
        }
        v.push(("norm.weight".into(), vec![d]));
        v.push(("norm.bias".into(), vec![d]));
        v.push(("mask_token".into(), vec![1, 1, dd]));
        v.push(("decoder_embed.weight".into(), vec![dd, d]));
        v.push(("decoder_embed.bias".into(), vec![dd]));
        for i in 0..self.decoder_depth {
            v.extend(block_param_shapes(&format!("decoder_blocks.{i}."), dd, self.hidden(dd), true));
        }
        v.push(("decoder_norm.weight".into(), vec![dd]));
        v.push(("decoder_norm.bias".into(), vec![dd]));
        v.push(("decoder_pred.weight".into(), vec![self.patch_len(), dd]));
        v.push(("decoder_pred.bias".into(), vec![self.patch_len()]));
        v
    }

    /// The fixed sin-cos position embeddings (`requires_grad=False` in the official code).
    pub fn fixed_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let l = self.patches();
        vec![
            ("pos_embed".into(), vec![1, l + 1, self.embed_dim]),
            ("decoder_pos_embed".into(), vec![1, l + 1, self.decoder_embed_dim]),
        ]
    }

    /// Matmul FLOPs of one training step at `batch` (forward + backward, no image grad).
    pub fn train_step_matmul_flops(&self, batch: usize) -> f64 {
        let (l, d, dd, e) = (self.patches(), self.embed_dim, self.decoder_embed_dim, self.patch_len());
        let keep = self.keep();
        let block = |n: usize, dim: usize| {
            let hid = self.hidden(dim);
            n * (3 * dim * dim + dim * dim + 2 * dim * hid) + 2 * n * n * dim
        };
        let enc = l * e * d + self.depth * block(keep + 1, d);
        let dec = (keep + 1) * d * dd + self.decoder_depth * block(l + 1, dd) + (l + 1) * dd * e;
        // backward: 2× everything but the patch embedding's input gradient
        2.0 * batch as f64 * (3 * (enc + dec) - l * e * d) as f64
    }

    /// Patches kept visible, `int(L · (1 − mask_ratio))` as the official code.
    pub fn keep(&self) -> usize {
        (self.patches() as f64 * (1.0 - self.mask_ratio)) as usize
    }
}

/// `get_2d_sincos_pos_embed(dim, grid, cls_token=True)`: `[1 + grid², dim]`, first row 0;
/// half the channels encode the column (w), half the row (h), each as sin | cos of
/// `pos · 1/10000^(2i/(dim/2))`.
pub fn sincos_pos_embed(dim: usize, grid: usize) -> Vec<f32> {
    assert!(dim.is_multiple_of(4), "sin-cos position embeddings need dim divisible by 4");
    let quarter = dim / 4;
    let mut out = vec![0.0f32; (1 + grid * grid) * dim];
    for h in 0..grid {
        for w in 0..grid {
            let row = &mut out[(1 + h * grid + w) * dim..][..dim];
            // the official code meshes (w, h) and encodes emb_h from grid[0] = w first
            for (half, pos) in [(0, w as f64), (1, h as f64)] {
                for i in 0..quarter {
                    let omega = 1.0 / 10000f64.powf(i as f64 / quarter as f64);
                    let base = half * 2 * quarter;
                    row[base + i] = (pos * omega).sin() as f32;
                    row[base + quarter + i] = (pos * omega).cos() as f32;
                }
            }
        }
    }
    out
}

/// The masking of one batch, drawn on the CPU: which patches each image keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Masking {
    pub batch: usize,
    pub patches: usize,
    pub keep: usize,
    /// `[batch, L]`: 0 keep, 1 remove.
    pub mask: Vec<f32>,
    /// `[batch, L]`: `argsort(argsort(noise))`.
    pub ids_restore: Vec<usize>,
    /// `[batch, keep]`: the kept patches, in noise order.
    pub ids_keep: Vec<usize>,
}

impl Masking {
    /// `random_masking` from given noise `[batch, L]`: ascending noise is kept.
    pub fn from_noise(noise: &[f32], batch: usize, patches: usize, keep: usize) -> Self {
        let (mut mask, mut ids_restore, mut ids_keep) =
            (vec![1.0; batch * patches], vec![0; batch * patches], Vec::with_capacity(batch * keep));
        for b in 0..batch {
            let row = &noise[b * patches..(b + 1) * patches];
            let mut order: Vec<usize> = (0..patches).collect();
            // torch.argsort is not stable, but ties in continuous noise do not occur
            order.sort_by(|&i, &j| row[i].partial_cmp(&row[j]).unwrap().then(i.cmp(&j)));
            for (rank, &p) in order.iter().enumerate() {
                ids_restore[b * patches + p] = rank;
                if rank < keep {
                    mask[b * patches + p] = 0.0;
                }
            }
            ids_keep.extend_from_slice(&order[..keep]);
        }
        Masking { batch, patches, keep, mask, ids_restore, ids_keep }
    }

    /// Uniform noise from a seeded generator, as `torch.rand` would give.
    pub fn random(rng: &mut Rng, batch: usize, patches: usize, keep: usize) -> Self {
        let noise: Vec<f32> = (0..batch * patches).map(|_| rng.uniform()).collect();
        Self::from_noise(&noise, batch, patches, keep)
    }

    /// Rows of the full `[batch, 1 + L]` token grid the encoder keeps (class token first):
    /// the gather of `random_masking`, and the backward of the decoder's unshuffle.
    fn keep_rows(&self) -> Vec<u32> {
        let (l, k) = (self.patches, self.keep);
        let mut idx = Vec::with_capacity(self.batch * (1 + k));
        for b in 0..self.batch {
            idx.push((b * (1 + l)) as u32);
            idx.extend(self.ids_keep[b * k..(b + 1) * k].iter().map(|p| (b * (1 + l) + 1 + p) as u32));
        }
        idx
    }

    /// For each row of the full grid, its row among the kept `[batch, 1 + keep]` tokens or
    /// [`NO_ROW`] for a masked patch: the decoder's unshuffle, and the backward of the
    /// encoder's gather.
    fn restore_rows(&self) -> Vec<u32> {
        let (l, k) = (self.patches, self.keep);
        let mut idx = Vec::with_capacity(self.batch * (1 + l));
        for b in 0..self.batch {
            idx.push((b * (1 + k)) as u32);
            for p in 0..l {
                let r = self.ids_restore[b * l + p];
                idx.push(if r < k { (b * (1 + k) + 1 + r) as u32 } else { NO_ROW });
            }
        }
        idx
    }
}

/// Row maps between `[batch, 1 + L]` (with class token) and `[batch, L]` (without).
fn drop_cls_rows(batch: usize, l: usize) -> Vec<u32> {
    (0..batch).flat_map(|b| (0..l).map(move |p| (b * (1 + l) + 1 + p) as u32)).collect()
}
fn add_cls_rows(batch: usize, l: usize) -> Vec<u32> {
    (0..batch).flat_map(|b| std::iter::once(NO_ROW).chain((0..l).map(move |p| (b * l + p) as u32))).collect()
}

struct Parts<B: Backend> {
    cls: B::Buf,
    pos: B::Buf,
    patch: Linear<B>,
    blocks: Vec<Block<B>>,
    norm: LayerNorm<B>,
    mask_token: B::Buf,
    decoder_embed: Linear<B>,
    decoder_pos: B::Buf,
    decoder_blocks: Vec<Block<B>>,
    decoder_norm: LayerNorm<B>,
    decoder_pred: Linear<B>,
}

impl<B: Backend> Parts<B> {
    fn bind(cfg: &MaeConfig, p: &Params<B>, fixed: &Params<B>) -> Self {
        let (d, dd) = (cfg.embed_dim, cfg.decoder_embed_dim);
        Parts {
            cls: p.get("cls_token").clone(),
            pos: fixed.get("pos_embed").clone(),
            patch: linear(p, "patch_embed.proj", cfg.patch_len(), d, true),
            blocks: (0..cfg.depth)
                .map(|i| Block::bind(p, &format!("blocks.{i}."), d, cfg.hidden(d), cfg.num_heads, true))
                .collect(),
            norm: layernorm(p, "norm", d, cfg.norm_eps),
            mask_token: p.get("mask_token").clone(),
            decoder_embed: linear(p, "decoder_embed", d, dd, true),
            decoder_pos: fixed.get("decoder_pos_embed").clone(),
            decoder_blocks: (0..cfg.decoder_depth)
                .map(|i| {
                    Block::bind(p, &format!("decoder_blocks.{i}."), dd, cfg.hidden(dd), cfg.decoder_num_heads, true)
                })
                .collect(),
            decoder_norm: layernorm(p, "decoder_norm", dd, cfg.norm_eps),
            decoder_pred: linear(p, "decoder_pred", dd, cfg.patch_len(), true),
        }
    }
}

/// A forward pass: outputs and what backward needs.
pub struct MaeForward<B: Backend> {
    pub masking: Masking,
    patches: B::Buf,
    keep_rows: B::Buf,
    restore_rows: B::Buf,
    enc_blocks: Vec<BlockSaved<B>>,
    enc_out: B::Buf,
    norm_saved: NormSaved<B>,
    /// Encoder output after `norm`, `[batch, 1 + keep, dim]`.
    pub latent: B::Buf,
    dec_blocks: Vec<BlockSaved<B>>,
    dec_out: B::Buf,
    dec_norm_saved: NormSaved<B>,
    dec_normed: B::Buf,
    /// `[batch, L, p·p·c]`, in the (normalised, if `norm_pix_loss`) pixel space of targets.
    pub pred: B::Buf,
    pub target: B::Buf,
    /// Per-patch MSE `[batch, L]`.
    pub losses: B::Buf,
}

pub struct Mae<B: Backend> {
    pub cfg: MaeConfig,
    /// Trainable parameters.
    pub params: Params<B>,
    /// `pos_embed`, `decoder_pos_embed`: fixed sin-cos tables.
    pub fixed: Params<B>,
}

impl<B: Backend> Mae<B> {
    fn fixed_params(be: &B, cfg: &MaeConfig) -> Params<B> {
        let mut fixed = Params::new();
        for ((name, shape), dim) in cfg.fixed_shapes().into_iter().zip([cfg.embed_dim, cfg.decoder_embed_dim]) {
            fixed.push(name, shape, be.upload(&sincos_pos_embed(dim, cfg.grid())));
        }
        fixed
    }

    /// `initialize_weights`: xavier-uniform linear weights (and the patch embedding seen
    /// as a linear layer), normal(0.02) class and mask tokens, zero biases, unit norms.
    pub fn init(be: &B, cfg: MaeConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut params = Params::new();
        for (name, shape) in cfg.param_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name == "cls_token" || name == "mask_token" {
                (0..n).map(|_| rng.normal() * 0.02).collect()
            } else if name.ends_with("weight") && shape.len() >= 2 {
                let (fan_out, fan_in) = (shape[0], n / shape[0]);
                let bound = (6.0 / (fan_in + fan_out) as f32).sqrt();
                (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect()
            } else if name.contains("norm") && name.ends_with("weight") {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            };
            params.push(name, shape, be.upload(&values));
        }
        let fixed = Self::fixed_params(be, &cfg);
        Mae { cfg, params, fixed }
    }

    /// Load official names (fixed position embeddings are recomputed, and checked when
    /// the file has them).
    pub fn from_file(be: &B, cfg: MaeConfig, file: &TensorFile) -> Result<Self, WeightsError> {
        cfg.validate()?;
        let params = Params::load(be, &cfg.param_shapes(), &cfg.fixed_shapes(), file)?;
        Ok(Mae { fixed: Self::fixed_params(be, &cfg), cfg, params })
    }

    /// `imgs: [batch, c, h, w]`, masked as `masking` says.
    pub fn forward(&self, be: &B, imgs: &B::Buf, masking: Masking) -> MaeForward<B> {
        let cfg = &self.cfg;
        let w = Parts::bind(cfg, &self.params, &self.fixed);
        let (batch, l, k) = (masking.batch, cfg.patches(), masking.keep);
        let (d, dd, e, s) = (cfg.embed_dim, cfg.decoder_embed_dim, cfg.patch_len(), cfg.img_size);
        let keep_rows = be.upload_u32(&masking.keep_rows());
        let restore_rows = be.upload_u32(&masking.restore_rows());

        // encoder on the visible patches (+ class token)
        let patches = be.alloc(batch * l * e);
        be.patchify_forward(imgs, &patches, batch, cfg.in_chans, s, s, cfg.patch_size, PatchOrder::ChannelFirst);
        let embedded = be.alloc(batch * l * d);
        w.patch.forward(be, &patches, &embedded, batch * l);
        let full = be.alloc(batch * (1 + l) * d);
        be.cls_pos_forward(&embedded, &w.cls, &w.pos, &full, batch, l, d);
        let visible = be.alloc(batch * (1 + k) * d);
        be.gather_rows(&full, &keep_rows, None, &visible, batch * (1 + k), d);
        let (enc_blocks, enc_out) = forward_blocks(be, &w.blocks, visible, batch, 1 + k);
        let latent = be.alloc(batch * (1 + k) * d);
        let norm_saved = w.norm.forward(be, &enc_out, &latent, batch * (1 + k));

        // decoder on all patches: mask tokens where patches were removed
        let dec_kept = be.alloc(batch * (1 + k) * dd);
        w.decoder_embed.forward(be, &latent, &dec_kept, batch * (1 + k));
        let dec_in = be.alloc(batch * (1 + l) * dd);
        be.gather_rows(&dec_kept, &restore_rows, Some(&w.mask_token), &dec_in, batch * (1 + l), dd);
        be.add_pos(&dec_in, &w.decoder_pos, batch, 1 + l, dd);
        let (dec_blocks, dec_out) = forward_blocks(be, &w.decoder_blocks, dec_in, batch, 1 + l);
        let dec_normed = be.alloc(batch * (1 + l) * dd);
        let dec_norm_saved = w.decoder_norm.forward(be, &dec_out, &dec_normed, batch * (1 + l));
        let pred_full = be.alloc(batch * (1 + l) * e);
        w.decoder_pred.forward(be, &dec_normed, &pred_full, batch * (1 + l));
        let pred = be.alloc(batch * l * e);
        be.gather_rows(&pred_full, &be.upload_u32(&drop_cls_rows(batch, l)), None, &pred, batch * l, e);

        // loss per patch against (normalised) pixels
        let target = be.alloc(batch * l * e);
        be.patchify_forward(imgs, &target, batch, cfg.in_chans, s, s, cfg.patch_size, PatchOrder::ChannelLast);
        let target = if cfg.norm_pix_loss { self.normalise_patches(be, &target, batch * l) } else { target };
        let losses = be.alloc(batch * l);
        be.mse_forward(&pred, &target, &losses, batch * l, e);
        MaeForward {
            masking,
            patches,
            keep_rows,
            restore_rows,
            enc_blocks,
            enc_out,
            norm_saved,
            latent,
            dec_blocks,
            dec_out,
            dec_norm_saved,
            dec_normed,
            pred,
            target,
            losses,
        }
    }

    /// `(t − mean) / sqrt(var + 1e-6)` per patch with torch's unbiased `var`. LayerNorm
    /// divides by the biased variance; with `n` values, `var_u = var_b · n/(n−1)`, so the
    /// same result is LayerNorm with eps `1e-6·(n−1)/n`, scaled by `sqrt((n−1)/n)`.
    fn normalise_patches(&self, be: &B, target: &B::Buf, rows: usize) -> B::Buf {
        let n = self.cfg.patch_len() as f32;
        let c = (n - 1.0) / n;
        let out = be.alloc(rows * self.cfg.patch_len());
        let (weight, bias) = (be.upload(&vec![c.sqrt(); n as usize]), be.alloc(n as usize));
        let (mean, rstd) = (be.alloc(rows), be.alloc(rows));
        be.layernorm_forward(target, &weight, &bias, &out, &mean, &rstd, rows, n as usize, 1e-6 * c);
        out
    }

    /// The loss weights per patch: `mask / Σ mask`.
    pub fn loss_weights(masking: &Masking) -> Vec<f32> {
        let total: f32 = masking.mask.iter().sum();
        masking.mask.iter().map(|m| if total > 0.0 { m / total } else { 0.0 }).collect()
    }

    /// `Σ mask·loss / Σ mask` from the per-patch losses.
    pub fn loss(masking: &Masking, losses: &[f32]) -> f64 {
        Self::loss_weights(masking).iter().zip(losses).map(|(w, l)| *w as f64 * *l as f64).sum()
    }

    /// Backward of the loss into `grads` (same names as `params`).
    pub fn backward(&self, be: &B, fwd: &MaeForward<B>, grads: &Params<B>) {
        let cfg = &self.cfg;
        let (w, g) = (Parts::bind(cfg, &self.params, &self.fixed), Parts::bind(cfg, grads, &self.fixed));
        let m = &fwd.masking;
        let (batch, l, k) = (m.batch, cfg.patches(), m.keep);
        let (d, dd, e) = (cfg.embed_dim, cfg.decoder_embed_dim, cfg.patch_len());

        let dpred = be.alloc(batch * l * e);
        be.mse_backward(&be.upload(&Self::loss_weights(m)), &fwd.pred, &fwd.target, &dpred, batch * l, e);
        let dpred_full = be.alloc(batch * (1 + l) * e);
        be.gather_rows(&dpred, &be.upload_u32(&add_cls_rows(batch, l)), None, &dpred_full, batch * (1 + l), e);
        let ddec_normed = be.alloc(batch * (1 + l) * dd);
        w.decoder_pred.backward(be, &dpred_full, &fwd.dec_normed, &g.decoder_pred, Some(&ddec_normed), batch * (1 + l));
        let ddec = be.alloc(batch * (1 + l) * dd);
        w.decoder_norm.backward(
            be,
            &ddec_normed,
            &fwd.dec_norm_saved,
            &fwd.dec_out,
            &g.decoder_norm,
            &ddec,
            batch * (1 + l),
        );
        backward_blocks(be, &w.decoder_blocks, &g.decoder_blocks, &fwd.dec_blocks, &ddec, batch, 1 + l);

        // unshuffle backward: kept rows gather back; the mask token sums the masked rows
        let ddec_kept = be.alloc(batch * (1 + k) * dd);
        be.gather_rows(&ddec, &fwd.keep_rows, None, &ddec_kept, batch * (1 + k), dd);
        let masked: Vec<f32> =
            (0..batch).flat_map(|b| std::iter::once(0.0).chain(m.mask[b * l..(b + 1) * l].iter().copied())).collect();
        let sum_masked =
            Matmul { a: Strides::row_major(batch * (1 + l)), beta: 1.0, ..Matmul::plain(1, dd, batch * (1 + l)) };
        be.matmul(&sum_masked, &be.upload(&masked), &ddec, None, &g.mask_token);

        let dlatent = be.alloc(batch * (1 + k) * d);
        w.decoder_embed.backward(be, &ddec_kept, &fwd.latent, &g.decoder_embed, Some(&dlatent), batch * (1 + k));
        let denc = be.alloc(batch * (1 + k) * d);
        w.norm.backward(be, &dlatent, &fwd.norm_saved, &fwd.enc_out, &g.norm, &denc, batch * (1 + k));
        backward_blocks(be, &w.blocks, &g.blocks, &fwd.enc_blocks, &denc, batch, 1 + k);

        // masking backward: removed patches get no gradient
        let dfull = be.alloc(batch * (1 + l) * d);
        be.gather_rows(&denc, &fwd.restore_rows, None, &dfull, batch * (1 + l), d);
        let dembedded = be.alloc(batch * l * d);
        be.cls_pos_backward(&dfull, &dembedded, &g.cls, None, batch, l, d);
        w.patch.backward(be, &dembedded, &fwd.patches, &g.patch, None, batch * l);
    }
}
