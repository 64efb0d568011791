//! Swin Transformer with timm's `SwinTransformer` semantics (timm 1.0.31):
//! ```text
//! x = norm(proj(patches(img)))                      patch_embed, NHWC tokens [B, H, W, C]
//! for stage i:  if i > 0: x = reduction(norm(merge_2x2(x)))     layers.i.downsample
//!               for block j: (shifted windows when j is odd)
//!                   x = x + unwindow(proj(window_attention(qkv(window(norm1(x))))))
//!                   x = x + fc2(gelu(fc1(norm2(x))))
//! features = norm(x);  logits = head.fc(mean_HW(features))
//! ```
//! Window attention adds the relative position bias (and, for shifted windows, timm's −100
//! mask) to the scores before the softmax ([`Backend::rel_pos_bias_forward`]). Cyclic shift,
//! zero padding to whole windows, window partition and its reverse, and patch merging's
//! 2×2 concatenation are permutations of token rows: gathers through index maps drawn here
//! on the CPU, and their backward is the gather through the inverse map (each real token is
//! used exactly once; padding rows are constants). As timm: a window no smaller than the
//! feature map is clamped to it and that block does not shift; LayerNorm eps is 1e-5.
//! Parameters carry timm's names; a `state_dict()` saved as safetensors loads unchanged.
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Matmul, PatchOrder, Strides, NO_ROW};
use crate::layers::{Attention, LayerNorm, Linear, NormSaved};
use crate::ops::rel_pos_bias::{relative_position_index, Csr};
use crate::params::Params;
use crate::rng::Rng;
use crate::transformer::{layernorm, linear};
use crate::weights::{TensorFile, WeightsError};

const EPS: f32 = 1e-5;

/// A window size as timm accepts it: one number, `[h, w]`, or one of those per stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WindowSize {
    One(usize),
    Pair([usize; 2]),
    PerStage(Vec<WindowSize>),
}

/// timm's constructor arguments (their names; defaults as timm's, except `drop_path_rate`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwinConfig {
    /// `[height, width]`; a single number means a square image. Pixels past the last whole
    /// patch are dropped, as timm's strided Conv2d does.
    #[serde(deserialize_with = "one_or_two")]
    pub img_size: [usize; 2],
    pub patch_size: usize,
    pub in_chans: usize,
    /// Width of stage 0; stage i has `embed_dim · 2^i`.
    pub embed_dim: usize,
    pub depths: Vec<usize>,
    pub num_heads: Vec<usize>,
    /// Channels per head; `None` means `dim / heads` at every stage.
    pub head_dim: Option<usize>,
    pub window_size: WindowSize,
    pub mlp_ratio: f32,
    pub qkv_bias: bool,
    /// 0 means no head: the pooled features are the output.
    pub num_classes: usize,
    /// Only `"avg"` (timm's default).
    pub global_pool: String,
    /// Stochastic depth is not implemented: the engine computes timm's eval-mode forward,
    /// which ignores it. Accepted so timm configs round-trip (timm's default is 0.1).
    pub drop_path_rate: f32,
    /// Only timm's defaults (`false`, `true`) are supported.
    pub always_partition: bool,
    pub strict_img_size: bool,
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

impl Default for SwinConfig {
    fn default() -> Self {
        SwinConfig {
            img_size: [224, 224],
            patch_size: 4,
            in_chans: 3,
            embed_dim: 96,
            depths: vec![2, 2, 6, 2],
            num_heads: vec![3, 6, 12, 24],
            head_dim: None,
            window_size: WindowSize::One(7),
            mlp_ratio: 4.0,
            qkv_bias: true,
            num_classes: 1000,
            global_pool: "avg".into(),
            drop_path_rate: 0.0,
            always_partition: false,
            strict_img_size: true,
        }
    }
}

/// Where one block's windows lie on its feature map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGeom {
    /// Feature map.
    pub h: usize,
    pub w: usize,
    /// Window (clamped to the map) and cyclic shift.
    pub wh: usize,
    pub ww: usize,
    pub sh: usize,
    pub sw: usize,
}

impl WindowGeom {
    /// timm's `_calc_window_shift` with `always_partition=False`.
    fn new([h, w]: [usize; 2], [wh, ww]: [usize; 2], shifted: bool) -> Self {
        let clamp = |r: usize, win: usize| if r <= win { (r, 0) } else { (win, if shifted { win / 2 } else { 0 }) };
        let ((wh, sh), (ww, sw)) = (clamp(h, wh), clamp(w, ww));
        WindowGeom { h, w, wh, ww, sh, sw }
    }
    /// Windows down and across the padded map.
    fn grid(&self) -> [usize; 2] {
        [self.h.div_ceil(self.wh), self.w.div_ceil(self.ww)]
    }
    /// Windows per image.
    pub fn windows(&self) -> usize {
        self.grid()[0] * self.grid()[1]
    }
    /// Tokens per window.
    pub fn tokens(&self) -> usize {
        self.wh * self.ww
    }
    pub fn shifted(&self) -> bool {
        self.sh > 0 || self.sw > 0
    }

