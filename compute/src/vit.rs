//! Vision Transformer with timm's `VisionTransformer` semantics: Conv2d patch embedding
//! (stride = patch), a class token, learned position embeddings, pre-norm blocks
//! `x = x + attn(norm1(x)); x = x + mlp(norm2(x))` with a fused qkv (optional bias),
//! exact GELU, LayerNorm eps 1e-6, then `norm` and CLS pooling (`global_pool='token'`) or
//! mean pooling of patch tokens and `fc_norm` (`global_pool='avg'`), and a linear head.
//! Parameters carry timm's names; a `state_dict()` saved as safetensors loads unchanged.
//!
//! iBOT's student adds one parameter, `masked_embed` `[1, D]`: with a [`PatchMask`] the
//! forward replaces the masked patches' embeddings by it, after the patch embedding and
//! before the class token and the position embeddings (bytedance/ibot `prepare_tokens`).
//!
//! `reg_tokens` adds timm's register tokens (Darcet et al. 2023, "Vision Transformers Need
//! Registers"): learned tokens after the class token, `[cls, reg…, patches]`, which take
//! position embeddings like the class token does (`no_embed_class=False`), attend and are
//! attended to, and are dropped at the output. They give a model somewhere other than
//! low-information patches to keep global state.
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Matmul, PatchOrder, Strides, NO_ROW};
use crate::layers::{LayerNorm, Linear, NormSaved};
use crate::params::Params;
use crate::rng::Rng;
use crate::transformer::{backward_blocks, block_param_shapes, forward_blocks, layernorm, linear, Block, BlockSaved};
use crate::weights::{TensorFile, WeightsError};

/// timm's constructor arguments (their names, their defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VitConfig {
    /// `[height, width]`; a single number means a square image.
    #[serde(deserialize_with = "one_or_two")]
    pub img_size: [usize; 2],
    pub patch_size: usize,
    pub in_chans: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f32,
    pub qkv_bias: bool,
    /// 0 means no head: the pooled features are the output.
    pub num_classes: usize,
    /// `"token"` (class token) or `"avg"` (mean of patch tokens, then `fc_norm`).
    pub global_pool: String,
    /// Only timm's defaults are supported; they are accepted so configs round-trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_token: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_embed_class: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_norm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fc_norm: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_img_size: Option<bool>,
    /// Register tokens after the class token (timm's `reg_tokens`; 0: none).
    #[serde(skip_serializing_if = "is_zero")]
    pub reg_tokens: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn one_or_two<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[usize; 2], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrTwo {
        One(usize),
        Two([usize; 2]),
    }
    Ok(match OneOrTwo::deserialize(d)? {
        OneOrTwo::One(s) => [s, s],
        OneOrTwo::Two(s) => s,
    })
}

impl Default for VitConfig {
    fn default() -> Self {
        VitConfig {
            img_size: [224, 224],
            patch_size: 16,
            in_chans: 3,
            embed_dim: 768,
            depth: 12,
            num_heads: 12,
            mlp_ratio: 4.0,
            qkv_bias: true,
            num_classes: 1000,
            global_pool: "token".into(),
            class_token: None,
            no_embed_class: None,
            pre_norm: None,
            fc_norm: None,
            dynamic_img_size: None,
            reg_tokens: 0,
        }
    }
}

