"""Checkpoint files and the settings ``--resume`` continues with.

A checkpoint is ``<output_dir>/checkpoint.npz`` (written atomically): the
network image, the optimiser's variables, the number of updates done, the
settings (``flags``), the logged history, the elapsed time, the scale index
and named extra images (the image average's state): a ``callbacks.RunState``
plus the settings.  ``rundir.RunDirectory`` writes it at every image save
point, at the end of a run, and when the run is stopped or interrupted.

``--resume=DIR`` restores it and runs the remaining steps.  For ``sgd`` and
``adam`` (whose whole state is the image and the optimiser's variables) the
final image is bit for bit the one an uninterrupted run ends on, on the same
machine with the same settings.  ``lbfgs`` restarts its curvature memory
(SciPy's L-BFGS-B cannot be resumed), so its continuation differs slightly.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Dict, Sequence

import numpy as np

from nst_keras import fields, settings
from nst_keras.engine.callbacks import RunState
from nst_keras.errors import UserError
from nst_keras.output.files import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT_VERSION = 1


@dataclasses.dataclass
class Checkpoint(RunState):
    """A ``RunState`` and the settings it was made with (``settings.to_dict``)."""

    flags: Dict = dataclasses.field(default_factory=dict)


def path_in(output_dir: str) -> str:
    return os.path.join(output_dir, CHECKPOINT_NAME)


def save(output_dir: str, ckpt: Checkpoint) -> str:
    """Writes ``ckpt`` atomically; returns its path."""
    meta = {
        "format": FORMAT_VERSION,
        "step": int(ckpt.step),
        "flags": ckpt.flags,
        "history": ckpt.history,
        "elapsed_s": float(ckpt.elapsed_s),
        "evaluations": int(ckpt.evaluations),
        "scale_index": int(ckpt.scale_index),
        "optimizer_slots": len(ckpt.optimizer_state),
        "extra_images": sorted(ckpt.extra_images),
    }
    arrays = {"image": np.asarray(ckpt.image, np.float32),
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for i, value in enumerate(ckpt.optimizer_state):
        arrays[f"optimizer_{i}"] = np.asarray(value)
    for name, value in ckpt.extra_images.items():
        arrays[f"extra_{name}"] = np.asarray(value, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = path_in(output_dir)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load(output_dir: str) -> Checkpoint:
    """Reads ``<output_dir>/checkpoint.npz``; ``UserError`` if absent or damaged."""
    path = path_in(output_dir)
    if not os.path.isfile(path):
        raise UserError(
            f"--resume={output_dir}: there is no {CHECKPOINT_NAME} in it; give the "
            "--output_dir of an interrupted run"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {meta.get('format')}")
            return Checkpoint(
                image=data["image"],
                optimizer_state=[data[f"optimizer_{i}"] for i in range(meta["optimizer_slots"])],
                step=int(meta["step"]),
                flags=meta["flags"],
                history=meta.get("history", []),
                elapsed_s=float(meta.get("elapsed_s", 0.0)),
                evaluations=int(meta.get("evaluations", 0)),
                scale_index=int(meta.get("scale_index", 0)),
                extra_images={n: data[f"extra_{n}"] for n in meta.get("extra_images", [])},
            )
    except Exception as e:  # noqa: BLE001 - zip, JSON and key errors alike
        raise UserError(
            f"checkpoint {path!r} is damaged ({type(e).__name__}: {e}); start a new run "
            "with --overwrite"
        ) from None


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    return a == b


def resume_config(resume_dir: str, config, explicit: Sequence[str]):
    """The settings of the run in ``resume_dir``, with allowed changes applied.

    Args:
      resume_dir: the ``--output_dir`` of the run to continue.
      config: the ``Config`` built from the command line.
      explicit: names of the settings the user gave (command line or flagfile);
        the others come from the checkpoint.

    Raises:
      UserError: no readable checkpoint, or a given setting differs from the
        checkpoint's in a way that would change the result.
    """
    ckpt = load(resume_dir)
    saved = ckpt.flags
    changes = {}
    for name in settings.FIELDS:
        if name in ("resume", "output_dir"):
            continue
        if name not in saved:
            continue  # a setting newer than the checkpoint keeps its given value
        if name in explicit:
            continue  # checked by check_matches below
        given = getattr(config, name)
        value = saved[name]
        if isinstance(given, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        changes[name] = value
    if "output_dir" in explicit and os.path.abspath(config.output_dir or "") != \
            os.path.abspath(resume_dir):
        raise UserError(
            f"--output_dir={config.output_dir} differs from --resume={resume_dir}; a "
            "resumed run writes into the directory it resumes; drop --output_dir"
        )
    changes["output_dir"] = resume_dir
    changes["resume"] = resume_dir
    config = config.replace(**changes)
    check_matches(ckpt, config, resume_dir)
    return config


def check_matches(ckpt: Checkpoint, config, resume_dir: str) -> None:
    """Raises ``UserError`` if ``config`` would change the checkpointed run's result."""
    for name, saved in ckpt.flags.items():
        if name in settings.RESUME_MAY_CHANGE or name not in settings.FIELDS:
            continue
        mine = getattr(config, name)
        mine = list(mine) if isinstance(mine, tuple) else mine
        if not _same(mine, saved):
            raise UserError(
                f"--{name}={fields.show_value(mine)} differs from the interrupted run's "
                f"{fields.show_value(saved)} (in {path_in(resume_dir)}); drop --{name} to continue "
                "that run, or start a new one without --resume"
            )