    /// `windows[bw·n + t] = x[map[bw·n + t]]`: roll by −shift, pad, partition.
    /// `[batch·nw·n]`, [`NO_ROW`] for padding.
    pub fn partition_map(&self, batch: usize) -> Vec<u32> {
        let [_, gw] = self.grid();
        let (nw, n) = (self.windows(), self.tokens());
        let mut map = Vec::with_capacity(batch * nw * n);
        for b in 0..batch {
            for win in 0..nw {
                for t in 0..n {
                    let y = (win / gw) * self.wh + t / self.ww;
                    let x = (win % gw) * self.ww + t % self.ww;
                    map.push(if y < self.h && x < self.w {
                        (b * self.h * self.w + (y + self.sh) % self.h * self.w + (x + self.sw) % self.w) as u32
                    } else {
                        NO_ROW
                    });
                }
            }
        }
        map
    }

    /// The inverse of [`WindowGeom::partition_map`] on real tokens: reverse partition, crop,
    /// roll by +shift. `[batch·h·w]`.
    pub fn reverse_map(&self, batch: usize) -> Vec<u32> {
        let [_, gw] = self.grid();
        let (nw, n) = (self.windows(), self.tokens());
        let mut map = Vec::with_capacity(batch * self.h * self.w);
        for b in 0..batch {
            for yy in 0..self.h {
                for xx in 0..self.w {
                    let (y, x) = ((yy + self.h - self.sh) % self.h, (xx + self.w - self.sw) % self.w);
                    let win = (y / self.wh) * gw + x / self.ww;
                    map.push(((b * nw + win) * n + (y % self.wh) * self.ww + x % self.ww) as u32);
                }
            }
        }
        map
    }

    /// timm's `get_attn_mask`: label the padded map's regions by the slices
    /// `(0, −wh), (−wh, −sh), (−sh, None)` (and along W), then −100 between tokens of a
    /// window with different labels. `[nw, n, n]`.
    pub fn attn_mask(&self) -> Vec<f32> {
        let [gh, gw] = self.grid();
        let (hp, wp) = (gh * self.wh, gw * self.ww);
        // Python's `a[start:stop]` with negative indices counted from the end.
        let slice = |start: isize, stop: Option<isize>, len: usize| {
            let at = |i: isize| if i < 0 { (len as isize + i).max(0) as usize } else { (i as usize).min(len) };
            at(start)..stop.map_or(len, at)
        };
        let cuts = |win: usize, shift: usize, len: usize| {
            let (win, shift) = (win as isize, shift as isize);
            [slice(0, Some(-win), len), slice(-win, Some(-shift), len), slice(-shift, None, len)]
        };
        let mut label = vec![0f32; hp * wp];
        let mut cnt = 0.0;
        for hs in cuts(self.wh, self.sh, hp) {
            for ws in cuts(self.ww, self.sw, wp) {
                for y in hs.clone() {
                    for x in ws.clone() {
                        label[y * wp + x] = cnt;
                    }
                }
                cnt += 1.0;
            }
        }
        let n = self.tokens();
        let mut mask = Vec::with_capacity(gh * gw * n * n);
        for win in 0..gh * gw {
            let at = |t: usize| label[((win / gw) * self.wh + t / self.ww) * wp + (win % gw) * self.ww + t % self.ww];
            for i in 0..n {
                for j in 0..n {
                    mask.push(if at(i) != at(j) { -100.0 } else { 0.0 });
                }
            }
        }
        mask
    }
}

/// Patch merging's gather: `[b, h2, w2, 4, c]` rows from `[b, h, w, c]`, the four
/// neighbours in timm's order `(0,0), (1,0), (0,1), (1,1)` (row offset first), zero rows
/// where an odd map is padded.
pub fn merge_map(batch: usize, [h, w]: [usize; 2]) -> Vec<u32> {
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut map = Vec::with_capacity(batch * h2 * w2 * 4);
    for b in 0..batch {
        for i in 0..h2 {
            for j in 0..w2 {
                for k in 0..4 {
                    let (y, x) = (2 * i + k % 2, 2 * j + k / 2);
                    map.push(if y < h && x < w { (b * h * w + y * w + x) as u32 } else { NO_ROW });
                }
            }
        }
    }
    map
}

/// The inverse of [`merge_map`]: each token's row in the merged `[b·h2·w2·4, c]`.
pub fn unmerge_map(batch: usize, [h, w]: [usize; 2]) -> Vec<u32> {
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut map = Vec::with_capacity(batch * h * w);
    for b in 0..batch {
        for y in 0..h {
            for x in 0..w {
                map.push((((b * h2 + y / 2) * w2 + x / 2) * 4 + (x % 2) * 2 + y % 2) as u32);
            }
        }
    }
    map
}

