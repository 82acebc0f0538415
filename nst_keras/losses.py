"""The style-transfer objective: pure loss functions and the compiled loss module.

The functions are the keras.io tutorial's, term for term (names from Gatys et
al. 2015):

* ``content_loss``: sum of squared differences of one layer's features.
* ``gram_matrix``: feature correlations ``G = F^T F`` of a ``(rows, cols,
  channels)`` feature map, ``F`` of shape ``(rows*cols, channels)``.
* ``style_loss``: ``sum((G_style - G_comb)^2) / (4 * 3^2 * (rows*cols)^2)``
  where rows, cols are the *output image* size and 3 its channels (keras.io's
  normalisation; the paper uses each layer's own N_l, M_l instead).
* ``total_variation_loss``: ``sum((a + b)^1.25)`` with ``a``, ``b`` the
  squared vertical and horizontal neighbour differences (not in the paper;
  keras.io adds it for smoothness).

``StyleTransferLoss`` computes the content features and style Gram targets
once, pushes one image per step through the cut network, and returns the
weighted total and each term as float32 scalars.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf


def gram_matrix(x):
    """Gram matrix of one feature map.

    Args:
      x: tensor ``(rows, cols, channels)``.

    Returns:
      ``(channels, channels)`` tensor ``F^T F`` with ``F = reshape(x, (-1, channels))``.
    """
    features = tf.reshape(x, (-1, tf.shape(x)[-1]))
    return tf.matmul(features, features, transpose_a=True)


@tf.custom_gradient
def fast_gram_matrix(x):
    """``gram_matrix`` of a ``(rows, cols, channels)`` map with a cheaper backward.

    The forward pass is ``gram_matrix`` computed in float32 (the map is cast
    first, so a bfloat16 network's features give a float32 Gram matrix).  The
    backward pass is one matrix product, ``dF = F (dG + dG^T)``, in the map's
    own dtype (what the network's backward pass receives anyway), instead of
    the two float32 products automatic differentiation of ``F^T F`` makes.
    """
    features = tf.reshape(x, (-1, tf.shape(x)[-1]))
    f32 = tf.cast(features, tf.float32)
    gram = tf.matmul(f32, f32, transpose_a=True)

    def grad(dgram):
        sym = tf.cast(dgram + tf.transpose(dgram), features.dtype)
        return tf.reshape(tf.matmul(features, sym), tf.shape(x))

    return gram, grad


def style_loss_from_grams(style_gram, combination_gram, img_nrows: int, img_ncols: int):
    """``style_loss`` given the combination's Gram matrix (float32)."""
    channels = 3
    size = img_nrows * img_ncols
    return tf.reduce_sum(tf.square(style_gram - combination_gram)) / (
        4.0 * (channels**2) * (size**2)
    )


def style_loss(style_gram, combination, img_nrows: int, img_ncols: int):
    """keras.io style loss between a target Gram matrix and a feature map.

    Args:
      style_gram: ``(channels, channels)`` Gram matrix of the style features.
      combination: ``(rows, cols, channels)`` features of the generated image.
      img_nrows, img_ncols: size of the generated *image* (not of the map).
    """
    channels = 3
    size = img_nrows * img_ncols
    c = gram_matrix(combination)
    return tf.reduce_sum(tf.square(style_gram - c)) / (4.0 * (channels**2) * (size**2))


def content_loss(base, combination):
    """Sum of squared differences between two feature maps."""
    return tf.reduce_sum(tf.square(combination - base))


def total_variation_loss(x):
    """keras.io total variation of a network image ``(1, rows, cols, 3)``."""
    a = tf.square(x[:, :-1, :-1, :] - x[:, 1:, :-1, :])
    b = tf.square(x[:, :-1, :-1, :] - x[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(a + b, 1.25))


def blend_grams(grams: Sequence[Mapping[str, tf.Tensor]], weights: Sequence[float]):
    """Per-layer weighted sum of several styles' Gram matrices (weights sum to 1)."""
    total = float(sum(weights))
    out = {}
    for name in grams[0]:
        out[name] = tf.add_n([g[name] * (w / total) for g, w in zip(grams, weights)])
    return out


class StyleTransferLoss:
    """The weighted objective with precomputed targets.

    ``loss(image) = content_weight * mean_l content_loss_l
    + style_weight * sum_l w_l style_loss_l + total_variation_weight * tv``
    with ``w_l = 1 / len(style_layers)`` by default (keras.io).  With a single
    content layer the content term is exactly keras.io's.

    Args:
      extractor: model from ``features.build_extractor``.
      content_image: network image ``(1, rows, cols, 3)``; its features at
        ``content_layers`` are the content targets and its size sets
        ``img_nrows``/``img_ncols`` of the style normalisation.
      style_images: one or more network images (any size; the Gram matrix of
        one whose size differs from the output's is rescaled by the ratio of
        feature positions, output over style, per layer).
      style_blend_weights: one weight per style image (default equal).
      style_layer_weights: one weight per style layer (default equal, summing
        to 1 as keras.io's ``style_weight / len(style_layers)``).
      jit_compile: compile with XLA.
      normalization: ``"keras_io"`` (the tutorial's terms, above) or
        ``"scaled"`` (relative errors; formulas in ``nst_keras.normalization``).
    """

    def __init__(
        self,
        extractor,
        content_image,
        style_images,
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        content_weight: float,
        style_weight: float,
        total_variation_weight: float,
        style_blend_weights: Optional[Sequence[float]] = None,
        style_layer_weights: Optional[Sequence[float]] = None,
        jit_compile: bool = False,
        normalization: str = "keras_io",
    ):
        from nst_keras import normalization as norm

        if normalization not in norm.NORMALIZATIONS:
            raise ValueError(f"unknown loss normalization {normalization!r}")
        self.normalization = normalization
        self.extractor = extractor
        self.content_layers = list(content_layers) if content_weight > 0 else []
        self.style_layers = list(style_layers) if style_weight > 0 else []
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.total_variation_weight = float(total_variation_weight)
        self.img_nrows = int(content_image.shape[1])
        self.img_ncols = int(content_image.shape[2])
        if isinstance(style_images, (np.ndarray, tf.Tensor)):
            style_images = [style_images]
        n = len(self.style_layers)
        if style_layer_weights is None:
            style_layer_weights = [1.0] * n
        if n and len(style_layer_weights) != n:
            raise ValueError("one style layer weight per style layer is needed")
        total = float(sum(style_layer_weights)) if n else 1.0
        self.style_layer_weights = [float(w) / total for w in style_layer_weights][:n]

        self.content_targets = {}
        if self.content_layers:
            feats = self.features(tf.constant(content_image))
            self.content_targets = {k: feats[k][0] for k in self.content_layers}
        self.style_targets = {}
        if self.style_layers:
            grams = []
            out_positions = None
            for s in style_images:
                feats = self.features(tf.constant(s))
                if normalization == "scaled":
                    # Mean Gram matrices do not depend on the number of positions.
                    grams.append({k: norm.mean_gram(feats[k][0]) for k in self.style_layers})
                    continue
                gram = {k: gram_matrix(feats[k][0]) for k in self.style_layers}
                if tuple(s.shape[1:3]) != (self.img_nrows, self.img_ncols):
                    # A style image of another size than the output (style
                    # scale): its Gram matrix sums over a different number of
                    # positions, so rescale it to the output's count per layer.
                    # keras.io resizes the style to the output size (factor 1).
                    if out_positions is None:
                        out = self.features(tf.constant(content_image))
                        out_positions = {k: int(out[k].shape[1]) * int(out[k].shape[2])
                                         for k in self.style_layers}
                    gram = {k: g * (out_positions[k] / float(int(feats[k].shape[1])
                                                              * int(feats[k].shape[2])))
                            for k, g in gram.items()}
                grams.append(gram)
            weights = style_blend_weights or [1.0] * len(grams)
            self.style_targets = blend_grams(grams, weights)
        # Denominators of the "scaled" normalisation (see nst_keras.normalization).
        self.content_norms, self.style_norms, self.tv_norm = {}, {}, None
        if normalization == "scaled":
            self.content_norms = {k: norm.content_denominator(v)
                                  for k, v in self.content_targets.items()}
            self.style_norms = {k: norm.style_denominator(v)
                                for k, v in self.style_targets.items()}
            self.tv_norm = norm.tv_denominator(content_image)
        self._float16 = any(
            getattr(layer, "compute_dtype", "float32") == "float16"
            for layer in (extractor.layers if extractor is not None else [])
        )
        # The float16 path keeps plain float32 Gram matrices (its exact loss
        # scale backpropagates to the float32 features first).
        self._fast_gram = not self._float16
        self.terms = tf.function(self._terms, jit_compile=jit_compile, reduce_retracing=True)
        self.value_and_grad = tf.function(
            self._value_and_grad, jit_compile=jit_compile, reduce_retracing=True
        )

    def features(self, image) -> Dict[str, tf.Tensor]:
        """Float32 features ``{name: (1, rows', cols', channels)}``."""
        return {k: tf.cast(v, tf.float32) for k, v in self.raw_features(image).items()}

    def raw_features(self, image) -> Dict[str, tf.Tensor]:
        """Features in the network's compute dtype (bfloat16 under mixed_bfloat16)."""
        if self.extractor is None:
            return {}
        return self.extractor(image, training=False)

    def _weighted(self, feats, image, raw=None):
        if self.normalization == "scaled":
            return self._weighted_scaled(feats, image, raw)
        zero = tf.zeros((), tf.float32)
        c = zero
        for name in self.content_layers:
            c += content_loss(self.content_targets[name], feats[name][0])
        if self.content_layers:
            c = c / float(len(self.content_layers))
        s = zero
        for name, w in zip(self.style_layers, self.style_layer_weights):
            if raw is not None:
                gram = fast_gram_matrix(raw[name][0])
            else:
                gram = gram_matrix(feats[name][0])
            s += w * style_loss_from_grams(
                self.style_targets[name], gram, self.img_nrows, self.img_ncols
            )
        tv = total_variation_loss(image) if self.total_variation_weight else zero
        total = (
            self.content_weight * c
            + self.style_weight * s
            + self.total_variation_weight * tv
        )
        return {"loss": total, "content_loss": c, "style_loss": s, "tv_loss": tv}

    def _weighted_scaled(self, feats, image, raw=None):
        from nst_keras import normalization as norm

        zero = tf.zeros((), tf.float32)
        pixels = float(self.img_nrows * self.img_ncols)
        c = zero
        for name in self.content_layers:
            c += norm.scaled_content_loss(self.content_targets[name], feats[name][0],
                                          self.content_norms[name], pixels)
        if self.content_layers:
            c = c / float(len(self.content_layers))
        s = zero
        for name, w in zip(self.style_layers, self.style_layer_weights):
            source = raw if raw is not None else feats
            s += w * norm.scaled_style_loss(self.style_targets[name], source[name][0],
                                            self.style_norms[name], pixels)
        tv = (pixels * total_variation_loss(image) / self.tv_norm
              if self.total_variation_weight else zero)
        total = (
            self.content_weight * c
            + self.style_weight * s
            + self.total_variation_weight * tv
        )
        return {"loss": total, "content_loss": c, "style_loss": s, "tv_loss": tv}

    def _terms(self, image):
        if self._fast_gram:
            raw = self.raw_features(image)
            feats = {k: tf.cast(v, tf.float32) for k, v in raw.items()}
            return self._weighted(feats, image, raw)
        return self._weighted(self.features(image), image)

    def _value_and_grad(self, image):
        """Returns ``(terms, gradient)``; the gradient of ``terms["loss"]``."""
        if not self._float16:
            with tf.GradientTape() as tape:
                tape.watch(image)
                terms = self._terms(image)
            return terms, tape.gradient(terms["loss"], image)
        # float16 cannot hold the tiny gradients the keras.io weights give, so
        # backpropagate in two stages: the gradient with respect to the float32
        # features, scaled so its largest entry is about 2^10, then through the
        # float16 network, then unscaled (an exact, per-step loss scale).
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(image)
            feats = self.features(image)
            terms = self._weighted(feats, image)
        names = sorted(feats)
        gf = tape.gradient(terms["loss"], [feats[k] for k in names])
        gf = [tf.zeros_like(feats[k]) if g is None else g for k, g in zip(names, gf)]
        peak = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(g)) for g in gf]))
        scale = tf.pow(2.0, tf.round(10.0 - tf.math.log(peak + 1e-30) / tf.math.log(2.0)))
        g_net = tape.gradient(
            [feats[k] for k in names], image, output_gradients=[g * scale for g in gf]
        )
        grad = g_net / scale
        if self.total_variation_weight:
            grad += self.total_variation_weight * tape.gradient(terms["tv_loss"], image)
        del tape
        return terms, grad
