"""The exceptions a run ends with; the command line turns each into one line."""

from __future__ import annotations

from typing import Optional, Sequence


class UserError(Exception):
    """A problem with the user's input or environment, with the fix in its message.

    The command line prints ``error: <message>`` on one line and exits with
    status 2, without a traceback and without writing any output file.
    """


class NonFiniteLoss(Exception):
    """The loss became NaN or Inf; the run stopped (exit status 1).

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
            kept = f"kept the last finite image (after {self.kept_step} updates){where}"
        fix = "lower --learning_rate or the loss weights"
        if self.precision != "float32":
            fix += ", or use --precision=float32"
        return f"loss became {self.value} at iteration {self.step}; stopped and {kept}; {fix}"


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped the run after its image and checkpoint were saved (130)."""

    def __init__(self, step: int, signal_name: str, paths: Sequence[str], output_dir):
        self.step, self.signal_name = step, signal_name
        self.paths, self.output_dir = list(paths), output_dir
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.output_dir is None:
            return f"interrupted by {self.signal_name} at iteration {self.step}"
        return (f"interrupted by {self.signal_name} at iteration {self.step}; saved "
                f"{', '.join(self.paths)}; continue with --resume={self.output_dir}")