impl SwinConfig {
    pub fn from_json(s: &str) -> Result<Self, WeightsError> {
        let cfg: SwinConfig = serde_json::from_str(s).map_err(|e| WeightsError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), WeightsError> {
        let bad = |m: String| Err(WeightsError::Config(m));
        let [h, w] = self.img_size;
        if self.patch_size == 0 || h < self.patch_size || w < self.patch_size {
            return bad(format!("img_size {h}×{w} holds no whole patch of size {}", self.patch_size));
        }
        let stages = self.depths.len();
        if stages == 0 || self.num_heads.len() != stages {
            return bad(format!(
                "depths {:?} and num_heads {:?} must list the same stages",
                self.depths, self.num_heads
            ));
        }
        if self.in_chans == 0 || self.embed_dim == 0 || self.num_heads.contains(&0) {
            return bad("in_chans, embed_dim and num_heads must be positive".into());
        }
        for i in 0..stages {
            if self.head_dim.is_none() && !self.dim(i).is_multiple_of(self.num_heads[i]) {
                return bad(format!("stage {i}: dim {} is not divisible by {} heads", self.dim(i), self.num_heads[i]));
            }
        }
        match &self.window_size {
            WindowSize::One(0) | WindowSize::Pair([0, _] | [_, 0]) => return bad("window_size must be positive".into()),
            WindowSize::PerStage(v) => {
                let ok = |s: &WindowSize| match s {
                    WindowSize::One(w) => *w > 0,
                    WindowSize::Pair([h, w]) => *h > 0 && *w > 0,
                    WindowSize::PerStage(_) => false,
                };
                if v.len() != stages || !v.iter().all(ok) {
                    return bad(format!("window_size {v:?} must give one positive size per stage ({stages})"));
                }
            }
            _ => {}
        }
        if self.global_pool != "avg" {
            return bad(format!("global_pool {:?} is not supported (use \"avg\")", self.global_pool));
        }
        if self.always_partition || !self.strict_img_size {
            return bad("only always_partition=False and strict_img_size=True are supported".into());
        }
        Ok(())
    }

    pub fn stages(&self) -> usize {
        self.depths.len()
    }
    pub fn dim(&self, stage: usize) -> usize {
        self.embed_dim << stage
    }
    /// Width of the final features.
    pub fn num_features(&self) -> usize {
        self.dim(self.stages() - 1)
    }
    pub fn head_dim(&self, stage: usize) -> usize {
        self.head_dim.unwrap_or(self.dim(stage) / self.num_heads[stage])
    }
    pub fn mlp_hidden(&self, stage: usize) -> usize {
        (self.dim(stage) as f32 * self.mlp_ratio) as usize
    }
    /// The patch grid.
    pub fn grid(&self) -> [usize; 2] {
        [self.img_size[0] / self.patch_size, self.img_size[1] / self.patch_size]
    }
    /// The feature map of stage `i` (halved, rounding up, at each downsample).
    pub fn resolution(&self, stage: usize) -> [usize; 2] {
        let mut r = self.grid();
        for _ in 0..stage {
            r = [r[0].div_ceil(2), r[1].div_ceil(2)];
        }
        r
    }
    fn window(&self, stage: usize) -> [usize; 2] {
        match &self.window_size {
            WindowSize::One(w) => [*w, *w],
            WindowSize::Pair(p) => *p,
            WindowSize::PerStage(v) => match &v[stage] {
                WindowSize::One(w) => [*w, *w],
                WindowSize::Pair(p) => *p,
                WindowSize::PerStage(_) => unreachable!("validated"),
            },
        }
    }
    /// Block `j` of stage `i`'s windows (odd blocks shift).
    pub fn geom(&self, stage: usize, block: usize) -> WindowGeom {
        WindowGeom::new(self.resolution(stage), self.window(stage), block % 2 == 1)
    }
    fn table_rows(&self, stage: usize) -> usize {
        let g = self.geom(stage, 0);
        (2 * g.wh - 1) * (2 * g.ww - 1)
    }

    /// Every parameter's timm name and shape, in `state_dict()` order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d0, p, c) = (self.embed_dim, self.patch_size, self.in_chans);
        let mut v: Vec<(String, Vec<usize>)> = vec![
            ("patch_embed.proj.weight".into(), vec![d0, c, p, p]),
            ("patch_embed.proj.bias".into(), vec![d0]),
            ("patch_embed.norm.weight".into(), vec![d0]),
            ("patch_embed.norm.bias".into(), vec![d0]),
        ];
        for i in 0..self.stages() {
            let d = self.dim(i);
            if i > 0 {
                let pre = format!("layers.{i}.downsample.");
                v.push((format!("{pre}norm.weight"), vec![2 * d]));
                v.push((format!("{pre}norm.bias"), vec![2 * d]));
                v.push((format!("{pre}reduction.weight"), vec![d, 2 * d]));
            }
            let (a, hid, heads) = (self.num_heads[i] * self.head_dim(i), self.mlp_hidden(i), self.num_heads[i]);
            for j in 0..self.depths[i] {
                let pre = format!("layers.{i}.blocks.{j}.");
                v.push((format!("{pre}norm1.weight"), vec![d]));
                v.push((format!("{pre}norm1.bias"), vec![d]));
                v.push((format!("{pre}attn.relative_position_bias_table"), vec![self.table_rows(i), heads]));
                v.push((format!("{pre}attn.qkv.weight"), vec![3 * a, d]));
                if self.qkv_bias {
                    v.push((format!("{pre}attn.qkv.bias"), vec![3 * a]));
                }
                for (name, shape) in [
                    ("attn.proj.weight", vec![d, a]),
                    ("attn.proj.bias", vec![d]),
                    ("norm2.weight", vec![d]),
                    ("norm2.bias", vec![d]),
                    ("mlp.fc1.weight", vec![hid, d]),
                    ("mlp.fc1.bias", vec![hid]),
                    ("mlp.fc2.weight", vec![d, hid]),
                    ("mlp.fc2.bias", vec![d]),
                ] {
                    v.push((format!("{pre}{name}"), shape));
                }
            }
        }
        let f = self.num_features();
        v.push(("norm.weight".into(), vec![f]));
        v.push(("norm.bias".into(), vec![f]));
        if self.num_classes > 0 {
            v.push(("head.fc.weight".into(), vec![self.num_classes, f]));
            v.push(("head.fc.bias".into(), vec![self.num_classes]));
        }
        v
    }

