//! A ViT at any input size: DINO's `interpolate_pos_encoding`, so multi-crop can feed
//! 96-px local crops to a model trained at 224 (and attention maps can keep an image's
//! own grid):
//! ```text
//! if grid == trained grid: pos_embed                               # unchanged
//! patch_pos = F.interpolate(pos_embed[1:] as [1, D, S, S],
//!                           scale_factor=((gh + 0.1)/S, (gw + 0.1)/S),  # DINO's +0.1
//!                           mode='bicubic')                         # A = -0.75, align_corners=False
//! pos = cat(pos_embed[0], patch_pos)
//! ```
//! Interpolation is linear in the embeddings, so it is one matrix `M: [gh·gw, S·S]`
//! (separable cubic weights, borders clamped) applied with the engine's matmul, and its
//! backward is `Mᵀ`. [`VitAt`] shares every weight buffer with the model except the
//! interpolated position embeddings.
use crate::backend::{Backend, Matmul, Strides};
use crate::params::Params;
use crate::vit::{Vit, VitConfig};
use crate::weights::WeightsError;

/// PyTorch's cubic convolution weights (A = −0.75) for taps at offsets −1, 0, 1, 2 of `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// One axis: `[out, in]` weights of `upsample_bicubic2d` with scale factor `scale`
/// (`align_corners=False`, so `src = (o + ½)/scale − ½`; indices clamped at the borders).
fn cubic_axis(inp: usize, out: usize, scale: f64) -> Vec<f64> {
    let mut w = vec![0.0; out * inp];
    for o in 0..out {
        let src = (o as f64 + 0.5) / scale - 0.5;
        let i0 = src.floor();
        for (k, wk) in cubic_weights(src - i0).iter().enumerate() {
            let i = (i0 as isize + k as isize - 1).clamp(0, inp as isize - 1) as usize;
            w[o * inp + i] += wk;
        }
    }
    w
}

/// The row-major `[dst_h·dst_w, src_h·src_w]` matrix of DINO's interpolation from a
/// `src` grid of patch embeddings to a `dst` grid (the identity when they are equal).
pub fn interp_matrix(src: [usize; 2], dst: [usize; 2]) -> Vec<f32> {
    let (ls, ld) = (src[0] * src[1], dst[0] * dst[1]);
    if src == dst {
        let mut m = vec![0.0; ld * ls];
        (0..ld).for_each(|i| m[i * ls + i] = 1.0);
        return m;
    }
    let wy = cubic_axis(src[0], dst[0], (dst[0] as f64 + 0.1) / src[0] as f64);
    let wx = cubic_axis(src[1], dst[1], (dst[1] as f64 + 0.1) / src[1] as f64);
    let mut m = vec![0.0f32; ld * ls];
    for oy in 0..dst[0] {
        for ox in 0..dst[1] {
            for iy in 0..src[0] {
                let a = wy[oy * src[0] + iy];
                if a == 0.0 {
                    continue;
                }
                for ix in 0..src[1] {
                    m[(oy * dst[1] + ox) * ls + iy * src[1] + ix] = (a * wx[ox * src[1] + ix]) as f32;
                }
            }
        }
    }
    m
}

/// A [`Vit`] seen at another input size.
pub struct VitAt<B: Backend> {
    /// The model at the new size: its config's `img_size` changed, `pos_embed` interpolated,
    /// every other parameter the original's buffer.
    pub vit: Vit<B>,
    /// `M` and the patch counts `(dst, src)`, when the grid changed.
    interp: Option<(B::Buf, usize, usize)>,
}

