"""The training cut-outs plus Open Clip Art's animals, cut out the same way.

For `dino-photos.md`'s attempts 50, 51 and 53: animals on legs (like the held-out mountain goat, horse
and fox) are few among the 414 photographed stamps. Open Clip Art (Debian `openclipart-png`,
public domain) has 316 drawn animals, most with an alpha channel. Each of
`assets/photos/cutouts/*.png` is copied as it is, and each clip-art animal whose alpha is a
real object (its box at least 16 px a side, 20-97% of the box opaque) is cut to its alpha's
box, scaled so that its longer side is 0.7-0.95 of the 96 px canvas and put at a random
place, as `make_objects.py` does, as `NNNc.png`. Seeded, so the same images every run:

    apt-get download openclipart-png && dpkg -x openclipart-png_*.deb /tmp/oc
    python tests/reference/clipart_cutouts.py assets/photos/cutouts /tmp/oc/usr/share/openclipart/png /tmp/mixed
    patchwork train --method dino --data /tmp/mixed ...
"""

import random
import sys
from pathlib import Path

from PIL import Image
from squeezed_cutouts import alpha_box, place


def main():
    src, clipart, dst = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("*.png")):
        Image.open(p).convert("RGBA").save(dst / p.name)
    rng = random.Random(11)
    n = 0
    for p in sorted((clipart / "animals").rglob("*.png")):
        im = Image.open(p).convert("RGBA")
        found = alpha_box(im)
        if found is None:
            continue
        box, alpha = found
        w, h = box[2] - box[0], box[3] - box[1]
        cover = alpha[box[1] : box[3], box[0] : box[2]].mean()
        if min(w, h) < 16 or not 0.2 <= cover <= 0.97:
            continue
        place(im.crop(box), (w, h), rng, Image.LANCZOS).save(dst / f"{n:03d}c.png")
        n += 1
    print(f"{n} clip-art animals; {len(list(dst.glob('*.png')))} cut-outs in {dst}")


if __name__ == "__main__":
    main()
