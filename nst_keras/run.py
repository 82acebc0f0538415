"""One picture: ``python -m nst_keras.run --preset=fast --content_image=photo.jpg
--style_image=painting.jpg`` (or ``--flagfile=configs/default.cfg``).

Every field of ``settings.Config`` is a flag (``nst_keras.cli``).  A flag
given after ``--preset`` or ``--flagfile`` overrides the file's value.

Exit status: 0 finished; 1 stopped on a NaN/Inf loss (last finite image
kept); 2 bad input or settings (nothing written); 130 interrupted (image and
checkpoint saved when the loop had started).

``--network=painting.keras`` (from ``python -m nst_keras.train``) stylises
the content in one forward pass instead: ``<stem>_stylized.png`` in
``--output_dir``, with ``--img_nrows`` and ``--preserve_colors``.
"""

from __future__ import annotations

import os
import sys

from nst_keras import cli, settings
from nst_keras.engine import imaging  # TensorFlow-free: pictures are checked before it starts
from nst_keras.errors import Interrupted, UserError
from nst_keras.output import networks  # TensorFlow-free until a network is loaded


def _check_pictures(config: settings.Config) -> None:
    """A local picture that is missing is refused before TensorFlow starts (the
    one-line error comes in a fraction of a second, not after the import)."""
    sources = [config.content_image, *settings.style_sources(config.style_image)]
    if config.network is not None:
        sources = [config.content_image]
        if not os.path.isfile(config.network):
            raise UserError(f"--network={config.network} does not exist; give a .keras file "
                            "that python -m nst_keras.train wrote")
    for source in sources:
        if isinstance(source, str) and not imaging.is_url(source):
            imaging.fetch(source)  # a local path: only checked


def _run(config: settings.Config) -> list:
    """Runs the style transfer or experiment; returns the files written."""
    _check_pictures(config)
    cli.import_tensorflow_quietly()
    if config.network is not None:
        return networks.stylize_file(config)
    if config.experiment != "none":
        from nst_keras import experiments  # late: after the quiet TensorFlow import

        return experiments.run_experiment(config).paths
    from nst_keras.output import stylize  # late: after the quiet TensorFlow import

    return stylize.stylize(config).paths


def _interrupted(error: BaseException) -> str:
    if isinstance(error, Interrupted):
        return str(error)
    return "interrupted before a checkpoint could be saved; files written so far are kept"


def main(argv=None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    argv = sys.argv if argv is None else argv
    if cli.print_help_if_asked(argv, __doc__):
        return 0

    def body() -> int:
        cli.parse(argv)
        paths = _run(cli.config_from_flags())
        print(f"saved {paths[-1]}" if paths else "done", flush=True)
        return 0

    return cli.exit_status(body, _interrupted)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