impl VitConfig {
    pub fn from_json(s: &str) -> Result<Self, WeightsError> {
        let cfg: VitConfig = serde_json::from_str(s).map_err(|e| WeightsError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), WeightsError> {
        let bad = |m: String| Err(WeightsError::Config(m));
        let [h, w] = self.img_size;
        if self.patch_size == 0 || !h.is_multiple_of(self.patch_size) || !w.is_multiple_of(self.patch_size) {
            return bad(format!("img_size {h}×{w} is not a multiple of patch_size {}", self.patch_size));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads));
        }
        if !matches!(self.global_pool.as_str(), "token" | "avg") {
            return bad(format!("global_pool {:?} is not supported (use \"token\" or \"avg\")", self.global_pool));
        }
        if self.class_token == Some(false) || self.no_embed_class == Some(true) || self.pre_norm == Some(true) {
            return bad("only class_token=True, no_embed_class=False, pre_norm=False are supported".into());
        }
        if self.fc_norm.is_some_and(|f| f != self.avg_pool()) || self.dynamic_img_size == Some(true) {
            return bad(
                "only fc_norm=None (timm's default for the pool) and dynamic_img_size=False are supported".into()
            );
        }
        if self.in_chans == 0 || self.depth == 0 || self.embed_dim == 0 {
            return bad("in_chans, depth and embed_dim must be positive".into());
        }
        Ok(())
    }

    pub fn grid(&self) -> [usize; 2] {
        [self.img_size[0] / self.patch_size, self.img_size[1] / self.patch_size]
    }
    /// Patches per image.
    pub fn patches(&self) -> usize {
        self.grid()[0] * self.grid()[1]
    }
    /// Tokens before the patches: the class token and the registers.
    pub fn prefix_tokens(&self) -> usize {
        1 + self.reg_tokens
    }
    /// Tokens per image (class token, registers, patches).
    pub fn tokens(&self) -> usize {
        self.patches() + self.prefix_tokens()
    }
    pub fn mlp_hidden(&self) -> usize {
        (self.embed_dim as f32 * self.mlp_ratio) as usize
    }
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    fn avg_pool(&self) -> bool {
        self.global_pool == "avg"
    }

    /// Every parameter's timm name and shape, in `state_dict()` order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, p, c, hid) = (self.embed_dim, self.patch_size, self.in_chans, self.mlp_hidden());
        let mut v: Vec<(String, Vec<usize>)> = vec![
            ("cls_token".into(), vec![1, 1, d]),
            ("pos_embed".into(), vec![1, self.tokens(), d]),
            ("patch_embed.proj.weight".into(), vec![d, c, p, p]),
            ("patch_embed.proj.bias".into(), vec![d]),
        ];
        if self.reg_tokens > 0 {
            v.insert(1, ("reg_token".into(), vec![1, self.reg_tokens, d]));
        }
        for i in 0..self.depth {
            v.extend(block_param_shapes(&format!("blocks.{i}."), d, hid, self.qkv_bias));
        }
        let norm = if self.avg_pool() { "fc_norm" } else { "norm" };
        v.push((format!("{norm}.weight"), vec![d]));
        v.push((format!("{norm}.bias"), vec![d]));
        if self.num_classes > 0 {
            v.push(("head.weight".into(), vec![self.num_classes, d]));
            v.push(("head.bias".into(), vec![self.num_classes]));
        }
        v
    }

    /// Multiply-add FLOPs of one forward pass's matmuls for `batch` images (×2 per MAC);
    /// backward costs twice this.
    pub fn forward_matmul_flops(&self, batch: usize) -> f64 {
        let (n, d, hid) = (self.tokens() as f64, self.embed_dim as f64, self.mlp_hidden() as f64);
        let l = self.patches() as f64;
        let e = (self.in_chans * self.patch_size * self.patch_size) as f64;
        let per_block = n * (3.0 * d * d + d * d + 2.0 * d * hid) + 2.0 * n * n * d;
        2.0 * batch as f64 * (l * e * d + self.depth as f64 * per_block + d * self.num_classes as f64)
    }

    /// Matmul FLOPs of a training step (forward, backward without the image gradient):
    /// backward computes two products per forward product, except the patch embedding's,
    /// whose input gradient is not needed.
    pub fn train_step_matmul_flops(&self, batch: usize) -> f64 {
        let patch =
            2.0 * (batch * self.patches() * self.in_chans * self.patch_size * self.patch_size * self.embed_dim) as f64;
        3.0 * self.forward_matmul_flops(batch) - patch
    }
}

