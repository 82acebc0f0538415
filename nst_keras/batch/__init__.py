"""Many pictures: ``python -m nst_keras.batch --content_image=photos/ --style_image=art/
--output_dir=out``.

Every engine flag (and ``--flagfile``) applies to each item.
``--content_image`` and ``--style_image`` take image files, folders (their
image files, sorted) and globs, comma separated.  Every content is paired
with every style (``--pairing=product``) or the lists are paired in order
(``--pairing=zip``).  Item ``<content-stem>__<style-stem>`` is an ordinary
run directory under ``--output_dir``; ``--output_dir/batch.jsonl`` gets one
line per item as it ends (status, seconds, final losses, device, worker).

Running the same command again skips finished items and resumes the others
from their checkpoints.  A bad item (unreadable file, image too small,
failed download) is recorded with its reason and the others go on.  Items
sharing a style compute its Gram targets once per worker.

Each item has one painting, so ``--style_masks`` takes one mask, used for
every photo (resized to each); a photo with its own mask beside it,
``<photo stem>.mask1.png``, uses that one instead (folders skip such files
as photos).

``--workers=N`` runs the items on a local Ray runtime with N workers;
``--ray_address=HOST:PORT`` (or ``auto``) on an existing Ray cluster whose
workers all see ``--output_dir`` (``nst_keras.pool``).  Without either,
everything runs in this process and Ray is not needed.

``--network=painting.keras`` (from ``python -m nst_keras.train``) needs no
``--style_image``: every content goes through the network once, to
``--output_dir/<content-stem>_stylized.png`` (the network is loaded once
per worker; an existing picture is skipped).

Exit status: 0 every item finished (or was already); 1 some items failed;
2 bad flags or inputs (nothing written); 130 interrupted (finished items
kept, the running one checkpointed).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import re
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

from absl import flags

from nst_keras import cli, constants, fields, pool, settings
from nst_keras.batch.options import BatchOptions
from nst_keras.engine import imaging
from nst_keras.engine.callbacks import Callback
from nst_keras.errors import Interrupted, NonFiniteLoss, UserError
from nst_keras.output import checkpoint, files, manifest, networks, rundir

BATCH_LOG = "batch.jsonl"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
FAILED = ("failed", "non_finite")
Sources = Union[str, Sequence[str]]

FLAGS = flags.FlagValues()
cli.define_flags(FLAGS)
cli.define_flags(FLAGS, BatchOptions)


# --------------------------------------------------------------------------
# Items


@dataclasses.dataclass(frozen=True)
class Item:
    """One content x style pair, its run directory's name, and the photo's own style
    mask if one lies beside it (``<photo stem>.mask1.png``; ``None``: ``--style_masks``)."""

    name: str
    content: str
    style: str
    masks: Optional[tuple] = None


MASK_NAME = re.compile(r"\.mask\d+$", re.IGNORECASE)  # photo.mask1.png: a mask, no photo


def _image_files(folder: str) -> List[str]:
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and
                   n.lower().endswith(IMAGE_EXTENSIONS) and
                   not MASK_NAME.search(os.path.splitext(n)[0]))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]


def own_masks(content: str) -> Optional[tuple]:
    """The mask beside a local photo, ``<stem>.mask1.png`` (or another image
    extension), as a 1-tuple; ``None`` if there is none (or the photo is a URL)."""
    if imaging.is_url(content):
        return None
    stem = os.path.splitext(content)[0]
    for ext in IMAGE_EXTENSIONS:
        for candidate in (stem + ".mask1" + ext, stem + ".mask1" + ext.upper()):
            if os.path.isfile(candidate):
                return (candidate,)
    return None


def expand(sources: Sources, flag: str) -> List[str]:
    """Image files, URLs, folders and globs (a list or comma separated) -> sources.

    A folder gives its image files by extension, sorted (a damaged file among
    them becomes a failed item); a name or pattern that matches nothing is a
    ``UserError``.
    """
    parts = sources.split(",") if isinstance(sources, str) else list(sources or [])
    out = []
    for part in (str(p).strip() for p in parts):
        if not part:
            continue
        if imaging.is_url(part) or os.path.isfile(part):
            found = [part]
        elif os.path.isdir(part):
            found = _image_files(part)
        elif glob.has_magic(part):
            found = sorted(p for p in glob.glob(part) if os.path.isfile(p))
        else:
            raise UserError(f"--{flag}: {part!r} does not exist; give image files, "
                            "folders or globs (comma separated)")
        if not found:
            raise UserError(f"--{flag}: {part!r} holds no image file (.jpg, .png, ...); "
                            "check the folder or pattern")
        out.extend(found)
    if not out:
        raise UserError(f"no --{flag} given; give image files, folders or globs")
    return out


def _stem(source: str) -> str:
    path = source.split("?", 1)[0].rstrip("/")
    return os.path.splitext(os.path.basename(path))[0] or "image"


def network_items(contents: Sources, network: str) -> List[Item]:
    """With ``--network``: one item per content, named ``<content-stem>`` (made unique)."""
    items, seen = [], collections.Counter()
    for c in expand(contents, "content_image"):
        name = _stem(c)
        seen[name] += 1
        items.append(Item(name if seen[name] == 1 else f"{name}_{seen[name]}", c, network))
    return items


def make_items(contents: Sources, styles: Sources, pairing: str = "product") -> List[Item]:
    """The batch's items, named ``<content-stem>__<style-stem>`` (made unique)."""
    if pairing not in constants.PAIRINGS:
        raise UserError(f"--pairing={pairing!r} is not known; use one of: "
                        f"{', '.join(constants.PAIRINGS)}")
    cs, ss = expand(contents, "content_image"), expand(styles, "style_image")
    if pairing == "zip":
        if len(cs) != len(ss):
            raise UserError(f"--pairing=zip needs as many content as style images (got "
                            f"{len(cs)} and {len(ss)}); use --pairing=product or fix the lists")
        pairs = list(zip(cs, ss))
    else:
        pairs = [(c, s) for c in cs for s in ss]
    items, seen = [], collections.Counter()
    for c, s in pairs:
        name = f"{_stem(c)}__{_stem(s)}"
        seen[name] += 1
        items.append(Item(name if seen[name] == 1 else f"{name}_{seen[name]}", c, s,
                          own_masks(c)))
    return items


