"""The machine a run is on: which precision runs fastest there, and how many threads.

``--precision=auto`` never assumes a speed.  The hardware only says which
precisions are *candidates*:

* float32 always;
* mixed_bfloat16 where bfloat16 is native: a CPU with AVX512-BF16 or AMX, a
  GPU of compute capability 8.0 or more (elsewhere TensorFlow emulates it,
  about ten times slower than float32);
* mixed_float16 on a GPU of compute capability 7.0 or more (the objective's
  float16 path keeps an exact loss scale).

With more than one candidate a short probe measures one forward and backward
pass of the first VGG blocks in each, and a reduced precision is chosen only
when it beats float32 by ``MARGIN``.  The answer is cached per machine,
TensorFlow version and model in the Keras cache directory
(``~/.keras/nst_keras_precision.json``), so the probe runs once per machine.
``NST_KERAS_PRECISION=float32`` (or another precision) pins the answer of
``auto`` without touching configs (the test suite does this).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import tempfile
import time
from typing import Callable, Dict, Optional, Tuple

from nst_keras.errors import UserError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
MARGIN = 0.10  # a reduced precision must be this much faster than float32
CACHE_NAME = "nst_keras_precision.json"
PIN_VARIABLE = "NST_KERAS_PRECISION"


@dataclasses.dataclass(frozen=True)
class Device:
    """What ``auto`` needs to know of a device.

    Attributes:
      kind: ``"cpu"`` or ``"gpu"``.
      name: the CPU model name or the GPU name.
      cpu_flags: lowercase ``/proc/cpuinfo`` flags (CPUs).
      compute_capability: ``(major, minor)`` of a GPU.
    """

    kind: str
    name: str
    cpu_flags: frozenset = frozenset()
    compute_capability: Optional[Tuple[int, int]] = None

    def key(self) -> str:
        """Stable text naming the machine, for the cache."""
        if self.kind == "gpu":
            return f"gpu|{self.name}|{self.compute_capability}"
        relevant = sorted(f for f in self.cpu_flags if f.startswith(("avx", "amx")))
        return f"cpu|{self.name}|{','.join(relevant)}"


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` cannot be read)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].lower().split())
    except OSError:
        pass
    return frozenset()


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device() -> Device:
    """The first GPU TensorFlow sees, else the CPU."""
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        return Device("gpu", details.get("device_name", gpu.name),
                      compute_capability=details.get("compute_capability"))
    return Device("cpu", cpu_name(), cpu_flags())


def has_native_bfloat16(device: Device) -> bool:
    if device.kind == "gpu":
        return tuple(device.compute_capability or (0, 0)) >= (8, 0)
    return "avx512_bf16" in device.cpu_flags or any(
        f.startswith("amx_") for f in device.cpu_flags)


def candidates(device: Device) -> list:
    """The precisions worth measuring on ``device`` (float32 first)."""
    out = ["float32"]
    if has_native_bfloat16(device):
        out.append("mixed_bfloat16")
    if device.kind == "gpu" and tuple(device.compute_capability or (0, 0)) >= (7, 0):
        out.append("mixed_float16")
    return out


def _hardware_words(device: Device) -> str:
    if device.kind == "gpu":
        return f"GPU {device.name}, compute capability {device.compute_capability}"
    have = [n for f, n in (("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX")) if
            f in device.cpu_flags]
    return ", ".join(have) or "no bfloat16 instructions"


def choose_precision(device: Device, probe_seconds: Optional[Dict[str, float]]):
    """``(precision, reason)`` from the candidates and their measured seconds.

    A reduced precision wins only when it is faster than float32 by ``MARGIN``
    (float32 is exact, so a tie goes to it).
    """
    options = candidates(device)
    if len(options) == 1:
        if device.kind == "gpu":
            return "float32", f"float32: {_hardware_words(device)} has no fast float16/bfloat16"
        return "float32", ("float32: this CPU has no AVX512-BF16 or AMX, so TensorFlow would "
                           "emulate bfloat16")
    times = {p: probe_seconds[p] for p in options if probe_seconds and p in probe_seconds}
    if "float32" not in times:
        return "float32", "float32: no probe timings"
    best = min(times, key=times.get)
    if best != "float32" and times[best] > (1.0 - MARGIN) * times["float32"]:
        best = "float32"
    shown = ", ".join(f"{p} {1000 * t:.0f} ms" for p, t in times.items())
    return best, f"{best}: fastest in the probe ({shown} per step; {_hardware_words(device)})"


def probe(precision: str, size: int = 96, repeats: int = 3) -> float:
    """Seconds per forward+backward pass of VGG blocks 1-3 at ``size`` x ``size``.

    Random weights; every layer is built under the ``precision`` dtype policy
    (the global policy is left alone).  One call for tracing, then the median
    of ``repeats`` timed calls.
    """
    import keras  # late: importing this module must not start TensorFlow
    import tensorflow as tf  # late: as above

    layers = []
    for block, (convs, channels) in enumerate(((2, 64), (2, 128), (4, 256)), start=1):
        layers += [keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                       dtype=precision) for _ in range(convs)]
        layers.append(keras.layers.MaxPooling2D(2, dtype=precision))
    model = keras.Sequential([keras.Input((None, None, 3)), *layers])
    image = tf.random.uniform((1, size, size, 3), -100.0, 100.0, seed=0)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(model(x), tf.float32) ** 2)
        return tape.gradient(loss, x)

    step(image).numpy()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step(image).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cache_path(cache_dir: Optional[str] = None) -> str:
    home = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras")
    return os.path.join(home, CACHE_NAME)


def _read_cache(path: str) -> Dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: str, data: Dict) -> None:
    """Atomically; an unwritable cache directory only means no caching."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass


