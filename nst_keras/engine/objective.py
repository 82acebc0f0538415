"""The objective: a list of weighted terms (``terms``), evaluated on the whole image.

``loss = sum_k  weight_k * term_k``; the keras.io objective is
``content_weight * C + style_weight * S + total_variation_weight * TV``
(``build_objective``).  Any other term that follows the contract of
``nst_keras.engine.terms.Term`` joins the list as an argument (a film's
temporal term: ``extra_terms``).  ``tiling.TiledObjective`` evaluates the
same list tile by tile.

``Objective`` pushes one image per step through the cut network and returns
the weighted total and each term as float32 scalars, compiled with
``tf.function``.  ``TargetCache`` keeps style targets across runs.
"""

from __future__ import annotations

import collections
import hashlib
import weakref
from typing import Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from nst_keras.engine import distributions, vgg
from nst_keras.engine.terms import (  # noqa: F401  (the paper's formulas, re-exported for study)
    Features, StyleTerm, Term, content_loss, fast_gram_matrix, gram_matrix, mean_gram, positions,
    style_loss, total_variation_loss)

# Reported on every step (0 when the term is off), whatever else the list holds.
REPORTED = ("content_loss", "style_loss", "tv_loss")
Weighted = Tuple[float, Term]


class Terms:
    """The weighted term list shared by the untiled and the tiled objective."""

    def __init__(self, terms: Sequence[Weighted]):
        self.items: List[Weighted] = [(float(w), t) for w, t in terms]
        names = [t.name for _, t in self.items]
        if len(set(names)) != len(names):
            raise ValueError(f"two terms share a name: {names}")

    def term(self, name: str) -> Optional[Term]:
        return next((t for _, t in self.items if t.name == name), None)

    def at_step(self, step: int) -> None:
        """Tells every term which optimiser step the next evaluations belong to."""
        for _, term in self.items:
            term.at_step(step)

    def hold_draws(self, steps: int) -> bool:
        """Makes every randomly drawing term keep a draw for ``steps`` steps (0..steps-1,
        steps..2 steps-1, ...); whether there is any such term."""
        drawing = [t for _, t in self.items if t.hold is not None]
        for term in drawing:
            term.hold = int(steps)
        return bool(drawing)

    def network_terms(self) -> List[Weighted]:
        return [(w, t) for w, t in self.items if t.layers]

    def image_terms(self) -> List[Weighted]:
        return [(w, t) for w, t in self.items if not t.layers]

    def report(self, values: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """``{"loss", every reported name, every term's name}`` from term values."""
        zero = tf.zeros((), tf.float32)
        total = zero
        for weight, term in self.items:
            total = total + weight * values[term.name]
        out = {"loss": total, **{k: zero for k in REPORTED}}
        out.update({t.name: values[t.name] for _, t in self.items})
        return out


class Objective(Terms):
    """The weighted terms on the whole image.

    Args:
      extractor: model from ``vgg.build_extractor`` (``None`` when no term
        reads the network).
      terms: ``(weight, term)`` pairs (terms of weight 0 left out).
      jit_compile: compile with XLA.

    ``terms_at(image)`` and ``value_and_grad(image)`` take a network image
    ``(1, rows, cols, 3)`` float32 and return float32 scalars
    ``{"loss", "content_loss", "style_loss", "tv_loss", ...}`` (and the
    gradient, same shape as the image).
    """

    def __init__(self, extractor, terms: Sequence[Weighted], jit_compile: bool = False):
        super().__init__(terms)
        self.extractor = extractor
        layers = extractor.layers if extractor is not None else []
        # float16 cannot hold the tiny gradients the keras.io weights give:
        # see value_and_grad_fn.
        self.float16 = computes_in_float16(layers)
        self.terms = tf.function(self.terms_fn, jit_compile=jit_compile, reduce_retracing=True,
                                 autograph=False)
        self.value_and_grad = tf.function(self.value_and_grad_fn, jit_compile=jit_compile,
                                          reduce_retracing=True, autograph=False)

    def hold_state(self) -> "Objective":
        """Turns every term's numbers into variables, so the compiled step reads
        them instead of capturing them, and ``adopt`` can replace them."""
        for _, term in self.items:
            for name in term.state_names:
                value = getattr(term, name)
                if value is not None:
                    setattr(term, name, tf.nest.map_structure(_variable, value))
        return self

    def signature(self) -> tuple:
        return signature(self.extractor, self.items)

    def state(self) -> list:
        """Every term's numbers (the targets ``hold_state`` turns into variables)."""
        return [getattr(term, name) for _, term in self.items for name in term.state_names]

    def adopt(self, other: Sequence[Weighted]) -> "Objective":
        """Takes the numbers of ``other``'s terms (same ``signature``), keeping the
        compiled step; returns ``self``."""
        for (_, mine), (_, theirs) in zip(self.items, other):
            for name in mine.state_names:
                if getattr(mine, name) is not None:
                    tf.nest.map_structure(lambda var, value: var.assign(value),
                                          getattr(mine, name), getattr(theirs, name))
        return self

    def raw_features(self, image) -> Dict[str, tf.Tensor]:
        """Features in the network's compute dtype (bfloat16 under mixed_bfloat16)."""
        return {} if self.extractor is None else vgg.features(self.extractor, image)

    def features(self, image) -> Dict[str, tf.Tensor]:
        """Float32 features ``{name: (1, rows', cols', channels)}``."""
        return {k: tf.cast(v, tf.float32) for k, v in self.raw_features(image).items()}

    def weighted(self, raw: Features, image) -> Dict[str, tf.Tensor]:
        """The terms from the image's features (``raw``: any float dtype)."""
        return self.report({t.name: t.value(raw, image) for _, t in self.items})

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
            network = tf.zeros((), tf.float32)
            for weight, term in self.network_terms():
                network += weight * terms[term.name]
        grad = scaled_network_gradient(tape, network, feats, image)
        for weight, term in self.image_terms():
            grad += weight * tape.gradient(terms[term.name], image)
        del tape
        return terms, grad


def _variable(value):
    """A term's number as a variable (float64 stays float64: the Gaussians' roots)."""
    value = tf.convert_to_tensor(value)
    dtype = tf.float64 if value.dtype == tf.float64 else tf.float32
    return tf.Variable(tf.cast(value, dtype), trainable=False)


def _shapes(value) -> tuple:
    return tuple(tuple(np.shape(v)) for v in tf.nest.flatten(value))


def signature(extractor, terms: Sequence[Weighted]) -> tuple:
    """What fixes an objective's compiled step: the network (by identity), every
    term's weight and ``Term.signature``, and the shapes of its numbers."""
    return (id(extractor), tuple(
        (w, term.signature(), tuple(_shapes(getattr(term, n)) for n in term.state_names))
        for w, term in terms))


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


def held_bytes(*structures) -> int:
    """Bytes of the tensors, variables and arrays in ``structures`` (nested)."""
    total = 0
    for leaf in tf.nest.flatten(list(structures)):
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is not None and dtype is not None:
            total += int(np.prod(tuple(shape))) * tf.as_dtype(dtype).size
    return total


class TargetCache(collections.OrderedDict):
    """What a worker keeps from run to run.

    As a mapping: style targets (``style_grams``), least recently used dropped
    first; ``hits`` and ``misses`` count the look-ups.  Besides:
    ``extractor(key, build)`` keeps the cut network per network and layers,
    ``objective(extractor, terms, build)`` the compiled objective per
    ``signature`` (a new picture of the same shape assigns its targets to the
    kept one instead of tracing a new step), and ``keep(optimizers, ...)`` what
    ``pipeline.run_stage`` keeps of the optimiser (keyed by the objective's
    ``id`` first).

    Args:
      limit: style targets kept.
      steps: compiled objectives, optimisers and extractors kept (each).
      budget: bytes the kept objectives' numbers and optimisers' images and
        moments may hold together (``held_bytes``); the oldest go first, and
        one larger than the whole budget is used but not kept.  ``None``: no
        bound but ``steps``.
    """

    def __init__(self, limit: int = 64, steps: int = 8, budget: Optional[int] = None):
        super().__init__()
        self.limit, self.hits, self.misses = limit, 0, 0
        self.steps, self.budget = steps, budget
        self.extractors: "collections.OrderedDict" = collections.OrderedDict()
        self.objectives: "collections.OrderedDict" = collections.OrderedDict()
        self.optimizers: "collections.OrderedDict" = collections.OrderedDict()
        # (id(store), key): (store, bytes held), least recently used first
        self.sizes: "collections.OrderedDict" = collections.OrderedDict()
        self.reused = 0

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        self.hits += 1
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.misses += 1
        while len(self) > self.limit:
            self.popitem(last=False)

    def extractor(self, key, build):
        return self.keep(self.extractors, key, build)

    def objective(self, extractor, terms: Sequence[Weighted], build) -> "Objective":
        key = signature(extractor, terms)
        if key in self.objectives:
            self.reused += 1
            return self.keep(self.objectives, key, build).adopt(terms)
        return self.keep(self.objectives, key, lambda: build().hold_state(),
                         lambda built: held_bytes(built.state()))

    def keep(self, store: "collections.OrderedDict", key, build, measure=None):
        """``store[key]``, built once; at most ``steps`` kept per store, and
        what the stores hold (``measure(value)`` bytes) within ``budget``,
        the least recently used going first."""
        if key in store:
            store.move_to_end(key)
            if (id(store), key) in self.sizes:
                self.sizes.move_to_end((id(store), key))
            return store[key]
        value = build()
        size = measure(value) if measure is not None else 0
        if self.budget is not None and size > self.budget:
            return value
        store[key] = value
        self.sizes[(id(store), key)] = (store, size)
        while len(store) > self.steps:
            self._drop(store, next(iter(store)))
        while self.budget is not None and self.held() > self.budget:
            (_, oldest), (owner, _) = next(iter(self.sizes.items()))
            self._drop(owner, oldest)
        return value

    def held(self) -> int:
        """Bytes the kept objectives and optimisers hold (``held_bytes``)."""
        return sum(size for _, size in self.sizes.values())

    def _drop(self, store: "collections.OrderedDict", key) -> None:
        value = store.pop(key)
        self.sizes.pop((id(store), key), None)
        if store is self.objectives:  # its optimisers (keyed by its id) go with it
            for mine in [k for k in self.optimizers if k[0] == id(value)]:
                self._drop(self.optimizers, mine)


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def target_features(extractor):
    """The extractor's forward pass for the pictures targets are taken from.

    Eager in float32: a picture or two per run, and an eager pass is within a
    few percent of a traced one at every size (0.024 against 0.019 s at 48
    rows, 0.77 against 0.75 s at 400 rows on a 2-core CPU) while a trace costs
    about 0.1 s per network.  A network that computes in float16 or bfloat16
    is compiled once (any image size): TensorFlow's eager half-precision
    convolutions on a CPU are many times slower than traced ones.
    """
    if not any(getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
               for layer in extractor.layers):
        return lambda image: vgg.features(extractor, image)
    if extractor not in _COMPILED:
        _COMPILED[extractor] = tf.function(
            lambda image: vgg.features(extractor, image),
            input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32)],  # traced once
            autograph=False)
    return _COMPILED[extractor]


