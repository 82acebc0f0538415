"""The field kit: how one option is declared, parsed, checked and shown.

``setting(...)`` makes a field of a frozen dataclass that carries its
default, its help text, its allowed values or check, the kind of
command-line flag it becomes, its docs section, and marks: whether it changes
the result (settings that do not may change on ``--resume``), the network
(``settings.network_key``) or a film's frames (``settings.frame_settings``,
``video.film.frames_key``).  ``settings.Config`` and each command's options
(``video.options``, ``batch.options``, ``app.options``) are made of such
fields; the flags (``nst_keras.cli``), ``validate_fields`` and the docs'
tables (``nst_keras.docs``) are generated from them.

Checks take ``(name, value)`` and raise ``UserError`` naming the flag and
the fix; ``FLAG_KINDS`` turns a flag's text into its value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from nst_keras.errors import UserError


# --------------------------------------------------------------------------
# Checks shared by every command's fields


def fail(name: str, value, what: str):
    raise UserError(f"--{name}={show_value(value)} {what}")


def positive_int(name, value):
    if int(value) <= 0:
        fail(name, value, "must be a positive integer")


def non_negative_int(name, value):
    if int(value) < 0:
        fail(name, value, "must be 0 or more")


def weight(name, value):
    if not float(value) >= 0 or float(value) == math.inf:
        fail(name, value, "must be a finite number >= 0")


def positive_or_none(name, value):
    if value is not None and not float(value) > 0:
        fail(name, value, "must be positive")


def positive_finite(name, value):
    if not (math.isfinite(float(value)) and float(value) > 0):
        fail(name, value, "must be a positive number")


def off_or_fraction(name, value):
    if not 0 <= float(value) < 1:
        fail(name, value, "must be in [0, 1) (0 = off)")


MAX_CARRIED = 0.95  # the largest share of the previous stylised frame carried into the next


def carried_share(name, value):
    """Films' ``--blend_previous`` and the camera's ``--live_steady``."""
    if not 0.0 <= float(value) <= MAX_CARRIED:  # also refuses NaN
        fail(name, value, f"must be 0 (each frame alone) to {MAX_CARRIED}")


# --------------------------------------------------------------------------
# Flag syntax: how the text of a flag becomes a value.


def as_list(value) -> list:
    return [value] if isinstance(value, (int, float)) or hasattr(value, "dtype") \
        and getattr(value, "ndim", 1) == 0 else list(value)


def numbers(kind: Callable, what: str):
    def parse(name, items):
        try:
            return tuple(kind(v) for v in items)
        except ValueError:
            raise UserError(f"--{name}={','.join(items)} must be {what} separated by "
                            "commas") from None
    return parse


def texts(name, items):
    return tuple(str(v).strip() for v in items if str(v).strip())


def size_text(name, text):
    text = str(text).strip()
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--{name}={text} must be 0 (off), auto or a tile side in pixels "
                        "like 1024") from None


def iterations_text(name, items):
    counts = numbers(int, "integers")(name, items)
    return counts[0] if len(counts) == 1 else counts


def parse_offsets(text, name: str = "deprocess_offsets") -> Tuple[Tuple[float, float, float], ...]:
    """Parses ``"103.939,116.779,123.68;0,0,0"``: B,G,R triples separated by ``;``.

    Spaces are ignored and a trailing ``;`` is allowed.

    Raises:
      UserError: empty, not numbers, or not three numbers per triple.
    """
    example = "e.g. '103.939,116.779,123.68;0,0,0'"
    parts = [p.strip() for p in str(text).split(";") if p.strip()]
    if not parts:
        raise UserError(f"--{name} is empty; give B,G,R triples separated by ';', {example}")
    out = []
    for part in parts:
        try:
            triple = tuple(float(n.strip()) for n in part.split(","))
        except ValueError:
            raise UserError(f"--{name}: {part!r} is not three numbers; write B,G,R triples "
                            f"separated by ';', {example}") from None
        if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
            raise UserError(f"--{name}: {part!r} needs exactly three finite numbers (B,G,R); "
                            "separate triples with ';'")
        out.append(triple)
    return tuple(out)


def format_offsets(offsets) -> str:
    """The flag syntax of B,G,R triples: ``B,G,R;B,G,R``."""
    return ";".join(",".join(number_text(v) for v in t) for t in offsets)


# absl flag kind -> parser of the flag's value (None: the value as absl gives it).
FLAG_KINDS: Dict[str, Optional[Callable]] = {
    "string": None,
    "integer": None,
    "float": None,
    "boolean": None,
    "strings": texts,
    "integers": numbers(int, "integers"),
    "floats": numbers(float, "numbers"),
    "iterations": iterations_text,
    "offsets": lambda name, text: parse_offsets(text, name),
    "size": size_text,
}


# --------------------------------------------------------------------------
# Declaring fields


def setting(default, help: str, *, flag: str = "string", choices: Sequence[str] = (),
            check: Optional[Callable] = None, result: bool = True, group: str = "run",
            flag_default: Any = dataclasses.MISSING, network: bool = False,
            frames: bool = True):
    """A field (of ``Config`` or an option class) with everything the flags,
    checks and docs need.

    Args:
      default: the value in Python (the keras.io tutorial's where it has one);
        ``dataclasses.MISSING``: none, the field must be given (its flag's
        default is unset).
      help: one sentence for ``--help`` and the docs.
      flag: the kind of absl flag (a key of ``FLAG_KINDS``).
      choices: the allowed values (checked; listed in the help).
      check: ``check(name, value)`` raising ``UserError`` (values not None).
      result: whether the setting changes the result (``--resume`` refuses to
        change such settings).
      group: the docs section the flag is listed under.
      flag_default: the command line's default where it differs from Python's.
      network: whether the setting changes the network (``network_key``).
      frames: whether the setting can change a film's frames
        (``frame_settings``; False: stylised frames are reused across it).
    """
    if flag_default is dataclasses.MISSING:
        flag_default = None if default is dataclasses.MISSING else default
    meta = dict(help=help, flag=flag, choices=tuple(choices), check=check,
                result=result, group=group, flag_default=flag_default, network=network,
                frames=frames)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fields_of(source) -> Dict[str, dataclasses.Field]:
    """``{name: field}`` of the ``setting`` fields of a dataclass (the class or
    an instance); a dict of fields is returned as it is."""
    if isinstance(source, dict):
        return source
    return {f.name: f for f in dataclasses.fields(source) if "help" in f.metadata}


def group(name: str):
    """``setting`` with its docs section set to ``name``."""
    return lambda *args, **kwargs: setting(*args, group=name, **kwargs)


# --------------------------------------------------------------------------
# Checking and showing values


def coerce(obj):
    """Accepts the flag syntax (a string) for list settings given in Python
    (``obj``: a ``Config`` or an option object)."""
    changes = {}
    for name, field in fields_of(obj).items():
        parse = FLAG_KINDS[field.metadata["flag"]]
        value = getattr(obj, name)
        if parse is not None and isinstance(value, str):
            text = value if field.metadata["flag"] in ("offsets", "size") else value.split(",")
            changes[name] = parse(name, text)
    return dataclasses.replace(obj, **changes) if changes else obj


def validate_fields(obj):
    """``obj`` (a ``Config`` or an option object) with flag-syntax strings
    parsed, once each field's allowed values and check pass; the first bad
    field raises a one-line ``UserError``."""
    obj = coerce(obj)
    for name, field in fields_of(obj).items():
        value = getattr(obj, name)
        choices = field.metadata["choices"]
        if choices and value not in choices:
            raise UserError(f"--{name}={value!r} is not known; use one of: "
                            f"{', '.join(choices)}")
        if field.metadata["check"] is not None and value is not None:
            field.metadata["check"](name, value)
    return obj


def number_text(v) -> str:
    """A number as short as it reads: ``4.0`` -> ``4``, ``0.4`` -> ``0.4``."""
    v = float(v)
    return str(int(v)) if math.isfinite(v) and v == int(v) and abs(v) < 1e15 else repr(v)


def show_value(value) -> str:
    """A value as a flag would be written (lists joined by commas)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def flag_text(field: dataclasses.Field, value) -> Optional[str]:
    """A value written as the flag of ``field`` takes it (``None`` for no value)."""
    if value is None:
        return None
    if field.metadata["flag"] == "offsets":
        return format_offsets(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(number_text(v) if isinstance(v, float) else str(v) for v in value)
    return str(value)


def full_help(field: dataclasses.Field) -> str:
    """The help text of ``field`` with the allowed values appended."""
    choices = field.metadata["choices"]
    return field.metadata["help"] + (f" One of: {', '.join(choices)}." if choices else "")