/// The model's layers bound to a [`Params`] (weights, or gradients of the same names).
struct Parts<B: Backend> {
    cls: B::Buf,
    /// `reg_token` `[R, D]`, when the model has registers.
    reg: Option<B::Buf>,
    pos: B::Buf,
    patch: Linear<B>,
    blocks: Vec<Block<B>>,
    /// `norm` (token pooling) or `fc_norm` (avg pooling).
    norm: LayerNorm<B>,
    head: Option<Linear<B>>,
}

impl<B: Backend> Parts<B> {
    fn bind(cfg: &VitConfig, p: &Params<B>) -> Self {
        let (d, hid) = (cfg.embed_dim, cfg.mlp_hidden());
        let e = cfg.in_chans * cfg.patch_size * cfg.patch_size;
        Parts {
            cls: p.get("cls_token").clone(),
            reg: (cfg.reg_tokens > 0).then(|| p.get("reg_token").clone()),
            pos: p.get("pos_embed").clone(),
            patch: linear(p, "patch_embed.proj", e, d, true),
            blocks: (0..cfg.depth)
                .map(|i| Block::bind(p, &format!("blocks.{i}."), d, hid, cfg.num_heads, cfg.qkv_bias))
                .collect(),
            norm: layernorm(p, if cfg.avg_pool() { "fc_norm" } else { "norm" }, d, 1e-6),
            head: (cfg.num_classes > 0).then(|| linear(p, "head", d, cfg.num_classes, true)),
        }
    }
}

/// iBOT's learned mask token: its name in the student's parameters (as in bytedance/ibot's
/// backbone) and its shape `[1, D]`. Models without it load and save under timm's names.
pub const MASKED_EMBED: &str = "masked_embed";

/// Which patches a forward replaces by `masked_embed`, as two row maps over the
/// `[batch · L]` patch embeddings (a gather with the token as its fill, and its complement).
pub struct PatchMask<B: Backend> {
    /// `[batch · L]` u32: the row itself where kept, [`NO_ROW`] where masked.
    keep: B::Buf,
    /// `[batch · L]` u32: the row itself where masked, [`NO_ROW`] where kept.
    masked: B::Buf,
    rows: usize,
}

impl<B: Backend> Clone for PatchMask<B> {
    fn clone(&self) -> Self {
        PatchMask { keep: self.keep.clone(), masked: self.masked.clone(), rows: self.rows }
    }
}

impl<B: Backend> PatchMask<B> {
    /// `mask: [batch, L]`, 1 where the patch is masked, 0 where it is seen (raster order of
    /// the patch grid, as iBOT's `[B, H, W]` boolean masks flattened).
    pub fn new(be: &B, mask: &[f32]) -> Self {
        let rows = mask.len();
        let pick = |masked: bool| -> Vec<u32> {
            mask.iter().enumerate().map(|(r, m)| if (*m != 0.0) == masked { r as u32 } else { NO_ROW }).collect()
        };
        PatchMask { keep: be.upload_u32(&pick(false)), masked: be.upload_u32(&pick(true)), rows }
    }
}

/// A forward pass: its outputs, and everything its backward needs.
pub struct VitForward<B: Backend> {
    pub batch: usize,
    patches: B::Buf,
    /// The patch mask of a masked forward (iBOT's student).
    mask: Option<PatchMask<B>>,
    pub blocks: Vec<BlockSaved<B>>,
    /// The last block's output `[batch, tokens, dim]`.
    x_final: B::Buf,
    /// timm's `forward_features`: final-norm tokens (token pooling), or the last block's
    /// output (avg pooling, where `norm` is the identity). `[batch, tokens, dim]`.
    pub features: B::Buf,
    norm_saved: NormSaved<B>,
    /// Avg pooling: the mean of patch tokens `[batch, dim]` before `fc_norm`.
    pooled_mean: Option<B::Buf>,
    /// `forward_head(pre_logits=True)` for avg pooling `[batch, dim]`; for token pooling
    /// the class token of `features` (see [`Vit::pre_logits`]).
    pooled: Option<B::Buf>,
    /// `[batch, num_classes]` when the model has a head.
    pub logits: Option<B::Buf>,
}

