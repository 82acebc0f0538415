"""The settings of a style-transfer run: ``Config``, its checks and its marks.

``Config`` holds the engine's settings, each a ``fields.setting`` field that
carries its default, help, allowed values or check, flag kind, docs section
and marks (``result``: ``--resume`` may not change it; ``network``: it
changes the network, ``network_key``; ``frames``: it can change a film's
frames, ``frame_settings``).  The absl flags (``nst_keras.cli``), validation
(``validate``), the resume policy (``RESUME_MAY_CHANGE``) and the docs' flag
tables (``nst_keras.docs``) are all generated from the fields, so adding an
option is one field here plus the code that uses it.  The commands' own
options live beside them: ``video.options``, ``batch.options``,
``app.options``.  Nothing here imports TensorFlow: the names settings and
engine share are in ``nst_keras.constants``.

Every default of ``Config`` is the keras.io "Neural style transfer"
tutorial's, so ``Config(content_image=..., style_image=...)`` reproduces it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from nst_keras import fields
from nst_keras.constants import (  # noqa: F401  (the choices, re-exported)
    COLOR_LOSSES, COLOR_MODES, CONTENT_LAYERS, DEFAULT_DEPROCESS_OFFSETS,
    DEFAULT_LEARNING_RATES, DEFAULT_TRADEOFF_RATIOS, DISTRIBUTIONS, EXPERIMENTS,
    IMAGENET_MEAN_BGR, INITS, INTERPOLATIONS, LOSS_NORMALIZATIONS, MIN_SIDE, MIN_TILE, MODELS,
    OPTIMIZERS, PADDINGS, POOLINGS, PRECISION_CHOICES, STYLE_LAYERS, STYLE_LOSSES,
    TILE_ALIGN)
from nst_keras.errors import UserError

ImageSource = Union[str, "numpy.ndarray"]  # noqa: F821  (path, URL or RGB array)


# --------------------------------------------------------------------------
# Field checks: each takes the value and raises UserError with the fix.


def _decay_rate(name, value):
    if not 0 < float(value) <= 1:
        fields.fail(name, value, "must be in (0, 1]")


def _bgr_triple(name, value):
    if len(tuple(value)) != 3:
        fields.fail(name, value, "needs three numbers (B,G,R)")


def _iterations(name, value):
    counts = fields.as_list(value)
    if not counts or any(int(n) != n or int(n) <= 0 for n in counts):
        fields.fail(name, value, "must be positive integers")


def _scales(name, value):
    if value is None:
        return
    if len(value) == 0:
        raise UserError("--scales is empty; give output heights like 256,512")
    for s in value:
        if int(s) != s or int(s) < MIN_SIDE:
            raise UserError(f"--{name}={fields.show_value(value)}: {s} is not a height of at least "
                            f"{MIN_SIDE} pixels")


def _init(name, value):
    if not isinstance(value, str) or value in INITS or value.lower().startswith(
            ("http://", "https://")):
        return
    if not os.path.isfile(value):
        raise UserError(f"--init={value!r} is neither content, noise, style nor an existing "
                        "image file; check the path")


def _weights_list(name, values):
    if values is None:
        return
    for v in values:
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise UserError(f"--{name}: weight {v} must be a finite number >= 0")
    if not sum(float(v) for v in values) > 0:
        raise UserError(f"--{name}: the weights are all 0; make at least one positive")


def _offsets(name, value):
    offsets = tuple(tuple(t) for t in value)
    if not offsets or any(len(t) != 3 or not all(math.isfinite(float(v)) for v in t)
                          for t in offsets):
        raise UserError(f"--{name} needs one or more B,G,R triples of finite numbers, "
                        "separated by ';'")


def _tile_size(name, value):
    if value in (0, "auto"):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_TILE or \
            value % TILE_ALIGN:
        fields.fail(name, value, f"must be 0 (off), auto, or a multiple of {TILE_ALIGN} of at "
                    f"least {MIN_TILE} pixels, e.g. 1024")


def _tile_halo(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or \
            value % TILE_ALIGN:
        fields.fail(name, value, f"must be a multiple of {TILE_ALIGN} (0 or more); leave it "
                    "unset for the layers' receptive field")


def _devices(name, value):
    if value == "all":
        return
    for item in str(value).split(","):
        kind, _, index = item.strip().upper().partition(":")
        if kind not in ("CPU", "GPU") or not index.isdigit():
            raise UserError(f"--{name}={value}: {item.strip()!r} is not a device; write all or "
                            "a list like GPU:0,GPU:1")


def _ratios(name, value):
    if not value or any(not (0 < float(r) < math.inf) for r in value):
        fields.fail(name, value, "needs one or more positive numbers (style_weight / "
                    "content_weight)")


# --------------------------------------------------------------------------
# The fields


_inputs, _objective, _optimizer, _tiling, _output, _experiments = (
    fields.group(n) for n in ("inputs", "objective", "optimizer", "tiling", "output",
                              "experiments"))

TILING_HELP = {
    "tile_size": "Optimise in tiles with interiors of this many pixels a side (exact; see "
                 "Tiling): 0 off, auto when the memory estimate says the untiled step won't "
                 "fit, or a multiple of 16 >= 64.",
    "tile_halo": "Pixels each tile's crop reaches beyond its interior (a multiple of 16; "
                 "default: what the layers' receptive field needs for an exact gradient).",
    "devices": "Spread the tiles of each step over these devices: all (local GPUs, else CPU "
               "devices) or a list like GPU:0,GPU:1 (MirroredStrategy; needs --tile_size).",
    "distribute": "mirrored (one process, --devices) or multi_worker (one process per "
                  "machine, TF_CONFIG; MultiWorkerMirroredStrategy).",
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one style-transfer run; see each field's ``help``.

    Images are paths, http(s) URLs or ``uint8 (rows, cols, 3)`` RGB arrays;
    ``style_image`` may be a list or a comma-separated string of several.
    """

    content_image: Optional[ImageSource] = _inputs(
        None, "Content photo: a path or an http(s) URL (fetched into the Keras cache).", frames=False)
    style_image: Optional[Union[ImageSource, Sequence[ImageSource]]] = _inputs(
        None, "Style picture: a path or an http(s) URL; several separated by commas.")
    network: Optional[str] = _inputs(
        None, "A trained style network (a .keras file from python -m nst_keras.train): the "
        "content is stylised in one pass instead of optimised (no --style_image needed); "
        "writes <content stem>_stylized.png.")
    img_nrows: int = _inputs(
        400, "Output height; the width is int(width * img_nrows / height) of the content.", flag="integer",
        check=fields.positive_int)
    interpolation: str = _inputs(
        "nearest", "Resampling of the inputs (nearest = keras.io's load_img, bit for bit; the others look "
        "better).", choices=INTERPOLATIONS)
    style_blend_weights: Optional[Sequence[float]] = _inputs(
        None, "One weight per --style_image, or per painting of a --network trained on several "
        "(normalised to sum 1; default equal).",
        flag="floats", check=_weights_list)
    style_masks: Optional[Sequence[ImageSource]] = _inputs(
        None, "One mask per --style_image, comma separated (white: that style applies, grey: "
        "partly, black: not); resized to the output and to each layer's grid.",
        flag="strings")
    style_scale: float = _inputs(
        1.0, "Style image resized to this factor times the output size (bigger: bigger "
        "strokes).", flag="float", check=fields.positive_finite)
    preserve_colors: str = _inputs(
        "none", "Keep the content's colours: none, luminance (style on luminance only) or "
        "histogram (style recoloured to the content's colour statistics).",
        choices=COLOR_MODES)
    init: Union[str, "numpy.ndarray"] = _inputs(  # noqa: F821
        "content", "Initial image: content (keras.io), noise (seeded by --seed), style, or a "
        "path/URL.", check=_init)
    scales: Optional[Sequence[int]] = _inputs(
        None, "Output heights of a coarse-to-fine run, e.g. 256,512,1024 (overrides "
        "--img_nrows).", flag="integers", check=_scales)

    content_weight: float = _objective(2.5e-8, "Weight of the content loss.", flag="float",
                                       check=fields.weight)
    style_weight: float = _objective(1e-6, "Weight of the style loss.", flag="float",
                                     check=fields.weight)
    total_variation_weight: float = _objective(1e-6, "Weight of the total-variation loss.",
                                               flag="float", check=fields.weight)
    content_layers: Sequence[str] = _objective(
        CONTENT_LAYERS, "VGG layers of the content loss.", flag="strings")
    style_layers: Sequence[str] = _objective(
        STYLE_LAYERS, "VGG layers of the style loss.", flag="strings")
    style_layer_weights: Optional[Sequence[float]] = _objective(
        None, "One weight per --style_layers entry (normalised; default equal).",
        flag="floats", check=_weights_list)
    style_loss: str = _objective(
        "gram", "Style statistics matched: gram (the tutorial's Gram matrices), wasserstein "
        "(mean and covariance, Wasserstein-2 between Gaussians) or sliced_wasserstein (the "
        "whole distribution along random directions).", choices=STYLE_LOSSES)
    sliced_directions: int = _objective(
        32, "Random directions per layer and step of --style_loss=sliced_wasserstein.",
        flag="integer", check=fields.positive_int)
    color_weight: float = _objective(
        0.0, "Weight of the colour term: the picture's pixel colours pulled towards the "
        "painting's (mean and covariance; 0: off).", flag="float", check=fields.weight)
    color_loss: str = _objective(
        "gaussian", "What --color_weight matches of the painting's colours: gaussian (mean "
        "and covariance, Wasserstein-2; tiles exactly) or sliced (the whole colour "
        "distribution, sliced Wasserstein along 32 random directions a step; not tiled).",
        choices=COLOR_LOSSES)
    loss_normalization: str = _objective(
        "keras_io", "keras_io (the tutorial's objective), scaled (each term a relative error: "
        "one set of weights for any network, size and layers), gap (scaled, each style layer "
        "in units of the photo's distance from the painting) or gap_total (of the total).",
        choices=LOSS_NORMALIZATIONS)
    model: str = _objective("vgg19", "Backbone (VGG, include_top=False).", choices=MODELS, network=True)
    weights: str = _objective(
        "imagenet", "imagenet (Keras cache/download), random, or a path to a "
        ".h5/.weights.h5 file.", network=True)
    pooling: str = _objective(
        "max", "Pooling layers: max (as trained) or avg (same weights, smoother).",
        choices=POOLINGS, network=True)
    padding: str = _objective(
        "zero", "Padding of the first convolution: zero (as trained) or replicate (fewer "
        "border seams).", choices=PADDINGS, network=True)
    seed: int = _objective(0, "Seed of random weights and noise.", flag="integer", network=True)

    optimizer: str = _optimizer("sgd", "Optimiser: sgd (keras.io), adam, or lbfgs (SciPy L-BFGS-B).", choices=OPTIMIZERS)
    iterations: Union[int, Sequence[int]] = _optimizer(
        4000, "Optimiser steps; with --scales one number per scale or one for all.",
        flag="iterations", check=_iterations, result=False)
    learning_rate: Optional[float] = _optimizer(
        None, "Initial learning rate (default: 100 for sgd, 5 pixel units for adam).",
        flag="float", check=fields.positive_or_none)
    decay_steps: int = _optimizer(100, "ExponentialDecay decay_steps (sgd, adam).", flag="integer", check=fields.positive_int)
    decay_rate: float = _optimizer(0.96, "ExponentialDecay decay_rate (sgd, adam).", flag="float", check=_decay_rate)
    style_stop_fraction: float = _optimizer(
        0.0, "End the run once the style loss falls to this fraction of its first value "
        "(0: run every iteration).", flag="float", check=fields.off_or_fraction)
    ema_decay: float = _optimizer(
        0.0, "Save an exponential moving average of the image with this decay, e.g. 0.99 "
        "(0: off).", flag="float", check=fields.off_or_fraction)
    clamp_pixels: bool = _optimizer(False, "Keep every pixel in 0..255 after each step.", flag="boolean")
    precision: str = _optimizer("auto", "Network precision: auto measures once per machine "
                                "which is fastest (bfloat16 only where the hardware has it); "
                                "losses and the image stay float32.", choices=PRECISION_CHOICES,
                                network=True)
    jit_compile: bool = _optimizer(False, "Compile the step with XLA.", flag="boolean")
    tile_size: Union[int, str] = _tiling(0, TILING_HELP["tile_size"], flag="size", check=_tile_size)
    tile_halo: Optional[int] = _tiling(None, TILING_HELP["tile_halo"], flag="integer", check=_tile_halo)
    devices: Optional[str] = _tiling(None, TILING_HELP["devices"], check=_devices)
    distribute: str = _tiling("mirrored", TILING_HELP["distribute"], choices=DISTRIBUTIONS)

    output_dir: Optional[str] = _output(
        None, "Directory for images, run.json, metrics.jsonl and checkpoint.npz (Python: "
        "None writes nothing).", result=False, flag_default="outputs", frames=False)
    result_prefix: Optional[str] = _output(
        None, "File name prefix of the written images (default: <content stem>_stylized).", frames=False)
    save_every: int = _output(100, "Save an image every N steps (0: only the final image).",
                              flag="integer", check=fields.non_negative_int, result=False, frames=False)
    log_every: int = _output(100, "Log and record losses every N steps.", flag="integer",
                             check=fields.non_negative_int, result=False, frames=False)
    deprocess_mean: Tuple[float, float, float] = _output(
        IMAGENET_MEAN_BGR, "B,G,R offsets deprocess_image adds back.", flag="floats",
        check=_bgr_triple)
    overwrite: bool = _output(False, "Replace the results of a previous run in "
                              "--output_dir.", flag="boolean", result=False, frames=False)
    resume: Optional[str] = _output(
        None, "Continue the interrupted run whose --output_dir this is (from its "
        "checkpoint.npz).", result=False, frames=False)
    check_memory: bool = _output(
        True, "Refuse image sizes whose memory estimate exceeds the free memory.",
        flag="boolean", result=False, frames=False)

    experiment: str = _experiments(
        "none", "What to run: none (a style transfer) or an experiment (see Experiments).",
        choices=EXPERIMENTS)
    deprocess_offsets: Tuple[Tuple[float, float, float], ...] = _experiments(
        DEFAULT_DEPROCESS_OFFSETS, "deprocess_offsets: B,G,R triples separated by ';' "
        "(quote it in a shell).", flag="offsets", check=_offsets)
    reconstruct_layers: Sequence[str] = _experiments(
        STYLE_LAYERS, "reconstruct_content: one image per layer; reconstruct_style: "
        "growing prefixes of the list.", flag="strings")
    tradeoff_ratios: Tuple[float, ...] = _experiments(
        DEFAULT_TRADEOFF_RATIOS, "tradeoff: style_weight/content_weight ratios, one panel "
        "each.", flag="floats", check=_ratios)

    def replace(self, **changes) -> "Config":
        """Returns a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":  # parsed copy, or UserError
        return validate(self)

    def resolved_learning_rate(self) -> Optional[float]:
        """``learning_rate``, or the optimiser's default when it is None."""
        lr = self.learning_rate
        return DEFAULT_LEARNING_RATES[self.optimizer] if lr is None else float(lr)

    def active_layers(self) -> Tuple[List[str], List[str]]:
        """``(content_layers, style_layers)`` whose term has a non-zero weight."""
        content = list(self.content_layers) if self.content_weight > 0 else []
        style = list(self.style_layers) if self.style_weight > 0 else []
        return content, style

    def stage_heights(self) -> List[int]:
        """Output heights of the stages: ``scales``, else ``[img_nrows]``."""
        return [int(s) for s in self.scales] if self.scales else [int(self.img_nrows)]

    def iteration_counts(self) -> List[int]:
        """Optimiser steps of each stage (one count per height)."""
        counts = [int(n) for n in fields.as_list(self.iterations)]
        return counts * len(self.stage_heights()) if len(counts) == 1 else counts


