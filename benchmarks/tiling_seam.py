"""Tiled against untiled, pixel for pixel: the picture of docs/tiling.md.

Compares one evaluation of the loss and gradient at the content image, then
runs the same style transfer twice, untiled and in ``--tile_size`` tiles
(float32, the default halo), and writes ``docs/tiling_seam.png``: a crop
around the point where four tiles meet, at full resolution (each pixel drawn
as ``--zoom`` x ``--zoom``), untiled | tiled | the difference x 50, with the
tile borders marked in the margin.  Prints a JSON line with the first
evaluation's differences and the largest pixel difference of the pictures.

  python benchmarks/tiling_seam.py --content=photo.jpg --style=painting.jpg \\
      --model=vgg16 --weights=vgg16.weights.h5
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def settings(args):
    sys.path.insert(0, REPO)
    from nst_keras import Config

    return Config(content_image=args.content, style_image=args.style, model=args.model,
                  weights=args.weights, img_nrows=args.rows, optimizer="adam",
                  iterations=args.iterations, loss_normalization="scaled",
                  content_weight=1.0, style_weight=10.0, total_variation_weight=0.1,
                  pooling=args.pooling, precision="float32", log_every=0, save_every=0,
                  interpolation="bicubic")


def one_evaluation(config, tile_size) -> dict:
    """Loss and gradient at the content image, tiled against untiled."""
    import tensorflow as tf

    from nst_keras.engine import pipeline, vgg

    content, styles = pipeline.load_inputs(config)
    image = tf.constant(vgg.preprocess_image(content))
    (t0, g0), (t1, g1) = (pipeline.build_loss(c, content, styles).value_and_grad(image)
                          for c in (config, config.replace(tile_size=tile_size)))
    g0, g1 = g0.numpy(), g1.numpy()
    return {"loss_relative_difference": abs(float(t1["loss"]) / float(t0["loss"]) - 1),
            "gradient_relative_l2_difference": float(np.linalg.norm(g1 - g0)
                                                     / np.linalg.norm(g0))}


def stylize_both(config, tile_size):
    """``(untiled, tiled)`` uint8 pictures of the same run."""
    from nst_keras import stylize

    quiet = dict(log=lambda line: None)
    return (stylize(config, **quiet).image,
            stylize(config.replace(tile_size=tile_size), **quiet).image)


def panel(picture, top, left, size, zoom):
    crop = picture[top:top + size, left:left + size]
    return Image.fromarray(crop).resize((size * zoom, size * zoom), Image.NEAREST)


def figure(untiled, tiled, args) -> Image.Image:
    """Three panels around the tile corner ``(tile_size, tile_size)``."""
    size, zoom, t = args.crop, args.zoom, args.tile_size
    top = left = t - size // 2
    diff = np.abs(untiled.astype(int) - tiled.astype(int))
    diff = np.clip(diff * 50, 0, 255).astype(np.uint8)
    panels = [panel(p, top, left, size, zoom) for p in (untiled, tiled, diff)]
    margin, side = 24, size * zoom
    out = Image.new("RGB", (3 * side + 4 * margin, side + 2 * margin), "white")
    draw = ImageDraw.Draw(out)
    titles = ["untiled", f"tiled ({t}-pixel tiles)", "|difference| x 50"]
    for i, (p, title) in enumerate(zip(panels, titles)):
        x0 = margin + i * (side + margin)
        out.paste(p, (x0, margin))
        draw.text((x0, 6), title, fill="black")
        border = (t - left) * zoom  # the tile border inside the crop
        draw.line([(x0 + border, margin + side + 2), (x0 + border, margin + side + 12)],
                  fill="red", width=2)
        draw.line([(x0 - 12, margin + border), (x0 - 2, margin + border)], fill="red", width=2)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", required=True)
    p.add_argument("--style", required=True)
    p.add_argument("--model", default="vgg19")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--rows", type=int, default=320)
    p.add_argument("--tile_size", type=int, default=160)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--zoom", type=int, default=3)
    p.add_argument("--out", default=os.path.join(REPO, "docs", "tiling_seam.png"))
    p.add_argument("--pooling", default="avg")
    args = p.parse_args()
    config = settings(args)
    first = one_evaluation(config, args.tile_size)
    untiled, tiled = stylize_both(config, args.tile_size)
    figure(untiled, tiled, args).save(args.out)
    diff = np.abs(untiled.astype(int) - tiled.astype(int))
    print(json.dumps({**first, "size": list(untiled.shape[:2]), "tile_size": args.tile_size,
                      "pooling": args.pooling, "iterations": args.iterations,
                      "max_pixel_difference": int(diff.max()),
                      "pixels_that_differ": int((diff.max(axis=-1) > 0).sum()),
                      "out": args.out}), flush=True)


if __name__ == "__main__":
    main()
