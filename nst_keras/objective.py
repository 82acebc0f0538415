"""The style-transfer objective: pure term functions and three small term objects.

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

Each term object holds its targets and its normalisation, as per-layer
factors of one comparison shape:

* ``ContentTerm``: ``mean_l  c_l * ||F_l(x) - P_l||^2``;
* ``StyleTerm``: ``sum_l  w_l * c_l * ||A_l - G_l(x) / n_l||^2``;
* ``TotalVariationTerm``: ``c * tv(x)``.

Three normalisations fill in the factors (``--loss_normalization``):

``keras_io``
  the tutorial's objective: ``c_l = 1`` for content, ``n_l = 1`` and
  ``c_l = 1 / (36 P^2)`` for style (``P = rows * cols`` of the output), and
  ``c = 1`` for total variation.

``scaled``
  every term a relative error summed over the ``P`` output pixels, so the
  gradient *per pixel* does not depend on the image size and one set of
  weights suits any network, size and layers: ``c_l = P / ||P_l||^2``;
  ``G_l / n_l`` the Gram matrix of the mean (``n_l`` positions), ``A_l`` the
  style's, ``c_l = P / ||A_l||^2``; ``c = P / tv(content)``.  Multiplying a
  layer's activations by any ``c > 0`` scales ``F_l``, ``P_l`` by ``c`` and
  ``G_l``, ``A_l`` by ``c^2``, so each ratio -- and the minimiser -- does not
  change.  At the content image the style ratios start near 1, the content
  ratio at 0 and the total-variation ratio at 1, so weights of order 1
  (content 1, style 10, total variation 0.1) are sensible for any network.
  Dividing by a fixed target norm (not by the current error) keeps each term
  a smooth quadratic, which L-BFGS prefers.

``gap``
  as ``scaled``, but each style layer's error is measured in units of the
  photo's own distance from the painting: ``c_l = P / ||A_l - G_l(photo) / n_l||^2``,
  so every style layer starts at exactly ``P`` at the photo whatever the
  pairing.  A painting whose statistics are already close to the photo's (a
  small gap) then pulls as hard as a distant one, so one style weight gives a
  similar share of the way from photo to painting for every pairing.

``gap_total``
  as ``scaled``, with the whole style term measured in units of the photo's
  total distance from the painting: ``c_l = P / (||A_l||^2 * D)`` with
  ``D = sum_l w_l ||A_l - G_l(photo) / n_l||^2 / ||A_l||^2``, so the style
  term starts at exactly ``P`` at the photo (as under ``gap``) while each
  layer keeps the share ``scaled`` gives it: layers where the photo is
  already close to the painting pull little, instead of as hard as the
  others (under ``gap`` a nearly closed layer is blown up to a full share).

``Objective`` computes the targets once, pushes one image per step through
the cut network, and returns the weighted total and each term as float32
scalars, compiled with ``tf.function``.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Mapping, MutableMapping, Optional, Sequence

import numpy as np
import tensorflow as tf

NORMALIZATIONS = ("keras_io", "scaled", "gap", "gap_total")
RELATIVE = ("scaled", "gap", "gap_total")  # terms as relative errors, Gram of the mean
_EPS = 1e-12
Features = Mapping[str, tf.Tensor]


# --------------------------------------------------------------------------
# The keras.io term functions


def gram_matrix(x):
    """Gram matrix ``F^T F`` of a ``(rows, cols, channels)`` map, ``(channels, channels)``."""
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


def positions(x) -> tf.Tensor:
    """Number of positions ``rows * cols`` of a ``(rows, cols, channels)`` map (float32)."""
    return tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)


def mean_gram(x):
    """``F^T F / N`` of a ``(rows, cols, channels)`` map: float32, cheap backward."""
    return fast_gram_matrix(x) / positions(x)


def content_loss(base, combination):
    """Sum of squared differences between two feature maps."""
    return tf.reduce_sum(tf.square(combination - base))


def style_loss(style_gram, combination, img_nrows: int, img_ncols: int):
    """keras.io style loss between a target Gram matrix and a feature map.

    Args:
      style_gram: ``(channels, channels)`` Gram matrix of the style features.
      combination: ``(rows, cols, channels)`` features of the generated image.
      img_nrows, img_ncols: size of the generated *image* (not of the map).
    """
    size = img_nrows * img_ncols
    return tf.reduce_sum(tf.square(style_gram - gram_matrix(combination))) / (
        4.0 * (3**2) * (size**2))


def total_variation_loss(x):
    """keras.io total variation of a network image ``(1, rows, cols, 3)``."""
    a = tf.square(x[:, :-1, :-1, :] - x[:, 1:, :-1, :])
    b = tf.square(x[:, :-1, :-1, :] - x[:, :-1, 1:, :])
    return tf.reduce_sum(tf.pow(a + b, 1.25))


def blend_grams(grams: Sequence[Mapping[str, tf.Tensor]], weights: Sequence[float]):
    """Per-layer weighted sum of several styles' Gram matrices (weights normalised)."""
    total = float(sum(weights))
    return {name: tf.add_n([g[name] * (w / total) for g, w in zip(grams, weights)])
            for name in grams[0]}


