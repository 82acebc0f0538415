"""Artist controls: several styles, style scale, colours, initial image,
network variants, multi-scale stages and iterate averaging.

Everything here is off (or equal to keras.io) by default; the engine calls
these helpers.  Where a control departs from Gatys et al. (2015) the comment
says so.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

from nst_keras import colors
from nst_keras import images as imlib
from nst_keras.config import IMAGENET_MEAN_BGR
from nst_keras.errors import UserError

INITS = ("content", "noise", "style")
POOLINGS = ("max", "avg")
PADDINGS = ("zero", "replicate")


# --------------------------------------------------------------------------
# Reading the settings


def style_sources(source) -> list:
    """The style images of ``--style_image``: a list, or a comma-separated string.

    A string naming an existing file is one image even if it has a comma.
    """
    if source is None:
        return []
    if isinstance(source, (list, tuple)):
        return list(source)
    if isinstance(source, str) and "," in source and not os.path.exists(source):
        return [s.strip() for s in source.split(",") if s.strip()]
    return [source]


def iteration_counts(config) -> List[int]:
    """Optimiser steps of each stage (one stage unless ``scales`` is set)."""
    stages = len(config.scales) if config.scales else 1
    its = config.iterations
    its = [its] if isinstance(its, (int, np.integer)) else list(its)
    if len(its) == 1:
        its = its * stages
    return [int(n) for n in its]


def stage_heights(config) -> List[int]:
    """Output heights of the stages: ``scales``, else ``[img_nrows]``."""
    return [int(s) for s in config.scales] if config.scales else [int(config.img_nrows)]


def _weights(name, values, count, what):
    values = list(values)
    if len(values) != count:
        raise UserError(
            f"--{name} has {len(values)} values but there are {count} {what}; "
            f"give one weight per {what[:-1]}"
        )
    for v in values:
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise UserError(f"--{name}: weight {v} must be a finite number >= 0")
    if not sum(float(v) for v in values) > 0:
        raise UserError(f"--{name}: the weights are all 0; make at least one positive")
    return [float(v) for v in values]


def validate(config) -> None:
    """Checks the artist controls of ``config``; raises ``UserError``."""
    its = config.iterations
    its = [its] if isinstance(its, (int, np.integer)) else list(its)
    stages = len(config.scales) if config.scales else 1
    if not its or any(int(n) != n or int(n) <= 0 for n in its):
        raise UserError(f"--iterations={_join(its)} must be positive integers")
    if len(its) not in (1, stages):
        raise UserError(
            f"--iterations={_join(its)} has {len(its)} values for {stages} scale(s); "
            "give one number (used at every scale) or one per scale"
        )
    if config.scales is not None:
        if len(config.scales) == 0:
            raise UserError("--scales is empty; give output heights like 256,512")
        for s in config.scales:
            if int(s) != s or int(s) < imlib.MIN_SIDE:
                raise UserError(
                    f"--scales={_join(config.scales)}: {s} is not a height of at least "
                    f"{imlib.MIN_SIDE} pixels"
                )
    n_styles = len(style_sources(config.style_image))
    if config.style_blend_weights is not None and n_styles:
        _weights("style_blend_weights", config.style_blend_weights, n_styles, "style images")
    if config.style_layer_weights is not None and config.style_weight > 0:
        _weights("style_layer_weights", config.style_layer_weights,
                 len(config.style_layers), "style layers")
    scale = float(config.style_scale)
    if not (math.isfinite(scale) and scale > 0):
        raise UserError(f"--style_scale={config.style_scale} must be a positive number")
    for name, allowed in (("preserve_colors", colors.MODES), ("pooling", POOLINGS),
                          ("padding", PADDINGS)):
        if getattr(config, name) not in allowed:
            raise UserError(
                f"--{name}={getattr(config, name)!r} is not known; use one of: "
                f"{', '.join(allowed)}"
            )
    init = config.init
    if isinstance(init, str) and init not in INITS and not imlib.is_url(init):
        if not os.path.isfile(init):
            raise UserError(
                f"--init={init!r} is neither content, noise, style nor an existing "
                "image file; check the path"
            )
    decay = float(config.ema_decay)
    if not 0 <= decay < 1:
        raise UserError(f"--ema_decay={config.ema_decay} must be in [0, 1) (0 = off)")


def _join(values) -> str:
    return ",".join(str(v) for v in values)


def blend_weights(config, n_styles: int) -> Optional[List[float]]:
    """Normalised blend weights (``None``: equal, the single-style case)."""
    if config.style_blend_weights is None:
        return None
    w = [float(v) for v in config.style_blend_weights]
    total = sum(w)
    return [v / total for v in w]


# --------------------------------------------------------------------------
# Pictures of a stage


def style_size(rows: int, cols: int, style_scale: float) -> Tuple[int, int]:
    """Size the style is resized to: ``style_scale`` times the output size.

    keras.io resizes the style to the output's own size (scale 1).  A larger
    scale gives the network a bigger view of the style picture, so its
    brush strokes and motifs come out larger relative to the output.
    """
    if float(style_scale) == 1.0:
        return rows, cols
    return max(1, int(round(rows * style_scale))), max(1, int(round(cols * style_scale)))


def color_inputs(mode: str, content, styles):
    """Applies ``--preserve_colors`` to the pictures the losses see.

    Returns ``(content, styles)``: unchanged for ``none`` (the arrays
    themselves), grey luminance images for ``luminance``, recoloured styles for
    ``histogram``.
    """
    if mode == "luminance":
        return (colors.luminance_only(content),
                [colors.luminance_only(s, reference=content) for s in styles])
    if mode == "histogram":
        return content, [colors.match_color_statistics(s, content) for s in styles]
    return content, list(styles)


def noise_picture(rows: int, cols: int, seed: int) -> np.ndarray:
    """White noise, uniform over 0..255 per channel (float32 RGB), from ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(rows, cols, 3)).astype(np.float32)


