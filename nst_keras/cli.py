"""The flags of every command, generated from the settings' fields.

Every field of ``settings.Config`` is a flag (generated here from the
field's kind, default and help), and so is every field of the option class
of a command (``video.options``, ``batch.options``, ``app.options``:
``define_flags(flag_values, source)``, read back by ``options_from_flags``).
``--preset=NAME`` reads a preset shipped in the package (``nst_keras/presets/NAME.cfg``, the same files as the
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

from nst_keras import constants, fields, settings
from nst_keras.errors import Interrupted, NonFiniteLoss, UserError
from nst_keras.output import checkpoint

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


def define_flags(flag_values: flags.FlagValues, source=settings.FIELDS) -> None:
    """Defines one absl flag per field in ``flag_values``: ``Config``'s, or those of
    ``source`` (an option class such as ``video.options.VideoOptions``, or a dict of
    fields)."""
    for name, field in fields.fields_of(source).items():
        kind = field.metadata["flag"]
        default = fields.flag_text(field, field.metadata["flag_default"])
        if kind in ("integer", "float", "boolean"):
            default = field.metadata["flag_default"]
        _DEFINE[kind](name, default, fields.full_help(field), flag_values=flag_values)


define_flags(FLAGS)


def _values(source: dict, f: flags.FlagValues) -> dict:
    """``{name: value}`` of the parsed flags of ``source``'s fields (flag syntax parsed)."""
    values = {}
    for name, field in source.items():
        value = f[name].value
        parse = fields.FLAG_KINDS[field.metadata["flag"]]
        values[name] = parse(name, value) if parse is not None and value is not None else value
    return values


def options_from_flags(cls, f: flags.FlagValues = FLAGS):
    """The validated ``cls`` object (an option class) of the parsed flags ``f``."""
    return fields.validate_fields(cls(**_values(fields.fields_of(cls), f)))


def config_from_flags(f: flags.FlagValues = FLAGS) -> settings.Config:
    """Turns parsed flags into a validated ``Config`` (with ``--resume`` applied)."""
    config = settings.Config(**_values(settings.FIELDS, f))
    if config.resume:  # the interrupted run's settings, with the ones given here checked
        config = checkpoint.resume_config(config.resume, config,
                                          [n for n in f if f[n].present])
    return settings.validate(config)


PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
_PRESET = ("--preset", "-preset")
_FLAGFILE = ("--flagfile", "-flagfile")
_MAX_NESTING = 16  # presets read within presets, at most


def preset_names() -> list:
    """The shipped presets' names (``nst_keras/presets/NAME.cfg``), sorted."""
    return sorted(n[:-len(".cfg")] for n in os.listdir(PRESETS_DIR) if n.endswith(".cfg"))


def preset_path(name: str) -> str:
    """The file of preset ``name``; a one-line ``UserError`` listing the presets if unknown."""
    names = preset_names()
    if name not in names:
        raise UserError(f"--preset={name} is not known; use one of: {', '.join(names)}")
    return os.path.join(PRESETS_DIR, name + ".cfg")


def _presets_to_flagfiles(args: list) -> list:
    """``args`` with each ``--preset=NAME`` or ``--preset NAME`` replaced, in
    place, by ``--flagfile=<the preset's file>``; nothing after ``--`` changes."""
    out, rest = [], iter(args)
    for arg in rest:
        if arg == "--":
            return out + [arg, *rest]
        flag, eq, name = arg.partition("=")
        if flag in _PRESET:
            arg = "--flagfile=" + preset_path(name if eq else next(rest, ""))
        out.append(arg)
    return out


def _names_any(args: list, flag_names) -> bool:
    return any(a.partition("=")[0] in flag_names for a in args)


def expand_presets(argv, flag_values: flags.FlagValues = FLAGS) -> list:
    """``argv`` (program name first) with every preset and flagfile read in
    where it stands, so flags stay in their order (the last value wins).

    A preset file may name another preset (``--preset=default`` on a line of
    its own): presets ship together, so a preset never depends on the
    current folder the way a nested ``--flagfile=PATH`` does.
    """
    args = _presets_to_flagfiles(list(argv[1:]))
    for _ in range(_MAX_NESTING):
        if not _names_any(args, _FLAGFILE):
            break
        args = flag_values.read_flags_from_files(args, force_gnu=False)
        if not _names_any(args, _PRESET):
            break
        args = _presets_to_flagfiles(args)
    else:
        raise UserError(f"presets read within presets more than {_MAX_NESTING} deep; "
                        "check the files' --preset lines for a circle")
    return [argv[0], *args]


def preset_config(name: str, extra=()) -> settings.Config:
    """The validated ``Config`` of ``--preset=NAME`` followed by the flags ``extra``
    (every other setting at its default); parses into flags of its own."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    parse(["prog", f"--preset={name}", *extra], flag_values)
    return config_from_flags(flag_values)


def presets_help() -> str:
    """The shipped presets, one a line: name and the first line of its file."""
    lines = [f"presets (--preset=NAME reads {PRESETS_DIR}{os.sep}NAME.cfg):"]
    for name in preset_names():
        with open(preset_path(name), encoding="utf-8") as f:
            first = f.readline()
        about = first[1:].strip() if first.startswith("#") else ""
        lines.append(f"  {name:<20} {about}".rstrip())
    return "\n".join(lines)


def parse(argv, flag_values: flags.FlagValues = FLAGS) -> None:
    """Parses ``argv`` (program name first) into ``flag_values``, from defaults.

    ``--preset=NAME`` (or ``--preset NAME``) reads the shipped preset
    ``NAME`` where it stands, as ``--flagfile`` does its file.  Raises
    ``UserError`` with one line for a bad flag, value, preset or flagfile.
    """
    flag_values.unparse_flags()
    try:
        flag_values(expand_presets(argv, flag_values))
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
        print(doc.strip() + "\n\n" + presets_help() + "\n\nflags:\n" + flag_values.get_help(),
              flush=True)
        return True
    return False


def exit_status(body, interrupted) -> int:
    """Runs a command's ``body()`` (its exit status) and turns what it raises into
    one line on stderr and the status: ``UserError`` 2, ``NonFiniteLoss`` 1,
    ``Interrupted`` or Ctrl-C 130 (``interrupted(error)`` says what was kept)."""
    try:
        return body()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"stopped: {interrupted(e)}", file=sys.stderr, flush=True)
        return 130


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 closed to its C++ start-up chatter.

    TensorFlow's native start-up lines (oneDNN, CUDA probing) ignore
    ``TF_CPP_MIN_LOG_LEVEL``; they would bury the one-line messages of this
    program.  Set ``NST_KERAS_VERBOSE=1`` to see them.
    """
    if os.environ.get(constants.VERBOSE_VARIABLE):
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
