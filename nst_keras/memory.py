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


def _layer_plan(model: str):
    """Yields ``(name, downscale, channels)`` for every layer of the backbone."""
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
    for name, scale, channels in _layer_plan(model):
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


def check(rows: int, cols: int, config) -> None:
    """Raises ``UserError`` if a run at ``rows x cols`` will not fit in memory."""
    if not getattr(config, "check_memory", True):
        return
    content_layers, style_layers = config.active_layers()
    layers = content_layers + style_layers
    need = estimate_bytes(rows, cols, config.model, layers or ["block1_conv1"], config.precision)
    have, where = available_bytes()
    if have is None or need <= have:
        return
    fixed = estimate_bytes(0, 0, config.model, layers or ["block1_conv1"], config.precision)
    per_pixel = (need - fixed) / float(rows * cols)
    fit_rows = int(math.sqrt(max(have - fixed, 0) / per_pixel * rows / cols)) if per_pixel else 0
    fit_rows = max(0, fit_rows - fit_rows % 8)
    hint = (f"lower --img_nrows (about {fit_rows} fits)" if fit_rows >= 32
            else "free memory or use a machine with more")
    raise UserError(
        f"a {rows}x{cols} image needs about {_gib(need)} but only {_gib(have)} of {where} "
        f"is there; {hint}, or the largest of --scales; --nocheck_memory skips this check"
    )
