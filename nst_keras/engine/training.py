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

Nothing here reads or writes a file: ``nst_keras.train`` feeds the batches
and keeps the checkpoints.
"""

from __future__ import annotations

import contextlib
from typing import Dict

import keras
import numpy as np
import tensorflow as tf

from nst_keras.constants import IMAGENET_MEAN_BGR
from nst_keras.engine.objective import Terms
from nst_keras.engine.terms import WHOLE, ContentTerm


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
        feats = self.extractor(to_network_image(photos), training=False)
        return {k: tf.stop_gradient(tf.cast(feats[k], tf.float32)) for k in self.content_layers}

    def __call__(self, photos, pictures) -> Dict[str, tf.Tensor]:
        targets = self.photo_targets(photos)
        images = to_network_image(pictures)
        feats = {} if self.extractor is None else self.extractor(images, training=False)
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


def make_optimizer(learning_rate: float, precision: str):
    """Adam (Johnson et al.'s optimiser); wrapped in a dynamic loss scale under
    float16, whose small gradients would otherwise vanish."""
    optimizer = keras.optimizers.Adam(learning_rate=float(learning_rate))
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


class Trainer:
    """One network, its optimiser and the loss, stepped on batches of photos.

    Args:
      network: a style network (``engine.network.build_network``), built under
        ``strategy``'s scope when there is one.
      objective: the ``BatchObjective``.
      optimizer: from ``make_optimizer`` (built under the same scope).
      strategy: a ``tf.distribute`` strategy (``None``: one device); each
        replica takes an equal share of every batch and the gradients are
        summed, so the step is the one-device step on the whole batch.
    """

    def __init__(self, network, objective: BatchObjective, optimizer, strategy=None,
                 jit_compile: bool = False):
        self.network, self.objective = network, objective
        self.optimizer, self.strategy = optimizer, strategy
        self.scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        with self.scope():
            self.optimizer.build(self.network.trainable_variables)
        self._step = tf.function(self._replica_step, jit_compile=jit_compile,
                                 reduce_retracing=True, autograph=False)

    def scope(self):
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @property
    def replicas(self) -> int:
        return 1 if self.strategy is None else int(self.strategy.num_replicas_in_sync)

    def _replica_values(self, photos):
        return self.objective(photos, self.network(photos, training=True))

    def _replica_step(self, photos):
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            values = self._replica_values(photos)
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

    def _run(self, fn, photos) -> Dict[str, float]:
        photos = np.asarray(photos, np.float32)
        if self.strategy is None:
            out = fn(tf.constant(photos))
            return {k: float(v) for k, v in out.items()}
        out = self.strategy.run(fn, args=(self._split(photos),))
        reduce = tf.distribute.ReduceOp.MEAN
        return {k: float(self.strategy.reduce(reduce, v, axis=None)) for k, v in out.items()}

    def step(self, step: int, photos) -> Dict[str, float]:
        """One optimiser step on ``photos`` (RGB ``(batch, s, s, 3)`` in 0..255);
        returns the batch's loss and terms before the update."""
        self.objective.terms.at_step(step)
        return self._run(self._step, photos)

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
