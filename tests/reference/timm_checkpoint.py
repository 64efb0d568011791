#!/usr/bin/env python3
"""Save what timm itself would save: the `state_dict()` of a VisionTransformer
with timm's DEFAULT init (no redraw), for config (a) of generate.py, in f32,
f16 and bf16. These files test that "a checkpoint timm saves loads unchanged"
(names, shapes, dtypes) -- they carry no expected outputs.

Usage:  python timm_checkpoint.py
"""
import json

import torch
from timm.models.vision_transformer import VisionTransformer

from generate import CONFIGS, OUT, save_canonical

SEED = 0


def main():
    kwargs, _batch = CONFIGS["vit_tiny_rgb"]
    torch.manual_seed(SEED)  # timm's init draws from the global RNG
    model = VisionTransformer(**kwargs).eval()
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(kwargs)}
    OUT.mkdir(parents=True, exist_ok=True)
    for suffix, dtype in (("", torch.float32), ("_f16", torch.float16), ("_bf16", torch.bfloat16)):
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
        path = OUT / f"timm_vit_checkpoint{suffix}.safetensors"
        save_canonical(tensors, path, meta)
        print(f"wrote {path.name}: {path.stat().st_size} bytes, {len(tensors)} tensors, {dtype}")
    # Show that the default init is tiny (why generate.py redraws weights).
    for k in ("cls_token", "pos_embed", "blocks.0.attn.qkv.weight", "head.weight", "head.bias"):
        print(f"  std({k}) = {sd[k].float().std().item():.4g}")


if __name__ == "__main__":
    main()
