"""Writing files: atomically, pictures by their suffix, and files' SHA-256.

Every file the package writes goes through ``atomic_write_bytes``: the bytes
go to a temporary file in the same directory, which is then renamed over the
target, so a reader never sees a partial file and a failed write leaves the
previous one (or none).  The engine computes in memory; this is where its
results become files.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile

import numpy as np
from PIL import Image


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename.

    A reader never sees a partial file; if writing fails, ``path`` keeps its
    previous content (or stays absent), the temporary file is removed and the
    ``OSError`` is raised.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates the file private (0600); give it the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def image_format(path: str) -> str:
    """Pillow's format name for ``path``'s suffix (``.jpg`` -> ``JPEG``; none: ``PNG``)."""
    suffix = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    return {"jpg": "JPEG", "jpeg": "JPEG"}.get(suffix, suffix.upper())


def save_image(path: str, picture: np.ndarray) -> None:
    """Saves an RGB ``uint8`` picture atomically; the format follows the suffix."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(picture, dtype=np.uint8)).save(buf, format=image_format(path))
    atomic_write_bytes(path, buf.getvalue())


def sha256_of(path: str) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks; ``OSError`` if unreadable."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
