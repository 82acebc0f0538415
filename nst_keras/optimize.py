"""Optimisers over the image: the keras.io SGD schedule, Adam and L-BFGS.

Each optimiser drives the same loop contract: ``run(first_step, last_step,
on_step)`` calls ``on_step(step, terms)`` after every optimiser step, where
``terms`` is a dict of float32 scalar tensors.  ``on_step`` returns ``False``
to stop early.

Which loss a step reports:
* ``sgd`` and ``adam``: the loss *before* the step's update, as keras.io
  prints it (its loop computes loss and gradients, then applies them).
* ``lbfgs``: the loss at the iterate the step ends on.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import tensorflow as tf

OnStep = Callable[[int, Dict[str, tf.Tensor]], bool]


class GradientDescent:
    """Keras optimiser (SGD or Adam) with an ``ExponentialDecay`` schedule.

    With ``name="sgd"``, ``learning_rate=100``, ``decay_steps=100`` and
    ``decay_rate=0.96`` this is the keras.io optimiser.  The whole step
    (forward, backward, update) is one ``tf.function``; nothing leaves the
    device unless ``on_step`` reads it.
    """

    def __init__(self, name, loss, image, learning_rate, decay_steps, decay_rate,
                 jit_compile=False):
        import keras

        schedule = keras.optimizers.schedules.ExponentialDecay(
            initial_learning_rate=learning_rate,
            decay_steps=decay_steps,
            decay_rate=decay_rate,
        )
        cls = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[name]
        self.optimizer = cls(learning_rate=schedule)
        self.optimizer.build([image])
        self.loss = loss
        self.image = image
        self.evaluations = 0
        self._step = tf.function(self._step_fn, jit_compile=jit_compile)

    def _step_fn(self):
        terms, grad = self.loss._value_and_grad(self.image)
        self.optimizer.apply_gradients([(grad, self.image)])
        return terms

    def state(self):
        """Optimiser variables as NumPy arrays (for checkpoints)."""
        return [v.numpy() for v in self.optimizer.variables]

    def set_state(self, values):
        for v, value in zip(self.optimizer.variables, values):
            v.assign(value)

    def run(self, first_step: int, last_step: int, on_step: OnStep) -> int:
        step = first_step - 1
        for step in range(first_step, last_step + 1):
            terms = self._step()
            self.evaluations += 1
            if on_step(step, terms) is False:
                return step
        return step


class LBFGS:
    """SciPy's L-BFGS-B over the flattened image, on the same objective.

    Stopping tolerances are zero, so it runs the requested number of
    iterations whatever the loss's scale (each may use several loss
    evaluations for its line search; ``evaluations`` counts them).  Loss and
    gradient are computed by the compiled TensorFlow function; the iterate
    crosses to the host once per evaluation.
    """

    def __init__(self, loss, image, history_size=10, bounds=None):
        self.loss = loss
        self.image = image
        self.history_size = history_size
        # Optional (low, high) box for the image values, each broadcastable to
        # the image's shape (e.g. the pixel range 0..255 in network units).
        self.bounds = bounds
        self.evaluations = 0

    def state(self):
        return []

    def set_state(self, values):
        del values  # L-BFGS restarts its curvature memory on resume.

    def run(self, first_step: int, last_step: int, on_step: OnStep) -> int:
        import scipy.optimize

        shape = tuple(self.image.shape)
        cache = {}

        def f(x):
            t = tf.constant(x.reshape(shape), tf.float32)
            terms, grad = self.loss.value_and_grad(t)
            self.evaluations += 1
            cache["x"], cache["terms"] = x.copy(), terms
            value = float(terms["loss"].numpy())
            return value, grad.numpy().astype(np.float64).ravel()

        state = {"step": first_step - 1}

        def callback(xk):
            xk = np.asarray(getattr(xk, "x", xk))
            state["step"] += 1
            self.image.assign(xk.reshape(shape).astype(np.float32))
            if "x" in cache and np.array_equal(cache["x"], xk):
                terms = cache["terms"]
            else:
                terms = self.loss.terms(self.image)
            if on_step(state["step"], terms) is False:
                raise StopIteration

        x0 = self.image.numpy().astype(np.float64).ravel()
        n = last_step - first_step + 1
        bounds = None
        if self.bounds is not None:
            low, high = (np.broadcast_to(np.asarray(b, np.float64), shape).ravel()
                         for b in self.bounds)
            bounds = scipy.optimize.Bounds(low, high)
            x0 = np.clip(x0, low, high)
        result = scipy.optimize.minimize(
            f,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            callback=callback,
            options=dict(maxiter=n, maxfun=max(15000, 20 * n), gtol=0.0, ftol=0.0,
                         maxcor=self.history_size),
        )
        if state["step"] < first_step:
            # No iteration completed (e.g. line search failed at once).
            self.image.assign(result.x.reshape(shape).astype(np.float32))
        return state["step"]


def make_optimizer(name, loss, image, learning_rate, decay_steps, decay_rate,
                   jit_compile=False):
    if name in ("sgd", "adam"):
        return GradientDescent(name, loss, image, learning_rate, decay_steps,
                               decay_rate, jit_compile=jit_compile)
    if name == "lbfgs":
        return LBFGS(loss, image)
    raise ValueError(f"unknown optimizer {name!r}")
