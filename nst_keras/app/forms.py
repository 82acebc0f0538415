"""What the page sends, checked: uploaded pictures and the settings form.

Everything here raises ``UserError`` with one readable line, which the page
shows as is.  The page's presets are read from the shipped preset files
(``nst_keras/presets``, as ``--preset`` reads them); nothing else here
touches a file: uploads arrive as bytes and become arrays.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from nst_keras import cli, settings
from nst_keras.engine import imaging, vgg
from nst_keras.errors import UserError
from nst_keras.settings import Config

MAX_ROWS = 2048          # the largest output height the page accepts
MAX_ITERATIONS = 20000   # per scale
STRENGTH_RANGE = (-2.0, 2.0)  # style strength: log10 of the style weight's factor

# The settings a preset of the page stands for besides the fields the form
# fills in; every other setting is the server's (its command line).
OBJECTIVE = ("loss_normalization", "content_weight", "style_weight", "total_variation_weight",
             "interpolation", "pooling", "padding", "learning_rate", "ema_decay",
             "clamp_pixels", "precision")

# The page's presets, each a shipped preset (``--preset=NAME``): the page's
# name -> (the preset's name, the label; ``{optimizer}`` and ``{iterations}``
# are the preset's).
PAGE_PRESETS = {
    "fast": ("fast", "Fast ({optimizer}, {iterations} iterations)"),
    "tutorial": ("default", "keras.io tutorial (slow)"),
    "keep_colors": ("keep_colors", "Keep the photo's colours"),
    "high_res": ("high_res", "High resolution (coarse to fine)"),
}
_OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "lbfgs": "L-BFGS"}


def page_preset(name: str, label: str) -> Dict:
    """The page's preset read from the shipped preset ``name`` (``cli.preset_config``).

    ``form``: what the page fills in; ``config``: the ``OBJECTIVE`` settings
    it stands for; ``scales`` (multi-scale presets only): the stages'
    heights as fractions of the output height, coarse to fine.
    """
    config = cli.preset_config(name)
    heights = config.stage_heights()
    form = dict(rows=heights[-1], iterations=",".join(str(n) for n in config.iteration_counts()),
                optimizer=config.optimizer, preserve_colors=config.preserve_colors,
                init=config.init)
    text = label.format(optimizer=_OPTIMIZER_NAMES.get(config.optimizer, config.optimizer),
                        iterations=form["iterations"])
    preset = dict(label=text, source=name, form=form,
                  config={key: getattr(config, key) for key in OBJECTIVE})
    if config.scales:
        preset["scales"] = tuple(h / heights[-1] for h in heights)
    return preset


def load_presets() -> Dict[str, Dict]:
    """``{page name: page_preset(...)}`` of ``PAGE_PRESETS``, read from the files now."""
    return {page: page_preset(name, label) for page, (name, label) in PAGE_PRESETS.items()}


PRESETS: Dict[str, Dict] = load_presets()


class Limits:
    """What an upload may be: bytes per request and pixels per picture."""

    def __init__(self, max_bytes: int = 25 * 2 ** 20, max_pixels: int = 40_000_000):
        self.max_bytes, self.max_pixels = int(max_bytes), int(max_pixels)

    def describe_bytes(self) -> str:
        return size_text(self.max_bytes)


def size_text(n: int) -> str:
    """``25 MB``, ``1.5 MB`` or ``4000 bytes``."""
    return f"{n / 2 ** 20:.3g} MB" if n >= 2 ** 20 else f"{n} bytes"


def decode_picture(data: bytes, name: str, what: str, limits: Limits) -> np.ndarray:
    """The RGB ``uint8`` array of an uploaded picture; ``UserError`` if unusable.

    The size is read from the header and checked against ``limits`` (and
    Pillow's decompression-bomb check) before the pixels are decoded.
    """
    label = f"the {what} ({name})" if name else f"the {what}"
    if not data:
        raise UserError(f"{label} is empty; choose a picture file")
    if len(data) > limits.max_bytes:
        raise UserError(f"{label} is {size_text(len(data))}; the limit is "
                        f"{limits.describe_bytes()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data))
            _check_pixels(picture.size, label, limits)
            picture.seek(0)
            picture.load()
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{label} has too many pixels (over {limits.max_pixels:,}); "
                        "use a smaller picture") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds here
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, Image.UnidentifiedImageError):
            raise UserError(f"cannot read {label}: it is not an image; give a JPEG, PNG, "
                            "GIF, WebP, BMP or TIFF file") from None
        raise UserError(f"cannot read {label}: the file is truncated or damaged ({reason}); "
                        "export it again") from None
    array = np.asarray(imaging.open_picture(picture))
    if min(array.shape[:2]) < vgg.MIN_SIDE:
        raise UserError(f"{label} is {array.shape[1]}x{array.shape[0]} pixels; give a "
                        f"picture at least {vgg.MIN_SIDE} pixels on each side")
    return array


def _check_pixels(size, label: str, limits: Limits) -> None:
    width, height = size
    if width * height > limits.max_pixels:
        raise UserError(f"{label} is {width}x{height} pixels, over the limit of "
                        f"{limits.max_pixels:,} pixels; use a smaller picture")


MASK_FIELD = re.compile(r"mask_([1-9][0-9]?)")  # the form's mask files: mask_1, mask_2, ...
ASPECT_SLACK = 0.03  # a mask's width/height may differ this much (relative) from the photo's


def mask_number(field: str) -> Optional[int]:
    """``2`` for the form field ``mask_2``; ``None`` for any other name."""
    match = MASK_FIELD.fullmatch(field)
    return int(match.group(1)) if match else None


def decode_masks(masks: Dict[int, Tuple[str, bytes]], n_styles: int, photo_shape,
                 limits: Limits) -> Optional[List[np.ndarray]]:
    """The ``uint8`` grey masks (255: that painting applies) of the form's
    ``mask_<k>`` files, one per style picture, in order; ``None`` without any.

    Each is an image file (``decode_picture``'s limits and checks) of the
    photo's shape (any size: the engine resizes it) with some white or grey
    in it: an all-black mask would leave its painting nowhere.
    """
    if not masks:
        return None
    if sorted(masks) != list(range(1, n_styles + 1)):
        raise UserError(f"give one mask per painting ({n_styles}, mask_1 to mask_{n_styles}), "
                        f"not {len(masks)}; paint the photo again")
    arrays = []
    for k in range(1, n_styles + 1):
        name, data = masks[k]
        picture = decode_picture(data, name, f"mask of painting {k}", limits)
        grey = np.asarray(Image.fromarray(picture).convert("L"))
        _check_mask_shape(grey.shape, photo_shape, k)
        if not grey.any():
            raise UserError(f"the mask of painting {k} is all black: that painting would apply "
                            "nowhere; paint some of the photo with its brush, or remove it")
        arrays.append(grey)
    return arrays


def _check_mask_shape(shape, photo_shape, k: int) -> None:
    (rows, cols), (photo_rows, photo_cols) = shape[:2], photo_shape[:2]
    aspect, photo_aspect = cols / rows, photo_cols / photo_rows
    if abs(aspect - photo_aspect) > ASPECT_SLACK * photo_aspect + 1.0 / min(rows, cols):
        raise UserError(f"the mask of painting {k} is {cols}x{rows} pixels, not the photo's "
                        f"shape ({photo_cols}x{photo_rows}); paint the photo again")


def _field(form: Dict[str, List[str]], name: str, default: Optional[str] = None) -> str:
    values = form.get(name) or []
    if not values or not str(values[0]).strip():
        if default is None:
            raise UserError(f"the form has no {name.replace('_', ' ')}; reload the page")
        return default
    return str(values[0]).strip()


def _number(text: str, what: str, kind=float, low=None, high=None):
    try:
        value = kind(text)
    except ValueError:
        raise UserError(f"{what} must be a number, not {text!r}") from None
    if not math.isfinite(value) or (low is not None and value < low) or \
            (high is not None and value > high):
        raise UserError(f"{what} must be between {low} and {high}, not {text}")
    return value


def _iterations(text: str):
    parts = [p.strip() for p in text.split(",") if p.strip()] or [""]
    counts = tuple(_number(p, "Iterations", int, 1, MAX_ITERATIONS) for p in parts)
    return counts[0] if len(counts) == 1 else counts


def _blend(form: Dict[str, List[str]], n_styles: int):
    texts = form.get("blend") or []
    if n_styles < 2:
        return None
    if len(texts) != n_styles:
        raise UserError(f"give one blend weight per style picture ({n_styles})")
    weights = tuple(_number(t or "1", "A blend weight", float, 0, 1000) for t in texts)
    if not sum(weights) > 0:
        raise UserError("the blend weights are all 0; make at least one positive")
    return weights


def _scales(preset: Dict, rows: int):
    if "scales" not in preset:
        return None
    heights = sorted({max(vgg.MIN_SIDE, int(round(rows * f))) for f in preset["scales"]})
    return tuple(heights) if len(heights) > 1 else None


def build_config(base: Config, explicit: Sequence[str], form: Dict[str, List[str]],
                 n_styles: int, init: Optional[str] = None,
                 masks: Optional[Sequence[np.ndarray]] = None) -> Config:
    """The validated ``Config`` of the page's form.

    Args:
      base: the server's settings (its command line).
      explicit: settings given on the server's command line: they win over
        the preset's (e.g. ``--precision``).
      form: the form's fields, each a list of texts.
      n_styles: how many style pictures came with it.
      init: the starting picture's server-side path when the form names a
        result of the gallery (``init=result:<id>``), else ``None``.
    """
    name = _field(form, "preset", "fast")
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    changes = {k: v for k, v in preset["config"].items() if k not in explicit}
    rows = _number(_field(form, "rows"), "The output size (rows)", int, vgg.MIN_SIDE, MAX_ROWS)
    strength = _number(_field(form, "strength", "0"), "The style strength", float,
                       *STRENGTH_RANGE)
    style_weight = changes.pop("style_weight", base.style_weight) * 10 ** strength
    init_choice = _field(form, "init", "content")
    if init is None and init_choice not in settings.INITS:
        raise UserError(f"unknown starting picture {init_choice!r}; choose content, noise, "
                        "style or a result of the gallery")
    config = base.replace(
        **changes, img_nrows=rows, scales=_scales(preset, rows),
        iterations=_iterations(_field(form, "iterations")),
        optimizer=_field(form, "optimizer"), preserve_colors=_field(form, "preserve_colors"),
        init=init if init is not None else init_choice, style_weight=style_weight,
        style_blend_weights=_blend(form, n_styles), content_image="<upload>",
        style_image=["<upload>"] * n_styles if n_styles > 1 else "<upload>",
        style_masks=list(masks) if masks is not None else None,
        output_dir=None, resume=None, result_prefix="result", save_every=0, log_every=1,
        overwrite=False, experiment="none")
    return settings.validate(config)


def summary(form: Dict[str, List[str]], config: Config, names: Sequence[str],
            regions: bool = False) -> Dict:
    """The settings a gallery entry shows (``regions``: painted per region)."""
    return {"preset": _field(form, "preset", "fast"), "rows": config.img_nrows,
            "iterations": settings.show_value(config.iterations),
            "optimizer": config.optimizer, "preserve_colors": config.preserve_colors,
            "init": _field(form, "init", "content"),
            "strength": float(_field(form, "strength", "0")),
            "style_weight": config.style_weight, "pictures": list(names), "regions": regions}
