"""A memory estimate made before a run starts, so a too-large size fails at once.

The estimate counts the VGG activations the step keeps for backpropagation
(every conv and pooling output up to the deepest layer the losses read), times
a factor measured on CPU for forward + backward + temporaries, plus the
weights.  It is compared with the memory available to the run: the total
memory of the first GPU when TensorFlow sees one (read with ``nvidia-smi``;
TensorFlow reserves the GPU's memory for itself, so its free memory is no
guide), otherwise the host's available memory (``MemAvailable`` in
``/proc/meminfo``).
Where neither can be read, the check is skipped.

A tiled step (``--tile_size``, ``nst_keras.engine.tiling``) keeps one crop's
activations, plus what grows with the full image: the image, its gradient and
snapshots, the optimiser's state (``OPTIMIZER_BYTES``; L-BFGS-B's float64
vectors dominate) and the content targets.  ``tile_size_for`` decides which
stages are tiled (``--tile_size=auto``: those whose untiled estimate does not
fit), and the check's message suggests tiles when the untiled step will not fit.

Measured on CPU (TensorFlow 2.21, VGG19, default layers, sgd): peak resident
memory grows by about 2.4 KB per output pixel (400x600 adds ~0.42 GB over
200x300); the activations alone are 1.29 KB per pixel, hence the factor below.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from typing import Iterable, Optional, Tuple

from nst_keras.errors import UserError

# Convolutions per block and channels per block of the two backbones.
_BLOCKS = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}
_CHANNELS = (64, 128, 256, 512, 512)
_WEIGHT_BYTES = {"vgg19": 80_097_536, "vgg16": 58_858_752}  # notop float32 weights
ACTIVATION_FACTOR = 2.5  # peak / stored activations, measured (module docstring)
RUNTIME_BYTES = 400 * 2**20  # graph, Gram targets, optimiser slots, slack


def layer_plan(model: str):
    """Yields ``(name, downscale, channels)`` for every layer of the backbone
    (``downscale``: image pixels per feature position along one side)."""
    for b, (convs, ch) in enumerate(zip(_BLOCKS[model], _CHANNELS), start=1):
        scale = 2 ** (b - 1)
        for c in range(1, convs + 1):
            yield f"block{b}_conv{c}", scale, ch
        yield f"block{b}_pool", scale * 2, ch


def activation_floats_per_pixel(model: str, layers: Iterable[str]) -> float:
    """Floats of activations per output pixel up to the deepest of ``layers``."""
    wanted = set(layers)
    total = 0.0
    seen = 0
    for name, scale, channels in layer_plan(model):
        if seen == len(wanted):
            break
        total += channels / float(scale * scale)
        if name in wanted:
            seen += 1
    return total


def estimate_bytes(rows: int, cols: int, model: str = "vgg19", layers=("block5_conv2",),
                   precision: str = "float32") -> int:
    """Estimated peak memory of one optimisation step at ``rows x cols``."""
    # mixed: 16-bit activations + float32 copies; auto may answer float32
    itemsize = 4 if precision in ("float32", "auto") else 3
    per_pixel = activation_floats_per_pixel(model, layers) * itemsize * ACTIVATION_FACTOR
    per_pixel += 4 * 3 * 6  # the image, its gradient, optimiser slots, snapshots
    return int(per_pixel * rows * cols + 2 * _WEIGHT_BYTES.get(model, 0) + RUNTIME_BYTES)


AUTO_TILE = 1024  # --tile_size=auto's tile side
# Bytes per image value (pixel and channel) the optimiser keeps besides the
# image and its gradient: Adam two float32 moments; SciPy's L-BFGS-B float64
# copies (iterate, gradient, 2 x 10 correction pairs and work vectors).
OPTIMIZER_BYTES = {"sgd": 4, "adam": 12, "lbfgs": 8 * 26}


def image_bytes(rows: int, cols: int, optimizer: str = "adam") -> int:
    """What the full image costs a tiled step: the image, its gradient (host
    array and tensor), snapshots and the optimiser's state."""
    return int(rows * cols * 3 * (4 * 5 + OPTIMIZER_BYTES.get(optimizer, 12)))


def content_target_bytes(rows: int, cols: int, model: str, layers: Iterable[str]) -> int:
    """The full-size content features (float32) a tiled step keeps as targets."""
    wanted = set(layers)
    return int(sum(4 * rows * cols * ch / float(scale * scale)
                   for name, scale, ch in layer_plan(model) if name in wanted))