impl<B: Backend> Vit<B> {
    /// The model at `img_size` (a multiple of the patch size), for forward and backward.
    pub fn at_size(&self, be: &B, img_size: [usize; 2]) -> Result<VitAt<B>, WeightsError> {
        let cfg = VitConfig { img_size, ..self.cfg.clone() };
        cfg.validate()?;
        let (src, dst, d) = (self.cfg.grid(), cfg.grid(), cfg.embed_dim);
        let mut params = Params::new();
        if src == dst {
            for p in &self.params.list {
                params.push(p.name.clone(), p.shape.clone(), p.buf.clone());
            }
            return Ok(VitAt { vit: Vit { cfg, params }, interp: None });
        }
        let (ls, ld) = (src[0] * src[1], dst[0] * dst[1]);
        let m = be.upload(&interp_matrix(src, dst));
        let old = self.params.get("pos_embed");
        // the class token's and the registers' rows stay; the grid's are interpolated
        let prefix = cfg.prefix_tokens();
        let pos = be.alloc((prefix + ld) * d);
        be.copy(old, 0, &pos, 0, prefix * d);
        let at = Strides::row_major(d).at(prefix * d);
        let mm = Matmul { b: at, c: at, ..Matmul::plain(ld, d, ls) };
        be.matmul(&mm, &m, old, None, &pos);
        for p in &self.params.list {
            if p.name == "pos_embed" {
                params.push("pos_embed", vec![1, prefix + ld, d], pos.clone());
            } else {
                params.push(p.name.clone(), p.shape.clone(), p.buf.clone());
            }
        }
        Ok(VitAt { vit: Vit { cfg, params }, interp: Some((m, ld, ls)) })
    }
}

impl<B: Backend> VitAt<B> {
    /// Gradients for the resized model: `grads`' own buffers, except a zeroed one for the
    /// interpolated position embeddings (fold it back with [`VitAt::fold_grads`]).
    pub fn grads(&self, be: &B, grads: &Params<B>) -> Params<B> {
        let mut out = Params::new();
        for p in &self.vit.params.list {
            let buf = if p.name == "pos_embed" && self.interp.is_some() {
                be.alloc(p.shape.iter().product())
            } else {
                grads.get(&p.name).clone()
            };
            out.push(p.name.clone(), p.shape.clone(), buf);
        }
        out
    }

    /// `grads.pos_embed[:P] += g.pos_embed[:P]; grads.pos_embed[P:] += Mᵀ · g.pos_embed[P:]`,
    /// `P` the class token and the registers.
    pub fn fold_grads(&self, be: &B, view_grads: &Params<B>, grads: &Params<B>) {
        let Some((m, ld, ls)) = &self.interp else { return };
        let d = self.vit.cfg.embed_dim;
        let pd = self.vit.cfg.prefix_tokens() * d;
        let (g, dst) = (view_grads.get("pos_embed"), grads.get("pos_embed"));
        let prefix = be.alloc(pd);
        be.copy(g, 0, &prefix, 0, pd);
        let rows = be.alloc(pd);
        be.copy(dst, 0, &rows, 0, pd);
        let sum = be.alloc(pd);
        be.add(&rows, &prefix, &sum, pd);
        be.copy(&sum, 0, dst, 0, pd);
        let back = Matmul {
            a: Strides::transposed(*ls),
            b: Strides::row_major(d).at(pd),
            c: Strides::row_major(d).at(pd),
            beta: 1.0,
            ..Matmul::plain(*ls, d, *ld)
        };
        be.matmul(&back, m, g, None, dst);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cpu::Cpu;
    use crate::ops::testing::*;

    /// An 8×8 image, patch 4 (a 2×2 grid), width 4, one block of two heads, `regs` registers.
    pub(crate) fn micro_config(regs: usize) -> VitConfig {
        VitConfig {
            img_size: [8, 8],
            patch_size: 4,
            in_chans: 1,
            embed_dim: 4,
            depth: 1,
            num_heads: 2,
            mlp_ratio: 2.0,
            num_classes: 0,
            reg_tokens: regs,
            ..VitConfig::default()
        }
    }

    #[test]
    fn rows_sum_to_one_and_same_grid_is_identity() {
        for (src, dst) in [([4, 4], [6, 6]), ([4, 4], [2, 3]), ([14, 14], [6, 6]), ([3, 3], [3, 3])] {
            let m = interp_matrix(src, dst);
            let ls = src[0] * src[1];
            for row in m.chunks(ls) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{src:?}→{dst:?}");
            }
        }
        let id = interp_matrix([2, 3], [2, 3]);
        for (i, v) in id.iter().enumerate() {
            assert_eq!(*v, if i / 6 == i % 6 { 1.0 } else { 0.0 });
        }
    }

