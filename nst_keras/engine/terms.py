"""The loss terms: one contract, and the keras.io terms that follow it.

The term functions are the keras.io tutorial's, term for term (names from
Gatys et al. 2015):

* ``content_loss``: sum of squared differences of one layer's features.
* ``gram_matrix``: feature correlations ``G = F^T F`` of a ``(rows, cols,
  channels)`` feature map, ``F`` of shape ``(rows*cols, channels)``.
* ``style_loss``: ``sum((G_style - G_comb)^2) / (4 * 3^2 * (rows*cols)^2)``
  where rows, cols are the *output image* size and 3 its channels (keras.io's
  normalisation; the paper uses each layer's own N_l, M_l instead).
* ``total_variation_loss``: ``sum((a + b)^1.25)`` with ``a``, ``b`` the
  squared vertical and horizontal neighbour differences (not in the paper;
  keras.io adds it for smoothness).

The contract (``Term``).  Every term is a function of *sums over
positions*, so the objective can be evaluated on the whole image or tile by
tile by one mechanism (``objective.Objective``, ``tiling.TiledObjective``):

* ``sums(features, image, inputs, part)``: a nest of tensors that adds over
  any partition of the positions -- the raw Gram matrices ``F^T F`` of the
  style layers, each content layer's ``||F - P||^2``, the total variation's
  ``sum((a + b)^1.25)``.  ``part`` cuts feature maps and images down to the
  positions a tile owns (``Part``; the identity for the whole image).
* ``finish(sums)``: the term's value from the summed nest (factors,
  normalisation, the distance to the style's statistics).
* ``inputs(region)``: what ``sums`` needs that lives at positions (the
  content targets ``P_l``, a film's warped frames), cut to the region, so
  that compiled code takes it as an argument; ``{}`` for most terms.
* ``layers``: the network layers it reads (empty: the image only);
  ``tileable``: whether sums over tiles give it exactly (a term that cannot
  be tiled says so here and a tiled run stops in one line).

A term's value on the whole image is ``finish(sums(...))`` (``value``).
Each term holds its targets and its normalisation, as per-layer factors of
one comparison shape:

* ``ContentTerm``: ``mean_l  c_l * ||F_l(x) - P_l||^2``;
* ``StyleTerm``: ``sum_l  w_l * c_l * ||A_l - G_l(x) / n_l||^2``;
* ``TotalVariationTerm``: ``c * tv(x)``.

Four normalisations fill in the factors (``--loss_normalization``):

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
  pairing.

``gap_total``
  as ``scaled``, with the whole style term measured in units of the photo's
  total distance from the painting: ``c_l = P / (||A_l||^2 * D)`` with
  ``D = sum_l w_l ||A_l - G_l(photo) / n_l||^2 / ||A_l||^2``, so the style
  term starts at exactly ``P`` at the photo (as under ``gap``) while each
  layer keeps the share ``scaled`` gives it.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from nst_keras import settings

NORMALIZATIONS = settings.LOSS_NORMALIZATIONS
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


def squared_norm(x) -> tf.Tensor:
    return tf.maximum(tf.reduce_sum(tf.square(tf.cast(x, tf.float32))), _EPS)


# --------------------------------------------------------------------------
# The contract


class Part:
    """The positions a term sums over: the whole image, or one tile's.

    ``features(x, layer)`` cuts a feature map of the crop (``(1, h, w, c)``,
    or a target map aligned with it) to the positions summed;
    ``window(x, before, after)`` cuts an image-space map aligned with the
    image window the term is given to the tile's interior widened by
    ``before`` pixels before and ``after`` after (clipped at the window).

    Args:
      inner: ``int32 [top, bottom, left, right]`` of the interior in crop
        coordinates, or ``None`` (every position: the whole image, or pass 2
        of a tile, whose gradient at the interior needs the whole crop).
      strides: ``{layer: stride}``.
      box: ``int32 [top, bottom, left, right]`` of the interior in the image
        window's coordinates (``None``: the whole window).
    """

    def __init__(self, inner=None, strides: Optional[Mapping[str, int]] = None, box=None):
        self.inner, self.strides, self.box = inner, strides or {}, box

    def features(self, x, layer: str):
        if self.inner is None:
            return x
        s, i = self.strides[layer], self.inner
        return x[:, i[0] // s:i[1] // s, i[2] // s:i[3] // s, :]

    def window(self, x, before: int = 0, after: int = 0):
        if self.box is None:
            return x
        b = self.box
        return x[:, tf.maximum(b[0] - before, 0):b[1] + after,
                 tf.maximum(b[2] - before, 0):b[3] + after, :]


WHOLE = Part()


def _static(value):
    """A hashable form of a static setting (dicts as sorted pairs)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, _static(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_static(v) for v in value)
    return value


