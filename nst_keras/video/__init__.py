"""A stylised film: ``python -m nst_keras.video --video=in.mp4 --style_image=art.jpg
--output=out.mp4``.

Every engine flag (and ``--flagfile``) applies to each frame.  The output has
the film's frame rate, frame count, size (or ``--img_nrows``) and audio;
``--frames=START:END`` and ``--fps`` take part of a film or sample it more
sparsely.  Each frame after the first starts from the previous stylised
frame warped along the optical flow and keeps its non-occluded pixels
through a temporal loss (``--temporal_weight``; 0: independent frames), so
the film does not flicker (``nst_keras.video.film``).  Every stylised frame is
kept as a PNG in ``--output_dir`` (default ``<output stem>_frames``): the
same command again goes on from the first missing frame.

``--workers=N`` cuts the film into N overlapping chunks run in parallel on a
local Ray runtime (``--ray_address`` on a cluster) and cross-fades them over
the overlap (``--chunk_overlap`` frames).

``--network=painting.keras`` (from ``python -m nst_keras.train``) instead
passes every frame through a trained style network, streaming: no frames
are kept, and the optimisation's options (``--temporal_weight``,
``--workers``...) do not apply (``nst_keras.video.network_film``).

Exit status: 0 the film was written; 2 bad input or settings (nothing
written); 130 interrupted (the frames saved so far are kept).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys

from absl import flags

from nst_keras import cli, settings
from nst_keras.errors import UserError
from nst_keras.video.options import VideoOptions

VIDEO_MISSING = ("the video command needs OpenCV and imageio-ffmpeg; install them with "
                 "pip install 'nst_keras[video]'")

FLAGS = flags.FlagValues()
cli.define_flags(FLAGS)
cli.define_flags(FLAGS, VideoOptions)


def options_from_flags(f: flags.FlagValues = FLAGS) -> VideoOptions:
    """The ``VideoOptions`` of the parsed flags (``rows`` from
    ``--scales`` or ``--img_nrows`` where given, else the film's own)."""
    _check_named(f)
    rows = None
    if f["scales"].present and f.scales:
        rows = int(f.scales[-1])
    elif f["img_nrows"].present:
        rows = f.img_nrows
    return dataclasses.replace(cli.options_from_flags(VideoOptions, f), rows=rows)


def _check_named(f: flags.FlagValues) -> None:
    if not f.video:
        raise UserError("no --video given; set --video=PATH to the film to stylise")
    if not f.output:
        raise UserError("no --output given; set --output=PATH.mp4 for the stylised film")


def config_from_flags(f: flags.FlagValues = FLAGS) -> settings.Config:
    """The engine settings (the film stands in for ``--content_image``)."""
    _check_named(f)
    if f.video:
        f.content_image = f.video
    if not f["output_dir"].present and f.output:
        f.output_dir = os.path.splitext(f.output)[0] + "_frames"
    if f.resume:
        raise UserError("--resume does not apply to a video; run the same command again "
                        "to go on from the first missing frame")
    return cli.config_from_flags(f)


def _run(argv) -> dict:
    cli.parse(argv, FLAGS)
    for module in ("cv2", "imageio_ffmpeg"):
        if importlib.util.find_spec(module) is None:
            raise UserError(VIDEO_MISSING)
    given = [name for name in FLAGS if FLAGS[name].present]
    config, options = config_from_flags(FLAGS), options_from_flags(FLAGS)
    cli.import_tensorflow_quietly()
    if config.network is not None:
        from nst_keras.video import network_film  # late: as below

        return network_film.stylize_video_with_network(config, options, given=given)
    from nst_keras.video import film  # late: after the quiet TensorFlow import

    return film.stylize_video(config, options)


def main(argv=None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    argv = sys.argv if argv is None else argv
    if cli.print_help_if_asked(argv, __doc__, FLAGS):
        return 0

    def body() -> int:
        summary = _run(argv)
        print(f"saved {summary['output']} ({summary['frames']} frames, {summary['fps']:g} "
              f"fps, {summary['size'][1]}x{summary['size'][0]}"
              f"{', with audio' if summary['audio'] else ''})", flush=True)
        return 0

    return cli.exit_status(body, lambda e: (
        f"interrupted; the frames saved so far are kept in {FLAGS.output_dir}; run the "
        "same command again to go on"))


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
