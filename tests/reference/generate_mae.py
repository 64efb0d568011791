#!/usr/bin/env python3
"""Generate Patchwork's MAE reference fixtures (format `patchwork-fixture/1`, case `mae`).

Each fixture is one safetensors file holding a micro `MaskedAutoencoderViT`
(mae_official.py, the facebookresearch/mae model) under its official `state_dict()`
names, a seeded input batch and masking noise (`input.*`) and PyTorch's
forward/backward results (`expect.*`). Conventions as generate.py: seeded,
unit-scale weight redraw, float64 ground truth stored as float32 after asserting
that a float32 run agrees with it, metadata keys sorted so reruns are byte-identical.

Usage:  python generate_mae.py          # (re)write fixtures/mae_*.safetensors
        python generate_mae.py --check  # load every MAE fixture back and summarise it
"""
import copy
import json
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import ATOL, FORMAT, OUT, RTOL, save_canonical  # noqa: E402  (no side effects)
from mae_official import MaskedAutoencoderViT  # noqa: E402

CASE = "mae"
# LayerNorm eps of the official mae_vit_* factories (partial(nn.LayerNorm, eps=1e-6));
# the class default nn.LayerNorm would be 1e-5. Recorded in the config as `norm_eps`.
NORM_EPS = 1e-6
# Constructor kwargs are the official ones (norm_layer aside); `mask_ratio` is
# forward()'s argument. The config JSON is this dict plus `norm_eps`.
# name -> (kwargs, mask_ratio, batch, seed)
CONFIGS = {
    # RGB, 16 patches, mask 0.75 -> keep int(16 * 0.25) = 4. Plain pixel targets.
    "mae_tiny": (dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                      decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4, mlp_ratio=4.0,
                      norm_pix_loss=False), 0.75, 2, 101),
    # Same model, weights, input and noise (same seed) with per-patch normalised
    # targets: pred / mask / latent are identical to mae_tiny, loss and grads differ.
    "mae_tiny_normpix": (dict(img_size=32, patch_size=8, in_chans=3, embed_dim=32, depth=2,
                              num_heads=2, decoder_embed_dim=32, decoder_depth=1,
                              decoder_num_heads=4, mlp_ratio=4.0, norm_pix_loss=True), 0.75, 2, 101),
    # 1 channel, 28/7 -> 16 patches (p*p*C = 49), 4 encoder heads (hd 8), 2 decoder
    # blocks of width 24 (3 heads, hd 8), mask 0.6 -> keep int(16 * 0.4) = int(6.4) = 6
    # (truncation), B 3, normalised targets.
    "mae_gray_28": (dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=2, num_heads=4,
                         decoder_embed_dim=24, decoder_depth=2, decoder_num_heads=3, mlp_ratio=4.0,
                         norm_pix_loss=True), 0.6, 3, 103),
}


def build(kwargs):
    return MaskedAutoencoderViT(**kwargs, norm_layer=partial(nn.LayerNorm, eps=NORM_EPS))


def redraw(model, gen):
    """Unit-scale trainable weights (the official init -- xavier, std .02 tokens --
    gives near-uniform attention). Drawn in float64 from a seeded generator in
    named_parameters() order. The fixed sin-cos pos_embed / decoder_pos_embed
    (requires_grad=False) keep their official values."""
    def randn(t, std=1.0, mean=0.0):
        return mean + std * torch.randn(t.shape, generator=gen, dtype=torch.float64)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name in ("cls_token", "mask_token"):
                v = randn(p, 0.5)
            elif name.endswith(".bias"):
                v = randn(p, 0.1)
            elif p.ndim == 1:  # LayerNorm weight
                v = randn(p, 0.1, 1.0)
            else:  # Linear [out, in] / Conv2d [out, in, kh, kw]
                v = randn(p, p[0].numel() ** -0.5)
            p.copy_(v.to(p.dtype))


def run(model, x, noise, mask_ratio):
    """Forward + backward; returns {name: tensor} of everything under `expect.`."""
    model.eval()
    model.zero_grad(set_to_none=True)
    latent, mask, ids_restore = model.forward_encoder(x, mask_ratio, noise)
    pred = model.forward_decoder(latent, ids_restore)
    loss = model.forward_loss(x, pred, mask)
    loss.backward()
    with torch.no_grad():  # the split above is exactly model.forward
        l2, p2, m2 = model(x, mask_ratio, noise)
    assert torch.equal(l2, loss) and torch.equal(p2, pred) and torch.equal(m2, mask)
    out = {"loss": loss, "pred": pred, "mask": mask, "ids_restore": ids_restore, "latent": latent}
    out.update({f"grad.{n}": p.grad for n, p in model.named_parameters() if p.requires_grad})
    return {k: v.detach() for k, v in out.items()}


def attention_stats(model, x, noise, mask_ratio):
    """Printed only: mean row-max of every block's softmax (non-fused path on a copy)."""
    model = copy.deepcopy(model).eval()
    stats = []
    for blk in list(model.blocks) + list(model.decoder_blocks):
        blk.attn.fused_attn = False
        blk.attn.attn_drop.register_forward_pre_hook(
            lambda m, inp: stats.append((inp[0].amax(-1).mean().item(), 1 / inp[0].shape[-1])))
    with torch.no_grad():
        model(x, mask_ratio, noise)
    return stats