    /// PyTorch 2.15: `F.interpolate(torch.arange(9.).view(1, 1, 3, 3) ** 1.5,
    /// scale_factor=(4.1 / 3, 2.1 / 3), mode='bicubic')` (DINO's call for a 4×2 grid).
    #[test]
    fn matches_torch_bicubic() {
        let x: Vec<f32> = (0..9).map(|i| (i as f32).powf(1.5)).collect();
        let m = interp_matrix([3, 3], [4, 2]);
        let torch = [-0.274298, 1.663315, 2.451357, 5.936115, 9.256439, 14.632902, 15.703052, 21.914433];
        for (r, want) in torch.iter().enumerate() {
            let got: f32 = (0..9).map(|s| m[r * 9 + s] * x[s]).sum();
            assert!((got - want).abs() < 1e-4, "row {r}: {got} vs torch {want}");
        }
    }

    #[test]
    fn resized_vit_forward_and_position_gradient_fold() {
        resized_vit_with_registers(0);
        resized_vit_with_registers(2);
    }

    /// The prefix (class token and `regs` registers) keeps its position rows; the grid's
    /// are interpolated, and the gradient fold is the interpolation's transpose.
    fn resized_vit_with_registers(regs: usize) {
        let be = Cpu;
        let cfg = micro_config(regs);
        let pre = 4 * (1 + regs);
        let model = Vit::init(&be, cfg, 0);
        let pos0 = crate::block_on(be.read(model.params.get("pos_embed")));
        let at = model.at_size(&be, [12, 8]).unwrap();
        assert_eq!(at.vit.cfg.grid(), [3, 2]);
        let pos = crate::block_on(be.read(at.vit.params.get("pos_embed")));
        assert_eq!(pos.len(), pre + 6 * 4);
        assert_eq!(&pos[..pre], &pos0[..pre]);
        let m = interp_matrix([2, 2], [3, 2]);
        for r in 0..6 {
            for c in 0..4 {
                let want: f32 = (0..4).map(|s| m[r * 4 + s] * pos0[pre + s * 4 + c]).sum();
                assert!((pos[pre + r * 4 + c] - want).abs() < 1e-6);
            }
        }
        // the fold is the transpose: <M p, g> == <p, Mᵀ g> for any upstream g
        let grads = model.params.zeros_like(&be);
        let vg = at.grads(&be, &grads);
        let g = randn(pre + 6 * 4, 9);
        be.write(vg.get("pos_embed"), &g);
        at.fold_grads(&be, &vg, &grads);
        let folded = crate::block_on(be.read(grads.get("pos_embed")));
        let lhs: f64 = pos.iter().zip(&g).map(|(a, b)| (a * b) as f64).sum();
        let rhs: f64 = pos0.iter().zip(&folded).map(|(a, b)| (a * b) as f64).sum();
        assert!((lhs - rhs).abs() < 1e-5, "{lhs} vs {rhs}");
        // other gradients are the model's own buffers
        be.write(vg.get("cls_token"), &[3.0; 4]);
        assert_eq!(crate::block_on(be.read(grads.get("cls_token"))), vec![3.0; 4]);
        let same = model.at_size(&be, [8, 8]).unwrap();
        let before = crate::block_on(be.read(grads.get("pos_embed")));
        let sg = same.grads(&be, &grads);
        let n = pre + 4 * 4;
        be.write(sg.get("pos_embed"), &vec![1.0; n]);
        same.fold_grads(&be, &sg, &grads);
        assert_eq!(crate::block_on(be.read(grads.get("pos_embed"))), vec![1.0; n]);
        assert_ne!(before, vec![1.0; n]);
    }
}
