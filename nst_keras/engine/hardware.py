"""The machine a run is on: which precision runs fastest there, and how many threads.

``--precision=auto`` never assumes a speed.  The hardware only says which
precisions are *candidates*:

* float32 always;
* mixed_bfloat16 where bfloat16 is native: a CPU with AVX512-BF16 or AMX, a
  GPU of compute capability 8.0 or more (elsewhere TensorFlow emulates it,
  about ten times slower than float32);
* mixed_float16 on a GPU of compute capability 7.0 or more without native
  bfloat16 (the objective's float16 path keeps an exact loss scale).

With more than one candidate a short probe (``probe``) measures a forward and
backward pass of the first VGG blocks in each, and a reduced precision is
chosen only when it beats float32 by ``MARGIN``: float32 is exact, so a tie
goes to it.  Even a CPU with AVX512-BF16 can be slower in bfloat16, which is
why the probe decides, not the flags.  The answer goes to a store under the
machine, TensorFlow version and model (``cache_key``): nothing here writes a
file, so on its own the store is this process's memory (``MemoryStore``);
the file layer hands in the per-machine cache file
(``output.precision_cache``, ``~/.keras/nst_keras_precision.json``) with
``using_store``, so the probe runs once per machine.

``NST_KERAS_PRECISION=float32`` (or another precision) pins the answer of
``auto`` without touching configs; the test suite does this so numbers
compare across machines.

Threads: ``usable_cores`` counts the cores this process may really use (CPU
affinity, capped by a cgroup CPU quota, as in a container), and
``configure_threads`` hands them to TensorFlow's thread pools.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from nst_keras.constants import PRECISION_VARIABLE as PIN_VARIABLE
from nst_keras.constants import PRECISIONS
from nst_keras.errors import UserError

MARGIN = 0.10  # a reduced precision must be at least this much faster than float32
BF16_CPU_FLAGS = {"avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX", "amx_tile": "AMX"}
VGG_BLOCKS_1_TO_3 = ((2, 64), (2, 128), (4, 256))  # (convolutions, channels) per block


@dataclasses.dataclass(frozen=True)
class Device:
    """What ``auto`` needs to know of the device a run computes on.

    Attributes:
      kind: ``"cpu"`` or ``"gpu"``.
      name: the CPU model name or the GPU name.
      cpu_flags: lowercase ``/proc/cpuinfo`` flags (CPUs; empty for a GPU).
      compute_capability: ``(major, minor)`` of a GPU, e.g. ``(8, 0)``; ``None``
        for a CPU.
    """

    kind: str
    name: str
    cpu_flags: frozenset = frozenset()
    compute_capability: Optional[Tuple[int, int]] = None

    def key(self) -> str:
        """Stable text naming the machine, the cache's key.

        Returns:
          ``"gpu|<name>|<major>.<minor>"``, or ``"cpu|<name>|<avx*/amx* flags>"``
          (only the vector flags, so a kernel update adding unrelated flags
          keeps the key).
        """
        if self.kind == "gpu":
            major, minor = self.compute_capability or (0, 0)
            return f"gpu|{self.name}|{major}.{minor}"
        vector = sorted(f for f in self.cpu_flags if f.startswith(("avx", "amx")))
        return f"cpu|{self.name}|{','.join(vector)}"


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset:
    """The CPU's feature flags, lowercase, from the first ``flags`` line of ``path``.

    Returns:
      A frozenset such as ``{"avx2", "avx512f", "avx512_bf16", ...}``; empty
      where the file cannot be read (not Linux) or has no ``flags`` line.
    """
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].lower().split())
    except OSError:
        pass
    return frozenset()


def cpu_name(path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (``platform``'s guess where ``path`` cannot be read)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device() -> Device:
    """The first GPU TensorFlow sees (name, compute capability), else the CPU."""
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        return Device("gpu", details.get("device_name", gpu.name),
                      compute_capability=tuple(capability) if capability else None)
    return Device("cpu", cpu_name(), cpu_flags())


def _capability(device: Device) -> Tuple[int, int]:
    return tuple(device.compute_capability or (0, 0))


def has_native_bfloat16(device: Device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware rather than emulating it.

    A CPU needs AVX512-BF16 (``avx512_bf16``) or AMX (``amx_bf16``/``amx_tile``);
    a GPU needs compute capability 8.0 (Ampere) or more.
    """
    if device.kind == "gpu":
        return _capability(device) >= (8, 0)
    return any(flag in device.cpu_flags for flag in BF16_CPU_FLAGS)


def candidates(device: Device) -> List[str]:
    """The precisions worth measuring on ``device``, float32 first.

    Returns:
      ``["float32"]``, plus ``"mixed_bfloat16"`` where bfloat16 is native, plus
      ``"mixed_float16"`` on a GPU of compute capability 7.0 or more that has
      no native bfloat16.
    """
    out = ["float32"]
    if has_native_bfloat16(device):
        out.append("mixed_bfloat16")
    elif device.kind == "gpu" and _capability(device) >= (7, 0):
        out.append("mixed_float16")
    return out


