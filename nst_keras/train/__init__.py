"""Train a style network for one painting: ``python -m nst_keras.train
--style_image=painting.jpg --photos=DIR --output=painting.keras --output_dir=RUN``.

Johnson, Alahi & Fei-Fei (2016): a feed-forward network
(``engine.network``) learns, from a folder of photos, to give in one pass
the picture the run command's optimisation would (``engine.training``: the
same loss terms, evaluated on batches).  Every objective flag of
``nst_keras.run`` applies (``options.CONFIG_FIELDS``), with its presets:
``--preset=network_fast`` trains a small network on a CPU in minutes,
``--preset=network_johnson`` is the published recipe (a GPU's hours).

The run folder (``--output_dir``) holds ``run.json`` (settings, photos
used and skipped, device, status), ``metrics.jsonl`` (one line every
``--log_every`` steps), ``loss.png``, ``checkpoint.npz`` (the network, the
optimiser's state and the step: the batches are a function of the seed and
the step, so ``--resume=RUN`` continues exactly) and ``preview.png`` (a few
fixed photos over the network's pictures of them).  ``--output`` is written
atomically at every checkpoint and at the end.  Ctrl-C saves the checkpoint
and the network first.

Exit status: 0 trained; 1 the loss became NaN/Inf (the last checkpoint is
kept); 2 bad input or settings (nothing written); 130 interrupted
(checkpoint and network saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import signal
import time
from typing import Dict, List, Optional

import numpy as np

from nst_keras import fields, settings
from nst_keras.engine import hardware, imaging, vgg
from nst_keras.errors import Interrupted, NonFiniteLoss, UserError
from nst_keras.output import files as filelib, manifest, precision_cache, rundir
from nst_keras.train import data
from nst_keras.train.options import CONFIG_FIELDS, TrainOptions

CHECKPOINT = "checkpoint.npz"
PREVIEW = "preview.png"
PREVIEWS = 4  # photos on the preview sheet


# --------------------------------------------------------------------------
# Settings


def training_config(config: settings.Config, options: TrainOptions) -> settings.Config:
    """The ``Config`` the terms are built from: ``config``'s objective fields, the
    photos as content, the crop size as the output's, Adam; validated."""
    if config.style_masks is not None:
        raise UserError("--style_masks: a network is trained for one style over the whole "
                        "picture; leave --style_masks out")
    if config.tile_size not in (0, None):
        raise UserError(f"--tile_size={config.tile_size}: training crops are small and never "
                        "tiled; leave --tile_size out (or set it to 0)")
    if config.style_blend_weights is not None and \
            len(settings.style_sources(config.style_image)) > 1:
        raise UserError("--style_blend_weights: several paintings train one network with a "
                        "scale and shift per painting, blended when it runs; leave "
                        "--style_blend_weights out of the training and give it to run, "
                        "batch or video")
    kept = {name: getattr(config, name) for name in CONFIG_FIELDS}
    kept.update(devices=None, distribute="mirrored", tile_size=0)
    built = settings.Config(**kept, content_image=options.photos, img_nrows=options.image_size,
                            optimizer="adam", learning_rate=options.learning_rate,
                            iterations=options.steps, log_every=options.log_every)
    return settings.validate(built)


def saved_settings(config: settings.Config, options: TrainOptions) -> Dict:
    """The settings as ``run.json`` keeps them (what ``--resume`` compares)."""
    cfg = settings.to_dict(config)
    return {"train": dataclasses.asdict(options),
            "config": {name: cfg[name] for name in CONFIG_FIELDS}}


def _same(a, b) -> bool:
    norm = lambda v: [norm(x) for x in v] if isinstance(v, (list, tuple)) else v  # noqa: E731
    return norm(a) == norm(b)


