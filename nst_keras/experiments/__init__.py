"""Experiments that show how the method works, as captioned grids and JSON reports.

``run_experiment(config)`` runs ``config.experiment``:

* ``deprocess_offsets``: one style transfer, then its final network image
  deprocessed with each B,G,R triple of ``config.deprocess_offsets``;
  writes ``deprocess_offsets.png`` and ``deprocess_offsets.json``.
* ``reconstruct_content``: for each layer of ``config.reconstruct_layers``, an
  image reconstructed from noise by matching only that layer's content
  features; writes ``reconstruct_content_<layer>.png``, the grid
  ``reconstruct_content.png`` (the content picture first) and
  ``reconstruct_content.json``.
* ``reconstruct_style``: the same with the style representation (Gram
  matrices) of growing sets of layers ``{l1}, {l1, l2}, ...``; writes
  ``reconstruct_style_upto_<layer>.png``, ``reconstruct_style.png`` (the
  style picture first) and ``reconstruct_style.json``.
* ``tradeoff``: one style transfer per ``style_weight / content_weight`` ratio
  of ``config.tradeoff_ratios`` (``content_weight`` kept); writes
  ``tradeoff_ratio_<r>.png``, the row ``tradeoff.png`` and ``tradeoff.json``.

Everything goes to ``config.output_dir``; with ``output_dir=None`` nothing is
written and the pictures are only returned.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, List

import numpy as np

from nst_keras import fields, settings
from nst_keras.engine import imaging, pipeline, vgg
from nst_keras.errors import UserError
from nst_keras.experiments.grid import make_grid
from nst_keras.experiments.offsets import offsets_panels, offsets_report
from nst_keras.experiments.reconstruct import growing_sets, quiet_retracing, reconstruct
from nst_keras.output import files, rundir, stylize
from nst_keras.settings import Config

Log = Callable[[str], None]

__all__ = [
    "ExperimentResult",
    "growing_sets",
    "make_grid",
    "offsets_report",
    "reconstruct",
    "run_experiment",
]


@dataclasses.dataclass
class ExperimentResult:
    """What ``run_experiment`` returns.

    Attributes:
      grid: the captioned grid, ``uint8`` RGB.
      pictures: the grid's panels in order.
      captions: their captions.
      records: the JSON report (a list of dicts).
      paths: files written (the grid last).
    """

    grid: np.ndarray
    pictures: List[np.ndarray]
    captions: List[str]
    records: List[Dict]
    paths: List[str]


def run_experiment(config: Config, log: Log = print) -> ExperimentResult:
    """Runs ``config.experiment`` (see the module docstring).

    The list settings may also be given in the flags' syntax (strings); the
    image an experiment does not use may be missing (the content image for
    ``reconstruct_style``, the style image for ``reconstruct_content``).

    Raises:
      UserError: bad settings or inputs; nothing is written in that case.
    """
    config = settings.validate(config)
    runners = {
        "deprocess_offsets": _deprocess_offsets,
        "reconstruct_content": lambda c, log: _reconstructions(c, log, "content"),
        "reconstruct_style": lambda c, log: _reconstructions(c, log, "style"),
        "tradeoff": _tradeoff,
    }
    if config.experiment not in runners:
        raise UserError("--experiment=none runs no experiment; name one of: "
                        + ", ".join(runners))
    return runners[config.experiment](config, log)


def _write(config: Config, name: str, grid, records, extra_paths) -> List[str]:
    if config.output_dir is None:
        return []
    json_path = os.path.join(config.output_dir, f"{name}.json")
    files.atomic_write_bytes(
        json_path, (json.dumps(records, indent=2, allow_nan=False) + "\n").encode()
    )
    grid_path = os.path.join(config.output_dir, f"{name}.png")
    files.save_image(grid_path, grid)
    return [*extra_paths, json_path, grid_path]


def _save(config: Config, name: str, picture) -> List[str]:
    if config.output_dir is None:
        return []
    path = os.path.join(config.output_dir, name)
    files.save_image(path, picture)
    return [path]


def _deprocess_offsets(config: Config, log: Log) -> ExperimentResult:
    offsets = [tuple(float(v) for v in t) for t in config.deprocess_offsets]
    result = stylize.stylize(config, log=log)
    records = offsets_report(result.tensor, offsets)
    pictures, captions = offsets_panels(result.tensor, offsets)
    grid = make_grid(pictures, captions)
    for r in records:
        psnr = "identical" if r["psnr_vs_imagenet"] is None else f"{r['psnr_vs_imagenet']:.2f} dB"
        log(f"offsets {r['offsets']}: mean shift RGB {r['mean_shift_rgb']}, clipped RGB "
            f"{r['clipped_fraction_rgb']}, PSNR vs ImageNet means {psnr}")
    paths = _write(config, "deprocess_offsets", grid, records, list(result.paths))
    return ExperimentResult(grid, pictures, captions, records, paths)


def _load_backbone_checked(config: Config, layers):
    backbone, desc = vgg.load_backbone(config.model, config.weights, config.seed)
    vgg.check_layers(backbone, layers, config.model)
    return backbone, desc


def _load_target(config: Config, source) -> np.ndarray:
    pic = imaging.open_picture(source)
    size = imaging.target_size(pic.size[0], pic.size[1], config.img_nrows)
    return imaging.load_image(pic, size, config.interpolation)


def _reconstructions(config: Config, log: Log, kind: str) -> ExperimentResult:
    """Fig. 1: one reconstruction from noise per layer (content) or per growing
    set of layers (style), in a grid beside the target image."""
    layers = list(config.reconstruct_layers)
    source = config.content_image if kind == "content" else config.style_image
    target = _load_target(config, source)
    _, desc = _load_backbone_checked(config, layers)
    _make_output_dir(config)
    log(f"{kind} reconstructions from noise, {config.model} weights: {desc}; image "
        f"{target.shape[0]}x{target.shape[1]}; {config.optimizer}, {config.iterations} "
        "iterations each")
    if kind == "content":
        subsets = [[layer] for layer in layers]
    else:
        subsets = growing_sets(layers)
    pictures, captions, records, paths = [target], [f"{kind} image"], [], []
    for subset in subsets:
        picture, record = reconstruct(config, target, kind, subset, log)
        if kind == "content":
            name, caption = f"reconstruct_content_{subset[0]}.png", f"content {subset[0]}"
        else:
            name = f"reconstruct_style_upto_{subset[-1]}.png"
            caption = "style " + (subset[0] if len(subset) == 1
                                  else f"{subset[0]} .. {subset[-1]}")
        paths += _save(config, name, picture)
        record["file"] = os.path.basename(paths[-1]) if paths else None
        pictures.append(picture)
        captions.append(caption)
        records.append(record)
    grid = make_grid(pictures, captions)
    paths = _write(config, f"reconstruct_{kind}", grid, records, paths)
    return ExperimentResult(grid, pictures, captions, records, paths)


def _make_output_dir(config: Config) -> None:
    if config.output_dir is not None:
        rundir.make_output_dir(config.output_dir)


def _tradeoff(config: Config, log: Log) -> ExperimentResult:
    ratios = [float(r) for r in config.tradeoff_ratios]
    content, styles = pipeline.load_inputs(config)  # fails before anything is written
    _load_backbone_checked(config, list(config.content_layers) + list(config.style_layers))
    _make_output_dir(config)
    pictures, captions, records, paths = [], [], [], []
    for ratio in ratios:
        style_weight = float(f"{ratio * float(config.content_weight):.12g}")
        log(f"tradeoff: style/content = {fields.number_text(ratio)} "
            f"(style_weight={style_weight:.4g})")
        run = config.replace(style_weight=style_weight, output_dir=None)
        with quiet_retracing():
            result = stylize.stylize(run, content=content, style=styles[0], log=log)
        paths += _save(config, f"tradeoff_ratio_{fields.number_text(ratio)}.png",
                       result.image)
        last = result.history[-1] if result.history else {}
        records.append({
            "ratio": ratio,
            "content_weight": float(config.content_weight),
            "style_weight": style_weight,
            "iterations": int(config.iterations),
            "content_loss": last.get("content_loss"),
            "style_loss": last.get("style_loss"),
            "tv_loss": last.get("tv_loss"),
            "losses_at_iteration": last.get("iteration"),
            "file": os.path.basename(paths[-1]) if paths else None,
        })
        pictures.append(result.image)
        captions.append(f"style/content = {fields.number_text(ratio)}")
    grid = make_grid(pictures, captions)
    paths = _write(config, "tradeoff", grid, records, paths)
    return ExperimentResult(grid, pictures, captions, records, paths)