pub struct Vit<B: Backend> {
    pub cfg: VitConfig,
    pub params: Params<B>,
}

impl<B: Backend> Vit<B> {
    /// Fresh weights as timm initialises them: trunc-normal(0.02) linear weights and
    /// position embeddings, zero biases, unit LayerNorms, a near-zero class token, and
    /// PyTorch's default Conv2d init for the patch embedding.
    pub fn init(be: &B, cfg: VitConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut params = Params::new();
        let fan_in = (cfg.in_chans * cfg.patch_size * cfg.patch_size) as f32;
        for (name, shape) in cfg.param_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.starts_with("patch_embed") {
                let bound = fan_in.powf(-0.5);
                (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect()
            } else if name == "cls_token" || name == "reg_token" {
                (0..n).map(|_| rng.normal() * 1e-6).collect()
            } else if name == "pos_embed" || name.ends_with("weight") && shape.len() == 2 {
                (0..n).map(|_| rng.trunc_normal(0.02)).collect()
            } else if name.contains("norm") && name.ends_with("weight") {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            };
            params.push(name, shape, be.upload(&values));
        }
        Vit { cfg, params }
    }

    /// The model with iBOT's `masked_embed` `[1, D]` added, zero as bytedance/ibot starts it.
    pub fn with_masked_embed(mut self, be: &B) -> Self {
        let d = self.cfg.embed_dim;
        self.params.push(MASKED_EMBED, vec![1, d], be.alloc(d));
        self
    }

    /// Load timm-named weights; names the missing, unexpected or misshapen tensors.
    /// Tensors under `input.`/`expect.` (fixtures) are ignored.
    pub fn from_file(be: &B, cfg: VitConfig, file: &TensorFile) -> Result<Self, WeightsError> {
        cfg.validate()?;
        let params = Params::load(be, &cfg.param_shapes(), &[], file)?;
        Ok(Vit { cfg, params })
    }

    /// `x: [batch, in_chans, h, w]` → features, pooled output and logits.
    pub fn forward(&self, be: &B, x: &B::Buf, batch: usize) -> VitForward<B> {
        self.forward_masked(be, x, batch, None)
    }

    /// [`Vit::forward`] with the `mask`ed patches' embeddings replaced by `masked_embed`
    /// (which the parameters must then hold): iBOT's `x.permute(0, 2, 3, 1)[mask] = masked_embed`.
    pub fn forward_masked(&self, be: &B, x: &B::Buf, batch: usize, mask: Option<&PatchMask<B>>) -> VitForward<B> {
        let cfg = &self.cfg;
        let w = Parts::bind(cfg, &self.params);
        let (l, n, d) = (cfg.patches(), cfg.tokens(), cfg.embed_dim);
        let [h, wd] = cfg.img_size;
        let e = w.patch.inp;
        let patches = be.alloc(batch * l * e);
        be.patchify_forward(x, &patches, batch, cfg.in_chans, h, wd, cfg.patch_size, PatchOrder::ChannelFirst);
        let mut embedded = be.alloc(batch * l * d);
        w.patch.forward(be, &patches, &embedded, batch * l);
        if let Some(m) = mask {
            assert_eq!(m.rows, batch * l, "the patch mask is [batch, patches]");
            let token = self.params.try_get(MASKED_EMBED).expect("a masked forward needs the `masked_embed` parameter");
            let replaced = be.alloc(batch * l * d);
            be.gather_rows(&embedded, &m.keep, Some(token), &replaced, batch * l, d);
            embedded = replaced;
        }
        let r = cfg.reg_tokens;
        if let Some(reg) = &w.reg {
            // [batch, L] embeddings and the [R] registers → [batch, R + L]: one gather from both
            let src = be.alloc((batch * l + r) * d);
            be.copy(&embedded, 0, &src, 0, batch * l * d);
            be.copy(reg, 0, &src, batch * l * d, r * d);
            let idx: Vec<u32> = (0..batch * (r + l))
                .map(|i| {
                    let (b, t) = (i / (r + l), i % (r + l));
                    (if t < r { batch * l + t } else { b * l + t - r }) as u32
                })
                .collect();
            let with_regs = be.alloc(batch * (r + l) * d);
            be.gather_rows(&src, &be.upload_u32(&idx), None, &with_regs, batch * (r + l), d);
            embedded = with_regs;
        }
        let xs = be.alloc(batch * n * d);
        be.cls_pos_forward(&embedded, &w.cls, &w.pos, &xs, batch, r + l, d);

        let (blocks, xs) = forward_blocks(be, &w.blocks, xs, batch, n);

        let (features, norm_saved, pooled_mean, pooled) = if cfg.avg_pool() {
            let mean = be.alloc(batch * d);
            be.matmul(&self.mean_of_patches(batch), &self.mean_weights(be), &xs, None, &mean);
            let pooled = be.alloc(batch * d);
            let saved = w.norm.forward(be, &mean, &pooled, batch);
            (xs.clone(), saved, Some(mean), Some(pooled))
        } else {
            let features = be.alloc(batch * n * d);
            let saved = w.norm.forward(be, &xs, &features, batch * n);
            (features, saved, None, None)
        };
        let logits = w.head.as_ref().map(|head| {
            let logits = be.alloc(batch * head.out);
            match &pooled {
                Some(p) => head.forward(be, p, &logits, batch),
                None => head.forward_strided(be, &features, n * d, &logits, batch),
            }
            logits
        });
        let mask = mask.cloned();
        VitForward { batch, patches, mask, blocks, x_final: xs, features, norm_saved, pooled_mean, pooled, logits }
    }

