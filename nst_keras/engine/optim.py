"""Optimisers over the image: the keras.io SGD schedule, Adam and L-BFGS.

Every optimiser has one interface:

* ``run(first_step, last_step, on_step)`` calls ``on_step(step, terms)``
  after every optimiser step, where ``terms`` is a dict of float32 scalar
  tensors; ``on_step`` returns ``False`` to stop early.  Returns the last
  step done.
* ``state()`` / ``load_state(values)``: the optimiser's variables as NumPy
  arrays (for checkpoints); ``warm_start(previous, size)`` carries a previous
  scale's state over.
* ``evaluations``: loss evaluations so far.

Step hooks that act on the image after each step: ``clamp`` (keep pixels in
range) and ``ImageAverage`` (an exponential moving average of the iterates).

Which loss a step reports:
* ``sgd`` and ``adam``: the loss *before* the step's update, as keras.io
  prints it (its loop computes loss and gradients, then applies them).
* ``lbfgs``: the loss at the iterate the step ends on.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import keras
import numpy as np
import scipy.optimize
import tensorflow as tf

from nst_keras.engine import vgg

OnStep = Callable[[int, Dict[str, tf.Tensor]], bool]


class GradientDescent:
    """Keras optimiser (SGD or Adam) with an ``ExponentialDecay`` schedule.

    With ``name="sgd"``, ``learning_rate=100``, ``decay_steps=100`` and
    ``decay_rate=0.96`` this is the keras.io optimiser.  The whole step
    (forward, backward, update) is one ``tf.function``; nothing leaves the
    device unless ``on_step`` reads it.  A loss with ``host_loop`` set
    (``tiling.TiledObjective``) computes its gradient tile by tile in Python;
    then only the update is compiled.
    """

    def __init__(self, name, loss, image, learning_rate, decay_steps, decay_rate,
                 jit_compile=False):
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
        if getattr(loss, "host_loop", False):  # a tiled loss loops over tiles in Python
            self._apply = tf.function(self._apply_fn, jit_compile=jit_compile, autograph=False)
            self._step = self._host_step
        else:
            self._step = tf.function(self._step_fn, jit_compile=jit_compile, autograph=False)

    def _step_fn(self):
        terms, grad = self.loss.value_and_grad_fn(self.image)
        self.optimizer.apply_gradients([(grad, self.image)])
        return terms

    def _apply_fn(self, grad):
        self.optimizer.apply_gradients([(grad, self.image)])

    def _host_step(self):
        terms, grad = self.loss.value_and_grad(self.image)
        self._apply(grad)
        return terms

    def state(self):
        """Optimiser variables as NumPy arrays (for checkpoints)."""
        return [v.numpy() for v in self.optimizer.variables]

    def reset(self) -> None:
        """Back to the state of a new optimiser (step 0, zero moments), keeping
        the compiled step."""
        for v in self.optimizer.variables:
            v.assign(tf.zeros_like(v))
        self.evaluations = 0

    def load_state(self, values):
        for v, value in zip(self.optimizer.variables, values):
            v.assign(value)

    def warm_start(self, previous, size: Tuple[int, int]) -> str:
        """Carries ``previous``'s state (another scale's) over; returns a description.

        The step counter carries on (so the learning-rate schedule, and Adam's
        bias correction, run over the whole multi-scale run).  Adam's moment
        estimates are resized to the new image size: the first bicubically,
        the second bilinearly and clipped at 0 (the same warm start as
        style-transfer-pytorch; Gatys et al. 2017 restart the optimiser).
        """
        if not isinstance(previous, GradientDescent):
            return "nothing"
        done = []
        for dst, src in zip(self.optimizer.variables, previous.optimizer.variables):
            if len(dst.shape) == 0:
                dst.assign(src)
                done.append("step counter")
            elif "velocity" in dst.name:
                dst.assign(np.maximum(resize_image(src, size, "bilinear").numpy(), 0.0))
                done.append("second moments")
            elif len(dst.shape) == 4:
                dst.assign(resize_image(src, size, "bicubic"))
                done.append("first moments")
        return ", ".join(dict.fromkeys(done)) or "nothing"

    def run(self, first_step: int, last_step: int, on_step: OnStep) -> int:
        step = first_step - 1
        for step in range(first_step, last_step + 1):
            terms = self._step()
            self.evaluations += 1
            if on_step(step, terms) is False:
                return step
        return step


LBFGS_HOLD = 10  # L-BFGS steps per random draw of a drawing term (then a restart)


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
        # Optional (low, high) per channel of the network image: L-BFGS-B then
        # keeps every pixel in range itself (clamping the iterate from outside
        # would break its line search and curvature pairs).
        self.bounds = bounds
        self.evaluations = 0
        # Restart every this many steps (at multiples of it): the objective changes
        # there (``Objective.hold_draws``).  None: one run over all steps.
        self.restart_every: Optional[int] = None

    def state(self):
        return []

    def load_state(self, values):
        del values  # L-BFGS restarts its curvature memory on resume.

    def warm_start(self, previous, size) -> str:
        del previous, size  # nothing carries over to a new L-BFGS-B run
        return "nothing"

    def run(self, first_step: int, last_step: int, on_step: OnStep) -> int:
        """Steps ``first_step..last_step`` (in pieces of ``restart_every``)."""
        every, step = self.restart_every, first_step - 1
        while step < last_step:
            end = last_step if not every else min(last_step, (step + 1) // every * every
                                                  + every - 1)
            reached, stopped = self._minimize(step + 1, end, on_step)
            if stopped or reached < end:  # by on_step, or a line search that failed
                return reached
            step = end
        return step

    def _minimize(self, first_step: int, last_step: int, on_step: OnStep) -> Tuple[int, bool]:
        """One L-BFGS-B run; ``(last step reached, whether on_step stopped it)``."""
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
                state["stopped"] = True
                raise StopIteration

        x0 = self.image.numpy().astype(np.float64).ravel()
        bounds = None
        if self.bounds is not None:
            low, high = (np.broadcast_to(np.asarray(b, np.float64), shape).ravel()
                         for b in self.bounds)
            x0 = np.clip(x0, low, high)
            bounds = scipy.optimize.Bounds(low, high)
        n = last_step - first_step + 1
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
        return state["step"], bool(state.get("stopped"))


def make_optimizer(name, loss, image, learning_rate, decay_steps, decay_rate,
                   jit_compile=False, bounds=None):
    """``GradientDescent`` for ``sgd``/``adam``, ``LBFGS`` (with ``bounds``) for ``lbfgs``."""
    if name in ("sgd", "adam"):
        return GradientDescent(name, loss, image, learning_rate, decay_steps,
                               decay_rate, jit_compile=jit_compile)
    if name == "lbfgs":
        return LBFGS(loss, image, bounds=bounds)
    raise ValueError(f"unknown optimizer {name!r}")


# --------------------------------------------------------------------------
# Step hooks and resizing


def clamp(image) -> None:
    """Keeps a network-image variable inside the valid pixel range, in place.

    Departure from Gatys et al. and keras.io, which leave the pixels free and
    only clip when saving; style-transfer-pytorch clamps after every step.
    """
    low, high = vgg.pixel_bounds()
    image.assign(tf.clip_by_value(image, low, high))


class ImageAverage:
    """Bias-corrected exponential moving average of the image (as Adam's moments).

    ``value = (1 - d) * sum_k d^(t-k) x_k / (1 - d^t)`` after ``t`` updates.
    Saving the average instead of the last iterate removes the high-frequency
    jitter of the last steps (style-transfer-pytorch's averaging; not in
    Gatys et al.).
    """

    def __init__(self, image, decay: float):
        self.decay = float(decay)
        self.total = tf.Variable(tf.zeros_like(image), trainable=False)
        self.weight = tf.Variable(0.0, trainable=False)
        self._update = tf.function(self._update_fn, autograph=False)

    def _update_fn(self, image):
        d = self.decay
        self.total.assign(d * self.total + (1.0 - d) * image)
        self.weight.assign(d * self.weight + (1.0 - d))

    def update(self, image) -> None:
        self._update(image)

    def value(self):
        return self.total / self.weight

    def state(self) -> Dict[str, np.ndarray]:
        return {"average_total": self.total.numpy(),
                "average_weight": np.asarray(self.weight.numpy(), np.float32)}

    def load_state(self, values: Dict[str, np.ndarray]) -> None:
        if "average_total" in values:
            self.total.assign(values["average_total"])
            self.weight.assign(float(values["average_weight"]))


def resize_image(tensor, size: Tuple[int, int], method: str = "bicubic"):
    """Resizes a ``(1, rows, cols, channels)`` tensor to ``size = (rows, cols)``."""
    return tf.image.resize(tf.convert_to_tensor(tensor, tf.float32), size, method=method,
                           antialias=False)
