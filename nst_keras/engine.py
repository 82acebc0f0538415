"""The engine: ``stylize(config)`` runs one style transfer (no absl here).

Example::

    from nst_keras import Config, stylize
    result = stylize(Config(content_image="photo.jpg", style_image="art.jpg",
                            iterations=200, output_dir="out"))
    result.image            # uint8 (rows, cols, 3) RGB
    result.history[-1]      # {"iteration": ..., "loss": ..., ...}
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional

import numpy as np

from nst_keras import controls
from nst_keras import images as imlib
from nst_keras.config import Config
from nst_keras.errors import UserError

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


@dataclasses.dataclass
class Result:
    """What ``stylize`` returns.

    Attributes:
      image: final picture, ``uint8 (rows, cols, 3)`` RGB.
      tensor: final network image, ``float32 (1, rows, cols, 3)`` BGR centred.
      history: one dict per logged step (iteration, loss, content_loss,
        style_loss, tv_loss, elapsed_s, evaluations).
      paths: files written.
      weights: description of the weights used.
      iterate: with ``ema_decay``, the last optimiser iterate (the saved
        ``tensor`` is the average); otherwise ``None``.

    With ``preserve_colors="luminance"``, ``tensor`` is the optimised
    luminance image and ``image`` has the content's colours put back.
    """

    image: np.ndarray
    tensor: np.ndarray
    history: List[Dict[str, float]]
    paths: List[str]
    weights: str
    iterate: Optional[np.ndarray] = None


def prepare_output_dir(output_dir: Optional[str]) -> None:
    if output_dir is None:
        return
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create output directory {output_dir!r} ({e.strerror}); choose "
            "another --output_dir"
        ) from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise UserError(
            f"output directory {output_dir!r} is not writable; choose another --output_dir"
        )


def build_loss(config: Config, content_picture, style_pictures, backbone=None,
               extractor=None):
    """Builds extractor and ``StyleTransferLoss`` for pictures already sized."""
    from nst_keras.losses import StyleTransferLoss

    content_layers = list(config.content_layers) if config.content_weight > 0 else []
    style_layers = list(config.style_layers) if config.style_weight > 0 else []
    if extractor is None:
        extractor = build_extractor(config, backbone)
    return StyleTransferLoss(
        extractor,
        imlib.preprocess_image(content_picture),
        [imlib.preprocess_image(p) for p in style_pictures],
        content_layers=content_layers,
        style_layers=style_layers,
        content_weight=config.content_weight,
        style_weight=config.style_weight,
        total_variation_weight=config.total_variation_weight,
        style_blend_weights=controls.blend_weights(config, len(style_pictures)),
        style_layer_weights=controls.layer_weights(config) if style_layers else None,
        jit_compile=config.jit_compile,
        normalization=config.loss_normalization,
    )


def build_extractor(config: Config, backbone=None):
    """The cut VGG extractor for the configured layers (checks their names)."""
    from nst_keras import features

    if backbone is None:
        backbone, _ = features.load_backbone(config.model, config.weights, config.seed)
    content_layers = list(config.content_layers) if config.content_weight > 0 else []
    style_layers = list(config.style_layers) if config.style_weight > 0 else []
    features.check_layers(backbone, content_layers + style_layers, config.model)
    if not (content_layers or style_layers):
        return None
    return features.build_extractor(
        backbone, content_layers + style_layers, precision=config.precision,
        pooling=config.pooling, padding=config.padding,
    )


@dataclasses.dataclass
class Sources:
    """The opened input pictures (PIL, full size) before any resizing."""

    content: object
    styles: List[object]
    init: object = None  # a picture when --init is a path, URL or array
    content_name: str = "the content image"
    style_names: List[str] = dataclasses.field(default_factory=list)


def load_sources(config: Config, content=None, style=None) -> Sources:
    """Opens content, style(s) and an initial image file (nothing resized)."""
    content_src = content if content is not None else config.content_image
    style_src = style if style is not None else config.style_image
    if content_src is None:
        raise UserError("no content image given; set --content_image=PATH_OR_URL")
    if style_src is None:
        raise UserError("no style image given; set --style_image=PATH_OR_URL")
    content_picture = imlib.open_picture(content_src)  # content first, as users list them
    styles = [imlib.open_picture(s) for s in controls.style_sources(style_src)]
    init = None
    if not (isinstance(config.init, str) and config.init in controls.INITS):
        init = imlib.open_picture(config.init)
    style_names = [f"style image {imlib.describe(s)}" for s in controls.style_sources(style_src)]
    return Sources(content_picture, styles, init,
                   f"content image {imlib.describe(content_src)}", style_names)


def _sized(picture, size, config, what):
    if min(size) < imlib.MIN_SIDE:
        raise UserError(
            f"{what} would be {size[0]}x{size[1]} pixels; VGG needs at least "
            f"{imlib.MIN_SIDE} per side: raise --img_nrows (or --scales, --style_scale) "
            "or use a less elongated image"
        )
    return imlib.load_image(picture, size, config.interpolation)


@dataclasses.dataclass
class StageInputs:
    """The pictures one stage's losses see, and the content at its colours."""

    content: np.ndarray          # RGB picture the content loss sees
    styles: List[np.ndarray]     # RGB pictures the style loss sees
    content_colour: np.ndarray   # the content picture itself (chroma source)


