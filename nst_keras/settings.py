"""Every option of every command, in one place: ``Config`` and the option classes.

``setting(...)`` makes a field of a frozen dataclass that carries its
default, its help text, its allowed values or check, the kind of
command-line flag it becomes, its docs section, and marks: whether it changes
the result (settings that do not may change on ``--resume``), the network
(``network_key``) or a film's frames (``frame_settings``).  ``Config`` holds
the engine's settings; ``VideoOptions``, ``BatchOptions`` and
``ServerOptions`` the options of the video, batch and app commands.  The
absl flags (``nst_keras.cli``), validation (``validate_fields``,
``validate``), the resume policy (``RESUME_MAY_CHANGE``) and the docs' flag
tables (``flag_table``) are all generated from the fields, so adding an
option is one field here plus the code that uses it.

Every default of ``Config`` is the keras.io "Neural style transfer"
tutorial's, so ``Config(content_image=..., style_image=...)`` reproduces it.

``python -m nst_keras.settings`` prints the guide's flag table;
``python -m nst_keras.settings --write-docs`` rewrites every generated table
of ``docs/`` (``DOC_TABLES``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from nst_keras.engine import hardware, vgg
from nst_keras.errors import UserError

ImageSource = Union[str, "numpy.ndarray"]  # noqa: F821  (path, URL or RGB array)

MODELS = ("vgg19", "vgg16")
OPTIMIZERS = ("sgd", "adam", "lbfgs")
PRECISIONS = ("auto",) + hardware.PRECISIONS
LOSS_NORMALIZATIONS = ("keras_io", "scaled", "gap", "gap_total")
STYLE_LOSSES = ("gram", "wasserstein", "sliced_wasserstein")
COLOR_LOSSES = ("gaussian", "sliced")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
COLOR_MODES = ("none", "luminance", "histogram")
INITS = ("content", "noise", "style")
POOLINGS = ("max", "avg")
PADDINGS = ("zero", "replicate")
FLOWS = ("dis", "farneback")  # optical flow of films (nst_keras.video.flow)
PAIRINGS = ("product", "zip")  # of a batch's contents and styles
EXPERIMENTS = ("none", "deprocess_offsets", "reconstruct_content", "reconstruct_style",
               "tradeoff")

DEFAULT_DEPROCESS_OFFSETS = (
    (103.939, 116.779, 123.68),  # the ImageNet means (B, G, R): undoes preprocessing
    (123.939, 96.779, 96.68),  # a variant tried in a published write-up
    (123.68, 116.779, 103.939),  # the ImageNet means in R, G, B order by mistake
    (0.0, 0.0, 0.0),  # no offsets
)
DEFAULT_TRADEOFF_RATIOS = (0.4, 4.0, 40.0, 400.0, 4000.0)  # keras.io's is 1e-6 / 2.5e-8 = 40

# Learning rates used when ``learning_rate`` is None.  SGD's is the tutorial's
# (its step depends on the loss scale, exactly as in keras.io).  Adam's is in
# pixel units (0..255): Adam's step size does not depend on the gradient's
# scale, so this default holds whatever the loss weights.  L-BFGS has none.
DEFAULT_LEARNING_RATES = {"sgd": 100.0, "adam": 5.0, "lbfgs": None}

# Tiles (``--tile_size``): interiors and halos start on block5's stride.
TILE_ALIGN = 16
MIN_TILE = 64
DISTRIBUTIONS = ("mirrored", "multi_worker")


# --------------------------------------------------------------------------
# Field checks: each takes the value and raises UserError with the fix.


def _fail(name: str, value, what: str):
    raise UserError(f"--{name}={show_value(value)} {what}")


def _positive_int(name, value):
    if int(value) <= 0:
        _fail(name, value, "must be a positive integer")


def _non_negative_int(name, value):
    if int(value) < 0:
        _fail(name, value, "must be 0 or more")


def _weight(name, value):
    if not float(value) >= 0 or float(value) == math.inf:
        _fail(name, value, "must be a finite number >= 0")


def _positive_or_none(name, value):
    if value is not None and not float(value) > 0:
        _fail(name, value, "must be positive")


def _decay_rate(name, value):
    if not 0 < float(value) <= 1:
        _fail(name, value, "must be in (0, 1]")


def _bgr_triple(name, value):
    if len(tuple(value)) != 3:
        _fail(name, value, "needs three numbers (B,G,R)")


def _positive_finite(name, value):
    if not (math.isfinite(float(value)) and float(value) > 0):
        _fail(name, value, "must be a positive number")


def _off_or_fraction(name, value):
    if not 0 <= float(value) < 1:
        _fail(name, value, "must be in [0, 1) (0 = off)")


def _iterations(name, value):
    counts = _as_list(value)
    if not counts or any(int(n) != n or int(n) <= 0 for n in counts):
        _fail(name, value, "must be positive integers")


def _scales(name, value):
    if value is None:
        return
    if len(value) == 0:
        raise UserError("--scales is empty; give output heights like 256,512")
    for s in value:
        if int(s) != s or int(s) < vgg.MIN_SIDE:
            raise UserError(f"--{name}={show_value(value)}: {s} is not a height of at least "
                            f"{vgg.MIN_SIDE} pixels")


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
        _fail(name, value, f"must be 0 (off), auto, or a multiple of {TILE_ALIGN} of at least "
                           f"{MIN_TILE} pixels, e.g. 1024")


def _tile_halo(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or \
            value % TILE_ALIGN:
        _fail(name, value, f"must be a multiple of {TILE_ALIGN} (0 or more); leave it unset for "
                           "the layers' receptive field")


def _devices(name, value):
    if value == "all":
        return
    for item in str(value).split(","):
        kind, _, index = item.strip().upper().partition(":")
        if kind not in ("CPU", "GPU") or not index.isdigit():
            raise UserError(f"--{name}={value}: {item.strip()!r} is not a device; write all or "
                            "a list like GPU:0,GPU:1")


def _frame_distances(name, value):
    if not value or min(int(v) for v in value) < 1:
        _fail(name, value, "needs frame distances of 1 or more, e.g. 1 or 1,2,4")


def _crf(name, value):
    if not 0 <= int(value) <= 51:
        _fail(name, value, "must be 0 (lossless) to 51 (worst)")


def _ratios(name, value):
    if not value or any(not (0 < float(r) < math.inf) for r in value):
        _fail(name, value, "needs one or more positive numbers (style_weight / "
                           "content_weight)")


# --------------------------------------------------------------------------
# Flag syntax: how the text of a flag becomes a value.


def _as_list(value) -> list:
    return [value] if isinstance(value, (int, float)) or hasattr(value, "dtype") \
        and getattr(value, "ndim", 1) == 0 else list(value)


def _numbers(kind: Callable, what: str):
    def parse(name, items):
        try:
            return tuple(kind(v) for v in items)
        except ValueError:
            raise UserError(f"--{name}={','.join(items)} must be {what} separated by "
                            "commas") from None
    return parse


def _texts(name, items):
    return tuple(str(v).strip() for v in items if str(v).strip())


def _size_text(name, text):
    text = str(text).strip()
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--{name}={text} must be 0 (off), auto or a tile side in pixels "
                        "like 1024") from None


def _iterations_text(name, items):
    counts = _numbers(int, "integers")(name, items)
    return counts[0] if len(counts) == 1 else counts


def parse_offsets(text, name: str = "deprocess_offsets") -> Tuple[Tuple[float, float, float], ...]:
    """Parses ``"103.939,116.779,123.68;0,0,0"``: B,G,R triples separated by ``;``.

    Spaces are ignored and a trailing ``;`` is allowed.

    Raises:
      UserError: empty, not numbers, or not three numbers per triple.
    """
    example = "e.g. '103.939,116.779,123.68;0,0,0'"
    parts = [p.strip() for p in str(text).split(";") if p.strip()]
    if not parts:
        raise UserError(f"--{name} is empty; give B,G,R triples separated by ';', {example}")
    out = []
    for part in parts:
        try:
            triple = tuple(float(n.strip()) for n in part.split(","))
        except ValueError:
            raise UserError(f"--{name}: {part!r} is not three numbers; write B,G,R triples "
                            f"separated by ';', {example}") from None
        if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
            raise UserError(f"--{name}: {part!r} needs exactly three finite numbers (B,G,R); "
                            "separate triples with ';'")
        out.append(triple)
    return tuple(out)


def format_offsets(offsets) -> str:
    """The flag syntax of B,G,R triples: ``B,G,R;B,G,R``."""
    return ";".join(",".join(number_text(v) for v in t) for t in offsets)


# absl flag kind -> parser of the flag's value (None: the value as absl gives it).
FLAG_KINDS: Dict[str, Optional[Callable]] = {
    "string": None,
    "integer": None,
    "float": None,
    "boolean": None,
    "strings": _texts,
    "integers": _numbers(int, "integers"),
    "floats": _numbers(float, "numbers"),
    "iterations": _iterations_text,
    "offsets": lambda name, text: parse_offsets(text, name),
    "size": _size_text,
}


def setting(default, help: str, *, flag: str = "string", choices: Sequence[str] = (),
            check: Optional[Callable] = None, result: bool = True, group: str = "run",
            flag_default: Any = dataclasses.MISSING, network: bool = False,
            frames: bool = True):
    """A field (of ``Config`` or an option class) with everything the flags,
    checks and docs need.

    Args:
      default: the value in Python (the keras.io tutorial's where it has one);
        ``dataclasses.MISSING``: none, the field must be given (its flag's
        default is unset).
      help: one sentence for ``--help`` and the docs.
      flag: the kind of absl flag (a key of ``FLAG_KINDS``).
      choices: the allowed values (checked; listed in the help).
      check: ``check(name, value)`` raising ``UserError`` (values not None).
      result: whether the setting changes the result (``--resume`` refuses to
        change such settings).
      group: the docs section the flag is listed under.
      flag_default: the command line's default where it differs from Python's.
      network: whether the setting changes the network (``network_key``).
      frames: whether the setting can change a film's frames
        (``frame_settings``; False: stylised frames are reused across it).
    """
    if flag_default is dataclasses.MISSING:
        flag_default = None if default is dataclasses.MISSING else default
    meta = dict(help=help, flag=flag, choices=tuple(choices), check=check,
                result=result, group=group, flag_default=flag_default, network=network,
                frames=frames)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields_of(source) -> Dict[str, dataclasses.Field]:
    """``{name: field}`` of the ``setting`` fields of a dataclass (the class or
    an instance); a dict of fields is returned as it is."""
    if isinstance(source, dict):
        return source
    return {f.name: f for f in dataclasses.fields(source) if "help" in f.metadata}


def _field(field) -> dataclasses.Field:
    """A field, or the ``Config`` field of that name."""
    return FIELDS[field] if isinstance(field, str) else field


def _group(name: str):
    return lambda *args, **kwargs: setting(*args, group=name, **kwargs)


_inputs, _objective, _optimizer, _tiling, _output, _experiments, _video, _batch, _app = (
    _group(n) for n in ("inputs", "objective", "optimizer", "tiling", "output", "experiments",
                        "video", "batch", "app"))

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
    img_nrows: int = _inputs(
        400, "Output height; the width is int(width * img_nrows / height) of the content.", flag="integer",
        check=_positive_int)
    interpolation: str = _inputs(
        "nearest", "Resampling of the inputs (nearest = keras.io's load_img, bit for bit; the others look "
        "better).", choices=INTERPOLATIONS)
    style_blend_weights: Optional[Sequence[float]] = _inputs(
        None, "One weight per --style_image (normalised to sum 1; default equal).",
        flag="floats", check=_weights_list)
    style_masks: Optional[Sequence[ImageSource]] = _inputs(
        None, "One mask per --style_image, comma separated (white: that style applies, grey: "
        "partly, black: not); resized to the output and to each layer's grid.",
        flag="strings")
    style_scale: float = _inputs(
        1.0, "Style image resized to this factor times the output size (bigger: bigger "
        "strokes).", flag="float", check=_positive_finite)
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
                                       check=_weight)
    style_weight: float = _objective(1e-6, "Weight of the style loss.", flag="float",
                                     check=_weight)
    total_variation_weight: float = _objective(1e-6, "Weight of the total-variation loss.",
                                               flag="float", check=_weight)
    content_layers: Sequence[str] = _objective(
        vgg.CONTENT_LAYERS, "VGG layers of the content loss.", flag="strings")
    style_layers: Sequence[str] = _objective(
        vgg.STYLE_LAYERS, "VGG layers of the style loss.", flag="strings")
    style_layer_weights: Optional[Sequence[float]] = _objective(
        None, "One weight per --style_layers entry (normalised; default equal).",
        flag="floats", check=_weights_list)
    style_loss: str = _objective(
        "gram", "Style statistics matched: gram (the tutorial's Gram matrices), wasserstein "
        "(mean and covariance, Wasserstein-2 between Gaussians) or sliced_wasserstein (the "
        "whole distribution along random directions).", choices=STYLE_LOSSES)
    sliced_directions: int = _objective(
        32, "Random directions per layer and step of --style_loss=sliced_wasserstein.",
        flag="integer", check=_positive_int)
    color_weight: float = _objective(
        0.0, "Weight of the colour term: the picture's pixel colours pulled towards the "
        "painting's (mean and covariance; 0: off).", flag="float", check=_weight)
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
        flag="float", check=_positive_or_none)
    decay_steps: int = _optimizer(100, "ExponentialDecay decay_steps (sgd, adam).", flag="integer", check=_positive_int)
    decay_rate: float = _optimizer(0.96, "ExponentialDecay decay_rate (sgd, adam).", flag="float", check=_decay_rate)
    style_stop_fraction: float = _optimizer(
        0.0, "End the run once the style loss falls to this fraction of its first value "
        "(0: run every iteration).", flag="float", check=_off_or_fraction)
    ema_decay: float = _optimizer(
        0.0, "Save an exponential moving average of the image with this decay, e.g. 0.99 "
        "(0: off).", flag="float", check=_off_or_fraction)
    clamp_pixels: bool = _optimizer(False, "Keep every pixel in 0..255 after each step.", flag="boolean")
    precision: str = _optimizer("auto", "Network precision: auto measures once per machine "
                                "which is fastest (bfloat16 only where the hardware has it); "
                                "losses and the image stay float32.", choices=PRECISIONS,
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
                              flag="integer", check=_non_negative_int, result=False, frames=False)
    log_every: int = _output(100, "Log and record losses every N steps.", flag="integer",
                             check=_non_negative_int, result=False, frames=False)
    deprocess_mean: Tuple[float, float, float] = _output(
        vgg.IMAGENET_MEAN_BGR, "B,G,R offsets deprocess_image adds back.", flag="floats",
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
        vgg.STYLE_LAYERS, "reconstruct_content: one image per layer; reconstruct_style: "
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
        counts = [int(n) for n in _as_list(self.iterations)]
        return counts * len(self.stage_heights()) if len(counts) == 1 else counts


FIELDS = fields_of(Config)

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
# The options of the commands around the engine (each command also takes
# every ``Config`` flag)


@dataclasses.dataclass(frozen=True)
class VideoOptions:
    """The options of ``python -m nst_keras.video`` (``video.film``).

    ``video`` and ``output`` must be given.  ``frames``: ``"START:END"`` of
    the film at ``fps`` (0-based, END excluded, either may be left out).
    ``fps``: frame rate to sample the film at (``None``: its own).
    ``frame_iterations``: steps of every frame after a chunk's first (0: half
    of ``config.iterations``).  ``temporal_frames``: which previous frames the
    temporal loss looks at (1 = the previous one; ``1,2,4`` adds long-term
    consistency).  ``workers``: chunks run in parallel on Ray (0 or 1: one
    chunk, in this process unless ``ray_address``).  ``rows`` (not a flag;
    the command takes it from ``--img_nrows`` or ``--scales`` when given):
    output height, ``None`` for the film's own.
    """

    video: str = _video(dataclasses.MISSING, "The film to stylise (any format ffmpeg reads).")
    output: str = _video(dataclasses.MISSING, "The stylised film (.mp4, .mov, .mkv, .webm, "
                         ".avi); written at the end, through a temporary file.")
    temporal_weight: float = _video(
        50.0, "Weight of the temporal loss (0: independent frames, each from --init).",
        flag="float", check=_weight)
    frame_iterations: int = _video(
        0, "Optimiser steps of every frame after the first (0: half of --iterations).",
        flag="integer", check=_non_negative_int)
    temporal_frames: Tuple[int, ...] = _video(
        (1,), "Previous frames the temporal loss looks at (1: the previous one; 1,2,4 adds "
        "long-term consistency).", flag="integers", check=_frame_distances)
    flow: str = _video("dis", "Optical flow: dis (OpenCV DIS) or farneback.", choices=FLOWS)
    frames: Optional[str] = _video(
        None, "START:END: only these frames (from 0, END excluded, at --fps).")
    fps: Optional[float] = _video(
        None, "Sample the film at this frame rate (default: its own).", flag="float")
    codec: str = _video("libx264", "ffmpeg video encoder of the output.")
    crf: int = _video(18, "Quality of a libx264 output: 0 (lossless) to 51; lower is better "
                      "and bigger.", flag="integer", check=_crf)
    workers: int = _video(
        0, "Run the film as this many overlapping chunks on a local Ray runtime (0 or 1: one "
        "chain of frames, in this process).", flag="integer", check=_non_negative_int)
    ray_address: Optional[str] = _video(
        None, "Run the chunks on an existing Ray cluster (HOST:PORT or auto); every worker "
        "must see --output_dir and --video.")
    chunk_overlap: int = _video(
        4, "Frames two neighbouring chunks share and cross-fade over.", flag="integer",
        check=_non_negative_int)
    rows: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """The options of ``python -m nst_keras.batch`` (``batch.Batch``)."""

    pairing: str = _batch(
        "product", "product: every content with every style; zip: the n-th content with the "
        "n-th style.", choices=PAIRINGS)
    workers: int = _batch(
        0, "Run on a local Ray runtime with this many workers (one per GPU when there are "
        "GPUs); 0: in this process.", flag="integer", check=_non_negative_int)
    ray_address: Optional[str] = _batch(
        None, "Submit to an existing Ray cluster (HOST:PORT or auto); every worker must see "
        "--output_dir.")
    max_retries: int = _batch(
        3, "Times an item whose worker died is retried (from its last checkpoint) on another "
        "worker.", flag="integer", check=_non_negative_int)


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """The options of ``python -m nst_keras.app`` (``app.server``)."""

    port: int = _app(7860, "Port to serve on (0: any free port).", flag="integer")
    host: str = _app("127.0.0.1", "Address to bind; anything but loopback lets other "
                     "machines use the app and needs a token (see docs/security.md).")
    results_dir: Optional[str] = _app(
        None, "Directory of the page's runs, one directory each with its uploads; the gallery "
        "lists every run in it, also those of earlier starts (default: a new temporary "
        "directory).")
    abandon_s: float = _app(
        15.0, "Stop a run when no page has listened to it for this many seconds.",
        flag="float", check=_positive_finite)
    max_upload_mb: int = _app(25, "Largest upload, in MB.", flag="integer",
                              check=_positive_int)
    max_pixels: int = _app(40_000_000, "Most pixels an uploaded picture may have.",
                           flag="integer", check=_positive_int)
    max_rows: int = _app(
        2048, f"Largest output height (rows) the page may ask for; at least {vgg.MIN_SIDE}.",
        flag="integer", check=lambda name, value: int(value) >= vgg.MIN_SIDE or _fail(
            name, value, f"must be at least {vgg.MIN_SIDE} (the smallest picture side)"))
    max_iterations: int = _app(20000, "Most iterations per scale the page may ask for.",
                               flag="integer", check=_positive_int)
    max_strength: float = _app(
        2.0, "The page's style strength goes from -this to +this: log10 of the factor on the "
        "preset's style_weight.", flag="float", check=_positive_finite)
    max_queue: int = _app(4, "Most runs that may wait behind the running one; one more is "
                          "refused (429) until one ends.", flag="integer", check=_positive_int)
    allowed_hosts: Optional[Tuple[str, ...]] = _app(
        None, "More host names to serve besides the bound address and loopback (a reverse "
        "proxy's name); see docs/security.md.", flag="strings")
    no_token: bool = _app(False, "Serve a --host other than loopback without a token: then "
                          "anyone who can reach it can use the app.", flag="boolean")


# --------------------------------------------------------------------------
# Validation


def coerce(obj):
    """Accepts the flag syntax (a string) for list settings given in Python
    (``obj``: a ``Config`` or an option object)."""
    changes = {}
    for name, field in fields_of(obj).items():
        parse = FLAG_KINDS[field.metadata["flag"]]
        value = getattr(obj, name)
        if parse is not None and isinstance(value, str):
            text = value if field.metadata["flag"] in ("offsets", "size") else value.split(",")
            changes[name] = parse(name, text)
    return dataclasses.replace(obj, **changes) if changes else obj


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


def validate_fields(obj):
    """``obj`` (a ``Config`` or an option object) with flag-syntax strings
    parsed, once each field's allowed values and check pass; the first bad
    field raises a one-line ``UserError``."""
    obj = coerce(obj)
    for name, field in fields_of(obj).items():
        value = getattr(obj, name)
        choices = field.metadata["choices"]
        if choices and value not in choices:
            raise UserError(f"--{name}={value!r} is not known; use one of: "
                            f"{', '.join(choices)}")
        if field.metadata["check"] is not None and value is not None:
            field.metadata["check"](name, value)
    return obj


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
    stages, counts = len(config.stage_heights()), _as_list(config.iterations)
    if len(counts) not in (1, stages):
        raise UserError(f"--iterations={show_value(counts)} has {len(counts)} values for "
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
    config = coerce(config)
    if config.experiment == "reconstruct_content":
        checked = config.replace(content_weight=1.0, style_weight=0.0)
    elif config.experiment == "reconstruct_style":
        checked = config.replace(content_weight=0.0, style_weight=1.0)
    else:
        checked = config
    validate_fields(checked)
    _check_inputs(checked)
    _check_together(checked)
    return config


# --------------------------------------------------------------------------
# Serialisation and documentation


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


def number_text(v) -> str:
    """A number as short as it reads: ``4.0`` -> ``4``, ``0.4`` -> ``0.4``."""
    v = float(v)
    return str(int(v)) if math.isfinite(v) and v == int(v) and abs(v) < 1e15 else repr(v)


def show_value(value) -> str:
    """A value as a flag would be written (lists joined by commas)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def flag_text(field, value) -> Optional[str]:
    """A value written as the flag of ``field`` (a field, or a ``Config`` field's
    name) takes it (``None`` for no value)."""
    if value is None:
        return None
    if _field(field).metadata["flag"] == "offsets":
        return format_offsets(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(number_text(v) if isinstance(v, float) else str(v) for v in value)
    return str(value)


def full_help(field) -> str:
    """The help text of ``field`` (a field, or a ``Config`` field's name) with the
    allowed values appended."""
    field = _field(field)
    choices = field.metadata["choices"]
    return field.metadata["help"] + (f" One of: {', '.join(choices)}." if choices else "")


GROUP_TITLES = {
    "inputs": "Inputs, size and artist controls",
    "objective": "Objective and network",
    "optimizer": "Optimiser and speed",
    "tiling": "Tiling and devices",
    "output": "Output, resume and safety",
    "experiments": "Experiments",
}


def flag_table(source=None) -> str:
    """A flag table (Markdown) of ``source``'s fields (an option class, or a dict
    of fields; ``None``: ``Config``'s, the guide's table), one section per
    group in field order, titled where ``GROUP_TITLES`` names the group."""
    fields = FIELDS if source is None else fields_of(source)
    lines = []
    for group in dict.fromkeys(f.metadata["group"] for f in fields.values()):
        if group in GROUP_TITLES:
            lines += [f"**{GROUP_TITLES[group]}**", ""]
        lines += ["| flag | default | meaning |", "|---|---|---|"]
        for name, field in fields.items():
            if field.metadata["group"] != group:
                continue
            default = flag_text(field, field.metadata["flag_default"])
            shown = "—" if default is None else f"`{default}`"
            lines.append(f"| `--{name}` | {shown} | {full_help(field).replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# The generated tables of docs/: (file, marker, fields).  Each table stands
# between <!-- MARKER:start --> and <!-- MARKER:end --> lines of its file.
DOC_TABLES = (
    ("guide.md", "flags", FIELDS),
    ("video.md", "video-flags", VideoOptions),
    ("batch.md", "batch-flags", BatchOptions),
    ("app.md", "app-flags", ServerOptions),
)
DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def with_table(text: str, marker: str, table: str) -> str:
    """``text`` with the block between ``marker``'s start and end lines set to ``table``."""
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    head, found, rest = text.partition(start)
    if not found or end not in rest:
        raise UserError(f"no {start.strip()} ... {end} block to write the table into")
    return head + start + table + end + rest.split(end, 1)[1]


def write_docs(docs_dir: str = DOCS_DIR) -> List[str]:
    """Rewrites every table of ``DOC_TABLES`` under ``docs_dir``; returns the files
    that changed."""
    changed = []
    for name, marker, source in DOC_TABLES:
        path = os.path.join(docs_dir, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = with_table(text, marker, flag_table(source))
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            changed.append(path)
    return changed


def main(argv: Sequence[str]) -> int:
    """``python -m nst_keras.settings``: prints the guide's flag table;
    ``--write-docs`` rewrites the tables of ``docs/`` instead."""
    if list(argv[1:]) == ["--write-docs"]:
        for path in write_docs():
            print(f"wrote {path}")
        return 0
    if argv[1:]:
        print("usage: python -m nst_keras.settings [--write-docs]", file=sys.stderr)
        return 2
    print(flag_table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
