"""Reconstructions from noise (Gatys et al. 2015, Fig. 1).

A content reconstruction starts from white noise and matches only the
features of one layer of a picture; a style reconstruction matches only the
Gram matrices of a set of layers.  The objective is the engine's
(``pipeline.build_loss``) with weight 1 on the matched term and 0 on the other,
optimised over a ``tf.Variable`` that starts from seeded noise.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from nst_keras.engine import imaging, optim, pipeline, vgg
from nst_keras.settings import Config

TERM = {"content": "content_loss", "style": "style_loss"}


def growing_sets(layers: Sequence[str]) -> List[Tuple[str, ...]]:
    """``[a, b, c]`` -> ``[(a,), (a, b), (a, b, c)]``: the style layer sets."""
    layers = tuple(layers)
    return [layers[: i + 1] for i in range(len(layers))]


def reconstruction_config(config: Config, kind: str, layers: Sequence[str]) -> Config:
    """The config whose objective matches only ``kind`` at ``layers``."""
    if kind == "content":
        return config.replace(content_layers=tuple(layers), content_weight=1.0, style_weight=0.0)
    if kind == "style":
        return config.replace(style_layers=tuple(layers), style_weight=1.0, content_weight=0.0)
    raise ValueError(f"kind must be 'content' or 'style', not {kind!r}")


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


def reconstruct(
    config: Config,
    target: np.ndarray,
    kind: str,
    layers: Sequence[str],
    backbone=None,
    log: Callable[[str], None] = print,
) -> Tuple[np.ndarray, Dict]:
    """Reconstructs ``target``'s content or style representation from noise.

    Args:
      config: settings; ``iterations``, ``optimizer`` (the configs use
        ``lbfgs``, which is run with the pixels bounded to 0..255),
        ``learning_rate``/decay, ``total_variation_weight``,
        ``seed`` (the noise), ``model``/``weights``/``precision`` are used;
        the content and style weights are replaced by 1 and 0.
      target: ``uint8 (rows, cols, 3)`` picture; the output has its size.
      kind: ``"content"`` (match the features of ``layers``, averaged) or
        ``"style"`` (match the Gram matrices of ``layers``, keras.io's style
        loss).
      layers: VGG layer names.
      backbone: a loaded backbone (default: loaded from the config).

    Returns:
      ``(picture, record)``: the reconstruction (``uint8`` RGB) and a dict
      with ``kind``, ``layers``, ``initial_loss``/``final_loss`` (the matched
      term, unweighted), ``iterations``, ``evaluations`` and ``seconds``.
    """
    log = log or (lambda line: None)
    rconfig = reconstruction_config(config, kind, layers)
    loss = pipeline.build_loss(rconfig, target, [target], backbone)
    rows, cols = target.shape[:2]
    image = tf.Variable(vgg.preprocess_image(imaging.noise_picture(rows, cols, config.seed)))
    term = TERM[kind]
    with quiet_retracing():
        initial = float(loss.terms(image)[term].numpy())
    # L-BFGS keeps the pixels in 0..255: unbounded, a reconstruction from
    # noise drifts far outside the range, and the saved (clipped) picture
    # would no longer match the representation that was reconstructed.
    optimizer = optim.make_optimizer(
        config.optimizer, loss, image, config.resolved_learning_rate(), config.decay_steps,
        config.decay_rate, jit_compile=config.jit_compile, bounds=vgg.pixel_bounds())
    label = f"{kind} {'+'.join(layers)}"
    start = time.perf_counter()

    def on_step(step, terms):
        if config.log_every and (step % config.log_every == 0 or step == config.iterations):
            log(f"{label}: iteration {step}: {term}={float(terms[term].numpy()):.4g} "
                f"[{time.perf_counter() - start:.1f}s]")
        return True

    with quiet_retracing():
        optimizer.run(1, config.iterations, on_step)
        final = float(loss.terms(image)[term].numpy())
    record = {"kind": kind, "layers": list(layers), "initial_loss": initial,
              "final_loss": final, "reduction": (initial / final) if final > 0 else None,
              "iterations": int(config.iterations), "evaluations": int(optimizer.evaluations),
              "seconds": round(time.perf_counter() - start, 3)}
    return vgg.deprocess_image(image.numpy(), config.deprocess_mean), record
