"""Does ``--precision=auto`` pick the fastest precision of this machine?

Runs a preset (default ``configs/fast.cfg``) at ``--rows`` rows once per
precision -- ``auto`` and each explicit one -- as the real command line, each
in its own process, and prints the wall time of each, the fastest explicit
one, and auto's ratio to it (the target is at most 1.2).  ``auto`` runs twice:
with an empty precision cache (it measures its probe) and with the cache it
just wrote.  Random VGG19 weights (speed does not depend on them).

Usage (from the repository root)::

    python benchmarks/precision.py                 # fast.cfg at 256 rows
    python benchmarks/precision.py --rows=400 --preset=configs/default.cfg --iterations=20

Prints a table and writes ``benchmarks/results/precision.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "images")


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return ""
    found = sorted(set(re.findall(r"\b(avx512[a-z_0-9]*|amx[a-z_0-9]*)\b", text)))
    return " ".join(found) or "none (no avx512/amx)"


def images(tmp: str):
    """The shared Tuebingen photo and Starry Night, or two made-up pictures."""
    content = os.path.join(SHARED, "tubingen.jpg")
    style = os.path.join(SHARED, "starry_night.jpg")
    if os.path.exists(content) and os.path.exists(style):
        return content, style
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = os.path.join(tmp, f"picture{i}.png")
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return tuple(paths)


def run_once(args, precision, content, style, keras_home, out):
    env = {**os.environ, "KERAS_HOME": keras_home}
    env.pop("NST_KERAS_PRECISION", None)
    cmd = [sys.executable, "-m", "nst_keras.run", f"--flagfile={args.preset}",
           f"--content_image={content}", f"--style_image={style}", f"--img_nrows={args.rows}",
           "--weights=random", f"--output_dir={out}", "--overwrite", "--log_every=0",
           f"--precision={precision}", *([f"--iterations={args.iterations}"]
                                         if args.iterations else [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{precision}: exit {proc.returncode}: "
                           f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
    chosen = precision
    for line in proc.stdout.splitlines():
        if "(auto: " in line:
            chosen = line.split("(auto: ", 1)[1].split(":", 1)[0]
    return {"precision": precision, "chosen": chosen, "wall_s": round(wall, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="configs/fast.cfg")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--explicit", default="float32,mixed_bfloat16",
                   help="explicit precisions to compare (add mixed_float16 on a GPU)")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                 "precision.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        content, style = images(tmp)
        home, out = os.path.join(tmp, "keras"), os.path.join(tmp, "out")
        rows = [run_once(args, x, content, style, home, out) for x in args.explicit.split(",")]
        cold = run_once(args, "auto", content, style, home, out)
        warm = run_once(args, "auto", content, style, home, out)
    cold["precision"], warm["precision"] = "auto (empty cache)", "auto (cached)"
    fastest = min(rows, key=lambda r: r["wall_s"])
    print(f"{args.preset} at {args.rows} rows; CPU {platform.processor() or platform.machine()}"
          f"; flags: {cpu_flags()}")
    print(f"{'precision':<22}{'chosen':<18}{'wall s':>8}{'vs fastest':>12}")
    for r in rows + [cold, warm]:
        print(f"{r['precision']:<22}{r['chosen']:<18}{r['wall_s']:>8.1f}"
              f"{r['wall_s'] / fastest['wall_s']:>11.2f}x")
    result = {"preset": args.preset, "rows": args.rows, "cpu_flags": cpu_flags(),
              "runs": rows + [cold, warm], "fastest_explicit": fastest["precision"],
              "auto_cached_ratio": round(warm["wall_s"] / fastest["wall_s"], 3),
              "auto_cold_ratio": round(cold["wall_s"] / fastest["wall_s"], 3)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"auto / fastest explicit ({fastest['precision']}): "
          f"{result['auto_cached_ratio']:.2f} cached, {result['auto_cold_ratio']:.2f} with "
          f"the probe (target <= 1.2); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
