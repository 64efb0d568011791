//! One interface for the backbones methods train, so method code never asks which it has:
//! a forward that keeps what backward needs, the pooled embedding `[batch, dim]` (ViT's
//! class token or mean, Swin's mean), the final patch tokens `[batch, h·w, dim]` with their
//! grid, one layer's attention for visualisation, and a backward taking gradients for the
//! pooled embedding and/or the tokens.
//!
//! [`Vit`] is adapted without changing it: the pooled and token views are gathers of its
//! `features`, and their gradients scatter back into a `dfeatures` for [`Vit::backward`];
//! for avg pooling the mean and `fc_norm` are recomputed here so `dpooled` can enter. A
//! masked forward (iBOT's student, [`Vit::forward_masked`]) gets the same views from
//! [`Vit::views`], and the same backward.
use std::future::Future;

use crate::backend::{Backend, Matmul, Strides, NO_ROW};
use crate::layers::{LayerNorm, NormSaved};
use crate::params::Params;
use crate::swin::{Swin, SwinForward};
use crate::transformer::layernorm;
use crate::vit::{Vit, VitForward};

/// One layer's attention over the patch grid, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionMap {
    pub batch: usize,
    pub heads: usize,
    /// The layer's token grid `[h, w]`; `l = h·w`.
    pub grid: [usize; 2],
    /// `[batch, heads, l, l]`: query patch → key patch, raster order. Pairs a windowed layer
    /// does not relate (different windows) are 0.
    pub patches: Vec<f32>,
    /// `[batch, heads, l]`: class token → patch, for backbones with a class token.
    pub cls: Option<Vec<f32>>,
    /// `[batch, heads]`: the class token's attention on the register tokens, summed (empty
    /// for a backbone without registers).
    pub cls_to_registers: Vec<f32>,
}

pub trait Backbone<B: Backend> {
    /// What a forward keeps for its backward.
    type Saved;
    fn params(&self) -> &Params<B>;
    /// Width of the pooled embedding and of the tokens.
    fn embed_dim(&self) -> usize;
    /// Grid of the final tokens.
    fn token_grid(&self) -> [usize; 2];
    /// Attention layers (blocks), counted across stages.
    fn attention_layers(&self) -> usize;

    /// `x: [batch, c, h, w]`.
    fn forward(&self, be: &B, x: &B::Buf, batch: usize) -> Self::Saved;
    /// `[batch, embed_dim]`.
    fn pooled<'a>(&self, saved: &'a Self::Saved) -> &'a B::Buf;
    /// `[batch, h·w, embed_dim]` in raster order of [`Backbone::token_grid`].
    fn tokens<'a>(&self, saved: &'a Self::Saved) -> &'a B::Buf;
    fn attention(&self, be: &B, saved: &Self::Saved, layer: usize) -> impl Future<Output = AttentionMap>;
    /// Adds parameter gradients into `grads` and, when given, the image gradient into `dimg`.
    fn backward(
        &self,
        be: &B,
        saved: &Self::Saved,
        dpooled: Option<&B::Buf>,
        dtokens: Option<&B::Buf>,
        grads: &Params<B>,
        dimg: Option<&B::Buf>,
    );
}

// ---- Swin ----

