#!/usr/bin/env python3
"""Scenes like the photo models' training data, for `patchwork attention --objects`.

Sixteen cut-outs drawn (seed 0) from assets/photos/cutouts/, each trimmed to its alpha, scaled
so its longer side is a fraction of a 256-px square (0.7-0.95, the training size, for `big`;
0.4-0.65 for `small`), laid at a random spot on a random plain colour; the mask is the
cut-out's alpha > 127. These are *training* objects: the scores say how a model does on its
own distribution, beside the held-out set in assets/objects/.

Usage:  python training_scenes.py OUT_DIR   # writes OUT_DIR/big and OUT_DIR/small
Needs Pillow and numpy.
"""
import os
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[2] / "assets" / "photos" / "cutouts"
SIZES = {"big": (0.7, 0.95), "small": (0.4, 0.65)}


def main(out_dir):
    random.seed(0)
    for mode, (lo, hi) in SIZES.items():
        out = Path(out_dir) / mode
        os.makedirs(out, exist_ok=True)
        for k in range(16):
            idx = random.randrange(414)
            cut = Image.open(SRC / f"{idx:03d}.png").convert("RGBA")
            ys, xs = np.nonzero(np.array(cut)[..., 3] > 0)
            cut = cut.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            side = 256
            scale = random.uniform(lo, hi) * side / max(cut.size)
            cut = cut.resize((max(1, int(cut.width * scale)), max(1, int(cut.height * scale))), Image.LANCZOS)
            colour = tuple(random.randrange(256) for _ in range(3))
            scene = Image.new("RGBA", (side, side), colour + (255,))
            x, y = random.randrange(0, side - cut.width + 1), random.randrange(0, side - cut.height + 1)
            scene.alpha_composite(cut, (x, y))
            mask = Image.new("L", (side, side), 0)
            mask.paste(Image.fromarray(((np.array(cut)[..., 3] > 127) * 255).astype(np.uint8)), (x, y))
            name = f"c{k:02d}-{idx:03d}"
            scene.convert("RGB").save(out / f"{name}.png")
            mask.save(out / f"{name}.mask.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "training-scenes")
