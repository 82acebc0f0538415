"""What a run reports to its callbacks, and the callbacks every run may use.

A callback is any object with some of these methods (``Callback`` has them
all, doing nothing):

* ``on_start(run)``: before the first step (``run`` is the live
  ``pipeline.Run``: its ``config``, ``weights``, ``stages``, ``history``);
* ``on_step(progress)``: after every optimiser step, with a ``Progress``;
  ``progress.stop(reason)`` asks the loop to end after this step;
* ``on_end(run, outcome)``: once, with an ``Outcome``, however the run ended
  (finished, stopped, interrupted, non-finite loss or crashed).

Callbacks are called in the order given.  ``PrintLog`` prints the loss lines;
``StopOnSignal`` turns SIGINT/SIGTERM into a stop; ``FiniteGuard`` is the
loop's own watch for NaN and Inf losses.  Everything that writes files lives
in ``nst_keras.output.rundir``.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import signal
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from nst_keras.errors import Interrupted, NonFiniteLoss

Log = Callable[[str], None]


@dataclasses.dataclass
class RunState:
    """Everything needed to continue a run after ``step`` updates.

    Attributes:
      image: the optimiser's iterate, network image ``float32 (1, rows, cols, 3)``.
      optimizer_state: the optimiser's variables (``optim`` ``state()``).
      step: updates done, counted over all scales.
      history: the logged records so far.
      elapsed_s: seconds spent so far.
      evaluations: loss evaluations so far.
      scale_index: the scale (stage) the image belongs to.
      extra_images: named extra arrays (the image average's state).
    """

    image: np.ndarray
    optimizer_state: List[np.ndarray]
    step: int
    history: List[Dict] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0
    evaluations: int = 0
    scale_index: int = 0
    extra_images: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Progress:
    """One optimiser step, as callbacks see it.

    Attributes:
      step: updates done so far, counted over all scales (1-based).
      total_steps: the run's last step.
      scale_index, scale_count: which scale of a coarse-to-fine run.
      size: ``(rows, cols)`` of the image at this scale.
      losses: ``{"loss", "content_loss", "style_loss", "tv_loss", ...}`` floats: the
        total and every term of the objective by its name (the colour term, a
        film's temporal term, ...).
      elapsed_s: seconds since the run started (resumed runs included).
      evaluations: loss evaluations so far.
      record: the history record when this step is logged (``log_every``),
        else ``None``.
    """

    step: int
    total_steps: int
    scale_index: int
    scale_count: int
    size: Tuple[int, int]
    losses: Dict[str, float]
    elapsed_s: float
    evaluations: int
    record: Optional[Dict] = None
    run: object = dataclasses.field(default=None, repr=False)

    def picture(self) -> np.ndarray:
        """The current output picture, ``uint8 (rows, cols, 3)`` RGB (costs a copy)."""
        return self.run.picture()

    def stop(self, reason: str = "stopped") -> None:
        """Asks the loop to end after this step (the result is kept)."""
        self.run.request_stop(reason)


@dataclasses.dataclass
class Outcome:
    """How a run ended, given to ``on_end``.

    Attributes:
      status: ``finished``, ``stopped`` (a callback asked), ``interrupted``
        (SIGINT/SIGTERM), ``non_finite`` or ``failed`` (an exception).
      step: updates done (for ``non_finite``: of the kept image).
      tensor: the network image the run ends on (``None`` if there is none).
      losses: the last step's losses (``None`` before the first step).
      reason: the stop's reason or signal name, or the exception's first line.
      paths: files written; callbacks that write append to it.
      bad_step, bad_value: the step and loss that were not finite.
      precision: the run's precision (for the non-finite advice).
      output_dir: where a resumable checkpoint was written, if anywhere.
    """

    status: str
    step: int
    tensor: Optional[np.ndarray] = None
    losses: Optional[Dict[str, float]] = None
    reason: Optional[str] = None
    paths: List[str] = dataclasses.field(default_factory=list)
    bad_step: Optional[int] = None
    bad_value: Optional[float] = None
    precision: str = "float32"
    output_dir: Optional[str] = None

    def error(self) -> Optional[Exception]:
        """The exception ``stylize`` raises for this outcome (``None``: it returns)."""
        if self.status == "non_finite":
            kept = self.step if self.tensor is not None else None
            return NonFiniteLoss(self.bad_step, self.bad_value, kept, self.paths,
                                 self.precision)
        if self.status == "interrupted":
            return Interrupted(self.step, self.reason, self.paths, self.output_dir)
        return None


class Callback:
    """Base class with every hook doing nothing."""

    def on_start(self, run) -> None:
        pass

    def on_step(self, progress: Progress) -> None:
        pass

    def on_end(self, run, outcome: Outcome) -> None:
        pass


class PrintLog(Callback):
    """Prints one line per logged step through ``log``."""

    def __init__(self, log: Log):
        self.log = log

    def on_step(self, progress: Progress) -> None:
        if progress.record is None:
            return
        v = progress.losses
        extra = (f" ({progress.evaluations} evaluations)"
                 if progress.run.config.optimizer == "lbfgs" else "")
        terms = " ".join(f"{short_name(k)}={x:.4g}" for k, x in v.items() if k != "loss")
        self.log(f"Iteration {progress.step}: loss={v['loss']:.2f} {terms} "
                 f"[{progress.record['elapsed_s']:.1f}s]{extra}")


def short_name(term: str) -> str:
    """``content`` for ``content_loss``: a term's name in the log line."""
    return term[:-len("_loss")] if term.endswith("_loss") else term


class StopWhenStyleClose(Callback):
    """Ends the run as finished once the style loss has fallen to ``fraction`` of
    its value at the first step of the last scale (``--style_stop_fraction``).

    Under the ``gap`` normalisation the style loss measures the distance
    from the painting in units of the photo's own distance, so the rule stops
    every pairing at the same share of the way: a pairing that gets there in
    ten iterations keeps more of the photo than a fixed iteration count would
    leave it, and a hard one goes on up to ``--iterations``.
    """

    def __init__(self, fraction: float):
        self.fraction = float(fraction)
        self.reference: Optional[float] = None

    def on_step(self, progress: Progress) -> None:
        if progress.scale_index != progress.scale_count - 1:
            return
        style = progress.losses["style_loss"]
        if self.reference is None:
            self.reference = style
        elif style <= self.fraction * self.reference:
            progress.run.request_stop(
                f"style loss at {style / self.reference:.0%} of its first value", "finished")


class StopOnSignal(Callback):
    """SIGINT and SIGTERM ask the loop to stop after its step (status ``interrupted``).

    The first signal stops the run (it then saves and exits); the previous
    handlers are put back at once, so a second Ctrl-C stops the program
    immediately.  Outside the main thread it does nothing.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, log: Optional[Log] = None):
        self._log = log
        self._previous = {}
        self._run = None

    def _handle(self, signum, frame):  # noqa: ARG002
        name = signal.Signals(signum).name
        self._restore()
        self._run.request_stop(name, "interrupted")
        if self._log is not None:
            self._log(f"{name}: stopping after this step and saving a checkpoint "
                      "(send it again to quit at once)")

    def _restore(self):
        for signum, handler in self._previous.items():
            try:
                signal.signal(signum, handler)
            except (ValueError, OSError):
                pass
        self._previous = {}

    def on_start(self, run) -> None:
        self._run = run
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread
                break

    def on_end(self, run, outcome: Outcome) -> None:
        self._restore()


class FiniteGuard:
    """Watches every step's loss and keeps the last image whose loss was finite.

    Which image a step's loss belongs to depends on the optimiser:
    ``sgd``/``adam`` report the loss of the image *before* the step's update
    (``lag=1``), ``lbfgs`` the loss of the image the step ends on
    (``lag=0``).  The guard keeps device copies of the last ``lag + 1``
    images, so when step ``i`` reports a non-finite loss, the image after
    ``i - lag - 1`` updates, whose loss was finite, is still at hand.
    """

    def __init__(self, lag: int = 1):
        self.lag = int(lag)
        self._ring = collections.deque(maxlen=self.lag + 1)
        self.bad_step: Optional[int] = None
        self.bad_value: Optional[float] = None

    def start(self, step: int, image) -> None:
        """Records the image variable after ``step`` updates (a scale's start).

        ``read_value`` gives a snapshot: later updates of the variable leave it
        unchanged.
        """
        self._ring.clear()
        self._ring.append((step, image.read_value()))

    def observe(self, step: int, loss: float, image) -> bool:
        """Checks step ``step``'s loss; ``False`` if not finite.

        ``image`` holds the image after ``step`` updates; a copy is kept.
        """
        if not math.isfinite(loss):
            self.bad_step, self.bad_value = step, loss
            return False
        self._ring.append((step, image.read_value()))
        return True

    @property
    def stopped(self) -> bool:
        return self.bad_step is not None

    def last_finite(self):
        """``(updates, image)`` of the last image with a finite loss, or ``None``.

        After a stop at step ``i`` that is the image after ``i - lag - 1``
        updates (the loss at step ``i`` condemns the image after ``i - lag``).
        """
        wanted = self.bad_step - self.lag - 1
        for step, image in self._ring:
            if step == wanted:
                return step, image
        return None
