"""Reading and writing films with the ffmpeg that imageio-ffmpeg ships.

* ``probe(path)``: frame rate, size, frame count and whether there is an
  audio track (``UserError`` for a file that is no video or has no frame);
* ``read_frames(path, indices, size)``: the wanted frames as RGB pictures;
* ``encode(path, frames, fps, ...)``: writes a film through a temporary file
  in the output's folder, copies the audio of the source over it, and renames
  it into place at the end, so a failed or interrupted run leaves nothing
  half-written.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tempfile
from typing import Iterable, Iterator, Optional, Sequence, Tuple

import imageio_ffmpeg
import numpy as np

from nst_keras.errors import UserError

# Output suffix -> (audio codec, what the container is).
CONTAINERS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".m4v": "aac", ".webm": "libopus",
              ".avi": "aac"}


def ffmpeg() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` finds: ``size`` is ``(width, height)``."""

    path: str
    fps: float
    size: Tuple[int, int]
    frames: int
    audio: bool


def _streams(path: str) -> str:
    """ffmpeg's description of the file's streams (its stderr for ``-i path``)."""
    result = subprocess.run([ffmpeg(), "-hide_banner", "-i", path], capture_output=True,
                            text=True, errors="replace")
    return result.stderr


def probe(path: str) -> VideoInfo:
    """Frame rate, size, frame count and audio of the film ``path``."""
    name = f"--video={path}"
    if not os.path.isfile(path):
        raise UserError(f"{name} does not exist; check the path")
    text = _streams(path)
    no_frames = UserError(f"{name} holds no video frames; give a film with at least one "
                          "frame")
    if "Input #" not in text:
        raise UserError(f"{name} is not a video ffmpeg can read; give a film such as an "
                        ".mp4, .mov or .mkv file")
    if not re.search(r"Stream #\S+.*: Video:", text):
        raise no_frames
    try:
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        reader.close()
        count, _ = imageio_ffmpeg.count_frames_and_secs(path)
    except (OSError, RuntimeError, StopIteration) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{name} cannot be decoded ({reason}); re-encode it, e.g. "
                        "to H.264 .mp4") from None
    if not count:
        raise no_frames
    fps = float(meta.get("fps") or 0)
    if not fps > 0:
        raise UserError(f"{name} has no frame rate ffmpeg can read; pass --fps")
    return VideoInfo(path, fps, tuple(int(v) for v in meta["size"]), int(count),
                     bool(re.search(r"Stream #\S+.*: Audio:", text)))


def read_frames(path: str, indices: Sequence[int]) -> Iterator[Tuple[int, np.ndarray]]:
    """``(index, picture)`` for each wanted source frame, in ascending order.

    ``indices``: 0-based frame numbers of the source (repeats allowed);
    pictures are ``uint8 (rows, cols, 3)`` RGB as decoded.
    """
    wanted = sorted(indices)
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    width, height = meta["size"]
    position = 0
    try:
        for number, raw in enumerate(reader):
            while position < len(wanted) and wanted[position] == number:
                yield number, np.frombuffer(raw, np.uint8).reshape(height, width, 3)
                position += 1
            if position >= len(wanted):
                break
    finally:
        reader.close()


def check_output(path: str, codec: str) -> None:
    """``UserError`` unless ``path`` can be written as a film with ``codec``."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in CONTAINERS:
        raise UserError(f"--output={path}: unknown film format {suffix or '(none)'!r}; "
                        f"end it with one of {', '.join(sorted(CONTAINERS))}")
    if os.path.isdir(path):
        raise UserError(f"--output={path} is a directory; give a file name such as out.mp4")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write --output={path} ({folder} is not a writable "
                        "directory); choose another --output")
    if codec not in encoders():
        raise UserError(f"--codec={codec}: this ffmpeg has no such encoder; use one of "
                        "libx264, libvpx-vp9, ffv1, mpeg4")


def encoders() -> set:
    """Names of the video and audio encoders of the bundled ffmpeg."""
    text = subprocess.run([ffmpeg(), "-hide_banner", "-encoders"], capture_output=True,
                          text=True, errors="replace").stdout
    return {m.group(1) for m in re.finditer(r"^ [VAS][A-Z.]{5} (\S+)", text, re.M)}


def _pix_fmt(codec: str, rows: int, cols: int) -> str:
    if codec in ("libx264", "libvpx-vp9", "mpeg4"):  # 4:2:0 needs even sides
        return "yuv420p" if rows % 2 == 0 and cols % 2 == 0 else "yuv444p"
    return "bgr0" if codec == "ffv1" else "yuv444p"


def _write_video(path: str, frames: Iterable[np.ndarray], fps: float, size, codec: str,
                 crf: int = 18):
    rows, cols = size
    params = ["-crf", str(int(crf))] if codec == "libx264" else []
    writer = imageio_ffmpeg.write_frames(
        path, (cols, rows), fps=fps, codec=codec, macro_block_size=1, quality=None,
        pix_fmt_out=_pix_fmt(codec, rows, cols), output_params=params,
        ffmpeg_log_level="error")
    writer.send(None)
    count = 0
    for frame in frames:
        writer.send(np.ascontiguousarray(frame, np.uint8))
        count += 1
    writer.close()
    return count


def _mux_audio(video: str, source: str, start_s: float, duration_s: float, out: str):
    audio_codec = CONTAINERS[os.path.splitext(out)[1].lower()]
    command = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", video,
               "-ss", f"{start_s:.6f}", "-t", f"{duration_s:.6f}", "-i", source,
               "-map", "0:v:0", "-map", "1:a:0?", "-c:v", "copy", "-c:a", audio_codec, out]
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or ["ffmpeg failed"])[-1]
        raise UserError(f"cannot copy the audio of {source} into {out} ({why})")


def encode(path: str, frames: Iterable[np.ndarray], fps: float, size: Tuple[int, int],
           codec: str = "libx264", audio_from: Optional[str] = None,
           audio_start_s: float = 0.0, crf: int = 18) -> int:
    """Writes ``frames`` (``size = (rows, cols)``) to ``path``; returns the frame count.

    With ``audio_from``, its audio from ``audio_start_s`` on, as long as the
    film, is copied in.  ``path`` appears only when everything worked.
    """
    folder = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    fd, video_tmp = tempfile.mkstemp(prefix=".tmp-video-", suffix=suffix, dir=folder)
    os.close(fd)
    fd, muxed_tmp = tempfile.mkstemp(prefix=".tmp-muxed-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        count = _write_video(video_tmp, frames, fps, size, codec, crf)
        final = video_tmp
        if audio_from is not None:
            _mux_audio(video_tmp, audio_from, audio_start_s, count / fps, muxed_tmp)
            final = muxed_tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(final, 0o666 & ~umask)
        os.replace(final, path)
        return count
    finally:
        for tmp in (video_tmp, muxed_tmp):
            if os.path.exists(tmp):
                os.remove(tmp)
