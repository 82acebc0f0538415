"""``RunDirectory``: the callback that owns a run's output directory.

* when built (before anything is written): refuses to overwrite a previous
  run's results (unless ``overwrite``) or an input image, and reads the
  checkpoint of ``resume`` into ``resume_state``;
* ``on_start``: creates the directory, removes old results with
  ``overwrite``, writes ``run.json`` and starts ``metrics.jsonl``;
* ``on_step``: appends logged steps to ``metrics.jsonl``; every
  ``save_every`` steps saves ``<prefix>_at_iteration_<N>.png`` and a
  checkpoint;
* ``on_end``: saves the final image (``<prefix>.png``, or the interrupted
  step's image), the checkpoint, ``loss.png`` and the final ``run.json``
  (finished, stopped, interrupted, non_finite or failed).

Files a run owns in ``output_dir`` (its "results"): ``<prefix>.png``,
``<prefix>_at_iteration_<N>.png``, ``metrics.jsonl``, ``run.json``,
``loss.png`` and ``checkpoint.npz``.  Every file is written atomically.
"""

from __future__ import annotations

import os
import re
from typing import List, Optional

from nst_keras import fields, settings
from nst_keras.engine import imaging
from nst_keras.engine.callbacks import Callback, Outcome, Progress, RunState
from nst_keras.errors import UserError
from nst_keras.output import checkpoint as ckptlib, files, manifest

RUN_FILES = (manifest.RUN_JSON, manifest.METRICS, manifest.LOSS_PLOT, ckptlib.CHECKPOINT_NAME)


def _result_pattern(prefix: str):
    return re.compile(re.escape(prefix) + r"(_at_iteration_\d+)?\.png$")


def existing_results(output_dir: str, prefix: str) -> List[str]:
    """Names of files in ``output_dir`` a run with ``prefix`` would write."""
    if not os.path.isdir(output_dir):
        return []
    pattern = _result_pattern(prefix)
    names = sorted(os.listdir(output_dir))
    return [n for n in RUN_FILES if n in names] + [n for n in names if pattern.match(n)]


def check_writable(out: str) -> None:
    """``UserError`` unless ``out`` is, or can be made, a writable directory."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--output_dir={out} is a file, not a directory; choose another "
                        "--output_dir")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create or write --output_dir={out} ({parent} is not a "
                        "writable directory); choose another --output_dir")


def _check_inputs_survive(config) -> None:
    pattern = _result_pattern(settings.result_prefix(config))
    real_out = os.path.realpath(config.output_dir)
    for flag in ("content_image", "style_image"):
        src = getattr(config, flag)
        if not isinstance(src, str) or imaging.is_url(src) or not os.path.exists(src):
            continue
        real = os.path.realpath(src)
        name = os.path.basename(real)
        if os.path.dirname(real) == real_out and (name in RUN_FILES or pattern.match(name)):
            raise UserError(f"--{flag}={src} would be overwritten by this run's output; "
                            "choose another --output_dir or --result_prefix")


def _resuming_here(config) -> bool:
    return bool(config.resume) and \
        os.path.realpath(config.resume) == os.path.realpath(config.output_dir)


def check_outputs(config) -> None:
    """Raises ``UserError`` before anything is written if the outputs are unsafe."""
    out = config.output_dir
    check_writable(out)
    _check_inputs_survive(config)
    if _resuming_here(config):
        return  # continuing a run in its own directory
    found = existing_results(out, settings.result_prefix(config))
    if found and not config.overwrite:
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise UserError(
            f"--output_dir={out} already holds results of a previous run "
            f"({', '.join(found[:3])}{more}); pass --overwrite to replace them, "
            f"--resume={out} to continue that run, or choose another --output_dir")


def make_output_dir(path: str) -> None:
    """Creates ``path`` (and its parents); ``UserError`` if that fails."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path!r} ({e.strerror}); "
                        "choose another --output_dir") from None


