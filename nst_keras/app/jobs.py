"""The app's runs: one at a time, in a queue, each reporting live previews.

A ``Job`` is one style transfer the page asked for: its settings, its
uploaded pictures (arrays), its events (what the page is told, in order) and
the latest preview.  The ``Manager`` runs the queued jobs one after the other
in a worker thread, each with ``output.stylize.stylize`` writing into its own
directory under the server's results directory (no path ever comes from the
browser).  ``LiveFeed`` is the callback that turns steps into events and
previews, and stops a run when asked or when no page has listened for
``abandon_s`` seconds.  A job painted per region saves its masks as
``mask_<k>.png`` in its directory when it is queued, and its settings'
``style_masks`` name those files (so ``run.json`` does).
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import os
import shutil
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np
from PIL import Image

from nst_keras.engine.callbacks import Callback, Progress
from nst_keras.errors import NonFiniteLoss, UserError
from nst_keras.settings import Config

DONE = ("finished", "stopped", "failed", "cancelled")
PREVIEW_EVERY_S = 2.0   # a preview at least this often on slow steps
PREVIEWS_PER_RUN = 50   # and at most about this many on fast ones
KEEP_JOBS = 200         # ended jobs remembered (gallery, results); older ones forgotten
KEEP_CONTINUABLE = 4    # stopped jobs whose uploaded pictures are kept to continue them


class QueueFull(UserError):
    """The queue has ``max_queue`` waiting runs: answered 429, one line."""

    status = 429


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


class Job:
    """One run the page asked for (see the module docstring)."""

    def __init__(self, job_id: str, config: Config, content, styles, summary: Dict,
                 directory: str, parent: Optional[str] = None, masks=None):
        self.id, self.config, self.summary = job_id, config, summary
        self.content, self.styles, self.masks = content, styles, masks
        self.directory, self.parent = directory, parent
        self.status, self.error, self.reason = "queued", None, None
        self.step, self.total = 0, 0
        self.image_path: Optional[str] = None
        self.preview: Optional[bytes] = None
        self.events: List[Dict] = []
        self.stop_reason: Optional[str] = None
        self.listeners, self.last_heard = 0, time.monotonic()
        self.created = time.time()
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self.status in DONE

    def emit(self, kind: str, **data) -> None:
        with self._lock:
            self.events.append({"type": kind, **data})

    def events_since(self, index: int) -> List[Dict]:
        with self._lock:
            return list(self.events[index:])

    @contextlib.contextmanager
    def listening(self):
        """While a page reads this job's events."""
        with self._lock:
            self.listeners += 1
        try:
            yield self
        finally:
            with self._lock:
                self.listeners -= 1
                self.last_heard = time.monotonic()

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def unheard_s(self) -> float:
        """Seconds since a page last listened (0 while one listens)."""
        return 0.0 if self.listeners else time.monotonic() - self.last_heard

    def finish(self, result) -> None:
        """Ends a run that returned (finished or stopped): its picture and status."""
        pictures = [p for p in result.paths
                    if p.endswith(".png") and os.path.basename(p) != "loss.png"]
        self.image_path = pictures[-1] if pictures else None
        self.status, self.reason = result.status, self.stop_reason
        if result.status != "stopped":
            self.content = self.styles = None  # only a stopped run may continue
        self.emit("end", **self.public())

    def cancel(self, reason: str) -> None:
        """Ends a job that never ran (its pictures dropped, its saved masks removed)."""
        self.status, self.reason, self.content, self.styles = "cancelled", reason, None, None
        if self.parent is None and self.config.style_masks:
            shutil.rmtree(self.directory, ignore_errors=True)  # it held only the masks
        self.emit("end", **self.public())

    def save_masks(self) -> None:
        """Writes the painted masks as ``mask_<k>.png`` in the job's directory and
        names them in ``config.style_masks``; ``UserError`` (nothing left) if it cannot."""
        if self.masks is None:
            return
        paths = [os.path.abspath(os.path.join(self.directory, f"mask_{k}.png"))
                 for k in range(1, len(self.masks) + 1)]
        try:
            os.makedirs(self.directory)
            for path, mask in zip(paths, self.masks):
                Image.fromarray(np.asarray(mask, np.uint8)).save(path, format="PNG")
        except OSError as e:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise UserError(f"cannot save the painted masks ({e.strerror or e}); check the "
                            "results directory") from None
        self.config = self.config.replace(style_masks=tuple(paths))
        self.masks = None

    def run_json(self) -> Optional[str]:
        path = os.path.join(self.directory, "run.json")
        return path if os.path.isfile(path) else None

    def public(self) -> Dict:
        """What the page sees of the job."""
        base = f"api/jobs/{self.id}"
        has_image = self.image_path is not None
        return {"id": self.id, "status": self.status, "step": self.step, "total": self.total,
                "error": self.error, "reason": self.reason, "summary": self.summary,
                "parent": self.parent, "created": self.created,
                "image": f"{base}/result.png" if has_image else None,
                "run_json": f"{base}/run.json" if has_image and self.run_json() else None,
                "can_continue": self.status == "stopped" and self.content is not None}


