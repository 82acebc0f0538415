"""``stylize``: one style transfer, in memory, top to bottom.

Example::

    from nst_keras import Config, stylize
    result = stylize(Config(content_image="photo.jpg", style_image="art.jpg",
                            iterations=200))
    result.image            # uint8 (rows, cols, 3) RGB
    result.history[-1]      # {"iteration": ..., "loss": ..., ...}

The data path, as ``stylize`` reads:

1. inputs: open the content, style(s) and initial image (``open_sources``);
2. scales: one stage per output height (``plan_stages``), each with its
   resized and recoloured pictures (``stage_inputs``);
3. targets and objective: the cut VGG extractor (``vgg``) and the content
   features and style Gram matrices it gives (``objective``);
4. loop: an optimiser (``optim``) per stage, warm-started from the previous
   one; after every step the ``Run`` checks the loss and reports a
   ``callbacks.Progress`` to the callbacks;
5. result: the final picture, its network image and the logged history.

Nothing here writes a file: the file layer (``nst_keras.output.stylize``)
attaches its run directory as a callback and hands in the state to resume
from (``start``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from nst_keras.engine import build, hardware, imaging, memory, optim, tiling, vgg
from nst_keras import settings
from nst_keras.engine.callbacks import FiniteGuard, Outcome, PrintLog, Progress, RunState, \
    StopOnSignal, StopWhenStyleClose
from nst_keras.engine.objective import Objective, TargetCache, held_bytes
from nst_keras.engine.terms import Pictures
from nst_keras.errors import UserError
from nst_keras.settings import Config


@dataclasses.dataclass
class Result:
    """What ``stylize`` returns.

    Attributes:
      image: final picture, ``uint8 (rows, cols, 3)`` RGB.
      tensor: final network image, ``float32 (1, rows, cols, 3)`` BGR centred
        (the image average with ``ema_decay``).
      history: one dict per logged step (iteration, loss, content_loss,
        style_loss, tv_loss, elapsed_s, evaluations; scale when multi-scale).
      paths: files written (by the run directory, if any).
      weights: description of the weights used.
      iterate: with ``ema_decay``, the last optimiser iterate; else ``None``.
      status: ``finished``, or ``stopped`` when a callback stopped the run.

    With ``preserve_colors="luminance"``, ``tensor`` is the optimised
    luminance image and ``image`` has the content's colours put back.
    """

    image: np.ndarray
    tensor: np.ndarray
    history: List[Dict[str, float]]
    paths: List[str]
    weights: str
    iterate: Optional[np.ndarray] = None
    status: str = "finished"


# --------------------------------------------------------------------------
# 1-2. Inputs and scales


@dataclasses.dataclass
class Stage:
    """One stage of the coarse-to-fine run (a single stage without ``scales``)."""

    index: int
    count: int
    rows: int
    cols: int
    iterations: int
    first_step: int

    @property
    def last_step(self) -> int:
        return self.first_step + self.iterations - 1


def plan_stages(config: Config, content_width: int, content_height: int) -> List[Stage]:
    """The stages: one per height, steps numbered on across them."""
    heights, counts = config.stage_heights(), config.iteration_counts()
    stages, first = [], 1
    for i, (h, n) in enumerate(zip(heights, counts)):
        rows, cols = imaging.target_size(content_width, content_height, h)
        stages.append(Stage(i, len(heights), rows, cols, n, first))
        first += n
    return stages


@dataclasses.dataclass
class Sources:
    """The opened input pictures (PIL, full size) before any resizing."""

    content: object
    styles: List[object]
    init: object = None  # a picture when --init is a path, URL or array
    content_name: str = "the content image"
    style_names: List[str] = dataclasses.field(default_factory=list)


def open_sources(config: Config, content=None, style=None) -> Sources:
    """Opens content, style(s) and an initial image file (nothing resized)."""
    content_src = content if content is not None else config.content_image
    style_src = settings.style_sources(style if style is not None else config.style_image)
    content_picture = imaging.open_picture(content_src)  # content first, as users list them
    styles = [imaging.open_picture(s) for s in style_src]
    init = None
    if not (isinstance(config.init, str) and config.init in settings.INITS):
        init = imaging.open_picture(config.init)
    return Sources(content_picture, styles, init,
                   f"content image {imaging.describe(content_src)}",
                   [f"style image {imaging.describe(s)}" for s in style_src])


def _sized(picture, size, config: Config, what: str) -> np.ndarray:
    if min(size) < vgg.MIN_SIDE:
        raise UserError(
            f"{what} would be {size[0]}x{size[1]} pixels; VGG needs at least "
            f"{vgg.MIN_SIDE} per side: raise --img_nrows (or --scales, --style_scale) "
            "or use a less elongated image")
    return imaging.load_image(picture, size, config.interpolation)


def style_size(rows: int, cols: int, style_scale: float):
    """Size the style is resized to: ``style_scale`` times the output size.

    keras.io resizes the style to the output's own size (scale 1).  A larger
    scale gives the network a bigger view of the style picture, so its
    brush strokes and motifs come out larger relative to the output.
    """
    if float(style_scale) == 1.0:
        return rows, cols
    return max(1, int(round(rows * style_scale))), max(1, int(round(cols * style_scale)))


@dataclasses.dataclass
class StageInputs:
    """The pictures one stage's losses see, and the content at its colours."""

    content: np.ndarray          # RGB picture the content loss sees
    styles: List[np.ndarray]     # RGB pictures the style loss sees
    content_colour: np.ndarray   # the content picture itself (chroma source)
    masks: Optional[List[np.ndarray]] = None  # (1, rows, cols, 1) per style (--style_masks)


