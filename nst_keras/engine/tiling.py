"""Exact tiled optimisation: pictures larger than one step's memory.

Every term of the objective is a sum over positions.  A Gram matrix
``G_l = sum_p F_l(p)^T F_l(p)`` is the sum of its tiles' Gram matrices when
each position is counted in exactly one tile; the content loss and the total
variation are sums over positions too.  So the loss of the full image is
computed from tiles without approximation, provided every tile's features are
those the full image has there.

Layout: an *interior* is a ``tile_size x tile_size`` block of the image (the
last row and column of blocks are smaller); the tiles' interiors partition
the image.  Each tile's *crop* is its interior widened by ``halo`` pixels on
every side and clipped at the image border.  Interiors and crops start at
multiples of the network's stride (16 up to block5), so every pooling window
of a crop is a pooling window of the full image.

Exactness: VGG's convolutions are 3x3, so a feature at a layer of stride
``s`` depends on the pixels up to ``reach`` beyond its own ``s x s`` block
(``reach`` = the sum of the strides of the convolutions up to the layer: 86
pixels for VGG19's block5_conv2).  A crop's features are exact where this
window lies inside the crop, because the crop's zero padding stands where the
image has pixels only at crop edges *inside* the image; at the image border
the crop is clipped, so the padding (zero, or ``--padding=replicate``'s
copies of the edge) is exactly the full image's.  The gradient at a pixel
collects the features whose window holds it, within ``reach + s - 1``, and
each of those must be exact, so a halo of ``2 * reach + s - 1`` rounded up to
a multiple of 16 (192 for block5_conv2) makes the gradient of the interior
exact (``default_halo``).

One step (``TiledObjective.value_and_grad``):

1. every tile forwards its crop (no activations kept) and adds, over its
   interior positions only, the raw Gram matrices ``F^T F`` and each content
   layer's ``||F - P||^2``; the total variation is summed over the interiors
   on the full image.  These sums give the loss and ``dL/dG_l`` per style
   layer (``channels x channels``);
2. every tile forwards its crop again and backpropagates
   ``content_weight * C(crop) + <dL/dG_l, F^T F (crop)>`` (whose Gram backward
   is ``F (dG + dG^T)``), plus the total variation of its interior widened by
   one pixel, and writes the gradient of its interior into the image's
   gradient.

Memory: one crop's activations, the image, its gradient, the optimiser's
state and the content targets at the content layers.

Several devices: the tiles of one step go round by round to the replicas of a
``tf.distribute`` strategy (``MirroredStrategy`` over local GPUs or CPU
devices, ``MultiWorkerMirroredStrategy`` over machines); the per-layer sums
are all-reduced and the interiors' gradients gathered (``Spread``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from nst_keras.engine import distributions, memory, vgg
from nst_keras.engine.objective import (StyleTerm, Terms, Weighted, computes_in_float16,
                                        fast_gram_matrix, scaled_network_gradient,
                                        total_variation_loss)
from nst_keras.engine.terms import Part
from nst_keras.errors import UserError
from nst_keras.settings import TILE_ALIGN

ALIGN = TILE_ALIGN  # the stride of block5: interiors, crops and halos start on it


# --------------------------------------------------------------------------
# Geometry (no TensorFlow)


def round_up(n: int, multiple: int = ALIGN) -> int:
    return -(-int(n) // multiple) * multiple


def reach_and_stride(model: str, layers: Sequence[str]):
    """``(reach, stride)`` of the deepest of ``layers``: pixels its window
    extends beyond its own block, and image pixels per feature position."""
    wanted, reach, seen = set(layers), 0, 0
    for name, scale, _ in memory.layer_plan(model):
        if seen == len(wanted):
            break
        if "_conv" in name:
            reach += scale  # a 3x3 convolution at stride s widens the window by s
        stride = scale
        seen += name in wanted
    return reach, stride


def default_halo(model: str, layers: Sequence[str]) -> int:
    """The smallest multiple of 16 that makes the tiled gradient exact."""
    reach, stride = reach_and_stride(model, layers)
    return round_up(2 * reach + stride - 1)


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: interior ``[top, bottom) x [left, right)`` and its crop, in pixels."""

    top: int
    bottom: int
    left: int
    right: int
    crop_top: int
    crop_bottom: int
    crop_left: int
    crop_right: int

    @property
    def inner(self) -> np.ndarray:
        """The interior in crop coordinates: ``int32 [top, bottom, left, right]``."""
        return np.array([self.top - self.crop_top, self.bottom - self.crop_top,
                         self.left - self.crop_left, self.right - self.crop_left], np.int32)

    def crop(self, image):
        """The crop of a network image ``(1, rows, cols, 3)``."""
        return image[:, self.crop_top:self.crop_bottom, self.crop_left:self.crop_right, :]

    def feature_crop(self, features, stride: int):
        """The crop's part of a full-image feature map ``(1, rows/s, cols/s, channels)``."""
        t, left = self.crop_top // stride, self.crop_left // stride
        return features[:, t:t + (self.crop_bottom - self.crop_top) // stride,
                        left:left + (self.crop_right - self.crop_left) // stride, :]


def tile_grid(rows: int, cols: int, tile_size: int, halo: int) -> List[Tile]:
    """The tiles of a ``rows x cols`` image, row by row."""
    def spans(n):
        return [(a, min(a + tile_size, n)) for a in range(0, n, tile_size)]

    return [Tile(t, b, lo, hi, max(t - halo, 0), min(b + halo, rows), max(lo - halo, 0),
                 min(hi + halo, cols))
            for t, b in spans(rows) for lo, hi in spans(cols)]


def extractor_strides(extractor) -> Dict[str, int]:
    """``{layer name: stride}`` of every layer of a cut extractor."""
    strides, stride = {}, 1
    for layer in extractor.layers:
        if "pool" in type(layer).__name__.lower():
            stride *= int(layer.strides[0])
        strides[layer.name] = stride
    return strides


def interior(features, inner, stride: int):
    """The positions of a crop's feature map ``(1, h, w, c)`` inside the tile's interior."""
    return features[:, inner[0] // stride:inner[1] // stride,
                    inner[2] // stride:inner[3] // stride, :]


def tv_window(tile: Tile, rows: int, cols: int, before: int):
    """Pixels whose total variation terms the tile needs: its interior, one more
    row and column after (their differences), and ``before`` rows and columns
    before (for the gradient), clipped at the image."""
    return (max(tile.top - before, 0), min(tile.bottom + 1, rows),
            max(tile.left - before, 0), min(tile.right + 1, cols))


# --------------------------------------------------------------------------
# Spreading tiles over replicas


class Spread:
    """Runs a per-tile function on the replicas of a ``tf.distribute`` strategy.

    The tiles go out round by round, one per replica; where a round has fewer
    tiles than replicas the rest compute tile 0 with weight 0.  ``fn`` takes
    one tuple ``(*args, weight)`` and must multiply what it sums by ``weight``.
    """

    def __init__(self, strategy=None):
        self.strategy = strategy or tf.distribute.get_strategy()
        self.replicas = int(self.strategy.num_replicas_in_sync)
        self.local = strategy is None  # the default device: one trace serves all tiles
        self.traced = set()

    def _trace_once(self, fn, packed) -> None:
        """Traces ``fn`` for tensors of any size, so tiles of other shapes reuse it."""
        spec = tf.nest.map_structure(
            lambda t: tf.TensorSpec([None] * len(t.shape), t.dtype), packed)
        key = (id(fn), repr(spec))
        if self.local and key not in self.traced:
            self.traced.add(key)
            fn.get_concrete_function(spec)

    def _rounds(self, fn, tiles, make_args):
        self._trace_once(fn, (*make_args(tiles[0]), tf.constant(1.0)))
        k = self.replicas
        for start in range(0, len(tiles), k):
            group = list(tiles[start:start + k])
            real = len(group)
            group += [tiles[0]] * (k - real)

            def value(ctx, group=group, real=real):
                i = ctx.replica_id_in_sync_group
                return (*make_args(group[i]), tf.constant(1.0 if i < real else 0.0))

            values = self.strategy.experimental_distribute_values_from_function(value)
            yield group[:real], self.strategy.run(fn, args=(values,))

    def sum(self, fn, tiles, make_args):
        """The sum over ``tiles`` of ``fn``'s outputs (a nest of tensors), all-reduced."""
        total = None
        for _, out in self._rounds(fn, tiles, make_args):
            reduced = tf.nest.map_structure(
                lambda v: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None), out)
            total = reduced if total is None else tf.nest.map_structure(tf.add, total, reduced)
        return total

    def each(self, fn, tiles, make_args, sink) -> None:
        """Calls ``sink(tile, output)`` for every tile; ``fn``'s outputs, one
        ``(1, ...)`` tensor of one shape per tile, are gathered on every worker."""
        for group, out in self._rounds(fn, tiles, make_args):
            gathered = self.strategy.gather(out, axis=0).numpy()
            for i, tile in enumerate(group):
                sink(tile, gathered[i:i + 1])


# --------------------------------------------------------------------------
# Sums over tiles


_ANY_IMAGE = [tf.TensorSpec([1, None, None, 3], tf.float32)]
_tv_value = tf.function(total_variation_loss, input_signature=_ANY_IMAGE, autograph=False)


def tiled_total_variation(image, tiles: Sequence[Tile]) -> tf.Tensor:
    """``total_variation_loss`` of the full network image, summed over interiors."""
    rows, cols = int(image.shape[1]), int(image.shape[2])
    total = tf.zeros((), tf.float32)
    for tile in tiles:
        t, b, lo, hi = tv_window(tile, rows, cols, 0)
        total += _tv_value(image[:, t:b, lo:hi, :])
    return total


@dataclasses.dataclass
class Region:
    """One tile in one pass, as a term's ``inputs`` sees it.

    ``gradient``: pass 2 (the tile's gradient) rather than pass 1 (its sums).
    ``window``: ``(top, bottom, left, right)`` of the image window image-space
    terms get: the interior widened by ``MARGIN`` pixels, clipped.  ``size``:
    ``(rows, cols)`` of the whole image.
    """

    tile: Tile
    strides: Dict[str, int]
    gradient: bool
    window: tuple
    size: tuple

    def crop_of(self, full, layer: str):
        """The crop's part of a full-image map at ``layer`` (``(1, rows/s, cols/s, c)``)."""
        return self.tile.feature_crop(full, self.strides[layer])

    def window_of(self, full):
        """The image window's part of a full-image map ``(1, rows, cols, c)``."""
        t, b, lo, hi = self.window
        return full[:, t:b, lo:hi, :]


MARGIN = 1  # pixels image-space terms see beyond the interior (total variation: 1)


def image_window(tile: Tile, rows: int, cols: int) -> tuple:
    return (max(tile.top - MARGIN, 0), min(tile.bottom + MARGIN, rows),
            max(tile.left - MARGIN, 0), min(tile.right + MARGIN, cols))


class TiledImage:
    """The statistics terms build their targets from (``objective.WholeImage``'s),
    summed over tiles: full-image feature maps, Gram sums and moments of a
    network image too large for one pass.

    Args:
      extractor: the cut extractor; strides: ``{layer: stride}``
        (``extractor_strides``).
      tile_size, halo: the tiling (``tile_grid``) of every picture.
      spread: the replicas the tiles go to.
      jit_compile: compile the per-tile functions with XLA.
    """

    cache = network_key = None  # paintings' targets are not kept across tiled runs

    def __init__(self, extractor, strides: Dict[str, int], tile_size: int, halo: int,
                 spread: "Spread", jit_compile: bool = False):
        self.extractor, self.strides = extractor, strides
        self.tile_size, self.halo, self.spread = int(tile_size), int(halo), spread
        self.jit_compile = jit_compile
        self._compiled: Dict[tuple, object] = {}

    def _per_tile(self, fn, layers, jit_compile: bool = False):
        """``fn`` for ``layers``, compiled once per function and layers."""
        key = (fn.__name__, tuple(layers))
        if key not in self._compiled:
            self._compiled[key] = tf.function(functools.partial(fn, layers=tuple(layers)),
                                              jit_compile=jit_compile, reduce_retracing=True,
                                              autograph=False)
        return self._compiled[key]

    def tiles(self, image) -> List[Tile]:
        return tile_grid(int(image.shape[1]), int(image.shape[2]), self.tile_size, self.halo)

    def tile_grams_fn(self, packed, layers):
        """``(crop, inner, weight)`` -> ``{layer: F^T F}`` over the interior."""
        crop, inner, weight = packed
        raw = vgg.features(self.extractor, crop)
        part = Part(inner, self.strides)
        return {k: weight * fast_gram_matrix(part.features(raw[k], k)[0]) for k in layers}

    def tile_moments_fn(self, packed, layers):
        """``(crop, inner, {layer: mask crop}, weight)`` -> ``{layer: moments}`` over
        the interior (``distributions.moments``; no masks: every position counts 1)."""
        crop, inner, masks, weight = packed
        raw = vgg.features(self.extractor, crop)
        part = Part(inner, self.strides)
        out = {}
        for k in layers:
            m = part.features(masks[k], k) if k in masks else None
            sums = distributions.moments(part.features(raw[k], k), m)
            out[k] = {name: weight * value for name, value in sums.items()}
        return out

    def shapes(self, image, layers) -> Dict[str, tuple]:
        rows, cols = int(image.shape[1]), int(image.shape[2])
        return {k: (rows // self.strides[k], cols // self.strides[k]) for k in layers}

    def moments(self, image, layers, masks=None):
        """``{layer: moments}`` of a full network image, summed over the tiles;
        ``masks``: ``{layer: (1, h, w, 1)}`` full-size, one region."""
        image = tf.convert_to_tensor(image, tf.float32)
        return self.spread.sum(self._per_tile(self.tile_moments_fn, layers),
                               self.tiles(image), lambda t: (
            t.crop(image), tf.constant(t.inner),
            {k: t.feature_crop(v, self.strides[k]) for k, v in (masks or {}).items()}))

    def grams(self, image, layers) -> Dict[str, tf.Tensor]:
        """``{layer: F^T F}`` of a full network image, summed over the tiles."""
        image = tf.convert_to_tensor(image, tf.float32)
        return self.spread.sum(self._per_tile(self.tile_grams_fn, layers, self.jit_compile),
                               self.tiles(image),
                               lambda t: (t.crop(image), tf.constant(t.inner)))

    def style_grams(self, image, output_positions: Mapping[str, int], scaled: bool):
        """One painting's target Gram matrices (``StyleTerm.image_grams``)."""
        layers = list(output_positions)
        raw = self.grams(image, layers)
        n = {k: float(h * w) for k, (h, w) in self.shapes(image, layers).items()}
        return StyleTerm.image_grams(raw, n, output_positions, scaled)

    def kept(self, kind: str, images, settings, build):
        """``build()`` (``objective.WholeImage.kept``: nothing is kept across tiled runs)."""
        return build()

    def total_variation(self, image) -> tf.Tensor:
        return tiled_total_variation(tf.constant(image), self.tiles(image))

    def features(self, image, layers) -> Dict[str, tf.Tensor]:
        """Full-image feature maps ``{layer: (1, rows/s, cols/s, c)}`` float32, from tiles."""
        image = tf.convert_to_tensor(image, tf.float32)
        rows, cols = int(image.shape[1]), int(image.shape[2])
        out = {}
        for tile in self.tiles(image):
            raw = vgg.features(self.extractor, tile.crop(image))
            for k in layers:
                s = self.strides[k]
                part = interior(tf.cast(raw[k], tf.float32), tile.inner, s).numpy()
                if k not in out:
                    out[k] = np.zeros((1, rows // s, cols // s, part.shape[-1]), np.float32)
                out[k][:, tile.top // s:tile.top // s + part.shape[1],
                       tile.left // s:tile.left // s + part.shape[2]] = part
        return {k: tf.constant(v) for k, v in out.items()}


# --------------------------------------------------------------------------
# The tiled objective


class TiledObjective(Terms):
    """The weighted terms' loss and gradient computed tile by tile (exact).

    Args:
      extractor, strides: the cut extractor and its ``{layer: stride}``.
      terms: ``(weight, term)`` pairs, every term ``tileable``.
      tile_size, halo: the tiling (``tile_grid``).
      spread: the replicas the tiles go to.

    One step: pass 1 sums every term's ``sums`` over the tiles' interiors
    and finishes them (the loss), with ``d loss / d sums``; pass 2 gives each
    tile's interior the gradient of ``<d loss / d sums, sums(tile)>``, the
    network terms' through the crop and the image terms' through the image
    window.  ``terms_at``/``terms(image)`` and ``value_and_grad(image)``
    return what ``Objective``'s do; they run a Python loop over tiles, so
    ``host_loop`` tells optimisers to call them eagerly.
    """

    host_loop = True

    def __init__(self, extractor, strides: Dict[str, int], terms: Sequence[Weighted],
                 tile_size: int, halo: int, spread: Spread, jit_compile: bool = False):
        super().__init__(terms)
        if any(not t.tileable for _, t in self.items):  # engine.build refuses them first
            raise ValueError("a term that cannot be tiled in a tiled objective")
        self.extractor, self.strides = extractor, strides
        self.tile_size, self.halo, self.spread = int(tile_size), int(halo), spread
        self.float16 = computes_in_float16(extractor.layers)
        self.tile_sums = tf.function(self.tile_sums_fn, jit_compile=jit_compile,
                                     reduce_retracing=True, autograph=False)
        self.tile_gradient = tf.function(self.tile_gradient_fn, reduce_retracing=True,
                                         autograph=False)

    def tiles(self, image) -> List[Tile]:
        return tile_grid(int(image.shape[1]), int(image.shape[2]), self.tile_size, self.halo)

    def _args(self, image, tile: Tile, gradient: bool):
        rows, cols = int(image.shape[1]), int(image.shape[2])
        window = image_window(tile, rows, cols)
        region = Region(tile, self.strides, gradient, window, (rows, cols))
        box = np.array([tile.top - window[0], tile.bottom - window[0],
                        tile.left - window[2], tile.right - window[2]], np.int32)
        return (tile.crop(image), tf.constant(tile.inner), region.window_of(image),
                tf.constant(box), [t.inputs(region) for _, t in self.items])

    def _sums(self, crop, inner, window, box, inputs, interior_only: bool):
        """Every term's ``sums`` for one tile (pass 1: interior positions only)."""
        raw = vgg.features(self.extractor, crop) if self.network_terms() else {}
        net = Part(inner if interior_only else None, self.strides)
        img = Part(None, self.strides, box)
        return [term.sums(raw, window, args, net if term.layers else img)
                for (_, term), args in zip(self.items, inputs)]

    def tile_sums_fn(self, packed):
        crop, inner, window, box, inputs, weight = packed
        sums = self._sums(crop, inner, window, box, inputs, True)
        return tf.nest.map_structure(lambda s: weight * s, sums)

    def _step_one(self, image, tiles):
        """Pass 1: the terms and ``d loss / d sums`` at ``image``."""
        sums = self.spread.sum(self.tile_sums, tiles,
                               lambda t: self._args(image, t, False))
        with tf.GradientTape() as tape:
            tape.watch(sums)
            values = {t.name: t.finish(s) for (_, t), s in zip(self.items, sums)}
            terms = self.report(values)
        dsums = tape.gradient(terms["loss"], sums,
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return terms, dsums

    def terms_at(self, image) -> Dict[str, tf.Tensor]:
        """The loss and its terms at ``image`` (float32 scalars)."""
        image = tf.convert_to_tensor(image, tf.float32)
        return self._step_one(image, self.tiles(image))[0]

    terms = terms_at

    def value_and_grad(self, image):
        """Returns ``(terms, gradient of terms["loss"])``, the gradient ``(1, rows, cols, 3)``."""
        image = tf.convert_to_tensor(image, tf.float32)
        tiles = self.tiles(image)
        terms, dsums = self._step_one(image, tiles)
        rows, cols = int(image.shape[1]), int(image.shape[2])
        grad = np.zeros((1, rows, cols, 3), np.float32)

        def sink(tile: Tile, g):
            h, w = tile.bottom - tile.top, tile.right - tile.left
            grad[:, tile.top:tile.bottom, tile.left:tile.right] = g[:, :h, :w]

        self.spread.each(self.tile_gradient, tiles,
                         lambda t: (*self._args(image, t, True), dsums), sink)
        return terms, tf.constant(grad)

    def tile_gradient_fn(self, packed):
        """Pass 2 for one tile: the gradient at its interior, zero-padded to
        ``(1, tile_size, tile_size, 3)``."""
        crop, inner, window, box, inputs, dsums, weight = packed
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([crop, window])
            raw = vgg.features(self.extractor, crop) if self.network_terms() else {}
            feats = {k: tf.cast(v, tf.float32) for k, v in raw.items()}
            net = Part(None, self.strides)
            img = Part(None, self.strides, box)
            network = image_part = tf.zeros((), tf.float32)
            for (_, term), args, d in zip(self.items, inputs, dsums):
                s = term.sums(feats if term.layers else {}, window, args,
                              net if term.layers else img)
                inner_product = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(
                    tf.nest.flatten(d), tf.nest.flatten(s))])
                if term.layers:
                    network += inner_product
                else:
                    image_part += inner_product
        grad = tf.zeros_like(crop[:, inner[0]:inner[1], inner[2]:inner[3], :])
        if self.network_terms():
            grad += _backprop(tape, network, feats, crop, self.float16)[
                :, inner[0]:inner[1], inner[2]:inner[3], :]
        if self.image_terms():
            grad += tape.gradient(image_part, window)[:, box[0]:box[1], box[2]:box[3], :]
        del tape
        grad = weight * grad
        size = self.tile_size
        return tf.pad(grad, [[0, 0], [0, size - tf.shape(grad)[1]],
                             [0, size - tf.shape(grad)[2]], [0, 0]])


def _backprop(tape, value, feats, crop, float16: bool):
    """``d value / d crop``; for float16 networks through an exact per-tile loss
    scale (``objective.scaled_network_gradient``)."""
    if not float16:
        return tape.gradient(value, crop)
    return scaled_network_gradient(tape, value, feats, crop)


# --------------------------------------------------------------------------
# Targets and the objective


def check_tiling(strides: Dict[str, int], layers, tile_size: int, halo: int) -> None:
    """Raises ``UserError`` unless tiles and halo start on the deepest layer's stride."""
    deepest = max(layers, key=lambda k: strides[k])
    for name, value in (("tile_size", tile_size), ("tile_halo", halo)):
        if value % strides[deepest]:
            raise UserError(f"--{name}={value} must be a multiple of {strides[deepest]}, the "
                            f"stride of layer {deepest}")


def check_settings(config) -> int:
    """``check_tiling`` from the settings alone (before anything is written);
    returns the halo (``halo_for``)."""
    content_layers, style_layers = config.active_layers()
    layers, halo = content_layers + style_layers, halo_for(config)
    if layers and config.tile_size not in (0, "auto"):
        strides = {k: reach_and_stride(config.model, [k])[1] for k in layers}
        check_tiling(strides, layers, int(config.tile_size), halo)
    return halo


# --------------------------------------------------------------------------
# Settings to tiles and devices


def halo_for(config) -> int:
    """``--tile_halo``, or ``default_halo`` of the run's layers."""
    if config.tile_halo is not None:
        return int(config.tile_halo)
    content_layers, style_layers = config.active_layers()
    return default_halo(config.model, content_layers + style_layers or ["block1_conv1"])


def make_strategy(devices: Optional[str], distribute: str = "mirrored"):
    """The ``tf.distribute`` strategy of ``--devices``/``--distribute`` (``None``: none).

    ``multi_worker`` reads the cluster from ``TF_CONFIG``
    (``MultiWorkerMirroredStrategy``, every local GPU or the CPU of each
    worker); ``devices="all"`` is every local GPU, else every logical CPU.
    """
    if distribute == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if not devices:
        return None
    logical = {d.name.split("device:")[-1].upper(): d.name
               for d in tf.config.list_logical_devices()}
    if devices == "all":
        names = [n for k, n in logical.items() if k.startswith("GPU")] or \
            [n for k, n in logical.items() if k.startswith("CPU")]
    else:
        names = []
        for item in (d.strip().upper() for d in devices.split(",")):
            if item not in logical:
                raise UserError(f"--devices={devices}: there is no device {item} here; this "
                                f"machine has {', '.join(sorted(logical))}")
            names.append(logical[item])
    return _mirrored(tuple(names))


@functools.lru_cache(maxsize=None)
def _mirrored(names: Tuple[str, ...]):
    """One ``MirroredStrategy`` per set of devices in a process: a second one
    over the same devices numbers its collective operations from the same
    start, and TensorFlow aborts when one of them meets another's of a
    different kind (a tiled run's gather, then a training's all-reduce)."""
    return tf.distribute.MirroredStrategy(list(names))
