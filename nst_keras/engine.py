"""The engine: ``stylize(config)`` runs one style transfer (no absl here).

Example::

    from nst_keras import Config, stylize
    result = stylize(Config(content_image="photo.jpg", style_image="art.jpg",
                            iterations=200, output_dir="out"))
    result.image            # uint8 (rows, cols, 3) RGB
    result.history[-1]      # {"iteration": ..., "loss": ..., ...}
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from nst_keras import images as imlib
from nst_keras.config import Config
from nst_keras.errors import UserError

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


@dataclasses.dataclass
class Result:
    """What ``stylize`` returns.

    Attributes:
      image: final picture, ``uint8 (rows, cols, 3)`` RGB.
      tensor: final network image, ``float32 (1, rows, cols, 3)`` BGR centred.
      history: one dict per logged step (iteration, loss, content_loss,
        style_loss, tv_loss, elapsed_s, evaluations).
      paths: files written.
      weights: description of the weights used.
    """

    image: np.ndarray
    tensor: np.ndarray
    history: List[Dict[str, float]]
    paths: List[str]
    weights: str


def prepare_output_dir(output_dir: Optional[str]) -> None:
    if output_dir is None:
        return
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create output directory {output_dir!r} ({e.strerror}); choose "
            "another --output_dir"
        ) from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise UserError(
            f"output directory {output_dir!r} is not writable; choose another --output_dir"
        )


def build_loss(config: Config, content_picture, style_pictures, backbone=None):
    """Builds extractor and ``StyleTransferLoss`` for pictures already sized."""
    from nst_keras import features
    from nst_keras.losses import StyleTransferLoss

    if backbone is None:
        backbone, _ = features.load_backbone(config.model, config.weights, config.seed)
    content_layers = list(config.content_layers) if config.content_weight > 0 else []
    style_layers = list(config.style_layers) if config.style_weight > 0 else []
    features.check_layers(backbone, content_layers + style_layers, config.model)
    extractor = None
    if content_layers or style_layers:
        extractor = features.build_extractor(
            backbone, content_layers + style_layers, precision=config.precision
        )
    return StyleTransferLoss(
        extractor,
        imlib.preprocess_image(content_picture),
        [imlib.preprocess_image(p) for p in style_pictures],
        content_layers=content_layers,
        style_layers=style_layers,
        content_weight=config.content_weight,
        style_weight=config.style_weight,
        total_variation_weight=config.total_variation_weight,
        jit_compile=config.jit_compile,
        normalization=config.loss_normalization,
    )


def load_inputs(config: Config, content=None, style=None):
    """Loads content and style pictures at the output size (keras.io's rule)."""
    content_src = content if content is not None else config.content_image
    style_src = style if style is not None else config.style_image
    if content_src is None:
        raise UserError("no content image given; set --content_image=PATH_OR_URL")
    if style_src is None:
        raise UserError("no style image given; set --style_image=PATH_OR_URL")
    pic = imlib.open_picture(content_src)
    size = imlib.target_size(pic.size[0], pic.size[1], config.img_nrows)
    if min(size) < imlib.MIN_SIDE:
        raise UserError(
            f"content image {imlib.describe(content_src)} would be {size[0]}x{size[1]} "
            f"pixels; VGG needs at least {imlib.MIN_SIDE} per side: raise --img_nrows "
            "or use a less elongated image"
        )
    content_picture = imlib.load_image(pic, size, config.interpolation)
    style_picture = imlib.load_image(style_src, size, config.interpolation)
    return content_picture, [style_picture]


def stylize(config: Config, content=None, style=None, log: Log = _print) -> Result:
    """Runs one style transfer.

    Args:
      config: the settings; ``config.content_image``/``style_image`` are used
        unless ``content``/``style`` (path, URL or RGB array) are given.
      log: receives one line per logged step.

    Returns:
      ``Result`` with the final picture and the loss history.

    Raises:
      UserError: bad settings or inputs (nothing is written in that case).
    """
    import tensorflow as tf

    from nst_keras import features
    from nst_keras.optimize import make_optimizer

    config = config.replace(
        content_image=config.content_image if content is None else "<array>",
        style_image=config.style_image if style is None else "<array>",
    ).validate()
    content_picture, style_pictures = load_inputs(
        config,
        content if content is not None else config.content_image,
        style if style is not None else config.style_image,
    )
    backbone, weights_desc = features.load_backbone(config.model, config.weights, config.seed)
    loss = build_loss(config, content_picture, style_pictures, backbone)
    prepare_output_dir(config.output_dir)

    rows, cols = content_picture.shape[:2]
    log(
        f"{config.model} weights: {weights_desc}; image {rows}x{cols}; "
        f"{config.optimizer}, {config.iterations} iterations, {config.precision}"
    )
    image = tf.Variable(imlib.preprocess_image(content_picture), dtype=tf.float32)
    optimizer = make_optimizer(
        config.optimizer,
        loss,
        image,
        config.resolved_learning_rate(),
        config.decay_steps,
        config.decay_rate,
        jit_compile=config.jit_compile,
    )

    history: List[Dict[str, float]] = []
    paths: List[str] = []
    metrics_path = None
    if config.output_dir is not None:
        metrics_path = os.path.join(config.output_dir, "metrics.jsonl")
        imlib.atomic_write_bytes(metrics_path, b"")
    start = time.perf_counter()

    def save(name):
        if config.output_dir is None:
            return
        path = os.path.join(config.output_dir, name)
        imlib.save_image(path, imlib.deprocess_image(image.numpy(), config.deprocess_mean))
        paths.append(path)

    def on_step(step, terms):
        if config.log_every and step % config.log_every == 0:
            values = {k: float(v.numpy()) for k, v in terms.items()}
            record = {"iteration": step, **values,
                      "elapsed_s": round(time.perf_counter() - start, 4),
                      "evaluations": optimizer.evaluations}
            history.append(record)
            if metrics_path:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            extra = (f" ({optimizer.evaluations} evaluations)"
                     if config.optimizer == "lbfgs" else "")
            log(
                f"Iteration {step}: loss={values['loss']:.2f} content={values['content_loss']:.4g} "
                f"style={values['style_loss']:.4g} tv={values['tv_loss']:.4g} "
                f"[{record['elapsed_s']:.1f}s]{extra}"
            )
            if not np.isfinite(values["loss"]):
                raise UserError(f"loss became {values['loss']} at iteration {step}")
        if config.save_every and step % config.save_every == 0:
            save(f"{config.result_prefix}_at_iteration_{step}.png")
        return True

    optimizer.run(1, config.iterations, on_step)
    save(f"{config.result_prefix}.png")
    final = image.numpy()
    return Result(
        image=imlib.deprocess_image(final, config.deprocess_mean),
        tensor=final,
        history=history,
        paths=paths,
        weights=weights_desc,
    )
