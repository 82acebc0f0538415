"""``--network``: a photo through a trained style network, written as a file.

``stylize_file(config)`` opens ``config.content_image``, resizes it to
``--img_nrows`` rows (the width keeps its aspect, as in a run), passes it
through the network of ``config.network`` once, puts the photo's colours
back with ``--preserve_colors=luminance``, and writes
``<output_dir>/<content stem>_stylized.png`` atomically (``--overwrite`` to
replace it).  ``picture`` is the in-memory part.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import List, Optional

import numpy as np

from nst_keras import settings
from nst_keras.engine import hardware, imaging
from nst_keras.errors import UserError
from nst_keras.output import files

def check_blend(network, blend) -> None:
    """``UserError`` unless ``blend`` (``--style_blend_weights``) suits ``network``."""
    if blend is None:
        return
    styles = getattr(network, "styles", 1)
    if len(blend) != styles:
        raise UserError(f"--style_blend_weights has {len(blend)} weights but the network "
                        f"holds {styles} painting(s); give {styles} weights"
                        + ("" if styles > 1 else " (or leave it out)"))
    if min(float(w) for w in blend) < 0 or not sum(float(w) for w in blend) > 0:
        raise UserError("--style_blend_weights must be 0 or more with a positive sum")


def picture(network, content, rows: int, interpolation: str = "nearest",
            preserve_colors: str = "none", blend=None) -> np.ndarray:
    """``uint8 (rows, cols, 3)``: ``content`` (path, URL, PIL or array) resized and
    stylised by ``network`` (``engine.network.StyleNetwork``); ``blend``: the
    paintings' weights of a several-painting network (``None``: equal)."""
    check_blend(network, blend)
    opened = imaging.open_picture(content)
    size = imaging.target_size(*opened.size, rows)
    photo = imaging.load_image(opened, size, interpolation)
    out = network(np.asarray(photo, np.float32), blend=blend)
    if preserve_colors == "luminance":
        out = np.clip(np.round(imaging.restore_chroma(out, photo)), 0, 255).astype(np.uint8)
    return out


def output_path(config: settings.Config, content=None) -> str:
    """``<output_dir>/<result prefix>.png`` (``settings.result_prefix``: by default
    ``<content stem>_stylized``)."""
    if content is not None:
        config = config.replace(content_image=content)
    return os.path.join(config.output_dir or ".", settings.result_prefix(config) + ".png")


def check_output(path: str, overwrite: bool) -> None:
    if os.path.exists(path) and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it or choose "
                        "another --output_dir")


def stylize_file(config: settings.Config, network=None, content=None,
                 log=print) -> List[str]:
    """Writes the network's picture of the content; returns ``[path]``.

    ``network``: an already loaded ``StyleNetwork`` (a batch loads it once).
    """
    config = settings.validate(config)
    content = config.content_image if content is None else content
    path = output_path(config, content)
    check_output(path, config.overwrite)
    if network is None:
        network = open_network(config.network, config.precision)
    result = picture(network, content, config.img_nrows, config.interpolation,
                     config.preserve_colors, config.style_blend_weights)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    files.save_image(path, result)
    log(f"stylised {imaging.describe(content)} with {config.network} "
        f"({result.shape[0]}x{result.shape[1]})")
    return [path]


_OPEN: "collections.OrderedDict" = collections.OrderedDict()  # key -> StyleNetwork
_OPEN_LOCK = threading.Lock()
KEPT_NETWORKS = 4  # the networks kept loaded (and traced) in this process


def open_network(path: Optional[str], precision: str = "float32"):
    """The ``StyleNetwork`` of the file ``path``, loaded and traced once in this
    process: a batch, a film or a run that opens the same file again
    (the same path, size and modification time, the same precision) gets the
    one already loaded instead of reading and tracing it again.  The last
    ``KEPT_NETWORKS`` are kept."""
    from nst_keras.engine import network as netlib  # late: starts TensorFlow

    try:
        stat = os.stat(str(path))
    except (OSError, TypeError, ValueError):
        return netlib.load_network(path, precision)  # its one-line UserError
    if precision == "auto":
        precision, _ = hardware.resolve_precision("auto")
    key = (os.path.realpath(str(path)), stat.st_size, stat.st_mtime_ns, precision)
    with _OPEN_LOCK:
        if key in _OPEN:
            _OPEN.move_to_end(key)
            return _OPEN[key]
        network = netlib.load_network(path, precision)
        _OPEN[key] = network
        while len(_OPEN) > KEPT_NETWORKS:
            _OPEN.popitem(last=False)
        return network
