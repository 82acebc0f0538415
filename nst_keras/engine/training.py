"""Training a style network (``engine.network``) with the run's own loss terms.

Johnson, Alahi & Fei-Fei (2016) train a feed-forward network ``f`` so that
``f(photo)`` minimises the Gatys et al. objective for every photo of a
training set at once: ``min_f  E_photo  sum_k w_k term_k(f(photo); photo)``.
The terms are the very objects ``nst_keras.run`` optimises pixels with
(``engine.build.build_objective``): their style targets are computed once,
from the painting; the content term takes each photo's own features as its
targets (``ContentTerm`` reads its targets from ``inputs``, so the batch
passes them in); every other term is evaluated as it is, on each picture of
the batch, and the batch's loss is the mean over the pictures.

The normalisation factors (``--loss_normalization``: ``scaled``, ``gap``,
``gap_total``) are fixed once, from a reference photo of the training size:
the term weights then mean the same at every step, which Adam needs.

Several paintings (Dumoulin et al. 2017): one objective per painting; step
``k`` trains painting ``k mod N`` (its one-hot blend fed to the network), so
every painting gets every N-th batch.  Objectives that differ only in their
numbers (the usual case: the same settings, another painting) share one
traced step, which takes each painting's targets before its steps.

Stability (``StabilityTerm``, Gupta et al. 2017): a network whose picture
moves its texture when the photo moves by a pixel flickers on film.  With
``stability_weight > 0`` every step also passes the batch moved by a few
pixels (and noised) through the network and pulls that picture towards the
first one, moved the same way.

Nothing here reads or writes a file: ``nst_keras.train`` feeds the batches
and keeps the checkpoints.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Dict, List

import keras
import numpy as np
import tensorflow as tf

from nst_keras.constants import IMAGENET_MEAN_BGR
from nst_keras.engine import vgg
from nst_keras.engine.objective import Terms
from nst_keras.engine.terms import WHOLE, ContentTerm, Term


def to_network_image(pictures):
    """RGB float ``(batch, rows, cols, 3)`` in 0..255 -> the VGG network image
    (BGR, ImageNet means subtracted: ``vgg19.preprocess_input``), float32."""
    x = tf.cast(pictures, tf.float32)[..., ::-1]
    return x - tf.constant(IMAGENET_MEAN_BGR, tf.float32)


class BatchObjective:
    """The weighted terms of an objective, on a batch of photos and pictures.

    Args:
      terms: the ``objective.Terms`` (an ``Objective``) of the run's settings,
        built for a reference photo of the training size.
      extractor: the cut VGG network the terms read.

    ``__call__(photos, pictures)``: both RGB float32 ``(batch, rows, cols, 3)``
    in 0..255 (the photos and the network's pictures of them); returns
    float32 scalars ``{"loss", "content_loss", "style_loss", "tv_loss", every
    term's name}``, each the mean over the batch.
    """

    def __init__(self, terms: Terms, extractor):
        self.terms, self.extractor = terms, extractor
        content = terms.term(ContentTerm.name)
        self.content_layers = tuple(content.layers) if content is not None else ()

    def photo_targets(self, photos) -> Dict[str, tf.Tensor]:
        """Each photo's content features ``{layer: (batch, h, w, c)}`` float32."""
        if not self.content_layers:
            return {}
        feats = vgg.features(self.extractor, to_network_image(photos))
        return {k: tf.stop_gradient(tf.cast(feats[k], tf.float32)) for k in self.content_layers}

    def __call__(self, photos, pictures) -> Dict[str, tf.Tensor]:
        targets = self.photo_targets(photos)
        images = to_network_image(pictures)
        feats = {} if self.extractor is None else vgg.features(self.extractor, images)
        count = int(images.shape[0]) if images.shape[0] is not None else None
        if count is None:
            raise ValueError("the batch size must be known when the step is traced")
        sums = {t.name: tf.zeros((), tf.float32) for _, t in self.terms.items}
        for b in range(count):
            mine = {k: v[b:b + 1] for k, v in feats.items()}
            image = images[b:b + 1]
            for _, term in self.terms.items:
                if isinstance(term, ContentTerm):
                    inputs = {k: targets[k][b:b + 1] for k in term.layers}
                else:
                    inputs = term.inputs(None)
                sums[term.name] += term.finish(term.sums(mine, image, inputs, WHOLE))
        return self.terms.report({k: v / float(count) for k, v in sums.items()})


class StabilityTerm(Term):
    """The network's picture of a moved photo against its picture, moved.

    ``sums(features, image, inputs, part)``: ``image`` the network image (BGR,
    means subtracted) of ``f(photo)``; ``inputs["moved"]`` that of
    ``f(photo[dy:, dx:] + noise)``, ``inputs["shift"]`` the shift ``(dy, dx)``
    in pixels (int32), each 0..max_shift and not both 0, drawn apart so that
    every phase of the network's 4-pixel grid is trained, not the diagonal
    alone.  The two are compared where both see the same photo,
    ``margin`` pixels in from every edge (the padding differs there): the sum
    of squared differences in 0..1 units and the count of values.
    ``finish``: ``factor`` times their mean; ``factor`` is the training
    crop's pixel count (with ``network_fast``'s terms, weights of 1000-3000
    took a quarter to a half of the flicker away: docs/video.md).  It reads
    no VGG layer and is evaluated on the whole picture
    only (``tileable = False``).
    """

    name = "stability"
    tileable = False
    untileable = "it compares two whole pictures of the network"
    weight_field = "stability_weight"

    def __init__(self, factor: float, max_shift: int = 3, noise: float = 2.0,
                 margin: int = 8):
        self.factor, self.max_shift = float(factor), int(max_shift)
        self.noise, self.margin = float(noise), int(margin)

    def draw(self, seed: int, step: int):
        """The shift ``(dy, dx)`` of step ``step`` (each 0..max_shift, not both 0):
        the same for a resumed run."""
        rng = np.random.default_rng([int(seed), int(step), 7])
        while True:
            dy, dx = (int(v) for v in rng.integers(0, self.max_shift + 1, 2))
            if dy or dx:
                return dy, dx

    def moved_photos(self, photos, shift, seed):
        """``photos[:, dy:, dx:]`` plus Gaussian noise of ``noise`` grey levels.

        On one replica of several, ``photos`` is its share of the batch and the
        noise its share of the whole batch's: the same draws on any number of
        devices."""
        moved = photos[:, shift[0]:, shift[1]:, :]
        if self.noise > 0:
            context = tf.distribute.get_replica_context()
            replicas = 1 if context is None else context.num_replicas_in_sync
            index = 0 if context is None else context.replica_id_in_sync_group
            share = tf.shape(moved)[0]
            whole = tf.concat([[share * replicas], tf.shape(moved)[1:]], 0)
            noise = tf.random.stateless_normal(whole, seed=seed, dtype=moved.dtype)
            moved = moved + self.noise * noise[index * share:(index + 1) * share]
        return tf.clip_by_value(moved, 0.0, 255.0)

    def sums(self, features, image, inputs, part):
        (dy, dx), m = (inputs["shift"][0], inputs["shift"][1]), self.margin
        moved = tf.cast(inputs["moved"], tf.float32)
        a = tf.cast(image, tf.float32)[:, dy + m:-m, dx + m:-m, :]
        b = moved[:, m:-m, m:-m, :]
        return {"squares": tf.reduce_sum(tf.square((a - b) / 255.0)),
                "count": tf.cast(tf.size(a), tf.float32)}

    def finish(self, sums) -> tf.Tensor:
        return self.factor * sums["squares"] / tf.maximum(sums["count"], 1.0)


class FusedAdam(keras.optimizers.Adam):
    """Keras' Adam, each variable's update one TensorFlow ``ApplyAdam`` kernel.

    The kernel computes Keras' formulas (``m += (g - m)(1 - b1)``,
    ``v += (g^2 - v)(1 - b2)``, ``w -= lr_t m / (sqrt(v) + eps)`` with
    ``lr_t = lr sqrt(1 - b2^t) / (1 - b1^t)``) on the same variables, so
    checkpoints are Keras Adam's; a network's step traces one operation per
    variable instead of a dozen (on two devices, one per variable and device),
    which is most of the time of a short training's first step."""

    _shared = None  # during an update: {(dtype, device): the step's scalars}

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        self._shared = {}
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._shared = None

    def _scalars(self, dtype, device: str, learning_rate) -> Dict[str, tf.Tensor]:
        """The kernel's scalar inputs, made once per step, dtype and device (the
        same values for every variable: a dozen operations per variable fewer
        in the traced step)."""
        key = (dtype, device)
        if self._shared is not None and key in self._shared:
            return self._shared[key]
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        scalars = dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                       lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                       epsilon=tf.cast(self.epsilon, dtype))
        if self._shared is not None:
            self._shared[key] = scalars
        return scalars

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)

        def handle(var):  # a Keras variable, a tf.Variable or a device's copy of one
            return (var.value if isinstance(var, keras.Variable) else var).handle

        target = handle(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=target, m=handle(self._momentums[index]),
            v=handle(self._velocities[index]), grad=tf.cast(gradient, dtype),
            **self._scalars(dtype, target.device, learning_rate))


