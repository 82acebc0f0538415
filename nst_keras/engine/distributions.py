"""Style terms that match feature distributions, the colour term, and masks.

All follow the term contract of ``nst_keras.engine.terms``.  Notation: at a
style layer ``l`` the features ``F_l`` are ``n`` positions of ``c`` channels;
a mask ``m`` (0..1 per position, resized to the layer's grid) weighs them.

``WassersteinStyleTerm`` (``--style_loss=wasserstein``; crowsonkb's
style-transfer-pytorch default, after Gatys et al.'s Gram matrices): a
Gaussian is fitted to each layer's features, ``mu = sum m F / sum m`` and
``Sigma = sum m F F^T / sum m - mu mu^T``, and compared with the painting's
by the Wasserstein-2 distance between Gaussians::

    W2^2 = ||mu - mu_s||^2 + tr(Sigma + Sigma_s - 2 (Sigma_s^1/2 Sigma Sigma_s^1/2)^1/2)

Its sums (``sum m``, ``sum m F``, ``sum m F F^T``) add over positions, so
several styles blend (their first and second moments) and tiles add
exactly.  The matrix square root's trace is taken from an eigendecomposition
with an exact gradient, ``d tr(A^1/2) = tr(A^-1/2 dA) / 2``, its eigenvalues
floored at a small fraction of the mean one (``trace_sqrt``).

``SlicedStyleTerm`` (``--style_loss=sliced_wasserstein``; Heitz et al.,
"A Sliced Wasserstein Loss for Neural Texture Synthesis", CVPR 2021): the
features and the painting's are projected on ``K`` random unit directions,
drawn anew at every step from ``(--seed, step)`` (so a resumed run draws the
same ones; under L-BFGS every ``optim.LBFGS_HOLD`` steps, the optimiser
restarting at each draw, since its line search needs one fixed function),
and each output projection is compared with the painting's projection at
the same quantile -- ``mean((p - Q_s(F(p)))^2)``, ``F`` the
output's distribution function and ``Q_s`` the painting's quantile function:
the sorted projections matched rank by rank, with the target held fixed in
the gradient, as the sorted form has it.  ``F`` and ``Q_s`` are read off
cumulative histograms of ``_BINS`` equal bins per direction (each value at a
random place inside its bin, which spreads ties as a sort would), which costs
a pass over the positions instead of a sort (TensorFlow's sort made the
whole step 1.7x the Gram step's at 400 rows); the value is within 3 % of the
sorted form's and the gradient's cosine with it above 0.999
(``tests/test_distributions.py``).  Several paintings' distances are
added with their blend weights.  It needs every position at once: it cannot
be tiled.

``ColorTerm`` (``--color_weight``): the same Wasserstein-2 distance between
Gaussians, on the pixels' colours (network image channels) instead of
features, towards the painting's colours -- the palette, independent of the
network.  ``SlicedColorTerm`` (``--color_loss=sliced``) matches the whole
colour distribution instead, along random directions in colour space.

Normalisation (``--loss_normalization``): ``keras_io`` takes the distances
as they are (averaged over the layers with ``--style_layer_weights``); the
relative normalisations divide each layer by the painting's mean squared
feature ``||mu_s||^2 + tr(Sigma_s)`` (``scaled``), by the photo's own
distance (``gap``) or its share of the total (``gap_total``), and multiply
by ``P`` (output pixels), as the Gram term does.  The colour term is always
measured in units of the photo's own colour distance from the painting
(times ``P`` under the relative normalisations), so weight 1 pulls about as
hard as the photo is far.

Masks (``--style_masks``): style ``k`` is compared with the output's
statistics weighted by its mask ``m_k`` (for the sliced loss: the
distribution of the region's positions, weighted histograms and mean) -- a
guided statistic (Gatys et al., "Controlling Perceptual Factors in Neural
Style Transfer", CVPR 2017) -- and the styles' terms are added with their
blend weights.
"""

from __future__ import annotations

import functools
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from nst_keras.engine.imaging import sqrtm_psd  # the colour transform's too
from nst_keras.engine.terms import RELATIVE, WHOLE, Term, fast_gram_matrix

_FLOOR = 1e-6  # eigenvalues floored at this fraction of the mean eigenvalue


# --------------------------------------------------------------------------
# Moments and the Wasserstein-2 distance between Gaussians


