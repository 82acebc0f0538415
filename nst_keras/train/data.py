"""The training photos: a folder, read as square random crops, step by step.

* ``find_photos(folder)``: every JPEG, PNG and WebP file under the folder
  (recursive, sorted, hidden files skipped); each file's header is read, and
  the files Pillow cannot open are left out and counted (``Photos.skipped``).
* ``Photos.batch(step)``: the batch of optimiser step ``step``, a function of
  the seed and the step alone: photo ``i = step * batch_size + j`` of an
  endless sequence of epochs, each epoch a permutation drawn from
  ``(seed, epoch)``; each photo is resized so its shorter side is the crop
  size, cropped at a place drawn from ``(seed, i)`` and flipped left-right
  with probability 1/2.  So a resumed run sees exactly the batches it would
  have seen.
* ``dataset(photos, start, steps)``: the batches of steps ``start..steps-1``
  as a ``tf.data.Dataset``, decoded in parallel and prefetched.

A file that passes the header check but cannot be decoded is replaced by the
next photo of the epoch and counted too.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

from nst_keras.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
_CACHED = 256  # resized photos kept in memory (a small folder is decoded once)


def list_files(folder: str) -> List[str]:
    """The photo files under ``folder`` by extension (recursive, sorted)."""
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if not name.startswith(".") and name.lower().endswith(EXTENSIONS):
                found.append(os.path.join(root, name))
    return sorted(found)


def _readable(path: str) -> bool:
    try:
        with Image.open(path) as im:
            return min(im.size) > 0
    except Exception:  # noqa: BLE001  any file Pillow cannot open is skipped
        return False


def find_photos(folder: str, batch_size: int) -> Tuple[List[str], List[str]]:
    """``(readable files, skipped files)`` under ``folder``; a ``UserError`` for a
    missing folder or one with fewer readable photos than ``batch_size``."""
    if not os.path.isdir(folder):
        raise UserError(f"--photos={folder} is not a folder; give a folder of JPEG, PNG or "
                        "WebP photos (e.g. COCO's train2014)")
    files = list_files(folder)
    good = [f for f in files if _readable(f)]
    bad = [f for f in files if f not in set(good)]
    if len(good) < batch_size:
        skipped = f" ({len(bad)} unreadable file(s) skipped)" if bad else ""
        raise UserError(f"--photos={folder} holds {len(good)} readable photo(s){skipped}, fewer "
                        f"than --batch_size={batch_size}; add photos or lower --batch_size")
    return good, bad


def crop(array: np.ndarray, size: int, rng: Optional[np.random.Generator]) -> np.ndarray:
    rows, cols = array.shape[:2]
    if rng is None:
        top, left, flip = (rows - size) // 2, (cols - size) // 2, False
    else:
        top, left = int(rng.integers(0, rows - size + 1)), int(rng.integers(0, cols - size + 1))
        flip = bool(rng.integers(0, 2))
    out = array[top:top + size, left:left + size]
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def open_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


class Photos:
    """The training photos and the batch of every step (see the module docstring)."""

    def __init__(self, files: Sequence, size: int, batch_size: int, seed: int,
                 skipped: Sequence[str] = ()):
        self.files, self.size = list(files), int(size)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.skipped = list(skipped)
        self.failed: List[str] = []  # passed the header check, failed to decode
        self._cache: "collections.OrderedDict" = collections.OrderedDict()
        self._lock = threading.Lock()
        self._orders: "collections.OrderedDict" = collections.OrderedDict()

    def order(self, epoch: int) -> np.ndarray:
        with self._lock:
            if epoch not in self._orders:
                rng = np.random.default_rng([self.seed, 7, epoch])
                self._orders[epoch] = rng.permutation(len(self.files))
                while len(self._orders) > 4:
                    self._orders.popitem(last=False)
            return self._orders[epoch]

    def _resized(self, path: str) -> Optional[np.ndarray]:
        with self._lock:
            if path in self._cache:
                self._cache.move_to_end(path)
                return self._cache[path]
        try:
            picture = open_rgb(path)
        except Exception:  # noqa: BLE001  a damaged file: counted, replaced
            return None
        w, h = picture.size
        scale = self.size / min(w, h)
        new = (max(self.size, int(round(w * scale))), max(self.size, int(round(h * scale))))
        array = np.asarray(picture.resize(new, Image.BICUBIC), np.uint8)
        with self._lock:
            self._cache[path] = array
            while len(self._cache) > _CACHED:
                self._cache.popitem(last=False)
        return array

    def photo(self, index: int) -> np.ndarray:
        """Photo ``index`` of the endless sequence, cropped and maybe flipped."""
        n = len(self.files)
        epoch, place = divmod(int(index), n)
        order = self.order(epoch)
        for tries in range(n):
            path = self.files[order[(place + tries) % n]]
            array = self._resized(path)
            if array is not None:
                return crop(array, self.size, np.random.default_rng([self.seed, 11, index]))
            with self._lock:
                if path not in self.failed:
                    self.failed.append(path)
        raise UserError("none of the training photos could be decoded; check --photos")

    def batch(self, step: int) -> np.ndarray:
        """``uint8 (batch_size, size, size, 3)`` of optimiser step ``step`` (from 0)."""
        first = int(step) * self.batch_size
        return np.stack([self.photo(first + j) for j in range(self.batch_size)])

    def dataset(self, start: int, steps: int):
        """The batches of steps ``start..steps-1``: a prefetched ``tf.data.Dataset``."""
        import tensorflow as tf  # late: the rest of this module runs without TensorFlow

        shape = (self.batch_size, self.size, self.size, 3)

        def load(step):
            return tf.ensure_shape(tf.numpy_function(lambda s: self.batch(int(s)), [step],
                                                     tf.uint8, stateful=False), shape)

        ds = tf.data.Dataset.range(int(start), int(steps))
        options = tf.data.Options()
        options.deterministic = True
        return ds.map(load, num_parallel_calls=2).with_options(options).prefetch(2)

    def previews(self, count: int = 4) -> np.ndarray:
        """Centre crops of the first ``count`` photos (the preview sheet's, fixed)."""
        out = []
        for path in self.files:
            array = self._resized(path)
            if array is not None:
                out.append(crop(array, self.size, None))
            if len(out) == count:
                break
        return np.stack(out)