def make_optimizer(learning_rate: float, precision: str):
    """Adam (Johnson et al.'s optimiser, ``FusedAdam``); wrapped in a dynamic
    loss scale under float16, whose small gradients would otherwise vanish."""
    optimizer = FusedAdam(learning_rate=float(learning_rate))
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def _numbers(terms: Terms) -> List[Dict[str, object]]:
    """A copy of every term's numbers (its ``state_names``), term by term."""
    return [{name: tf.nest.map_structure(tf.identity, getattr(term, name))
             for name in term.state_names if getattr(term, name) is not None}
            for _, term in terms.items]


def _put_numbers(terms: Terms, numbers: List[Dict[str, object]]) -> None:
    """Assigns ``_numbers``' copy to the variables of ``terms`` (``hold_state``)."""
    for (_, term), values in zip(terms.items, numbers):
        for name, value in values.items():
            tf.nest.map_structure(lambda var, v: var.assign(v), getattr(term, name), value)


class Trainer:
    """One network, its optimiser and the loss, stepped on batches of photos.

    Args:
      network: a style network (``engine.network.build_network``), built under
        ``strategy``'s scope when there is one.
      objective: the ``BatchObjective``, or one per painting of a
        several-painting network (a sequence, in the network's order).
      optimizer: from ``make_optimizer`` (built under the same scope).
      strategy: a ``tf.distribute`` strategy (``None``: one device); each
        replica takes an equal share of every batch and the gradients are
        summed, so the step is the one-device step on the whole batch.
      stability: ``(weight, StabilityTerm)`` or ``None``.
      seed: the seed of the stability term's draws.
    """

    def __init__(self, network, objective, optimizer, strategy=None,
                 jit_compile: bool = False, stability=None, seed: int = 0):
        from nst_keras.engine.network import style_count  # late: network imports this module's peers

        self.network = network
        self.objectives = list(objective) if isinstance(objective, (list, tuple)) \
            else [objective]
        self.objective = self.objectives[0]
        self.styles = style_count(network)
        if self.styles != len(self.objectives):
            raise ValueError(f"a network of {self.styles} paintings needs as many "
                             f"objectives, not {len(self.objectives)}")
        self.optimizer, self.strategy = optimizer, strategy
        self.stability, self.seed = stability, int(seed)
        self.scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        # Objectives differing only in their numbers share one traced step (``_hold``).
        self.shared = self.styles > 1 and len(
            {o.terms.signature() for o in self.objectives}) == 1
        self._numbers = [_numbers(o.terms) for o in self.objectives] if self.shared else []
        self._held = 0
        with self.scope():
            self.optimizer.build(self.network.trainable_variables)
            if self.shared:
                self.objective.terms.hold_state()
        compile_step = functools.partial(tf.function, jit_compile=jit_compile,
                                         reduce_retracing=True, autograph=False)
        if self.shared:
            self._steps = [compile_step(lambda photos, shift, k: self._replica_step(
                photos, k, shift))] * self.styles
        else:
            self._steps = [compile_step(lambda photos, shift, painting, k=k: self._replica_step(
                photos, k, shift)) for k in range(self.styles)]

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def replicas(self) -> int:
        return 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)

    def _picture(self, photos, k: int):
        if self.styles == 1:
            return self.network(photos, training=True)
        style = tf.one_hot(tf.fill(tf.shape(photos)[:1], k), self.styles, dtype=tf.float32)
        return self.network([photos, style], training=True)

    def _replica_values(self, photos, k=0, shift=None):
        pictures = self._picture(photos, k)
        values = (self.objective if self.shared else self.objectives[k])(photos, pictures)
        if self.stability is not None:
            weight, term = self.stability
            seed = tf.stack([tf.constant(self.seed, tf.int32), shift[2]])
            moved = self._picture(term.moved_photos(photos, shift[:2], seed), k)
            value = term.finish(term.sums({}, to_network_image(pictures), {
                "moved": to_network_image(moved), "shift": shift[:2]}, WHOLE))
            values = {**values, term.name: value, "loss": values["loss"] + weight * value}
        return values

    def _replica_step(self, photos, k: int, shift):
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            values = self._replica_values(photos, k, shift)
            loss = values["loss"] / float(self.replicas)  # replicas' gradients are summed
            if self.scaled:
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return values

    def _split(self, photos: np.ndarray):
        """The batch as per-replica values: replica ``i`` takes the ``i``-th share."""
        n = self.replicas
        if len(photos) % n:
            raise ValueError(f"a batch of {len(photos)} does not split over {n} replicas")
        share = len(photos) // n
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(photos[ctx.replica_id_in_sync_group * share:
                                           (ctx.replica_id_in_sync_group + 1) * share]))

    def _run(self, fn, photos, shift, painting) -> Dict[str, float]:
        photos = np.asarray(photos, np.float32)
        painting = tf.constant(painting, tf.int32)
        if self.strategy is None:
            out = fn(tf.constant(photos), shift, painting)
            return {k: float(v) for k, v in out.items()}
        out = self.strategy.run(fn, args=(self._split(photos), shift, painting))
        reduce = tf.distribute.ReduceOp.MEAN
        return {k: float(self.strategy.reduce(reduce, v, axis=None)) for k, v in out.items()}

    def painting(self, step: int) -> int:
        """Which painting step ``step`` trains (``step mod N``)."""
        return int(step) % self.styles

    def step(self, step: int, photos) -> Dict[str, float]:
        """One optimiser step on ``photos`` (RGB ``(batch, s, s, 3)`` in 0..255);
        returns the batch's loss and terms before the update."""
        k = self.painting(step)
        if self.shared:
            self._hold(k)
        (self.objective if self.shared else self.objectives[k]).terms.at_step(step)
        dy, dx = self.stability[1].draw(self.seed, step) if self.stability is not None \
            else (0, 0)
        shift = tf.constant([dy, dx, step % (2 ** 31 - 1)], tf.int32)
        return self._run(self._steps[k], photos, shift, k)

    def _hold(self, k: int) -> None:
        """Puts painting ``k``'s numbers into the shared objective's variables."""
        if k != self._held:
            _put_numbers(self.objective.terms, self._numbers[k])
            self._held = k

    # -- state ---------------------------------------------------------------

    def state(self) -> Dict[str, np.ndarray]:
        """The network's weights and the optimiser's variables, as arrays."""
        out = {f"network/{i}": np.asarray(w) for i, w in enumerate(self.network.get_weights())}
        for i, v in enumerate(self.optimizer.variables):
            out[f"optimizer/{i}"] = np.asarray(v.numpy())
        return out

    def load_state(self, state: Dict[str, np.ndarray]) -> None:
        """Puts back what ``state`` gave (``ValueError`` if it is of another network)."""
        weights = [state[f"network/{i}"] for i in range(len(self.network.get_weights()))
                   if f"network/{i}" in state]
        opt = [k for k in state if k.startswith("optimizer/")]
        if len(weights) != len(self.network.get_weights()) or \
                len(opt) != len(self.optimizer.variables):
            raise ValueError("the checkpoint holds another network or optimiser")
        self.network.set_weights(weights)
        for i, var in enumerate(self.optimizer.variables):
            value = state[f"optimizer/{i}"]
            if tuple(value.shape) != tuple(var.shape):
                raise ValueError("the checkpoint holds another network or optimiser")
            var.assign(value)