class WholeImage:
    """The statistics terms build their targets from, on whole network images
    (``tiling.TiledImage`` gives the same ones summed over tiles).

    Args:
      extractor: the cut network (``None``: no term reads it).
      cache, network_key: a mapping that keeps paintings' Gram matrices across
        calls (a worker's ``TargetCache``) and what identifies the network
        (``settings.network_key``); see ``style_grams``.
    """

    def __init__(self, extractor, cache: Optional[MutableMapping] = None, network_key=None):
        self.probe = Objective(extractor, [])
        self.cache, self.network_key = cache, network_key
        self._seen: Dict[int, tuple] = {}

    def raw(self, image) -> Dict[str, tf.Tensor]:
        """The network's features of ``image`` in its compute dtype (kept for the
        pictures of one build: ``image`` is the same array each time)."""
        seen = self._seen.get(id(image))
        if seen is None or seen[0] is not image:
            extractor = self.probe.extractor
            seen = (image, {} if extractor is None else
                    target_features(extractor)(tf.constant(image)))
            self._seen[id(image)] = seen
        return seen[1]

    def features(self, image, layers) -> Dict[str, tf.Tensor]:
        """``{layer: (1, rows', cols', c)}`` float32."""
        raw = self.raw(image)
        return {k: tf.cast(raw[k], tf.float32) for k in layers}

    def shapes(self, image, layers) -> Dict[str, Tuple[int, int]]:
        """``{layer: (rows', cols')}`` of the feature maps."""
        raw = self.raw(image)
        return {k: (int(raw[k].shape[1]), int(raw[k].shape[2])) for k in layers}

    def grams(self, image, layers) -> Dict[str, tf.Tensor]:
        """``{layer: F^T F}`` (float32)."""
        feats = self.features(image, layers)
        return {k: fast_gram_matrix(feats[k][0]) for k in layers}

    def moments(self, image, layers, masks=None) -> Dict[str, Dict[str, tf.Tensor]]:
        """``{layer: distributions.moments}`` (``masks``: ``{layer: (1, h, w, 1)}``)."""
        raw = self.raw(image)
        return {k: distributions.moments(raw[k], None if masks is None else masks[k])
                for k in layers}

    def total_variation(self, image) -> tf.Tensor:
        return total_variation_loss(tf.constant(image))

    def style_grams(self, image, output_positions: Mapping[str, int], scaled: bool):
        """One painting's target Gram matrices (``StyleTerm.image_grams``), taken
        from the cache when it has them.

        The cache is keyed by the network key, a digest of the network image,
        the layers with their output positions and the normalisation; a hit
        gives exactly the matrices computing them would.
        """
        def build():
            layers = list(output_positions)
            raw, shapes = self.grams(image, layers), self.shapes(image, layers)
            n = {k: tf.constant(float(h * w)) for k, (h, w) in shapes.items()}
            return StyleTerm.image_grams(raw, n, output_positions, scaled)

        return self.kept("grams", [image], (tuple(output_positions.items()), scaled), build)

    def kept(self, kind: str, images: Sequence, settings, build):
        """``build()``, or what it gave before for the same ``kind``, pictures (by
        digest), ``settings`` and network (with a cache; ``build()`` otherwise):
        what a batch's items share -- the paintings' targets -- is computed once."""
        if self.cache is None:
            return build()
        digests = []
        for image in images:
            array = np.ascontiguousarray(image, dtype=np.float32)
            digests.append((hashlib.sha256(array.tobytes()).hexdigest(), array.shape))
        key = (self.network_key, kind, tuple(digests), settings)
        if key in self.cache:
            return self.cache[key]
        value = build()
        self.cache[key] = value
        return value