FIELDS = fields.fields_of(Config)

# Settings --resume may change: they do not alter the objective or the path
# the optimiser takes (``iterations`` extends or shortens the run).
RESUME_MAY_CHANGE = frozenset(n for n, f in FIELDS.items() if not f.metadata["result"])
# Settings that change the network (its weights and arithmetic): ``network_key``.
NETWORK = tuple(n for n, f in FIELDS.items() if f.metadata["network"])


def network_key(config: Config) -> tuple:
    """What fixes the network: the values of the ``network=True`` fields, in field
    order (a key of the style targets a worker keeps across runs)."""
    return tuple(getattr(config, name) for name in NETWORK)


def frame_settings(config: Config) -> Dict[str, Any]:
    """``to_dict(config)`` without the ``frames=False`` fields: the settings a
    film's stylised frames depend on (a rerun that changes only the others
    reuses them)."""
    return {k: v for k, v in to_dict(config).items() if FIELDS[k].metadata["frames"]}


# --------------------------------------------------------------------------
# Validation


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


def result_prefix(config: Config) -> str:
    """``result_prefix``, or ``<stem>_stylized`` from the content image's file name.

    A path or URL ``.../cat.jpg`` gives ``cat_stylized``; an array (no name)
    gives ``stylized``.
    """
    if config.result_prefix:
        return config.result_prefix
    source = config.content_image
    if isinstance(source, str) and source != "<array>":
        path = urllib.parse.urlparse(source).path if "://" in source else source
        stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
        if stem:
            return f"{stem}_stylized"
    return "stylized"


