"""Batch throughput: serial against Ray workers, and what shared style targets save.

    python benchmarks/batch.py [--items_rows=128] [--iterations=20] [--workers=2]

Eight items (4 contents x 2 styles) at 128 rows with random VGG19 weights:

1. the whole batch as the user runs it, ``python -m nst_keras.batch ...`` in
   a new process, without Ray and then with ``--workers``: wall time of the
   command (Python, TensorFlow and Ray start-up included), items per minute,
   speed-up and scaling efficiency (speed-up / workers); ``--repeats`` runs
   each command that many times, alternating, and keeps each one's fastest;
2. the time per item in one process with the style targets shared
   (``objective.TargetCache``) and without (each item computes its own); the
   first item (tracing, backbone) is left out of both means.

Writes ``benchmarks/batch_cpu.json`` (or ``--out``) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from nst_keras import batch, cli
from nst_keras.engine import hardware

HERE = os.path.dirname(os.path.abspath(__file__))


def picture(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    base = np.stack([128 + 100 * np.sin(x / (5 + seed) + y / 9),
                     128 + 100 * np.cos(y / (6 + seed)),
                     128 + 100 * np.sin((x + y) / (7 + seed))], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def make_inputs(root: str, rows: int):
    os.makedirs(os.path.join(root, "photos"))
    os.makedirs(os.path.join(root, "styles"))
    for i in range(4):
        Image.fromarray(picture(rows, rows * 4 // 3, i)).save(
            os.path.join(root, "photos", f"photo{i}.png"))
    for i in range(2):
        Image.fromarray(picture(rows, rows, 10 + i)).save(
            os.path.join(root, "styles", f"style{i}.png"))
    return os.path.join(root, "photos"), os.path.join(root, "styles")


def config_for(out: str, rows: int, iterations: int):
    cli.parse(["prog", "--content_image=x", "--style_image=y", f"--output_dir={out}",
                 "--weights=random", f"--img_nrows={rows}", f"--iterations={iterations}",
                 "--log_every=10", "--save_every=0", "--precision=float32"], batch.FLAGS)
    return cli.config_from_flags(batch.FLAGS)


def timed_command(root: str, name: str, args, workers: int) -> dict:
    """Wall time of one ``python -m nst_keras.batch`` command over the items."""
    out = os.path.join(root, name)
    command = [sys.executable, "-m", "nst_keras.batch",
               f"--content_image={os.path.join(root, 'photos')}",
               f"--style_image={os.path.join(root, 'styles')}", f"--output_dir={out}",
               "--weights=random", f"--img_nrows={args.rows}",
               f"--iterations={args.iterations}", "--log_every=10", "--save_every=0",
               "--precision=float32", *([f"--workers={workers}"] if workers else [])]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(os.path.join(out, batch.BATCH_LOG)) as f:
        records = [json.loads(line) for line in f]
    assert len(records) == 8 and all(r["status"] == "finished" for r in records), records
    return {"workers": workers or 1, "items": len(records), "wall_s": round(wall, 2),
            "items_per_minute": round(60 * len(records) / wall, 2),
            "item_s_mean": round(statistics.mean(r["seconds"] for r in records), 2)}


def fastest_commands(root: str, args) -> tuple:
    """``(serial, parallel)``: each command's fastest of ``args.repeats`` runs."""
    runs = {0: [], args.workers: []}
    for repeat in range(args.repeats):
        for workers in runs:
            runs[workers].append(timed_command(root, f"w{workers}_{repeat}", args, workers))
    serial, parallel = (min(r, key=lambda x: x["wall_s"]) for r in runs.values())
    for best, every in ((serial, runs[0]), (parallel, runs[args.workers])):
        best["wall_s_runs"] = [r["wall_s"] for r in every]
    return serial, parallel


def per_item(root: str, args, shared: bool) -> dict:
    """Seconds per item in this process, with or without the shared targets."""
    name = "shared" if shared else "unshared"
    config = config_for(os.path.join(root, name), args.rows, args.iterations)
    items = batch.make_items(os.path.join(root, "photos"), os.path.join(root, "styles"))
    cache = batch.new_cache() if shared else None
    seconds = []
    for item in items:
        if not shared:  # a fresh cache per item: its targets are computed every time
            cache = batch.new_cache()
        record = batch.run_item(config, item, os.path.join(root, name), cache)
        assert record["status"] == "finished", record
        seconds.append(record["seconds"])
    return {"shared_targets": shared, "item_s_mean": round(statistics.mean(seconds[1:]), 3),
            "item_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "batch_cpu.json"))
    args = parser.parse_args()
    cli.import_tensorflow_quietly()
    device = hardware.describe_device()
    flags = sorted(f for f in device.cpu_flags if f.startswith(("avx512", "amx")))
    with tempfile.TemporaryDirectory() as root:
        make_inputs(root, args.rows)
        serial, parallel = fastest_commands(root, args)
        targets = [per_item(root, args, True), per_item(root, args, False)]
    speedup = serial["wall_s"] / parallel["wall_s"]
    result = {"device": device.name, "cpu_flags": flags, "cores": hardware.usable_cores(),
              "rows": args.rows, "iterations": args.iterations, "serial": serial,
              "parallel": parallel, "speedup": round(speedup, 3),
              "efficiency": round(speedup / args.workers, 3), "targets": targets}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{device.name}; {result['cores']} cores; {' '.join(flags) or 'no avx512/amx'}")
    print("| run | wall s | items/min | s/item (in its worker) |\n|---|---|---|---|")
    for label, r in (("serial (one process)", serial),
                     (f"Ray, --workers={args.workers}", parallel)):
        print(f"| {label} | {r['wall_s']} | {r['items_per_minute']} | {r['item_s_mean']} |")
    print(f"speed-up {speedup:.2f}x, efficiency {speedup / args.workers:.0%}")
    for t in targets:
        print(f"shared targets {t['shared_targets']}: {t['item_s_mean']} s per item")


if __name__ == "__main__":
    sys.exit(main())