class LiveFeed(Callback):
    """Turns a run's steps into the job's events and previews."""

    def __init__(self, job: Job, abandon_s: float):
        self.job, self.abandon_s = job, float(abandon_s)
        self.first_step, self.started = 0, time.monotonic()
        self.last_preview_step, self.last_preview_time = 0, 0.0
        self.every = 1

    def on_start(self, run) -> None:
        total = run.stages[-1].last_step
        self.first_step, self.started = run.step, time.monotonic()
        self.last_preview_step, self.every = run.step, max(1, total // PREVIEWS_PER_RUN)
        self.job.step, self.job.total = run.step, total
        self.job.emit("start", step=run.step, total=total,
                      losses=[[r["iteration"], r["loss"]] for r in run.history])

    def _stop_reason(self) -> Optional[str]:
        if self.job.stop_reason:
            return self.job.stop_reason
        if self.job.unheard_s() > self.abandon_s:
            return f"no page listened for {self.abandon_s:g} s"
        return None

    def on_step(self, progress: Progress) -> None:
        now, job = time.monotonic(), self.job
        job.step = progress.step
        reason = self._stop_reason()
        preview = (progress.step >= progress.total_steps or reason is not None
                   or progress.step - self.last_preview_step >= self.every
                   or now - self.last_preview_time >= PREVIEW_EVERY_S)
        if preview:
            job.preview = png_bytes(progress.picture())
            self.last_preview_step, self.last_preview_time = progress.step, now
        done = progress.step - self.first_step
        eta = (now - self.started) / done * (progress.total_steps - progress.step)
        job.emit("progress", step=progress.step, total=progress.total_steps,
                 loss=progress.losses["loss"], elapsed_s=round(progress.elapsed_s, 2),
                 eta_s=round(eta, 1), size=list(progress.size), preview=preview)
        if reason is not None:
            job.stop_reason = reason
            progress.stop(reason)


def forget_old(jobs: Dict[str, "Job"], keep_jobs: int, keep_continuable: int) -> None:
    """Bounds what a server left running holds: the uploaded pictures of only the
    newest ``keep_continuable`` stopped jobs (older ones can no longer continue)
    and the newest ``keep_jobs`` ended jobs (older ones leave the gallery; their
    files stay in the results directory)."""
    ended = [j for j in jobs.values() if j.done]
    stopped = [j for j in ended if j.content is not None]
    for job in stopped[:max(len(stopped) - keep_continuable, 0)]:
        job.content = job.styles = None
    for job in ended[:max(len(ended) - keep_jobs, 0)]:
        del jobs[job.id]


class Manager:
    """The queue of jobs (at most ``max_queue`` waiting) and the worker thread that
    runs them one at a time."""

    def __init__(self, base: Config, explicit=(), results_dir: str = ".",
                 abandon_s: float = 15.0, log: Callable[[str], None] = print,
                 max_queue: int = 4):
        self.base, self.explicit = base, frozenset(explicit)
        self.results_dir, self.abandon_s, self.log = results_dir, float(abandon_s), log
        self.max_queue = int(max_queue)
        self.jobs: Dict[str, Job] = {}
        self.queue: collections.deque = collections.deque()
        self.running: Optional[Job] = None
        self.closed = False
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="nst_keras-app-worker",
                                        daemon=True)
        self._thread.start()

    def new_job(self, config: Config, content, styles, summary: Dict,
                parent: Optional[str] = None, masks=None) -> Job:
        """A job with its own directory under ``results_dir`` (not made yet)."""
        with self._cond:
            while True:
                job_id = str(next(self._ids))
                directory = os.path.join(self.results_dir, f"run-{int(job_id):04d}")
                if not os.path.exists(directory):
                    break
        config = config.replace(output_dir=directory)
        return Job(job_id, config, content, styles, summary, directory, parent, masks)

    def _drop_abandoned(self) -> None:
        """Cancels the waiting jobs no page has listened to for ``abandon_s``."""
        for job in [j for j in self.queue if j.unheard_s() > self.abandon_s]:
            self.queue.remove(job)
            job.cancel("no page was waiting for it")

    def check_room(self) -> None:
        """``QueueFull`` (or ``UserError`` when closing) unless a job may be queued now."""
        with self._cond:
            if self.closed:
                raise UserError("the server is shutting down")
            self._drop_abandoned()
            n = len(self.queue)
            if n >= self.max_queue:
                raise QueueFull(f"{n} run{' is' if n == 1 else 's are'} waiting; try again "
                                "when one ends")

    def submit(self, job: Job) -> int:
        """Queues ``job`` (masks saved first); returns its place (see ``position``)."""
        with self._cond:
            self.check_room()
            job.save_masks()
            self.jobs[job.id] = job
            self.queue.append(job)
            self._cond.notify_all()
            return self.position(job)

    def position(self, job: Job) -> int:
        """1-based place among the waiting jobs (1: next); 0 when not waiting."""
        with self._cond:
            waiting = list(self.queue)
            return waiting.index(job) + 1 if job in waiting else 0

    def stop(self, job: Job, reason: str = "stopped in the page") -> None:
        """Stops a running job after its step; takes a waiting one off the queue."""
        with self._cond:
            if job in self.queue:
                self.queue.remove(job)
                job.cancel(reason)
                return
        job.stop_reason = reason

    def continue_job(self, job: Job) -> Job:
        """A new job that resumes a stopped one (in a copy of its directory)."""
        if not (job.status == "stopped" and job.content is not None):
            raise UserError("only a stopped run can be continued")
        self.check_room()
        new = self.new_job(job.config, job.content, job.styles, dict(job.summary), job.id)
        shutil.copytree(job.directory, new.directory)
        new.config = new.config.replace(resume=new.directory, output_dir=new.directory)
        try:
            self.submit(new)
        except UserError:
            shutil.rmtree(new.directory, ignore_errors=True)
            raise
        return new

    def result(self, job_id: str) -> Optional[Job]:
        return self.jobs.get(job_id)

    def gallery(self) -> List[Dict]:
        """The results made since the server started, newest first."""
        return [j.public() for j in reversed(list(self.jobs.values()))
                if j.image_path is not None]

    def close(self, timeout: float = 30.0) -> None:
        """Stops the running job, cancels the waiting ones and ends the worker."""
        with self._cond:
            self.closed = True
            waiting = list(self.queue)
            running = self.running
            self._cond.notify_all()
        for job in waiting:
            self.stop(job, "the server stopped")
        if running is not None:
            running.stop_reason = "the server stopped"
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self.queue and not self.closed:
                    self._cond.wait()
                if self.closed:
                    return
                job = self.running = self.queue.popleft()
            if job.unheard_s() > self.abandon_s:  # its page left while it waited
                job.cancel("no page was waiting for it")
                self.running = None
                continue
            try:
                self._run(job)
            finally:
                with self._cond:
                    self.running = None
                    forget_old(self.jobs, KEEP_JOBS, KEEP_CONTINUABLE)

    def _run(self, job: Job) -> None:
        from nst_keras.output import stylize  # late: imports TensorFlow

        job.status = "running"
        try:
            result = stylize.stylize(job.config, content=job.content, style=job.styles,
                                      callbacks=[LiveFeed(job, self.abandon_s)],
                                      log=lambda line: self.log(f"[run {job.id}] {line}"))
        except (UserError, NonFiniteLoss) as e:
            self._fail(job, str(e))
        except Exception as e:  # noqa: BLE001 - the server keeps serving; the page is told
            text = str(e).strip().splitlines()
            self._fail(job, f"the run failed ({type(e).__name__}: {text[0] if text else ''})")
        else:
            job.finish(result)

    def _fail(self, job: Job, message: str) -> None:
        shutil.rmtree(job.directory, ignore_errors=True)  # nothing half-written
        job.status, job.error, job.content, job.styles = "failed", message, None, None
        self.log(f"[run {job.id}] error: {message}")
        job.emit("end", **job.public())