def auto_precision(model: str = "vgg19", cache_dir: Optional[str] = None,
                   device: Optional[Device] = None,
                   measure: Callable[[str], float] = probe) -> Tuple[str, str]:
    """``(precision, reason)`` for this device: measured once, then cached."""
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    device = device or describe_device()
    options = candidates(device)
    if len(options) == 1:
        return choose_precision(device, None)
    key = f"{device.key()}|tf {tf.__version__}|{model}"
    path = cache_path(cache_dir)
    cache = _read_cache(path)
    if key in cache and cache[key].get("precision") in options:
        return cache[key]["precision"], cache[key]["reason"] + " (cached)"
    timings = {p: measure(p) for p in options}
    precision, reason = choose_precision(device, timings)
    cache[key] = {"precision": precision, "reason": reason, "timings_s": timings,
                  "date": datetime.date.today().isoformat()}
    _write_cache(path, cache)
    return precision, reason


def resolve_precision(requested: str, model: str = "vgg19", **kwargs) -> Tuple[str, str]:
    """``(precision, reason)``: an explicit precision as given, ``auto`` resolved."""
    if requested in PRECISIONS:
        return requested, "given explicitly"
    if requested != "auto":
        raise UserError(f"--precision={requested!r} is not known; use one of: auto, "
                        f"{', '.join(PRECISIONS)}")
    pinned = os.environ.get(PIN_VARIABLE)
    if pinned:
        if pinned not in PRECISIONS:
            raise UserError(f"{PIN_VARIABLE}={pinned!r} is not a precision; use one of: "
                            f"{', '.join(PRECISIONS)}")
        return pinned, f"{pinned}: pinned by {PIN_VARIABLE}"
    return auto_precision(model, **kwargs)


def usable_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota(root: str) -> Optional[float]:
    """CPUs allowed by cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``; None: no limit."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def configure_threads(cores: Optional[int] = None) -> int:
    """Gives TensorFlow's intra-op pool every usable core; returns the count in use.

    Once TensorFlow has run an operation the pools are fixed; then this
    leaves them as they are and reports what they are.
    """
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    cores = cores or usable_cores()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, cores))
    except RuntimeError:
        current = tf.config.threading.get_intra_op_parallelism_threads()
        return current or usable_cores()
    return cores
