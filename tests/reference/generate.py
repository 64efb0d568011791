#!/usr/bin/env python3
"""Generate Patchwork's ViT reference fixtures (format `patchwork-fixture/1`).

Each fixture is one safetensors file holding a micro timm VisionTransformer's
parameters (under their exact timm `state_dict()` names), a seeded input batch
(`input.*`) and PyTorch's forward/backward results (`expect.*`).

Usage:  python generate.py          # (re)write fixtures/*.safetensors
        python generate.py --check  # load every fixture back and summarise it
"""
import copy
import json
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

OUT = Path(__file__).resolve().parent / "fixtures"
FORMAT = "patchwork-fixture/1"
# Tolerance between the float32 run (what the engine computes) and the float64
# run we store: |f32 - f64| <= ATOL + RTOL * max|f64| per tensor.
ATOL, RTOL = 1e-5, 1e-5

# name -> (exact timm constructor kwargs, batch size). Only timm defaults for
# class_token / no_embed_class / pre_norm / fc_norm / dynamic_img_size; they are
# spelled out so the config JSON is self-describing. Dropouts are all 0 (default).
_DEFAULTS = dict(class_token=True, no_embed_class=False, pre_norm=False, fc_norm=None,
                 dynamic_img_size=False)
CONFIGS = {
    # (a) the baseline: RGB, CLS pooling.
    "vit_tiny_rgb": (dict(img_size=32, patch_size=8, in_chans=3, embed_dim=48, depth=2,
                          num_heads=3, mlp_ratio=4.0, qkv_bias=True, num_classes=10,
                          global_pool="token", **_DEFAULTS), 2),
    # (b) 1 channel, 28/7 -> 16 patches, 17 tokens (not a power of two).
    "vit_gray_28": (dict(img_size=28, patch_size=7, in_chans=1, embed_dim=32, depth=2,
                         num_heads=2, mlp_ratio=4.0, qkv_bias=True, num_classes=10,
                         global_pool="token", **_DEFAULTS), 3),
    # (c) non-square 16x24 image (2x3 grid, 7 tokens), mean pooling over patch
    # tokens (timm then uses `fc_norm` and sets `norm` to Identity), no qkv bias,
    # mlp_ratio 2, head_dim 8.
    "vit_rect_avg": (dict(img_size=[16, 24], patch_size=8, in_chans=3, embed_dim=32, depth=2,
                          num_heads=4, mlp_ratio=2.0, qkv_bias=False, num_classes=5,
                          global_pool="avg", **_DEFAULTS), 2),
    # (d) two register tokens (`reg_tokens`, Darcet et al. 2023) between the class token
    # and a 3x3 grid: 12 tokens, position embeddings for all of them (no_embed_class=False).
    "vit_registers": (dict(img_size=24, patch_size=8, in_chans=3, embed_dim=32, depth=2,
                           num_heads=2, mlp_ratio=4.0, qkv_bias=True, num_classes=5,
                           global_pool="token", reg_tokens=2, **_DEFAULTS), 2),
}
SEEDS = {"vit_tiny_rgb": 1, "vit_gray_28": 2, "vit_rect_avg": 3, "vit_registers": 4}


def save_canonical(tensors, path, metadata):
    """save_file, then sort the `__metadata__` keys in the header: safetensors
    writes them in (random) hash-map order, which would make every
    regeneration a spurious binary diff. Same bytes, same length, so the data
    offsets are untouched."""
    save_file(tensors, str(path), metadata=metadata)
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])  # keeps key order; we only reorder __metadata__
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    h = json.dumps(header, separators=(",", ":")).encode()
    assert len(h) <= n
    Path(path).write_bytes(raw[:8] + h + b" " * (n - len(h)) + raw[8 + n:])


def redraw(model, gen):
    """Unit-scale weights: timm's default init (trunc_normal std .02) makes every
    attention row almost uniform and the MLP almost linear, which hides bugs.
    Drawn in float64 from a seeded generator, then stored in the (f32) model."""
    def randn(t, std=1.0, mean=0.0):
        return mean + std * torch.randn(t.shape, generator=gen, dtype=torch.float64)

    with torch.no_grad():
        for name, p in model.named_parameters():  # deterministic order
            if name in ("cls_token", "reg_token", "pos_embed"):
                v = randn(p, 0.5)
            elif name.endswith(".bias") or name.endswith("_bias"):
                v = randn(p, 0.1)
            elif p.ndim == 1:  # LayerNorm weight
                v = randn(p, 0.1, 1.0)
            else:  # Linear [out, in] / Conv2d [out, in, kh, kw]
                fan_in = p[0].numel()
                v = randn(p, fan_in ** -0.5)
            p.copy_(v.to(p.dtype))


