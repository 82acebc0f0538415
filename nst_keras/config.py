"""The plain configuration object the engine takes (no absl, usable from notebooks).

Every field has the value of the keras.io "Neural style transfer" tutorial as
its default, so ``Config(content_image=..., style_image=...)`` reproduces it.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple, Union

from nst_keras.errors import UserError

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)

STYLE_LAYERS = (
    "block1_conv1",
    "block2_conv1",
    "block3_conv1",
    "block4_conv1",
    "block5_conv1",
)
CONTENT_LAYERS = ("block5_conv2",)

# Experiments (nst_keras.experiments) and their defaults.
EXPERIMENTS = ("none", "deprocess_offsets", "reconstruct_content", "reconstruct_style", "tradeoff")
DEFAULT_DEPROCESS_OFFSETS = (
    (103.939, 116.779, 123.68),  # the ImageNet means (B, G, R): undoes preprocessing
    (123.939, 96.779, 96.68),  # a variant tried in a published write-up
    (123.68, 116.779, 103.939),  # the ImageNet means in R, G, B order by mistake
    (0.0, 0.0, 0.0),  # no offsets
)
DEFAULT_TRADEOFF_RATIOS = (0.4, 4.0, 40.0, 400.0, 4000.0)  # keras.io's is 1e-6 / 2.5e-8 = 40

MODELS = ("vgg19", "vgg16")
OPTIMIZERS = ("sgd", "adam", "lbfgs")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
LOSS_NORMALIZATIONS = ("keras_io", "scaled")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")

# Learning rates used when ``learning_rate`` is None.  SGD's is the tutorial's
# (its step depends on the loss scale, exactly as in keras.io).  Adam's is in
# pixel units (0..255): Adam's step size does not depend on the gradient's
# scale, so this default holds whatever the loss weights.  L-BFGS has none.
DEFAULT_LEARNING_RATES = {"sgd": 100.0, "adam": 5.0, "lbfgs": None}

ImageSource = Union[str, "numpy.ndarray"]  # noqa: F821  (path, URL or array)


@dataclasses.dataclass
class Config:
    """Settings of one style-transfer run.

    Attributes:
      content_image: path or http(s) URL of the content photo (or pass an array
        to ``stylize``).
      style_image: path or URL of the style picture.
      output_dir: where images and ``metrics.jsonl`` go; ``None`` writes nothing.
      result_prefix: file name prefix of the written images.
      img_nrows: output height in pixels; the width keeps the content's aspect
        ratio, ``int(width * img_nrows / height)`` as in keras.io.
      iterations: optimiser steps (with ``scales``: per scale, or a list).
      content_weight, style_weight, total_variation_weight: loss weights.
      content_layers, style_layers: VGG layer names.
      learning_rate: initial learning rate; ``None`` picks the optimiser's
        default (see ``DEFAULT_LEARNING_RATES``).
      decay_steps, decay_rate: ``ExponentialDecay`` schedule for sgd and adam.
      save_every: save an image every N steps (0: only the final image).
      log_every: log and record the losses every N steps.
      seed: seeds random weights and noise.
      weights: ``"imagenet"`` (Keras cache / download), ``"random"`` (seeded
        random initialisation) or a path to a ``.h5`` / ``.weights.h5`` file.
      interpolation: resampling used to resize the inputs (``nearest`` is
        keras.io's ``load_img`` default and reproduces it bit for bit).
      deprocess_mean: B, G, R offsets ``deprocess_image`` adds back.
      model: ``"vgg19"`` or ``"vgg16"``.
      optimizer: ``"sgd"`` (keras.io), ``"adam"`` or ``"lbfgs"``.
      precision: Keras dtype policy of the network.
      jit_compile: compile the step with XLA.
      loss_normalization: ``"keras_io"`` (the tutorial's objective) or
        ``"scaled"`` (each term a relative error; see
        ``nst_keras.normalization``).
    """

    content_image: Optional[ImageSource] = None
    style_image: Optional[ImageSource] = None
    output_dir: Optional[str] = None
    result_prefix: str = "result"
    img_nrows: int = 400
    iterations: Union[int, Sequence[int]] = 4000
    content_weight: float = 2.5e-8
    style_weight: float = 1e-6
    total_variation_weight: float = 1e-6
    content_layers: Sequence[str] = CONTENT_LAYERS
    style_layers: Sequence[str] = STYLE_LAYERS
    learning_rate: Optional[float] = None
    decay_steps: int = 100
    decay_rate: float = 0.96
    save_every: int = 100
    log_every: int = 100
    seed: int = 0
    weights: str = "imagenet"
    interpolation: str = "nearest"
    deprocess_mean: Tuple[float, float, float] = IMAGENET_MEAN_BGR
    model: str = "vgg19"
    optimizer: str = "sgd"
    precision: str = "float32"
    jit_compile: bool = False
    # --- Robustness: overwrite protection, resume, memory check ---
    # overwrite: replace a previous run's results in output_dir.
    # resume: output_dir of an interrupted run to continue from its checkpoint.
    # check_memory: refuse sizes whose memory estimate exceeds what is free.
    overwrite: bool = False
    resume: Optional[str] = None
    check_memory: bool = True

    # --- Artist controls (checked by nst_keras.controls.validate) -----------
    # style_image may also be a list (or a comma-separated string) of several
    # style pictures; iterations may be a list, one count per scale.
    # style_blend_weights: one weight per style image (normalised; None: equal).
    # style_scale: style resized to this factor times the output size.
    # preserve_colors: "none", "luminance" or "histogram" (Gatys et al. 2017).
    # init: "content", "noise", "style", a path/URL, or an RGB array.
    # pooling: "max" or "avg"; padding: "zero" or "replicate" (first conv).
    # style_layer_weights: one weight per style layer (normalised; None: equal).
    # scales: output heights of a coarse-to-fine run (None: just img_nrows).
    # ema_decay: save an exponential moving average of the image (0: off).
    # clamp_pixels: keep pixels in 0..255 after every step.
    style_blend_weights: Optional[Sequence[float]] = None
    style_scale: float = 1.0
    preserve_colors: str = "none"
    init: Union[str, "numpy.ndarray"] = "content"  # noqa: F821
    pooling: str = "max"
    padding: str = "zero"
    style_layer_weights: Optional[Sequence[float]] = None
    scales: Optional[Sequence[int]] = None
    ema_decay: float = 0.0
    clamp_pixels: bool = False
    # --- Loss normalisation (nst_keras.normalization) ---
    # "keras_io": the tutorial's terms; "scaled": unit-free relative errors,
    # one set of weights for any backbone, size and layers.
    loss_normalization: str = "keras_io"

    # --- Experiments (nst_keras.experiments; validated by experiments.validate) ---
    # experiment: "none" (plain style transfer) or one of EXPERIMENTS.
    # deprocess_offsets: B,G,R triples the deprocess_offsets experiment compares.
    # reconstruct_layers: layers of the content reconstructions (one image per
    #   layer) and of the style reconstructions (growing prefixes of the list).
    # tradeoff_ratios: style_weight / content_weight of each tradeoff panel.
    experiment: str = "none"
    deprocess_offsets: Tuple[Tuple[float, float, float], ...] = DEFAULT_DEPROCESS_OFFSETS
    reconstruct_layers: Sequence[str] = STYLE_LAYERS
    tradeoff_ratios: Tuple[float, ...] = DEFAULT_TRADEOFF_RATIOS

    def replace(self, **changes) -> "Config":
        """Returns a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def resolved_learning_rate(self) -> Optional[float]:
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return DEFAULT_LEARNING_RATES[self.optimizer]

    def validate(self) -> "Config":
        """Raises ``UserError`` naming the first bad setting and its fix."""

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise UserError(
                    f"--{name}={value!r} is not known; use one of: {', '.join(allowed)}"
                )

        choice("model", MODELS)
        choice("optimizer", OPTIMIZERS)
        choice("precision", PRECISIONS)
        choice("interpolation", INTERPOLATIONS)
        choice("loss_normalization", LOSS_NORMALIZATIONS)
        positive = ("img_nrows", "decay_steps")  # iterations: controls.validate
        for name in positive:
            if int(getattr(self, name)) <= 0:
                raise UserError(
                    f"--{name}={getattr(self, name)} must be a positive integer"
                )
        for name in ("save_every", "log_every"):
            if int(getattr(self, name)) < 0:
                raise UserError(f"--{name}={getattr(self, name)} must be 0 or more")
        for name in ("content_weight", "style_weight", "total_variation_weight"):
            value = float(getattr(self, name))
            if not value >= 0 or value == float("inf"):
                raise UserError(
                    f"--{name}={getattr(self, name)} must be a finite number >= 0"
                )
        if self.content_weight == 0 and self.style_weight == 0:
            raise UserError(
                "--content_weight and --style_weight are both 0: nothing to optimise; "
                "give at least one a positive value"
            )
        if self.learning_rate is not None and not float(self.learning_rate) > 0:
            raise UserError(f"--learning_rate={self.learning_rate} must be positive")
        if not 0 < float(self.decay_rate) <= 1:
            raise UserError(f"--decay_rate={self.decay_rate} must be in (0, 1]")
        if len(tuple(self.deprocess_mean)) != 3:
            raise UserError(
                f"--deprocess_mean={self.deprocess_mean} needs three numbers (B,G,R)"
            )
        if not self.content_layers and self.content_weight > 0:
            raise UserError("--content_layers is empty; name at least one layer")
        if not self.style_layers and self.style_weight > 0:
            raise UserError("--style_layers is empty; name at least one layer")
        if self.content_image is None:
            raise UserError("no content image given; set --content_image=PATH_OR_URL")
        if self.style_image is None:
            raise UserError("no style image given; set --style_image=PATH_OR_URL")
        from nst_keras import controls

        controls.validate(self)
        return self
