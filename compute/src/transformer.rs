//! The pre-norm transformer block shared by every backbone and decoder (timm's `Block`):
//! ```text
//! x = x + proj(attention(qkv(norm1(x))))
//! x = x + fc2(gelu(fc1(norm2(x))))
//! ```
use crate::backend::Backend;
use crate::layers::{Attention, LayerNorm, Linear, NormSaved};
use crate::params::Params;

/// One block's layers (weights, or their gradients under the same names).
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub norm2: LayerNorm<B>,
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    pub heads: usize,
}

/// What one block's forward keeps for its backward.
pub struct BlockSaved<B: Backend> {
    x: B::Buf,
    ln1: B::Buf,
    ln1_saved: NormSaved<B>,
    qkv: B::Buf,
    /// Attention probabilities `[batch, heads, tokens, tokens]`.
    pub probs: B::Buf,
    attn_out: B::Buf,
    x_mid: B::Buf,
    ln2: B::Buf,
    ln2_saved: NormSaved<B>,
    hidden: B::Buf,
    act: B::Buf,
}

/// Timm's parameter names and shapes of the block at `prefix` (e.g. `blocks.3.`).
pub fn block_param_shapes(prefix: &str, dim: usize, hidden: usize, qkv_bias: bool) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![
        (format!("{prefix}norm1.weight"), vec![dim]),
        (format!("{prefix}norm1.bias"), vec![dim]),
        (format!("{prefix}attn.qkv.weight"), vec![3 * dim, dim]),
    ];
    if qkv_bias {
        v.push((format!("{prefix}attn.qkv.bias"), vec![3 * dim]));
    }
    for (name, shape) in [
        ("attn.proj.weight", vec![dim, dim]),
        ("attn.proj.bias", vec![dim]),
        ("norm2.weight", vec![dim]),
        ("norm2.bias", vec![dim]),
        ("mlp.fc1.weight", vec![hidden, dim]),
        ("mlp.fc1.bias", vec![hidden]),
        ("mlp.fc2.weight", vec![dim, hidden]),
        ("mlp.fc2.bias", vec![dim]),
    ] {
        v.push((format!("{prefix}{name}"), shape));
    }
    v
}

pub fn linear<B: Backend>(p: &Params<B>, name: &str, inp: usize, out: usize, bias: bool) -> Linear<B> {
    Linear {
        w: p.get(&format!("{name}.weight")).clone(),
        b: bias.then(|| p.get(&format!("{name}.bias")).clone()),
        inp,
        out,
    }
}

pub fn layernorm<B: Backend>(p: &Params<B>, name: &str, dim: usize, eps: f32) -> LayerNorm<B> {
    LayerNorm { w: p.get(&format!("{name}.weight")).clone(), b: p.get(&format!("{name}.bias")).clone(), dim, eps }
}

impl<B: Backend> Block<B> {
    /// Bind the block at `prefix` of `p` (LayerNorm eps 1e-6 as timm's ViT; MAE's
    /// `partial(nn.LayerNorm, eps=1e-6)` is the same).
    pub fn bind(p: &Params<B>, prefix: &str, dim: usize, hidden: usize, heads: usize, qkv_bias: bool) -> Self {
        Block {
            norm1: layernorm(p, &format!("{prefix}norm1"), dim, 1e-6),
            qkv: linear(p, &format!("{prefix}attn.qkv"), dim, 3 * dim, qkv_bias),
            proj: linear(p, &format!("{prefix}attn.proj"), dim, dim, true),
            norm2: layernorm(p, &format!("{prefix}norm2"), dim, 1e-6),
            fc1: linear(p, &format!("{prefix}mlp.fc1"), dim, hidden, true),
            fc2: linear(p, &format!("{prefix}mlp.fc2"), hidden, dim, true),
            heads,
        }
    }

    fn attention(&self, batch: usize, tokens: usize) -> Attention {
        Attention { batch, tokens, heads: self.heads, head_dim: self.norm1.dim / self.heads }
    }

