"""Speed benchmark: the keras.io loop versus this engine, optimisers, memory.

One run measures, on the same images and weights:

(a) seconds per step (median over the timed steps) of a keras.io-style loop
    (content, style and combination as one batch of three through the whole
    VGG19, float32, its SGD schedule) and of this engine in float32,
    mixed_bfloat16 and mixed_float16 at ``--rows`` x ``--cols`` with random
    weights; the speed-up ratios; each one's peak memory; the loss after
    ``--steps`` steps of each engine precision next to float32's;
(b) time to loss: wall time and steps for sgd, adam and lbfgs to reach the
    loss the keras.io SGD schedule reaches at step 1000, on trained features
    (VGG16 with ``--vgg16_weights``; skipped with a message when absent) at
    ``--ttl_rows`` rows;
(c) the largest image height whose step fits in memory, for float32 and
    bfloat16: peak memory measured at a few heights, fitted linearly in the
    number of pixels and extrapolated to the machine's memory (direct trial
    would take the whole machine for minutes).

Every measurement runs in its own child process, so that peak memory (the
process's RSS high-water mark on a CPU, TensorFlow's peak allocation on a GPU)
belongs to that measurement alone.  The same command runs unchanged on a GPU
and reports the device.

Usage (from the repository root)::

    python benchmarks/speed.py                       # everything, ~25 min on 2 CPU cores
    python benchmarks/speed.py --parts=a --steps=20  # quick look at per-step speed

It prints a table and writes ``benchmarks/results/speed.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

STYLE_LAYERS = ["block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"]
CONTENT_LAYER = "block5_conv2"
DEFAULT_WEIGHTS16 = os.path.join(REPO, "..", "shared", "weights", "vgg16_hed.weights.h5")
DEFAULT_CONTENT = os.path.join(REPO, "..", "shared", "images", "tubingen.jpg")
DEFAULT_STYLE = os.path.join(REPO, "..", "shared", "images", "starry_night.jpg")


# --------------------------------------------------------------------------
# Helpers used in the child processes
# --------------------------------------------------------------------------


def synthetic_picture(rows, cols, seed):
    """A smooth colourful picture with some noise (uint8 RGB)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(x / (13 + seed) + y / 29),
            128 + 100 * np.cos(y / (17 + seed)),
            128 + 100 * np.sin((x + y) / (23 + seed)),
        ],
        axis=-1,
    )
    base += rng.normal(0, 10, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def gpu_devices():
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def device_name():
    """A one-line description of the device TensorFlow computes on."""
    import tensorflow as tf

    gpus = gpu_devices()
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    cpu = platform.processor() or platform.machine()
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", "x86_64"):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16") if f in flags]
    return f"CPU: {cpu}, {os.cpu_count()} cores" + (f" ({', '.join(isa)})" if isa else "")


def memory_total_bytes():
    """Memory an image can use: GPU memory on a GPU, RAM otherwise."""
    if gpu_devices():
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=30,
            ).stdout.split()
            return int(float(out[0]) * 2**20)
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def reset_peak_memory():
    import tensorflow as tf

    if gpu_devices():
        tf.config.experimental.reset_memory_stats("GPU:0")