# --------------------------------------------------------------------------
# One item (in whichever process runs it)


class StopOnCancel(Callback):
    """Turns the pool's cancel of the running item (Ctrl-C) into a clean stop with a
    checkpoint."""

    def on_step(self, progress) -> None:
        if pool.cancelled():
            progress.run.request_stop("SIGINT", "interrupted")


def item_config(config: settings.Config, item: Item, out_dir: str):
    """``(config, resumed_from)`` for the item, or ``(None, steps)`` if it is finished."""
    run_dir = os.path.join(out_dir, item.name)
    config = config.replace(content_image=item.content, style_image=item.style,
                            output_dir=run_dir, resume=None)
    if item.masks:
        config = config.replace(style_masks=list(item.masks))
    previous = manifest.read_json(os.path.join(run_dir, manifest.RUN_JSON))
    if previous.get("status") == "finished":
        return None, previous.get("steps")
    if os.path.isfile(checkpoint.path_in(run_dir)):
        try:
            step = checkpoint.load(run_dir).step
        except UserError:
            step = None
        if step is not None and step < sum(config.iteration_counts()):
            return config.replace(resume=run_dir), step
    return config.replace(overwrite=True), 0


def _stylize(config, cache, record: Dict, callbacks: Sequence = ()) -> None:
    """Runs one item; fills ``record``'s status and reason."""
    from nst_keras.output import stylize  # late: TensorFlow starts with the first item

    try:
        result = stylize.stylize(config, callbacks=callbacks, log=lambda s: None,
                                 target_cache=cache)
        record["status"] = result.status
    except Interrupted as e:
        record.update(status="interrupted", reason=e.signal_name)
    except (UserError, NonFiniteLoss) as e:
        record.update(status="failed" if isinstance(e, UserError) else "non_finite",
                      reason=str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001 - one broken item must not stop the batch
        text = str(e).strip().splitlines()
        record.update(status="failed", reason=f"{type(e).__name__}: {text[0] if text else ''}")


def network_result(out_dir: str, item: Item) -> str:
    """Where a ``--network`` item's picture goes: ``<output_dir>/<item>_stylized.png``."""
    return os.path.join(out_dir, f"{item.name}_stylized.png")


def _run_network_item(config: settings.Config, item: Item, out_dir: str,
                      record: Dict) -> None:
    """One content through the trained network (loaded once per worker process:
    ``output.networks.open_network``)."""
    path = network_result(out_dir, item)
    if os.path.exists(path):
        record.update(status="skipped", steps=0)
        return
    try:
        network = networks.open_network(config.network, config.precision)
        picture = networks.picture(network, item.content, config.img_nrows,
                                   config.interpolation, config.preserve_colors,
                                   config.style_blend_weights)
        os.makedirs(out_dir, exist_ok=True)
        files.save_image(path, picture)
        record.update(status="finished", steps=0, output=path)
    except UserError as e:
        record.update(status="failed", reason=str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001 - one broken item must not stop the batch
        text = str(e).strip().splitlines()
        record.update(status="failed", reason=f"{type(e).__name__}: {text[0] if text else ''}")


def run_item(config: settings.Config, item: Item, out_dir: str, cache=None,
             worker: Optional[str] = None, callbacks: Sequence = ()) -> Dict:
    """Runs (or skips, or resumes) one item; returns its ``batch.jsonl`` record."""
    started = time.perf_counter()
    record = _new_record(item, worker)
    if config.network is not None:
        _run_network_item(config, item, out_dir, record)
        return _completed(record, out_dir, started)
    item_cfg, resumed_from = item_config(config, item, out_dir)
    if item_cfg is None:
        record.update(status="skipped", steps=resumed_from)
    else:
        hits = cache.hits if cache is not None else 0
        record["resumed_from"] = resumed_from
        _stylize(item_cfg, cache, record, callbacks)
        record["targets_cached"] = cache is not None and cache.hits > hits
    return _completed(record, out_dir, started)


def _new_record(item: Item, worker: Optional[str] = None) -> Dict:
    return {"item": item.name, "content": item.content, "style": item.style,
            "worker": worker or pool.worker_label()}


def _completed(record: Dict, out_dir: str, started: float) -> Dict:
    """``record`` with its seconds and what the item's ``run.json`` says."""
    info = manifest.read_json(os.path.join(out_dir, record["item"], manifest.RUN_JSON))
    device = info.get("device") or {}
    record.update(seconds=round(time.perf_counter() - started, 3),
                  steps=info.get("steps", record.get("steps")),
                  final_losses=info.get("final_losses"),
                  device=device.get("device"), threads=device.get("threads"))
    return record


def run_serial(config: settings.Config, items: Sequence[Item], out_dir: str) -> Iterator[Dict]:
    """Runs the items one after another in this process (one shared target cache)."""
    cli.import_tensorflow_quietly()
    cache = new_cache()
    for item in items:
        started = time.perf_counter()
        try:
            record = run_item(config, item, out_dir, cache)
        except KeyboardInterrupt:  # before the run's own SIGINT handling (e.g. set-up)
            record = dict(_new_record(item), status="interrupted", reason="SIGINT", steps=0)
            yield _completed(record, out_dir, started)
            return
        yield record
        if record["status"] == "interrupted":
            return


# --------------------------------------------------------------------------
# The batch


def new_cache():
    """A worker's cache of style targets, shared by the items it runs."""
    from nst_keras.engine import objective  # late: imports TensorFlow

    return objective.TargetCache()


def run_on_worker(cache, job) -> Dict:
    """One item on a pool worker: ``job`` is ``(config, item, out_dir)``."""
    config, item, out_dir = job
    record = run_item(config, item, out_dir, cache, pool.current_worker(),
                      callbacks=[StopOnCancel()])
    return {**record, "node": pool.current_node()}


def _lost_record(job, reason: str, attempts: int) -> Dict:
    return {**_new_record(job[1], "-"), "status": "failed", "seconds": 0.0,
            "reason": f"its worker died {attempts} times; last: {reason}"}


def _error_record(job, reason: str, attempts: int) -> Dict:
    return {**_new_record(job[1], "-"), "status": "failed", "seconds": 0.0, "reason": reason}


def _interrupted_record(job) -> Dict:
    _, item, out_dir = job
    info = manifest.read_json(os.path.join(out_dir, item.name, manifest.RUN_JSON))
    return {**_new_record(item, "-"), "seconds": 0.0, "steps": info.get("steps"),
            "reason": f"stopped at step {info.get('steps')}",
            "status": "interrupted" if info.get("status") != "finished" else "finished"}


def run_on_pool(config: settings.Config, items: Sequence[Item], out_dir: str, workers: int,
                address: Optional[str], max_retries: int, log) -> Iterator[Dict]:
    """The items on Ray workers (``nst_keras.pool``); yields each record as it ends."""
    for done in pool.run(run_on_worker, [(config, item, out_dir) for item in items],
                         workers=workers, address=address, setup=new_cache,
                         max_retries=max_retries, log=log, on_lost=_lost_record,
                         on_error=_error_record, on_interrupt=_interrupted_record):
        record = done.record
        record["attempts"] = done.attempts
        yield record


def _check_output_dir(out: Optional[str]) -> None:
    if not out:
        raise UserError("a batch needs --output_dir (the folder for every item's results)")
    rundir.check_writable(out)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """``[#####...............]``: the share of the items that have ended."""
    filled = width if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class Tally:
    """Counts the items as they end; writes the progress and summary lines."""

    def __init__(self, total: int, log: Callable[[str], None]):
        self.total, self.log, self.started = total, log, time.perf_counter()
        self.counts = collections.Counter()

    def group(self, status: str) -> str:
        return "failed" if status in FAILED else "finished" if status == "stopped" else status

    def add(self, record: Dict) -> None:
        self.counts[self.group(record["status"])] += 1
        done = sum(self.counts.values())
        ran = done - self.counts["skipped"]
        elapsed = time.perf_counter() - self.started
        eta = elapsed / ran * (self.total - done) if ran else 0.0
        reason = f" ({record['reason']})" if record.get("reason") else ""
        self.log(f"{progress_bar(done, self.total)} {done}/{self.total} {record['item']}: "
                 f"{record['status']}{reason} in {record['seconds']:.1f}s; "
                 f"ETA {_duration(eta)}")

    @property
    def exit_status(self) -> int:
        if self.counts["interrupted"] or sum(self.counts.values()) < self.total:
            return 130
        return 1 if self.counts["failed"] else 0

    def summary(self, out_dir: str) -> str:
        c = self.counts
        left = self.total - sum(c.values())
        rest = f", {c['interrupted'] + left} not done (interrupted)" if self.exit_status == 130 \
            else ""
        return (f"batch: {c['finished']} finished, {c['failed']} failed, {c['skipped']} "
                f"skipped of {self.total} items{rest} in "
                f"{_duration(time.perf_counter() - self.started)}; see "
                f"{os.path.join(out_dir, BATCH_LOG)}")


class Batch:
    """A planned batch: the checked settings, options and items (``UserError`` if bad)."""

    def __init__(self, config: settings.Config, contents: Sources, styles: Sources,
                 options: BatchOptions = BatchOptions(), log=print):
        if config.resume:
            raise UserError("--resume does not apply to a batch; run the same command "
                            "again to resume its items")
        self.options = options = fields.validate_fields(options)
        _check_output_dir(config.output_dir)
        if config.network is not None:
            if not os.path.isfile(config.network):
                raise UserError(f"--network={config.network} does not exist; give a .keras "
                                "file that python -m nst_keras.train wrote")
            self.items = network_items(contents, config.network)
            if config.style_blend_weights is not None:  # a wrong count fails every item
                networks.check_blend(networks.open_network(config.network, config.precision),
                                     config.style_blend_weights)
        else:
            self.items = make_items(contents, styles, options.pairing)
        first = self.items[0]
        self.config = settings.validate(config.replace(
            content_image=first.content,
            style_image=first.style if config.network is None else None))
        if isinstance(self.config.tile_size, int) and self.config.tile_size > 0:
            from nst_keras.engine import build  # late: TensorFlow only for a tiled batch
            build.check(self.config)  # terms that cannot be tiled, before any item
        self.out_dir, self.log = config.output_dir, log
        self.on_pool = bool(options.workers or options.ray_address)
        if self.on_pool:
            pool.require()
        if options.ray_address:
            pool.check_address(options.ray_address)
        self.tally = Tally(len(self.items), log)

    def records(self) -> Iterator[Dict]:
        if not self.on_pool:
            return run_serial(self.config, self.items, self.out_dir)
        o = self.options
        return run_on_pool(self.config, self.items, self.out_dir, o.workers, o.ray_address,
                           o.max_retries, self.log)

    def run(self) -> Iterator[Dict]:
        """Runs the items; yields each record after writing it to ``batch.jsonl``."""
        path = os.path.join(self.out_dir, BATCH_LOG)
        for record in self.records():
            os.makedirs(self.out_dir, exist_ok=True)
            record["ended"] = manifest.now()
            manifest.append_json_line(path, record)
            self.tally.add(record)
            yield record


def stylize_many(config: settings.Config, contents: Sources, styles: Sources,
                 options: BatchOptions = BatchOptions(), log=print) -> Iterator[Dict]:
    """Stylises every content x style pair (or zip) into ``config.output_dir``.

    ``options``: how (``BatchOptions``: pairing, Ray workers or cluster,
    retries), e.g. ``BatchOptions(pairing="zip", workers=2)``.

    Checks everything first (``UserError``, nothing written), then returns an
    iterator over each item's record as it ends (the ``batch.jsonl`` line):
    ``item``, ``status`` (finished, skipped, failed, non_finite, interrupted),
    ``reason``, ``seconds``, ``steps``, ``final_losses``, ``device``, ``worker``.
    """
    return Batch(config, contents, styles, options, log).run()


# --------------------------------------------------------------------------
# Command line


def _batch_from_flags() -> Batch:
    config = cli.config_from_flags(FLAGS) if not FLAGS["resume"].value else \
        settings.Config(resume=FLAGS["resume"].value)
    return Batch(config, config.content_image, config.style_image,
                 cli.options_from_flags(BatchOptions, FLAGS))


def _interrupted(error: BaseException) -> str:
    return "interrupted; finished items are kept, run the same command again to go on"


def main(argv=None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    argv = sys.argv if argv is None else argv
    if cli.print_help_if_asked(argv, __doc__, FLAGS):
        return 0

    def body() -> int:
        cli.parse(argv, FLAGS)
        batch = _batch_from_flags()
        try:
            for _ in batch.run():
                pass
        except KeyboardInterrupt as e:  # the summary still says what was done
            print(f"stopped: {_interrupted(e)}", file=sys.stderr, flush=True)
        print(batch.tally.summary(batch.out_dir), flush=True)
        return batch.tally.exit_status

    return cli.exit_status(body, _interrupted)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