def stage_inputs(config: Config, sources: Sources, stage: Stage) -> StageInputs:
    """Resizes and recolours (``preserve_colors``) the inputs of one stage."""
    content = _sized(sources.content, (stage.rows, stage.cols), config, sources.content_name)
    ssize = style_size(stage.rows, stage.cols, config.style_scale)
    names = sources.style_names or ["the style image"] * len(sources.styles)
    styles = [_sized(s, ssize, config, n) for s, n in zip(sources.styles, names)]
    loss_content, loss_styles = imaging.colors_for_loss(config.preserve_colors, content, styles)
    masks = None
    if config.style_masks is not None:
        masks = [imaging.load_mask(m, (stage.rows, stage.cols), f"--style_masks mask {i + 1}")
                 for i, m in enumerate(config.style_masks)]
    return StageInputs(loss_content, loss_styles, content, masks)


def load_inputs(config: Config, content=None, style=None):
    """Content and style pictures at the output size (keras.io's rule)."""
    sources = open_sources(config, content, style)
    inputs = stage_inputs(config, sources, plan_stages(config, *sources.content.size)[-1])
    return inputs.content, inputs.styles


def initial_image(config: Config, sources: Sources, stage: Stage,
                  inputs: StageInputs) -> np.ndarray:
    """The first stage's starting network image (``--init``)."""
    name = config.init if isinstance(config.init, str) else None
    if name == "content":
        picture = inputs.content
    elif name == "noise":
        picture = imaging.noise_picture(stage.rows, stage.cols, config.seed)
    else:
        source = sources.styles[0] if name == "style" else sources.init
        picture = _sized(source, (stage.rows, stage.cols), config, "the initial image")
        _, (picture,) = imaging.colors_for_loss(config.preserve_colors,
                                                inputs.content_colour, [picture])
    return vgg.preprocess_image(picture)