def peak_memory_bytes():
    """Peak memory of this process so far (GPU allocator peak on a GPU)."""
    import tensorflow as tf

    if gpu_devices():
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def keras_io_loop(model, base_image, style_image):
    """The keras.io tutorial's step: a batch of three through the whole VGG19.

    Returns ``step()`` that applies one SGD update to the combination image
    and returns the loss before it, as the tutorial's loop does.
    """
    import keras
    import tensorflow as tf

    img_nrows, img_ncols = base_image.shape[1:3]
    outputs = {layer.name: layer.output for layer in model.layers}
    extractor = keras.Model(inputs=model.inputs, outputs=outputs)
    content_weight, style_weight, tv_weight = 2.5e-8, 1e-6, 1e-6

    def gram(x):
        x = tf.transpose(x, (2, 0, 1))
        f = tf.reshape(x, (tf.shape(x)[0], -1))
        return tf.matmul(f, tf.transpose(f))

    def compute_loss(combination, base, style):
        feats = extractor(tf.concat([base, style, combination], axis=0))
        lf = feats[CONTENT_LAYER]
        loss = content_weight * tf.reduce_sum(tf.square(lf[2] - lf[0]))
        size = img_nrows * img_ncols
        for name in STYLE_LAYERS:
            lf = feats[name]
            s = tf.reduce_sum(tf.square(gram(lf[1]) - gram(lf[2]))) / (4.0 * 9 * size**2)
            loss += (style_weight / len(STYLE_LAYERS)) * s
        x = combination
        a = tf.square(x[:, : img_nrows - 1, : img_ncols - 1, :] - x[:, 1:, : img_ncols - 1, :])
        b = tf.square(x[:, : img_nrows - 1, : img_ncols - 1, :] - x[:, : img_nrows - 1, 1:, :])
        return loss + tv_weight * tf.reduce_sum(tf.pow(a + b, 1.25))

    @tf.function
    def loss_and_grads(combination, base, style):
        with tf.GradientTape() as tape:
            loss = compute_loss(combination, base, style)
        return loss, tape.gradient(loss, combination)

    optimizer = keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(100.0, decay_steps=100, decay_rate=0.96)
    )
    combination = tf.Variable(base_image)
    base, style = tf.constant(base_image), tf.constant(style_image)

    def step():
        loss, grads = loss_and_grads(combination, base, style)
        optimizer.apply_gradients([(grads, combination)])
        return loss

    return step


def child_per_step(args):
    """(a) and (c): per-step time, loss and peak memory of one variant."""

    from nst_keras import Config
    from nst_keras.engine import vgg
    from nst_keras.engine.pipeline import build_loss
    from nst_keras.engine.vgg import load_backbone
    from nst_keras.engine.optim import make_optimizer
    import tensorflow as tf

    rows, cols = args.rows, args.cols
    content = synthetic_picture(rows, cols, 0)
    style = synthetic_picture(rows, cols, 1)
    backbone = load_backbone("vgg19", "random", 0)[0]
    reset_peak_memory()
    before = peak_memory_bytes()
    times, cpu, losses = [], [], []
    deadline = time.perf_counter() + args.budget_s
    if args.variant == "keras_io":
        step = keras_io_loop(
            backbone, vgg.preprocess_image(content), vgg.preprocess_image(style)
        )
        for i in range(args.steps + 1):
            t, c = time.perf_counter(), time.process_time()
            loss = float(step())
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            losses.append(loss)
            if i >= 1 and time.perf_counter() > deadline:
                break
        terms = {"loss": losses[-1]}
    else:
        config = Config(content_image="c", style_image="s", weights="random",
                        precision=args.variant, jit_compile=args.jit_compile)
        loss = build_loss(config, content, [style], backbone)
        image = tf.Variable(vgg.preprocess_image(content))
        optimizer = make_optimizer("sgd", loss, image, 100.0, 100, 0.96,
                                   jit_compile=args.jit_compile)
        last = {"t": time.perf_counter(), "c": time.process_time()}
        record = {}

        def on_step(step, terms):
            # Reading the loss waits for the step; a scalar is all that leaves
            # the device.
            values = {k: float(v) for k, v in terms.items()}
            now = time.perf_counter()
            times.append(now - last["t"])
            cpu.append(time.process_time() - last["c"])
            last["t"], last["c"] = now, time.process_time()
            losses.append(values["loss"])
            record.update(values)
            return step < 2 or time.perf_counter() < deadline

        optimizer.run(1, args.steps, on_step)
        terms = record
    out = {
        "variant": args.variant,
        "rows": rows,
        "cols": cols,
        "first_step_s": times[0],
        "timed_steps": len(times) - 1,
        "s_per_step": statistics.median(times[1:]) if len(times) > 1 else None,
        "mean_s_per_step": statistics.mean(times[1:]) if len(times) > 1 else None,
        "cpu_s_per_step": statistics.median(cpu[1:]) if len(cpu) > 1 else None,
        "steps_run": len(losses),
        "final_terms": terms,
        "losses": losses,
        "peak_bytes": peak_memory_bytes(),
        "baseline_bytes": before,
    }
    print("RESULT " + json.dumps(out), flush=True)


