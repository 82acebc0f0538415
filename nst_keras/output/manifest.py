"""``run.json`` (what ran, where, with which weights), ``metrics.jsonl`` and ``loss.png``.

``run.json`` is rewritten atomically at the start of a run and when it ends
(finished, interrupted or stopped on a non-finite loss), so it always holds
complete JSON.  ``metrics.jsonl`` grows by one line per logged step; each line
goes to the file in one ``write`` call on an append-mode descriptor, so a crash
or a kill leaves whole lines only, and a short write (full disk) is cut back.
A resumed run rewrites it atomically with the lines up to its checkpoint first.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
from importlib import metadata
from typing import Dict, List, Optional

from nst_keras import settings
from nst_keras.engine import hardware, vgg
from nst_keras.engine.imaging import fetch
from nst_keras.output.files import atomic_write_bytes, sha256_of
from nst_keras.output.plot import COLOURS, Series, line_plot, png_bytes

RUN_JSON = "run.json"
METRICS = "metrics.jsonl"
LOSS_PLOT = "loss.png"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_json(path: str) -> Dict:
    """The JSON object in ``path``, or ``{}`` when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_json(path: str, data) -> None:
    """Writes ``data`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def append_json_line(path: str, record: Dict) -> None:
    """Appends ``record`` as one JSON line with a single ``write`` call.

    If the write is short (a full disk), the file is cut back to its previous
    length and ``OSError`` is raised, so the file never ends in half a line.
    """
    data = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
        except OSError:
            os.ftruncate(fd, size)
            raise
        if written != len(data):
            os.ftruncate(fd, size)
            raise OSError(f"short write to {path} ({written} of {len(data)} bytes)")
    finally:
        os.close(fd)


def write_json_lines(path: str, records: List[Dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def versions() -> Dict[str, Optional[str]]:
    """Versions of Python and of the installed packages a result depends on."""
    return dict(_versions())


@functools.lru_cache(maxsize=1)
def _versions() -> Dict[str, Optional[str]]:
    """``versions``, read from the packages' metadata once per process (a batch
    worker writes a run.json per item)."""
    out = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "pillow", "scipy", "absl-py", "nst_keras"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device() -> Dict:
    """The device TensorFlow runs on (first GPU if any, else the CPU)."""
    info = {"platform": platform.platform(), "cpu": hardware.cpu_name(), "cpu_count": os.cpu_count()}
    try:
        import tensorflow as tf  # late: the rest of this module runs without TensorFlow

        gpus = tf.config.list_physical_devices("GPU")
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get(
                    "device_name", gpu.name))
            except Exception:  # noqa: BLE001
                names.append(gpu.name)
        info["gpus"] = names
        info["device"] = names[0] if names else "CPU"
    except Exception:  # noqa: BLE001
        info["device"] = "CPU"
    return info


_SHA_CACHE: Dict[tuple, str] = {}


def file_sha256(path: str) -> Optional[str]:
    """``files.sha256_of`` cached by path, size and mtime; ``None`` if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        try:
            _SHA_CACHE[key] = sha256_of(path)
        except OSError:
            return None
    return _SHA_CACHE[key]


def imagenet_cache_file(model: str) -> Optional[str]:
    """Where Keras keeps the ImageNet notop weights of ``model``, if present."""
    homes = [os.environ.get("KERAS_HOME"), os.path.join(os.path.expanduser("~"), ".keras"),
             os.path.join("/tmp", ".keras")]
    for home in homes:
        if home:
            path = os.path.join(home, "models", vgg.NOTOP_FILES[model])
            if os.path.isfile(path):
                return path
    return None


def weights_info(config, description: str) -> Dict:
    info = {"source": config.weights, "description": description, "path": None, "sha256": None}
    if config.weights == "random":
        info["seed"] = config.seed
        return info
    path = imagenet_cache_file(config.model) if config.weights == "imagenet" else config.weights
    if path:
        info["path"] = os.path.abspath(path)
        info["sha256"] = file_sha256(path)
    return info


def input_info(source) -> Dict:
    if not isinstance(source, str) or source == "<array>":
        return {"source": "<array>", "sha256": None}
    info = {"source": source, "sha256": None}
    try:
        path = fetch(source)  # cached after the run's own download
        info["sha256"] = file_sha256(path)
    except Exception:  # noqa: BLE001 - the manifest never fails a run
        pass
    return info


def style_info(source):
    """``input_info`` of the style picture, or a list of them for several (a list or
    a comma-separated ``--style_image``)."""
    sources = settings.style_sources(source)
    if len(sources) > 1:
        return [input_info(s) for s in sources]
    return input_info(sources[0] if sources else source)


def loss_series(history: List[Dict], weights: Dict[str, float]) -> List:
    """The curves of ``loss.png``: the total, then each weighted term of the list."""
    steps = [r["iteration"] for r in history]
    curves = [Series("total", steps, [r["loss"] for r in history], "black", width=2.0)]
    for key, w in weights.items():
        if w and all(key in r for r in history):
            colour = COLOURS[(len(curves) - 1) % len(COLOURS)]
            curves.append(Series(f"{term_label(key)} x {w:g}", steps,
                                 [w * r[key] for r in history], colour))
    return curves


def plot_losses(path: str, history: List[Dict], weights: Dict[str, float]) -> Optional[str]:
    """Writes the loss curves to ``path``; returns a note instead if it cannot.

    Plots the total loss and each weighted term (``weight * term``, so they add
    up to the total) against the iteration, on a log scale when every total is
    positive.
    """
    if not history:
        return "loss.png skipped: no logged steps (--log_every=0)"
    log_y = all(r["loss"] > 0 for r in history if r["loss"] == r["loss"])
    image = line_plot(loss_series(history, weights), log_y=log_y,
                      xlabel="iteration", ylabel="loss")
    atomic_write_bytes(path, png_bytes(image))
    return None


def term_label(name: str) -> str:
    """``content`` for ``content_loss``, ``total variation`` for ``tv_loss``, ..."""
    short = name[:-len("_loss")] if name.endswith("_loss") else name
    return {"tv": "total variation"}.get(short, short)


class Manifest:
    """Builds and rewrites ``<output_dir>/run.json``."""

    def __init__(self, output_dir: str, config, weights_description: str,
                 run_device: Optional[Dict] = None):
        self.path = os.path.join(output_dir, RUN_JSON)
        previous = {}
        if config.resume and os.path.isfile(self.path):
            try:
                with open(self.path) as f:
                    previous = json.load(f)
            except (OSError, ValueError):
                previous = {}
        self.data = {
            "program": "nst_keras",
            "status": "running",
            "flags": settings.to_dict(config),
            "versions": versions(),
            "device": {**device(), **(run_device or {})},
            "weights": weights_info(config, weights_description),
            "content_image": input_info(config.content_image),
            "style_image": style_info(config.style_image),
            "started": previous.get("started", now()),
            "ended": None,
            "iterations": config.iterations,
            "steps": None,
            "final_losses": None,
            "message": None,
            "sessions": list(previous.get("sessions", [])),
        }
        self.session = {"started": now(), "ended": None, "first_step": None,
                        "last_step": None, "status": "running"}
        self.data["sessions"].append(self.session)

    def write(self) -> None:
        write_json(self.path, self.data)

    def begin(self, first_step: int) -> None:
        self.session["first_step"] = first_step
        self.write()

    def end(self, status: str, steps: int, final_losses=None, message=None) -> None:
        stamp = now()
        self.data.update(status=status, ended=stamp, steps=steps,
                         final_losses=final_losses, message=message)
        self.session.update(ended=stamp, last_step=steps, status=status)
        self.write()