def _count(name: str, values, count: int, what: str) -> None:
    if values is not None and len(values) != count:
        raise UserError(f"--{name} has {len(values)} values but there are {count} {what}; "
                        f"give one weight per {what[:-1]}")


def _check_masks(config: Config, n_styles: int) -> None:
    masks = config.style_masks
    if masks is None:
        return
    masks = list(masks)
    if len(masks) != n_styles:
        raise UserError(f"--style_masks has {len(masks)} masks but there are {n_styles} style "
                        "images; give one mask per --style_image, in the same order")
    for mask in masks:
        if isinstance(mask, str) and not mask.lower().startswith(("http://", "https://")) \
                and not os.path.isfile(mask):
            raise UserError(f"--style_masks: {mask!r} does not exist; give one image file "
                            "per style (white where that style applies)")


def _check_together(config: Config) -> None:
    """Checks that involve several settings."""
    if config.content_weight == 0 and config.style_weight == 0:
        raise UserError("--content_weight and --style_weight are both 0: nothing to "
                        "optimise; give at least one a positive value")
    if not config.content_layers and config.content_weight > 0:
        raise UserError("--content_layers is empty; name at least one layer")
    if not config.style_layers and config.style_weight > 0:
        raise UserError("--style_layers is empty; name at least one layer")
    stages, counts = len(config.stage_heights()), fields.as_list(config.iterations)
    if len(counts) not in (1, stages):
        raise UserError(f"--iterations={fields.show_value(counts)} has {len(counts)} values for "
                        f"{stages} scale(s); give one number (used at every scale) or one "
                        "per scale")
    if (config.devices or config.distribute == "multi_worker") and not config.tile_size:
        raise UserError("--devices and --distribute=multi_worker spread tiles over devices; "
                        "set --tile_size too (e.g. 1024)")
    n_styles = len(style_sources(config.style_image))
    if n_styles:
        _count("style_blend_weights", config.style_blend_weights, n_styles, "style images")
    _check_masks(config, n_styles)
    if config.color_weight > 0 and config.preserve_colors == "luminance":
        raise UserError("--color_weight pulls the colours towards the painting's, "
                        "--preserve_colors=luminance keeps the photo's: use one of them (or "
                        "--preserve_colors=histogram, whose painting has the photo's colours)")
    if config.style_weight > 0:
        _count("style_layer_weights", config.style_layer_weights, len(config.style_layers),
               "style layers")