def _hardware_words(device: Device) -> str:
    """The hardware that made the candidates, in a few words."""
    if device.kind == "gpu":
        major, minor = _capability(device)
        return f"{device.name}, compute capability {major}.{minor}"
    names = [BF16_CPU_FLAGS[f] for f in sorted(BF16_CPU_FLAGS) if f in device.cpu_flags]
    return "/".join(dict.fromkeys(names)) or "no bfloat16 instructions"


def _only_float32_reason(device: Device) -> str:
    if device.kind == "gpu":
        return (f"float32: {_hardware_words(device)} has neither fast float16 (7.0+) nor "
                "bfloat16 (8.0+)")
    return "float32: this CPU has no AVX512-BF16 or AMX, so TensorFlow would emulate bfloat16"


def choose_precision(device: Device,
                     probe_seconds: Optional[Dict[str, float]]) -> Tuple[str, str]:
    """Picks the precision from the device's candidates and their measured times.

    A pure function.  A reduced precision wins only when it is faster than
    float32 by at least ``MARGIN`` (10 %); otherwise float32, which is exact.

    Args:
      device: the ``Device``; its ``candidates`` are the only possible answers.
      probe_seconds: ``{precision: seconds per probe step}`` for the candidates
        (``probe``'s results); ``None`` when there is a single candidate.

    Returns:
      ``(precision, reason)``, the reason one line, e.g.
      ``"mixed_bfloat16: 41 ms vs float32 78 ms per probe step (AVX512-BF16)"``.
    """
    options = candidates(device)
    if len(options) == 1:
        return "float32", _only_float32_reason(device)
    times = {p: probe_seconds[p] for p in options if p in (probe_seconds or {})}
    if "float32" not in times:
        return "float32", "float32: no probe timing for float32, so the exact precision"
    best = min(times, key=times.get)
    close = best != "float32" and times[best] > (1.0 - MARGIN) * times["float32"]
    if close:
        best = "float32"
    others = ", ".join(f"{p} {1000 * t:.0f} ms" for p, t in times.items() if p != best)
    reason = (f"{best}: {1000 * times[best]:.0f} ms vs {others} per probe step "
              f"({_hardware_words(device)})")
    if close:
        reason += f"; float32 is exact, a reduced precision must be {MARGIN:.0%} faster"
    return best, reason


def _probe_network(precision: str):
    """VGG19 blocks 1-3 (random weights), every layer under the ``precision`` policy."""
    import keras  # late: importing this module must not start TensorFlow

    layers = [keras.Input((None, None, 3))]
    for convs, channels in VGG_BLOCKS_1_TO_3:
        layers += [keras.layers.Conv2D(channels, 3, padding="same", activation="relu",
                                       dtype=precision) for _ in range(convs)]
        layers.append(keras.layers.MaxPooling2D(2, dtype=precision))
    return keras.Sequential(layers)


def probe(precision: str, size: int = 96, repeats: int = 3) -> float:
    """Seconds per forward+backward pass of VGG19 blocks 1-3 in ``precision``.

    The layers are built with ``dtype=precision`` (the global Keras dtype policy
    is left alone) and get a ``(1, size, size, 3)`` float32 input; the gradient
    is taken with respect to the input, as in style transfer.  One call traces
    the graph and is not timed.  The default size of 96 ranked float32 and
    bfloat16 the same as a full VGG19 at 256 x 256 on a 2-core CPU, where 64
    was small enough for timing noise to swap them now and then.

    Args:
      precision: one of ``PRECISIONS``.
      size: rows and columns of the probe image.
      repeats: timed calls; their median is returned.

    Returns:
      Seconds per step (a positive float).
    """
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    network = _probe_network(precision)
    image = tf.random.uniform((1, size, size, 3), -100.0, 100.0, seed=0)

    @tf.function(autograph=False)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(network(x), tf.float32) ** 2)
        return tape.gradient(loss, x)

    step(image).numpy()  # tracing, not timed
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step(image).numpy()  # .numpy() waits for the device to finish
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class MemoryStore:
    """Precision answers kept in memory: what ``auto`` uses unless a caller hands it
    another store (``using_store``).  A store has ``get(key)`` (the entry or
    ``None``) and ``put(key, entry)``."""

    def __init__(self):
        self.entries: Dict[str, Dict] = {}

    def get(self, key: str) -> Optional[Dict]:
        return self.entries.get(key)

    def put(self, key: str, entry: Dict) -> None:
        self.entries[key] = dict(entry)


_PROCESS_STORE = MemoryStore()
_STORE: contextvars.ContextVar = contextvars.ContextVar("nst_keras_precision_store",
                                                        default=None)


def current_store():
    """The store ``auto`` reads and reports to: ``using_store``'s, else this process's."""
    store = _STORE.get()
    return _PROCESS_STORE if store is None else store


@contextlib.contextmanager
def using_store(store) -> Iterator:
    """Within the block (in this thread or task), ``auto`` reads and reports to ``store``."""
    token = _STORE.set(store)
    try:
        yield store
    finally:
        _STORE.reset(token)