    /// Multiply-add FLOPs of one forward pass's matmuls for `batch` images (×2 per MAC),
    /// padding tokens included; backward costs twice this.
    pub fn forward_matmul_flops(&self, batch: usize) -> f64 {
        let [gh, gw] = self.grid();
        let e = (self.in_chans * self.patch_size * self.patch_size) as f64;
        let mut macs = (gh * gw) as f64 * e * self.embed_dim as f64;
        for i in 0..self.stages() {
            let [h, w] = self.resolution(i);
            let (d, hid, a) =
                (self.dim(i) as f64, self.mlp_hidden(i) as f64, (self.num_heads[i] * self.head_dim(i)) as f64);
            let tokens = (h * w) as f64;
            if i > 0 {
                macs += tokens * 2.0 * d * d; // reduction 2d -> d (of the previous stage's 4 × d/2)
            }
            for j in 0..self.depths[i] {
                let g = self.geom(i, j);
                let padded = (g.windows() * g.tokens()) as f64;
                macs += padded * (3.0 * a * d + a * d + 2.0 * a * g.tokens() as f64) + tokens * 2.0 * d * hid;
            }
        }
        macs += self.num_features() as f64 * self.num_classes as f64;
        2.0 * batch as f64 * macs
    }

    /// Matmul FLOPs of a training step (forward and backward, without the image gradient).
    pub fn train_step_matmul_flops(&self, batch: usize) -> f64 {
        let [gh, gw] = self.grid();
        let patch = 2.0 * (batch * gh * gw * self.in_chans * self.patch_size * self.patch_size * self.embed_dim) as f64;
        3.0 * self.forward_matmul_flops(batch) - patch
    }
}

/// One Swin block's layers (weights, or gradients under the same names).
struct SwinBlock<B: Backend> {
    norm1: LayerNorm<B>,
    table: B::Buf,
    qkv: Linear<B>,
    proj: Linear<B>,
    norm2: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    heads: usize,
    head_dim: usize,
    geom: WindowGeom,
}

struct Merge<B: Backend> {
    norm: LayerNorm<B>,
    reduction: Linear<B>,
}

struct Stage<B: Backend> {
    downsample: Option<Merge<B>>,
    blocks: Vec<SwinBlock<B>>,
}

/// The model's layers bound to a [`Params`] (weights, or gradients of the same names).
struct Parts<B: Backend> {
    patch: Linear<B>,
    patch_norm: LayerNorm<B>,
    stages: Vec<Stage<B>>,
    norm: LayerNorm<B>,
    head: Option<Linear<B>>,
}

impl<B: Backend> Parts<B> {
    fn bind(cfg: &SwinConfig, p: &Params<B>) -> Self {
        let e = cfg.in_chans * cfg.patch_size * cfg.patch_size;
        let stages = (0..cfg.stages())
            .map(|i| {
                let d = cfg.dim(i);
                let a = cfg.num_heads[i] * cfg.head_dim(i);
                let downsample = (i > 0).then(|| Merge {
                    norm: layernorm(p, &format!("layers.{i}.downsample.norm"), 2 * d, EPS),
                    reduction: linear(p, &format!("layers.{i}.downsample.reduction"), 2 * d, d, false),
                });
                let blocks = (0..cfg.depths[i])
                    .map(|j| {
                        let pre = format!("layers.{i}.blocks.{j}.");
                        SwinBlock {
                            norm1: layernorm(p, &format!("{pre}norm1"), d, EPS),
                            table: p.get(&format!("{pre}attn.relative_position_bias_table")).clone(),
                            qkv: linear(p, &format!("{pre}attn.qkv"), d, 3 * a, cfg.qkv_bias),
                            proj: linear(p, &format!("{pre}attn.proj"), a, d, true),
                            norm2: layernorm(p, &format!("{pre}norm2"), d, EPS),
                            fc1: linear(p, &format!("{pre}mlp.fc1"), d, cfg.mlp_hidden(i), true),
                            fc2: linear(p, &format!("{pre}mlp.fc2"), cfg.mlp_hidden(i), d, true),
                            heads: cfg.num_heads[i],
                            head_dim: cfg.head_dim(i),
                            geom: cfg.geom(i, j),
                        }
                    })
                    .collect();
                Stage { downsample, blocks }
            })
            .collect();
        Parts {
            patch: linear(p, "patch_embed.proj", e, cfg.embed_dim, true),
            patch_norm: layernorm(p, "patch_embed.norm", cfg.embed_dim, EPS),
            stages,
            norm: layernorm(p, "norm", cfg.num_features(), EPS),
            head: (cfg.num_classes > 0).then(|| linear(p, "head.fc", cfg.num_features(), cfg.num_classes, true)),
        }
    }
}

/// A block's index maps and bias inputs, drawn on the CPU for one batch size.
struct Maps<B: Backend> {
    partition: B::Buf,
    reverse: B::Buf,
    index: B::Buf,
    csr_offsets: B::Buf,
    csr_entries: B::Buf,
    table_rows: usize,
    mask: Option<B::Buf>,
}

impl<B: Backend> Maps<B> {
    fn new(be: &B, g: &WindowGeom, batch: usize) -> Self {
        let index = relative_position_index(g.wh, g.ww);
        let table_rows = (2 * g.wh - 1) * (2 * g.ww - 1);
        let csr = Csr::of_index(&index, table_rows);
        Maps {
            partition: be.upload_u32(&g.partition_map(batch)),
            reverse: be.upload_u32(&g.reverse_map(batch)),
            index: be.upload_u32(&index),
            csr_offsets: be.upload_u32(&csr.offsets),
            csr_entries: be.upload_u32(&csr.entries),
            table_rows,
            mask: g.shifted().then(|| be.upload(&g.attn_mask())),
        }
    }
}