def child_time_to_loss(args):
    """(b): one optimiser on trained VGG16 features until a loss is reached."""
    from nst_keras import Config
    from nst_keras.engine import vgg
    from nst_keras.engine.pipeline import build_loss, load_inputs
    from nst_keras.engine.vgg import load_backbone
    from nst_keras.engine.optim import make_optimizer
    import tensorflow as tf

    config = Config(
        content_image=args.content, style_image=args.style, model="vgg16",
        weights=args.vgg16_weights, img_nrows=args.ttl_rows, optimizer=args.variant,
        precision=args.precision,
    )
    if not os.path.exists(args.content) or not os.path.exists(args.style):
        rows = args.ttl_rows
        cols = rows * 4 // 3
        content, style = synthetic_picture(rows, cols, 0), [synthetic_picture(rows, cols, 1)]
    else:
        content, style = load_inputs(config)
    backbone = load_backbone("vgg16", args.vgg16_weights, 0)[0]
    start = time.perf_counter()
    loss = build_loss(config, content, style, backbone)
    image = tf.Variable(vgg.preprocess_image(content))
    optimizer = make_optimizer(args.variant, loss, image, config.resolved_learning_rate(),
                               config.decay_steps, config.decay_rate)
    target = args.target
    trace = []
    state = {"reached": None}

    def on_step(step, terms):
        value = float(terms["loss"])
        elapsed = time.perf_counter() - start
        if step % 10 == 0 or step == 1:
            trace.append((step, value, round(elapsed, 3)))
        if target is not None and value <= target and state["reached"] is None:
            state["reached"] = {"step": step, "elapsed_s": elapsed,
                                "evaluations": optimizer.evaluations, "loss": value}
            return False
        return True

    last = optimizer.run(1, args.steps, on_step)
    final = {k: float(v) for k, v in loss.terms(image).items()}
    out = {
        "optimizer": args.variant,
        "precision": args.precision,
        "rows": int(content.shape[0]),
        "cols": int(content.shape[1]),
        "steps_run": last,
        "evaluations": optimizer.evaluations,
        "wall_s": time.perf_counter() - start,
        "reached": state["reached"],
        "final_loss": final["loss"],
        "trace": trace,
    }
    print("RESULT " + json.dumps(out), flush=True)


# --------------------------------------------------------------------------
# The parent: runs the children and writes the table
# --------------------------------------------------------------------------


def run_child(kind, **kw):
    cmd = [sys.executable, os.path.abspath(__file__), f"--child={kind}"]
    for k, v in kw.items():
        if isinstance(v, bool):
            cmd.append(f"--{k}" if v else f"--no-{k}")
        elif v is not None:
            cmd.append(f"--{k}={v}")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit {proc.returncode}"}


def gib(n):
    return None if n is None else round(n / 2**30, 2)


def part_a(args, log):
    variants = ["keras_io", "float32", "mixed_bfloat16", "mixed_float16"]
    results = {}
    for v in variants:
        steps = args.ref_steps if v == "keras_io" else args.steps
        budget = args.f16_budget_s if v == "mixed_float16" else args.budget_s
        log(f"  (a) {v}: up to {steps} steps at {args.rows}x{args.cols} "
            f"(at most {budget:.0f} s) ...")
        r = run_child("per_step", variant=v, rows=args.rows, cols=args.cols, steps=steps,
                      budget_s=budget, jit_compile=args.jit_compile)
        results[v] = r
        if "error" not in r and r["s_per_step"] is None:
            r = results[v] = {"error": "no timed step"}
        if "error" in r:
            log(f"      failed: {r['error']}")
        else:
            log(f"      {r['s_per_step']:.3f} s/step (median of {r['timed_steps']}), "
                f"peak {gib(r['peak_bytes'])} GiB")
    ref = results["keras_io"].get("s_per_step")
    ref_cpu = results["keras_io"].get("cpu_s_per_step")
    f32 = results["float32"]
    rows = []
    for v in variants:
        r = results[v]
        if "error" in r:
            rows.append({"variant": v, "error": r["error"]})
            continue
        row = {
            "variant": v,
            "s_per_step": round(r["s_per_step"], 4),
            "speedup_vs_keras_io": round(ref / r["s_per_step"], 2) if ref else None,
            "cpu_s_per_step": round(r["cpu_s_per_step"], 4),
            "cpu_speedup_vs_keras_io": (round(ref_cpu / r["cpu_s_per_step"], 2)
                                        if ref_cpu else None),
            "peak_memory_gib": gib(r["peak_bytes"]),
            "timed_steps": r["timed_steps"],
        }
        if v not in ("keras_io",) and "error" not in f32:
            n = min(len(r["losses"]), len(f32["losses"]))
            row["loss_at_step"] = n
            row["loss"] = r["losses"][n - 1]
            row["loss_rel_diff_vs_float32"] = abs(r["losses"][n - 1] / f32["losses"][n - 1] - 1)
            for term in ("content_loss", "style_loss"):
                if n == len(r["losses"]) == len(f32["losses"]):
                    a, b = r["final_terms"][term], f32["final_terms"][term]
                    row[f"{term}_rel_diff_vs_float32"] = abs(a / b - 1) if b else None
        rows.append(row)
    return rows


