"""The MAE pre-training model (He et al., "Masked Autoencoders Are Scalable Vision
Learners"), as the reference for Patchwork's MAE parity fixtures.

Provenance: the semantics follow facebookresearch/mae, `models_mae.py`
(`MaskedAutoencoderViT`) and `util/pos_embed.py` (`get_2d_sincos_pos_embed` and its
helpers) at commit be47fef7a727943547afb0c670cf1b26034c3c89 (the forward pass is the
same at 6a2ba402). This file is a re-implementation written against that code, not a
copy of its text (the upstream repository is CC BY-NC 4.0): class, method, attribute
and parameter names are kept, so `state_dict()` names are the official ones, and every
operation is performed in the same order with the same tensor ops, so results agree
bit for bit with the upstream module.

Differences from upstream, all forced or additive:
  * timm >= 0.9's `Block` has no `qk_scale` argument (upstream passed `qk_scale=None`,
    i.e. the default head_dim**-0.5); it is dropped here. Everything else of `Block`
    (qkv_bias=True, exact-erf GELU, no dropout, pre-norm) is as upstream.
  * `random_masking`, `forward_encoder` and `forward` take an optional `noise` [N, L]:
    upstream always draws `torch.rand(N, L)` inside `random_masking`; passing the
    fixture's noise makes the mask reproducible. `noise=None` behaves like upstream.
  * `patchify`/`unpatchify` take the channel count from the tensor / `patch_embed`
    instead of upstream's hard-coded 3, so `in_chans=1` works; for 3 channels they are
    identical ('nchpwq->nhwpqc': patch vector order is (py, px, c)).
  * numpy's removed `np.float` alias (used for `omega`) is `np.float64`.

Semantics worth knowing (they are the official ones):
  * Encoder: patch_embed -> `+ pos_embed[:, 1:]` on all L patches -> random masking
    (per-sample argsort of noise, ascending; the first `len_keep = int(L * (1 -
    mask_ratio))` (truncation, in float64) are kept) -> prepend `cls_token +
    pos_embed[:, :1]` -> blocks -> norm.
  * Decoder: decoder_embed -> append L - len_keep copies of `mask_token` -> unshuffle
    with ids_restore (cls kept first) -> `+ decoder_pos_embed` (L+1 rows, cls row
    included) -> blocks -> decoder_norm -> decoder_pred -> drop the cls row.
  * Loss: target = patchify(imgs); with norm_pix_loss it is normalised per patch by
    its mean and unbiased variance, `(t - mean) / (var + 1e-6) ** .5`; per-patch MSE
    (mean over p*p*C), then mean over removed patches: `(loss * mask).sum() / mask.sum()`.
  * Position embeddings are fixed 2-D sin-cos (requires_grad=False parameters); the
    cls row is zeros. Of each D-dim row, the first D/2 dims encode the patch's column
    (x / w index) and the last D/2 its row (y / h index), each as [sin | cos] over
    D/4 frequencies 10000**(-k / (D/4)).
"""
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from timm.models.vision_transformer import Block, PatchEmbed