def cache_key(device: Device, model: str, tensorflow_version: str) -> str:
    """What a stored answer is kept under: the machine, TensorFlow's version, the model."""
    return f"{device.key()}|tensorflow {tensorflow_version}|{model}"


def measured_entry(device: Device, measure: Callable[[str], float],
                   tensorflow_version: str) -> Dict:
    """Measures every candidate of ``device`` and chooses (``choose_precision``).

    Returns:
      The entry a store keeps: ``precision``, ``reason``, ``timings_s``
      (``{precision: seconds per probe step}``), ``tensorflow`` and ``date``.
    """
    timings = {p: measure(p) for p in candidates(device)}
    precision, reason = choose_precision(device, timings)
    return {"precision": precision, "reason": reason, "timings_s": timings,
            "tensorflow": tensorflow_version, "date": datetime.date.today().isoformat()}


def auto_precision(model: str = "vgg19", device: Optional[Device] = None,
                   measure: Callable[[str], float] = probe, store=None) -> Tuple[str, str]:
    """The fastest faithful precision for this device: measured once, then stored.

    With float32 the only candidate nothing is measured or stored.  Otherwise
    the store is looked up under ``cache_key``; on a miss every candidate is
    measured and the entry (``measured_entry``) handed to the store.

    Args:
      model: the network's name (part of the key).
      device: the ``Device``; default ``describe_device()``.
      measure: ``precision -> seconds per step``; default ``probe``.
      store: where answers are kept (``get``/``put``); default
        ``current_store()``.

    Returns:
      ``(precision, reason)``; the reason ends with ``" (cached)"`` when the
      answer came from the store.
    """
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    device = device or describe_device()
    options = candidates(device)
    if len(options) == 1:
        return choose_precision(device, None)
    store = current_store() if store is None else store
    key = cache_key(device, model, tf.__version__)
    entry = store.get(key)
    if isinstance(entry, dict) and entry.get("precision") in options and entry.get("reason"):
        return entry["precision"], entry["reason"] + " (cached)"
    entry = measured_entry(device, measure, tf.__version__)
    store.put(key, entry)
    return entry["precision"], entry["reason"]


def resolve_precision(requested: str, model: str = "vgg19", **kwargs) -> Tuple[str, str]:
    """The precision a run uses: an explicit one as given, ``"auto"`` resolved.

    ``"auto"`` answers ``$NST_KERAS_PRECISION`` where that is set, else
    ``auto_precision(model, **kwargs)``.

    Returns:
      ``(precision, reason)``; the reason is ``"given explicitly"`` for an
      explicit precision.

    Raises:
      UserError: ``requested`` (or the pin variable) is not a known precision.
    """
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


def _affinity_cores() -> int:
    """Cores the scheduler lets this process run on (all cores where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cgroup_quota(root: str) -> Optional[float]:
    """CPUs a cgroup quota allows (v2 ``cpu.max``, else v1 CFS); ``None``: no limit."""
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in (os.path.join(root, "cpu"), os.path.join(root, "cpu,cpuacct")):
        try:
            with open(os.path.join(v1, "cpu.cfs_quota_us")) as f:
                quota = int(f.read())
            with open(os.path.join(v1, "cpu.cfs_period_us")) as f:
                period = int(f.read())
            return None if quota <= 0 or period <= 0 else quota / period
        except (OSError, ValueError):
            continue
    return None


def usable_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota.

    Args:
      cgroup_root: where the cgroup files are (a fake directory in tests).

    Returns:
      At least 1.  A quota of 1.5 CPUs (``cpu.max`` ``"150000 100000"``) counts
      as 2; ``"max"`` (or no quota file) means no cap.
    """
    cores = _affinity_cores()
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _threads_variable(name: str) -> int:
    """A positive thread count from the environment variable ``name``, else 0."""
    try:
        return max(0, int(os.environ.get(name, "")))
    except ValueError:
        return 0


def configure_threads(cores: Optional[int] = None) -> int:
    """Gives TensorFlow's thread pools the usable cores, if it is not running yet.

    Intra-op threads are set to ``cores`` and inter-op threads to
    ``min(2, cores)``; TensorFlow's own ``TF_NUM_INTRAOP_THREADS`` and
    ``TF_NUM_INTEROP_THREADS``, where set, replace those defaults.  Once
    TensorFlow has executed an operation its pools are fixed (it raises
    ``RuntimeError``); then they are left as they are.

    Args:
      cores: threads to use; default ``$TF_NUM_INTRAOP_THREADS``, else
        ``usable_cores()``.

    Returns:
      The intra-op thread count in use: ``cores``, or what TensorFlow had
      already (its default is one per core of the affinity mask).
    """
    import tensorflow as tf  # late: importing this module must not start TensorFlow

    cores = max(1, cores or _threads_variable("TF_NUM_INTRAOP_THREADS") or usable_cores())
    inter = _threads_variable("TF_NUM_INTEROP_THREADS") or min(2, cores)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cores)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        return tf.config.threading.get_intra_op_parallelism_threads() or _affinity_cores()
    return cores
