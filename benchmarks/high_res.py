"""How large a multi-scale (coarse-to-fine) picture fits in this machine's memory.

Each measurement runs in a fresh child process (so peak resident memory is
that of one run) and reports its peak RSS and time per step at the largest
scale.  Two modes:

  # 1. Peak memory of single-scale runs at small heights (2 steps each), and
  #    a linear fit in the pixel count, extrapolated to the memory given.
  python benchmarks/high_res.py estimate --heights=256,384,512,768 --memory_gib=22

  # 2. One real multi-scale run with few steps per scale (confirmation).
  python benchmarks/high_res.py run --scales=512,1024,2048 --iterations=2,1,1

  # 3. Tiled against untiled (--tile_size): peak memory and seconds per step
  #    of square pictures, each size and mode in its own process; writes JSON.
  python benchmarks/high_res.py tiled --sizes=2048,4096,8192 --steps=2,2,1 \
      --tile_size=1024 --json=benchmarks/high_res_tiled_cpu.json
  python benchmarks/high_res.py table --json=benchmarks/high_res_tiled_cpu.json

Defaults: VGG19 with seeded random weights (memory and speed do not depend on
the weight values; pass --weights=PATH for real ones), --precision=
mixed_bfloat16, Adam, synthetic 4:3 content and style pictures (pass
--content/--style for files), keras.io layers.  Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic(rows, cols, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    pic = np.stack([128 + 100 * np.sin(x / (9 + seed) + y / 17),
                    128 + 100 * np.cos(y / (11 + seed)),
                    128 + 100 * np.sin((x + y) / (13 + seed))], axis=-1)
    pic += rng.normal(0, 12, pic.shape)
    return np.clip(pic, 0, 255).astype(np.uint8)


def child(args) -> None:
    """Runs one stylize and prints a JSON line (peak RSS in GiB, seconds)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    from nst_keras import Config, stylize

    content = args.content or synthetic(600, 800, 0)
    style = args.style or synthetic(600, 800, 1)
    scales = tuple(int(s) for s in args.scales.split(","))
    iterations = tuple(int(s) for s in args.iterations.split(","))
    times = []
    last = {"t": time.perf_counter()}

    def log(line):
        now = time.perf_counter()
        if line.startswith("Iteration"):
            times.append(now - last["t"])
        last["t"] = now
        print("  " + line, file=sys.stderr, flush=True)

    config = Config(
        content_image=content, style_image=style, output_dir=args.output_dir,
        scales=scales, iterations=iterations if len(iterations) > 1 else iterations[0],
        optimizer="adam", precision=args.precision, weights=args.weights,
        log_every=1, save_every=0, interpolation="bicubic",
    )
    start = time.perf_counter()
    result = stylize(config, log=log)
    total = time.perf_counter() - start
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({
        "scales": scales, "iterations": iterations, "precision": args.precision,
        "output": list(result.image.shape[:2]), "peak_rss_gib": round(rss_gib, 2),
        "last_step_s": round(times[-1], 1) if times else None,
        "total_s": round(total, 1),
    }), flush=True)


class StepClock:
    """A callback recording when each step ends (perf_counter seconds)."""

    def __init__(self):
        self.ends = []

    def on_start(self, run):
        pass

    def on_step(self, progress):
        self.ends.append(time.perf_counter())

    def on_end(self, run, outcome):
        pass


