"""The file layer on top of the engine.

* ``rundir``: the callback that owns an output directory (output safety,
  images, ``metrics.jsonl``, checkpoints, resume);
* ``checkpoint``: the checkpoint file;
* ``manifest``: ``run.json``, ``loss.png`` and small JSON helpers;
* ``plot``: the line plot ``loss.png`` is drawn with (Pillow only);
* ``files``: atomic writes, saving pictures, files' SHA-256;
* ``precision_cache``: the per-machine file of ``--precision=auto``'s answers;
* ``stylize``: the ``stylize`` that writes files (``nst_keras.stylize``): the
  engine's ``stylize`` with a run directory attached and resumed from.
"""