    /// `x: [batch, tokens, dim]` → the block's output (a new buffer) and what backward needs.
    pub fn forward(&self, be: &B, x: B::Buf, batch: usize, tokens: usize) -> (BlockSaved<B>, B::Buf) {
        let (rows, d, hid) = (batch * tokens, self.norm1.dim, self.fc1.out);
        let ln1 = be.alloc(rows * d);
        let ln1_saved = self.norm1.forward(be, &x, &ln1, rows);
        let qkv = be.alloc(rows * 3 * d);
        self.qkv.forward(be, &ln1, &qkv, rows);
        let attn_out = be.alloc(rows * d);
        let probs = self.attention(batch, tokens).forward(be, &qkv, &attn_out);
        let x_mid = be.alloc(rows * d);
        be.copy(&x, 0, &x_mid, 0, rows * d);
        self.proj.forward_add(be, &attn_out, &x_mid, rows);

        let ln2 = be.alloc(rows * d);
        let ln2_saved = self.norm2.forward(be, &x_mid, &ln2, rows);
        let hidden = be.alloc(rows * hid);
        self.fc1.forward(be, &ln2, &hidden, rows);
        let act = be.alloc(rows * hid);
        be.gelu_forward(&hidden, &act, rows * hid);
        let out = be.alloc(rows * d);
        be.copy(&x_mid, 0, &out, 0, rows * d);
        self.fc2.forward_add(be, &act, &out, rows);
        (BlockSaved { x, ln1, ln1_saved, qkv, probs, attn_out, x_mid, ln2, ln2_saved, hidden, act }, out)
    }

    /// In place on the residual stream: `dx` holds the gradient of the block's output on
    /// entry and of its input on return; parameter gradients add into `g`.
    pub fn backward(&self, be: &B, g: &Block<B>, s: &BlockSaved<B>, dx: &B::Buf, batch: usize, tokens: usize) {
        let (rows, d, hid) = (batch * tokens, self.norm1.dim, self.fc1.out);
        let dact = be.alloc(rows * hid);
        self.fc2.backward(be, dx, &s.act, &g.fc2, Some(&dact), rows);
        let dhidden = be.alloc(rows * hid);
        be.gelu_backward(&dact, &s.hidden, &dhidden, rows * hid);
        let dln2 = be.alloc(rows * d);
        self.fc1.backward(be, &dhidden, &s.ln2, &g.fc1, Some(&dln2), rows);
        self.norm2.backward(be, &dln2, &s.ln2_saved, &s.x_mid, &g.norm2, dx, rows);

        let dattn = be.alloc(rows * d);
        self.proj.backward(be, dx, &s.attn_out, &g.proj, Some(&dattn), rows);
        let dqkv = be.alloc(rows * 3 * d);
        self.attention(batch, tokens).backward(be, &dattn, &s.probs, &s.qkv, &dqkv);
        let dln1 = be.alloc(rows * d);
        self.qkv.backward(be, &dqkv, &s.ln1, &g.qkv, Some(&dln1), rows);
        self.norm1.backward(be, &dln1, &s.ln1_saved, &s.x, &g.norm1, dx, rows);
    }
}

/// Run `blocks` in order: returns their saved state and the last output.
pub fn forward_blocks<B: Backend>(
    be: &B,
    blocks: &[Block<B>],
    mut x: B::Buf,
    batch: usize,
    tokens: usize,
) -> (Vec<BlockSaved<B>>, B::Buf) {
    let mut saved = Vec::with_capacity(blocks.len());
    for blk in blocks {
        let (s, out) = blk.forward(be, x, batch, tokens);
        saved.push(s);
        x = out;
    }
    (saved, x)
}

/// Backward through `blocks` in reverse, in place on `dx`.
pub fn backward_blocks<B: Backend>(
    be: &B,
    blocks: &[Block<B>],
    grads: &[Block<B>],
    saved: &[BlockSaved<B>],
    dx: &B::Buf,
    batch: usize,
    tokens: usize,
) {
    for ((blk, g), s) in blocks.iter().zip(grads).zip(saved).rev() {
        blk.backward(be, g, s, dx, batch, tokens);
    }
}
