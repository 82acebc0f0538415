"""What each style loss costs per step: gram, wasserstein, sliced_wasserstein (and
the colour term, gaussian and sliced), on the same images, weights and size, in one
process.

Usage (from the repository root)::

    python benchmarks/style_losses.py --rows=400 --steps=6

Prints one JSON object: the machine, seconds per step (median of the timed
steps, after one warm-up step; the settings' steps interleaved) for each setting, and each one's ratio to gram.
Random VGG19 weights, float32, the tutorial's five style layers, SGD.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from nst_keras import cli  # noqa: E402


def steal_percent():
    """Share of CPU time this virtual machine had stolen since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return round(100.0 * fields[7] / max(sum(fields), 1), 1)
    except (OSError, IndexError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    cli.import_tensorflow_quietly()
    import tensorflow as tf

    from nst_keras.engine import hardware, objective, vgg

    rng = np.random.default_rng(0)
    cols = args.rows * 3 // 2
    content, style = (vgg.preprocess_image(rng.integers(0, 255, (args.rows, cols, 3))
                                           .astype(np.uint8)) for _ in range(2))
    backbone = vgg.load_backbone("vgg19", "random", 1)[0]
    extractor = vgg.build_extractor(backbone, list(vgg.CONTENT_LAYERS) + list(vgg.STYLE_LAYERS))
    kw = dict(content_layers=list(vgg.CONTENT_LAYERS), style_layers=list(vgg.STYLE_LAYERS),
              content_weight=1.0, style_weight=10.0, total_variation_weight=0.1,
              normalization="scaled")
    settings = {"gram": {}, "wasserstein": dict(style_loss="wasserstein"),
                "sliced_wasserstein": dict(style_loss="sliced_wasserstein"),
                "gram + colour": dict(color_weight=1.0),
                "gram + sliced colour": dict(color_weight=1.0, color_loss="sliced")}
    built, images = {}, {}
    times, cpu = {name: [] for name in settings}, {name: [] for name in settings}
    for name, extra in settings.items():
        built[name] = objective.build_objective(extractor, content, [style], **kw, **extra)
        images[name] = tf.Variable(content)
    # Interleaved: one step of each setting per round, so a change in the
    # machine's load touches every setting alike (round 0 is the warm-up).
    for step in range(args.steps + 1):
        for name in settings:
            built[name].at_step(step)
            started, started_cpu = time.perf_counter(), time.process_time()
            terms, grad = built[name].value_and_grad(images[name])
            float(terms["loss"])
            images[name].assign_sub(0.01 * grad)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    seconds = {name: statistics.median(t[1:]) for name, t in times.items()}
    fastest = {name: min(t[1:]) for name, t in times.items()}
    cpu_s = {name: statistics.median(t[1:]) for name, t in cpu.items()}
    flags = sorted(f for f in hardware.cpu_flags() if f.startswith(("avx512_bf16", "amx",
                                                                     "avx2", "avx512f")))
    print(json.dumps({
        "machine": f"{hardware.cpu_name() or platform.processor()} [{' '.join(flags)}]",
        "cores": os.cpu_count(), "load_1min": os.getloadavg()[0], "size": [args.rows, cols],
        "s_per_step": {k: round(v, 4) for k, v in seconds.items()},
        "ratio_to_gram": {k: round(v / seconds["gram"], 3) for k, v in seconds.items()},
        # CPU seconds of the process per step (all its threads): on a shared
        # virtual machine the time stolen by other guests is not in them, so
        # their ratios are the steadiest measure of the work a setting adds.
        "cpu_s_per_step": {k: round(v, 4) for k, v in cpu_s.items()},
        "cpu_ratio_to_gram": {k: round(v / cpu_s["gram"], 3) for k, v in cpu_s.items()},
        "steal_percent": steal_percent(),
        # The fastest step of each: what a quiet machine gives (interference only adds).
        "fastest_s": {k: round(v, 4) for k, v in fastest.items()},
        "fastest_ratio_to_gram": {k: round(v / fastest["gram"], 3) for k, v in fastest.items()},
        "steps_s": {k: [round(x, 3) for x in v[1:]] for k, v in times.items()}}))


if __name__ == "__main__":
    main()