def _check_inputs(config: Config) -> None:
    """The images the run needs (an experiment may not need both)."""
    if config.content_image is None and config.experiment != "reconstruct_style":
        raise UserError("no content image given; set --content_image=PATH_OR_URL")
    if config.network is not None:
        if config.experiment != "none":
            raise UserError("--network stylises in one pass; --experiment needs the "
                            "optimisation: leave one of them out")
        if config.preserve_colors == "histogram":
            raise UserError("--preserve_colors=histogram recolours the painting before "
                            "optimising; a trained network's painting is fixed: use "
                            "--preserve_colors=luminance or none")
        return
    if config.style_image is None and config.experiment != "reconstruct_content":
        raise UserError("no style image given; set --style_image=PATH_OR_URL")
    if config.experiment in ("reconstruct_content", "reconstruct_style") and \
            not config.reconstruct_layers:
        raise UserError("--reconstruct_layers is empty; name at least one layer")
    if config.experiment == "tradeoff" and not config.content_weight > 0:
        raise UserError("--experiment=tradeoff scales the style weight against "
                        "--content_weight; give --content_weight a positive value")


def validate(config: Config) -> Config:
    """Returns ``config`` with flag-syntax strings parsed; raises ``UserError``.

    The error names the first bad setting and how to fix it.  The objective's
    checks apply to what the experiment optimises: a reconstruction matches
    only one term, so the other term's weight and image do not matter.
    """
    config = fields.coerce(config)
    if config.experiment == "reconstruct_content":
        checked = config.replace(content_weight=1.0, style_weight=0.0)
    elif config.experiment == "reconstruct_style":
        checked = config.replace(content_weight=0.0, style_weight=1.0)
    else:
        checked = config
    fields.validate_fields(checked)
    _check_inputs(checked)
    _check_together(checked)
    return config


# --------------------------------------------------------------------------
# Serialisation


def to_dict(config: Config) -> Dict[str, Any]:
    """The settings as a JSON-friendly dict (arrays become ``"<array>"``)."""
    out = {}
    for name in FIELDS:
        value = getattr(config, name)
        if hasattr(value, "dtype") and hasattr(value, "shape"):
            value = "<array>"
        elif isinstance(value, (tuple, list)):
            value = [list(v) if isinstance(v, tuple) else
                     "<array>" if hasattr(v, "dtype") and hasattr(v, "shape") else v
                     for v in value]
        out[name] = value
    return out


