#!/usr/bin/env python3
"""Generate Patchwork's Swin Transformer parity fixtures (format `patchwork-fixture/1`,
case `swin`).

Each fixture is one safetensors file holding a micro timm `SwinTransformer`'s
parameters (exact `state_dict()` names: `layers.0.blocks.1.attn.relative_position_bias_table`,
`layers.1.downsample.reduction.weight`, `head.fc.weight`, ...), a seeded input batch
(`input.x` [B,C,H,W] f32, `input.labels` [B] i64) and PyTorch's results:

* `expect.logits` [B, classes], `expect.loss` [] (mean cross-entropy),
* `expect.features` [B, H', W', C'] (timm's NHWC `forward_features`, after the final norm),
* `expect.grad.<param>` for every parameter, `expect.grad.input.x`.

Conventions as `generate.py`: weights redrawn at unit scale (relative position bias
tables with std 0.5, so the bias visibly reshapes attention), float64 ground truth rounded
to float32, a float32 run checked against it, canonical metadata order, eval mode,
drop_path_rate 0. Model semantics (timm 1.0.31): LayerNorm eps 1e-5 (`nn.LayerNorm`)
everywhere, exact GELU, window attention with the relative position bias and the −100
shift mask, windows clamped to the feature map (shift 0) where the map is not larger,
zero padding to whole windows and to even sizes before patch merging.

| file | covers |
| --- | --- |
| `swin_tiny` | img 32, patch 4 (8x8 grid), 3 ch, D 12, depths [2, 2], heads [3, 6], window 4, 5 classes, B 2: stage 0 shifted windows with the mask, stage 1's 4x4 map equals the window (no shift) |
| `swin_full_window` | img 16, patch 2 (8x8), 3 ch, D 8, depths [2, 2, 2], heads [2, 2, 4], window 8 = the whole stage-0 map (no shift anywhere; clamped to 4x4 and 2x2 later), 4 classes, B 2 |
| `swin_rect_gray` | img [30, 20] (H, W), patch 4 (7x5 grid, the conv drops the rest), 1 ch, D 16, depths [2, 2], heads [2, 4], window [4, 2] (non-square; padded to 8x6, shift (2, 1)), odd map before merging (padded), stage 1 4x3 map: window (4, 2) with shift only along W, mlp 2, no qkv bias, 3 classes, B 2 |

Usage:  python generate_swin.py          # (re)write fixtures/swin_*.safetensors
        python generate_swin.py --check  # summarise them
"""
import copy
import json
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from timm.models.swin_transformer import SwinTransformer

from generate import OUT, FORMAT, save_canonical

ATOL, RTOL = 1e-5, 1e-5

_FIXED = dict(global_pool="avg", drop_path_rate=0.0)
CONFIGS = {
    "swin_tiny": (dict(img_size=32, patch_size=4, in_chans=3, embed_dim=12, depths=[2, 2],
                       num_heads=[3, 6], window_size=4, mlp_ratio=4.0, qkv_bias=True,
                       num_classes=5, **_FIXED), 2, 11),
    "swin_full_window": (dict(img_size=16, patch_size=2, in_chans=3, embed_dim=8, depths=[2, 2, 2],
                              num_heads=[2, 2, 4], window_size=8, mlp_ratio=4.0, qkv_bias=True,
                              num_classes=4, **_FIXED), 2, 12),
    "swin_rect_gray": (dict(img_size=[30, 20], patch_size=4, in_chans=1, embed_dim=16, depths=[2, 2],
                            num_heads=[2, 4], window_size=[4, 2], mlp_ratio=2.0, qkv_bias=False,
                            num_classes=3, **_FIXED), 2, 13),
}


def redraw(model, gen):
    def randn(t, std=1.0, mean=0.0):
        return mean + std * torch.randn(t.shape, generator=gen, dtype=torch.float64)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                v = randn(p, 0.5)
            elif name.endswith(".bias"):
                v = randn(p, 0.1)
            elif p.ndim == 1:  # LayerNorm weight
                v = randn(p, 0.1, 1.0)
            else:  # Linear [out, in] / Conv2d [out, in, kh, kw]
                v = randn(p, p[0].numel() ** -0.5)
            p.copy_(v.to(p.dtype))


def run(model, x, labels):
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    model.eval()
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    features = model.forward_features(x)
    logits = model.forward_head(features)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out = {"logits": logits, "features": features, "loss": loss}
    out.update({f"grad.{n}": p.grad for n, p in model.named_parameters()})
    out["grad.input.x"] = x.grad
    return {k: v.detach() for k, v in out.items()}


def describe(model):
    for i, stage in enumerate(model.layers):
        for j, blk in enumerate(stage.blocks):
            print(f"   layers.{i}.blocks.{j}: res {blk.input_resolution} window {blk.window_size}"
                  f" shift {blk.shift_size} mask {None if blk.attn_mask is None else list(blk.attn_mask.shape)}")


def generate(name, kwargs, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    m32 = SwinTransformer(**kwargs)
    assert all(m.eps == 1e-5 for m in m32.modules() if isinstance(m, torch.nn.LayerNorm))
    redraw(m32, gen)
    m64 = copy.deepcopy(m32).double()
    h, w = (kwargs["img_size"],) * 2 if isinstance(kwargs["img_size"], int) else kwargs["img_size"]
    x = torch.randn((batch, kwargs["in_chans"], h, w), generator=gen).float()
    labels = torch.randint(0, kwargs["num_classes"], (batch,), generator=gen)

    e32, e64 = run(m32, x, labels), run(m64, x.double(), labels)
    print(f"== {name}: seed {seed}, loss {e64['loss'].item():.6f}, features {list(e64['features'].shape)}")
    describe(m32)
    worst = 0.0
    for k in e64:
        scale = e64[k].abs().max().item()
        err = (e32[k].double() - e64[k]).abs().max().item()
        assert err <= ATOL + RTOL * scale, f"{name}: {k} f32 vs f64 err {err:.3g} (max {scale:.3g})"
        worst = max(worst, err / (1.0 + scale))
        if k.startswith("grad."):
            assert scale > 0, f"{name}: all-zero gradient {k}"
    print(f"   f32 vs f64 worst err/(1+max) = {worst:.2e}")

    tensors = {k: v.detach().contiguous() for k, v in m32.state_dict().items()}
    tensors["input.x"] = x.contiguous()
    tensors["input.labels"] = labels.to(torch.int64).contiguous()
    tensors.update({f"expect.{k}": v.float().contiguous() for k, v in e64.items()})
    meta = {"format": FORMAT, "case": "swin", "config": json.dumps(kwargs)}
    path = OUT / f"{name}.safetensors"
    save_canonical(tensors, path, meta)
    print(f"   wrote {path.name}: {path.stat().st_size} bytes, {len(tensors)} tensors")
    assert path.stat().st_size < 1024 * 1024


def check():
    for path in sorted(OUT.glob("swin_*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            print(f"== {path.name} ({path.stat().st_size} bytes) meta={f.metadata()}")
            for k in f.keys():
                t = f.get_tensor(k)
                print(f"   {k:56s} {str(t.dtype):15s} {list(t.shape)}")


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        check()
    else:
        torch.use_deterministic_algorithms(True)
        for name, (kwargs, batch, seed) in CONFIGS.items():
            generate(name, kwargs, batch, seed)
