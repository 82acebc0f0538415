"""``python -m nst_keras.train``: see ``nst_keras.train``."""

from __future__ import annotations

import dataclasses
import sys

from absl import flags

from nst_keras import cli, fields, settings
from nst_keras import train as trainlib  # TensorFlow-free until the training starts
from nst_keras.train import options as opts

FLAGS = flags.FlagValues()
cli.define_flags(FLAGS, opts.config_fields())
cli.define_flags(FLAGS, opts.TrainOptions)

_DOC = __import__("nst_keras.train", fromlist=["__doc__"]).__doc__


def settings_from_flags(f: flags.FlagValues = FLAGS):
    """``(Config, TrainOptions)`` of the parsed flags; with ``--resume``, every flag
    not given is the run's own (from its ``run.json``)."""
    config_values = cli._values(opts.config_fields(), f)
    option_values = cli._values(fields.fields_of(opts.TrainOptions), f)
    if f["resume"].value:
        stored = trainlib._read_run(f["resume"].value)
        for name in config_values:
            if not f[name].present and name in stored["config"]:
                config_values[name] = stored["config"][name]
        for name in option_values:
            if not f[name].present and name in stored["train"] and name != "resume":
                option_values[name] = stored["train"][name]
    config = dataclasses.replace(settings.Config(), **config_values)
    return config, opts.TrainOptions(**option_values)


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    if cli.print_help_if_asked(argv, _DOC, FLAGS):
        return 0

    def body() -> int:
        cli.parse(argv, FLAGS)
        config, options = settings_from_flags()
        for name in ("photos", "output"):
            if getattr(options, name) is None:
                raise settings.UserError(f"no --{name} given; see python -m nst_keras.train "
                                         "--help")
        cli.import_tensorflow_quietly()
        trainlib.train(options, config)
        return 0

    def interrupted(error) -> str:
        return str(error) if str(error) else "interrupted before the first checkpoint"

    return cli.exit_status(body, interrupted)


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
