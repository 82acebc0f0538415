"""The engine: one style transfer in memory.

It writes no file and reports through callbacks (``callbacks``).  Its modules
import only ``nst_keras.errors``, ``nst_keras.settings`` and each other:

* ``imaging``: pictures (open, resize, colour transforms; NumPy/Pillow);
* ``vgg``: the backbone, the cut feature extractor, pre- and deprocessing;
* ``terms``: the loss-term contract and the content, style and
  total-variation terms;
* ``objective``: a list of weighted terms, evaluated whole or tile by tile;
* ``tiling``: tile geometry and spreading tiles over devices;
* ``optim``: SGD/Adam and L-BFGS behind one interface;
* ``memory``, ``hardware``: memory estimates, precision and threads;
* ``callbacks``: what a run reports and the stopping rules;
* ``pipeline``: ``stylize``, inputs -> scales -> targets -> objective -> loop.

Importing this package starts nothing (TensorFlow loads with ``objective``,
``tiling``, ``optim`` and ``pipeline``).
"""