def tiled_child(args) -> None:
    """One square run at ``--size`` (tiled when ``--tile_size`` > 0); prints a JSON line.

    ``targets_s``: building the objective (content features, style Gram
    matrices, tiled when the step is); ``step_s``: the last step.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, REPO)
    from nst_keras import Config, stylize
    from nst_keras.engine import pipeline

    built = {}
    build_loss = pipeline.build_loss

    def timed_build_loss(*a, **k):
        start = time.perf_counter()
        loss = build_loss(*a, **k)
        built["end"], built["s"] = time.perf_counter(), time.perf_counter() - start
        return loss

    pipeline.build_loss = timed_build_loss
    clock = StepClock()
    config = Config(
        content_image=synthetic(768, 768, 0), style_image=synthetic(768, 768, 1),
        img_nrows=args.size, iterations=args.steps, optimizer=args.optimizer,
        precision=args.precision, weights=args.weights, log_every=1, save_every=0,
        interpolation="bicubic", tile_size=args.tile_size)
    start = time.perf_counter()
    result = stylize(config, callbacks=[clock], log=lambda line: print("  " + line,
                                                                       file=sys.stderr))
    ends = [built["end"]] + clock.ends
    print(json.dumps({
        "size": list(result.image.shape[:2]), "tile_size": args.tile_size,
        "optimizer": args.optimizer, "precision": args.precision, "steps": args.steps,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "targets_s": round(built["s"], 1), "step_s": round(ends[-1] - ends[-2], 1),
        "total_s": round(time.perf_counter() - start, 1),
        "loss_first": result.history[0]["loss"] if result.history else None,
    }), flush=True)


def spawn_tiled(size: int, steps: int, tile_size: int, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "tiled_child", f"--size={size}",
           f"--steps={steps}", f"--tile_size={tile_size}", f"--precision={args.precision}",
           f"--weights={args.weights}", f"--optimizer={args.optimizer}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        return {"size": [size, size], "tile_size": tile_size, "failed": proc.returncode,
                "reason": tail[0]}
    return json.loads(lines[-1])


def tiled(args) -> None:
    """Every size tiled, and untiled where ``--untiled_up_to`` allows; JSON to ``--json``."""
    from nst_keras.engine import hardware  # noqa: E402  (the repository is on sys.path)

    device = hardware.describe_device()
    rows = []
    for size, steps in zip((int(v) for v in args.sizes.split(",")),
                           (int(v) for v in args.steps_list.split(","))):
        modes = [args.tile_size] + ([0] if size <= args.untiled_up_to else [])
        for tile in modes:
            row = spawn_tiled(size, steps, tile, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"cpu": device.name, "cpu_flags": sorted(
                        f for f in device.cpu_flags if f.startswith(("avx512", "amx"))),
                        "cores": os.cpu_count(), "rows": rows}, f, indent=1)


def table(path: str) -> str:
    """The Markdown table (docs/tiling.md) of a ``tiled`` JSON file."""
    with open(path) as f:
        data = json.load(f)
    lines = ["| picture | mode | optimiser | peak RSS | targets | s/step | steps | conditions |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(data["rows"], key=lambda r: (r["size"][0], -r["tile_size"])):
        size = f"{r['size'][0]} × {r['size'][1]}"
        mode = f"tiles of {r['tile_size']}" if r["tile_size"] else "untiled"
        start = f"| {size} | {mode} | {r.get('optimizer', '')} |"
        if "failed" in r:
            lines.append(f"{start} failed: {r['reason'].strip()} | | | | {r.get('note', '')} |")
            continue
        lines.append(f"{start} {r['peak_rss_gib']:.2f} GiB | {r['targets_s']:.0f} s "
                     f"| {r['step_s']:.0f} | {r['steps']} | {r.get('note', '')} |")
    return "\n".join(lines)


def spawn(scales, iterations, args):
    cmd = [sys.executable, os.path.abspath(__file__), "child", f"--scales={scales}",
           f"--iterations={iterations}", f"--precision={args.precision}",
           f"--weights={args.weights}"]
    for name in ("content", "style", "output_dir"):
        if getattr(args, name):
            cmd.append(f"--{name}={getattr(args, name)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"scales": scales, "failed": proc.returncode,
                "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    return json.loads(lines[-1])


def available_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["estimate", "run", "child", "tiled", "tiled_child",
                                    "table"])
    p.add_argument("--sizes", default="2048,4096,8192")
    p.add_argument("--steps", dest="steps_list", default="2,2,1")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--tile_size", type=int, default=1024)
    p.add_argument("--untiled_up_to", type=int, default=2048,
                   help="tiled mode: also run untiled up to this size")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--json")
    p.add_argument("--heights", default="256,384,512,768")
    p.add_argument("--memory_gib", type=float, default=22.0,
                   help="memory the process may use (leave room for the system)")
    p.add_argument("--scales", default="512,1024,2048")
    p.add_argument("--iterations", default="2,1,1")
    p.add_argument("--need_gib", type=float, default=0.0,
                   help="run mode: skip unless this much memory is available")
    p.add_argument("--precision", default="mixed_bfloat16")
    p.add_argument("--weights", default="random")
    p.add_argument("--content")
    p.add_argument("--style")
    p.add_argument("--output_dir")
    args = p.parse_args()
    if args.mode == "child":
        return child(args)
    if args.mode == "tiled_child":
        args.steps = int(args.steps_list)
        return tiled_child(args)
    if args.mode == "table":
        return print(table(args.json))
    if args.mode == "tiled":
        sys.path.insert(0, REPO)
        return tiled(args)
    if args.mode == "run":
        free = available_gib()
        if free is not None and free < args.need_gib:
            print(json.dumps({"skipped": f"only {free:.1f} GiB available, "
                              f"--need_gib={args.need_gib}"}), flush=True)
            return
        print(json.dumps(spawn(args.scales, args.iterations, args)), flush=True)
        return
    rows = []
    for h in (int(v) for v in args.heights.split(",")):
        r = spawn(str(h), "2", args)
        print(json.dumps(r), flush=True)
        if "peak_rss_gib" in r:
            rows.append((r["output"][0] * r["output"][1], r["peak_rss_gib"]))
    if len(rows) >= 2:
        import numpy as np

        px, gib = map(np.array, zip(*rows))
        slope, base = np.polyfit(px, gib, 1)
        # 4:3 output: pixels = h * 4h/3.
        max_px = (args.memory_gib - base) / slope
        max_h = int((max_px * 3 / 4) ** 0.5)
        print(json.dumps({
            "fit_gib": f"{base:.2f} + {slope * 1e6:.3f} per megapixel",
            "memory_gib": args.memory_gib,
            "largest_4x3_height_estimate": max_h,
        }), flush=True)


if __name__ == "__main__":
    main()