    /// Backward of [`Vit::forward`]: adds parameter gradients into `grads` (same names as
    /// `params`) and, when `dimg` is given, the image gradient into it. Upstream gradients
    /// may come for the logits, the features, or both.
    pub fn backward(
        &self,
        be: &B,
        fwd: &VitForward<B>,
        dlogits: Option<&B::Buf>,
        dfeatures: Option<&B::Buf>,
        grads: &Params<B>,
        dimg: Option<&B::Buf>,
    ) {
        let cfg = &self.cfg;
        let (w, g) = (Parts::bind(cfg, &self.params), Parts::bind(cfg, grads));
        let batch = fwd.batch;
        let (l, n, d) = (cfg.patches(), cfg.tokens(), cfg.embed_dim);

        // Gradient of the last block's output.
        let dx = be.alloc(batch * n * d);
        if cfg.avg_pool() {
            // features are the last block's output itself
            if let Some(df) = dfeatures {
                be.copy(df, 0, &dx, 0, batch * n * d);
            }
            if let (Some(dlogits), Some(head)) = (dlogits, &w.head) {
                let pooled = fwd.pooled.as_ref().expect("avg pooling keeps its pooled output");
                let mean = fwd.pooled_mean.as_ref().expect("avg pooling keeps the mean");
                let dpooled = be.alloc(batch * d);
                head.backward(be, dlogits, pooled, g.head.as_ref().unwrap(), Some(&dpooled), batch);
                let dmean = be.alloc(batch * d);
                w.norm.backward(be, &dpooled, &fwd.norm_saved, mean, &g.norm, &dmean, batch);
                let mm = self.mean_of_patches(batch);
                // dx[b, prefix + t] += dmean[b] / L : the transpose of the mean's matmul
                let back = Matmul {
                    m: l,
                    n: d,
                    k: 1,
                    a: Strides { offset: 0, row: 1, col: 1, batch_stride: [0, 0] },
                    b: Strides { offset: 0, row: d, col: 1, batch_stride: [d, 0] },
                    c: mm.b,
                    beta: 1.0,
                    ..mm
                };
                be.matmul(&back, &self.mean_weights(be), &dmean, None, &dx);
            }
        } else {
            let dfeat = be.alloc(batch * n * d);
            if let Some(df) = dfeatures {
                be.copy(df, 0, &dfeat, 0, batch * n * d);
            }
            if let (Some(dlogits), Some(head)) = (dlogits, &w.head) {
                head.backward_strided(be, dlogits, &fwd.features, n * d, g.head.as_ref().unwrap(), Some(&dfeat), batch);
            }
            w.norm.backward(be, &dfeat, &fwd.norm_saved, &fwd.x_final, &g.norm, &dx, batch * n);
        }

        backward_blocks(be, &w.blocks, &g.blocks, &fwd.blocks, &dx, batch, n);

        let r = cfg.reg_tokens;
        let mut dembedded = be.alloc(batch * (r + l) * d);
        be.cls_pos_backward(&dx, &dembedded, &g.cls, Some(&g.pos), batch, r + l, d);
        if let Some(dreg) = &g.reg {
            // dreg += Σ_b d[b, :R], a [1, batch] · [batch, R·D] product; the patches' rows go on
            let sum = Matmul {
                m: 1,
                n: r * d,
                k: batch,
                batch: [1, 1],
                a: Strides::row_major(batch),
                b: Strides { offset: 0, row: (r + l) * d, col: 1, batch_stride: [0, 0] },
                c: Strides::row_major(r * d),
                alpha: 1.0,
                beta: 1.0,
            };
            be.matmul(&sum, &be.upload(&vec![1.0; batch]), &dembedded, None, dreg);
            let idx: Vec<u32> = (0..batch * l).map(|i| (i / l * (r + l) + r + i % l) as u32).collect();
            let dpatch = be.alloc(batch * l * d);
            be.gather_rows(&dembedded, &be.upload_u32(&idx), None, &dpatch, batch * l, d);
            dembedded = dpatch;
        }
        if let Some(m) = &fwd.mask {
            // masked rows feed the token (its gradient sums them), kept rows the embedding
            let (dmasked, dkept) = (be.alloc(batch * l * d), be.alloc(batch * l * d));
            be.gather_rows(&dembedded, &m.masked, None, &dmasked, batch * l, d);
            be.sum_rows(&dmasked, grads.get(MASKED_EMBED), batch * l, d);
            be.gather_rows(&dembedded, &m.keep, None, &dkept, batch * l, d);
            dembedded = dkept;
        }
        let dpatches = dimg.map(|_| be.alloc(batch * l * w.patch.inp));
        w.patch.backward(be, &dembedded, &fwd.patches, &g.patch, dpatches.as_ref(), batch * l);
        if let (Some(dimg), Some(dp)) = (dimg, &dpatches) {
            let [h, wd] = cfg.img_size;
            be.patchify_backward(dp, dimg, batch, cfg.in_chans, h, wd, cfg.patch_size, PatchOrder::ChannelFirst);
        }
    }