/// What one Swin block's forward keeps for its backward.
pub struct SwinBlockSaved<B: Backend> {
    maps: Maps<B>,
    x: B::Buf,
    ln1_saved: NormSaved<B>,
    /// `norm1(x)` in window order `[batch·nw·n, dim]`, zero rows for padding.
    windows: B::Buf,
    qkv: B::Buf,
    /// Attention probabilities `[batch·nw, heads, n, n]` (window order, see [`WindowGeom`]).
    pub probs: B::Buf,
    attn_out: B::Buf,
    x_mid: B::Buf,
    ln2: B::Buf,
    ln2_saved: NormSaved<B>,
    hidden: B::Buf,
    act: B::Buf,
}

impl<B: Backend> SwinBlock<B> {
    fn attention(&self, batch: usize) -> Attention {
        let g = &self.geom;
        Attention { batch: batch * g.windows(), tokens: g.tokens(), heads: self.heads, head_dim: self.head_dim }
    }

    /// `x: [batch, h, w, dim]` → the block's output (a new buffer) and what backward needs.
    fn forward(&self, be: &B, x: B::Buf, batch: usize) -> (SwinBlockSaved<B>, B::Buf) {
        let g = self.geom;
        let maps = Maps::new(be, &g, batch);
        let (rows, d, hid) = (batch * g.h * g.w, self.norm1.dim, self.fc1.out);
        let wrows = batch * g.windows() * g.tokens();
        let ln1 = be.alloc(rows * d);
        let ln1_saved = self.norm1.forward(be, &x, &ln1, rows);
        let windows = be.alloc(wrows * d);
        be.gather_rows(&ln1, &maps.partition, None, &windows, wrows, d);
        let qkv = be.alloc(wrows * self.qkv.out);
        self.qkv.forward(be, &windows, &qkv, wrows);
        let attn_out = be.alloc(wrows * self.proj.inp);
        let att = self.attention(batch);
        let probs = att.forward_biased(be, &qkv, &attn_out, |scores| {
            let (nw, n) = (g.windows(), g.tokens());
            be.rel_pos_bias_forward(scores, &self.table, &maps.index, maps.mask.as_ref(), att.batch, nw, self.heads, n);
        });
        let projected = be.alloc(wrows * d);
        self.proj.forward(be, &attn_out, &projected, wrows);
        let back = be.alloc(rows * d);
        be.gather_rows(&projected, &maps.reverse, None, &back, rows, d);
        let x_mid = be.alloc(rows * d);
        be.add(&x, &back, &x_mid, rows * d);

        let ln2 = be.alloc(rows * d);
        let ln2_saved = self.norm2.forward(be, &x_mid, &ln2, rows);
        let hidden = be.alloc(rows * hid);
        self.fc1.forward(be, &ln2, &hidden, rows);
        let act = be.alloc(rows * hid);
        be.gelu_forward(&hidden, &act, rows * hid);
        let out = be.alloc(rows * d);
        be.copy(&x_mid, 0, &out, 0, rows * d);
        self.fc2.forward_add(be, &act, &out, rows);
        let saved =
            SwinBlockSaved { maps, x, ln1_saved, windows, qkv, probs, attn_out, x_mid, ln2, ln2_saved, hidden, act };
        (saved, out)
    }

    /// In place on the residual stream, as [`crate::transformer::Block::backward`].
    fn backward(&self, be: &B, g: &SwinBlock<B>, s: &SwinBlockSaved<B>, dx: &B::Buf, batch: usize) {
        let geom = self.geom;
        let (rows, d, hid) = (batch * geom.h * geom.w, self.norm1.dim, self.fc1.out);
        let wrows = batch * geom.windows() * geom.tokens();
        let dact = be.alloc(rows * hid);
        self.fc2.backward(be, dx, &s.act, &g.fc2, Some(&dact), rows);
        let dhidden = be.alloc(rows * hid);
        be.gelu_backward(&dact, &s.hidden, &dhidden, rows * hid);
        let dln2 = be.alloc(rows * d);
        self.fc1.backward(be, &dhidden, &s.ln2, &g.fc1, Some(&dln2), rows);
        self.norm2.backward(be, &dln2, &s.ln2_saved, &s.x_mid, &g.norm2, dx, rows);

        // Padding rows of the windows were cropped away: their gradient is zero.
        let dprojected = be.alloc(wrows * d);
        be.gather_rows(dx, &s.maps.partition, None, &dprojected, wrows, d);
        let dattn = be.alloc(wrows * self.proj.inp);
        self.proj.backward(be, &dprojected, &s.attn_out, &g.proj, Some(&dattn), wrows);
        let dqkv = be.alloc(wrows * self.qkv.out);
        let att = self.attention(batch);
        att.backward_biased(be, &dattn, &s.probs, &s.qkv, &dqkv, |dscores| {
            let m = &s.maps;
            be.rel_pos_bias_backward(
                dscores,
                &m.csr_offsets,
                &m.csr_entries,
                &g.table,
                att.batch,
                self.heads,
                geom.tokens(),
                m.table_rows,
            );
        });
        let dwindows = be.alloc(wrows * d);
        self.qkv.backward(be, &dqkv, &s.windows, &g.qkv, Some(&dwindows), wrows);
        let dln1 = be.alloc(rows * d);
        be.gather_rows(&dwindows, &s.maps.reverse, None, &dln1, rows, d);
        self.norm1.backward(be, &dln1, &s.ln1_saved, &s.x, &g.norm1, dx, rows);
    }
}

