"""Loss normalisations: ``keras_io`` (the tutorial's) and ``scaled``.

``keras_io`` is the tutorial's objective (see ``nst_keras.losses``).  Its
terms carry the units of the network's activations and the image size:
the content term grows with the square of the activations and the number of
positions, the style term with the fourth power of the activations and falls
with the square of the image's pixel count.  Weights tuned for ImageNet VGG19
at 400 rows therefore mean something else for VGG16, for another image size or
for other layers.

``scaled`` makes every term a relative error, summed over the output's
``P = rows * cols`` pixels (so that the gradient *per pixel* does not depend
on the image size, and an SGD learning rate in pixel units means the same at
any size):

* content, per content layer ``l`` with target features ``P_l``::

      C_l(x) = P * ||F_l(x) - P_l||^2 / ||P_l||^2

  averaged over the content layers;
* style, per style layer with ``N_l`` positions, Gram matrices of the mean
  ``G_l(x) = F_l(x)^T F_l(x) / N_l`` and target ``A_l`` (the style image's,
  with its own ``N``)::

      S_l(x) = P * ||G_l(x) - A_l||^2 / ||A_l||^2

  weighted by the layer weights (equal, summing to 1, by default);
* total variation: keras.io's ``tv(x) = sum((a + b)^1.25)`` relative to the
  content image's own, ``TV(x) = P * tv(x) / tv(content)``.

Why these: multiplying a layer's activations by any ``c > 0`` (scaling its
weights and biases; with zero biases, or for the deepest layer used, every
later feature scales alike) multiplies ``F_l`` and ``P_l`` by ``c`` and
``G_l`` and ``A_l`` by ``c^2``, so each ratio -- and the minimiser of the
weighted sum -- does not change.  ``G / N`` and both ``||.||^2`` grow alike
with the image size, so each ratio is of the same order at any size, for any
layers and for VGG19 or VGG16, and the mean absolute gradient per pixel of
each term (``P`` times a ratio whose gradient is spread over ``P`` pixels)
stays of the same order too.  At the content image the style ratios start
near 1, the content ratio at 0 and the total-variation ratio at 1, so weights
of order 1 (for example content 1, style 10, total variation 0.1) are
sensible for any network.

Dividing by a fixed target norm (not by the current error, as some
implementations do) keeps each term a smooth quadratic, which L-BFGS
prefers.
"""

from __future__ import annotations

import tensorflow as tf

from nst_keras import losses

NORMALIZATIONS = ("keras_io", "scaled")
_EPS = 1e-12


def mean_gram(features):
    """``F^T F / N`` of a ``(rows, cols, channels)`` map, float32, cheap backward."""
    positions = tf.cast(tf.reduce_prod(tf.shape(features)[:-1]), tf.float32)
    return losses.fast_gram_matrix(features) / positions


def content_denominator(target) -> tf.Tensor:
    """``||P||^2`` of a content target (never below a tiny epsilon)."""
    return tf.maximum(tf.reduce_sum(tf.square(tf.cast(target, tf.float32))), _EPS)


def style_denominator(target_gram) -> tf.Tensor:
    """``||A||^2`` of a style target Gram matrix (of the mean)."""
    return tf.maximum(tf.reduce_sum(tf.square(target_gram)), _EPS)


def scaled_content_loss(target, combination, denominator, pixels):
    """``pixels * ||F - P||^2 / ||P||^2``."""
    return pixels * losses.content_loss(target, combination) / denominator


def scaled_style_loss(target_gram, combination, denominator, pixels):
    """``pixels * ||G(F) - A||^2 / ||A||^2`` with ``G(F) = F^T F / N``."""
    return pixels * tf.reduce_sum(tf.square(target_gram - mean_gram(combination))) / denominator


def tv_denominator(content_image) -> tf.Tensor:
    """keras.io total variation of the content image (the unit of ``TV``)."""
    return tf.maximum(losses.total_variation_loss(tf.constant(content_image)), _EPS)
