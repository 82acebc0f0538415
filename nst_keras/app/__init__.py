"""The web app: ``python -m nst_keras.app`` (or ``nst-keras-app``).

A local page to upload a photo and one or more paintings, watch the picture
form, stop, continue and download it.  This module is only the launcher: it
imports nothing of the optional ``app`` extra, so without it the command says
in one line what to install and exits with status 2.

* ``nst_keras.app.jobs``: the runs (queue, worker thread, live previews,
  uploads and the page's settings), free of any web framework;
* ``nst_keras.app.server``: the Starlette routes, server-sent events and the
  command line;
* ``nst_keras.app.guard``: what the server accepts and from whom (host, origin,
  the page's cookie, the token off loopback, upload bytes as they stream);
* ``nst_keras/app/static``: the page (plain HTML, CSS and JavaScript).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# (package to install, module it provides)
REQUIREMENTS = (("starlette", ("starlette",)), ("uvicorn", ("uvicorn",)),
                ("python-multipart", ("python_multipart", "multipart")),
                ("websockets", ("websockets", "wsproto")))
INSTALL_HINT = "pip install 'nst_keras[app]'"


def missing_packages() -> list:
    """The packages of the ``app`` extra that cannot be imported here."""
    return [package for package, modules in REQUIREMENTS
            if not any(importlib.util.find_spec(m) is not None for m in modules)]


def console_main(argv=None) -> None:
    """Entry point: the install hint (exit 2) or the server."""
    missing = missing_packages()
    if missing:
        print(f"error: the web app needs {', '.join(missing)}; install them with "
              f"{INSTALL_HINT}", file=sys.stderr, flush=True)
        sys.exit(2)
    # importlib rather than an import statement: this launcher must stay
    # importable (and able to print the hint) without the extra.
    server = importlib.import_module("nst_keras.app.server")
    sys.exit(server.main(sys.argv if argv is None else argv))
