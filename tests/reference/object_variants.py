"""Variants of held-out object scenes, to ask *why* a model's attention misses an object.

Each variant keeps the object's pixels and its exact mask from `assets/objects` and changes
only the background, or only the object's colours. Score a folder as the held-out set:

    python tests/reference/object_variants.py /tmp/variants
    patchwork attention --model M --objects /tmp/variants/backgrounds

Three folders (seeded, so the same images every run):
- `backgrounds/`: the crow, the horse and the mountain goat (the scenes on the blurred cat)
  on a plain mid-grey, white and near-black, on a blurred crop of the rocket, and on fresh
  crops of the cat blurred with σ 12 and 6 px (the held-out scenes use 6).
- `cat-blur/`: those three, the fox and the broccoli on crops of the cat blurred with σ 24,
  3 and 1 px: at σ 24 the cat is a smooth brown gradient with no eye left.
- `recoloured/`: the same five scenes with the background in grey (`bggray`) or with its
  colour channels rotated (`bgperm`: the brown cat turns blue), the object's channels
  rotated (`objperm`) or inverted (`objinv`), or all in grey (`allgray`).

The backgrounds are the held-out photos bundled in `assets/photos/heldout` (scikit-image's
Chelsea and rocket, CC0 / public domain); the objects are Tux Paint stamps (GPL-2.0+), as in
`assets/objects/LICENSES.md`.
"""

import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = ROOT / "assets/objects"
ON_CAT = ["crow-blurred", "horse-blurred", "mountaingoat-blurred"]
MORE = ["fox-blurred", "broccoli-blurred"]


def load(name):
    img = np.asarray(Image.open(OBJECTS / f"{name}.png").convert("RGB"), np.float32) / 255
    return img, np.asarray(Image.open(OBJECTS / f"{name}.mask.png")) > 127


def blurred(photo, rng, sigma):
    """A square crop of 0.5–1 of the photo's shorter side, at 256 px, blurred with `sigma`
    (as `make_objects.py`'s backgrounds)."""
    p = Image.open(ROOT / f"assets/photos/heldout/{photo}.jpg").convert("RGB")
    w, h = p.size
    s = int(min(w, h) * rng.uniform(0.5, 1.0))
    x, y = rng.randint(0, w - s), rng.randint(0, h - s)
    crop = p.crop((x, y, x + s, y + s)).resize((256, 256), Image.BICUBIC).filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(crop, np.float32) / 255


def save(folder, name, img, mask):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img.clip(0, 1) * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}.mask.png")


def on_backgrounds(folder, names, backgrounds):
    """Each object on each background: `#rrggbb` (plain) or `photo:sigma`."""
    rng = random.Random(5)
    for name in names:
        img, mask = load(name)
        for b in backgrounds:
            if b.startswith("#"):
                bg = np.ones_like(img) * np.array([int(b[i : i + 2], 16) for i in (1, 3, 5)]) / 255
            else:
                photo, sigma = b.split(":")
                bg = blurred(photo, rng, float(sigma))
            tag = b.replace("#", "").replace(":", "-s")
            save(folder, f"{name}-on-{tag}", np.where(mask[..., None], img, bg), mask)


def recoloured(folder, names):
    for name in names:
        img, mask = load(name)
        grey = img.mean(-1, keepdims=True).repeat(3, -1)
        m = mask[..., None]
        variants = {
            "bggray": np.where(m, img, grey),
            "bgperm": np.where(m, img, img[..., [2, 0, 1]]),
            "objperm": np.where(m, img[..., [2, 0, 1]], img),
            "objinv": np.where(m, 1 - img, img),
            "allgray": grey,
        }
        for tag, v in variants.items():
            save(folder, f"{name}-{tag}", v, mask)


def main():
    out = Path(sys.argv[1])
    on_backgrounds(out / "backgrounds", ON_CAT, ["#808080", "#ffffff", "#303030", "rocket:6", "chelsea:12", "chelsea:6"])
    on_backgrounds(out / "cat-blur", ON_CAT + MORE, ["chelsea:24", "chelsea:3", "chelsea:1"])
    recoloured(out / "recoloured", ON_CAT + MORE)
    for d in sorted(out.iterdir()):
        print(f"{d}: {len(list(d.glob('*.mask.png')))} scenes")


if __name__ == "__main__":
    main()
