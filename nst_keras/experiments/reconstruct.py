"""Reconstructions from noise (Gatys et al. 2015, Fig. 1).

A content reconstruction starts from white noise and matches only the
features of one layer of a picture; a style reconstruction matches only the
Gram matrices of a set of layers.  Each is one run of the engine's
``stylize`` (through ``output.stylize`` without an output directory, which
writes nothing): ``reconstruction_config`` gives weight 1 to the matched term
and 0 to the other, starts from the seeded noise (``init="noise"``), keeps the
pixels in 0..255 and runs at the picture's own size; a callback measures the
matched term at the start and logs the steps.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nst_keras.engine import imaging, vgg
from nst_keras.engine.callbacks import Callback, Progress
from nst_keras.output import stylize
from nst_keras.settings import Config

TERM = {"content": "content_loss", "style": "style_loss"}


def growing_sets(layers: Sequence[str]) -> List[Tuple[str, ...]]:
    """``[a, b, c]`` -> ``[(a,), (a, b), (a, b, c)]``: the style layer sets."""
    layers = tuple(layers)
    return [layers[: i + 1] for i in range(len(layers))]


def reconstruction_config(config: Config, kind: str, layers: Sequence[str],
                          rows: Optional[int] = None) -> Config:
    """The config of one reconstruction: only ``kind`` at ``layers`` is matched.

    The matched term has weight 1, the other term and the colour term 0; the
    run starts from seeded noise (``init="noise"``), keeps the pixels in
    0..255 (L-BFGS-B's bounds with ``lbfgs``, else a clamp after each step: a
    picture outside the range would be clipped when saved and no longer match
    the representation that was reconstructed) and sees the picture as it is:
    ``rows`` high (the picture's own height, when given), one scale, no colour
    transform, the same picture as style at its own size, no masks, no image
    average and no early stop.
    """
    if kind == "content":
        config = config.replace(content_layers=tuple(layers), content_weight=1.0,
                                style_weight=0.0)
    elif kind == "style":
        config = config.replace(style_layers=tuple(layers), style_weight=1.0,
                                content_weight=0.0)
    else:
        raise ValueError(f"kind must be 'content' or 'style', not {kind!r}")
    return config.replace(
        experiment="none", init="noise", clamp_pixels=True, color_weight=0.0, scales=None,
        img_nrows=int(rows) if rows is not None else config.img_nrows, style_scale=1.0,
        preserve_colors="none", style_masks=None, style_blend_weights=None,
        style_stop_fraction=0.0, ema_decay=0.0, output_dir=None, resume=None)


@contextlib.contextmanager
def quiet_retracing():
    """Hides TensorFlow's "triggered tf.function retracing" warning meanwhile.

    Each reconstruction or stylisation builds its own loss with its own
    compiled functions; TensorFlow counts these as retracings and warns.
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


class _Measure(Callback):
    """Keeps the run's objective and the matched term at the starting image
    (``start``, the run's own noise), counts the evaluations and logs the steps."""

    def __init__(self, term: str, start: np.ndarray, label: str, log_every: int,
                 log: Callable[[str], None]):
        self.term, self.start, self.label = term, start, label
        self.log_every, self.log = log_every, log
        self.objective = None
        self.initial: Optional[float] = None
        self.evaluations = 0

    def value(self, image) -> float:
        """The matched term (unweighted) of a network image under the run's objective."""
        return float(self.objective.terms(image)[self.term].numpy())

    def on_step(self, progress: Progress) -> None:
        if self.objective is None:
            self.objective = progress.run.optimizer.loss
            self.initial = self.value(self.start)
        self.evaluations = progress.evaluations
        step, every = progress.step, self.log_every
        if every and (step % every == 0 or step == progress.total_steps):
            self.log(f"{self.label}: iteration {step}: {self.term}="
                     f"{progress.losses[self.term]:.4g} [{progress.elapsed_s:.1f}s]")


def reconstruct(
    config: Config,
    target: np.ndarray,
    kind: str,
    layers: Sequence[str],
    log: Optional[Callable[[str], None]] = print,
) -> Tuple[np.ndarray, Dict]:
    """Reconstructs ``target``'s content or style representation from noise.

    Args:
      config: settings; ``iterations``, ``optimizer`` (the configs use
        ``lbfgs``), ``learning_rate``/decay, ``total_variation_weight``,
        ``seed`` (the noise), ``model``/``weights``/``precision``,
        ``log_every`` and the loss settings are used; the rest is
        ``reconstruction_config``'s.
      target: ``uint8 (rows, cols, 3)`` picture; the output has its size.
      kind: ``"content"`` (match the features of ``layers``, averaged) or
        ``"style"`` (match the Gram matrices of ``layers``, keras.io's style
        loss).
      layers: VGG layer names.
      log: receives one line per logged step (``None``: silent).

    Returns:
      ``(picture, record)``: the reconstruction (``uint8`` RGB) and a dict
      with ``kind``, ``layers``, ``initial_loss``/``final_loss`` (the matched
      term, unweighted, at the noise and at the final image), ``reduction``,
      ``iterations``, ``evaluations`` and ``seconds``.
    """
    log = log or (lambda line: None)
    rows, cols = target.shape[:2]
    rconfig = reconstruction_config(config, kind, layers, rows)
    start = vgg.preprocess_image(imaging.noise_picture(rows, cols, config.seed))
    measure = _Measure(TERM[kind], start, f"{kind} {'+'.join(layers)}", config.log_every, log)
    began = time.perf_counter()
    with quiet_retracing():
        result = stylize.stylize(rconfig, content=target, style=target, callbacks=[measure],
                                 log=lambda line: None)
        final = measure.value(result.tensor)
    initial = measure.initial
    record = {"kind": kind, "layers": list(layers), "initial_loss": initial,
              "final_loss": final, "reduction": (initial / final) if final > 0 else None,
              "iterations": int(config.iterations), "evaluations": int(measure.evaluations),
              "seconds": round(time.perf_counter() - began, 3)}
    return result.image, record