def estimate_tiled_bytes(rows: int, cols: int, tile: int, halo: int, config) -> int:
    """Estimated peak memory of one tiled step: one crop's step, the full image."""
    content_layers, style_layers = config.active_layers()
    layers = content_layers + style_layers or ["block1_conv1"]
    crop_rows, crop_cols = min(rows, tile + 2 * halo), min(cols, tile + 2 * halo)
    crop = estimate_bytes(crop_rows, crop_cols, config.model, layers, config.precision)
    return crop + image_bytes(rows, cols, config.optimizer) + content_target_bytes(
        rows, cols, config.model, content_layers)


def untiled_bytes(rows: int, cols: int, config) -> int:
    content_layers, style_layers = config.active_layers()
    return estimate_bytes(rows, cols, config.model, content_layers + style_layers
                          or ["block1_conv1"], config.precision)


def tile_size_for(rows: int, cols: int, config) -> int:
    """The tile side a stage of ``rows x cols`` uses (0: untiled).

    A set ``--tile_size`` tiles the stages larger than one tile; ``auto`` tiles
    at ``AUTO_TILE`` when the untiled step's estimate exceeds the memory there is.
    """
    size = config.tile_size
    if size == "auto":
        have, _ = available_bytes()
        return AUTO_TILE if have is not None and untiled_bytes(rows, cols, config) > have else 0
    return int(size) if size and max(rows, cols) > int(size) else 0


def _gpu_total_bytes() -> Optional[int]:
    """Total memory of the first GPU (TensorFlow reserves most of it for itself
    once it runs, so its free memory says little about what a run may use)."""
    try:
        import tensorflow as tf  # late: the estimate itself needs no TensorFlow

        if not tf.config.list_physical_devices("GPU"):
            return None
    except Exception:  # noqa: BLE001
        return None
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.split()
        return int(float(out[0]) * 2**20)
    except Exception:  # noqa: BLE001 - no usable answer means no check
        return None


def _host_available_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes() -> Tuple[Optional[int], str]:
    """Returns ``(bytes, where)``: memory the run may use and what it is."""
    gpu = _gpu_total_bytes()
    if gpu is not None:
        return gpu, "GPU memory"
    return _host_available_bytes(), "available memory"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check(rows: int, cols: int, config, halo: int = 192) -> None:
    """Raises ``UserError`` if a run at ``rows x cols`` will not fit in memory.

    ``halo``: the tiles' halo when the run is tiled (``--tile_size``); the
    default, 192, is the default layers' (callers pass ``tiling.check_settings``).
    """
    if not getattr(config, "check_memory", True):
        return
    have, where = available_bytes()
    tile = tile_size_for(rows, cols, config)
    if tile:
        need = estimate_tiled_bytes(rows, cols, tile, halo, config)
        if have is not None and need > have:
            raise UserError(
                f"a {rows}x{cols} image in {tile}-pixel tiles needs about {_gib(need)} "
                f"(the image and optimiser state grow with it) but only {_gib(have)} of "
                f"{where} is there; lower --img_nrows or --tile_size, or use --optimizer=sgd; "
                "--nocheck_memory skips this check")
        return
    need = untiled_bytes(rows, cols, config)
    if have is None or need <= have:
        return
    fixed = untiled_bytes(0, 0, config)
    per_pixel = (need - fixed) / float(rows * cols)
    fit_rows = int(math.sqrt(max(have - fixed, 0) / per_pixel * rows / cols)) if per_pixel else 0
    fit_rows = max(0, fit_rows - fit_rows % 8)
    hint = (f"lower --img_nrows (about {fit_rows} fits)" if fit_rows >= 32
            else "free memory or use a machine with more")
    tiled = estimate_tiled_bytes(rows, cols, AUTO_TILE, halo, config)
    hint += " or the largest of --scales"
    if tiled <= have:  # tiling helps only where the activations are what does not fit
        hint += f", or set --tile_size={AUTO_TILE} (exact tiles, about {_gib(tiled)})"
    raise UserError(
        f"a {rows}x{cols} image needs about {_gib(need)} but only {_gib(have)} of {where} "
        f"is there; {hint}; --nocheck_memory skips this check")
