"""The app's runs: one at a time, in a queue, each reporting live previews.

A ``Job`` is one style transfer the page asked for: its settings, its run
folder, its events (what the page is told, in order) and the latest preview.
Its folder, ``run-<NNNN>`` under the server's results directory (no path
ever comes from the browser), holds everything of the run: the uploads saved
when it is queued (``content.<ext>``, ``style_<k>.<ext>``, the painted
``mask_<k>.png``, ``init.<ext>`` for a gallery result as the starting
picture), ``page.json`` (the page's record: summary, parent, uploads) and
what ``output.stylize.stylize`` writes (``run.json``, the result, the
checkpoint).  The run reads its pictures from those files, so ``run.json``
names them with their SHA-256 like a command-line run, and adds an
``uploads`` entry (``record_uploads``): each upload's name in the browser,
its file and its SHA-256.

The ``Manager`` runs the queued jobs one after the other in a worker thread.
When it starts it reads the run folders already in the results directory
(``restore_all``), so the gallery lists the runs of earlier starts and a
stopped one continues (from a copy of its folder).  ``LiveFeed`` is the
callback that turns steps into events and previews, and stops a run when
asked or when no page has listened for ``abandon_s`` seconds.

Memory: a job holds no pictures once queued (they are files); an ended job
keeps its latest preview only while a page listens, and only the newest
``KEEP_JOBS`` ended jobs keep their step events (older ones keep their end).
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import os
import re
import shutil
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np
from PIL import Image

from nst_keras import fields, settings
from nst_keras.engine import imaging
from nst_keras.engine.callbacks import Callback, Progress
from nst_keras.errors import NonFiniteLoss, UserError
from nst_keras.output import checkpoint as ckptlib, manifest
from nst_keras.settings import Config

DONE = ("finished", "stopped", "failed", "cancelled")
PREVIEW_EVERY_S = 2.0   # a preview at least this often on slow steps
PREVIEWS_PER_RUN = 50   # and at most about this many on fast ones
KEEP_JOBS = 200         # ended jobs whose step events are kept; older ones keep their end
PAGE_JSON = "page.json"  # a run folder's page record: id, parent, created, summary, uploads
RUN_FOLDER = re.compile(r"run-([0-9]{4,})")


class QueueFull(UserError):
    """The queue has ``max_queue`` waiting runs: answered 429, one line."""

    status = 429


def png_bytes(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_new(path: str, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)


def _moved(value, old: str, new: str):
    """``value`` (a setting) with paths inside folder ``old`` moved to folder ``new``."""
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(v, old, new) for v in value)
    if isinstance(value, str) and value.startswith(old + os.sep):
        return new + value[len(old):]
    return value


def record_uploads(directory: str, uploads: Optional[Dict]) -> None:
    """Adds ``uploads`` to the ``run.json`` of ``directory`` (when it has one)."""
    path = os.path.join(directory, manifest.RUN_JSON)
    run = manifest.read_json(path)
    if run and uploads is not None:
        run["uploads"] = uploads
        manifest.write_json(path, run)


class RecordUploads(Callback):
    """Keeps the job's ``uploads`` entry in its ``run.json`` (which the run directory
    rewrites when the run starts and ends; this callback comes after it)."""

    def __init__(self, job: "Job"):
        self.job = job

    def on_start(self, run) -> None:
        record_uploads(self.job.directory, self.job.uploads)

    def on_end(self, run, outcome) -> None:
        record_uploads(self.job.directory, self.job.uploads)


class Job:
    """One run the page asked for (see the module docstring).

    ``pending``: the uploads until ``save_uploads`` writes them: ``content``
    and ``styles`` as ``(name, bytes)``, ``masks`` (grey arrays) or ``None``,
    ``init`` (a gallery result's path) or ``None``.  ``uploads``: the record
    of the saved files (``page.json``, ``run.json``).
    """

    def __init__(self, job_id: str, config: Optional[Config], summary: Dict, directory: str,
                 parent: Optional[str] = None, pending: Optional[Dict] = None,
                 uploads: Optional[Dict] = None, created: Optional[float] = None):
        self.id, self.config, self.summary = job_id, config, summary
        self.directory, self.parent = directory, parent
        self.pending, self.uploads = pending, uploads
        self.status, self.error, self.reason = "queued", None, None
        self.step, self.total = 0, 0
        self.image_path: Optional[str] = None
        self.preview: Optional[bytes] = None
        self.events: List[Dict] = []
        self.stop_reason: Optional[str] = None
        self.listeners, self.last_heard = 0, time.monotonic()
        self.created = time.time() if created is None else created
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

    def forget_steps(self) -> None:
        """Keeps only the end of an ended job's events (a stream still ends)."""
        with self._lock:
            self.events = [e for e in self.events if e["type"] == "end"][-1:]

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
        self.emit("end", **self.public())

    def cancel(self, reason: str) -> None:
        """Ends a job that never ran; its folder (uploads or a copy) is removed."""
        self.status, self.reason, self.pending = "cancelled", reason, None
        shutil.rmtree(self.directory, ignore_errors=True)
        self.emit("end", **self.public())

    def path(self, name: str) -> str:
        """The absolute path of file ``name`` of the job's folder."""
        return os.path.abspath(os.path.join(self.directory, name))

    def run_json(self) -> Optional[str]:
        path = os.path.join(self.directory, manifest.RUN_JSON)
        return path if os.path.isfile(path) else None

    def continuable(self) -> bool:
        """Stopped, with its checkpoint and its uploads in its folder."""
        if self.status != "stopped" or self.uploads is None:
            return False
        files = [self.uploads["content"], *self.uploads["styles"], *self.uploads["masks"],
                 *([self.uploads["init"]] if self.uploads.get("init") else [])]
        return os.path.isfile(ckptlib.path_in(self.directory)) and \
            all(os.path.isfile(self.path(u["file"])) for u in files)

    def public(self) -> Dict:
        """What the page sees of the job."""
        base = f"api/jobs/{self.id}"
        has_image = self.image_path is not None
        return {"id": self.id, "status": self.status, "step": self.step, "total": self.total,
                "error": self.error, "reason": self.reason, "summary": self.summary,
                "parent": self.parent, "created": self.created,
                "image": f"{base}/result.png" if has_image else None,
                "run_json": f"{base}/run.json" if has_image and self.run_json() else None,
                "can_continue": self.continuable()}


# --------------------------------------------------------------------------
# Run folders


def _saved(job: Job, name: str, file: str) -> Dict:
    return {"name": name, "file": file, "sha256": manifest.file_sha256(job.path(file))}


def _write_pending(job: Job) -> Dict:
    """Writes ``job.pending`` into the job's new folder; the ``uploads`` record."""
    pending = job.pending
    os.makedirs(job.directory)
    uploads = {"content": None, "styles": [], "masks": [], "init": None}
    name, data = pending["content"]
    file = "content" + imaging.picture_suffix(data)
    _write_new(job.path(file), data)
    uploads["content"] = _saved(job, name, file)
    for k, (name, data) in enumerate(pending["styles"], 1):
        file = f"style_{k}" + imaging.picture_suffix(data)
        _write_new(job.path(file), data)
        uploads["styles"].append(_saved(job, name, file))
    for k, mask in enumerate(pending.get("masks") or (), 1):
        _write_new(job.path(f"mask_{k}.png"), png_bytes(np.asarray(mask, np.uint8)))
        uploads["masks"].append(_saved(job, f"mask_{k}.png", f"mask_{k}.png"))
    if pending.get("init"):
        file = "init" + (os.path.splitext(pending["init"])[1] or ".png")
        shutil.copyfile(pending["init"], job.path(file))
        uploads["init"] = _saved(job, job.summary.get("init", ""), file)
    return uploads


def save_uploads(job: Job) -> None:
    """Writes a queued job's pending uploads into its (new) folder, names the files
    in its ``config`` and writes ``page.json``; ``UserError`` (nothing left) if it
    cannot.  Nothing to do for a job without pending uploads (a continued one)."""
    if job.pending is None:
        return
    try:
        uploads = _write_pending(job)
        styles = [job.path(u["file"]) for u in uploads["styles"]]
        job.config = job.config.replace(
            content_image=job.path(uploads["content"]["file"]),
            style_image=styles if len(styles) > 1 else styles[0],
            style_masks=tuple(job.path(u["file"]) for u in uploads["masks"]) or None,
            init=job.path(uploads["init"]["file"]) if uploads["init"] else job.config.init)
        job.uploads = uploads
        write_page_json(job)
    except OSError as e:
        shutil.rmtree(job.directory, ignore_errors=True)
        raise UserError(f"cannot save the uploaded pictures ({e.strerror or e}); check "
                        "the results directory") from None
    job.pending = None


def write_page_json(job: Job) -> None:
    manifest.write_json(job.path(PAGE_JSON), {
        "id": job.id, "parent": job.parent, "created": job.created,
        "summary": job.summary, "uploads": job.uploads})


def copy_to_continue(job: Job, new: Job, base: Config) -> None:
    """Copies a stopped job's folder to ``new``'s, its checkpoint's settings naming
    the copies, and gives ``new`` the settings that resume it there; ``UserError``
    if it cannot."""
    old, here = job.path(""), new.path("")
    try:
        shutil.copytree(job.directory, new.directory)
        ckpt = ckptlib.load(new.directory)
        ckpt.flags = {k: _moved(v, old, here) for k, v in ckpt.flags.items()}
        ckptlib.save(new.directory, ckpt)
    except OSError as e:
        raise UserError(f"cannot copy run {job.id} to continue it ({e.strerror or e}); "
                        "check the results directory") from None
    new.uploads = job.uploads
    new.config = settings.validate(ckptlib.resume_config(new.directory, base, ()))
    write_page_json(new)


def restore(directory: str, job_id: str) -> Optional[Job]:
    """The ended job of a run folder written before (its ``run.json`` and
    ``page.json``); ``None`` for a folder without a readable ``run.json``."""
    run = manifest.read_json(os.path.join(directory, manifest.RUN_JSON))
    if not run or not isinstance(run.get("flags"), dict):
        return None
    page = manifest.read_json(os.path.join(directory, PAGE_JSON))
    flags = run["flags"]
    job = Job(job_id, None, page.get("summary") or _summary_of(flags), directory,
              page.get("parent"), uploads=page.get("uploads") or None,
              created=page.get("created") or os.path.getmtime(
                  os.path.join(directory, manifest.RUN_JSON)))
    status = run.get("status")
    job.status = {"finished": "finished", "stopped": "stopped",
                  "interrupted": "stopped"}.get(status, "failed")
    job.reason = run.get("message") if job.status == "stopped" else None
    if job.status == "failed":
        job.error = run.get("message") or f"the run did not end (its run.json says {status})"
    job.step = int(run.get("steps") or 0)
    job.total = sum(int(n) for n in np.atleast_1d(run.get("iterations") or 0))
    job.image_path = _result_picture(directory, flags.get("result_prefix") or "result",
                                     job.status)
    job.emit("end", **job.public())
    return job


def restore_all(results_dir: str) -> Dict[str, Job]:
    """The jobs of the run folders in ``results_dir``, oldest first."""
    try:
        names = os.listdir(results_dir)
    except OSError:
        return {}
    found = sorted((int(m.group(1)), n) for n in names for m in [RUN_FOLDER.fullmatch(n)]
                   if m and os.path.isdir(os.path.join(results_dir, n)))
    jobs = {}
    for number, name in found:
        job = restore(os.path.join(results_dir, name), str(number))
        if job is not None:
            jobs[job.id] = job
    forget_old(jobs, KEEP_JOBS)
    return jobs


def _result_picture(directory: str, prefix: str, status: str) -> Optional[str]:
    """A run folder's picture: ``<prefix>.png`` of a finished run, else the
    latest ``<prefix>_at_iteration_<N>.png``."""
    final = os.path.join(directory, f"{prefix}.png")
    if status == "finished" and os.path.isfile(final):
        return final
    pattern = re.compile(re.escape(prefix) + r"_at_iteration_([0-9]+)\.png")
    steps = [(int(m.group(1)), n) for n in os.listdir(directory)
             for m in [pattern.fullmatch(n)] if m]
    return os.path.join(directory, max(steps)[1]) if steps else None


def _summary_of(flags: Dict) -> Dict:
    """A gallery summary from a ``run.json``'s settings (a folder without ``page.json``)."""
    return {"preset": "?", "rows": flags.get("img_nrows"),
            "iterations": fields.show_value(flags.get("iterations")),
            "optimizer": flags.get("optimizer"), "preserve_colors": flags.get("preserve_colors"),
            "init": "?", "strength": 0.0, "style_weight": flags.get("style_weight"),
            "pictures": [], "regions": bool(flags.get("style_masks"))}


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


def fail(job: Job, message: str, log: Callable[[str], None]) -> None:
    """Ends a run that raised: its folder removed (nothing half-written), the page told."""
    shutil.rmtree(job.directory, ignore_errors=True)
    job.status, job.error = "failed", message
    log(f"[run {job.id}] error: {message}")
    job.emit("end", **job.public())


def forget_old(jobs: Dict[str, "Job"], keep_jobs: int) -> None:
    """Bounds what a server left running holds: an ended job no page listens to
    drops its preview (its picture is a file), and all but the newest
    ``keep_jobs`` ended jobs keep only their end event.  Every job stays listed."""
    ended = [j for j in jobs.values() if j.done]
    for job in ended:
        if not job.listeners:
            job.preview = None
    for job in ended[:max(len(ended) - keep_jobs, 0)]:
        job.forget_steps()


class Manager:
    """The queue of jobs (at most ``max_queue`` waiting) and the worker thread that
    runs them one at a time; the runs already in ``results_dir`` are read first."""

    def __init__(self, base: Config, explicit=(), results_dir: str = ".",
                 abandon_s: float = 15.0, log: Callable[[str], None] = print,
                 max_queue: int = 4):
        self.base, self.explicit = base, frozenset(explicit)
        self.results_dir, self.abandon_s, self.log = results_dir, float(abandon_s), log
        self.max_queue = int(max_queue)
        self.jobs: Dict[str, Job] = restore_all(results_dir)
        self.queue: collections.deque = collections.deque()
        self.running: Optional[Job] = None
        self.closed = False
        self._ids = itertools.count(max((int(i) for i in self.jobs), default=0) + 1)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="nst_keras-app-worker",
                                        daemon=True)
        self._thread.start()

    def new_job(self, config: Optional[Config], summary: Dict, parent: Optional[str] = None,
                pending: Optional[Dict] = None) -> Job:
        """A job with its own folder under ``results_dir`` (not made yet)."""
        with self._cond:
            while True:
                job_id = str(next(self._ids))
                directory = os.path.join(self.results_dir, f"run-{int(job_id):04d}")
                if not os.path.exists(directory):
                    break
        if config is not None:
            config = config.replace(output_dir=directory)
        return Job(job_id, config, summary, directory, parent, pending)

    def check_room(self) -> None:
        """``QueueFull`` (or ``UserError`` when closing) unless a job may be queued now;
        first the waiting jobs no page has listened to for ``abandon_s`` are cancelled."""
        with self._cond:
            if self.closed:
                raise UserError("the server is shutting down")
            for job in [j for j in self.queue if j.unheard_s() > self.abandon_s]:
                self.queue.remove(job)
                job.cancel("no page was waiting for it")
            n = len(self.queue)
            if n >= self.max_queue:
                raise QueueFull(f"{n} run{' is' if n == 1 else 's are'} waiting; try again "
                                "when one ends")

    def submit(self, job: Job) -> int:
        """Queues ``job`` (its uploads saved first, outside the lock: ask ``check_room``
        before); returns its place (see ``position``)."""
        save_uploads(job)
        with self._cond:
            try:
                self.check_room()  # again: another job may have taken the place meanwhile
            except UserError:
                shutil.rmtree(job.directory, ignore_errors=True)
                raise
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
        """A new job that resumes a stopped one in a copy of its folder (uploads,
        checkpoint and all; the checkpoint's settings name the copies)."""
        if not job.continuable():
            raise UserError("only a stopped run whose folder still holds its checkpoint and "
                            "pictures can be continued")
        self.check_room()
        new = self.new_job(None, dict(job.summary), job.id)
        try:
            copy_to_continue(job, new, self.base)
            self.submit(new)
        except UserError:
            shutil.rmtree(new.directory, ignore_errors=True)
            raise
        return new

    def result(self, job_id: str) -> Optional[Job]:
        return self.jobs.get(job_id)

    def gallery(self) -> List[Dict]:
        """Every result of the results directory (this start's and earlier ones'),
        newest first."""
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
                    forget_old(self.jobs, KEEP_JOBS)

    def _run(self, job: Job) -> None:
        from nst_keras.output import stylize  # late: imports TensorFlow

        job.status = "running"
        try:
            result = stylize.stylize(job.config, callbacks=[LiveFeed(job, self.abandon_s),
                                                            RecordUploads(job)],
                                     log=lambda line: self.log(f"[run {job.id}] {line}"))
        except (UserError, NonFiniteLoss) as e:
            fail(job, str(e), self.log)
        except Exception as e:  # noqa: BLE001 - the server keeps serving; the page is told
            text = str(e).strip().splitlines()
            fail(job, f"the run failed ({type(e).__name__}: {text[0] if text else ''})",
                 self.log)
        else:
            job.finish(result)