def check_resume(stored: Dict, config: settings.Config, options: TrainOptions) -> None:
    """A ``UserError`` naming the first setting that changes the result and differs
    from the run's (``--steps``, ``--output`` and the logging may change)."""
    now = saved_settings(config, options)
    for name, field in fields.fields_of(TrainOptions).items():
        # A setting the run's version did not have yet had its default then.
        was = stored["train"].get(name, field.default)
        if field.metadata["result"] and not _same(was, now["train"][name]):
            _refuse_change(name, was, now["train"][name])
    for name in CONFIG_FIELDS:
        if name in ("devices", "distribute", "precision", "jit_compile"):
            continue  # where and how it computes; the network is the same
        if not _same(stored["config"].get(name), now["config"][name]):
            _refuse_change(name, stored["config"].get(name), now["config"][name])


def _refuse_change(name, was, now) -> None:
    raise UserError(f"--{name}={fields.show_value(now)} differs from the run's "
                    f"--{name}={fields.show_value(was)}; --resume continues the same "
                    "training, so leave it as it was (or start a new --output_dir)")


# --------------------------------------------------------------------------
# The run folder


def _write_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    filelib.atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(run_dir: str):
    """``(step, state arrays)`` of the run folder's checkpoint; ``UserError`` if none."""
    path = os.path.join(run_dir, CHECKPOINT)
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise UserError(f"--resume={run_dir}: no readable {CHECKPOINT} there ({e}); give a "
                        "training run folder") from None
    step = int(arrays.pop("step"))
    return step, arrays


def save_network(network, path: str) -> None:
    """``network`` as a ``.keras`` file in float32 (``engine.network.with_precision``),
    written through a temporary file and a rename."""
    from nst_keras.engine.network import with_precision  # late: starts TensorFlow

    if network.get_layer("pad_to_multiple").dtype_policy.name != "float32":
        network = with_precision(network, "float32")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)[:-len('.keras')]}.partial.keras")
    try:
        network.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def preview_sheet(photos: np.ndarray, *pictures: np.ndarray) -> np.ndarray:
    """The photos in a row over the network's pictures of them (one row per
    painting of a several-painting network), ``uint8``."""
    return np.concatenate([np.concatenate(list(row), 1) for row in (photos, *pictures)], 0)


def check_outputs(options: TrainOptions) -> None:
    """Refuses, before anything is written, to overwrite another run or network."""
    run_dir = options.output_dir
    rundir.check_writable(run_dir)
    parent = os.path.dirname(os.path.abspath(options.output))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--output={options.output}: {parent} is not a writable folder; "
                        "choose another --output")
    if os.path.isdir(options.output):
        raise UserError(f"--output={options.output} is a folder; name the .keras file")
    if options.resume or options.overwrite:
        return
    found = [n for n in ("run.json", CHECKPOINT) if os.path.exists(os.path.join(run_dir, n))]
    if found:
        raise UserError(f"--output_dir={run_dir} already holds a training run "
                        f"({', '.join(found)}); pass --resume={run_dir} to continue it, "
                        "--overwrite to replace it, or choose another --output_dir")
    if os.path.exists(options.output):
        raise UserError(f"--output={options.output} already exists; pass --overwrite to "
                        "replace it or choose another --output")


# --------------------------------------------------------------------------
# Training


class _Signals:
    """Ctrl-C and SIGTERM set a flag the loop reads after its step."""

    def __init__(self):
        self.name: Optional[str] = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.name is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(options: TrainOptions, config: Optional[settings.Config] = None, log=print) -> Dict:
    """Trains a network for ``config.style_image`` on ``options.photos``.

    Args:
      options: the training's own settings (``TrainOptions``).
      config: the objective (the ``options.CONFIG_FIELDS`` of a ``Config``;
        ``Config()`` when not given: the keras.io tutorial's terms).
      log: receives the progress lines.

    Returns:
      The final ``run.json`` as a dict.

    Raises:
      UserError: bad settings or inputs (nothing written).
      NonFiniteLoss: the loss became NaN/Inf (the last checkpoint is kept).
      Interrupted: SIGINT/SIGTERM stopped it after saving the checkpoint.
    """
    options = fields.validate_fields(options)
    config = config if config is not None else settings.Config()
    if options.resume:
        stored = _read_run(options.resume)
        options = dataclasses.replace(options, output_dir=options.resume)
    if not options.output_dir:
        raise UserError("no --output_dir given; name the run folder (e.g. --output_dir=runs/"
                        "painting)")
    built = training_config(config, options)
    if options.resume:
        check_resume(stored, config, options)
    check_outputs(options)
    for source in settings.style_sources(built.style_image):
        if isinstance(source, str) and not imaging.is_url(source):
            imaging.fetch(source)
    files, skipped = data.find_photos(options.photos, options.batch_size)
    start_step, state = (read_checkpoint(options.resume) if options.resume else (0, None))
    if options.resume and start_step >= options.steps:
        raise UserError(f"--resume={options.resume}: the run is already at step {start_step} of "
                        f"--steps={options.steps}; raise --steps to train on")
    with precision_cache.used():
        return _train(options, config, built, files, skipped, start_step, state, log)