    /// `mean[b] = Σ_t x[b, prefix + t] / L` as a batched matmul `[1, L] · [L, d]`.
    fn mean_of_patches(&self, batch: usize) -> Matmul {
        let (l, n, d) = (self.cfg.patches(), self.cfg.tokens(), self.cfg.embed_dim);
        let prefix = self.cfg.prefix_tokens();
        Matmul {
            m: 1,
            n: d,
            k: l,
            batch: [batch, 1],
            a: Strides { offset: 0, row: 0, col: 1, batch_stride: [0, 0] },
            b: Strides { offset: prefix * d, row: d, col: 1, batch_stride: [n * d, 0] },
            c: Strides { offset: 0, row: d, col: 1, batch_stride: [d, 0] },
            alpha: 1.0,
            beta: 0.0,
        }
    }

    fn mean_weights(&self, be: &B) -> B::Buf {
        let l = self.cfg.patches();
        be.upload(&vec![1.0 / l as f32; l])
    }

    /// `forward_head(pre_logits=True)`: `[batch, dim]`.
    pub async fn pre_logits(&self, be: &B, fwd: &VitForward<B>) -> Vec<f32> {
        if let Some(p) = &fwd.pooled {
            return be.read(p).await;
        }
        let (n, d) = (self.cfg.tokens(), self.cfg.embed_dim);
        let f = be.read(&fwd.features).await;
        (0..fwd.batch).flat_map(|b| f[b * n * d..b * n * d + d].to_vec()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::ops::testing::*;

    fn micro(global_pool: &str, qkv_bias: bool) -> VitConfig {
        VitConfig {
            img_size: [8, 12],
            patch_size: 4,
            in_chans: 2,
            embed_dim: 8,
            depth: 2,
            num_heads: 2,
            mlp_ratio: 2.0,
            qkv_bias,
            num_classes: 3,
            global_pool: global_pool.into(),
            ..VitConfig::default()
        }
    }

    /// Unit-scale random weights so attention is far from uniform.
    fn randomise(be: &Cpu, model: &Vit<Cpu>, seed: u64) {
        for (i, p) in model.params.list.iter().enumerate() {
            let n: usize = p.shape.iter().product();
            let v: Vec<f32> = randn(n, seed + i as u64).iter().map(|x| x * 0.5).collect();
            be.write(&p.buf, &v);
        }
    }

    fn loss_of(model: &Vit<Cpu>, be: &Cpu, x: &[f32], batch: usize, labels: &[u32]) -> f64 {
        let xb = be.upload(x);
        let fwd = model.forward(be, &xb, batch);
        let classes = model.cfg.num_classes;
        let (losses, probs) = (be.alloc(batch), be.alloc(batch * classes));
        be.cross_entropy_forward(fwd.logits.as_ref().unwrap(), &be.upload_u32(labels), &losses, &probs, batch, classes);
        crate::block_on(be.read(&losses)).iter().map(|v| *v as f64).sum::<f64>() / batch as f64
    }

    #[test]
    fn vit_backward_matches_finite_differences() {
        for (pool, bias) in [("token", true), ("avg", false)] {
            let be = Cpu;
            let cfg = micro(pool, bias);
            let model = Vit::init(&be, cfg.clone(), 0);
            randomise(&be, &model, 10);
            let batch = 2;
            let x = randn(batch * 2 * 8 * 12, 3);
            let labels = [1u32, 2];
            let xb = be.upload(&x);
            let fwd = model.forward(&be, &xb, batch);
            let (losses, probs) = (be.alloc(batch), be.alloc(batch * 3));
            let lb = be.upload_u32(&labels);
            be.cross_entropy_forward(fwd.logits.as_ref().unwrap(), &lb, &losses, &probs, batch, 3);
            let dlogits = be.alloc(batch * 3);
            be.cross_entropy_backward(&be.upload(&[0.5, 0.5]), &probs, &lb, &dlogits, batch, 3);
            let grads = model.params.zeros_like(&be);
            let dimg = be.alloc(x.len());
            model.backward(&be, &fwd, Some(&dlogits), None, &grads, Some(&dimg));

            let fd_x = finite_diff(&x, 1e-2, |x| loss_of(&model, &be, x, batch, &labels));
            assert_close_f64(&format!("{pool}: d input"), &crate::block_on(be.read(&dimg)), &fd_x, 2e-3, 2e-2);
            for p in &model.params.list {
                let w0 = crate::block_on(be.read(&p.buf));
                let fd = finite_diff(&w0, 1e-2, |w| {
                    be.write(&p.buf, w);
                    loss_of(&model, &be, &x, batch, &labels)
                });
                be.write(&p.buf, &w0);
                let g = crate::block_on(be.read(grads.get(&p.name)));
                assert_close_f64(&format!("{pool}: d {}", p.name), &g, &fd, 2e-3, 2e-2);
            }
        }
    }

    /// iBOT's masked forward: the image's and `masked_embed`'s gradients against finite
    /// differences, with some patches of each image masked and one image not at all.
    #[test]
    fn masked_embed_and_input_gradients_match_finite_differences() {
        let be = Cpu;
        let model = Vit::init(&be, micro("token", true), 0).with_masked_embed(&be);
        randomise(&be, &model, 20);
        let (batch, l) = (3, model.cfg.patches());
        let mut mask = vec![0.0; batch * l];
        for r in [0, 4, 5, l + 2] {
            mask[r] = 1.0;
        }
        let x = randn(batch * 2 * 8 * 12, 4);
        let w = randn(batch * model.cfg.tokens() * 8, 5);
        let loss_of = |model: &Vit<Cpu>, x: &[f32]| {
            let pm = PatchMask::new(&be, &mask);
            let fwd = model.forward_masked(&be, &be.upload(x), batch, Some(&pm));
            weighted_sum(&crate::block_on(be.read(&fwd.features)), &w)
        };
        let pm = PatchMask::new(&be, &mask);
        let fwd = model.forward_masked(&be, &be.upload(&x), batch, Some(&pm));
        let grads = model.params.zeros_like(&be);
        let dimg = be.alloc(x.len());
        model.backward(&be, &fwd, None, Some(&be.upload(&w)), &grads, Some(&dimg));

        let fd_x = finite_diff(&x, 1e-2, |x| loss_of(&model, x));
        let dx = crate::block_on(be.read(&dimg));
        assert_close_f64("d input", &dx, &fd_x, 2e-3, 2e-2);
        // a masked patch's pixels do not reach the output
        let patch_pixels = |img: usize, p: usize| {
            let [gw, ps] = [3, 4];
            let (py, px) = (p / gw, p % gw);
            (0..2).flat_map(move |c| {
                (0..ps).flat_map(move |i| (0..ps).map(move |j| ((img * 2 + c) * 8 + py * ps + i) * 12 + px * ps + j))
            })
        };
        assert!(patch_pixels(0, 4).all(|i| dx[i] == 0.0), "masked patch 4 of image 0 has a gradient");
        assert!(patch_pixels(2, 4).any(|i| dx[i] != 0.0), "image 2 is not masked");

        let token = model.params.get(MASKED_EMBED);
        let t0 = crate::block_on(be.read(token));
        let fd = finite_diff(&t0, 1e-2, |t| {
            be.write(token, t);
            loss_of(&model, &x)
        });
        be.write(token, &t0);
        assert_close_f64("d masked_embed", &crate::block_on(be.read(grads.get(MASKED_EMBED))), &fd, 2e-3, 2e-2);
        let pw = crate::block_on(be.read(grads.get("patch_embed.proj.weight")));
        assert!(pw.iter().any(|v| *v != 0.0));
    }

    /// Without a mask, or with nothing masked, the output is the plain forward's.
    #[test]
    fn an_empty_mask_changes_nothing() {
        let be = Cpu;
        let model = Vit::init(&be, micro("token", true), 1).with_masked_embed(&be);
        randomise(&be, &model, 30);
        let x = be.upload(&randn(2 * 2 * 8 * 12, 6));
        let plain = crate::block_on(be.read(&model.forward(&be, &x, 2).features));
        let pm = PatchMask::new(&be, &vec![0.0; 2 * model.cfg.patches()]);
        let masked = crate::block_on(be.read(&model.forward_masked(&be, &x, 2, Some(&pm)).features));
        assert_eq!(plain, masked);
        // the parameter list is timm's plus the token, last
        assert_eq!(model.params.list.len(), model.cfg.param_shapes().len() + 1);
        assert_eq!(model.params.list.last().unwrap().name, MASKED_EMBED);
    }

    #[test]
    fn config_accepts_int_or_pair_img_size_and_rejects_bad_shapes() {
        let c = VitConfig::from_json(r#"{"img_size": 32, "patch_size": 8, "embed_dim": 48, "num_heads": 3}"#).unwrap();
        assert_eq!(c.img_size, [32, 32]);
        assert_eq!(c.tokens(), 17);
        let c = VitConfig::from_json(r#"{"img_size": [16, 24], "patch_size": 8, "embed_dim": 48, "num_heads": 3}"#)
            .unwrap();
        assert_eq!(c.grid(), [2, 3]);
        let e = VitConfig::from_json(r#"{"img_size": 30, "patch_size": 8}"#).unwrap_err();
        assert!(e.to_string().contains("not a multiple of patch_size"), "{e}");
    }
}
