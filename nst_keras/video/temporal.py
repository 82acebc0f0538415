"""The temporal loss of video style transfer (Ruder, Dosovitskiy and Brox 2016).

``TemporalTerm`` keeps the pixels of a frame where the previous stylised
frames, warped along the optical flow, put them:

    factor * sum_j  sum_p  c_j(p) * ||x(p) - w_j(p)||^2

with ``x`` the network image, ``w_j`` the stylised frame ``j`` frames back
warped into this frame (a network image too), and ``c_j`` its per-pixel
weights in 0..1 (0 where the pixel was occluded or lies on a motion
boundary; ``flow.consistency_weights``, ``flow.long_term_weights``).

The factor follows ``--loss_normalization``, in the same spirit as the
other terms (``objective``):

``keras_io``
  ``1 / (3 P)``: the mean over the ``D = 3 P`` values of the image, the
  normalisation of the paper (``P = rows * cols``).
``scaled``, ``gap``, ``gap_total``
  ``1 / (3 var)``, ``var`` the variance of the content frame's network
  image: a relative error summed over the ``P`` pixels, like the scaled
  total variation ``P / tv(content)``.  It does not change when the image
  is resized, and a difference as large as the frame's own contrast
  everywhere costs about ``P``, the order of the other terms at the start.

It follows the loss-term contract (``nst_keras.engine.terms.Term``) and joins
a frame's objective as an argument (``pipeline.stylize(..., extra_terms=[(NAME,
weight, term)])``).  It is a sum over pixels, so it is exact under tiling:
each tile sums the pixels of its interior.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from nst_keras.engine.terms import RELATIVE, Term

NAME = "temporal_loss"


class TemporalTerm(Term):
    """``factor * sum(weights * (image - targets)^2)`` (see the module docstring).

    Args:
      targets: ``float32 (K, rows, cols, 3)`` warped previous frames (network images).
      weights: ``float32 (K, rows, cols, 1)`` per-pixel weights ``c_j``.
      factor: the normalisation factor.

    An image of another size (a coarser ``--scales`` stage) is compared with
    the targets and weights resized to it (bilinearly).
    """

    def __init__(self, targets, weights, factor: float):
        self.targets = tf.constant(np.asarray(targets, np.float32))
        self.weights = tf.constant(np.asarray(weights, np.float32))
        self.factor = float(factor)

    @classmethod
    def from_frames(cls, config, targets: Sequence[np.ndarray], weights: Sequence[np.ndarray],
                    content_image: np.ndarray) -> "TemporalTerm":
        """``build`` under the run's settings (its ``loss_normalization``)."""
        return cls.build(targets, weights, config.loss_normalization, content_image)

    @classmethod
    def build(cls, targets: Sequence[np.ndarray], weights: Sequence[np.ndarray],
              normalization: str, content_image: np.ndarray) -> "TemporalTerm":
        """The term for network images ``targets`` with weights ``(rows, cols)`` each.

        ``content_image``: the frame's network image ``(1, rows, cols, 3)``.
        """
        stacked = np.concatenate([np.asarray(t, np.float32).reshape(
            (1,) + np.shape(t)[-3:]) for t in targets])
        masks = np.stack([np.asarray(w, np.float32) for w in weights])[..., None]
        return cls(stacked, masks, normalization_factor(normalization, content_image))

    name = NAME
    state_names = ("targets", "weights", "factor")

    def _at(self, rows: int, cols: int):
        """Targets and weights at an image of ``rows x cols`` (resized if needed)."""
        targets, weights = self.targets, self.weights
        if tuple(targets.shape[1:3]) != (rows, cols):
            targets = tf.image.resize(targets, (rows, cols))
            weights = tf.image.resize(weights, (rows, cols))
        return targets, weights

    def inputs(self, region=None):
        if region is None:
            return {}
        targets, weights = self._at(*region.size)
        return {"targets": region.window_of(targets), "weights": region.window_of(weights)}

    def sums(self, features, image, inputs, part):
        if not inputs:  # the whole image
            targets, weights = self._at(int(image.shape[1]), int(image.shape[2]))
        else:
            targets, weights = inputs["targets"], inputs["weights"]
        x, t, w = (part.window(v) for v in (image, targets, weights))
        return tf.reduce_sum(w * tf.square(x - t))

    def finish(self, sums) -> tf.Tensor:
        return self.factor * sums

    def __call__(self, image) -> tf.Tensor:
        return self.value({}, image)


def normalization_factor(normalization: str, content_image: np.ndarray) -> float:
    """The factor of ``TemporalTerm`` under ``normalization`` (module docstring)."""
    content = np.asarray(content_image, np.float64)
    if normalization in RELATIVE:
        return 1.0 / (3.0 * max(float(content.var()), 1e-6))
    pixels = content.shape[-3] * content.shape[-2]
    return 1.0 / (3.0 * pixels)