def _read_run(run_dir: str) -> Dict:
    stored = manifest.read_json(os.path.join(run_dir, "run.json")).get("settings")
    if not stored or "train" not in stored:
        raise UserError(f"--resume={run_dir}: no training run.json there; give the "
                        "--output_dir of a training run")
    return stored


def _style_pictures(config: settings.Config, options: TrainOptions) -> List[np.ndarray]:
    """The paintings, ``style_scale`` times the crop size tall, their own aspect kept."""
    rows = max(32, int(round(options.image_size * float(config.style_scale))))
    out = []
    for source in settings.style_sources(config.style_image):
        picture = imaging.open_picture(source)
        size = imaging.target_size(*picture.size, rows)
        out.append(imaging.load_image(picture, size, config.interpolation))
    return out


# The last trainer built in this process, with what it was built from and its
# first state: a later run of the same settings (a resumed run, a notebook's
# second run) takes it back instead of tracing its step again.
_KEPT: Dict[str, object] = {}


def _reuse_key(options: TrainOptions, built: settings.Config, precision: str,
               pictures: List[np.ndarray], devices=(None, "mirrored")) -> str:
    """What fixes a trainer: every setting that changes the result, the devices
    (``(--devices, --distribute)``: ``built`` leaves them out), the precision,
    the weights file's version and the pictures' pixels (the paintings, the
    reference photo)."""
    digest = hashlib.sha256()
    for picture in pictures:
        digest.update(str(picture.shape).encode() + np.ascontiguousarray(picture).tobytes())
    train = {name: getattr(options, name) for name, field in fields.fields_of(TrainOptions)
             .items() if field.metadata["result"]}
    weights = built.weights
    if os.path.isfile(weights):  # a file changed in place is another backbone
        weights = [os.path.abspath(weights), os.stat(weights).st_mtime_ns,
                   os.stat(weights).st_size]
    config = settings.to_dict(built)
    for name in ("iterations", "log_every"):  # --steps and --log_every: a resume may change them
        config.pop(name)
    return json.dumps([train, config, list(devices), precision, weights,
                       digest.hexdigest()], sort_keys=True, default=str)


def _build(options, config, built, files, skipped, state):
    """The trainer, the photos and the objective's term weights (nothing written)."""
    precision, why = hardware.resolve_precision(built.precision, built.model)
    photos = data.Photos(files, options.image_size, options.batch_size, built.seed, skipped)
    previews = photos.previews(PREVIEWS)
    paintings = [vgg.preprocess_image(s) for s in _style_pictures(built, options)]
    photo = vgg.preprocess_image(previews[0])
    key = _reuse_key(options, built, precision, [photo, *paintings],
                     (config.devices, config.distribute))
    if _KEPT.get("key") == key:
        trainer, info = _KEPT["trainer"], _KEPT["info"]
        trainer.load_state(_KEPT["first"])
    else:
        _KEPT.clear()  # one trainer at a time
        trainer, info = _new_trainer(options, config, built, precision, why, photos,
                                     previews, paintings, photo)
        _KEPT.update(key=key, trainer=trainer, info=info, first=trainer.state())
    if state is not None:
        try:
            trainer.load_state(state)
        except ValueError as e:
            raise UserError(f"--resume={options.resume}: {e}; start a new --output_dir") \
                from None
    return trainer, photos, info


