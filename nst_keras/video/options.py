"""The options of ``python -m nst_keras.video`` (every ``Config`` flag besides).

Fields marked ``frames=True`` (the default of ``fields.setting``) can change
the stylised frames: ``film.frames_key`` is made of them, so a rerun that
changes only the others (output, codec, workers...) reuses the frames.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from nst_keras import fields
from nst_keras.constants import FLOWS

_video = fields.group("video")


def _frame_distances(name, value):
    if not value or min(int(v) for v in value) < 1:
        fields.fail(name, value, "needs frame distances of 1 or more, e.g. 1 or 1,2,4")




def _crf(name, value):
    if not 0 <= int(value) <= 51:
        fields.fail(name, value, "must be 0 (lossless) to 51 (worst)")




@dataclasses.dataclass(frozen=True)
class VideoOptions:
    """The options of ``python -m nst_keras.video`` (``video.film``).

    ``video`` and ``output`` must be given.  ``frames``: ``"START:END"`` of
    the film at ``fps`` (0-based, END excluded, either may be left out).
    ``fps``: frame rate to sample the film at (``None``: its own).
    ``frame_iterations``: steps of every frame after a chunk's first (0: half
    of ``config.iterations``).  ``temporal_frames``: which previous frames the
    temporal loss looks at (1 = the previous one; ``1,2,4`` adds long-term
    consistency).  ``workers``: chunks run in parallel on Ray (0 or 1: one
    chunk, in this process unless ``ray_address``).  ``rows`` (not a flag;
    the command takes it from ``--img_nrows`` or ``--scales`` when given):
    output height, ``None`` for the film's own.
    """

    video: str = _video(dataclasses.MISSING, "The film to stylise (any format ffmpeg reads).")
    output: str = _video(dataclasses.MISSING, "The stylised film (.mp4, .mov, .mkv, .webm, "
                         ".avi); written at the end, through a temporary file.", frames=False)
    temporal_weight: float = _video(
        50.0, "Weight of the temporal loss (0: independent frames, each from --init).",
        flag="float", check=fields.weight)
    frame_iterations: int = _video(
        0, "Optimiser steps of every frame after the first (0: half of --iterations).",
        flag="integer", check=fields.non_negative_int)
    temporal_frames: Tuple[int, ...] = _video(
        (1,), "Previous frames the temporal loss looks at (1: the previous one; 1,2,4 adds "
        "long-term consistency).", flag="integers", check=_frame_distances)
    flow: str = _video("dis", "Optical flow: dis (OpenCV DIS), dis_fast (its fast preset, "
                       "about 3x quicker: for --blend_previous) or farneback.", choices=FLOWS)
    # Not part of the optimisation's frames key: films by optimisation refuse it.
    blend_previous: float = _video(
        0.0, "Films through --network: each frame is this share of the previous stylised "
        "frame carried along the optical flow (where the flow holds) and the rest its own "
        "picture (0: each frame alone; 0.5 halves a network's flicker: docs/video.md).",
        flag="float", check=fields.carried_share, frames=False)
    frames: Optional[str] = _video(
        None, "START:END: only these frames (from 0, END excluded, at --fps).", frames=False)
    fps: Optional[float] = _video(
        None, "Sample the film at this frame rate (default: its own).", flag="float",
        frames=False)
    codec: str = _video("libx264", "ffmpeg video encoder of the output.", frames=False)
    crf: int = _video(18, "Quality of a libx264 output: 0 (lossless) to 51; lower is better "
                      "and bigger.", flag="integer", check=_crf, frames=False)
    workers: int = _video(
        0, "Run the film as this many overlapping chunks on a local Ray runtime (0 or 1: one "
        "chain of frames, in this process).", flag="integer", check=fields.non_negative_int,
        frames=False)
    ray_address: Optional[str] = _video(
        None, "Run the chunks on an existing Ray cluster (HOST:PORT or auto); every worker "
        "must see --output_dir and --video.", frames=False)
    chunk_overlap: int = _video(
        4, "Frames two neighbouring chunks share and cross-fade over.", flag="integer",
        check=fields.non_negative_int, frames=False)
    rows: Optional[int] = None