/// What a downsample's forward keeps.
struct MergeSaved<B: Backend> {
    unmerge: B::Buf,
    merged: B::Buf,
    normed: B::Buf,
    norm_saved: NormSaved<B>,
}

/// A forward pass: its outputs, and everything its backward needs.
pub struct SwinForward<B: Backend> {
    pub batch: usize,
    patches: B::Buf,
    embedded: B::Buf,
    embed_norm: NormSaved<B>,
    merges: Vec<Option<MergeSaved<B>>>,
    /// Per stage, per block.
    pub blocks: Vec<Vec<SwinBlockSaved<B>>>,
    x_final: B::Buf,
    /// timm's `forward_features`: the final-norm tokens, NHWC `[batch, h, w, num_features]`.
    pub features: B::Buf,
    norm_saved: NormSaved<B>,
    /// `forward_head(pre_logits=True)`: the mean of `features` over the map `[batch, num_features]`.
    pub pooled: B::Buf,
    /// `[batch, num_classes]` when the model has a head.
    pub logits: Option<B::Buf>,
}

pub struct Swin<B: Backend> {
    pub cfg: SwinConfig,
    pub params: Params<B>,
}

impl<B: Backend> Swin<B> {
    /// Fresh weights as timm initialises them: trunc-normal(0.02) linear weights and
    /// relative position bias tables, zero biases, unit LayerNorms, and PyTorch's default
    /// Conv2d init for the patch embedding.
    pub fn init(be: &B, cfg: SwinConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut params = Params::new();
        let fan_in = (cfg.in_chans * cfg.patch_size * cfg.patch_size) as f32;
        for (name, shape) in cfg.param_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.starts_with("patch_embed.proj") {
                let bound = fan_in.powf(-0.5);
                (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect()
            } else if name.ends_with("relative_position_bias_table") || name.ends_with("weight") && shape.len() == 2 {
                (0..n).map(|_| rng.trunc_normal(0.02)).collect()
            } else if name.ends_with("norm.weight") || name.ends_with("norm1.weight") || name.ends_with("norm2.weight")
            {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            };
            params.push(name, shape, be.upload(&values));
        }
        Swin { cfg, params }
    }

    /// Load timm-named weights; names the missing, unexpected or misshapen tensors.
    /// Tensors under `input.`/`expect.` (fixtures) are ignored.
    pub fn from_file(be: &B, cfg: SwinConfig, file: &TensorFile) -> Result<Self, WeightsError> {
        cfg.validate()?;
        let params = Params::load(be, &cfg.param_shapes(), &[], file)?;
        Ok(Swin { cfg, params })
    }

    /// `x: [batch, in_chans, h, w]` → features, pooled output and logits.
    pub fn forward(&self, be: &B, x: &B::Buf, batch: usize) -> SwinForward<B> {
        let cfg = &self.cfg;
        let w = Parts::bind(cfg, &self.params);
        let [gh, gw] = cfg.grid();
        let (l, d0, e) = (gh * gw, cfg.embed_dim, w.patch.inp);
        let [h, wd] = cfg.img_size;
        let patches = be.alloc(batch * l * e);
        be.patchify_forward(x, &patches, batch, cfg.in_chans, h, wd, cfg.patch_size, PatchOrder::ChannelFirst);
        let embedded = be.alloc(batch * l * d0);
        w.patch.forward(be, &patches, &embedded, batch * l);
        let mut xs = be.alloc(batch * l * d0);
        let embed_norm = w.patch_norm.forward(be, &embedded, &xs, batch * l);

        let (mut merges, mut blocks) = (Vec::new(), Vec::new());
        for (i, stage) in w.stages.iter().enumerate() {
            merges.push(stage.downsample.as_ref().map(|m| {
                let prev = cfg.resolution(i - 1);
                let [h2, w2] = cfg.resolution(i);
                let (rows, c) = (batch * h2 * w2, cfg.dim(i - 1));
                let merged = be.alloc(rows * 4 * c);
                be.gather_rows(&xs, &be.upload_u32(&merge_map(batch, prev)), None, &merged, rows * 4, c);
                let normed = be.alloc(rows * 4 * c);
                let norm_saved = m.norm.forward(be, &merged, &normed, rows);
                xs = be.alloc(rows * 2 * c);
                m.reduction.forward(be, &normed, &xs, rows);
                MergeSaved { unmerge: be.upload_u32(&unmerge_map(batch, prev)), merged, normed, norm_saved }
            }));
            let mut saved = Vec::with_capacity(stage.blocks.len());
            for blk in &stage.blocks {
                let (s, out) = blk.forward(be, xs, batch);
                saved.push(s);
                xs = out;
            }
            blocks.push(saved);
        }

        let [fh, fw] = cfg.resolution(cfg.stages() - 1);
        let (tokens, f) = (fh * fw, cfg.num_features());
        let features = be.alloc(batch * tokens * f);
        let norm_saved = w.norm.forward(be, &xs, &features, batch * tokens);
        let pooled = be.alloc(batch * f);
        be.matmul(&self.mean_of_tokens(batch), &self.mean_weights(be), &features, None, &pooled);
        let logits = w.head.as_ref().map(|head| {
            let logits = be.alloc(batch * head.out);
            head.forward(be, &pooled, &logits, batch);
            logits
        });
        SwinForward {
            batch,
            patches,
            embedded,
            embed_norm,
            merges,
            blocks,
            x_final: xs,
            features,
            norm_saved,
            pooled,
            logits,
        }
    }