def _new_trainer(options, config, built, precision, why, photos, previews, paintings, photo):
    """A trainer and what the run folder records of it (``info``)."""
    from nst_keras.engine import build, network, pipeline, tiling, training  # late: TensorFlow
    from nst_keras.engine.terms import Pictures  # late: as above

    strategy = tiling.make_strategy(config.devices, config.distribute)
    if strategy is not None and options.batch_size % strategy.num_replicas_in_sync:
        raise UserError(f"--batch_size={options.batch_size} does not split over the "
                        f"{strategy.num_replicas_in_sync} devices of --devices; give a multiple")
    resolved = built.replace(precision=precision)
    backbone, weights = vgg.load_backbone(built.model, built.weights, built.seed)
    extractor = pipeline.build_extractor(resolved, backbone, strategy)
    if len(paintings) == 1:
        objectives = [build.build_objective(resolved, extractor, Pictures(photo, paintings))]
    else:  # one objective per painting, each with its own style targets
        sources = settings.style_sources(resolved.style_image)
        objectives = [build.build_objective(resolved.replace(style_image=[source]), extractor,
                                            Pictures(photo, [painting]))
                      for source, painting in zip(sources, paintings)]
    objective = objectives[0]
    stability = None
    if options.stability_weight > 0:
        stability = (options.stability_weight, training.StabilityTerm(
            options.image_size ** 2, options.stability_shift, options.stability_noise))
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        net = network.build_network(options.network_width, precision, built.seed,
                                    styles=len(paintings), antialias=options.network_antialias)
        optimizer = training.make_optimizer(options.learning_rate, precision)
    trainer = training.Trainer(net, [training.BatchObjective(o, extractor) for o in objectives],
                               optimizer, strategy, built.jit_compile, stability, built.seed)
    term_weights = {t.name: w for w, t in objective.items}
    if stability is not None:
        term_weights[stability[1].name] = stability[0]
    info = {"weights": weights, "precision": precision, "precision_reason": why,
            "term_weights": term_weights, "paintings": len(paintings),
            "previews": previews, "stylise": network.StyleNetwork(net)}
    return trainer, info


