"""What the page sends, checked: uploaded pictures and the settings form.

Everything here raises ``UserError`` with one readable line, which the page
shows as is.  A page preset is the shipped preset's whole ``Config``
(``cli.preset_config``, as ``--preset`` reads it) with only what the form
fills in (``FORM_FIELDS``) and the run's own settings (``PAGE_RUN``)
replaced, and the settings given on the server's command line winning.
Uploads arrive as bytes and are checked and decoded by
``engine.imaging.decode_picture`` within the server's ``Limits``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from nst_keras import cli, fields, settings
from nst_keras.app.options import ServerOptions
from nst_keras.engine import imaging, vgg
from nst_keras.errors import UserError
from nst_keras.settings import Config

# The settings the form fills in (with the uploads); a preset keeps every other one
# (``style_weight`` too: the form's strength is a factor on it).
FORM_FIELDS = ("img_nrows", "scales", "iterations", "optimizer", "preserve_colors", "init",
               "style_blend_weights", "style_masks", "content_image", "style_image")
# What every page run sets for itself: its directory (``jobs``), its file names,
# a metrics line per step (the page's loss curve) and the final picture only.
PAGE_RUN = dict(output_dir=None, resume=None, result_prefix="result", save_every=0,
                log_every=1, overwrite=False, experiment="none")
# The settings a page preset stands for: every other one, so a new setting is the preset's.
OBJECTIVE = tuple(n for n in settings.FIELDS if n not in FORM_FIELDS and n not in PAGE_RUN)

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

    ``form``: what the page fills in; ``config``: the preset's value of every
    setting of ``OBJECTIVE``; ``scales`` (multi-scale presets only): the stages' heights as
    fractions of the output height, coarse to fine.
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

_SERVER = ServerOptions()  # the limits' defaults: the server's flags' defaults


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the page may send and ask for: the limits of ``ServerOptions``
    (``Limits.of(options)``; ``--max_upload_mb`` here in bytes)."""

    max_bytes: int = _SERVER.max_upload_mb * 2 ** 20  # per request
    max_pixels: int = _SERVER.max_pixels              # per picture
    max_rows: int = _SERVER.max_rows                  # the output's height
    max_iterations: int = _SERVER.max_iterations      # per scale
    max_strength: float = _SERVER.max_strength        # |log10| of the style weight's factor

    @classmethod
    def of(cls, options: ServerOptions) -> "Limits":
        return cls(options.max_upload_mb * 2 ** 20, options.max_pixels, options.max_rows,
                   options.max_iterations, options.max_strength)

    @property
    def strength_range(self) -> Tuple[float, float]:
        return -self.max_strength, self.max_strength

    def describe_bytes(self) -> str:
        return size_text(self.max_bytes)


size_text = imaging.size_text


def decode_picture(data: bytes, name: str, what: str, limits: Limits) -> np.ndarray:
    """The RGB ``uint8`` array of an uploaded picture (``imaging.decode_picture``
    within ``limits``, at least ``vgg.MIN_SIDE`` a side); ``UserError`` if unusable."""
    label = f"the {what} ({name})" if name else f"the {what}"
    return imaging.decode_picture(data, label, limits.max_bytes, limits.max_pixels,
                                  vgg.MIN_SIDE)


MASK_FIELD = re.compile(r"mask_([1-9][0-9]?)")  # the form's mask files: mask_1, mask_2, ...


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
        imaging.check_mask(grey, f"the mask of painting {k}", photo_shape,
                           fix="paint some of the photo with its brush, or remove it")
        arrays.append(grey)
    return arrays


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


def _iterations(text: str, most: int):
    parts = [p.strip() for p in text.split(",") if p.strip()] or [""]
    counts = tuple(_number(p, "Iterations", int, 1, most) for p in parts)
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
                 masks: Optional[Sequence[np.ndarray]] = None,
                 limits: Optional[Limits] = None) -> Config:
    """The validated ``Config`` of the page's form: the preset's ``OBJECTIVE``
    settings (every setting but the next two kinds) except the server's
    ``explicit`` ones, then ``FORM_FIELDS`` and ``PAGE_RUN``.

    Args:
      base: the server's settings (its command line).
      explicit: settings given on the server's command line: they win over
        the preset's (e.g. ``--precision``, ``--weights``).
      form: the form's fields, each a list of texts.
      n_styles: how many style pictures came with it.
      init: the starting picture's server-side path when the form names a
        result of the gallery (``init=result:<id>``), else ``None``.
      masks: the painted masks (``decode_masks``), one per style, or ``None``.
      limits: what the form may ask for (default: ``Limits()``).

    The pictures are ``"<upload>"`` here: ``jobs.save_uploads`` names the
    files it saves them as.
    """
    limits = limits or Limits()
    name = _field(form, "preset", "fast")
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    server = base.replace(**{k: v for k, v in preset["config"].items() if k not in explicit})
    rows = _number(_field(form, "rows"), "The output size (rows)", int, vgg.MIN_SIDE,
                   limits.max_rows)
    strength = _number(_field(form, "strength", "0"), "The style strength", float,
                       *limits.strength_range)
    init_choice = _field(form, "init", "content")
    if init is None and init_choice not in settings.INITS:
        raise UserError(f"unknown starting picture {init_choice!r}; choose content, noise, "
                        "style or a result of the gallery")
    filled = dict(
        img_nrows=rows, scales=_scales(preset, rows),
        iterations=_iterations(_field(form, "iterations"), limits.max_iterations),
        optimizer=_field(form, "optimizer"), preserve_colors=_field(form, "preserve_colors"),
        init=init if init is not None else init_choice,
        style_weight=server.style_weight * 10 ** strength,
        style_blend_weights=_blend(form, n_styles),
        style_masks=list(masks) if masks is not None else None, content_image="<upload>",
        style_image=["<upload>"] * n_styles if n_styles > 1 else "<upload>")
    return settings.validate(server.replace(**filled, **PAGE_RUN))


def summary(form: Dict[str, List[str]], config: Config, names: Sequence[str],
            regions: bool = False) -> Dict:
    """The settings a gallery entry shows (``regions``: painted per region)."""
    return {"preset": _field(form, "preset", "fast"), "rows": config.img_nrows,
            "iterations": fields.show_value(config.iterations),
            "optimizer": config.optimizer, "preserve_colors": config.preserve_colors,
            "init": _field(form, "init", "content"),
            "strength": float(_field(form, "strength", "0")),
            "style_weight": config.style_weight, "pictures": list(names), "regions": regions}