    /// Backward of [`Swin::forward`]: adds parameter gradients into `grads` (same names as
    /// `params`) and, when `dimg` is given, the image gradient into it. Upstream gradients
    /// may come for the logits, the pooled features, the features, or any of them.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        be: &B,
        fwd: &SwinForward<B>,
        dlogits: Option<&B::Buf>,
        dpooled: Option<&B::Buf>,
        dfeatures: Option<&B::Buf>,
        grads: &Params<B>,
        dimg: Option<&B::Buf>,
    ) {
        let cfg = &self.cfg;
        let (w, g) = (Parts::bind(cfg, &self.params), Parts::bind(cfg, grads));
        let batch = fwd.batch;
        let [fh, fw] = cfg.resolution(cfg.stages() - 1);
        let (tokens, f) = (fh * fw, cfg.num_features());

        let dpool = be.alloc(batch * f);
        if let Some(dp) = dpooled {
            be.copy(dp, 0, &dpool, 0, batch * f);
        }
        if let (Some(dlogits), Some(head)) = (dlogits, &w.head) {
            head.backward(be, dlogits, &fwd.pooled, g.head.as_ref().unwrap(), Some(&dpool), batch);
        }
        let dfeat = be.alloc(batch * tokens * f);
        if let Some(df) = dfeatures {
            be.copy(df, 0, &dfeat, 0, batch * tokens * f);
        }
        if dlogits.is_some() || dpooled.is_some() {
            // dfeat[b, t] += dpool[b] / T : the transpose of the mean's matmul
            let mm = self.mean_of_tokens(batch);
            let back = Matmul {
                m: tokens,
                n: f,
                k: 1,
                a: Strides { offset: 0, row: 1, col: 1, batch_stride: [0, 0] },
                b: Strides { offset: 0, row: f, col: 1, batch_stride: [f, 0] },
                c: mm.b,
                beta: 1.0,
                ..mm
            };
            be.matmul(&back, &self.mean_weights(be), &dpool, None, &dfeat);
        }
        let mut dx = be.alloc(batch * tokens * f);
        w.norm.backward(be, &dfeat, &fwd.norm_saved, &fwd.x_final, &g.norm, &dx, batch * tokens);

        for i in (0..cfg.stages()).rev() {
            let (ws, gs) = (&w.stages[i], &g.stages[i]);
            for ((blk, gb), s) in ws.blocks.iter().zip(&gs.blocks).zip(&fwd.blocks[i]).rev() {
                blk.backward(be, gb, s, &dx, batch);
            }
            if let (Some(m), Some(gm), Some(s)) = (&ws.downsample, &gs.downsample, &fwd.merges[i]) {
                let [h2, w2] = cfg.resolution(i);
                let [ph, pw] = cfg.resolution(i - 1);
                let (rows, c) = (batch * h2 * w2, cfg.dim(i - 1));
                let dnormed = be.alloc(rows * 4 * c);
                m.reduction.backward(be, &dx, &s.normed, &gm.reduction, Some(&dnormed), rows);
                let dmerged = be.alloc(rows * 4 * c);
                m.norm.backward(be, &dnormed, &s.norm_saved, &s.merged, &gm.norm, &dmerged, rows);
                dx = be.alloc(batch * ph * pw * c);
                be.gather_rows(&dmerged, &s.unmerge, None, &dx, batch * ph * pw, c);
            }
        }

        let [gh, gw] = cfg.grid();
        let (l, d0) = (gh * gw, cfg.embed_dim);
        let dembedded = be.alloc(batch * l * d0);
        w.patch_norm.backward(be, &dx, &fwd.embed_norm, &fwd.embedded, &g.patch_norm, &dembedded, batch * l);
        let dpatches = dimg.map(|_| be.alloc(batch * l * w.patch.inp));
        w.patch.backward(be, &dembedded, &fwd.patches, &g.patch, dpatches.as_ref(), batch * l);
        if let (Some(dimg), Some(dp)) = (dimg, &dpatches) {
            let [h, wd] = cfg.img_size;
            be.patchify_backward(dp, dimg, batch, cfg.in_chans, h, wd, cfg.patch_size, PatchOrder::ChannelFirst);
        }
    }

    /// `mean[b] = Σ_t features[b, t] / T` as a batched matmul `[1, T] · [T, f]`.
    fn mean_of_tokens(&self, batch: usize) -> Matmul {
        let [fh, fw] = self.cfg.resolution(self.cfg.stages() - 1);
        let (t, f) = (fh * fw, self.cfg.num_features());
        Matmul {
            m: 1,
            n: f,
            k: t,
            batch: [batch, 1],
            a: Strides { offset: 0, row: 0, col: 1, batch_stride: [0, 0] },
            b: Strides { offset: 0, row: f, col: 1, batch_stride: [t * f, 0] },
            c: Strides { offset: 0, row: f, col: 1, batch_stride: [f, 0] },
            alpha: 1.0,
            beta: 0.0,
        }
    }

    fn mean_weights(&self, be: &B) -> B::Buf {
        let [fh, fw] = self.cfg.resolution(self.cfg.stages() - 1);
        be.upload(&vec![1.0 / (fh * fw) as f32; fh * fw])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::ops::testing::*;

    fn micro() -> SwinConfig {
        SwinConfig {
            img_size: [14, 10],
            patch_size: 2,
            in_chans: 2,
            embed_dim: 4,
            depths: vec![2, 1],
            num_heads: vec![2, 2],
            window_size: WindowSize::Pair([3, 2]),
            mlp_ratio: 2.0,
            qkv_bias: true,
            num_classes: 3,
            ..SwinConfig::default()
        }
    }

    #[test]
    fn window_maps_are_mutual_inverses_on_real_tokens() {
        for g in [
            WindowGeom::new([7, 5], [4, 2], true),
            WindowGeom::new([8, 8], [4, 4], true),
            WindowGeom::new([4, 3], [4, 2], true),
            WindowGeom::new([3, 3], [7, 7], true),
        ] {
            let (part, rev) = (g.partition_map(2), g.reverse_map(2));
            assert_eq!(part.iter().filter(|r| **r != NO_ROW).count(), rev.len(), "{g:?}");
            for (tok, &row) in rev.iter().enumerate() {
                assert_eq!(part[row as usize], tok as u32, "{g:?}");
            }
        }
        let (m, u) = (merge_map(2, [5, 3]), unmerge_map(2, [5, 3]));
        for (tok, &row) in u.iter().enumerate() {
            assert_eq!(m[row as usize], tok as u32);
        }
    }

    #[test]
    fn shift_mask_matches_timm_for_an_8x8_map_with_window_4() {
        // timm: layers.0.blocks.1 of swin_tiny; window 3 (bottom right) mixes four regions.
        let g = WindowGeom::new([8, 8], [4, 4], true);
        let mask = g.attn_mask();
        let nn = 256;
        assert!(mask[..nn].iter().all(|v| *v == 0.0), "the top-left window is one region");
        // Window 1 (top right): columns 4..6 and 6..8 are different regions.
        assert_eq!(mask[nn + 1], 0.0);
        assert_eq!(mask[nn + 2], -100.0);
        let w3 = &mask[3 * nn..];
        assert_eq!(w3.iter().filter(|v| **v == 0.0).count(), 4 * 16, "four 2x2 regions of 4 tokens");
    }

    fn loss_of(model: &Swin<Cpu>, be: &Cpu, x: &[f32], batch: usize, labels: &[u32]) -> f64 {
        let fwd = model.forward(be, &be.upload(x), batch);
        let classes = model.cfg.num_classes;
        let (losses, probs) = (be.alloc(batch), be.alloc(batch * classes));
        be.cross_entropy_forward(fwd.logits.as_ref().unwrap(), &be.upload_u32(labels), &losses, &probs, batch, classes);
        crate::block_on(be.read(&losses)).iter().map(|v| *v as f64).sum::<f64>() / batch as f64
    }

    #[test]
    fn swin_backward_matches_finite_differences() {
        let be = Cpu;
        let cfg = micro();
        let model = Swin::init(&be, cfg.clone(), 0);
        for (i, p) in model.params.list.iter().enumerate() {
            let n: usize = p.shape.iter().product();
            let v: Vec<f32> = randn(n, 20 + i as u64).iter().map(|x| x * 0.5).collect();
            be.write(&p.buf, &v);
        }
        let batch = 2;
        let x = randn(batch * 2 * 14 * 10, 3);
        let labels = [1u32, 2];
        let fwd = model.forward(&be, &be.upload(&x), batch);
        let (losses, probs) = (be.alloc(batch), be.alloc(batch * 3));
        let lb = be.upload_u32(&labels);
        be.cross_entropy_forward(fwd.logits.as_ref().unwrap(), &lb, &losses, &probs, batch, 3);
        let dlogits = be.alloc(batch * 3);
        be.cross_entropy_backward(&be.upload(&[0.5, 0.5]), &probs, &lb, &dlogits, batch, 3);
        let grads = model.params.zeros_like(&be);
        let dimg = be.alloc(x.len());
        model.backward(&be, &fwd, Some(&dlogits), None, None, &grads, Some(&dimg));

        let fd_x = finite_diff(&x, 1e-2, |x| loss_of(&model, &be, x, batch, &labels));
        assert_close_f64("d input", &crate::block_on(be.read(&dimg)), &fd_x, 2e-3, 2e-2);
        for p in &model.params.list {
            let w0 = crate::block_on(be.read(&p.buf));
            let fd = finite_diff(&w0, 1e-2, |w| {
                be.write(&p.buf, w);
                loss_of(&model, &be, &x, batch, &labels)
            });
            be.write(&p.buf, &w0);
            let g = crate::block_on(be.read(grads.get(&p.name)));
            assert_close_f64(&format!("d {}", p.name), &g, &fd, 2e-3, 2e-2);
        }
    }

    #[test]
    fn config_reads_timm_window_sizes_and_rejects_bad_ones() {
        let c =
            SwinConfig::from_json(r#"{"img_size": 32, "depths": [2, 2], "num_heads": [3, 6], "window_size": [4, 2]}"#)
                .unwrap();
        assert_eq!(c.window_size, WindowSize::Pair([4, 2]));
        let c = SwinConfig::from_json(r#"{"depths": [2, 2, 2], "num_heads": [3, 6, 12], "window_size": [7, 7, 3]}"#)
            .unwrap();
        assert_eq!(c.geom(2, 1).wh, 3);
        let e = SwinConfig::from_json(r#"{"depths": [2, 2], "num_heads": [3]}"#).unwrap_err();
        assert!(e.to_string().contains("same stages"), "{e}");
        let e = SwinConfig::from_json(r#"{"global_pool": "token"}"#).unwrap_err();
        assert!(e.to_string().contains("global_pool"), "{e}");
    }
}
