"""The options of ``python -m nst_keras.train`` and the ``Config`` fields it takes.

The objective is the run command's: every ``Config`` field named in
``CONFIG_FIELDS`` is a flag of the training command too (the same field, so
the same check, help and docs); the training's own options are
``TrainOptions``.  ``style_masks`` and ``tile_size`` are flags only to be
refused in one line (a network is trained for whole pictures of one style).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from nst_keras import fields, settings

_train = fields.group("train")

# The Config fields the training command takes (flags of the same name).
CONFIG_FIELDS = (
    "style_image", "style_blend_weights", "style_scale", "interpolation", "style_masks",
    "content_weight", "style_weight", "total_variation_weight", "content_layers",
    "style_layers", "style_layer_weights", "style_loss", "sliced_directions", "color_weight",
    "color_loss", "loss_normalization", "model", "weights", "pooling", "padding", "seed",
    "precision", "jit_compile", "tile_size", "devices", "distribute")


def config_fields() -> dict:
    return {name: settings.FIELDS[name] for name in CONFIG_FIELDS}


def _width(name, value):
    if not 0.05 <= float(value) <= 4:
        fields.fail(name, value, "must be between 0.05 and 4 (1.0 is Johnson et al.'s network)")


def _image_size(name, value):
    if int(value) < 32 or int(value) % 4:
        fields.fail(name, value, "must be a multiple of 4 of at least 32 pixels, e.g. 256")


def _network_file(name, value):
    if not str(value).endswith(".keras"):
        fields.fail(name, value, "must end in .keras (the Keras file format), e.g. "
                    "painting.keras")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """The options of ``python -m nst_keras.train`` (``nst_keras.train.train``).

    ``photos``, ``output`` and ``output_dir`` must be given (``resume``
    instead of ``output_dir`` continues that run).  Fields marked
    ``result=False`` may change on ``--resume``.
    """

    photos: str = _train(dataclasses.MISSING, "Folder of training photos (searched "
                         "recursively: JPEG, PNG, WebP), e.g. COCO 2014's train2014.")
    output: str = _train(dataclasses.MISSING, "The trained network, a .keras file (written "
                         "atomically at every checkpoint and at the end).", check=_network_file,
                         result=False)
    output_dir: Optional[str] = _train(
        None, "The run folder: run.json, metrics.jsonl, loss.png, checkpoint.npz, "
        "preview.png.", result=False)
    steps: int = _train(2000, "Optimiser steps (batches) to train for; raise it with "
                        "--resume to train on.", flag="integer", check=fields.positive_int,
                        result=False)
    image_size: int = _train(256, "Side of the square training crops in pixels (Johnson et "
                             "al.: 256).", flag="integer", check=_image_size)
    batch_size: int = _train(4, "Photos per step (Johnson et al.: 4).", flag="integer",
                             check=fields.positive_int)
    learning_rate: float = _train(1e-3, "Adam's learning rate (Johnson et al.: 1e-3).",
                                  flag="float", check=fields.positive_finite)
    network_width: float = _train(1.0, "Channel multiplier of the network: 1.0 is Johnson et "
                                  "al.'s c9s1-32, d64, d128, 5xR128, u64, u32, c9s1-3; 0.5 is "
                                  "about 4x cheaper.", flag="float", check=_width)
    network_antialias: bool = _train(
        False, "Blur before each stride-2 convolution and upsample bilinearly instead of by "
        "nearest neighbour: texture less tied to the network's 4-pixel grid, less flicker on "
        "film at some style (0.53x at 0.18 of the gap: docs/video.md).", flag="boolean")
    stability_weight: float = _train(
        0.0, "Weight of the stability term: the network's picture of a photo moved by a few "
        "pixels (and noised) must be its picture moved (less flicker in films; 0: off; with "
        "network_fast's terms 1000 gave 0.73x the flicker, 3000 0.53x, each at some style: "
        "docs/video.md).", flag="float", check=fields.weight)
    stability_shift: int = _train(
        3, "Largest shift in pixels of the stability term's moved photo (1..N, drawn each "
        "step).", flag="integer", check=fields.positive_int)
    stability_noise: float = _train(
        2.0, "Gaussian noise (grey levels) added to the stability term's moved photo.",
        flag="float", check=fields.weight)
    log_every: int = _train(10, "Write a line to metrics.jsonl (and the progress line) every "
                            "N steps.", flag="integer", check=fields.positive_int, result=False)
    checkpoint_every: int = _train(200, "Save the checkpoint and the network every N steps "
                                   "(and on Ctrl-C).", flag="integer", check=fields.positive_int,
                                   result=False)
    preview_every: int = _train(200, "Write preview.png (a few fixed photos and the network's "
                                "pictures of them) every N steps; 0: only at the end.",
                                flag="integer", check=fields.non_negative_int, result=False)
    resume: Optional[str] = _train(None, "Continue the training in this run folder from its "
                                   "checkpoint (same settings; --steps may be raised).",
                                   result=False)
    overwrite: bool = _train(False, "Replace a previous run in --output_dir and an existing "
                             "--output.", flag="boolean", result=False)