impl<B: Backend> Backbone<B> for Swin<B> {
    type Saved = SwinForward<B>;
    fn params(&self) -> &Params<B> {
        &self.params
    }
    fn embed_dim(&self) -> usize {
        self.cfg.num_features()
    }
    fn token_grid(&self) -> [usize; 2] {
        self.cfg.resolution(self.cfg.stages() - 1)
    }
    fn attention_layers(&self) -> usize {
        self.cfg.depths.iter().sum()
    }
    fn forward(&self, be: &B, x: &B::Buf, batch: usize) -> SwinForward<B> {
        Swin::forward(self, be, x, batch)
    }
    fn pooled<'a>(&self, saved: &'a SwinForward<B>) -> &'a B::Buf {
        &saved.pooled
    }
    fn tokens<'a>(&self, saved: &'a SwinForward<B>) -> &'a B::Buf {
        &saved.features
    }
    async fn attention(&self, be: &B, saved: &SwinForward<B>, layer: usize) -> AttentionMap {
        let (mut stage, mut block) = (0, layer);
        while block >= self.cfg.depths[stage] {
            block -= self.cfg.depths[stage];
            stage += 1;
        }
        let (g, heads) = (self.cfg.geom(stage, block), self.cfg.num_heads[stage]);
        let probs = be.read(&saved.blocks[stage][block].probs).await;
        let (batch, l, n) = (saved.batch, g.h * g.w, g.tokens());
        let (part, rev) = (g.partition_map(batch), g.reverse_map(batch));
        let mut patches = vec![0.0; batch * heads * l * l];
        for (tok, &row) in rev.iter().enumerate() {
            let (b, q) = (tok / l, tok % l);
            let (bw, ti) = (row as usize / n, row as usize % n);
            for tj in 0..n {
                let key = part[bw * n + tj];
                if key == NO_ROW {
                    continue;
                }
                for h in 0..heads {
                    patches[((b * heads + h) * l + q) * l + key as usize - b * l] =
                        probs[((bw * heads + h) * n + ti) * n + tj];
                }
            }
        }
        AttentionMap { batch, heads, grid: [g.h, g.w], patches, cls: None, cls_to_registers: Vec::new() }
    }
    fn backward(
        &self,
        be: &B,
        saved: &SwinForward<B>,
        dpooled: Option<&B::Buf>,
        dtokens: Option<&B::Buf>,
        grads: &Params<B>,
        dimg: Option<&B::Buf>,
    ) {
        Swin::backward(self, be, saved, None, dpooled, dtokens, grads, dimg);
    }
}

// ---- ViT ----

/// A ViT forward with the backbone views of it.
pub struct VitSaved<B: Backend> {
    pub fwd: VitForward<B>,
    pooled: B::Buf,
    tokens: B::Buf,
    /// Avg pooling: the mean of patch tokens and `fc_norm`'s statistics.
    mean: Option<(B::Buf, NormSaved<B>)>,
}

impl<B: Backend> Vit<B> {
    fn avg(&self) -> bool {
        self.cfg.global_pool == "avg"
    }
    fn fc_norm(&self, p: &Params<B>) -> LayerNorm<B> {
        layernorm(p, "fc_norm", self.cfg.embed_dim, 1e-6)
    }
    /// `[batch, prefix + L]` rows of `features` → `rows` of `dst`: the class token of each
    /// image (`cls`), or its patch tokens (registers are in neither view).
    fn row_map(&self, batch: usize, cls: bool) -> Vec<u32> {
        let (n, l, prefix) = (self.cfg.tokens(), self.cfg.patches(), self.cfg.prefix_tokens());
        if cls {
            (0..batch).map(|b| (b * n) as u32).collect()
        } else {
            (0..batch * l).map(|r| (r / l * n + prefix + r % l) as u32).collect()
        }
    }
    /// The inverse of [`Vit::row_map`]: for each features row, its row in the view.
    fn row_unmap(&self, batch: usize, cls: bool) -> Vec<u32> {
        let (n, l, prefix) = (self.cfg.tokens(), self.cfg.patches(), self.cfg.prefix_tokens());
        (0..batch * n)
            .map(|r| match (r % n, cls) {
                (0, true) => (r / n) as u32,
                (t, false) if t >= prefix => (r / n * l + t - prefix) as u32,
                _ => NO_ROW,
            })
            .collect()
    }
    /// `mean[b] = Σ_t tokens[b, t] / L`, as a batched `[1, L] · [L, d]`.
    fn mean_mm(&self, batch: usize) -> Matmul {
        let (l, d) = (self.cfg.patches(), self.cfg.embed_dim);
        Matmul {
            m: 1,
            n: d,
            k: l,
            batch: [batch, 1],
            a: Strides { offset: 0, row: 0, col: 1, batch_stride: [0, 0] },
            b: Strides { offset: 0, row: d, col: 1, batch_stride: [l * d, 0] },
            c: Strides { offset: 0, row: d, col: 1, batch_stride: [d, 0] },
            alpha: 1.0,
            beta: 0.0,
        }
    }

