"""A film through a trained style network (``--network``): every frame in one pass.

``stylize_video_with_network(config, options)`` streams the film: a reader
thread decodes the frames (``videoio.read_frames``) and resizes them to the
output size into a queue of at most ``QUEUE_BATCHES`` batches, the network
stylises them ``batch_size`` at a time (blended by
``--style_blend_weights`` for a several-painting network; the photo's
colours back with ``--preserve_colors=luminance``), and the encoder
(``videoio.encode``) takes each stylised frame as it comes.  Memory is
bounded whatever the film's length; nothing is written but ``--output``,
which appears only when the film is complete.  The frame count, frame rate
(or ``--fps``), size (or ``--img_nrows``) and audio are the source's.

Flicker is the network's: one trained with ``--stability_weight``
(``nst_keras.train``) moves its texture less when the photo moves, and
``--blend_previous`` carries the previous stylised frame along the optical
flow into each frame (``with_motion``, ``carried_frames``; the flows are
computed in the reader thread, beside the network).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np

from nst_keras import fields, settings
from nst_keras.engine import flow, imaging, pipeline
from nst_keras.errors import UserError
from nst_keras.output import networks
from nst_keras.video import videoio
from nst_keras.video.film import select_frames
from nst_keras.video.options import VideoOptions

# The optimisation's film options: a network has no steps, flow or chunks.
OPTIMISATION_ONLY = ("temporal_weight", "frame_iterations", "temporal_frames",
                     "workers", "ray_address", "chunk_overlap", "output_dir", "resume")
QUEUE_BATCHES = 2
MIN_SIDE = 16


def refuse_optimisation_flags(given: Iterable[str]) -> None:
    """``UserError`` for an optimisation-only option the user set with ``--network``."""
    for name in OPTIMISATION_ONLY:
        if name in set(given):
            raise UserError(f"--{name} applies to films made by optimisation; with --network "
                            f"every frame is stylised in one pass: leave --{name} out")


def stylised_frames(network, frames: Iterable[np.ndarray], batch_size: int = 1, blend=None,
                    preserve_colors: str = "none") -> Iterator[np.ndarray]:
    """The network's picture of each frame (``uint8 (rows, cols, 3)``, in order),
    ``batch_size`` frames through the network at a time (1, the default, is the
    fastest a frame on a CPU: four 256-row frames at once no longer fit the
    caches)."""
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield from _through(network, batch, blend, preserve_colors)
            batch = []
    if batch:
        yield from _through(network, batch, blend, preserve_colors)


def _through(network, batch, blend, preserve_colors):
    out = network(np.stack(batch), batch_size=len(batch), blend=blend)
    for photo, picture in zip(batch, out):
        if preserve_colors == "luminance":
            picture = np.clip(np.round(imaging.restore_chroma(picture, photo)), 0,
                              255).astype(np.uint8)
        yield picture


def with_motion(frames: Iterable[np.ndarray], method: str = "dis") -> Iterator[Tuple]:
    """``(frame, motion)`` for each frame: ``motion`` is ``None`` for the first,
    else ``(backward, weights)``: the flow from this frame to the one before
    and where it holds (``flow.consistency_weights``: 0 at disocclusions,
    motion boundaries and what comes from outside the picture)."""
    previous = None
    for frame in frames:
        motion = None
        if previous is not None:
            motion = flow.motion(frame, previous, method)
        previous = frame
        yield frame, motion


def carried_frames(network, moving: Iterable[Tuple], share: float, blend=None,
                   preserve_colors: str = "none") -> Iterator[np.ndarray]:
    """Each frame's picture with ``share`` of the previous *result* carried along
    the flow where it holds: ``out_t = f_t + share * c * (warp(out_{t-1}) - f_t)``
    (``moving``: ``with_motion``'s pairs; ``f_t`` the network's picture, ``c``
    the weights).  The carried frame is itself a blend, so the texture is
    held over several frames, fading by ``share`` a frame; where the flow
    fails the frame is the network's own.  ``uint8 (rows, cols, 3)``."""
    previous = None
    for frame, motion in moving:
        picture = next(_through(network, [frame], blend, preserve_colors)).astype(np.float32)
        if previous is not None and motion is not None:
            picture = flow.carry(picture, previous, motion, share)
        previous = picture
        yield np.clip(np.round(picture), 0, 255).astype(np.uint8)