def read_resume_state(config) -> Optional[RunState]:
    """The checkpoint of ``config.resume`` (``None`` without ``resume``)."""
    if not config.resume:
        return None
    ckpt = ckptlib.load(config.resume)
    ckptlib.check_matches(ckpt, config, config.resume)
    total = sum(config.iteration_counts())
    if ckpt.step >= total:
        raise UserError(f"--resume={config.resume}: the run is already at iteration "
                        f"{ckpt.step} of --iterations={fields.show_value(config.iterations)}"
                        "; raise --iterations to continue it")
    return ckpt


class RunDirectory(Callback):
    """See the module docstring.  Build it before the run opens any input."""

    def __init__(self, config, log=print):
        self.config, self.log = config, log
        check_outputs(config)
        self.resume_state = read_resume_state(config)
        self.dir = config.output_dir
        self.prefix = settings.result_prefix(config)
        self.metrics_path = os.path.join(self.dir, manifest.METRICS)
        self.manifest: Optional[manifest.Manifest] = None
        self.images: List[str] = []  # every picture saved, in order
        self._run = None

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def on_start(self, run) -> None:
        self._run = run
        make_output_dir(self.dir)
        if self.config.overwrite and not _resuming_here(self.config):
            for name in existing_results(self.dir, self.prefix):
                os.remove(self._path(name))
        if self.resume_state is not None:
            self.log(f"resuming from {ckptlib.path_in(self.config.resume)} at iteration "
                     f"{self.resume_state.step}")
        manifest.write_json_lines(self.metrics_path, run.history)
        self.manifest = manifest.Manifest(self.dir, self.config, run.weights, run.device)
        self.manifest.begin(run.step + 1)

    def on_step(self, progress: Progress) -> None:
        if progress.record is not None:
            manifest.append_json_line(self.metrics_path, progress.record)
        every = self.config.save_every
        if every and progress.step % every == 0:
            self.save_image(self._at_step(progress.step), progress.picture())
            self.save_checkpoint()

    def _at_step(self, step: int) -> str:
        return f"{self.prefix}_at_iteration_{step}.png"

    def save_image(self, name: str, picture) -> str:
        path = self._path(name)
        files.save_image(path, picture)
        if path not in self.images:
            self.images.append(path)
        return path

    def save_checkpoint(self) -> str:
        state = self._run.state()
        return ckptlib.save(self.dir, ckptlib.Checkpoint(
            **vars(state), flags=settings.to_dict(self.config)))

    def _save_results(self, run, outcome: Outcome) -> List[str]:
        """Saves the outcome's image (and checkpoint); returns the paths to report."""
        if outcome.status == "failed" or outcome.tensor is None:
            return []
        picture = run.picture(outcome.tensor)
        if outcome.status == "non_finite":
            return [self.save_image(f"{self.prefix}.png", picture)]
        if outcome.status in ("stopped", "interrupted"):
            return [self.save_image(self._at_step(outcome.step), picture),
                    self.save_checkpoint()]
        self.save_image(f"{self.prefix}.png", picture)
        self.save_checkpoint()
        return list(self.images)

    def on_end(self, run, outcome: Outcome) -> None:
        if self.manifest is None:  # on_start never ran
            return
        outcome.paths.extend(self._save_results(run, outcome))
        self.term_weights = dict(run.term_weights)
        if outcome.status != "failed":
            self._plot(run.history)
        error = outcome.error()
        final = None
        if outcome.losses and outcome.status in ("finished", "stopped", "interrupted"):
            final = {"iteration": outcome.step, **outcome.losses,
                     "weights": dict(self.term_weights)}
        self.manifest.end(outcome.status, outcome.step, final,
                          message=error.describe() if error is not None else outcome.reason)

    def _plot(self, history) -> None:
        note = manifest.plot_losses(self._path(manifest.LOSS_PLOT), history,
                                    dict(self.term_weights))
        if note:
            self.log(note)