    /// The backbone views of a forward (e.g. iBOT's masked one, [`Vit::forward_masked`]);
    /// [`Backbone::backward`] takes them back through it.
    pub fn views(&self, be: &B, fwd: VitForward<B>) -> VitSaved<B> {
        let batch = fwd.batch;
        let (l, d) = (self.cfg.patches(), self.cfg.embed_dim);
        let tokens = be.alloc(batch * l * d);
        be.gather_rows(&fwd.features, &be.upload_u32(&self.row_map(batch, false)), None, &tokens, batch * l, d);
        let pooled = be.alloc(batch * d);
        let mean = if self.avg() {
            let mean = be.alloc(batch * d);
            be.matmul(&self.mean_mm(batch), &be.upload(&vec![1.0 / l as f32; l]), &tokens, None, &mean);
            let saved = self.fc_norm(&self.params).forward(be, &mean, &pooled, batch);
            Some((mean, saved))
        } else {
            be.gather_rows(&fwd.features, &be.upload_u32(&self.row_map(batch, true)), None, &pooled, batch, d);
            None
        };
        VitSaved { fwd, pooled, tokens, mean }
    }
}

impl<B: Backend> Backbone<B> for Vit<B> {
    type Saved = VitSaved<B>;
    fn params(&self) -> &Params<B> {
        &self.params
    }
    fn embed_dim(&self) -> usize {
        self.cfg.embed_dim
    }
    fn token_grid(&self) -> [usize; 2] {
        self.cfg.grid()
    }
    fn attention_layers(&self) -> usize {
        self.cfg.depth
    }
    fn forward(&self, be: &B, x: &B::Buf, batch: usize) -> VitSaved<B> {
        self.views(be, Vit::forward(self, be, x, batch))
    }
    fn pooled<'a>(&self, saved: &'a VitSaved<B>) -> &'a B::Buf {
        &saved.pooled
    }
    fn tokens<'a>(&self, saved: &'a VitSaved<B>) -> &'a B::Buf {
        &saved.tokens
    }
    async fn attention(&self, be: &B, saved: &VitSaved<B>, layer: usize) -> AttentionMap {
        let probs = be.read(&saved.fwd.blocks[layer].probs).await;
        let (batch, heads, n, l) = (saved.fwd.batch, self.cfg.num_heads, self.cfg.tokens(), self.cfg.patches());
        // registers, like the class token, are left out of the patch maps
        let prefix = self.cfg.prefix_tokens();
        let mut patches = Vec::with_capacity(batch * heads * l * l);
        let mut cls = Vec::with_capacity(batch * heads * l);
        let mut cls_to_registers = Vec::new();
        for bh in 0..batch * heads {
            let p = &probs[bh * n * n..(bh + 1) * n * n];
            cls.extend_from_slice(&p[prefix..n]);
            if prefix > 1 {
                cls_to_registers.push(p[1..prefix].iter().sum());
            }
            for q in prefix..n {
                patches.extend_from_slice(&p[q * n + prefix..(q + 1) * n]);
            }
        }
        AttentionMap { batch, heads, grid: self.cfg.grid(), patches, cls: Some(cls), cls_to_registers }
    }
    fn backward(
        &self,
        be: &B,
        saved: &VitSaved<B>,
        dpooled: Option<&B::Buf>,
        dtokens: Option<&B::Buf>,
        grads: &Params<B>,
        dimg: Option<&B::Buf>,
    ) {
        let batch = saved.fwd.batch;
        let (n, l, d) = (self.cfg.tokens(), self.cfg.patches(), self.cfg.embed_dim);
        // The patch-token view's gradient: dtokens, plus for avg pooling the mean's share.
        let dtok = be.alloc(batch * l * d);
        if let Some(dt) = dtokens {
            be.copy(dt, 0, &dtok, 0, batch * l * d);
        }
        let dcls = be.alloc(batch * n * d);
        if let (Some(dp), Some((mean, norm_saved))) = (dpooled, &saved.mean) {
            let dmean = be.alloc(batch * d);
            self.fc_norm(&self.params).backward(be, dp, norm_saved, mean, &self.fc_norm(grads), &dmean, batch);
            // dtok[b, t] += dmean[b] / L : the transpose of the mean's matmul
            let mm = self.mean_mm(batch);
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
            be.matmul(&back, &be.upload(&vec![1.0 / l as f32; l]), &dmean, None, &dtok);
        } else if let Some(dp) = dpooled {
            be.gather_rows(dp, &be.upload_u32(&self.row_unmap(batch, true)), None, &dcls, batch * n, d);
        }
        let dpatch = be.alloc(batch * n * d);
        be.gather_rows(&dtok, &be.upload_u32(&self.row_unmap(batch, false)), None, &dpatch, batch * n, d);
        let dfeatures = be.alloc(batch * n * d);
        be.add(&dcls, &dpatch, &dfeatures, batch * n * d);
        Vit::backward(self, be, &saved.fwd, None, Some(&dfeatures), grads, dimg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::ops::testing::*;
    use crate::swin::{SwinConfig, WindowSize};
    use crate::vit::VitConfig;

    /// `Σ wp·pooled + Σ wt·tokens`, the same for every backbone.
    fn loss_of<M: Backbone<Cpu>>(m: &M, x: &[f32], batch: usize, wp: &[f32], wt: &[f32]) -> f64 {
        let s = m.forward(&Cpu, &Cpu.upload(x), batch);
        let p = crate::block_on(Cpu.read(m.pooled(&s)));
        let t = crate::block_on(Cpu.read(m.tokens(&s)));
        weighted_sum(&p, wp) + weighted_sum(&t, wt)
    }

    /// Backward through the interface against finite differences, for the image and one
    /// parameter (the method-side view: no head, no logits).
    fn backward_matches_finite_differences<M: Backbone<Cpu>>(m: &M, c: usize, hw: [usize; 2], param: &str) {
        let batch = 2;
        let [gh, gw] = m.token_grid();
        let d = m.embed_dim();
        let x = randn(batch * c * hw[0] * hw[1], 1);
        let (wp, wt) = (randn(batch * d, 2), randn(batch * gh * gw * d, 3));
        let s = m.forward(&Cpu, &Cpu.upload(&x), batch);
        let grads = m.params().zeros_like(&Cpu);
        let dimg = Cpu.alloc(x.len());
        m.backward(&Cpu, &s, Some(&Cpu.upload(&wp)), Some(&Cpu.upload(&wt)), &grads, Some(&dimg));
        let fd = finite_diff(&x, 1e-2, |x| loss_of(m, x, batch, &wp, &wt));
        assert_close_f64("d input", &crate::block_on(Cpu.read(&dimg)), &fd, 2e-3, 2e-2);
        let buf = m.params().get(param).clone();
        let w0 = crate::block_on(Cpu.read(&buf));
        let fd = finite_diff(&w0, 1e-2, |w| {
            Cpu.write(&buf, w);
            loss_of(m, &x, batch, &wp, &wt)
        });
        Cpu.write(&buf, &w0);
        assert_close_f64(param, &crate::block_on(Cpu.read(grads.get(param))), &fd, 2e-3, 2e-2);
    }

    fn randomise(params: &Params<Cpu>) {
        for (i, p) in params.list.iter().enumerate() {
            let n: usize = p.shape.iter().product();
            Cpu.write(&p.buf, &randn(n, 40 + i as u64).iter().map(|v| v * 0.5).collect::<Vec<_>>());
        }
    }

    fn swin() -> Swin<Cpu> {
        let cfg = SwinConfig {
            img_size: [8, 8],
            patch_size: 2,
            in_chans: 2,
            embed_dim: 4,
            depths: vec![2, 1],
            num_heads: vec![1, 2],
            window_size: WindowSize::One(2),
            num_classes: 0,
            ..SwinConfig::default()
        };
        let m = Swin::init(&Cpu, cfg, 0);
        randomise(&m.params);
        m
    }

    fn vit(pool: &str) -> Vit<Cpu> {
        vit_with(pool, 0)
    }

    fn vit_with(pool: &str, reg_tokens: usize) -> Vit<Cpu> {
        let cfg = VitConfig {
            reg_tokens,
            img_size: [8, 8],
            patch_size: 4,
            in_chans: 2,
            embed_dim: 8,
            depth: 1,
            num_heads: 2,
            num_classes: 0,
            global_pool: pool.into(),
            ..VitConfig::default()
        };
        let m = Vit::init(&Cpu, cfg, 0);
        randomise(&m.params);
        m
    }

    #[test]
    fn swin_and_vit_backward_through_the_backbone_interface() {
        backward_matches_finite_differences(&swin(), 2, [8, 8], "layers.0.blocks.1.attn.relative_position_bias_table");
        backward_matches_finite_differences(&vit("token"), 2, [8, 8], "blocks.0.attn.qkv.weight");
        backward_matches_finite_differences(&vit("avg"), 2, [8, 8], "fc_norm.weight");
        backward_matches_finite_differences(&vit_with("token", 2), 2, [8, 8], "reg_token");
        backward_matches_finite_differences(&vit_with("avg", 3), 2, [8, 8], "pos_embed");
    }

    #[test]
    fn attention_maps_are_rows_of_probabilities_on_the_grid() {
        let x = randn(2 * 2 * 64, 5);
        let m = swin();
        let s = Backbone::forward(&m, &Cpu, &Cpu.upload(&x), 2);
        let a = crate::block_on(Backbone::attention(&m, &Cpu, &s, 1));
        assert_eq!((a.grid, a.heads), ([4, 4], 1));
        for row in a.patches.chunks(16) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
            assert_eq!(row.iter().filter(|p| **p > 0.0).count(), 4, "a 2x2 window: {row:?}");
        }
        let v = vit("token");
        let s = Backbone::forward(&v, &Cpu, &Cpu.upload(&x), 2);
        let a = crate::block_on(Backbone::attention(&v, &Cpu, &s, 0));
        let cls = a.cls.as_ref().unwrap();
        assert_eq!((a.patches.len(), cls.len()), (2 * 2 * 4 * 4, 2 * 2 * 4));
        let probs = crate::block_on(Cpu.read(&s.fwd.blocks[0].probs));
        assert_eq!(cls[0], probs[1]);
        assert_eq!(a.patches[0], probs[5 + 1]);
        // with registers the maps skip them: 7 tokens, [cls, r, r, patches]
        let v = vit_with("token", 2);
        let s = Backbone::forward(&v, &Cpu, &Cpu.upload(&x), 2);
        let a = crate::block_on(Backbone::attention(&v, &Cpu, &s, 0));
        let probs = crate::block_on(Cpu.read(&s.fwd.blocks[0].probs));
        assert_eq!((a.patches.len(), a.cls.as_ref().unwrap().len()), (2 * 2 * 4 * 4, 2 * 2 * 4));
        assert_eq!(a.cls.as_ref().unwrap()[..4], probs[3..7]);
        assert_eq!(a.cls_to_registers.len(), 2 * 2);
        assert!((a.cls_to_registers[0] - probs[1] - probs[2]).abs() < 1e-7);
        assert_eq!(a.patches[..4], probs[3 * 7 + 3..4 * 7]);
    }
}