class Pictures:
    """The network images a term computes its targets from.

    Args:
      content: the photo ``(1, rows, cols, 3)`` float32: the content target
        and the output's size (``pixels = rows * cols``).
      styles: the paintings, network images of any size.
      masks: ``(1, rows, cols, 1)`` float32 in 0..1, one per painting (a style
        per region), or ``None``.
    """

    def __init__(self, content, styles: Sequence, masks: Optional[Sequence] = None):
        self.content = np.asarray(content, np.float32)
        self.styles = [np.asarray(s, np.float32) for s in styles]
        self.masks = None if masks is None else [np.asarray(m, np.float32) for m in masks]

    @property
    def pixels(self) -> float:
        return float(self.content.shape[1] * self.content.shape[2])


class Term:
    """One term of the objective (see the module docstring for the contract).

    Attributes:
      name: the key its value is reported under (``content_loss``, ...).
      layers: the network layers it reads; empty for an image-space term.
      tileable: whether ``sums`` over tiles add up to the whole image's
        (``untileable``: the refusal of a tiled run, "... cannot be tiled (why)").
      weight_field: the ``Config`` field holding its weight (empty for a term
        a command adds itself, such as a film's temporal term).
    """

    name = "term"
    layers: Tuple[str, ...] = ()
    tileable = True
    untileable = ""
    weight_field = ""
    # The attributes holding the term's numbers (targets, factors, masks): an
    # objective that is reused for another picture of the same shape assigns
    # them (``objective.Objective.adopt``), so every number the step reads is
    # one of them; ``static_names``: the settings baked into the compiled step
    # (in ``signature``: a reused objective must share them).
    state_names: Tuple[str, ...] = ()
    static_names: Tuple[str, ...] = ()

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        """Whether ``config`` asks for this term (``masked``: a style per region)."""
        return False

    @classmethod
    def from_config(cls, config, pictures: Pictures, stats) -> "Term":
        """The term of ``config`` for ``pictures``, its targets computed through
        ``stats`` (``objective.WholeImage`` or ``tiling.TiledImage``: the same
        statistics on the whole image or summed over tiles)."""
        raise NotImplementedError

    # Steps that share one random draw (``at_step``); None: the term draws nothing.
    # L-BFGS sets it above 1 (``Objective.hold_draws``): its line search and
    # curvature pairs need one fixed function, so it restarts at each new draw.
    hold: Optional[int] = None

    def at_step(self, step: int) -> None:
        """Called before the evaluations of optimiser step ``step`` (a term that
        draws random directions draws them from the step)."""

    def signature(self) -> tuple:
        """What a reused objective must share with this term (besides its state's
        shapes): the class, name, layers and static settings."""
        return (type(self).__name__, self.name, tuple(self.layers),
                tuple(_static(getattr(self, n)) for n in self.static_names))

    def inputs(self, region=None):
        """Per-position inputs of ``sums`` for ``region`` (``tiling.Region``;
        ``None``: the whole image).  Computed outside compiled code."""
        return {}

    def sums(self, features: Features, image, inputs, part: Part):
        raise NotImplementedError

    def finish(self, sums) -> tf.Tensor:
        raise NotImplementedError

    def value(self, features: Features, image) -> tf.Tensor:
        """The term on the whole image (features in any float dtype)."""
        return self.finish(self.sums(features, image, self.inputs(None), WHOLE))


