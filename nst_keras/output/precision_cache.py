"""The precision cache file: ``--precision=auto``'s answer, kept once per machine.

``engine.hardware`` measures which precision runs fastest and hands the
answer to a store (``hardware.using_store``); on its own it keeps answers in
memory for the process.  ``PrecisionCache`` is the store on disk:
``nst_keras_precision.json`` in the Keras cache directory (``$KERAS_HOME``,
else ``~/.keras``), one entry per ``<device key>|tensorflow <version>|<model>``
holding ``precision``, ``reason``, ``timings_s``, ``tensorflow`` and
``date``.  The file is rewritten atomically; a missing or unreadable file is
an empty cache, and a place that cannot be written only means no caching
(the probe runs again next time).

``used()`` is how the file layer's ``stylize`` (and a film's frames) answer
``auto`` from the file::

    with precision_cache.used():
        pipeline.stylize(config)
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Dict, Iterator, Optional

from nst_keras.engine import hardware
from nst_keras.output.files import atomic_write_bytes

CACHE_NAME = "nst_keras_precision.json"


def cache_path(cache_dir: Optional[str] = None) -> str:
    """The cache file: in ``cache_dir``, else ``$KERAS_HOME``, else ``~/.keras``."""
    home = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras")
    return os.path.join(home, CACHE_NAME)


class PrecisionCache:
    """A ``hardware`` precision store kept in the cache file (see the module docstring).

    Args:
      cache_dir: the directory of the file; default ``$KERAS_HOME`` or
        ``~/.keras``, looked up at each read and write.
    """

    def __init__(self, cache_dir: Optional[str] = None):
        self.cache_dir = cache_dir

    @property
    def path(self) -> str:
        return cache_path(self.cache_dir)

    def read(self) -> Dict:
        """Every entry of the file; empty when it is missing or unreadable."""
        try:
            with open(self.path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Optional[Dict]:
        entry = self.read().get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: Dict) -> None:
        """Adds ``entry`` under ``key`` to the file's entries and rewrites it atomically."""
        data = self.read()
        data[key] = entry
        path = self.path
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode())
        except OSError:
            pass  # an unwritable place: no cache, the probe runs again next time


@contextlib.contextmanager
def used(cache_dir: Optional[str] = None) -> Iterator[PrecisionCache]:
    """Within the block, ``auto`` is answered from (and stored in) the cache file."""
    with hardware.using_store(PrecisionCache(cache_dir)) as store:
        yield store
