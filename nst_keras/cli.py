"""The flags of every command, generated from the settings' fields.

Every field of ``settings.Config`` is a flag (generated here from the
field's kind, default and help).  ``--preset=NAME`` reads a preset shipped in
the package (``nst_keras/presets/NAME.cfg``, the same files as the
checkout's ``configs/``) and ``--flagfile=PATH`` any flag file; flags are
read left to right, so a flag given after either overrides its value.

``parse`` turns bad flags into one-line ``UserError``s;
``import_tensorflow_quietly`` starts TensorFlow without its C++ chatter.
The commands themselves are ``nst_keras.run``, ``nst_keras.batch``,
``nst_keras.video`` and ``nst_keras.app``.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from nst_keras.output import checkpoint
from nst_keras import settings
from nst_keras.errors import Interrupted, NonFiniteLoss, UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FlagValues()

_DEFINE = {
    "string": flags.DEFINE_string,
    "integer": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "boolean": flags.DEFINE_boolean,
    "strings": flags.DEFINE_list,
    "integers": flags.DEFINE_list,
    "floats": flags.DEFINE_list,
    "iterations": flags.DEFINE_list,
    "offsets": flags.DEFINE_string,
    "size": flags.DEFINE_string,
}


def define_flags(flag_values: flags.FlagValues) -> None:
    """Defines one absl flag per ``Config`` field in ``flag_values``."""
    for name, field in settings.FIELDS.items():
        kind = field.metadata["flag"]
        default = settings.flag_text(name, field.metadata["flag_default"])
        if kind in ("integer", "float", "boolean"):
            default = field.metadata["flag_default"]
        _DEFINE[kind](name, default, settings.full_help(name), flag_values=flag_values)


define_flags(FLAGS)


def config_from_flags(f: flags.FlagValues = FLAGS) -> settings.Config:
    """Turns parsed flags into a validated ``Config`` (with ``--resume`` applied)."""
    values = {}
    for name, field in settings.FIELDS.items():
        value = f[name].value
        parse = settings.FLAG_KINDS[field.metadata["flag"]]
        values[name] = parse(name, value) if parse is not None and value is not None else value
    config = settings.Config(**values)
    if config.resume:  # the interrupted run's settings, with the ones given here checked
        config = checkpoint.resume_config(config.resume, config,
                                          [n for n in f if f[n].present])
    return settings.validate(config)


def parse(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """Parses ``argv`` (program name first) into ``flag_values``, from defaults.

    Raises ``UserError`` with one line for a bad flag, value or flagfile.
    """
    flag_values.unparse_flags()
    try:
        flag_values(list(argv))
    except flags.CantOpenFlagFileError as e:
        name = str(e).rsplit(": ", 1)[-1]
        raise UserError(f"cannot open flagfile {name}; check the --flagfile path") from None
    except flags.IllegalFlagValueError as e:
        raise UserError(_bad_value(str(e).splitlines()[0], flag_values)) from None
    except flags.Error as e:
        raise UserError(str(e).splitlines()[0]) from None


def _bad_value(text: str, flag_values: flags.FlagValues) -> str:
    """``flag --iterations=abc: invalid literal ...`` -> ``--iterations=abc is not an integer (...)``."""
    if not (text.startswith("flag --") and ": " in text):
        return text
    setting, reason = text[len("flag "):].split(": ", 1)
    name = setting[2:].split("=", 1)[0]
    kind = flag_values[name].flag_type() if name in flag_values else ""
    kind = {"int": "an integer", "float": "a number"}.get(kind, "a valid value")
    return f"{setting} is not {kind} ({reason})"


def print_help_if_asked(argv, doc: str, flag_values: flags.FlagValues = FLAGS) -> bool:
    """Prints ``doc`` and the flags when ``argv`` asks for help; True if it did."""
    if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        print(doc.strip() + "\n\nflags:\n" + flag_values.get_help(), flush=True)
        return True
    return False


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 closed to its C++ start-up chatter.

    TensorFlow's native start-up lines (oneDNN, CUDA probing) ignore
    ``TF_CPP_MIN_LOG_LEVEL``; they would bury the one-line messages of this
    program.  Set ``NST_KERAS_VERBOSE=1`` to see them.
    """
    if os.environ.get("NST_KERAS_VERBOSE"):
        import tensorflow  # noqa: F401  late: imported loudly on request

        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow as tf  # late: the point of this function

        tf.config.list_physical_devices()  # device probing prints here too
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
