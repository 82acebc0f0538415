"""The options of ``python -m nst_keras.batch`` (every ``Config`` flag besides)."""

from __future__ import annotations

import dataclasses
from typing import Optional

from nst_keras import fields
from nst_keras.constants import PAIRINGS

_batch = fields.group("batch")


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """The options of ``python -m nst_keras.batch`` (``batch.Batch``)."""

    pairing: str = _batch(
        "product", "product: every content with every style; zip: the n-th content with the "
        "n-th style.", choices=PAIRINGS)
    workers: int = _batch(
        0, "Run on a local Ray runtime with this many workers (one per GPU when there are "
        "GPUs); 0: in this process.", flag="integer", check=fields.non_negative_int)
    ray_address: Optional[str] = _batch(
        None, "Submit to an existing Ray cluster (HOST:PORT or auto); every worker must see "
        "--output_dir.")
    max_retries: int = _batch(
        3, "Times an item whose worker died is retried (from its last checkpoint) on another "
        "worker.", flag="integer", check=fields.non_negative_int)