def sanity(model, x, noise, mask_ratio, e):
    """Independent checks of the masking bookkeeping and the patch order."""
    B, L = noise.shape
    len_keep = int(L * (1 - mask_ratio))
    assert 0 < len_keep < L
    for b in range(B):
        assert len(set(noise[b].tolist())) == L, "tied noise: argsort order would be ambiguous"
        order = sorted(range(L), key=lambda i: noise[b, i].item())
        for rank, i in enumerate(order):
            assert e["ids_restore"][b, i].item() == rank
            assert e["mask"][b, i].item() == (0.0 if rank < len_keep else 1.0)
    assert e["latent"].shape == (B, 1 + len_keep, model.norm.normalized_shape[0])
    # patch l = (gy, gx) row-major; element (py, px, c)
    p, C = model.patch_embed.patch_size[0], x.shape[1]
    gw = x.shape[3] // p
    t = model.patchify(x)
    for (n, l, py, px, c) in [(0, 0, 0, 0, 0), (B - 1, L - 1, p - 1, p - 2, C - 1), (0, gw + 1, 2, 1, C // 2)]:
        gy, gx = divmod(l, gw)
        assert t[n, l, (py * p + px) * C + c] == x[n, c, gy * p + py, gx * p + px]


def generate(name, kwargs, mask_ratio, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the official init (overwritten, but keep it deterministic)
    m32 = build(kwargs)
    redraw(m32, gen)
    m64 = copy.deepcopy(m32).double()  # same (f32-representable) weights, f64 math
    L = m32.patch_embed.num_patches
    s = kwargs["img_size"]
    x = torch.randn((batch, kwargs["in_chans"], s, s), generator=gen).float()
    noise = torch.rand((batch, L), generator=gen).float()

    e32, e64 = run(m32, x, noise, mask_ratio), run(m64, x.double(), noise.double(), mask_ratio)
    assert torch.equal(e32["ids_restore"], e64["ids_restore"]) and torch.equal(e32["mask"], e64["mask"].float())
    sanity(m32, x, noise, mask_ratio, e32)
    len_keep = int(L * (1 - mask_ratio))
    print(f"== {name}: seed {seed}, L {L}, len_keep {len_keep}, loss {e64['loss'].item():.6f}"
          f" (f32 {e32['loss'].item():.6f})")
    worst = 0.0
    for k in e64:
        if k == "ids_restore":
            continue
        scale = e64[k].abs().max().item()
        err = (e32[k].double() - e64[k]).abs().max().item()
        assert err <= ATOL + RTOL * scale, f"{name}: {k} f32 vs f64 err {err:.3g} (max {scale:.3g})"
        worst = max(worst, err / (1.0 + scale))
    print(f"   f32 vs f64 worst err/(1+max) = {worst:.2e}")
    names = [f"blocks.{i}" for i in range(len(m32.blocks))] + \
        [f"decoder_blocks.{i}" for i in range(len(m32.decoder_blocks))]
    for n, (rowmax, uniform) in zip(names, attention_stats(m64, x.double(), noise, mask_ratio)):
        print(f"   {n}: attention mean row-max {rowmax:.3f} (uniform {uniform:.3f})")
    for k in sorted(e64):
        if k.startswith("grad."):
            g = e64[k].abs().max().item()
            assert g > 0, f"{name}: all-zero gradient {k}"
            print(f"   max|{k}| = {g:.4g}")

    tensors = {k: v.detach().contiguous() for k, v in m32.state_dict().items()}
    tensors["input.x"] = x.contiguous()
    tensors["input.noise"] = noise.contiguous()
    # float64 ground truth rounded to float32; ids_restore stays int64.
    tensors.update({f"expect.{k}": (v if v.dtype == torch.int64 else v.float()).contiguous()
                    for k, v in e64.items()})
    config = dict(kwargs, mask_ratio=mask_ratio, norm_eps=NORM_EPS)
    meta = {"format": FORMAT, "case": CASE, "config": json.dumps(config)}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.safetensors"
    save_canonical(tensors, path, meta)
    print(f"   wrote {path.name}: {path.stat().st_size} bytes")
    assert path.stat().st_size < 500 * 1024


def check():
    for path in sorted(OUT.glob("mae_*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            print(f"== {path.name} ({path.stat().st_size} bytes) meta={meta}")
            for k in f.keys():
                t = f.get_tensor(k)
                print(f"   {k:44s} {str(t.dtype):15s} {list(t.shape)} {t.numel() * t.element_size()} B")
            mask = f.get_tensor("expect.mask")
            print(f"   masked per sample: {mask.sum(1).tolist()}, loss {f.get_tensor('expect.loss').item():.6f}")


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        check()
    else:
        torch.use_deterministic_algorithms(True)
        for name, (kwargs, mask_ratio, batch, seed) in CONFIGS.items():
            generate(name, kwargs, mask_ratio, batch, seed)