# --------------------------------------------------------------------------
# Steps


def pixel_bounds():
    """(low, high) of a valid network image per BGR channel."""
    mean = np.asarray(IMAGENET_MEAN_BGR, np.float32)
    return -mean, 255.0 - mean


def clamp(image) -> None:
    """Keeps a network-image variable inside the valid pixel range, in place.

    Departure from Gatys et al. and keras.io, which leave the pixels free and
    only clip when saving; style-transfer-pytorch clamps after every step.
    """
    import tensorflow as tf

    low, high = pixel_bounds()
    image.assign(tf.clip_by_value(image, low, high))


class ImageAverage:
    """Bias-corrected exponential moving average of the image (as Adam's moments).

    ``value = (1 - d) * sum_k d^(t-k) x_k / (1 - d^t)`` after ``t`` updates.
    Saving the average instead of the last iterate removes the high-frequency
    jitter of the last steps (style-transfer-pytorch's averaging; not in
    Gatys et al.).
    """

    def __init__(self, image, decay: float):
        import tensorflow as tf

        self.decay = float(decay)
        self.total = tf.Variable(tf.zeros_like(image), trainable=False)
        self.weight = tf.Variable(0.0, trainable=False)
        self._update = tf.function(self._update_fn)

    def _update_fn(self, image):
        d = self.decay
        self.total.assign(d * self.total + (1.0 - d) * image)
        self.weight.assign(d * self.weight + (1.0 - d))

    def update(self, image) -> None:
        self._update(image)

    def value(self):
        return self.total / self.weight


def resize_image(tensor, size: Tuple[int, int], method: str = "bicubic"):
    """Resizes a ``(1, rows, cols, channels)`` tensor to ``size = (rows, cols)``."""
    import tensorflow as tf

    return tf.image.resize(tf.convert_to_tensor(tensor, tf.float32), size, method=method,
                           antialias=False)


def warm_start(new, old, size: Tuple[int, int]) -> str:
    """Carries a ``GradientDescent`` optimiser's state to the next stage.

    The step counter carries on (so the learning-rate schedule, and Adam's
    bias correction, run over the whole multi-scale run).  Adam's moment
    estimates are resized to the new image size: the first bicubically, the
    second bilinearly and clipped at 0 (the same warm start as
    style-transfer-pytorch; Gatys et al. 2017 restart the optimiser).
    Returns a description for the log.
    """
    done = []
    for dst, src in zip(new.optimizer.variables, old.optimizer.variables):
        name = dst.name
        if len(dst.shape) == 0:
            dst.assign(src)
            done.append("step counter")
        elif "velocity" in name:
            dst.assign(np.maximum(resize_image(src, size, "bilinear").numpy(), 0.0))
            done.append("second moments")
        elif len(dst.shape) == 4:
            dst.assign(resize_image(src, size, "bicubic"))
            done.append("first moments")
    return ", ".join(dict.fromkeys(done)) or "nothing"


@dataclasses.dataclass
class Stage:
    """One stage of the coarse-to-fine run (a single stage without ``scales``)."""

    index: int
    count: int
    rows: int
    cols: int
    iterations: int
    first_step: int

    @property
    def last_step(self) -> int:
        return self.first_step + self.iterations - 1


def plan_stages(config, content_width: int, content_height: int) -> List[Stage]:
    heights = stage_heights(config)
    counts = iteration_counts(config)
    stages, first = [], 1
    for i, (h, n) in enumerate(zip(heights, counts)):
        rows, cols = imlib.target_size(content_width, content_height, h)
        stages.append(Stage(i, len(heights), rows, cols, n, first))
        first += n
    return stages


def picture_of(tensor, config, content_colour: Optional[np.ndarray]) -> np.ndarray:
    """The RGB picture a network image stands for (``uint8``).

    With ``preserve_colors=luminance`` the optimised image holds the luminance
    only; the content's I and Q channels (``content_colour``, at the same
    size) are put back.
    """
    picture = imlib.deprocess_image(tensor, config.deprocess_mean)
    if config.preserve_colors == "luminance" and content_colour is not None:
        picture = np.clip(np.round(colors.restore_chroma(picture, content_colour)), 0, 255)
        picture = picture.astype(np.uint8)
    return picture


def layer_weights(config) -> Optional[Sequence[float]]:
    if config.style_layer_weights is None:
        return None
    return [float(w) for w in config.style_layer_weights]
