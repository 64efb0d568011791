#!/usr/bin/env python3
"""Patch-token norms and class-token attention of a patchwork ViT, in NumPy.

Asks whether the patches a head's class-token attention peaks on are the high-norm
"artifact" tokens of Darcet et al. 2023 ("Vision Transformers Need Registers"): for the
chosen block it prints the norm of every patch token entering that block, on the patch grid,
and each head's three peak patches with their norms and share of the head's mass.

The forward pass is timm's VisionTransformer (pre-norm blocks, exact GELU, LayerNorm eps
1e-6) read from the model file's `vit_config` and `normalize`, at the model's own size, with
no register tokens. The image is resized with Pillow's bilinear filter, so maps differ from
`patchwork attention --json` by a little; `--check JSON` prints the largest difference.

Usage:  python token_norms.py MODEL.safetensors IMAGE [--layer L] [--check ATTENTION.json]
Needs Pillow and numpy.
"""
import argparse
import json
import math
import struct

import numpy as np
from PIL import Image


def load(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {
        k: np.frombuffer(raw[base + v["data_offsets"][0] : base + v["data_offsets"][1]], np.float32).reshape(v["shape"])
        for k, v in header.items()
        if v["dtype"] == "F32"
    }
    return tensors, meta


def layer_norm(x, t, p):
    m = x.mean(-1, keepdims=True)
    v = x.var(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-6) * t[p + ".weight"] + t[p + ".bias"]


ERF = np.vectorize(math.erf)


def forward(t, cfg, x):
    """Token sequences entering each block, and each block's class-token attention."""
    heads, dim = cfg["num_heads"], cfg["embed_dim"]
    hd = dim // heads
    inputs, cls_attn = [], []
    for i in range(cfg["depth"]):
        p = f"blocks.{i}."
        inputs.append(x)
        h = layer_norm(x, t, p + "norm1")
        qkv = h @ t[p + "attn.qkv.weight"].T + t[p + "attn.qkv.bias"]
        q, k, v = qkv.reshape(len(x), 3, heads, hd).transpose(1, 2, 0, 3)
        a = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        cls_attn.append(a[:, 0, 1:] / a[:, 0, 1:].sum(-1, keepdims=True))
        x = x + (a @ v).transpose(1, 0, 2).reshape(len(x), dim) @ t[p + "attn.proj.weight"].T + t[p + "attn.proj.bias"]
        h = layer_norm(x, t, p + "norm2") @ t[p + "mlp.fc1.weight"].T + t[p + "mlp.fc1.bias"]
        x = x + (0.5 * h * (1 + ERF(h / math.sqrt(2)))) @ t[p + "mlp.fc2.weight"].T + t[p + "mlp.fc2.bias"]
    return inputs, cls_attn


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("image")
    ap.add_argument("--layer", type=int, default=-1, help="block, default the last")
    ap.add_argument("--check", help="`patchwork attention --json` of the same image and layer")
    a = ap.parse_args()
    t, meta = load(a.model)
    cfg = json.loads(meta["vit_config"])
    norm = json.loads(meta["normalize"])
    size = cfg["img_size"] if isinstance(cfg["img_size"], int) else cfg["img_size"][0]
    ps, dim = cfg["patch_size"], cfg["embed_dim"]
    if cfg.get("reg_tokens", 0):
        raise SystemExit("models with register tokens are not handled here")
    g = size // ps
    img = np.asarray(Image.open(a.image).convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255
    img = (img - np.array(norm["mean"])) / np.array(norm["std"])
    patches = img.reshape(g, ps, g, ps, 3).transpose(0, 2, 4, 1, 3).reshape(g * g, 3 * ps * ps)
    x = patches @ t["patch_embed.proj.weight"].reshape(dim, -1).T + t["patch_embed.proj.bias"]
    x = np.concatenate([t["cls_token"][0], x]) + t["pos_embed"][0]
    inputs, cls_attn = forward(t, cfg, x)
    layer = a.layer % cfg["depth"]
    norms = np.linalg.norm(inputs[layer][1:], axis=1)
    print(f"layer {layer}: norms of the patch tokens entering it ({g}×{g} grid)")
    print(np.array2string(norms.reshape(g, g), precision=1, max_line_width=200))
    print(f"median {np.median(norms):.2f}, max {norms.max():.2f}")
    for h, m in enumerate(cls_attn[layer]):
        top = np.argsort(-m)[:3]
        peaks = ", ".join(f"({i // g},{i % g}) {m[i]:.2f} norm {norms[i]:.1f}" for i in top)
        print(f"head {h:2d}: {peaks}")
    if a.check:
        ref = np.array(json.load(open(a.check))["heads"]).reshape(len(cls_attn[layer]), -1)
        ref = ref / ref.sum(-1, keepdims=True)
        print(f"largest difference from {a.check}: {np.abs(ref - cls_attn[layer]).max():.4f}")


if __name__ == "__main__":
    main()
