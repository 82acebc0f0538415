"""The ``stylize`` that writes files (``nst_keras.stylize``).

It is the engine's in-memory ``stylize`` with the file layer on top: with
``config.output_dir`` set it checks the output directory before any input is
opened, attaches ``rundir.RunDirectory`` (images, ``run.json``,
``metrics.jsonl``, checkpoints) as a callback and, with ``config.resume``,
continues from the directory's checkpoint.  Without ``output_dir`` nothing is
written.  ``--precision=auto`` is answered from the per-machine cache file
(``precision_cache``) either way.
"""

from __future__ import annotations

from typing import Sequence

from nst_keras.engine import pipeline
from nst_keras.output import precision_cache, rundir
from nst_keras.settings import Config


def stylize(config: Config, content=None, style=None, callbacks: Sequence = (),
            log=print, *, target_cache=None, extra_terms: Sequence = ()) -> pipeline.Result:
    """Runs one style transfer, writing ``config.output_dir`` when it is set.

    Arguments and result are ``engine.pipeline.stylize``'s; ``callbacks`` are
    called after the run directory's.  Raises what it raises, and
    ``UserError`` for an output directory it may not write (nothing written).
    """
    config = pipeline.checked(config, content, style)
    directory = rundir.RunDirectory(config, log) if config.output_dir is not None else None
    start = directory.resume_state if directory is not None else None
    with precision_cache.used():
        return pipeline.stylize(config, content, style,
                                [*([directory] if directory else []), *callbacks], log,
                                start=start, target_cache=target_cache,
                                extra_terms=extra_terms, is_checked=True)