def moments(x, mask=None) -> Dict[str, tf.Tensor]:
    """``{"n", "s1", "s2"}``: ``sum m``, ``sum m x`` and ``sum m x x^T`` (float32) of a
    ``(1, h, w, c)`` map, weighted by a ``(1, h, w, 1)`` mask (``None``: 1)."""
    x = tf.cast(x, tf.float32) if mask is not None else x
    flat = tf.reshape(x, (-1, tf.shape(x)[-1]))
    if mask is None:
        f32 = tf.cast(flat, tf.float32)
        return {"n": tf.cast(tf.shape(flat)[0], tf.float32), "s1": tf.reduce_sum(f32, 0),
                "s2": fast_gram_matrix(x[0])}
    m = tf.reshape(tf.cast(mask, tf.float32), (-1, 1))
    weighted = flat * m
    return {"n": tf.reduce_sum(m), "s1": tf.reduce_sum(weighted, 0),
            "s2": tf.matmul(weighted, flat, transpose_a=True)}


def gaussian(sums) -> tuple:
    """``(mu, Sigma)`` from ``moments``' sums, in float64 (the covariance is a
    difference of nearby numbers)."""
    n = tf.maximum(tf.cast(sums["n"], tf.float64), 1e-12)
    mu = tf.cast(sums["s1"], tf.float64) / n
    return mu, tf.cast(sums["s2"], tf.float64) / n - mu[:, None] * mu[None, :]


@tf.custom_gradient
def trace_sqrt(a):
    """``tr(A^1/2)`` of a symmetric positive semi-definite float64 ``A``, with
    eigenvalues floored at ``_FLOOR`` times their mean, and its exact gradient
    ``A^-1/2 / 2`` (of the floored matrix)."""
    values, vectors = tf.linalg.eigh((a + tf.transpose(a)) / 2.0)
    floor = _FLOOR * tf.maximum(tf.reduce_mean(tf.abs(values)), 1e-30)
    roots = tf.sqrt(tf.maximum(values, floor))

    def grad(upstream):
        return upstream * tf.matmul(vectors * (0.5 / roots), vectors, transpose_b=True)

    return tf.reduce_sum(roots), grad


def gaussian_target(mean, second) -> Dict[str, tf.Tensor]:
    """A target Gaussian from a mean and a second moment ``E[x x^T]``:
    ``{"mu": mu_s, "root": Sigma_s^1/2, "trace": tr(Sigma_s)}`` (float64 tensors,
    the numbers a term holds in its state)."""
    mean, second = np.asarray(mean, np.float64), np.asarray(second, np.float64)
    cov = second - np.outer(mean, mean)
    return {"mu": tf.constant(mean, tf.float64), "root": tf.constant(sqrtm_psd(cov), tf.float64),
            "trace": tf.constant(float(np.trace(cov)), tf.float64)}


def blended_gaussian(sums_list: Sequence[Mapping], weights: Sequence[float]):
    """``gaussian_target`` of the blend of several pictures' moments (weights normalised)."""
    total = float(sum(weights))
    mean = sum(w / total * (s["s1"].numpy().astype(np.float64) / float(s["n"]))
               for s, w in zip(sums_list, weights))
    second = sum(w / total * (s["s2"].numpy().astype(np.float64) / float(s["n"]))
                 for s, w in zip(sums_list, weights))
    return gaussian_target(mean, second)


def energy(target: Mapping[str, tf.Tensor]) -> float:
    """``E ||x||^2 = ||mu_s||^2 + tr(Sigma_s)`` of a ``gaussian_target``."""
    return float(tf.reduce_sum(tf.square(target["mu"])) + target["trace"])