class ContentTerm(Term):
    """``mean_l  c_l * ||F_l(x) - P_l||^2`` over the content layers.

    Args:
      targets: ``{layer: (1, rows', cols', channels)}`` float32 content features
        (``(rows', cols', channels)`` is accepted too).
      factors: ``{layer: c_l}`` (see the module docstring).
    """

    name = "content_loss"
    state_names = ("targets", "factors")

    def __init__(self, targets: Dict[str, tf.Tensor], factors: Dict[str, object]):
        self.targets = {k: v if len(v.shape) == 4 else v[None] for k, v in targets.items()}
        self.factors = factors
        self.layers = tuple(self.targets)

    weight_field = "content_weight"

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return bool(config.active_layers()[0])

    @classmethod
    def from_config(cls, config, pictures: Pictures, stats) -> "ContentTerm":
        layers = config.active_layers()[0]
        return cls.build(stats.features(pictures.content, layers), config.loss_normalization,
                         pictures.pixels)

    @classmethod
    def build(cls, targets: Dict[str, tf.Tensor], normalization: str, pixels: float):
        if normalization in RELATIVE:
            return cls(targets, {k: pixels / squared_norm(v) for k, v in targets.items()})
        return cls(targets, {k: 1.0 for k in targets})

    def inputs(self, region=None):
        if region is None:
            return dict(self.targets)
        return {k: region.crop_of(v, k) for k, v in self.targets.items()}

    def sums(self, features, image, inputs, part):
        return {k: content_loss(part.features(inputs[k], k),
                                part.features(tf.cast(features[k], tf.float32), k))
                for k in self.layers}

    def finish(self, sums) -> tf.Tensor:
        """The term from each layer's ``||F_l(x) - P_l||^2``."""
        total = tf.zeros((), tf.float32)
        for name in self.layers:
            total += self.factors[name] * sums[name]
        return total / float(max(len(self.layers), 1))