def part_b(args, log):
    if not os.path.exists(args.vgg16_weights):
        msg = (f"skipped: {args.vgg16_weights} not found (pass --vgg16_weights=PATH to "
               "VGG16(include_top=False) weights)")
        log("  (b) " + msg)
        return {"skipped": msg}
    images_note = (f"{os.path.basename(args.content)} x {os.path.basename(args.style)}"
                   if os.path.exists(args.content) and os.path.exists(args.style)
                   else "synthetic pictures (content/style files not found)")
    log(f"  (b) sgd {args.sgd_steps} steps (keras.io schedule) on VGG16 {args.ttl_rows} rows, {images_note} ...")
    sgd = run_child("time_to_loss", variant="sgd", steps=args.sgd_steps, ttl_rows=args.ttl_rows,
                    vgg16_weights=args.vgg16_weights, content=args.content, style=args.style,
                    precision="float32")
    if "error" in sgd:
        log(f"      failed: {sgd['error']}")
        return {"error": sgd["error"]}
    target = [t for t in sgd["trace"] if t[0] == args.sgd_steps][0][1]
    sgd_wall = sgd["wall_s"]
    log(f"      target loss (keras.io SGD at step {args.sgd_steps}) = {target:.6g}, {sgd_wall:.1f} s")
    log(f"  (b) sgd {args.fast_precision} 100 steps: loss versus float32 on trained features ...")
    low = run_child("time_to_loss", variant="sgd", steps=100, ttl_rows=args.ttl_rows,
                    vgg16_weights=args.vgg16_weights, content=args.content, style=args.style,
                    precision=args.fast_precision)
    precision_check = None
    if "error" not in low:
        f32_100 = [t for t in sgd["trace"] if t[0] == 100][0][1]
        low_100 = [t for t in low["trace"] if t[0] == 100][0][1]
        precision_check = {"precision": args.fast_precision, "step": 100,
                           "loss_float32": f32_100, "loss": low_100,
                           "rel_diff": abs(low_100 / f32_100 - 1)}
        log(f"      {precision_check}")
    rows = [{"optimizer": "sgd (keras.io)", "precision": "float32", "steps": args.sgd_steps,
             "evaluations": args.sgd_steps, "wall_s": round(sgd_wall, 2), "fraction_of_sgd_time": 1.0,
             "loss": target}]
    for opt, precision, cap in (("adam", "float32", 1000), ("lbfgs", "float32", 1000),
                                ("lbfgs", args.fast_precision, 1000)):
        log(f"  (b) {opt} {precision} until loss <= target ...")
        r = run_child("time_to_loss", variant=opt, steps=cap, ttl_rows=args.ttl_rows,
                      vgg16_weights=args.vgg16_weights, content=args.content,
                      style=args.style, target=repr(target), precision=precision)
        if "error" in r:
            rows.append({"optimizer": opt, "precision": precision, "error": r["error"]})
            continue
        reached = r["reached"]
        if reached:
            row = {"optimizer": opt, "precision": precision, "steps": reached["step"],
                   "evaluations": reached["evaluations"],
                   "wall_s": round(reached["elapsed_s"], 2),
                   "fraction_of_sgd_time": round(reached["elapsed_s"] / sgd_wall, 4),
                   "loss": reached["loss"]}
        else:
            row = {"optimizer": opt, "precision": precision, "steps": None,
                   "evaluations": r["evaluations"], "wall_s": round(r["wall_s"], 2),
                   "fraction_of_sgd_time": None, "loss": r["final_loss"],
                   "note": f"not reached in {r['steps_run']} steps"}
        log(f"      {row}")
        rows.append(row)
    return {"rows_px": sgd["rows"], "cols_px": sgd["cols"], "images": images_note,
            "weights": os.path.basename(args.vgg16_weights), "target_loss": target,
            "results": rows, "precision_check": precision_check, "sgd_steps": args.sgd_steps}


