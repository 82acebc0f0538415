"""The worked example of docs/losses.md: a style per region, from Python arrays.

The sky of a photo (found by its colour: bluer than it is red, in the upper
part, softened at the edge) takes one painting and the rest another.  Writes a
strip photo | mask | both paintings blended without masks | with masks.

Usage (from the repository root; the trained VGG16 stand-in and the shared
pictures, as benchmarks/quality.py)::

    python benchmarks/masks_example.py --out=docs/masks_example.png
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(REPO, "..", "shared")


def sky_mask(photo: np.ndarray) -> np.ndarray:
    """1 where the photo is sky-like (blue above red, upper two thirds), softened."""
    from scipy import ndimage

    rgb = photo.astype(np.float32)
    sky = (rgb[..., 2] - rgb[..., 0] > 25) & (rgb[..., 2] > 120)
    sky[int(0.66 * len(sky)):] = False
    sky = ndimage.binary_opening(sky, iterations=2)
    return np.clip(ndimage.gaussian_filter(sky.astype(np.float32), 2.0), 0.0, 1.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--content", default=os.path.join(SHARED, "images", "tubingen.jpg"))
    p.add_argument("--sky_style", default=os.path.join(SHARED, "images", "starry_night.jpg"))
    p.add_argument("--ground_style", default=os.path.join(SHARED, "images", "shipwreck.jpg"))
    p.add_argument("--weights", default=os.path.join(SHARED, "weights",
                                                     "vgg16_hed.weights.h5"))
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--preset", default="fast")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "masks_example.png"))
    args = p.parse_args(argv)
    from PIL import Image

    from nst_keras import cli, stylize

    photo = np.asarray(Image.open(args.content).convert("RGB").resize(
        (round(Image.open(args.content).width * args.rows / Image.open(args.content).height),
         args.rows), Image.LANCZOS))
    sky = sky_mask(photo)
    cli.parse(["example", f"--preset={args.preset}", "--model=vgg16",
               f"--weights={args.weights}", f"--img_nrows={args.rows}", "--log_every=0"])
    config = cli.config_from_flags().replace(output_dir=None)
    styles = [np.asarray(Image.open(s).convert("RGB")) for s in (args.sky_style,
                                                                  args.ground_style)]
    pictures = []
    for masks in (None, [sky, 1.0 - sky]):
        started = time.perf_counter()
        result = stylize(config.replace(style_masks=masks), content=photo, style=styles,
                         log=lambda line: None)
        print(f"{'masks' if masks else 'blend'}: {time.perf_counter() - started:.1f} s")
        pictures.append(result.image)
    strip = [photo, np.repeat((sky * 255).astype(np.uint8)[..., None], 3, -1), *pictures]
    height = min(p.shape[0] for p in strip)
    sheet = np.concatenate([np.asarray(Image.fromarray(p).resize(
        (round(p.shape[1] * height / p.shape[0]), height))) for p in strip], axis=1)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
