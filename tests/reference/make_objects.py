"""Make the photographed objects: cut out along their alpha, for training and for the
held-out object set.

- assets/objects/: the held-out set for the attention quality bar (`patchwork attention
  --objects assets/objects`): 16 scenes, 256×256, NAME.png with NAME.mask.png (white = the
  object, exact: the cut-out's alpha). Objects: the HELD_OUT stamps. Backgrounds: a plain
  colour or a blurred crop of the held-out photos (Chelsea, the rocket).
- assets/photos/cutouts/: training cut-outs for the photo DINO and iBOT models (`patchwork
  train --data assets/photos/cutouts`): every other photographic stamp once, at a random
  size and place on a transparent 96×96 canvas (PNG with alpha). Training lays each view of
  a cut-out over a fresh random backdrop (`cli/src/data.rs`, `backdrop`).

No held-out stamp or held-out photo is in the training cut-outs.

Objects are Tux Paint's stamps (Debian `tuxpaint-stamps-default` 2022.06.04, GPL-2+),
without `symbols/` and drawings (`cartoon` folders):

    apt-get download tuxpaint-stamps-default && dpkg -x tuxpaint-stamps-default_*.deb /tmp/tux
    pip download scikit-image==0.26.0 --no-deps -d /tmp/skimg && unzip -q /tmp/skimg/*.whl -d /tmp/skimg
    python tests/reference/make_objects.py /tmp/tux/usr/share/tuxpaint/stamps /tmp/skimg/skimage/data

`... --cutouts-only SIDE DIR` writes only the training cut-outs, on a SIDE-px canvas, to DIR
(the same objects, sizes and places; 96 gives assets/photos/cutouts/ back). Attempt 59 of
assets/models/dino-photos.md trained at 128 px on `--cutouts-only 192`.
"""

import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

SIDE = 96  # training cut-outs (the photo models take 64 px)

ROOT = Path(__file__).resolve().parents[2]
# Photographed objects kept out of training: the held-out set's objects.
HELD_OUT = [
    "animals/mammals/rodents/rat.png",
    "animals/mammals/equines/horse.png",
    "animals/birds/penguin.png",
    "animals/birds/owl.png",
    "animals/birds/pink_flamingo.png",
    "animals/birds/crow.png",
    "household/kettle.png",
    "food/vegetables/broccoli.png",
    "plants/flowers/rose.png",
    "animals/mammals/bovines/mountaingoat.png",
    "animals/mammals/bears/bear.png",
    "animals/mammals/dogs/fox.png",
    "food/fruit/Strawberry2.png",
    "food/fruit/Apricot_whole.png",
    "animals/birds/adelaide-rosella.png",
    "food/vegetables/lettuce.png",
]
PLAIN = [(255, 255, 255), (0, 0, 0), (128, 128, 128), (200, 200, 200), (70, 110, 170), (210, 190, 150), (60, 120, 70)]


def stamps(root):
    out = []
    for p in sorted(root.rglob("*.png")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith("symbols/") or "cartoon" in rel.lower() or rel.endswith("_mirror.png"):
            continue
        out.append(rel)
    return out


def cutout(path):
    """RGB [h, w, 3] in 0..1 and the alpha mask, cropped to the object."""
    im = np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255
    mask = im[..., 3] > 0.5
    ys, xs = np.nonzero(mask)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return im[box][..., :3], mask[box]


def blurred_crop(photo, side, rng, sigma):
    w, h = photo.size
    s = int(min(w, h) * rng.uniform(0.5, 1.0))
    x, y = rng.randint(0, w - s), rng.randint(0, h - s)
    crop = photo.crop((x, y, x + s, y + s)).resize((side, side), Image.BICUBIC)
    return np.asarray(crop.filter(ImageFilter.GaussianBlur(sigma)), np.float32) / 255


def scene(obj, bg, size, rng):
    """Paste `obj` (rgb, mask) on `bg` [S, S, 3] with its longer side `size`·S at a random
    place; returns the image and the object's mask."""
    rgb, mask = obj
    side = bg.shape[0]
    scale = size * side / max(mask.shape)
    hw = (max(1, round(mask.shape[0] * scale)), max(1, round(mask.shape[1] * scale)))
    rgb = np.asarray(Image.fromarray((rgb * 255).astype(np.uint8)).resize(hw[::-1], Image.BICUBIC), np.float32) / 255
    rgb = rgb.reshape(hw + (bg.shape[-1],))
    m = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(hw[::-1], Image.BILINEAR)) > 127
    top, left = rng.randint(0, side - hw[0]), rng.randint(0, side - hw[1])
    img, full = bg.copy(), np.zeros((side, side), bool)
    full[top : top + hw[0], left : left + hw[1]] = m
    img[top : top + hw[0], left : left + hw[1]][m] = rgb[m]
    return (img.clip(0, 1) * 255).round().astype(np.uint8), full


def write_cutouts(tux, train, out, side):
    """Every training stamp once on a transparent side×side canvas, at a random size and place."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    rng = random.Random(1)
    for n, rel in enumerate(train):
        rgb, mask = cutout(tux / rel)
        rgba = np.concatenate([rgb, mask[..., None].astype(np.float32)], -1)
        # on a transparent canvas: `patchwork train` lays every view over a fresh backdrop
        img, full = scene((rgba, mask), np.zeros((side, side, 4), np.float32), rng.uniform(0.7, 0.95), rng)
        Image.fromarray(img, "RGBA").save(out / f"{n:03d}.png", optimize=True)
    print(f"{len(train)} training cut-outs in {out}")


def main():
    tux, skimage_data = Path(sys.argv[1]), Path(sys.argv[2])
    big = 256
    all_stamps = stamps(tux)
    missing = [s for s in HELD_OUT if s not in all_stamps]
    assert not missing, missing
    train = [s for s in all_stamps if s not in HELD_OUT]
    if sys.argv[3:4] == ["--cutouts-only"]:
        write_cutouts(tux, train, Path(sys.argv[5]), int(sys.argv[4]))
        return

    out = ROOT / "assets/objects"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    rng = random.Random(0)
    heldout_photos = [Image.open(skimage_data / n).convert("RGB") for n in ["chelsea.png", "rocket.jpg"]]
    for i, rel in enumerate(HELD_OUT):
        if i % 2 == 0:
            bg = np.ones((big, big, 3), np.float32) * np.array(PLAIN[(i // 2) % len(PLAIN)], np.float32) / 255
            kind = "plain"
        else:
            bg = blurred_crop(heldout_photos[(i // 2) % 2], big, rng, 6)
            kind = "blurred"
        img, mask = scene(cutout(tux / rel), bg, rng.uniform(0.6, 0.85), rng)
        name = f"{Path(rel).stem.lower().replace('_', '-')}-{kind}"
        Image.fromarray(img).save(out / f"{name}.png", optimize=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{name}.mask.png", optimize=True)
        print(f"{name}: object {mask.mean():.1%} of the image")

    write_cutouts(tux, train, ROOT / "assets/photos/cutouts", SIDE)

if __name__ == "__main__":
    main()