def part_c(args, log):
    total = memory_total_bytes()
    out = {"memory_total_gib": gib(total), "method": (
        "peak memory of one engine step measured at several heights (aspect 3:2), "
        "fitted as a + b*pixels, solved for the device's total memory; an estimate, "
        "not a direct trial")}
    for precision in ("float32", "mixed_bfloat16"):
        points = []
        for h in args.fit_rows:
            w = h * 3 // 2
            log(f"  (c) {precision} {h}x{w} ...")
            r = run_child("per_step", variant=precision, rows=h, cols=w, steps=1,
                          budget_s=args.budget_s, jit_compile=args.jit_compile)
            if "error" in r:
                log(f"      failed: {r['error']}")
                continue
            points.append((h * w, r["peak_bytes"], h, r["s_per_step"]))
            log(f"      peak {gib(r['peak_bytes'])} GiB")
        entry = {"points": [{"rows": p[2], "pixels": p[0], "peak_gib": gib(p[1]),
                             "s_per_step": p[3]} for p in points]}
        if len(points) >= 2 and total and len({p[0] for p in points}) > 1:
            n = len(points)
            mx = sum(p[0] for p in points) / n
            my = sum(p[1] for p in points) / n
            b = sum((p[0] - mx) * (p[1] - my) for p in points) / sum(
                (p[0] - mx) ** 2 for p in points)
            a = my - b * mx
            if b <= 0:
                out[precision] = entry
                continue
            pixels = (total - a) / b
            rows = int((pixels / 1.5) ** 0.5)
            entry.update({"bytes_per_pixel": round(b, 1), "fixed_gib": gib(a),
                          "max_rows_3x2": rows, "max_cols_3x2": rows * 3 // 2})
        out[precision] = entry
    return out


def print_table(result):
    print()
    print(f"Device: {result['device']}    date {result['date']}")
    a = result.get("a")
    if a:
        print(f"\n(a) per step at {result['args']['rows']}x{result['args']['cols']}, "
              "random VGG19 weights")
        print(f"{'variant':<16}{'s/step':>9}{'speed-up':>10}{'CPU s/step':>12}{'speed-up':>10}"
              f"{'peak GiB':>10}{'loss@N':>16}{'vs f32':>10}")
        for r in a:
            if "error" in r:
                print(f"{r['variant']:<16} error: {r['error'][:90]}")
                continue
            loss = f"{r['loss']:.6g}@{r['loss_at_step']}" if "loss" in r else ""
            diff = (f"{100 * r['loss_rel_diff_vs_float32']:.3f}%"
                    if "loss_rel_diff_vs_float32" in r else "")
            print(f"{r['variant']:<16}{r['s_per_step']:>9.3f}{r['speedup_vs_keras_io']:>9.2f}x"
                  f"{r['cpu_s_per_step']:>12.3f}{r['cpu_speedup_vs_keras_io']:>9.2f}x"
                  f"{r['peak_memory_gib']:>10.2f}{loss:>16}{diff:>10}")
        print("s/step: median wall-clock seconds; CPU s/step: median process CPU seconds "
              "(less sensitive to other load on the machine)")
    b = result.get("b")
    if b:
        if "results" not in b:
            print(f"\n(b) time to loss: {b.get('skipped') or b.get('error')}")
        else:
            print(f"\n(b) time to the keras.io SGD step-{b['sgd_steps']} loss ({b['target_loss']:.6g}), "
                  f"VGG16 {b['weights']}, {b['rows_px']}x{b['cols_px']}, {b['images']}")
            print(f"{'optimizer':<16}{'precision':<16}{'steps':>7}{'evals':>7}{'wall s':>9}"
                  f"{'x SGD time':>12}")
            for r in b["results"]:
                if "error" in r:
                    print(f"{r['optimizer']:<16}{r['precision']:<16} error: {r['error'][:70]}")
                    continue
                frac = ("" if r["fraction_of_sgd_time"] is None
                        else f"1/{1 / r['fraction_of_sgd_time']:.0f}"
                        if r["fraction_of_sgd_time"] < 1 else "1")
                steps = "-" if r["steps"] is None else r["steps"]
                print(f"{r['optimizer']:<16}{r['precision']:<16}{steps:>7}{r['evaluations']:>7}"
                      f"{r['wall_s']:>9.1f}{frac:>12}  {r.get('note', '')}")
            pc = b.get("precision_check")
            if pc:
                print(f"SGD loss at step 100 on these trained features: {pc['precision']} "
                      f"{pc['loss']:.6g} vs float32 {pc['loss_float32']:.6g} "
                      f"({100 * pc['rel_diff']:.3f}%)")
    c = result.get("c")
    if c:
        print(f"\n(c) largest 3:2 image in {c['memory_total_gib']} GiB ({c['method']})")
        for precision in ("float32", "mixed_bfloat16"):
            e = c.get(precision, {})
            pts = ", ".join(f"{p['rows']} rows: {p['peak_gib']} GiB" for p in e.get("points", []))
            if "max_rows_3x2" in e:
                print(f"{precision:<16} ~{e['max_rows_3x2']}x{e['max_cols_3x2']} "
                      f"({e['bytes_per_pixel']:.0f} B/pixel; measured {pts})")
            else:
                print(f"{precision:<16} no estimate (measured {pts})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="a,b,c", help="which parts to run: a, b, c")
    p.add_argument("--rows", type=int, default=400)
    p.add_argument("--cols", type=int, default=600)
    p.add_argument("--steps", type=int, default=30,
                   help="(a) engine steps (the first, which traces, is not timed); the "
                        "loss at the last is compared with float32's")
    p.add_argument("--ref_steps", type=int, default=5, help="(a) timed keras.io-loop steps")
    p.add_argument("--f16_budget_s", type=float, default=150,
                   help="(a) time limit of mixed_float16 (emulated, slow on CPUs)")
    p.add_argument("--budget_s", type=float, default=600,
                   help="(a) stop a variant after this many seconds")
    p.add_argument("--jit_compile", action=argparse.BooleanOptionalAction, default=False,
                   help="compile the engine's step with XLA")
    p.add_argument("--vgg16_weights", default=DEFAULT_WEIGHTS16)
    p.add_argument("--content", default=DEFAULT_CONTENT)
    p.add_argument("--style", default=DEFAULT_STYLE)
    p.add_argument("--ttl_rows", type=int, default=128, help="(b) image height")
    p.add_argument("--sgd_steps", type=int, default=1000,
                   help="(b) the keras.io SGD step whose loss is the target")
    p.add_argument("--fast_precision", default="mixed_bfloat16",
                   help="(b) precision of the extra lbfgs run")
    p.add_argument("--fit_rows", default="200,400,600",
                   help="(c) heights measured for the memory fit")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "speed.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--target", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "per_step":
        return child_per_step(args)
    if args.child == "time_to_loss":
        return child_time_to_loss(args)
    args.fit_rows = [int(v) for v in str(args.fit_rows).split(",")]

    def log(line):
        print(line, flush=True)

    import tensorflow as tf

    result = {
        "device": device_name(),
        "date": datetime.date.today().isoformat(),
        "tensorflow": tf.__version__,
        "load_average_start": list(os.getloadavg()),
        "args": {k: v for k, v in vars(args).items()
                 if k not in ("child", "variant", "target", "precision")},
    }
    log(f"Device: {result['device']}")
    start = time.perf_counter()
    parts = set(args.parts.split(","))
    if "a" in parts:
        result["a"] = part_a(args, log)
    if "b" in parts:
        result["b"] = part_b(args, log)
    if "c" in parts:
        result["c"] = part_c(args, log)
    result["load_average_end"] = list(os.getloadavg())
    result["benchmark_wall_s"] = round(time.perf_counter() - start, 1)
    print_table(result)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
