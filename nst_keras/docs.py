"""The docs' generated tables: every flag of every command, the environment.

The tables of ``docs/`` between ``<!-- MARKER:start -->`` and
``<!-- MARKER:end -->`` lines are made from the fields (``settings.Config``
and each command's options) and from ``constants.ENVIRONMENT``, so they
cannot drift from the code; a test checks that they are fresh.

``python -m nst_keras.docs`` prints the guide's flag table;
``python -m nst_keras.docs --write-docs`` rewrites every generated block of
``docs/``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import List, Sequence

from nst_keras import constants, fields, settings
from nst_keras.app.options import ServerOptions
from nst_keras.batch.options import BatchOptions
from nst_keras.export import ExportOptions
from nst_keras.train.options import TrainOptions
from nst_keras.errors import UserError
from nst_keras.video.options import VideoOptions

GROUP_TITLES = {
    "inputs": "Inputs, size and artist controls",
    "objective": "Objective and network",
    "optimizer": "Optimiser and speed",
    "tiling": "Tiling and devices",
    "output": "Output, resume and safety",
    "experiments": "Experiments",
}


def flag_table(source=None) -> str:
    """A flag table (Markdown) of ``source``'s fields (an option class, or a dict
    of fields; ``None``: ``Config``'s, the guide's table), one section per
    group in field order, titled where ``GROUP_TITLES`` names the group."""
    table_fields = settings.FIELDS if source is None else fields.fields_of(source)
    lines = []
    for group in dict.fromkeys(f.metadata["group"] for f in table_fields.values()):
        if group in GROUP_TITLES:
            lines += [f"**{GROUP_TITLES[group]}**", ""]
        lines += ["| flag | default | meaning |", "|---|---|---|"]
        for name, field in table_fields.items():
            if field.metadata["group"] != group:
                continue
            default = fields.flag_text(field, field.metadata["flag_default"])
            shown = "—" if default is None else f"`{default}`"
            lines.append(f"| `--{name}` | {shown} | {fields.full_help(field).replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# The generated tables of docs/: (file, marker, fields).  Each table stands
# between <!-- MARKER:start --> and <!-- MARKER:end --> lines of its file.
DOC_TABLES = (
    ("guide.md", "flags", settings.FIELDS),
    ("video.md", "video-flags", VideoOptions),
    ("batch.md", "batch-flags", BatchOptions),
    ("app.md", "app-flags", ServerOptions),
    ("networks.md", "train-flags", TrainOptions),
    ("networks.md", "export-flags", ExportOptions),
)
# Other generated blocks: (file, marker, function returning the block).
DOC_BLOCKS = (("guide.md", "environment", lambda: environment_table()),)  # defined below
DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def environment_table() -> str:
    """The environment variables the package reads (``constants.ENVIRONMENT``)."""
    lines = ["| variable | effect |", "|---|---|"]
    lines += [f"| `{name}` | {what.replace('|', '/')} |"
              for name, what in constants.ENVIRONMENT.items()]
    return "\n".join(lines) + "\n"


def with_table(text: str, marker: str, table: str) -> str:
    """``text`` with the block between ``marker``'s start and end lines set to ``table``."""
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    head, found, rest = text.partition(start)
    if not found or end not in rest:
        raise UserError(f"no {start.strip()} ... {end} block to write the table into")
    return head + start + table + end + rest.split(end, 1)[1]


def write_docs(docs_dir: str = DOCS_DIR) -> List[str]:
    """Rewrites every block of ``DOC_TABLES`` and ``DOC_BLOCKS`` under ``docs_dir``;
    returns the files that changed."""
    changed = []
    blocks = [(name, marker, functools.partial(flag_table, source))
              for name, marker, source in DOC_TABLES] + list(DOC_BLOCKS)
    for name, marker, make in blocks:
        path = os.path.join(docs_dir, name)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = with_table(text, marker, make())
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            if path not in changed:
                changed.append(path)
    return changed


def main(argv: Sequence[str]) -> int:
    """``python -m nst_keras.docs``: prints the guide's flag table;
    ``--write-docs`` rewrites the tables of ``docs/`` instead."""
    if list(argv[1:]) == ["--write-docs"]:
        for path in write_docs():
            print(f"wrote {path}")
        return 0
    if argv[1:]:
        print("usage: python -m nst_keras.docs [--write-docs]", file=sys.stderr)
        return 2
    print(flag_table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