def stage_inputs(config: Config, sources: Sources, stage) -> StageInputs:
    """Resizes and recolours (``preserve_colors``) the inputs of one stage."""
    size = (stage.rows, stage.cols)
    content = _sized(sources.content, size, config, sources.content_name)
    ssize = controls.style_size(stage.rows, stage.cols, config.style_scale)
    names = sources.style_names or ["the style image"] * len(sources.styles)
    styles = [_sized(s, ssize, config, n) for s, n in zip(sources.styles, names)]
    loss_content, loss_styles = controls.color_inputs(config.preserve_colors, content, styles)
    return StageInputs(loss_content, loss_styles, content)


def load_inputs(config: Config, content=None, style=None):
    """Content and style pictures at the output size (keras.io's rule)."""
    sources = load_sources(config, content, style)
    stage = controls.plan_stages(config, *sources.content.size)[-1]
    inputs = stage_inputs(config, sources, stage)
    return inputs.content, inputs.styles


def initial_image(config: Config, sources: Sources, stage, inputs: StageInputs):
    """The first stage's starting network image (``--init``)."""
    size = (stage.rows, stage.cols)
    name = config.init if isinstance(config.init, str) else None
    if name == "content":
        picture = inputs.content
    elif name == "noise":
        picture = controls.noise_picture(stage.rows, stage.cols, config.seed)
    else:
        source = sources.styles[0] if name == "style" else sources.init
        picture = _sized(source, size, config, "the initial image")
        _, (picture,) = controls.color_inputs(config.preserve_colors, inputs.content_colour,
                                              [picture])
    return imlib.preprocess_image(picture)


@dataclasses.dataclass
class StageResult:
    tensor: np.ndarray            # what the stage hands on / saves (average if ema)
    iterate: np.ndarray           # the last optimiser iterate
    optimizer: object
    inputs: StageInputs


def run_stage(config: Config, stage, inputs: StageInputs, start, extractor,
              session, previous_optimizer=None) -> StageResult:
    """Optimises one stage's image from ``start`` (network image at its size).

    ``session`` (``nst_keras.session.RunSession``) logs, saves, checkpoints,
    watches for non-finite losses and signals; with ``--resume`` it restores
    this stage's image and optimiser state when the checkpoint is of it.
    """
    import tensorflow as tf

    from nst_keras.optimize import GradientDescent, make_optimizer

    loss = build_loss(config, inputs.content, inputs.styles, extractor=extractor)
    image = tf.Variable(start, dtype=tf.float32)
    optimizer = make_optimizer(
        config.optimizer, loss, image, config.resolved_learning_rate(),
        config.decay_steps, config.decay_rate, jit_compile=config.jit_compile,
        bounds=controls.pixel_bounds() if config.clamp_pixels else None,
    )
    if isinstance(previous_optimizer, GradientDescent) and isinstance(optimizer, GradientDescent):
        carried = controls.warm_start(optimizer, previous_optimizer, (stage.rows, stage.cols))
        session.log(f"warm start from the previous scale: {carried}")
    # L-BFGS keeps pixels in range through its bounds; the others are clamped.
    clamp = config.clamp_pixels and config.optimizer != "lbfgs"
    if config.clamp_pixels:
        controls.clamp(image)
    average = controls.ImageAverage(image, config.ema_decay) if config.ema_decay else None

    def output():
        return average.value() if average is not None else image

    first_step = session.attach(
        image, optimizer, stage.index, first_step=stage.first_step, average=average,
        output=output,
        picture=lambda tensor: controls.picture_of(tensor, config, inputs.content_colour),
        scale=stage.rows if stage.count > 1 else None,
    )

    def on_step(step, terms):
        if clamp:
            controls.clamp(image)
        if average is not None:
            average.update(image)
        return session.on_step(step, terms)

    if first_step <= stage.last_step:
        optimizer.run(first_step, stage.last_step, on_step)
    iterate = image.numpy()
    tensor = output().numpy() if average is not None else iterate
    return StageResult(tensor, iterate, optimizer, inputs)


