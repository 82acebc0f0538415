"""What one run writes and guards around the optimiser loop.

``RunSession`` is the engine's helper for everything but the mathematics:

* before anything is written: refuses to overwrite a previous run's results
  (unless ``overwrite``), refuses to write over an input image, and reads the
  checkpoint of ``resume``;
* at the start: restores a checkpoint, writes ``run.json`` and starts
  ``metrics.jsonl``;
* at every step: checks the loss is finite (``guard.FiniteGuard``), logs and
  saves at the configured steps (with a checkpoint at every save), and stops
  when SIGINT/SIGTERM arrived;
* at the end: saves the final image, checkpoint, ``loss.png`` and the final
  ``run.json``; raises ``Interrupted`` or ``NonFiniteLoss`` after saving when
  the run did not finish (a crash inside the loop marks ``run.json`` failed).

A longer pipeline (several scales, an averaged image) can pass
``scale_index`` and ``extra_images`` to ``save_checkpoint`` and read them back
from ``session.ckpt`` when resuming.

Files a run owns in ``output_dir`` (its "results"): ``<prefix>.png``,
``<prefix>_at_iteration_<N>.png``, ``metrics.jsonl``, ``run.json``,
``loss.png`` and ``checkpoint.npz``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from typing import Dict, List, Optional

import numpy as np

from nst_keras import checkpoint as ckptlib
from nst_keras import images as imlib
from nst_keras import manifest
from nst_keras.errors import UserError
from nst_keras.guard import FiniteGuard, NonFiniteLoss

RUN_FILES = (manifest.RUN_JSON, manifest.METRICS, manifest.LOSS_PLOT, ckptlib.CHECKPOINT_NAME)


def _result_pattern(prefix: str):
    return re.compile(re.escape(prefix) + r"(_at_iteration_\d+)?\.png$")


def existing_results(output_dir: str, prefix: str) -> List[str]:
    """Names of files in ``output_dir`` a run with ``prefix`` would write."""
    if not os.path.isdir(output_dir):
        return []
    pattern = _result_pattern(prefix)
    names = sorted(os.listdir(output_dir))
    own = [n for n in RUN_FILES if n in names]
    return own + [n for n in names if pattern.match(n)]


def check_outputs(config) -> None:
    """Raises ``UserError`` before anything is written if the outputs are unsafe."""
    out = config.output_dir
    if out is None:
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--output_dir={out} is a file, not a directory; choose another "
                        "--output_dir")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create or write --output_dir={out} ({parent} is not a "
                        "writable directory); choose another --output_dir")
    pattern = _result_pattern(config.result_prefix)
    real_out = os.path.realpath(out)
    for flag in ("content_image", "style_image"):
        src = getattr(config, flag)
        if not isinstance(src, str) or imlib.is_url(src) or not os.path.exists(src):
            continue
        real = os.path.realpath(src)
        name = os.path.basename(real)
        if os.path.dirname(real) == real_out and (name in RUN_FILES or pattern.match(name)):
            raise UserError(
                f"--{flag}={src} would be overwritten by this run's output; choose another "
                "--output_dir or --result_prefix"
            )
    if config.resume and os.path.realpath(config.resume) == real_out:
        return  # continuing a run in its own directory
    found = existing_results(out, config.result_prefix)
    if found and not config.overwrite:
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise UserError(
            f"--output_dir={out} already holds results of a previous run "
            f"({', '.join(found[:3])}{more}); pass --overwrite to replace them, "
            f"--resume={out} to continue that run, or choose another --output_dir"
        )


class RunSession:
    """See the module docstring.  Built right after the config is validated."""

    def __init__(self, config, log):
        self.config = config
        self.log = log
        check_outputs(config)
        self.ckpt: Optional[ckptlib.Checkpoint] = None
        if config.resume:
            self.ckpt = ckptlib.load(config.resume)
            ckptlib.check_matches(self.ckpt, config, config.resume)
            from nst_keras.controls import iteration_counts

            total = sum(iteration_counts(config))
            if self.ckpt.step >= total:
                raise UserError(
                    f"--resume={config.resume}: the run is already at iteration "
                    f"{self.ckpt.step} of --iterations={config.iterations}; raise "
                    "--iterations to continue it"
                )
        self.guard = FiniteGuard(lag=0 if config.optimizer == "lbfgs" else 1)
        self.stop = ckptlib.StopSignals(log)
        self.history: List[Dict[str, float]] = []
        self.paths: List[str] = []
        self.step = 0
        self.last_terms = None
        self.manifest = None
        self.metrics_path = None
        self._restored = False
        self.stage_index, self.average, self.output, self.scale = 0, None, None, None

    # -- start ---------------------------------------------------------------
    def open(self, weights_description: str, stages=None) -> int:
        """Starts the run's files; returns the index of the first stage to run.

        Removes a previous run's results with ``overwrite``, restores the
        history of ``resume``, writes ``run.json`` and starts ``metrics.jsonl``.
        """
        config = self.config
        elapsed = 0.0
        first_stage = 0
        if self.ckpt is not None:
            self.history = [dict(r) for r in self.ckpt.history if r["iteration"] <= self.ckpt.step]
            self.step = self.ckpt.step
            elapsed = self.ckpt.elapsed_s
            first_stage = int(self.ckpt.scale_index)
            if stages is not None and first_stage >= len(stages):
                raise UserError(
                    f"--resume={config.resume}: the checkpoint is of scale "
                    f"{first_stage + 1} but the run has {len(stages)}; keep --scales as it was"
                )
            self.log(f"resuming from {ckptlib.path_in(config.resume)} at iteration "
                     f"{self.ckpt.step}")
        self.start_time = time.perf_counter() - elapsed
        if config.output_dir is not None:
            same_dir = bool(config.resume) and os.path.realpath(config.resume) == \
                os.path.realpath(config.output_dir)
            if config.overwrite and not same_dir:
                for name in existing_results(config.output_dir, config.result_prefix):
                    os.remove(os.path.join(config.output_dir, name))
            self.metrics_path = os.path.join(config.output_dir, manifest.METRICS)
            manifest.write_json_lines(self.metrics_path, self.history)
            self.manifest = manifest.Manifest(config.output_dir, config, weights_description)
            self.manifest.begin(self.step + 1)
        return first_stage

    def attach(self, image, optimizer, stage_index: int = 0, first_step: int = 1,
               average=None, output=None, picture=None, scale=None) -> int:
        """Takes over one stage's image and optimiser; returns its first step.

        With ``resume`` and a checkpoint of this stage, restores the image, the
        optimiser state and the image average, and returns the step after the
        checkpoint's.

        Args:
          average: a ``controls.ImageAverage`` to checkpoint, or ``None``.
          output: returns the tensor saved as the stage's image (the average
            when there is one); default the image itself.
          picture: turns a network image into the saved picture; default
            ``deprocess_image`` with ``deprocess_mean``.
          scale: the stage's height, recorded in ``metrics.jsonl`` as ``scale``
            (multi-scale runs only).
        """
        self.scale = scale
        self.image, self.optimizer = image, optimizer
        self.stage_index, self.average = stage_index, average
        self.output = output or (lambda: image)
        if picture is not None:
            self.picture = picture
        first = first_step
        ckpt = self.ckpt
        if ckpt is not None and not self._restored and int(ckpt.scale_index) == stage_index:
            if tuple(ckpt.image.shape) != tuple(image.shape):
                raise UserError(
                    f"--resume={self.config.resume}: the checkpoint's image is "
                    f"{ckpt.image.shape[1]}x{ckpt.image.shape[2]} but the inputs "
                    f"give {image.shape[1]}x{image.shape[2]}; did an input image change?"
                )
            image.assign(ckpt.image)
            optimizer.set_state(ckpt.optimizer_state)
            optimizer.evaluations = ckpt.evaluations
            if average is not None and "average_total" in ckpt.extra_images:
                average.total.assign(ckpt.extra_images["average_total"])
                average.weight.assign(float(ckpt.extra_images["average_weight"]))
            self._restored = True
            first = ckpt.step + 1
        self.guard.start(first - 1, image)
        return first

    @property
    def stopping(self) -> bool:
        """True once a signal arrived or a non-finite loss stopped the run."""
        return bool(self.stop.requested) or self.guard.stopped

    def picture(self, tensor) -> np.ndarray:
        return imlib.deprocess_image(np.asarray(tensor), self.config.deprocess_mean)

    @contextlib.contextmanager
    def signals(self):
        """Around the loop: SIGINT/SIGTERM stop it; a crash is noted in run.json."""
        with self.stop:
            try:
                yield self.stop
            except BaseException as e:
                if self.manifest is not None:
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    self.manifest.end("failed", self.step,
                                      message=f"{type(e).__name__}: {reason}".rstrip(": "))
                raise

    # -- every step ----------------------------------------------------------
    def on_step(self, step: int, terms) -> bool:
        """The optimiser's ``on_step``; ``False`` stops the loop."""
        config = self.config
        if not self.guard.observe(step, terms["loss"].numpy(), self.image):
            return False
        self.step, self.last_terms = step, terms
        if config.log_every and step % config.log_every == 0:
            values = {k: float(v.numpy()) for k, v in terms.items()}
            record = {"iteration": step, **values,
                      "elapsed_s": round(time.perf_counter() - self.start_time, 4),
                      "evaluations": self.optimizer.evaluations}
            if self.scale is not None:
                record["scale"] = self.scale
            self.history.append(record)
            if self.metrics_path:
                manifest.append_json_line(self.metrics_path, record)
            extra = (f" ({self.optimizer.evaluations} evaluations)"
                     if config.optimizer == "lbfgs" else "")
            self.log(
                f"Iteration {step}: loss={values['loss']:.2f} "
                f"content={values['content_loss']:.4g} style={values['style_loss']:.4g} "
                f"tv={values['tv_loss']:.4g} [{record['elapsed_s']:.1f}s]{extra}"
            )
        if config.save_every and step % config.save_every == 0:
            self.save_image(f"{config.result_prefix}_at_iteration_{step}.png")
            self.save_checkpoint()
        return self.stop.requested is None

    # -- saving --------------------------------------------------------------
    def save_image(self, name: str, tensor=None) -> Optional[str]:
        if self.config.output_dir is None:
            return None
        path = os.path.join(self.config.output_dir, name)
        value = self.output() if tensor is None else tensor
        imlib.save_image(path, self.picture(np.asarray(value)))
        if path not in self.paths:
            self.paths.append(path)
        return path

    def _average_state(self):
        if self.average is None:
            return {}
        return {"average_total": self.average.total.numpy(),
                "average_weight": np.asarray(self.average.weight.numpy(), np.float32)}

    def save_checkpoint(self, scale_index=None, extra_images=None) -> Optional[str]:
        if self.config.output_dir is None:
            return None
        return ckptlib.save(self.config.output_dir, ckptlib.Checkpoint(
            image=self.image.numpy(),
            optimizer_state=self.optimizer.state(),
            step=self.step,
            flags=ckptlib.config_to_flags(self.config),
            history=self.history,
            elapsed_s=time.perf_counter() - self.start_time,
            evaluations=self.optimizer.evaluations,
            scale_index=self.stage_index if scale_index is None else scale_index,
            extra_images=dict(extra_images or self._average_state()),
        ))

    def _plot(self) -> None:
        if self.config.output_dir is None:
            return
        c = self.config
        note = manifest.plot_losses(
            os.path.join(c.output_dir, manifest.LOSS_PLOT), self.history,
            {"content_loss": c.content_weight, "style_loss": c.style_weight,
             "tv_loss": c.total_variation_weight})
        if note:
            self.log(note)

    def _final_losses(self):
        if self.last_terms is None:
            return None
        return {"iteration": self.step,
                **{k: float(v.numpy()) for k, v in self.last_terms.items()}}

    # -- end -----------------------------------------------------------------
    def finish(self) -> List[str]:
        """Saves the results; raises ``NonFiniteLoss``/``Interrupted`` after saving."""
        config = self.config
        if self.guard.stopped:
            kept = self.guard.last_finite()
            paths = []
            if kept is not None:
                self.image.assign(kept[1])
                path = self.save_image(f"{config.result_prefix}.png", tensor=kept[1])
                paths = [path] if path else []
            error = NonFiniteLoss(self.guard.bad_step, self.guard.bad_value,
                                  kept[0] if kept else None, paths, config.precision)
            self._plot()
            if self.manifest:
                self.manifest.end("non_finite", kept[0] if kept else 0,
                                  message=error.describe())
            raise error
        if self.stop.requested:
            saved = [self.save_image(f"{config.result_prefix}_at_iteration_{self.step}.png"),
                     self.save_checkpoint()]
            error = ckptlib.Interrupted(self.step, self.stop.requested,
                                        [p for p in saved if p], config.output_dir)
            self._plot()
            if self.manifest:
                self.manifest.end("interrupted", self.step, self._final_losses(),
                                  message=error.describe())
            raise error
        self.save_image(f"{config.result_prefix}.png")
        self.save_checkpoint()
        self._plot()
        if self.manifest:
            self.manifest.end("finished", self.step, self._final_losses())
        return self.paths