def picture_of(tensor, config: Config, content_colour: Optional[np.ndarray]) -> np.ndarray:
    """The RGB picture a network image stands for (``uint8``).

    With ``preserve_colors=luminance`` the optimised image holds the luminance
    only; the content's I and Q channels (``content_colour``, same size) are
    put back.
    """
    picture = vgg.deprocess_image(np.asarray(tensor), config.deprocess_mean)
    if config.preserve_colors == "luminance" and content_colour is not None:
        picture = np.clip(np.round(imaging.restore_chroma(picture, content_colour)), 0, 255)
        picture = picture.astype(np.uint8)
    return picture


# --------------------------------------------------------------------------
# 3. Targets and objective


def build_extractor(config: Config, backbone=None, strategy=None):
    """The cut VGG extractor for the configured layers (checks their names).

    ``precision="auto"`` is resolved here (``hardware.resolve_precision``).
    Under a ``tf.distribute`` ``strategy`` its weights are mirrored on every
    replica.
    """
    if backbone is None:
        backbone, _ = vgg.load_backbone(config.model, config.weights, config.seed)
    content_layers, style_layers = config.active_layers()
    vgg.check_layers(backbone, content_layers + style_layers, config.model)
    if not content_layers + style_layers:  # total variation alone needs no network
        return None
    precision = config.precision  # resolved once, by stylize
    if precision == "auto":
        precision, _ = hardware.resolve_precision(precision, config.model)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return vgg.build_extractor(backbone, content_layers + style_layers,
                                   precision=precision, pooling=config.pooling,
                                   padding=config.padding)


def network_key(config: Config) -> tuple:
    """What fixes the network's weights and arithmetic (the ``network=True`` fields)."""
    return settings.network_key(config)


def _extractor(config: Config, backbone, strategy, cache):
    """``build_extractor``, kept by a worker's ``TargetCache`` per network and layers."""
    if not isinstance(cache, TargetCache) or strategy is not None:
        return build_extractor(config, backbone, strategy)
    key = (network_key(config), tuple(map(tuple, config.active_layers())))
    return cache.extractor(key, lambda: build_extractor(config, backbone, strategy))


def build_loss(config: Config, content_picture, style_pictures, backbone=None,
               extractor=None, target_cache=None, strategy=None, masks=None,
               extra_terms=()) -> Objective:
    """The ``Objective`` of ``config`` for RGB pictures already sized (``engine.build``).

    ``target_cache``: a mapping that keeps style Gram targets across calls,
    e.g. one per process for a batch of runs (a ``TargetCache`` keeps the
    compiled objective too).  When ``memory.tile_size_for`` says the size is
    tiled, a ``tiling.TiledObjective`` (same interface), its tiles spread
    over ``strategy``'s replicas.  ``masks``: ``(1, rows, cols, 1)`` per
    style picture; ``extra_terms``: ``(name, weight, term)`` triples added to
    the term list (a term that is not ``tileable`` stops a tiled run in one
    line).
    """
    extractor = extractor if extractor is not None else build_extractor(config, backbone)
    pictures = Pictures(vgg.preprocess_image(content_picture),
                        [vgg.preprocess_image(p) for p in style_pictures], masks)
    tile = memory.tile_size_for(pictures.content.shape[1], pictures.content.shape[2], config)
    if tile and extractor is not None:
        return build.build_objective(config, extractor, pictures, tile_size=tile,
                                     halo=tiling.halo_for(config), strategy=strategy,
                                     extra_terms=extra_terms)
    return build.build_objective(config, extractor, pictures, target_cache=target_cache,
                                 network_key=network_key(config), extra_terms=extra_terms)


# --------------------------------------------------------------------------
# 4. The loop