def stylize(config: Config, content=None, style=None, log: Log = _print) -> Result:
    """Runs one style transfer (coarse to fine when ``config.scales`` is set).

    Args:
      config: the settings; ``config.content_image``/``style_image`` are used
        unless ``content``/``style`` (path, URL or RGB array; ``style`` may be
        a list of them) are given.
      log: receives one line per logged step.

    Returns:
      ``Result`` with the final picture and the loss history.

    Raises:
      UserError: bad settings or inputs (nothing is written in that case).
    """
    from nst_keras import features, memory
    from nst_keras.session import RunSession

    if content is not None:
        config = config.replace(content_image="<array>")
    if style is not None:
        n = len(controls.style_sources(style))
        config = config.replace(style_image=["<array>"] * n if n > 1 else "<array>")
    config = config.validate()
    # Robustness: existing results, --resume (session.py); nothing written yet.
    session = RunSession(config, log)
    sources = load_sources(
        config,
        content if content is not None else config.content_image,
        style if style is not None else config.style_image,
    )
    stages = controls.plan_stages(config, *sources.content.size)
    # Refuse a size that cannot fit before resizing anything (memory.py).
    memory.check(stages[-1].rows, stages[-1].cols, config)
    # Every stage's inputs are prepared first, so size errors come before
    # anything is written.
    all_inputs = [stage_inputs(config, sources, stage) for stage in stages]
    start = initial_image(config, sources, stages[0], all_inputs[0])
    backbone, weights_desc = features.load_backbone(config.model, config.weights, config.seed)
    extractor = build_extractor(config, backbone)
    prepare_output_dir(config.output_dir)

    last = stages[-1]
    log(
        f"{config.model} weights: {weights_desc}; image {last.rows}x{last.cols}; "
        f"{config.optimizer}, {last.last_step} iterations, {config.precision}"
    )
    first_stage = session.open(weights_desc, stages)
    result = None
    with session.signals():
        for stage in stages[first_stage:]:
            inputs = all_inputs[stage.index]
            if stage.index > 0 and result is None:
                # Resuming inside this stage: session.attach restores the image.
                start = np.zeros((1, stage.rows, stage.cols, 3), np.float32)
            elif stage.index > 0:
                start = controls.resize_image(result.tensor, (stage.rows, stage.cols)).numpy()
                if config.clamp_pixels:
                    low, high = controls.pixel_bounds()
                    start = np.clip(start, low, high)
            if len(stages) > 1:
                log(f"scale {stage.index + 1}/{stage.count}: image {stage.rows}x{stage.cols}, "
                    f"iterations {stage.first_step}-{stage.last_step}")
            result = run_stage(config, stage, inputs, start, extractor, session,
                               previous_optimizer=result.optimizer if result else None)
            if session.stopping:
                break
    # Saves the final image (or the last finite one / the interrupted state)
    # and raises NonFiniteLoss or Interrupted after saving when the run stopped.
    paths = session.finish()
    return Result(
        image=session.picture(result.tensor),
        tensor=result.tensor,
        history=session.history,
        paths=paths,
        weights=weights_desc,
        iterate=result.iterate if config.ema_decay else None,
    )
