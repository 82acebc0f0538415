"""Per-item set-up of a batch worker: what each item costs besides its steps.

Runs ``--items`` items (one style, different photos of one size) in one
process through ``nst_keras.batch.run_item`` with one worker cache, as a
batch worker does, and times each item twice: with ``--iterations`` steps
and with 1 step.  The difference over ``iterations - 1`` is the time of a
step; what is left of the 1-step item is its set-up (opening the pictures,
building the extractor and the targets, tracing the step, writing files).
The first item pays for TensorFlow's start and is reported apart.

Usage (from the repository root)::

    python benchmarks/reuse.py --optimizer=lbfgs
    python benchmarks/reuse.py --optimizer=sgd --rows=128
    python benchmarks/reuse.py --optimizer=adam --rows=64 --preset=fast
    python benchmarks/reuse.py --optimizer=adam --rows=64 --style_loss=wasserstein

``--preset`` takes a shipped preset's objective (its colour term, style loss,
normalisation, weights) instead of the default objective below; ``--style_loss``
changes the style statistics of either.

Prints one JSON object: the machine, set-up seconds per item after the
first (median; the 1-step item, its one step included), step seconds, the
ratio set-up / step, and ``beyond_steps_s_median`` (set-up less one step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("NST_KERAS_SOURCE", REPO))

from nst_keras import batch, cli, settings  # noqa: E402


def machine() -> str:
    """The CPU's name and the flags that decide the precision and speed."""
    from nst_keras.engine import hardware

    wanted = sorted(f for f in hardware.cpu_flags()
                    if f.startswith(("avx512_bf16", "amx", "avx2", "avx512f")))
    return f"{hardware.cpu_name() or platform.processor()} [{' '.join(wanted)}]"


def pictures(root: str, count: int, rows: int):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = os.path.join(root, f"photo{i}.png")
        Image.fromarray(rng.integers(0, 255, (rows, rows * 4 // 3, 3), np.uint8)).save(path)
        paths.append(path)
    style = os.path.join(root, "style.png")
    Image.fromarray(rng.integers(0, 255, (rows, rows, 3), np.uint8)).save(style)
    return paths, style


def item_seconds(config, items, out: str, cache) -> list:
    seconds = []
    for item in items:
        started = time.perf_counter()
        record = batch.run_item(config, item, out, cache)
        assert record["status"] == "finished", record
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=11)
    parser.add_argument("--optimizer", default="lbfgs")
    parser.add_argument("--preset", default=None, help="a shipped preset's objective")
    parser.add_argument("--style_loss", default=None)
    args = parser.parse_args()
    cli.import_tensorflow_quietly()
    root = tempfile.mkdtemp()
    photos, style = pictures(root, args.items, args.rows)
    make_cache = getattr(batch, "new_cache", None) or getattr(batch, "TargetCache")
    result = {"machine": machine(), "cores": os.cpu_count(), "rows": args.rows,
              "optimizer": args.optimizer, "items": args.items,
              "source": os.path.dirname(os.path.dirname(batch.__file__)),
              "load_1min": os.getloadavg()[0]}
    per = {}
    result.update(preset=args.preset, style_loss=args.style_loss)
    reused = {}
    for steps in (1, args.iterations):
        run = dict(weights="random", seed=1, img_nrows=args.rows, iterations=steps,
                   optimizer=args.optimizer, precision="float32", log_every=1, save_every=0,
                   output_dir=os.path.join(root, f"s{steps}"))
        if args.preset:
            config = cli.preset_config(args.preset).replace(
                content_image=None, style_image=None, scales=None, **run)
        else:
            config = settings.Config(
                content_layers=["block4_conv2"],
                style_layers=["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1"],
                loss_normalization="scaled", content_weight=1.0, style_weight=10.0,
                total_variation_weight=0.1, **run)
        if args.style_loss:
            config = config.replace(style_loss=args.style_loss)
        items = batch.make_items(photos, style)
        cache = make_cache()
        per[steps] = item_seconds(config, items, config.output_dir, cache)
        reused[steps] = getattr(cache, "reused", None)
    result["objectives_reused"] = reused
    setup = [one for one in per[1][1:]]
    step = [(many - one) / (args.iterations - 1)
            for one, many in zip(per[1][1:], per[args.iterations][1:])]
    result.update(first_item_s=round(per[1][0], 3),
                  setup_s_median=round(statistics.median(setup), 4),
                  setup_s=[round(s, 4) for s in setup],
                  step_s_median=round(statistics.median(step), 4),
                  setup_over_step=round(statistics.median(setup) / statistics.median(step), 2),
                  # the 1-step item less its one step: what an item costs besides steps
                  beyond_steps_s_median=round(statistics.median(setup) - statistics.median(step),
                                              4))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