class Run:
    """The live run: what callbacks see (``config``, ``stages``, ``weights``,
    ``history``, ``step``) and the bookkeeping between the optimiser and them.

    Args:
      start: a ``RunState`` to continue from (``--resume``), or ``None``.
      strategy: the ``tf.distribute`` strategy tiled stages spread tiles over.
      target_cache, extra_terms: see ``stylize``.
    """

    def __init__(self, config: Config, stages: List[Stage], weights: str, callbacks,
                 start: Optional[RunState], log, device: Optional[Dict] = None,
                 strategy=None, target_cache=None, extra_terms=()):
        self.config, self.stages, self.weights = config, stages, weights
        self.device = device or {}  # precision chosen and why, threads
        self.callbacks, self.start, self.log = list(callbacks), start, log
        self.history = [dict(r) for r in start.history if r["iteration"] <= start.step] \
            if start else []
        self.step = start.step if start else 0
        self.start_time = time.perf_counter() - (start.elapsed_s if start else 0.0)
        self.guard = FiniteGuard(lag=0 if config.optimizer == "lbfgs" else 1)
        self.stop_reason: Optional[str] = None
        self.stop_status = "stopped"
        self.stage: Optional[Stage] = None
        self.image = self.optimizer = self.average = self.inputs = None
        self.losses: Optional[Dict[str, float]] = None
        self.strategy = strategy  # the tf.distribute strategy tiles are spread over
        # What each stage's objective is built with (``build_loss``): a mapping
        # keeping style targets across runs, and extra terms.
        self.target_cache, self.extra_terms = target_cache, tuple(extra_terms)
        # {term name: weight} of the objective of the current stage, every term
        # of its list (the log line, metrics and loss.png report each one).
        self.term_weights: Dict[str, float] = {}

    @property
    def first_stage(self) -> int:
        return int(self.start.scale_index) if self.start else 0

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None or self.guard.stopped

    def request_stop(self, reason: str, status: str = "stopped") -> None:
        """Ends the loop after the current step with ``status``: ``stopped``,
        ``interrupted`` (a signal) or ``finished`` (a stopping rule was met)."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_status = reason, status

    def output(self):
        """The network image the stage hands on and saves (the average, if any)."""
        return self.average.value() if self.average is not None else self.image

    def picture(self, tensor=None) -> np.ndarray:
        """``uint8`` RGB picture of ``tensor`` (default: the current output)."""
        tensor = self.output() if tensor is None else tensor
        colour = self.inputs.content_colour if self.inputs is not None else None
        return picture_of(np.asarray(tensor), self.config, colour)

    def state(self) -> RunState:
        """What a checkpoint holds to continue from this step."""
        return RunState(
            image=self.image.numpy(), optimizer_state=self.optimizer.state(), step=self.step,
            history=list(self.history), elapsed_s=time.perf_counter() - self.start_time,
            evaluations=self.optimizer.evaluations, scale_index=self.stage.index,
            extra_images=self.average.state() if self.average is not None else {})

    def begin(self) -> None:
        for callback in self.callbacks:
            callback.on_start(self)

    def attach(self, stage: Stage, inputs: StageInputs, image, optimizer, average) -> int:
        """Takes over one stage; returns its first step (after a restored state's)."""
        self.stage, self.inputs = stage, inputs
        self.image, self.optimizer, self.average = image, optimizer, average
        first = stage.first_step
        start = self.start
        if start is not None and start.scale_index == stage.index:
            if tuple(start.image.shape) != tuple(image.shape):
                raise UserError(
                    f"--resume={self.config.resume}: the checkpoint's image is "
                    f"{start.image.shape[1]}x{start.image.shape[2]} but the inputs give "
                    f"{image.shape[1]}x{image.shape[2]}; did an input image change?")
            image.assign(start.image)
            optimizer.load_state(start.optimizer_state)
            optimizer.evaluations = start.evaluations
            if average is not None:
                average.load_state(start.extra_images)
            self.start, first = None, start.step + 1
        self.guard.start(first - 1, image)
        return first

    def on_step(self, step: int, terms) -> bool:
        """The optimiser's ``on_step``: checks, records, reports; ``False`` stops."""
        losses = {k: float(v.numpy()) for k, v in terms.items()}
        if not self.guard.observe(step, losses["loss"], self.image):
            return False
        self.step, self.losses = step, losses
        elapsed = time.perf_counter() - self.start_time
        record = None
        if self.config.log_every and step % self.config.log_every == 0:
            record = {"iteration": step, **losses, "elapsed_s": round(elapsed, 4),
                      "evaluations": self.optimizer.evaluations}
            if self.stage.count > 1:
                record["scale"] = self.stage.rows
            self.history.append(record)
        progress = Progress(step, self.stages[-1].last_step, self.stage.index,
                            self.stage.count, (self.stage.rows, self.stage.cols), losses,
                            elapsed, self.optimizer.evaluations, record, self)
        for callback in self.callbacks:
            callback.on_step(progress)
        return self.stop_reason is None

    def end(self, error: Optional[BaseException] = None) -> Outcome:
        """Tells every callback how the run ended; returns the ``Outcome``."""
        outcome = Outcome("finished", self.step, losses=self.losses,
                          precision=self.config.precision, output_dir=self.config.output_dir)
        if error is not None:
            text = str(error).strip()
            outcome.status = "failed"
            outcome.reason = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
            outcome.reason = outcome.reason.rstrip(": ")
        elif self.guard.stopped:
            kept = self.guard.last_finite()
            outcome.status, outcome.bad_step = "non_finite", self.guard.bad_step
            outcome.bad_value, outcome.step = self.guard.bad_value, kept[0] if kept else 0
            if kept is not None:
                self.image.assign(kept[1])
                outcome.tensor = kept[1].numpy()
        else:
            outcome.tensor = self.output().numpy()
            if self.stop_reason is not None:
                outcome.status, outcome.reason = self.stop_status, self.stop_reason
        for callback in self.callbacks:
            callback.on_end(self, outcome)
        return outcome


@dataclasses.dataclass
class StageResult:
    tensor: np.ndarray            # what the stage hands on (average if ema)
    iterate: np.ndarray           # the last optimiser iterate
    optimizer: object


def _image_and_optimizer(run: Run, objective, start: np.ndarray):
    """The image variable and the optimiser of a stage.  A worker's
    ``TargetCache`` keeps them per objective and settings, reset to the state a
    new pair would have, so the compiled SGD/Adam step is traced once."""
    config = run.config

    def build():
        image = tf.Variable(start, dtype=tf.float32)
        return image, optim.make_optimizer(
            config.optimizer, objective, image, config.resolved_learning_rate(),
            config.decay_steps, config.decay_rate, jit_compile=config.jit_compile,
            bounds=vgg.pixel_bounds() if config.clamp_pixels else None)

    cache = run.target_cache
    if not isinstance(cache, TargetCache) or config.optimizer == "lbfgs" or \
            getattr(objective, "host_loop", False):
        return build()
    key = (id(objective), tuple(start.shape), config.optimizer, config.resolved_learning_rate(),
           config.decay_steps, config.decay_rate, config.jit_compile)
    image, optimizer = cache.keep(
        cache.optimizers, key, build,
        lambda pair: held_bytes(pair[0], pair[1].optimizer.variables))
    image.assign(start)
    optimizer.reset()
    return image, optimizer


def run_stage(run: Run, stage: Stage, inputs: StageInputs, start: np.ndarray, extractor,
              previous: Optional[StageResult] = None) -> StageResult:
    """Optimises one stage's image from ``start`` (network image at its size)."""
    config = run.config
    objective = build_loss(config, inputs.content, inputs.styles, extractor=extractor,
                           target_cache=run.target_cache, strategy=run.strategy,
                           extra_terms=run.extra_terms, masks=inputs.masks)
    run.term_weights = {term.name: weight for weight, term in objective.items}
    if isinstance(objective, tiling.TiledObjective):
        tiles = objective.tiles(start)
        run.log(f"tiled: {len(tiles)} tiles of {objective.tile_size} pixels, halo "
                f"{objective.halo}, on {objective.spread.replicas} replica(s)")
    image, optimizer = _image_and_optimizer(run, objective, start)
    hold = optim.LBFGS_HOLD if config.optimizer == "lbfgs" else 1
    if objective.hold_draws(hold) and hold > 1:
        optimizer.restart_every = hold
    if previous is not None and config.optimizer != "lbfgs":
        carried = optimizer.warm_start(previous.optimizer, (stage.rows, stage.cols))
        run.log(f"warm start from the previous scale: {carried}")
    # L-BFGS keeps pixels in range through its bounds; the others are clamped.
    clamp = config.clamp_pixels and config.optimizer != "lbfgs"
    if config.clamp_pixels:
        optim.clamp(image)
    average = optim.ImageAverage(image, config.ema_decay) if config.ema_decay else None
    first = run.attach(stage, inputs, image, optimizer, average)

    objective.at_step(first)

    def on_step(step, terms):
        objective.at_step(step + 1)
        if clamp:
            optim.clamp(image)
        if average is not None:
            average.update(image)
        return run.on_step(step, terms)

    if first <= stage.last_step:
        optimizer.run(first, stage.last_step, on_step)
    return StageResult(run.output().numpy(), image.numpy(), optimizer)


def _next_start(config: Config, stage: Stage, previous: StageResult) -> np.ndarray:
    """The previous stage's image, resized to this stage (and clamped if asked)."""
    start = optim.resize_image(previous.tensor, (stage.rows, stage.cols)).numpy()
    if config.clamp_pixels:
        low, high = vgg.pixel_bounds()
        start = np.clip(start, low, high)
    return start


def _loop(run: Run, all_inputs, first_image, extractor) -> StageResult:
    result = None
    for stage in run.stages[run.first_stage:]:
        if result is not None:
            start = _next_start(run.config, stage, result)
        elif stage.index > 0:  # resuming inside this stage: attach restores the image
            start = np.zeros((1, stage.rows, stage.cols, 3), np.float32)
        else:
            start = first_image
        if stage.count > 1:
            run.log(f"scale {stage.index + 1}/{stage.count}: image {stage.rows}x{stage.cols}, "
                    f"iterations {stage.first_step}-{stage.last_step}")
        result = run_stage(run, stage, all_inputs[stage.index], start, extractor, result)
        if run.stopping:
            break
    return result


# --------------------------------------------------------------------------
# 5. Everything together


def _with_arrays(config: Config, content, style) -> Config:
    """Marks images passed as arrays (so ``run.json`` says so)."""
    if content is not None:
        config = config.replace(content_image="<array>")
    if style is not None:
        n = len(settings.style_sources(style))
        config = config.replace(style_image=["<array>"] * n if n > 1 else "<array>")
    return config


def _callbacks(config: Config, log, extra: Sequence) -> list:
    """Signals first, then the stopping rule, the caller's (e.g. a run directory), the log."""
    rules = [StopWhenStyleClose(config.style_stop_fraction)] if config.style_stop_fraction else []
    return [StopOnSignal(log), *rules, *extra, PrintLog(log)]


def _plan(config: Config, content, style, start: Optional[RunState]):
    """The stages, every stage's inputs and the first image, checked before any
    work (size and memory errors come before anything is written)."""
    sources = open_sources(config, content, style)
    stages = plan_stages(config, *sources.content.size)
    if start is not None and start.scale_index >= len(stages):
        raise UserError(f"--resume={config.resume}: the checkpoint is of scale "
                        f"{start.scale_index + 1} but the run has {len(stages)}; keep "
                        "--scales as it was")
    last = stages[-1]
    memory.check(last.rows, last.cols, config, tiling.check_settings(config))  # before resizing
    all_inputs = [stage_inputs(config, sources, stage) for stage in stages]
    return stages, all_inputs, initial_image(config, sources, stages[0], all_inputs[0])


def checked(config: Config, content=None, style=None) -> Config:
    """``config`` validated, with images given as arrays marked (``run.json`` says so)."""
    config = settings.validate(_with_arrays(config, content, style))
    build.check(config)
    return config


KEPT_BYTES = 256 * 2**20  # what a thread's runs keep for its next one (``kept_cache``)
_kept = threading.local()


def kept_cache() -> TargetCache:
    """The ``TargetCache`` of the runs this thread starts without one.

    The next run with the same settings and sizes takes its compiled step
    (and the paintings' targets) instead of tracing a new one; its picture is
    the one a fresh step gives.  Its objectives' numbers, images and
    optimiser moments stay within ``KEPT_BYTES`` (besides up to 64 paintings'
    Gram matrices, as in any ``TargetCache``); ``forget_kept`` lets them go.
    """
    cache = getattr(_kept, "cache", None)
    if cache is None:
        cache = _kept.cache = TargetCache(budget=KEPT_BYTES)
    return cache


def forget_kept() -> None:
    """Drops what this thread's runs kept (``kept_cache``)."""
    _kept.cache = None


def stylize(config: Config, content=None, style=None, callbacks: Sequence = (),
            log=print, *, start: Optional[RunState] = None, target_cache=None,
            extra_terms: Sequence = (), is_checked: bool = False) -> Result:
    """Runs one style transfer in memory (coarse to fine when ``config.scales`` is set).

    Args:
      config: the settings; ``config.content_image``/``style_image`` are used
        unless ``content``/``style`` (path, URL or RGB array; ``style`` may be
        a list of them) are given.  ``config.output_dir`` is not used here.
      callbacks: objects with ``on_start``/``on_step``/``on_end`` (see
        ``nst_keras.engine.callbacks``), called before the log.
      log: receives the run's log lines (``print`` by default).
      start: a ``RunState`` to continue from (a checkpoint's).
      target_cache: a mapping that keeps style targets across runs
        (``objective.TargetCache``), e.g. one per worker of a batch; by
        default this thread's ``kept_cache``.
      extra_terms: ``(name, weight, term)`` triples added to the loss, e.g. a
        film's temporal term.
      is_checked: ``config`` is already ``checked`` (the file layer checks it
        before it touches the output directory).

    Returns:
      ``Result`` with the final picture and the loss history.

    Raises:
      UserError: bad settings or inputs.
      NonFiniteLoss: the loss became NaN/Inf.
      Interrupted: SIGINT/SIGTERM stopped the run.
    """
    config = config if is_checked else checked(config, content, style)
    target_cache = kept_cache() if target_cache is None else target_cache
    stages, all_inputs, first_image = _plan(config, content, style, start)
    last = stages[-1]
    threads = hardware.configure_threads()
    strategy = tiling.make_strategy(config.devices, config.distribute)  # before any op
    precision, why = hardware.resolve_precision(config.precision, config.model)
    backbone, weights = vgg.load_backbone(config.model, config.weights, config.seed)
    resolved = config.replace(precision=precision)
    extractor = _extractor(resolved, backbone, strategy, target_cache)
    log(f"{config.model} weights: {weights}; image {last.rows}x{last.cols}; "
        f"{config.optimizer}, {last.last_step} iterations, {precision}"
        + (f" (auto: {why})" if config.precision == "auto" else ""))
    device = {"precision": precision, "precision_requested": config.precision,
              "precision_reason": why, "threads": threads}
    run = Run(resolved, stages, weights, _callbacks(config, log, callbacks), start, log,
              device, strategy, target_cache, extra_terms)
    run.begin()
    try:
        result = _loop(run, all_inputs, first_image, extractor)
    except BaseException as e:
        run.end(e)
        raise
    outcome = run.end()
    if outcome.error() is not None:
        raise outcome.error()
    return Result(image=run.picture(result.tensor), tensor=result.tensor,
                  history=run.history, paths=outcome.paths, weights=weights,
                  iterate=result.iterate if config.ema_decay else None,
                  status=outcome.status)