def w2_squared(sums, target: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """Wasserstein-2 distance squared between the Gaussian of ``sums`` and ``target``."""
    mu, sigma = gaussian(sums)
    root = target["root"]
    cross = tf.matmul(tf.matmul(root, sigma), root)
    return tf.cast(tf.reduce_sum(tf.square(mu - target["mu"])) + tf.linalg.trace(sigma) +
                   target["trace"] - 2.0 * trace_sqrt(cross), tf.float32)


def w2_squared_value(sums, target: Mapping[str, tf.Tensor]) -> float:
    """``w2_squared`` as a number, for a term's scale: the same floored square root,
    from the eigenvalues alone (no eigenvectors: no gradient needed), in NumPy."""
    # ``gaussian`` in NumPy: the same float64 operations without eager TensorFlow calls.
    n = max(float(sums["n"]), 1e-12)
    mu = sums["s1"].numpy().astype(np.float64) / n
    sigma = sums["s2"].numpy().astype(np.float64) / n - mu[:, None] * mu[None, :]
    root = target["root"].numpy()
    cross = root @ sigma @ root
    values = np.linalg.eigvalsh((cross + cross.T) / 2.0)
    floor = _FLOOR * max(float(np.mean(np.abs(values))), 1e-30)
    roots = np.sqrt(np.maximum(values, floor)).sum()
    return float(np.float32(np.sum(np.square(mu - target["mu"].numpy())) + np.trace(sigma) +
                            float(target["trace"]) - 2.0 * roots))


# --------------------------------------------------------------------------
# Masks


def layer_masks(masks: Optional[Sequence[np.ndarray]], shapes: Mapping[str, tuple]):
    """``{layer: [(1, h, w, 1) float32 per style]}``: each output-size mask (``(1,
    rows, cols, 1)``, 0..1) resized to the layer's grid by area (``None``: no masks)."""
    if masks is None:
        return None
    return {k: [tf.image.resize(tf.constant(m, tf.float32), shape, method="area")
                for m in masks] for k, shape in shapes.items()}


def _mask_inputs(masks, region, key=None):
    """A term's per-position masks cut to a tile's region (``None``: whole image)."""
    if masks is None:
        return {}
    if region is None:
        return {"masks": masks}
    if key is None:  # pixel masks
        return {"masks": [region.window_of(m) for m in masks]}
    return {"masks": {k: [region.crop_of(m, k) for m in ms] for k, ms in masks.items()}}


# --------------------------------------------------------------------------
# The terms


def _factors(normalization: str, targets, photo_distance, weights, pixels: float):
    """Per-layer factors (the module docstring's normalisation)."""
    if normalization == "gap":
        return {k: pixels / max(photo_distance[k], 1e-12) for k in targets}
    if normalization == "gap_total":
        total = sum(weights[k] * photo_distance[k] / energy(targets[k]) for k in targets)
        return {k: pixels / (energy(targets[k]) * max(total, 1e-12)) for k in targets}
    if normalization in RELATIVE:
        return {k: pixels / max(energy(targets[k]), 1e-12) for k in targets}
    return {k: 1.0 for k in targets}


class WassersteinStyleTerm(Term):
    """``sum_k b_k sum_l w_l c_l W2^2(F_l(x) over m_k, style k)`` (module docstring).

    Args:
      targets: ``[{layer: gaussian_target}]``, one per mask (one blended without masks).
      layer_weights, factors: ``{layer: w_l}``, ``{layer: c_l}``.
      masks: ``layer_masks`` of the output, or ``None``.
      region_weights: ``b_k`` per mask (normalised blend weights).
    """

    name = "style_loss"
    weight_field = "style_weight"
    state_names = ("targets", "factors", "masks")
    static_names = ("layer_weights", "region_weights")

    def __init__(self, targets: List[Dict[str, Dict[str, tf.Tensor]]], layer_weights, factors,
                 masks=None, region_weights=(1.0,)):
        self.targets, self.layer_weights, self.factors = targets, layer_weights, factors
        self.masks, self.region_weights = masks, tuple(region_weights)
        self.layers = tuple(targets[0])

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return bool(config.active_layers()[1]) and config.style_loss == "wasserstein"

    @classmethod
    def from_config(cls, config, pictures, stats) -> "WassersteinStyleTerm":
        s = _StyleSetup(config, pictures, stats)

        def paintings():  # the same for every photo of a batch: kept by a worker's cache
            styles = [stats.moments(p, s.layers) for p in pictures.styles]
            if s.masks is None:
                return [{k: blended_gaussian([m[k] for m in styles], s.blend)
                         for k in s.layers}]
            return [{k: blended_gaussian([m[k]], [1.0]) for k in s.layers} for m in styles]

        targets = stats.kept("gaussians", pictures.styles,
                             (tuple(s.layers), tuple(s.blend), s.masks is None), paintings)
        region_weights = (1.0,) if s.masks is None else s.blend
        photo = s.photo_moments()
        factors = _w2_factors(s.normalization, targets, photo, s.weights, s.pixels)
        return cls(targets, s.weights, factors, s.masks, region_weights)

    def inputs(self, region=None):
        return _mask_inputs(self.masks, region, key="layers")

    def sums(self, features, image, inputs, part):
        masks = inputs.get("masks")
        out = []
        for index in range(len(self.targets)):
            out.append({k: moments(part.features(features[k], k), None if masks is None else
                                   part.features(masks[k][index], k)) for k in self.layers})
        return out

    def finish(self, sums) -> tf.Tensor:
        total = tf.zeros((), tf.float32)
        for b, region, targets in zip(self.region_weights, sums, self.targets):
            for k in self.layers:
                total += b * self.layer_weights[k] * self.factors[k] * w2_squared(
                    region[k], targets[k])
        return total


class ColorTerm(Term):
    """``c * sum_k b_k W2^2(pixels of x over m_k, painting k's pixels)``."""

    name = "color_loss"
    weight_field = "color_weight"
    state_names = ("targets", "factor", "masks")
    static_names = ("region_weights",)

    def __init__(self, targets: List[Dict[str, tf.Tensor]], factor, masks=None, region_weights=(1.0,)):
        self.targets, self.factor = targets, factor
        self.masks, self.region_weights = masks, tuple(region_weights)

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return config.color_weight > 0 and config.color_loss == "gaussian"

    @classmethod
    def from_config(cls, config, pictures, stats) -> "ColorTerm":
        """Towards the paintings' pixels (network images), in units of the photo's own
        colour distance from them."""
        blend = _normalised(config.style_blend_weights, len(pictures.styles))
        styles = [moments(tf.constant(p)) for p in pictures.styles]
        photo_pixels = tf.constant(pictures.content)
        if pictures.masks is None:
            targets, weights = [blended_gaussian(styles, blend)], (1.0,)
            photo, masks = [moments(photo_pixels)], None
        else:
            targets, weights = [blended_gaussian([m], [1.0]) for m in styles], blend
            masks = [tf.constant(m, tf.float32) for m in pictures.masks]
            photo = [moments(photo_pixels, m) for m in masks]
        distance = sum(b * w2_squared_value(p, t) for b, p, t in zip(weights, photo, targets))
        scale = pictures.pixels if config.loss_normalization in RELATIVE else 1.0
        return cls(targets, scale / max(distance, 1e-12), masks, weights)

    def inputs(self, region=None):
        return _mask_inputs(self.masks, region)

    def sums(self, features, image, inputs, part):
        masks = inputs.get("masks")
        window = part.window(image)
        return [moments(window, None if masks is None else part.window(masks[i]))
                for i in range(len(self.targets))]

    def finish(self, sums) -> tf.Tensor:
        total = tf.zeros((), tf.float32)
        for b, region, target in zip(self.region_weights, sums, self.targets):
            total += b * w2_squared(region, target)
        return self.factor * total


class _Drawing(Term):
    """A term that draws random directions from ``(seed, draw)``, ``draw`` the step
    divided by ``hold`` (``Term.hold``), so a resumed run draws the same ones."""

    hold = 1

    def _start_drawing(self, seed: int) -> None:
        self.seed = int(seed)
        self.draw = tf.Variable(0, dtype=tf.int64, trainable=False)

    def at_step(self, step: int) -> None:
        self.draw.assign(int(step) // self.hold)

    def _seed(self, stream: int) -> tf.Tensor:
        """The stateless seed of one stream of this draw."""
        return tf.stack([tf.constant(self.seed * 131 + stream, tf.int64), self.draw])

    def _directions(self, stream: int, channels: int, count: int) -> tf.Tensor:
        """``(channels, count)`` random unit directions of this draw."""
        d = tf.random.stateless_normal((channels, count), self._seed(stream), dtype=tf.float32)
        return d / tf.norm(d, axis=0, keepdims=True)


class SlicedStyleTerm(_Drawing):
    """``sum_k b_k sum_l w_l c_l mean((sort(F_l D) - Q_kl(D))^2)`` over random unit
    directions ``D`` (``Q_kl``: painting ``k``'s sorted projections at the output's
    quantiles).

    Args:
      style_features: ``[{layer: (n_s, c) float32}]``, one per painting.
      layer_weights, factors: as ``WassersteinStyleTerm``.
      directions: ``K``; ``seed``: with the step, what draws them.
      region_weights: ``b_k`` (normalised blend weights).
      masks: ``layer_masks`` of the output (painting ``k`` is matched by the
        output's distribution weighted by ``m_k``: weighted histograms and a
        weighted mean), or ``None``.
    """

    name = "style_loss"
    weight_field = "style_weight"
    tileable = False
    untileable = ("--style_loss=sliced_wasserstein cannot be tiled (it ranks every position "
                  "at once; --style_loss=wasserstein tiles)")
    state_names = ("style_features", "factors", "masks")
    static_names = ("layer_weights", "directions", "seed", "region_weights")

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return bool(config.active_layers()[1]) and config.style_loss == "sliced_wasserstein"

    @classmethod
    def from_config(cls, config, pictures, stats) -> "SlicedStyleTerm":
        s = _StyleSetup(config, pictures, stats)
        styles = [{k: tf.reshape(f[k], (-1, f[k].shape[-1])) for k in s.layers}
                  for f in (stats.features(p, s.layers) for p in pictures.styles)]
        energies = {k: sum(b * float(tf.reduce_mean(tf.reduce_sum(tf.square(m[k]), 1)))
                           for b, m in zip(s.blend, styles)) for k in s.layers}
        relative = s.normalization in RELATIVE
        factors = {k: s.pixels / max(energies[k], 1e-12) if relative else 1.0 for k in s.layers}
        term = cls(styles, s.weights, factors, config.sliced_directions, config.seed, s.blend,
                   s.masks)
        if s.normalization in ("gap", "gap_total"):  # the photo's own distance, at draw 0
            photo = term.sums(stats.features(pictures.content, s.layers), None,
                              term.inputs(None), WHOLE)
            single = {k: float(v) for k, v in term.layer_distances(photo).items()}
            term.factors = _gap_factors(s.normalization, single, energies, s.weights, s.pixels)
        return term

    def __init__(self, style_features, layer_weights, factors, directions: int, seed: int,
                 region_weights=(1.0,), masks=None):
        self.style_features, self.layer_weights = style_features, layer_weights
        self.factors, self.directions = factors, int(directions)
        self.region_weights, self.masks = tuple(region_weights), masks
        self.layers = tuple(style_features[0])
        self._start_drawing(seed)

    def inputs(self, region=None):
        return _mask_inputs(self.masks, region, key="layers")

    def sums(self, features, image, inputs, part):
        """``({layer: (n, c) features}, {layer: [(n,) weights per painting]} or None)``."""
        flats = {k: tf.reshape(tf.cast(part.features(features[k], k), tf.float32),
                               (-1, features[k].shape[-1])) for k in self.layers}
        masks = inputs.get("masks")
        weights = None if masks is None else {
            k: [tf.reshape(part.features(m, k), (-1,)) for m in masks[k]] for k in self.layers}
        return flats, weights

    def layer_distances(self, sums) -> Dict[str, tf.Tensor]:
        """``{layer: sum_k b_k mean_{m_k}((p - Q_k(F_k(p)))^2)}``, before the factors."""
        flats, weights = sums
        out = {}
        for index, k in enumerate(self.layers):
            flat = flats[k]
            d = self._directions(index, int(flat.shape[-1]), self.directions)
            out[k] = sliced_distance(d, flat, [style[k] for style in self.style_features],
                                     self.region_weights, self._seed(64 + index),
                                     None if weights is None else weights[k])
        return out

    def finish(self, sums) -> tf.Tensor:
        total = tf.zeros((), tf.float32)
        for k, distance in self.layer_distances(sums).items():
            total += self.layer_weights[k] * self.factors[k] * distance
        return total


_BINS = 4096  # histogram bins per direction (F and Q_s of SlicedStyleTerm)
_LEVELS = 4096  # quantile levels tabulated for Q_s


def _row_gather(table, index):
    """``table[r, index[r, j]]`` for a ``(K, w, ...)`` table and ``(K, n)`` indices."""
    if table.shape.is_fully_defined():  # the usual case: offsets as one constant
        rows, width = table.shape[0], table.shape[1]
        flat = tf.reshape(table, [-1, *table.shape[2:]])
        return tf.gather(flat, index + np.arange(rows, dtype=np.int32)[:, None] * width)
    rows, width = tf.shape(table)[0], tf.shape(table)[1]
    flat = tf.reshape(table, tf.concat([[-1], tf.shape(table)[2:]], 0))
    return tf.gather(flat, index + tf.range(rows)[:, None] * width)


def _histogram(values, bins: int = _BINS, weights=None):
    """Per row of ``(K, n)`` values: ``(low, width, cdf, bin, position)`` -- equal bins
    from the row's min to max, ``cdf`` ``(K, bins + 1)`` the fraction below each edge
    (of the ``(n,)`` ``weights``' total, if given)."""
    low = tf.reduce_min(values, 1, keepdims=True)
    width = tf.maximum(tf.reduce_max(values, 1, keepdims=True) - low, 1e-30) / bins
    position = (values - low) / width
    where = tf.clip_by_value(tf.cast(tf.floor(position), tf.int32), 0, bins - 1)
    rows = tf.shape(values)[0]
    ids = tf.reshape(where + tf.range(rows)[:, None] * bins, [-1])
    if weights is None:
        # The kernel itself: tf.math.bincount adds a pass for the largest id
        # and a dozen operations to the traced step (the size is known here).
        counts = tf.cast(tf.raw_ops.DenseBincount(
            input=ids, size=rows * bins, weights=tf.zeros([0], tf.int32),
            binary_output=False), tf.float32)
        total = tf.cast(tf.shape(values)[1], tf.float32)
    else:
        counts = tf.math.unsorted_segment_sum(tf.reshape(tf.tile(
            tf.cast(weights, tf.float32)[None], [rows, 1]), [-1]), ids, rows * bins)
        total = tf.maximum(tf.reduce_sum(tf.cast(weights, tf.float32)), 1e-12)
    cdf = tf.concat([tf.zeros((rows, 1)), tf.cumsum(tf.reshape(counts, (rows, bins)), 1)],
                    1) / total
    return low, width, cdf, where, position


def sliced_distance(d, flat, paintings, blend, seed, weights=None) -> tf.Tensor:
    """``sum_k b_k matched_distance`` of ``(n, c)`` values against each painting's
    ``(n_s, c)``, projected on the ``(c, K)`` directions ``d`` (``weights``: one
    ``(n,)`` mask per painting, or ``None``)."""
    mine = tf.matmul(d, flat, transpose_a=True, transpose_b=True)  # (K, n)
    grid = _histogram(tf.stop_gradient(mine)) if weights is None else None
    return tf.add_n([b * matched_distance(
        mine, tf.matmul(d, painting, transpose_a=True, transpose_b=True), seed, grid,
        None if weights is None else weights[i])
        for i, (b, painting) in enumerate(zip(blend, paintings))])


def matched_distance(mine, style, seed, grid=None, weights=None) -> tf.Tensor:
    """``mean((p - Q_s(F(p)))^2)`` of ``(K, n)`` projections against a painting's
    ``(K, n_s)``, the target held fixed (``grid``: ``mine``'s ``_histogram``;
    ``seed``: ``transport``'s).  ``weights`` (``(n,)``, a mask): ``F`` and the mean
    weighted by them, the distance of the masked region's distribution."""
    if grid is None:
        grid = _histogram(tf.stop_gradient(mine), weights=weights)
    target = tf.stop_gradient(transport(grid, quantile_table(style), seed))
    if weights is None:
        return tf.reduce_mean(tf.square(mine - target))
    return tf.reduce_sum(tf.square(mine - target) * weights) / (
        tf.maximum(tf.reduce_sum(weights), 1e-12) * tf.cast(tf.shape(mine)[0], tf.float32))


def transport(grid, table, seed) -> tf.Tensor:
    """``Q_s(F(p))`` for the values of a ``_histogram`` ``grid``: the map taken at the
    bin edges (``Q_s`` of the fractions below them), each value at a place drawn
    uniformly inside its bin (``seed``: a stateless seed).  Drawn rather than read off
    the value, so equal values (a flat region) spread over their quantiles as a sort
    that breaks ties would spread them, instead of all taking one target."""
    _, _, cdf, where, _ = grid
    edges = at_levels(table, cdf)  # (K, bins + 1)
    at = _row_gather(tf.stack([edges[:, :-1], edges[:, 1:] - edges[:, :-1]], -1), where)
    return at[..., 0] + tf.random.stateless_uniform(tf.shape(where), seed) * at[..., 1]


@functools.lru_cache(maxsize=None)
def _unit_levels(levels: int) -> np.ndarray:
    """``tf.linspace(0, 1, levels + 1)``'s values, computed once: one constant in a
    traced step instead of the 74 operations of a traced ``tf.linspace``."""
    with tf.init_scope():
        return tf.linspace(0.0, 1.0, levels + 1).numpy()


def quantile_table(values, levels: int = _LEVELS) -> tf.Tensor:
    """``Q(u)`` of each row at ``u = 0, 1/levels, ..., 1`` (``(K, levels + 1)``)."""
    low, width, cdf, _, _ = _histogram(values)
    rows = tf.shape(values)[0]
    u = tf.tile(_unit_levels(levels)[None], [rows, 1])
    j = tf.clip_by_value(tf.searchsorted(cdf, u, side="right") - 1, 0, _BINS - 1)
    below, above = tf.gather(cdf, j, batch_dims=1), tf.gather(cdf, j + 1, batch_dims=1)
    inside = tf.where(above > below, (u - below) / tf.maximum(above - below, 1e-30), 0.5)
    return low + (tf.cast(j, tf.float32) + inside) * width


def at_levels(table, u) -> tf.Tensor:
    """``Q(u)`` by linear interpolation in a ``quantile_table``."""
    levels = int(table.shape[1]) - 1
    where = tf.clip_by_value(u, 0.0, 1.0) * levels
    i = tf.clip_by_value(tf.cast(tf.floor(where), tf.int32), 0, levels - 1)
    steps = _row_gather(tf.stack([table[:, :-1], table[:, 1:] - table[:, :-1]], -1), i)
    return steps[..., 0] + (where - tf.cast(i, tf.float32)) * steps[..., 1]


class GuidedGramTerm(Term):
    """Gram matrices over masked regions: ``sum_k b_k sum_l w_l c_kl ||A_kl - G_l(x; m_k)/n||^2``.

    ``G_l(x; m_k) = sum m_k F F^T`` and ``n = sum m_k`` (relative normalisations: the
    region's Gram of the mean against the painting's); under ``keras_io`` the
    painting's Gram of the mean times ``n`` against ``G_l`` (the tutorial's plain
    Gram matrices, rescaled to the region as to the output without masks).
    """

    name = "style_loss"
    weight_field = "style_weight"
    state_names = ("targets", "factors", "masks")
    static_names = ("layer_weights", "region_weights", "mean")

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return bool(config.active_layers()[1]) and config.style_loss == "gram" and masked

    @classmethod
    def from_config(cls, config, pictures, stats) -> "GuidedGramTerm":
        s = _StyleSetup(config, pictures, stats)
        styles = [stats.moments(p, s.layers) for p in pictures.styles]
        photo = s.photo_moments()
        targets = [{k: m[k]["s2"] / m[k]["n"] for k in s.layers} for m in styles]
        factors = []
        for target, region in zip(targets, photo):
            norms = {k: float(tf.reduce_sum(tf.square(target[k]))) for k in s.layers}
            if s.normalization in ("gap", "gap_total"):
                gaps = {k: float(tf.reduce_sum(tf.square(target[k] - region[k]["s2"] /
                                                         region[k]["n"]))) for k in s.layers}
                factors.append(_gap_factors(s.normalization, gaps, norms, s.weights, s.pixels))
            elif s.normalization in RELATIVE:
                factors.append({k: s.pixels / max(norms[k], 1e-12) for k in s.layers})
            else:
                factors.append({k: 1.0 / (4.0 * 3**2 * s.pixels**2) for k in s.layers})
        return cls(targets, s.weights, factors, s.masks, s.blend,
                   s.normalization in RELATIVE)

    def __init__(self, targets, layer_weights, factors, masks, region_weights, mean: bool):
        self.targets, self.layer_weights, self.factors = targets, layer_weights, factors
        self.masks, self.region_weights, self.mean = masks, tuple(region_weights), mean
        self.layers = tuple(targets[0])

    def inputs(self, region=None):
        return _mask_inputs(self.masks, region, key="layers")

    def sums(self, features, image, inputs, part):
        masks = inputs["masks"]
        return [{k: moments(part.features(features[k], k), part.features(masks[k][i], k))
                 for k in self.layers} for i in range(len(self.targets))]

    def finish(self, sums) -> tf.Tensor:
        total = tf.zeros((), tf.float32)
        for i, (b, region) in enumerate(zip(self.region_weights, sums)):
            for k in self.layers:
                n = tf.maximum(region[k]["n"], 1e-12)
                gram, target = region[k]["s2"], self.targets[i][k]
                diff = target - gram / n if self.mean else target * n - gram
                total += b * self.layer_weights[k] * self.factors[i][k] * tf.reduce_sum(
                    tf.square(diff))
        return total


# --------------------------------------------------------------------------
# What the style terms' targets are built from


def _normalised(weights, count: int) -> List[float]:
    weights = list(weights) if weights is not None else [1.0] * count
    return [float(w) / float(sum(weights)) for w in weights]


class _StyleSetup:
    """What every distribution style term reads from the settings and pictures: the
    layers and their weights, the blend, the masks at each layer's grid."""

    def __init__(self, config, pictures, stats):
        self.layers = config.active_layers()[1]
        self.normalization, self.pixels = config.loss_normalization, pictures.pixels
        self.weights = dict(zip(self.layers, _normalised(config.style_layer_weights,
                                                         len(self.layers))))
        self.blend = _normalised(config.style_blend_weights, len(pictures.styles))
        self.pictures, self.stats = pictures, stats
        self.masks = None if pictures.masks is None else layer_masks(
            pictures.masks, stats.shapes(pictures.content, self.layers))

    def photo_moments(self) -> List[Dict]:
        """The photo's moments per region (one region without masks)."""
        regions = [None] if self.masks is None else [
            {k: self.masks[k][i] for k in self.layers} for i in range(len(self.pictures.masks))]
        return [self.stats.moments(self.pictures.content, self.layers, r) for r in regions]


def _w2_factors(normalization, targets, photo, w, pixels):
    """One factor per layer, from the first region (the blend without masks)."""
    distance = {k: sum(w2_squared_value(p[k], t[k]) for p, t in zip(photo, targets)) /
                len(targets) for k in targets[0]}
    return _factors(normalization, targets[0], distance, w, pixels)


def _gap_factors(normalization, gaps, norms, w, pixels):
    """``gap``: ``P / gap_l``; ``gap_total``: ``P / (norm_l * sum_l w_l gap_l / norm_l)``."""
    if normalization == "gap":
        return {k: pixels / max(gaps[k], 1e-12) for k in gaps}
    total = sum(w[k] * gaps[k] / norms[k] for k in gaps)
    return {k: pixels / max(norms[k] * total, 1e-12) for k in gaps}


class SlicedColorTerm(_Drawing):
    """``c * sum_k b_k mean_{m_k}((p - Q_k(F(p)))^2)`` over the pixels' projections on
    ``K`` random directions in colour space (``--color_loss=sliced``): the whole
    colour distribution, as ``SlicedStyleTerm`` matches features, its directions
    drawn from ``(seed, step)`` the same way (fixed directions would not do: a
    picture can match any few projections of a 3-D distribution and still miss
    the others)."""

    name = "color_loss"
    weight_field = "color_weight"
    tileable = False
    untileable = ("--color_loss=sliced cannot be tiled (it ranks every pixel at once; "
                  "--color_loss=gaussian tiles)")
    state_names = ("paintings", "factor", "masks")
    static_names = ("count", "seed", "region_weights")

    @classmethod
    def selected(cls, config, masked: bool) -> bool:
        return config.color_weight > 0 and config.color_loss == "sliced"

    @classmethod
    def from_config(cls, config, pictures, stats) -> "SlicedColorTerm":
        """Towards the paintings' pixels, in units of the photo's own distance (at
        draw 0), as ``ColorTerm``."""
        paintings = [tf.reshape(tf.constant(p, tf.float32), (-1, 3)) for p in pictures.styles]
        masks = None if pictures.masks is None else [tf.constant(m, tf.float32)
                                                     for m in pictures.masks]
        blend = _normalised(config.style_blend_weights, len(pictures.styles))
        term = cls(paintings, 1.0, masks, blend, config.seed)
        photo = term.sums({}, tf.constant(pictures.content), term.inputs(None), WHOLE)
        distance = float(term.finish(photo))
        scale = pictures.pixels if config.loss_normalization in RELATIVE else 1.0
        term.factor = scale / max(distance, 1e-12)
        return term

    def __init__(self, paintings, factor, masks=None, region_weights=(1.0,), seed: int = 0,
                 directions: int = 32):
        self.paintings, self.factor = paintings, factor  # [(n_s, 3) pixels]
        self.masks, self.region_weights = masks, tuple(region_weights)
        self.count = int(directions)
        self._start_drawing(seed)

    def inputs(self, region=None):
        return _mask_inputs(self.masks, region)

    def sums(self, features, image, inputs, part):
        masks = inputs.get("masks")
        window = tf.reshape(tf.cast(part.window(image), tf.float32), (-1, 3))
        weights = None if masks is None else [tf.reshape(part.window(m), (-1,)) for m in masks]
        return window, weights

    def finish(self, sums) -> tf.Tensor:
        pixels, weights = sums
        return self.factor * sliced_distance(self._directions(97, 3, self.count), pixels,
                                             self.paintings, self.region_weights,
                                             self._seed(98), weights)


# The terms a Config can select here (``engine.build.TERMS``)
STYLE_TERMS = (GuidedGramTerm, WassersteinStyleTerm, SlicedStyleTerm)
COLOR_TERMS = (ColorTerm, SlicedColorTerm)