def run(model, x, labels):
    """Forward + backward; returns {name: tensor} of everything under `expect.`."""
    probs = {}
    for i, blk in enumerate(model.blocks):
        # Explicit (non-SDPA) path so softmax probs pass through attn_drop, which
        # is Dropout(p=0) in eval mode: its input *is* the attention matrix.
        blk.attn.fused_attn = False
        blk.attn.attn_drop._forward_pre_hooks.clear()
        blk.attn.attn_drop.register_forward_pre_hook(
            lambda m, inp, i=i: probs.__setitem__(i, inp[0].detach().clone()))
    model.eval()
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    features = model.forward_features(x)
    pre_logits = model.forward_head(features, pre_logits=True)
    logits = model.head(pre_logits)
    loss = F.cross_entropy(logits, labels)  # mean over the batch
    loss.backward()
    assert torch.equal(logits, model(x)), "forward_head split differs from model()"
    out = {"logits": logits, "pre_logits": pre_logits, "features": features, "loss": loss}
    out.update({f"attn_probs.{i}": p for i, p in probs.items()})
    out.update({f"grad.{n}": p.grad for n, p in model.named_parameters()})
    out["grad.input.x"] = x.grad
    return {k: v.detach() for k, v in out.items()}


def generate(name, kwargs, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # timm's own init (overwritten, but keep it deterministic)
    m32 = VisionTransformer(**kwargs)
    redraw(m32, gen)
    m64 = copy.deepcopy(m32).double()  # same (f32-representable) weights, f64 math
    h, w = (kwargs["img_size"],) * 2 if isinstance(kwargs["img_size"], int) else kwargs["img_size"]
    x = torch.randn((batch, kwargs["in_chans"], h, w), generator=gen).float()
    labels = torch.randint(0, kwargs["num_classes"], (batch,), generator=gen)

    e32, e64 = run(m32, x, labels), run(m64, x.double(), labels)
    print(f"== {name}: seed {seed}, loss {e64['loss'].item():.6f}")
    worst = 0.0
    for k in e64:
        scale = e64[k].abs().max().item()
        err = (e32[k].double() - e64[k]).abs().max().item()
        assert err <= ATOL + RTOL * scale, f"{name}: {k} f32 vs f64 err {err:.3g} (max {scale:.3g})"
        worst = max(worst, err / (1.0 + scale))
    print(f"   f32 vs f64 worst err/(1+max) = {worst:.2e}")
    for k in sorted(e64):
        if k.startswith("attn_probs."):
            p = e64[k]
            print(f"   {k}: max prob {p.max():.4f}, mean row-max {p.amax(-1).mean():.4f}"
                  f" (uniform would be {1 / p.shape[-1]:.4f})")
    for k in sorted(e64):
        if k.startswith("grad."):
            g = e64[k].abs().max().item()
            assert g > 0, f"{name}: all-zero gradient {k}"
            print(f"   max|{k}| = {g:.4g}")

    tensors = {k: v.detach().contiguous() for k, v in m32.state_dict().items()}
    tensors["input.x"] = x.contiguous()
    tensors["input.labels"] = labels.to(torch.int64).contiguous()
    # Store the float64 ground truth rounded to float32.
    tensors.update({f"expect.{k}": v.float().contiguous() for k, v in e64.items()})
    meta = {"format": FORMAT, "case": "vit", "config": json.dumps(kwargs)}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.safetensors"
    save_canonical(tensors, path, meta)
    print(f"   wrote {path.name}: {path.stat().st_size} bytes")
    assert path.stat().st_size < 2 * 1024 * 1024


def check():
    for path in sorted(OUT.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            print(f"== {path.name} ({path.stat().st_size} bytes) meta={meta}")
            max_p = None
            for k in f.keys():
                t = f.get_tensor(k)
                print(f"   {k:40s} {str(t.dtype):15s} {list(t.shape)} {t.numel() * t.element_size()} B")
                if k.startswith("expect.attn_probs."):
                    max_p = max(max_p or 0.0, t.max().item())
            if max_p is not None:
                print(f"   max attention prob: {max_p:.4f}")


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        check()
    else:
        torch.use_deterministic_algorithms(True)
        for name, (kwargs, batch) in CONFIGS.items():
            generate(name, kwargs, batch, SEEDS[name])
