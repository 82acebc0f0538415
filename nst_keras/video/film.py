"""Stylised films without flicker (Ruder, Dosovitskiy and Brox 2016).

``stylize_video(config, VideoOptions(video=..., output=...))``
stylises a film frame by frame with the engine's ``stylize`` (``output.stylize``
without an output directory, so it writes nothing itself):

1. plan (``plan_film``): which source frames (``--frames``, ``--fps``), at
   which size (the film's, or ``--img_nrows``), cut into chunks
   (``plan_chunks``) when several workers share the film;
2. frames (``run_chunk``): the first frame of a chunk is an ordinary run
   (``--iterations``); every later one starts from the previous stylised
   frame warped along the optical flow and adds the temporal loss
   (``temporal.TemporalTerm``: ``--temporal_weight``, over the previous frames
   ``--temporal_frames``) for ``--frame_iterations`` steps.  Each stylised
   frame is saved as a PNG before the next starts, so a rerun goes on from
   the first missing frame, and later frames read the earlier ones from
   those PNGs (a resumed film is the film run straight);
3. film (``write_film``): chunks are cross-faded over their overlap
   (``blend_weights``) and encoded with the source's frame rate and audio.

With ``--temporal_weight=0`` the frames are independent (each an ordinary
run from ``--init``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nst_keras import fields, pool, settings
from nst_keras.engine import flow, imaging, memory, objective, pipeline, tiling, vgg
from nst_keras.errors import UserError
from nst_keras.output import files, manifest, precision_cache, rundir, stylize as file_stylize
from nst_keras.video import temporal, videoio
from nst_keras.video.options import VideoOptions

# One objective per frame retraces the step each time; TensorFlow warns about that.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

MANIFEST = "video.json"
FRAMES_DIR = "frames"
@dataclasses.dataclass(frozen=True)
class Chunk:
    """Film positions ``start`` .. ``stop - 1`` run as one chain of frames."""

    index: int
    start: int
    stop: int


@dataclasses.dataclass(frozen=True)
class Film:
    """The planned film: source frame of every position, size, rate, chunks."""

    sources: Tuple[int, ...]
    rows: int
    cols: int
    fps: float
    start_s: float
    audio: bool
    chunks: Tuple[Chunk, ...]


# --------------------------------------------------------------------------
# Plans (pure functions)


def parse_range(text: Optional[str], count: int) -> Tuple[int, int]:
    """``"START:END"`` (either may be empty) -> ``(start, stop)`` within ``count``."""
    if not text:
        return 0, count
    parts = str(text).split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        stop = int(parts[1]) if parts[1].strip() else count
    except ValueError:
        raise UserError(f"--frames={text} is not START:END (frame numbers from 0, END "
                        "excluded, e.g. 0:48 or 100:)") from None
    if not 0 <= start < stop:
        raise UserError(f"--frames={text} selects no frame; give START < END, both >= 0")
    if start >= count:
        raise UserError(f"--frames={text} starts after the last frame (the film has {count} "
                        "frames at this frame rate); give a smaller START")
    return start, min(stop, count)


def select_frames(frames: int, fps_in: float, fps_out: Optional[float],
                  text: Optional[str]) -> Tuple[Tuple[int, ...], float, int]:
    """``(source frame of each position, frame rate, first position)``."""
    fps = float(fps_out or fps_in)
    if not (math.isfinite(fps) and fps > 0):
        raise UserError(f"--fps={fps_out} must be a positive number of frames per second")
    count = max(1, int(math.floor(frames * fps / fps_in + 1e-9)))
    start, stop = parse_range(text, count)
    sources = tuple(min(frames - 1, int(math.floor(k * fps_in / fps + 1e-9)))
                    for k in range(start, stop))
    return sources, fps, start


def plan_chunks(count: int, workers: int, overlap: int) -> Tuple[Chunk, ...]:
    """Cuts ``count`` frames into at most ``workers`` chunks overlapping by ``overlap``.

    Every chunk is longer than the overlap, and no frame is in more than two
    chunks (fewer chunks when the film is short); one worker gives one chunk.
    """
    overlap = max(0, int(overlap))
    chunks = max(1, int(workers))

    def too_short(n):
        length = math.ceil((count + (n - 1) * overlap) / n)
        return length <= overlap or (n > 2 and length < 2 * overlap)

    while chunks > 1 and too_short(chunks):
        chunks -= 1
    if chunks == 1:
        return (Chunk(0, 0, count),)
    length = math.ceil((count + (chunks - 1) * overlap) / chunks)
    out = []
    for k in range(chunks):
        start = k * (length - overlap)
        out.append(Chunk(k, start, count if k == chunks - 1 else start + length))
    return tuple(out)


def blend_weights(chunks: Sequence[Chunk], position: int) -> List[Tuple[int, float]]:
    """``(chunk index, weight)`` of the chunks making frame ``position`` (sum 1).

    Where two chunks overlap the later one fades in linearly: at the ``i``-th
    of ``n`` shared frames it weighs ``i / (n + 1)`` (``i`` from 1).
    """
    having = [c for c in chunks if c.start <= position < c.stop]
    if len(having) == 1:
        return [(having[0].index, 1.0)]
    early, late = having[0], having[-1]
    shared = early.stop - late.start
    alpha = (position - late.start + 1) / (shared + 1)
    return [(early.index, 1.0 - alpha), (late.index, alpha)]


def chunk_dir(output_dir: str, chunks: Sequence[Chunk], chunk: Chunk) -> str:
    name = FRAMES_DIR if len(chunks) == 1 else f"chunk_{chunk.index:02d}"
    return os.path.join(output_dir, name)


def frame_path(folder: str, position: int) -> str:
    return os.path.join(folder, f"frame_{position:06d}.png")


# --------------------------------------------------------------------------
# One frame


def frame_iterations(config: settings.Config, options: VideoOptions) -> int:
    if options.frame_iterations:
        return int(options.frame_iterations)
    return max(1, sum(config.iteration_counts()) // len(config.stage_heights()) // 2)


def _loss_picture(config: settings.Config, picture) -> np.ndarray:
    """What the temporal loss compares: the colours the content loss sees."""
    return imaging.colors_for_loss(config.preserve_colors, picture, [])[0]


def temporal_start(config: settings.Config, options: VideoOptions, contents: Dict[int, np.ndarray],
                   previous: Dict[int, np.ndarray], position: int):
    """``(init picture, TemporalTerm)`` of frame ``position`` from earlier stylised frames.

    ``previous``: ``{position: stylised picture}`` of the frames looked at.
    """
    content = contents[position]
    targets, weights = [], []
    for back in sorted(position - p for p in previous):
        earlier = position - back
        backward = flow.optical_flow(content, contents[earlier], options.flow)
        forward = flow.optical_flow(contents[earlier], content, options.flow)
        weights.append(flow.consistency_weights(backward, forward))
        targets.append(flow.warp(previous[earlier], backward))
    # Where nothing trustworthy is warped in (pixels coming into view, occlusions)
    # the start is the content frame, not the smear the warp leaves there.
    seen = weights[0][..., None] > 0
    init = np.where(seen, targets[0], content.astype(np.float32))
    init = np.clip(np.round(init), 0, 255).astype(np.uint8)
    term = temporal.TemporalTerm.from_frames(
        config, [vgg.preprocess_image(_loss_picture(config, t)) for t in targets],
        flow.long_term_weights(weights), vgg.preprocess_image(_loss_picture(config, content)))
    return init, term


def stylize_frame(config: settings.Config, options: VideoOptions, contents, previous,
                  position: int, target_cache=None) -> np.ndarray:
    """The stylised picture of one frame (``previous`` empty: an independent run)."""
    terms, frame_config = (), config.replace(output_dir=None, resume=None)
    if previous and options.temporal_weight > 0:
        init, term = temporal_start(config, options, contents, previous, position)
        terms = [(temporal.NAME, options.temporal_weight, term)]
        frame_config = frame_config.replace(init=init,
                                            iterations=frame_iterations(config, options))
    result = file_stylize.stylize(frame_config, content=contents[position],
                                  log=lambda s: None, target_cache=target_cache,
                                  extra_terms=terms)
    return result.image


# --------------------------------------------------------------------------
# A chunk (in whichever process runs it)


def read_contents(options: VideoOptions, film: Film, chunk: Chunk,
                  interpolation: str) -> Dict[int, np.ndarray]:
    """``{position: content picture at the film's size}`` for the chunk's frames."""
    positions = range(chunk.start, chunk.stop)
    by_source: Dict[int, np.ndarray] = {}
    wanted = [film.sources[p] for p in positions]
    for number, picture in videoio.read_frames(options.video, wanted):
        if number not in by_source:
            by_source[number] = imaging.load_image(picture, (film.rows, film.cols),
                                                   interpolation)
    return {p: by_source[film.sources[p]] for p in positions}


def run_chunk(config: settings.Config, options: VideoOptions, film: Film, chunk: Chunk,
              on_frame: Optional[Callable[[int, str], None]] = None) -> Dict:
    """Stylises the chunk's missing frames in order; returns a small record."""
    started = time.perf_counter()
    folder = chunk_dir(config.output_dir, film.chunks, chunk)
    rundir.make_output_dir(folder)
    contents = read_contents(options, film, chunk, config.interpolation)
    cache, ran = objective.TargetCache(), 0
    for position in range(chunk.start, chunk.stop):
        path = frame_path(folder, position)
        if os.path.isfile(path):
            continue
        looked_at = [position - j for j in options.temporal_frames
                     if position - j >= chunk.start and options.temporal_weight > 0]
        previous = {p: imaging.load_image(frame_path(folder, p)) for p in looked_at}
        picture = stylize_frame(config, options, contents, previous, position, cache)
        files.save_image(path, picture)
        ran += 1
        if on_frame is not None:
            on_frame(position, path)
    return {"chunk": chunk.index, "start": chunk.start, "stop": chunk.stop, "ran": ran,
            "seconds": round(time.perf_counter() - started, 3)}


# --------------------------------------------------------------------------
# The film


def plan_film(config: settings.Config, options: VideoOptions) -> Tuple[settings.Config, Film]:
    """The checked settings at the film's size and the ``Film`` (``UserError`` if bad;
    ``options`` are checked already: ``fields.validate_fields``)."""
    info = videoio.probe(options.video)
    sources, fps, first = select_frames(info.frames, info.fps, options.fps, options.frames)
    width, height = info.size
    asked = options.rows or (config.scales[-1] if config.scales else height)
    rows, cols = imaging.target_size(width, height, int(asked))
    if min(rows, cols) < vgg.MIN_SIDE:
        raise UserError(f"--video={options.video} would be {rows}x{cols} pixels; VGG needs "
                        f"at least {vgg.MIN_SIDE} per side: raise --img_nrows")
    if not config.scales:
        config = config.replace(img_nrows=rows)
    chunks = plan_chunks(len(sources), options.workers, options.chunk_overlap)
    return config, Film(sources, rows, cols, fps, first / fps, info.audio, chunks)


def preflight(config: settings.Config, options: VideoOptions, film: Film) -> None:
    """Opens the style pictures, the network and its layers, checks the memory a
    frame needs and the Ray cluster, before anything is written (``UserError``)."""
    frame = np.zeros((film.rows, film.cols, 3), np.uint8)
    sources = pipeline.open_sources(config, content=frame)
    for stage in pipeline.plan_stages(config, film.cols, film.rows):
        pipeline.stage_inputs(config, sources, stage)
    memory.check(film.rows, film.cols, config, tiling.check_settings(config))
    with precision_cache.used():  # resolves --precision=auto, as the frames will
        pipeline.build_extractor(config)
    if options.workers > 1 or options.ray_address:
        pool.require()  # UserError without Ray
        if options.ray_address:
            pool.check_address(options.ray_address)


def frames_key(config: settings.Config, options: VideoOptions, film: Film) -> Dict:
    """What fixes the frames: a rerun with another key cannot reuse them.

    The ``frames=True`` fields of the settings and of the options (the film
    as an absolute path, the frame iterations resolved), the film's frames
    and the digests of the files the settings name.
    """
    key = {"settings": settings.frame_settings(config)}
    for name, field in fields.fields_of(options).items():
        if field.metadata["frames"]:
            key[name] = getattr(options, name)
    key.update(video=os.path.abspath(options.video),
               frame_iterations=frame_iterations(config, options),
               film=dataclasses.asdict(film), files=_file_digests(config))
    return json.loads(json.dumps(key, default=str))


def _file_digests(config: settings.Config) -> Dict[str, str]:
    """SHA-256 of each local style image and mask, so a file changed in place
    under the same name is not taken for the one the frames were made with."""
    styles = config.style_image
    names = [styles] if isinstance(styles, str) else list(styles or ())
    names += list(config.style_masks or ())
    digests = {}
    for name in names:
        if isinstance(name, str) and os.path.isfile(name):
            digests[os.path.abspath(name)] = files.sha256_of(name)
    return digests


def _held_frames(output_dir: str) -> List[str]:
    if not os.path.isdir(output_dir):
        return []
    return sorted(n for n in os.listdir(output_dir)
                  if n == FRAMES_DIR or n.startswith("chunk_") or n == MANIFEST)


def prepare_output_dir(config: settings.Config, key: Dict, log) -> int:
    """Checks ``--output_dir`` against an earlier run's frames; returns frames kept."""
    out = config.output_dir
    rundir.check_writable(out)
    held = _held_frames(out)
    previous = manifest.read_json(os.path.join(out, MANIFEST))
    if held and (previous.get("key") != key or config.overwrite):
        if not config.overwrite:
            raise UserError(f"--output_dir={out} holds the frames of another video run "
                            "(other settings, film or --workers); pass --overwrite to start "
                            "again or choose another --output_dir")
        for name in held:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        held = []
    kept = sum(len([n for n in os.listdir(os.path.join(out, d)) if n.endswith(".png")])
               for d in held if os.path.isdir(os.path.join(out, d)))
    rundir.make_output_dir(out)
    manifest.write_json(os.path.join(out, MANIFEST), {"key": key, "started": manifest.now()})
    if kept:
        log(f"resuming: {kept} stylised frames kept in {out}")
    return kept


def _check_not_replacing(config: settings.Config, options: VideoOptions, key: Dict) -> None:
    """An existing ``--output`` is replaced only if this run made it (or ``--overwrite``)."""
    if not os.path.exists(options.output) or config.overwrite:
        return
    previous = manifest.read_json(os.path.join(config.output_dir, MANIFEST))
    made_here = os.path.abspath(previous.get("output") or "") == os.path.abspath(options.output)
    if previous.get("key") != key or not made_here:
        raise UserError(f"--output={options.output} already exists; pass --overwrite to "
                        "replace it or choose another --output")


def film_frames(output_dir: str, film: Film):
    """The final frames, chunks cross-faded over their overlaps (uint8 RGB)."""
    folders = [chunk_dir(output_dir, film.chunks, c) for c in film.chunks]
    for position in range(len(film.sources)):
        total = np.zeros((film.rows, film.cols, 3), np.float32)
        for index, weight in blend_weights(film.chunks, position):
            total += weight * imaging.load_image(frame_path(folders[index], position))
        yield np.clip(np.round(total), 0, 255).astype(np.uint8)


def _run_chunks(config, options: VideoOptions, film: Film, log, on_frame) -> List[Dict]:
    if options.workers <= 1 and not options.ray_address:
        return [run_chunk(config, options, film, c, on_frame) for c in film.chunks]
    log(f"{len(film.chunks)} chunks of about {film.chunks[0].stop - film.chunks[0].start} "
        f"frames, overlapping by {options.chunk_overlap}")
    jobs = [(config, options, film, c) for c in film.chunks]
    records = {done.item[3].index: done.record for done in pool.run(
        run_chunk_on_worker, jobs, workers=options.workers, address=options.ray_address,
        log=log, on_error=_chunk_failed)}
    return [records[c.index] for c in film.chunks]


def run_chunk_on_worker(state, job) -> Dict:
    """One chunk on a pool worker: ``job`` is ``run_chunk``'s arguments."""
    return run_chunk(*job)


def _chunk_failed(job, reason: str, attempts: int):
    raise UserError(f"chunk {job[3].index + 1} failed on its Ray worker: {reason}")


def stylize_video(config: settings.Config, options: VideoOptions, log=print,
                  on_frame: Optional[Callable[[int, str], None]] = None) -> Dict:
    """Stylises ``options.video`` into ``options.output``; returns a summary.

    Everything is checked before anything is written (``UserError``); the
    stylised frames go to ``config.output_dir``, which a rerun resumes.
    """
    started = time.perf_counter()
    config = pipeline.checked(config.replace(content_image=options.video))
    options = fields.validate_fields(options)
    if options.blend_previous:
        raise UserError("--blend_previous applies to films through --network; a film by "
                        "optimisation keeps its frames together with --temporal_weight")
    if not config.output_dir:
        raise UserError("a video needs --output_dir (the folder for the stylised frames)")
    if os.path.abspath(options.output) == os.path.abspath(options.video):
        raise UserError(f"--output={options.output} is the input film; choose another name")
    videoio.check_output(options.output, options.codec)
    config, film = plan_film(config, options)
    preflight(config, options, film)
    key = frames_key(config, options, film)
    _check_not_replacing(config, options, key)
    prepare_output_dir(config, key, log)
    total = len(film.sources)
    log(f"{total} frames at {film.rows}x{film.cols}, {film.fps:g} fps; first frame "
        f"{sum(config.iteration_counts())} iterations, then {frame_iterations(config, options)} "
        f"(temporal weight {options.temporal_weight:g})")

    def report(position, path):
        log(f"frame {position + 1}/{total} saved as {path}")
        if on_frame is not None:
            on_frame(position, path)

    records = _run_chunks(config, options, film, log, report)
    count = videoio.encode(options.output, film_frames(config.output_dir, film), film.fps,
                           (film.rows, film.cols), options.codec,
                           options.video if film.audio else None, film.start_s, options.crf)
    summary = {"output": options.output, "frames": count, "fps": film.fps,
               "size": [film.rows, film.cols], "audio": film.audio, "chunks": records,
               "seconds": round(time.perf_counter() - started, 3)}
    manifest.write_json(os.path.join(config.output_dir, MANIFEST),
                        {"key": key, "finished": manifest.now(), **summary})
    return summary