# --------------------------------------------------------------------------
# util/pos_embed.py
# --------------------------------------------------------------------------
def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    """pos: positions (any shape, flattened to M); returns [M, embed_dim] float64,
    [sin(pos * omega) | cos(pos * omega)] with omega_k = 10000**(-k / (embed_dim/2))."""
    assert embed_dim % 2 == 0
    half = embed_dim // 2
    omega = np.arange(half, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega
    angles = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    """grid: [2, 1, gh, gw], grid[0] = column (w) index, grid[1] = row (h) index.
    The first half of the dims encodes grid[0], the second half grid[1]."""
    assert embed_dim % 2 == 0
    first = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    second = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([first, second], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    """[grid_size**2, embed_dim] (row-major over the grid), with a leading all-zero row
    when cls_token is set."""
    coords = np.arange(grid_size, dtype=np.float32)
    # meshgrid's default 'xy' indexing with the w axis given first: grid[0][i, j] = j.
    grid = np.stack(np.meshgrid(coords, coords), axis=0).reshape([2, 1, grid_size, grid_size])
    emb = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        emb = np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)
    return emb


# --------------------------------------------------------------------------
# models_mae.py
# --------------------------------------------------------------------------
class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder with a ViT encoder and a light ViT decoder."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3,
                 embed_dim=1024, depth=24, num_heads=16,
                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
                 mlp_ratio=4., norm_layer=nn.LayerNorm, norm_pix_loss=False):
        super().__init__()
        # ---- encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # fixed sin-cos table, a frozen Parameter (so it is in state_dict under this name)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        # upstream: Block(..., qkv_bias=True, qk_scale=None, norm_layer=...); qk_scale
        # no longer exists in timm (its None meant the default head_dim**-0.5).
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(depth)])
        self.norm = norm_layer(embed_dim)

        # ---- decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans, bias=True)

        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self):
        grid = int(self.patch_embed.num_patches ** .5)
        pe = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], grid, cls_token=True)
        self.pos_embed.data.copy_(torch.from_numpy(pe).float().unsqueeze(0))
        dpe = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], grid, cls_token=True)
        self.decoder_pos_embed.data.copy_(torch.from_numpy(dpe).float().unsqueeze(0))

        # patch projection initialised as a Linear over its flattened [D, C*p*p] view
        w = self.patch_embed.proj.weight.data
        torch.nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        torch.nn.init.normal_(self.cls_token, std=.02)
        torch.nn.init.normal_(self.mask_token, std=.02)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def patchify(self, imgs):
        """[N, C, H, W] -> [N, L, p*p*C], each patch vector in (py, px, c) order."""
        p = self.patch_embed.patch_size[0]
        n, c = imgs.shape[0], imgs.shape[1]
        assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
        h = w = imgs.shape[2] // p
        x = imgs.reshape(shape=(n, c, h, p, w, p))
        x = torch.einsum('nchpwq->nhwpqc', x)
        return x.reshape(shape=(n, h * w, p ** 2 * c))

    def unpatchify(self, x):
        """[N, L, p*p*C] -> [N, C, H, W] (inverse of patchify)."""
        p = self.patch_embed.patch_size[0]
        c = self.patch_embed.proj.in_channels
        h = w = int(x.shape[1] ** .5)
        assert h * w == x.shape[1]
        x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
        x = torch.einsum('nhwpqc->nchpwq', x)
        return x.reshape(shape=(x.shape[0], c, h * p, w * p))

    def random_masking(self, x, mask_ratio, noise=None):
        """Per-sample random masking of x [N, L, D]: argsort the noise ascending, keep
        the first len_keep. Returns (kept tokens [N, len_keep, D], mask [N, L] with
        0 = kept / 1 = removed, ids_restore [N, L] (inverse of the shuffle))."""
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        if noise is None:  # upstream always draws it here
            noise = torch.rand(N, L, device=x.device)

        ids_shuffle = torch.argsort(noise, dim=1)  # small noise = keep
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))

        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)  # back to patch order
        return x_masked, mask, ids_restore

    def forward_encoder(self, x, mask_ratio, noise=None):
        x = self.patch_embed(x)
        x = x + self.pos_embed[:, 1:, :]  # position added before masking
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)

        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x, mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)

        # fill the removed positions with mask tokens, then undo the shuffle (cls stays first)
        n_masked = ids_restore.shape[1] + 1 - x.shape[1]
        mask_tokens = self.mask_token.repeat(x.shape[0], n_masked, 1)
        body = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        body = torch.gather(body, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], body], dim=1)

        x = x + self.decoder_pos_embed  # all L+1 rows, cls row (zeros) included
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)
        return x[:, 1:, :]  # drop cls

    def forward_loss(self, imgs, pred, mask):
        """imgs [N, C, H, W], pred [N, L, p*p*C], mask [N, L] (1 = removed)."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased
            target = (target - mean) / (var + 1.e-6) ** .5

        loss = ((pred - target) ** 2).mean(dim=-1)  # [N, L]
        return (loss * mask).sum() / mask.sum()  # mean over removed patches

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask


def mae_vit_base_patch16_dec512d8b(**kwargs):
    return MaskedAutoencoderViT(
        patch_size=16, embed_dim=768, depth=12, num_heads=12,
        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
        mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


def mae_vit_large_patch16_dec512d8b(**kwargs):
    return MaskedAutoencoderViT(
        patch_size=16, embed_dim=1024, depth=24, num_heads=16,
        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
        mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


def mae_vit_huge_patch14_dec512d8b(**kwargs):
    return MaskedAutoencoderViT(
        patch_size=14, embed_dim=1280, depth=32, num_heads=16,
        decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
        mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kwargs)


# recommended architectures (decoder: 512 dim, 8 blocks)
mae_vit_base_patch16 = mae_vit_base_patch16_dec512d8b
mae_vit_large_patch16 = mae_vit_large_patch16_dec512d8b
mae_vit_huge_patch14 = mae_vit_huge_patch14_dec512d8b
