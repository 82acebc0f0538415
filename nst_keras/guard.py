"""Stops a run on a NaN or Inf loss and keeps the last image whose loss was finite.

The loss is read at every step (one scalar).  Which image a step's loss
belongs to depends on the optimiser: ``sgd``/``adam`` report the loss of the
image *before* the step's update (``lag=1``), ``lbfgs`` the loss of the image
the step ends on (``lag=0``).  The guard keeps device copies of the last
``lag + 1`` images, so when step ``i`` reports a non-finite loss, the image
after ``i - lag - 1`` updates, whose loss was finite, is still at hand.
"""

from __future__ import annotations

import collections
import math
from typing import Optional


class NonFiniteLoss(Exception):
    """The loss became NaN or Inf; the run stopped.

    Attributes:
      step: the step that reported the non-finite loss.
      value: the loss value (``nan``, ``inf`` or ``-inf``).
      kept_step: updates applied to the kept image (``None`` if none was finite).
      paths: files written when stopping.
    """

    def __init__(self, step: int, value: float, kept_step: Optional[int], paths=(),
                 precision: str = "float32"):
        self.step, self.value, self.kept_step, self.paths = step, value, kept_step, list(paths)
        self.precision = precision
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.kept_step is None:
            kept = "no image had a finite loss, nothing was saved"
        else:
            where = f" as {self.paths[0]}" if self.paths else ""
            kept = (f"kept the last finite image (after {self.kept_step} updates)"
                    f"{where}")
        fix = "lower --learning_rate or the loss weights"
        if self.precision != "float32":
            fix += ", or use --precision=float32"
        return f"loss became {self.value} at iteration {self.step}; stopped and {kept}; {fix}"


class FiniteGuard:
    """Watches the loss of every step; see the module docstring.

    Args:
      lag: 1 when a step's loss is of the image before its update, else 0.
    """

    def __init__(self, lag: int = 1):
        self.lag = int(lag)
        self._ring = collections.deque(maxlen=self.lag + 1)
        self.bad_step: Optional[int] = None
        self.bad_value: Optional[float] = None

    def start(self, step: int, image) -> None:
        """Records the image after ``step`` updates (the starting point)."""
        import tensorflow as tf

        self._ring.clear()
        self._ring.append((step, tf.identity(image)))

    def observe(self, step: int, loss, image) -> bool:
        """Checks step ``step``'s loss; returns ``False`` (stop) if not finite.

        ``image`` holds the image after ``step`` updates; a copy is kept.
        """
        import tensorflow as tf

        value = float(loss)
        if not math.isfinite(value):
            self.bad_step, self.bad_value = step, value
            return False
        self._ring.append((step, tf.identity(image)))
        return True

    @property
    def stopped(self) -> bool:
        return self.bad_step is not None

    def last_finite(self):
        """``(updates, image)`` of the last image with a finite loss, or ``None``.

        After a stop at step ``i`` that is the image after ``i - lag - 1``
        updates (the loss at step ``i`` condemns the image after ``i - lag``).
        """
        if self.bad_step is None:
            return self._ring[-1] if self._ring else None
        wanted = self.bad_step - self.lag - 1
        for step, image in self._ring:
            if step == wanted:
                return step, image
        return None