def _squared_norm(x) -> tf.Tensor:
    return tf.maximum(tf.reduce_sum(tf.square(tf.cast(x, tf.float32))), _EPS)


# --------------------------------------------------------------------------
# The terms


class ContentTerm:
    """``mean_l  c_l * ||F_l(x) - P_l||^2`` over the content layers.

    Args:
      targets: ``{layer: (rows', cols', channels)}`` float32 content features.
      factors: ``{layer: c_l}`` (see the module docstring).
    """

    def __init__(self, targets: Dict[str, tf.Tensor], factors: Dict[str, object]):
        self.targets, self.factors = targets, factors

    @classmethod
    def build(cls, targets: Dict[str, tf.Tensor], normalization: str, pixels: float):
        if normalization in RELATIVE:
            return cls(targets, {k: pixels / _squared_norm(v) for k, v in targets.items()})
        return cls(targets, {k: 1.0 for k in targets})

    def __call__(self, features: Features) -> tf.Tensor:
        return self.combine({name: content_loss(target, features[name][0])
                             for name, target in self.targets.items()})

    def combine(self, losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The term from each layer's ``||F_l(x) - P_l||^2`` (``losses``)."""
        total = tf.zeros((), tf.float32)
        for name in self.targets:
            total += self.factors[name] * losses[name]
        return total / float(max(len(self.targets), 1))


class StyleTerm:
    """``sum_l  w_l * c_l * ||A_l - G_l(x) / n_l||^2`` over the style layers.

    Args:
      targets: ``{layer: (channels, channels)}`` target Gram matrices ``A_l``.
      layer_weights: ``{layer: w_l}`` summing to 1.
      factors: ``{layer: c_l}``.
      mean: ``n_l`` is the map's number of positions (Gram of the mean) when
        True, else 1.
    """

    def __init__(self, targets, layer_weights, factors, mean: bool):
        self.targets, self.layer_weights = targets, layer_weights
        self.factors, self.mean = factors, mean

    @classmethod
    def build(cls, style_features: Sequence[Features], normalization: str,
              output_positions: Mapping[str, int], pixels: float,
              blend_weights: Optional[Sequence[float]] = None,
              layer_weights: Optional[Sequence[float]] = None,
              content_features: Optional[Features] = None,
              grams: Optional[Sequence[Dict[str, tf.Tensor]]] = None,
              photo_grams: Optional[Mapping[str, tf.Tensor]] = None):
        """Targets from the style images' features (one dict per style image).

        keras.io compares plain Gram matrices, so a style image of another
        size than the output (``--style_scale``) has its Gram matrix rescaled
        to the output's number of positions per layer (``output_positions``);
        the scaled normalisation compares Gram matrices of the mean, which do
        not depend on the size.  ``grams``: each style image's ``image_grams``
        computed before (``style_features`` is then not used).  ``photo_grams``:
        the content image's Gram matrices of the mean, which ``gap`` and
        ``gap_total`` need (default: from ``content_features``).
        """
        names = list(output_positions)
        scaled = normalization in RELATIVE
        if grams is None:
            grams = [cls.image_grams(f, output_positions, scaled) for f in style_features]
        targets = blend_grams(grams, blend_weights or [1.0] * len(grams))
        weights = list(layer_weights) if layer_weights is not None else [1.0] * len(names)
        weights = {k: float(w) / float(sum(weights)) for k, w in zip(names, weights)}
        if normalization in ("gap", "gap_total") and photo_grams is None:
            photo_grams = {k: mean_gram(content_features[k][0]) for k in targets}
        if normalization == "gap":  # the photo's own distance from the style is 1
            factors = {k: pixels / _squared_norm(v - photo_grams[k])
                       for k, v in targets.items()}
        elif normalization == "gap_total":  # ... summed over the layers
            total = tf.add_n([weights[k] * _squared_norm(v - photo_grams[k]) / _squared_norm(v)
                              for k, v in targets.items()])
            factors = {k: pixels / (_squared_norm(v) * total) for k, v in targets.items()}
        elif scaled:
            factors = {k: pixels / _squared_norm(v) for k, v in targets.items()}
        else:
            factors = {k: 1.0 / (4.0 * 3**2 * pixels**2) for k in names}
        return cls(targets, weights, factors, mean=scaled)

    @staticmethod
    def image_grams(feats: Features, output_positions: Mapping[str, int], scaled: bool):
        """One style image's ``{layer: Gram matrix}`` before blending (see ``build``)."""
        if scaled:
            return {k: mean_gram(feats[k][0]) for k in output_positions}
        return {k: gram_matrix(feats[k][0]) * (
            output_positions[k] / float(positions(feats[k][0]))) for k in output_positions}

    def __call__(self, features: Features) -> tf.Tensor:
        """``features`` may be in the network's dtype: Gram matrices are float32."""
        total = tf.zeros((), tf.float32)
        for name in self.targets:
            x = features[name][0]
            total += self.distance(name, mean_gram(x) if self.mean else fast_gram_matrix(x))
        return total

    def distance(self, name: str, gram) -> tf.Tensor:
        """``w_l * c_l * ||A_l - gram||^2``: one layer's share of the term."""
        return self.layer_weights[name] * self.factors[name] * tf.reduce_sum(
            tf.square(self.targets[name] - gram))


class TotalVariationTerm:
    """``c * tv(x)``: ``c = 1`` (keras_io) or ``P / tv(content)`` (scaled)."""

    def __init__(self, factor):
        self.factor = factor

    @classmethod
    def build(cls, content_image, normalization: str):
        if normalization in RELATIVE:
            pixels = float(content_image.shape[1] * content_image.shape[2])
            return cls(pixels / tf.maximum(total_variation_loss(tf.constant(content_image)),
                                           _EPS))
        return cls(1.0)

    def __call__(self, image) -> tf.Tensor:
        return self.factor * total_variation_loss(image)


# --------------------------------------------------------------------------
# The weighted objective


class Objective:
    """``content_weight * C + style_weight * S + total_variation_weight * TV``.

    Args:
      extractor: model from ``vgg.build_extractor`` (``None`` when no layer is
        used).
      content, style: the terms (``None`` when their weight is 0).
      weights: ``(content_weight, style_weight, total_variation_weight)``.
      jit_compile: compile with XLA.

    ``terms(image)`` and ``value_and_grad(image)`` take a network image
    ``(1, rows, cols, 3)`` float32 and return float32 scalars
    ``{"loss", "content_loss", "style_loss", "tv_loss"}`` (and the gradient,
    same shape as the image).
    """

    def __init__(self, extractor, content: Optional[ContentTerm],
                 style: Optional[StyleTerm], weights, jit_compile: bool = False):
        self.extractor = extractor
        self.content, self.style = content, style
        self.content_weight, self.style_weight, self.total_variation_weight = (
            float(w) for w in weights)
        self.tv = TotalVariationTerm(1.0)
        # Extra image-space terms ``(name, weight, term)``: ``term(image)`` is a
        # float32 scalar, added to the loss with ``weight`` and reported as ``name``.
        self.extra = []
        layers = extractor.layers if extractor is not None else []
        # float16 cannot hold the tiny gradients the keras.io weights give:
        # see value_and_grad_fn.
        self.float16 = computes_in_float16(layers)
        self.terms = tf.function(self.terms_fn, jit_compile=jit_compile, reduce_retracing=True)
        self.value_and_grad = tf.function(self.value_and_grad_fn, jit_compile=jit_compile,
                                          reduce_retracing=True)

    def raw_features(self, image) -> Dict[str, tf.Tensor]:
        """Features in the network's compute dtype (bfloat16 under mixed_bfloat16)."""
        return {} if self.extractor is None else self.extractor(image, training=False)

    def features(self, image) -> Dict[str, tf.Tensor]:
        """Float32 features ``{name: (1, rows', cols', channels)}``."""
        return {k: tf.cast(v, tf.float32) for k, v in self.raw_features(image).items()}

    def weighted(self, raw: Features, image) -> Dict[str, tf.Tensor]:
        """The terms from the image's features (``raw``: any float dtype)."""
        zero = tf.zeros((), tf.float32)
        c = self.content({k: tf.cast(v, tf.float32) for k, v in raw.items()}) \
            if self.content else zero
        s = self.style(raw) if self.style else zero
        tv = self.tv(image) if self.total_variation_weight else zero
        total = self.content_weight * c + self.style_weight * s + \
            self.total_variation_weight * tv
        out = {"loss": total, "content_loss": c, "style_loss": s, "tv_loss": tv}
        for name, weight, term in self.extra:  # e.g. a video's temporal term
            out[name] = term(image)
            out["loss"] = out["loss"] + weight * out[name]
        return out

    def terms_fn(self, image) -> Dict[str, tf.Tensor]:
        """The loss and its terms at ``image`` (uncompiled; see ``terms``)."""
        return self.weighted(self.raw_features(image), image)

    def value_and_grad_fn(self, image):
        """Returns ``(terms, gradient of terms["loss"])`` (uncompiled)."""
        if not self.float16:
            with tf.GradientTape() as tape:
                tape.watch(image)
                terms = self.terms_fn(image)
            return terms, tape.gradient(terms["loss"], image)
        # float16: the network part with an exact loss scale, the rest directly.
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(image)
            feats = self.features(image)
            terms = self.weighted(feats, image)
        grad = scaled_network_gradient(tape, terms["loss"], feats, image)
        if self.total_variation_weight:
            grad += self.total_variation_weight * tape.gradient(terms["tv_loss"], image)
        for name, weight, _ in self.extra:
            grad += weight * tape.gradient(terms[name], image)
        del tape
        return terms, grad


def computes_in_float16(layers) -> bool:
    """Whether any of the network's ``layers`` computes in float16."""
    return any(getattr(layer, "compute_dtype", "") == "float16" for layer in layers)


def scaled_network_gradient(tape, value, feats: Features, wrt):
    """``d value / d wrt`` through the features ``feats`` only, for float16 networks.

    The gradient with respect to the float32 features is scaled so its
    largest entry is about 2^10, backpropagated through the float16 network
    and unscaled: an exact, per-call loss scale.  ``tape`` must be persistent
    and have recorded ``feats`` from ``wrt``; paths from ``wrt`` to ``value``
    that bypass the network (total variation, extra terms) are not included.
    """
    names = sorted(feats)
    gf = tape.gradient(value, [feats[k] for k in names])
    gf = [tf.zeros_like(feats[k]) if g is None else g for k, g in zip(names, gf)]
    peak = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(g)) for g in gf]))
    scale = tf.pow(2.0, tf.round(10.0 - tf.math.log(peak + 1e-30) / tf.math.log(2.0)))
    grad = tape.gradient([feats[k] for k in names], wrt,
                         output_gradients=[g * scale for g in gf])
    return grad / scale