class _Folder:
    """The run folder as the training goes: run.json, metrics, checkpoint, preview."""

    def __init__(self, options, config, trainer, photos, info, start_step, resumed, threads):
        self.options, self.trainer, self.photos, self.info = options, trainer, photos, info
        self.dir = options.output_dir
        os.makedirs(self.dir, exist_ok=True)
        self.metrics = os.path.join(self.dir, manifest.METRICS)
        self.history = [r for r in _read_lines(self.metrics)
                        if r.get("iteration", 0) <= start_step] if resumed else []
        manifest.write_json_lines(self.metrics, self.history)
        net = trainer.network
        self.record = {
            "command": "nst_keras.train", "status": "running", "started": manifest.now(),
            "settings": saved_settings(config, options), "weights": info["weights"],
            "precision": info["precision"], "precision_reason": info["precision_reason"],
            "threads": threads, "replicas": trainer.replicas, "device": manifest.device(),
            "versions": manifest.versions(),
            "photos": {"folder": options.photos, "used": len(photos.files),
                       "skipped": len(photos.skipped), "skipped_files": photos.skipped[:20]},
            "parameters": int(net.count_params()), "term_weights": info["term_weights"],
            "paintings": info["paintings"],
            "resumed_from": start_step if resumed else None, "step": start_step,
            "steps": options.steps, "output": options.output}
        self.run_json = os.path.join(self.dir, manifest.RUN_JSON)
        manifest.write_json(self.run_json, self.record)

    def log_line(self, step: int, values, elapsed: float, rate: float) -> None:
        line = {"iteration": step, **{k: float(v) for k, v in values.items()},
                **({"painting": self.trainer.painting(step - 1)}
                   if self.trainer.styles > 1 else {}),
                "elapsed_s": round(elapsed, 3),
                "images_per_s": round(rate * self.options.batch_size, 3)}
        self.history.append(line)
        manifest.append_json_line(self.metrics, line)

    def save(self, step: int) -> List[str]:
        arrays = self.trainer.state()
        arrays["step"] = np.asarray(step, np.int64)
        _write_npz(os.path.join(self.dir, CHECKPOINT), arrays)
        save_network(self.trainer.network, self.options.output)
        self.record["step"] = step
        manifest.write_json(self.run_json, self.record)
        return [os.path.join(self.dir, CHECKPOINT), self.options.output]

    def preview(self) -> None:
        previews, stylise = self.info["previews"], self.info["stylise"]
        blends = [None] if stylise.styles == 1 else np.eye(stylise.styles)
        made = [stylise(previews, batch_size=len(previews), blend=b) for b in blends]
        filelib.save_image(os.path.join(self.dir, PREVIEW), preview_sheet(previews, *made))

    def finish(self, status: str, step: int, log, message: str = "") -> Dict:
        self.record.update(status=status, step=step, ended=manifest.now(), message=message,
                           photos={**self.record["photos"],
                                   "failed_to_decode": len(self.photos.failed)})
        if self.history:
            self.record["final"] = self.history[-1]
        manifest.write_json(self.run_json, self.record)
        note = manifest.plot_losses(os.path.join(self.dir, manifest.LOSS_PLOT), self.history,
                                    self.info["term_weights"])
        if note:
            log(note)
        return self.record


def _train(options, config, built, files, skipped, start_step, state, log) -> Dict:
    threads = hardware.configure_threads()
    trainer, photos, info = _build(options, config, built, files, skipped, state)
    folder = _Folder(options, config, trainer, photos, info, start_step, state is not None,
                     threads)
    log(f"training a {options.network_width:g}-wide network "
        f"({folder.record['parameters']:,} parameters) on {len(files)} photos "
        f"({len(skipped)} skipped), {options.image_size}px crops, batch "
        f"{options.batch_size}, {info['precision']}; steps {start_step + 1}..{options.steps}")
    began, step, last_saved = time.perf_counter(), start_step, start_step
    try:
        with _Signals() as signals:
            for batch in photos.dataset(start_step, options.steps).as_numpy_iterator():
                values = trainer.step(step, batch)
                step += 1
                if not math.isfinite(values["loss"]):
                    folder.finish("non_finite", step, log, f"loss {values['loss']} at {step}")
                    raise NonFiniteLoss(step, values["loss"], last_saved or None,
                                        [options.output] if last_saved else [],
                                        info["precision"])
                if step % options.log_every == 0 or step == options.steps:
                    elapsed = time.perf_counter() - began
                    rate = (step - start_step) / max(elapsed, 1e-9)
                    folder.log_line(step, values, elapsed, rate)
                    log(f"step {step}/{options.steps}  loss {values['loss']:.4g}  "
                        f"{rate:.2f} steps/s  ETA {_eta((options.steps - step) / rate)}")
                if step % options.checkpoint_every == 0 and step < options.steps:
                    folder.save(step)
                    last_saved = step
                if options.preview_every and step % options.preview_every == 0:
                    folder.preview()
                if signals.name is not None:
                    paths = folder.save(step)
                    folder.finish("interrupted", step, log, f"interrupted by {signals.name}")
                    raise Interrupted(step, signals.name, paths, options.output_dir)
    except KeyboardInterrupt:
        folder.finish("interrupted", step, log, "interrupted")
        raise
    folder.save(step)
    folder.preview()
    log(f"trained {step} steps in {time.perf_counter() - began:.0f} s; saved {options.output}")
    return folder.finish("finished", step, log)


def _read_lines(path: str) -> List[Dict]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    break
    except OSError:
        pass
    return out


__all__ = ["TrainOptions", "train"]