class StyleTerm(Term):
    """``sum_l  w_l * c_l * ||A_l - G_l(x) / n_l||^2`` over the style layers.

    Args:
      targets: ``{layer: (channels, channels)}`` target Gram matrices ``A_l``.
      layer_weights: ``{layer: w_l}`` summing to 1.
      factors: ``{layer: c_l}``.
      mean: ``n_l`` is the map's number of positions (Gram of the mean) when
        True, else 1.
      positions: ``{layer: positions of the whole output's map}`` (``n_l``).
    """

    name = "style_loss"
    weight_field = "style_weight"
    state_names = ("targets", "factors")
    static_names = ("mean", "positions", "layer_weights")

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return bool(config.active_layers()[1]) and config.style_loss == "gram" and not masked

    @classmethod
    def from_config(cls, config, pictures: Pictures, stats) -> "StyleTerm":
        """The tutorial's Gram matrices: each painting's through ``stats.style_grams``
        (which a worker's cache may already hold), blended."""
        layers = config.active_layers()[1]
        scaled = config.loss_normalization in RELATIVE
        shapes = stats.shapes(pictures.content, layers)
        out_positions = {k: h * w for k, (h, w) in shapes.items()}
        grams = [stats.style_grams(s, out_positions, scaled) for s in pictures.styles]
        photo = None
        if config.loss_normalization in ("gap", "gap_total"):
            raw = stats.grams(pictures.content, layers)
            photo = {k: raw[k] / float(out_positions[k]) for k in layers}
        return cls.build(config.loss_normalization, out_positions, pictures.pixels, grams,
                         config.style_blend_weights, config.style_layer_weights,
                         photo_grams=photo)

    def __init__(self, targets, layer_weights, factors, mean: bool,
                 positions: Optional[Mapping[str, int]] = None):
        self.targets, self.layer_weights = targets, layer_weights
        self.factors, self.mean = factors, mean
        self.positions = dict(positions or {})
        self.layers = tuple(targets)

    @classmethod
    def build(cls, normalization: str, output_positions: Mapping[str, int], pixels: float,
              grams: Sequence[Dict[str, tf.Tensor]],
              blend_weights: Optional[Sequence[float]] = None,
              layer_weights: Optional[Sequence[float]] = None,
              photo_grams: Optional[Mapping[str, tf.Tensor]] = None):
        """The term from each style image's Gram matrices (``image_grams``).

        ``photo_grams``: the content image's Gram matrices of the mean, which
        ``gap`` and ``gap_total`` need.
        """
        names = list(output_positions)
        scaled = normalization in RELATIVE
        targets = blend_grams(grams, blend_weights or [1.0] * len(grams))
        weights = list(layer_weights) if layer_weights is not None else [1.0] * len(names)
        weights = {k: float(w) / float(sum(weights)) for k, w in zip(names, weights)}
        if normalization == "gap":  # the photo's own distance from the style is 1
            factors = {k: pixels / squared_norm(v - photo_grams[k])
                       for k, v in targets.items()}
        elif normalization == "gap_total":  # ... summed over the layers
            total = tf.add_n([weights[k] * squared_norm(v - photo_grams[k]) / squared_norm(v)
                              for k, v in targets.items()])
            factors = {k: pixels / (squared_norm(v) * total) for k, v in targets.items()}
        elif scaled:
            factors = {k: pixels / squared_norm(v) for k, v in targets.items()}
        else:
            factors = {k: 1.0 / (4.0 * 3**2 * pixels**2) for k in names}
        return cls(targets, weights, factors, mean=scaled, positions=output_positions)

    @staticmethod
    def image_grams(raw_grams: Mapping[str, tf.Tensor], image_positions: Mapping[str, float],
                    output_positions: Mapping[str, int], scaled: bool):
        """One style image's ``{layer: Gram matrix}`` before blending, from its raw
        ``F^T F`` sums: the Gram of the mean (relative normalisations), or keras.io's
        plain Gram rescaled to the output's number of positions (a style image of
        another size than the output, ``--style_scale``)."""
        if scaled:
            return {k: raw_grams[k] / image_positions[k] for k in output_positions}
        return {k: raw_grams[k] * (output_positions[k] / image_positions[k])
                for k in output_positions}

    def sums(self, features, image, inputs, part):
        """Raw ``F^T F`` per layer (float32, from features of any dtype)."""
        return {k: fast_gram_matrix(part.features(features[k], k)[0]) for k in self.layers}

    def finish(self, sums) -> tf.Tensor:
        total = tf.zeros((), tf.float32)
        for name in self.layers:
            gram = sums[name]
            if self.mean:
                gram = gram / float(self.positions[name])
            total += self.distance(name, gram)
        return total

    def distance(self, name: str, gram) -> tf.Tensor:
        """``w_l * c_l * ||A_l - gram||^2``: one layer's share of the term."""
        return self.layer_weights[name] * self.factors[name] * tf.reduce_sum(
            tf.square(self.targets[name] - gram))


class TotalVariationTerm(Term):
    """``c * tv(x)``: ``c = 1`` (keras_io) or ``P / tv(content)`` (scaled).

    Over a tile it sums the differences that start in the interior (the
    window reaches one pixel after it; for the gradient also one before).
    """

    name = "tv_loss"
    weight_field = "total_variation_weight"
    state_names = ("factor",)

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return True

    @classmethod
    def from_config(cls, config, pictures: Pictures, stats) -> "TotalVariationTerm":
        tv = stats.total_variation(pictures.content) \
            if config.loss_normalization in RELATIVE else None
        return cls.build(pictures.content, config.loss_normalization, tv)

    def __init__(self, factor):
        self.factor = factor

    @classmethod
    def build(cls, content_image, normalization: str, tv_of_content=None):
        """``tv_of_content``: ``tv(content)`` when computed already (in tiles)."""
        if normalization in RELATIVE:
            pixels = float(content_image.shape[1] * content_image.shape[2])
            tv = tv_of_content if tv_of_content is not None else \
                total_variation_loss(tf.constant(content_image))
            return cls(pixels / tf.maximum(tv, _EPS))
        return cls(1.0)

    def inputs(self, region=None):
        return {} if region is None else {"before": tf.constant(int(region.gradient))}

    def sums(self, features, image, inputs, part):
        before = inputs.get("before", 0)
        return total_variation_loss(part.window(image, before, 1))

    def finish(self, sums) -> tf.Tensor:
        return self.factor * sums

    def __call__(self, image) -> tf.Tensor:
        return self.value({}, image)