def style_grams(objective: Objective, style_image, output_positions: Mapping[str, int],
                normalization: str, cache: Optional[MutableMapping] = None, network_key=None):
    """One style image's target Gram matrices, taken from ``cache`` when it has them.

    ``cache`` (any mapping, kept by the caller across runs) is keyed by
    ``network_key`` (what fixes the network: model, weights, precision, ...),
    a digest of the network image, the layers with their output positions and
    the normalisation; a hit gives exactly the matrices computing them would.
    """
    scaled = normalization in RELATIVE
    key = None
    if cache is not None:
        image = np.ascontiguousarray(style_image, dtype=np.float32)
        key = (network_key, hashlib.sha256(image.tobytes()).hexdigest(), image.shape,
               tuple(output_positions.items()), scaled)
        if key in cache:
            return cache[key]
    grams = StyleTerm.image_grams(objective.features(tf.constant(style_image)),
                                  output_positions, scaled)
    if cache is not None:
        cache[key] = grams
    return grams


def build_objective(extractor, content_image, style_images, *, content_layers,
                    style_layers, content_weight, style_weight, total_variation_weight,
                    normalization="keras_io", blend_weights=None, layer_weights=None,
                    jit_compile=False, target_cache=None, network_key=None,
                    extra_terms=()) -> Objective:
    """Computes the targets and returns the ``Objective``.

    Args:
      extractor: model from ``vgg.build_extractor`` covering the layers.
      content_image: network image ``(1, rows, cols, 3)``: the content target,
        and the output size ``P = rows * cols``.
      style_images: one or more network images (any size).
      content_layers, style_layers: layer names (empty: term off).
      blend_weights: one weight per style image (default equal).
      layer_weights: one weight per style layer (default equal; normalised).
      target_cache, network_key: a mapping that keeps the style images' Gram
        matrices across calls, and what identifies the network (``style_grams``).
      extra_terms: ``(name, weight, term)`` triples added to the loss
        (``Objective.extra``), e.g. ``temporal.TemporalTerm``.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown loss normalization {normalization!r}")
    if isinstance(style_images, (np.ndarray, tf.Tensor)):
        style_images = [style_images]
    pixels = float(content_image.shape[1] * content_image.shape[2])
    objective = Objective(extractor, None, None,
                          (content_weight, style_weight, total_variation_weight), jit_compile)
    if content_layers or style_layers:
        content_feats = objective.features(tf.constant(content_image))
    if content_layers:
        objective.content = ContentTerm.build(
            {k: content_feats[k][0] for k in content_layers}, normalization, pixels)
    if style_layers:
        out_positions = {k: int(content_feats[k].shape[1]) * int(content_feats[k].shape[2])
                         for k in style_layers}
        grams = [style_grams(objective, s, out_positions, normalization, target_cache,
                             network_key) for s in style_images]
        objective.style = StyleTerm.build(
            None, normalization, out_positions, pixels, blend_weights, layer_weights,
            content_feats, grams=grams)
    objective.tv = TotalVariationTerm.build(content_image, normalization)
    objective.extra = [(name, float(weight), term) for name, weight, term in extra_terms]
    return objective