def _read_ahead(produce: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """``produce``'s items, made in a thread at most ``size`` ahead of the consumer
    (decoding and resizing overlap the network); its errors are raised here."""
    items: "queue.Queue" = queue.Queue(maxsize=max(1, size))
    stop, done = threading.Event(), object()
    failure = []

    def put(item) -> bool:
        """Waits for room (``False``: the consumer has stopped)."""
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in produce:
                if not put(item):
                    return
        except BaseException as e:  # noqa: BLE001  handed to the consumer
            failure.append(e)
        finally:
            put(done)

    thread = threading.Thread(target=work, name="film-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is done:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        stop.set()
        thread.join(timeout=5)


def _plan(config, options, given):
    """The checked settings, the film's ``VideoInfo``, its frames (``select_frames``)
    and the output size; ``UserError`` before anything is written."""
    refuse_optimisation_flags(given)
    config = pipeline.checked(config.replace(content_image=options.video))
    options = fields.validate_fields(options)
    if os.path.abspath(options.output) == os.path.abspath(options.video):
        raise UserError(f"--output={options.output} is the input film; choose another name")
    videoio.check_output(options.output, options.codec)
    if os.path.exists(options.output) and not config.overwrite:
        raise UserError(f"--output={options.output} already exists; pass --overwrite to "
                        "replace it or choose another --output")
    info = videoio.probe(options.video)
    frames = select_frames(info.frames, info.fps, options.fps, options.frames)
    width, height = info.size
    rows, cols = imaging.target_size(width, height, int(options.rows or height))
    if min(rows, cols) < MIN_SIDE:
        raise UserError(f"--video={options.video} would be {rows}x{cols} pixels; give "
                        f"--img_nrows so that both sides are at least {MIN_SIDE}")
    return config, options, info, frames, (rows, cols)


def stylize_video_with_network(config: settings.Config, options: VideoOptions, log=print,
                               given: Iterable[str] = (), batch_size: int = 1,
                               on_frame: Optional[Callable[[int], None]] = None) -> Dict:
    """Writes ``options.output``: ``options.video`` through ``config.network``.

    ``given``: the option names set on the command line (optimisation-only
    ones are refused).  Everything is checked before anything is written
    (``UserError``).  Returns a summary with the frames per second reached.
    """
    started = time.perf_counter()
    config, options, info, (sources, fps, first), (rows, cols) = _plan(config, options, given)
    network = networks.open_network(config.network, config.precision)
    networks.check_blend(network, config.style_blend_weights)
    log(f"{len(sources)} frames at {rows}x{cols}, {fps:g} fps, through {config.network}"
        f"{f' ({network.styles} paintings)' if network.styles > 1 else ''}")

    def contents():
        for _, frame in videoio.read_frames(options.video, sources):
            yield imaging.load_image(frame, (rows, cols), config.interpolation)

    timing = {"first": None, "count": 0}
    began = time.perf_counter()

    def counted(pictures):
        for picture in pictures:
            timing["count"] += 1
            if timing["first"] is None:
                timing["first"] = time.perf_counter()
            if on_frame is not None:
                on_frame(timing["count"] - 1)
            yield picture

    if options.blend_previous:  # the flows are computed in the reader thread
        pictures = counted(carried_frames(
            network, _read_ahead(with_motion(contents(), options.flow), QUEUE_BATCHES),
            options.blend_previous, config.style_blend_weights, config.preserve_colors))
    else:
        pictures = counted(stylised_frames(
            network, _read_ahead(contents(), QUEUE_BATCHES * batch_size), batch_size,
            config.style_blend_weights, config.preserve_colors))
    count = videoio.encode(options.output, pictures, fps, (rows, cols), options.codec,
                           options.video if info.audio else None, first / fps, options.crf)
    seconds = time.perf_counter() - began
    # The rate of the film as it streams: after the first batch, which also traces
    # the network for this size.
    steady = (count - batch_size) / max(time.perf_counter() - timing["first"], 1e-9) \
        if count > 2 * batch_size and timing["first"] else count / max(seconds, 1e-9)
    log(f"{count} frames in {seconds:.1f} s ({count / max(seconds, 1e-9):.1f} fps overall, "
        f"{steady:.1f} fps after the first batch)")
    return {"output": options.output, "frames": count, "fps": fps, "size": [rows, cols],
            "audio": info.audio, "seconds": round(time.perf_counter() - started, 3),
            "frames_per_s": round(steady, 2), "network": config.network}
