"""The training cut-outs, each twice: as it is and squeezed along one axis.

For `dino-photos.md`'s attempts 45-49: more thin objects (like the held-out mountain goat)
among the training objects. Each of `assets/photos/cutouts/*.png` is copied, and a second
copy `NNNs.png` has the object cut to its alpha's box, squeezed to 0.45-0.75 of its width
(six in ten: thinner) or of its height (flatter), then scaled so that its longer side is
0.7-0.95 of the 96 px canvas and put at a random place, as `make_objects.py` does. Seeded, so
the same 828 images every run:

    python tests/reference/squeezed_cutouts.py assets/photos/cutouts /tmp/squeezed
    patchwork train --method dino --data /tmp/squeezed ...
"""

import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 96


def alpha_box(im):
    """The box (left, top, right, bottom) of an RGBA image's opaque pixels (alpha > 127) and
    that mask, or None when it has none."""
    alpha = np.asarray(im)[..., 3] > 127
    if not alpha.any():
        return None
    ys, xs = np.nonzero(alpha)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), alpha


def place(obj, size, rng, resample):
    """`obj` (RGBA, cut to its alpha's box) resized to the shape `size` (w, h), scaled so that
    its longer side is 0.7-0.95 of the canvas, at a random place on a transparent SIDE x SIDE
    canvas, as `make_objects.py` does."""
    w, h = size
    s = rng.uniform(0.7, 0.95) * SIDE / max(w, h)
    w, h = max(2, round(w * s)), max(2, round(h * s))
    canvas = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 0))
    canvas.paste(obj.resize((w, h), resample), (rng.randint(0, SIDE - w), rng.randint(0, SIDE - h)))
    return canvas


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    for p in sorted(src.glob("*.png")):
        im = Image.open(p).convert("RGBA")
        im.save(dst / p.name)
        obj = im.crop(alpha_box(im)[0])
        w, h = obj.size
        f = rng.uniform(0.45, 0.75)
        w, h = (max(2, round(w * f)), h) if rng.random() < 0.6 else (w, max(2, round(h * f)))
        place(obj, (w, h), rng, Image.BICUBIC).save(dst / f"{p.stem}s.png")
    print(f"{len(list(dst.glob('*.png')))} cut-outs in {dst}")


if __name__ == "__main__":
    main()
