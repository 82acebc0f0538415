"""Fast networks benchmark: training speed, inference speed, and quality.

Three parts (``--parts=train,infer,quality``), each printing its table and
writing ``--results/networks.json`` (one run, one machine: ratios are
measured side by side, never against another run's figures):

* ``train``: steps/s and images/s of ``nst_keras.train``'s step (VGG19,
  fast.cfg's objective, batch 4) at 128 and 256 pixels, full width, float32
  and auto precision.  Speed does not depend on the weights' values, so the
  VGG weights are random.
* ``infer``: milliseconds per picture of a full-width and a half-width
  network (``network_fast``'s) at 256, 512 and 1024 pixels square, float32, auto precision and TensorFlow Lite
  (float32, XNNPACK), and ``--preset=fast``'s optimisation at 512 rows on
  the same picture, with the ratio.
* ``quality``: one network per painting of ``../shared/images`` trained with
  ``--preset=network_fast`` on the photos this machine has
  (``../shared/images/tubingen.jpg`` and the sample photos matplotlib and
  scikit-image ship -- never the four held out for scoring: astronaut,
  coffee, chelsea, rocket), through the trained VGG16 stand-in
  (``--vgg16_weights``), then the held-out photos stylised at 256 rows and
  scored with the independent scorer (``quality_score.py``) and the palette
  score, beside ``--preset=fast``'s optimisation of the same pairings, run
  here too (``benchmarks/quality.py``'s runner, cached under ``--work``).  A contact sheet (photo, painting, optimisation, network) goes to
  ``--sheet``.

Usage (from the repository root)::

    python benchmarks/networks.py --parts=train,infer
    python benchmarks/networks.py --parts=quality --steps=1000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO, os.path.join(REPO, "benchmarks")):
    if path not in sys.path:
        sys.path.insert(0, path)
SHARED = os.path.join(REPO, "..", "shared")
HELD_OUT = ("astronaut", "coffee", "chelsea", "rocket")
# Photos installed packages ship (natural pictures of 256 pixels or more).
PACKAGE_PHOTOS = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    *(("skimage", f"data/{n}") for n in (
        "camera.png", "clock_motion.png", "gravel.png", "brick.png", "motorcycle_left.png",
        "motorcycle_right.png", "hubble_deep_field.jpg", "moon.png", "grass.png", "retina.jpg",
        "ihc.png", "cell.png", "coins.png")),
)


def machine() -> str:
    from nst_keras.engine import hardware

    flags = sorted(f for f in hardware.cpu_flags() if f in (
        "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))
    return f"{hardware.cpu_name()}, {os.cpu_count()} cores; flags {' '.join(flags)}"


def training_photos(folder: str) -> list:
    """Links the training photos into ``folder``; returns their names."""
    import importlib

    sources = [os.path.join(SHARED, "images", "tubingen.jpg")]
    for module, rel in PACKAGE_PHOTOS:
        try:
            base = os.path.dirname(importlib.import_module(module).__file__)
        except ImportError:
            continue
        sources.append(os.path.join(base, rel))
    os.makedirs(folder, exist_ok=True)
    names = []
    for src in sources:
        name = os.path.basename(src)
        if not os.path.exists(src) or any(h in name for h in HELD_OUT):
            continue
        dst = os.path.join(folder, name)
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(src), dst)
        names.append(name)
    return names


def _objective(extra=()):
    from nst_keras import cli
    from nst_keras.train import __main__ as train_cli

    cli.parse(["bench", "--preset=network_fast", "--photos=.", "--output=x.keras",
               "--style_image=x.jpg", *extra], train_cli.FLAGS)
    return train_cli.settings_from_flags(train_cli.FLAGS)


# -- training speed -------------------------------------------------------------


def train_speed(args, log):
    import numpy as np

    from nst_keras.engine import build, hardware, network, pipeline, training, vgg
    from nst_keras.engine.terms import Pictures
    from nst_keras.train import training_config

    rows = []
    for size in (128, 256):
        for precision in ("float32", "auto"):
            config, options = _objective(["--weights=random", f"--image_size={size}",
                                          "--network_width=1.0", f"--precision={precision}"])
            built = training_config(config, options)
            resolved, _ = hardware.resolve_precision(built.precision, built.model)
            built = built.replace(precision=resolved)
            extractor = pipeline.build_extractor(built, vgg.load_backbone(built.model,
                                                                          "random", 0)[0])
            rng = np.random.default_rng(0)
            photos = (rng.random((4, size, size, 3)) * 255).astype(np.float32)
            style = vgg.preprocess_image(photos[1].astype(np.uint8))
            objective = build.build_objective(
                built, extractor, Pictures(vgg.preprocess_image(photos[0].astype(np.uint8)),
                                           [style]))
            trainer = training.Trainer(network.build_network(1.0, resolved),
                                       training.BatchObjective(objective, extractor),
                                       training.make_optimizer(1e-3, resolved))
            for i in range(2):
                trainer.step(i, photos)
            start = time.perf_counter()
            for i in range(args.train_steps):
                trainer.step(i, photos)
            seconds = (time.perf_counter() - start) / args.train_steps
            row = {"size": size, "precision": precision, "resolved": resolved,
                   "s_per_step": round(seconds, 3), "steps_per_s": round(1 / seconds, 3),
                   "images_per_s": round(4 / seconds, 2)}
            log(f"train {size}px {precision:>8} ({resolved}): {seconds:.3f} s/step, "
                f"{row['images_per_s']:.2f} images/s")
            rows.append(row)
    return rows


# -- inference speed --------------------------------------------------------------


def _time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def infer_speed(args, log):
    import numpy as np
    import tensorflow as tf

    from nst_keras import export, stylize
    from nst_keras.engine import hardware, network

    resolved, _ = hardware.resolve_precision("auto")
    rows = []
    rng = np.random.default_rng(0)
    folder = tempfile.mkdtemp(prefix="nst-networks-")
    for width in (1.0, 0.5):
        model = network.build_network(width, "float32", seed=0)
        path = os.path.join(folder, f"net{width}.keras")
        model.save(path)
        nets = {"float32": network.load_network(path, "float32"),
                "auto": network.load_network(path, "auto")}
        tflite = export.tflite_bytes(model)
        for size in (256, 512, 1024):
            picture = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            row = {"width": width, "size": size}
            for name, net in nets.items():
                row[f"{name}_ms"] = round(1000 * _time(lambda: net(picture), args.repeats), 1)
            interpreter = tf.lite.Interpreter(model_content=tflite, num_threads=os.cpu_count())
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, (1, size, size, 3))
            interpreter.allocate_tensors()

            def run_tflite():
                interpreter.set_tensor(index, picture[None].astype(np.float32))
                interpreter.invoke()

            row["tflite_ms"] = round(1000 * _time(run_tflite, args.repeats), 1)
            log(f"infer width {width} {size}px: float32 {row['float32_ms']} ms, auto "
                f"({resolved}) {row['auto_ms']} ms, TensorFlow Lite {row['tflite_ms']} ms")
            rows.append(row)
    # The optimisation on the same 512-pixel picture (random VGG weights: same work).
    photo = (rng.random((512, 512, 3)) * 255).astype(np.uint8)
    from nst_keras import cli

    config = cli.preset_config("fast", ["--content_image=x.jpg", "--style_image=x.jpg",
                                        "--weights=random", "--img_nrows=512"])
    config = config.replace(output_dir=None, content_image=None, style_image=None)
    start = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        stylize(config, content=photo, style=photo[::-1].copy(), log=lambda s: None)
    fast_s = time.perf_counter() - start
    speedups = {}
    for width in (1.0, 0.5):
        auto512 = next(r["auto_ms"] for r in rows if r["size"] == 512
                       and r["width"] == width) / 1000
        speedups[str(width)] = round(fast_s / auto512, 1)
        log(f"--preset=fast at 512 rows: {fast_s:.1f} s; the width-{width} network (auto) is "
            f"{fast_s / auto512:.0f}x faster")
    return {"precision_auto": resolved, "rows": rows, "fast_512_s": round(fast_s, 2),
            "speedup_512": speedups}


# -- quality ----------------------------------------------------------------------------


def quality(args, log):
    import argparse as ap

    import quality as qb
    from PIL import Image

    from nst_keras import train
    from nst_keras.engine import network as netlib
    from nst_keras.output import networks

    pairs = [(c, s) for c, s in qb.STANDARD_PAIRS if c.split(":")[-1] in HELD_OUT]
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="nst-networks-quality-"))
    photos_dir = os.path.join(work, "photos")
    used = training_photos(photos_dir)
    log(f"training photos ({len(used)}): {', '.join(used)}")
    score = qb.script_scorer(args.scorer_script)
    fast_args = ap.Namespace(rows=args.rows, vgg16_weights=args.vgg16_weights, extra_flags=[],
                             schedule_steps=0, results=work, cache=True)
    records, sheet, trained = [], [], {}
    for style in sorted({s for _, s in pairs}):
        out = os.path.join(work, os.path.splitext(style)[0])
        net_path = out + ".keras"
        if not os.path.exists(net_path):
            config, options = _objective([
                f"--style_image={qb.resolve_image(style)}", f"--photos={photos_dir}",
                f"--output={net_path}", f"--output_dir={out}", "--model=vgg16",
                f"--weights={args.vgg16_weights}", f"--steps={args.steps}", "--overwrite",
                *args.train_flags.split()])
            start = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                record = train.train(options, config, log=lambda s: None)
            trained[style] = {"seconds": round(time.perf_counter() - start, 1),
                              "steps": record["step"], "final": record.get("final"),
                              "precision": record["precision"]}
            log(f"trained {style}: {args.steps} steps in {trained[style]['seconds']:.0f} s "
                f"({record['precision']})")
        net = netlib.load_network(net_path, "auto")
        for content_name, _ in (p for p in pairs if p[1] == style):
            content = qb.resolve_image(content_name)
            painting = qb.resolve_image(style)
            stem = f"{content_name.split(':')[-1]}__{os.path.splitext(style)[0]}"
            picture = networks.picture(net, content, args.rows)
            start = time.perf_counter()
            networks.picture(net, content, args.rows)
            seconds = time.perf_counter() - start
            image = os.path.join(work, stem + "_network.png")
            Image.fromarray(picture).save(image)
            opt = qb.run_one("fast", ["--flagfile=" + os.path.join(REPO, "configs", "fast.cfg")],
                             content, painting, fast_args, lambda s: None)
            photo, s_fast, s_net = score(content, painting, [opt["image"], image])
            photo_palette = qb.palette_distance(content, painting)

            def scores(path, scored):
                return {"gap": round(qb.gap_closed(scored["style_sim"], photo["style_sim"]), 4),
                        "ssim": round(scored["content_ssim"], 4),
                        "palette": round(qb.palette_closed(qb.palette_distance(path, painting),
                                                           photo_palette), 4)}

            row = {"content": content_name, "style": style, "network_s": round(seconds, 3),
                   "fast_s": opt["wall_s"], "network": scores(image, s_net),
                   "fast": scores(opt["image"], s_fast)}
            row["gap_ratio"] = round(row["network"]["gap"] / max(row["fast"]["gap"], 1e-9), 3)
            log(f"{content_name:>18} x {style:<17} network gap {row['network']['gap']:.2f} "
                f"ssim {row['network']['ssim']:.3f} palette {row['network']['palette']:.2f} "
                f"({seconds:.2f} s) | fast gap {row['fast']['gap']:.2f} ssim "
                f"{row['fast']['ssim']:.3f} palette {row['fast']['palette']:.2f} "
                f"({opt['wall_s']:.0f} s) | ratio {row['gap_ratio']:.2f}")
            records.append(row)
            sheet.append({"content": content, "style": painting,
                          "results": {"optimisation (fast)": {"image": opt["image"]},
                                      "network": {"image": image}}})
    if args.sheet:
        qb.contact_sheet(sheet, ["optimisation (fast)", "network"], args.sheet)
        log(f"wrote {args.sheet}")
    ratios = [r["gap_ratio"] for r in records]
    summary = {"pairs": len(records), "gap_ratio_min": min(ratios),
               "gap_ratio_median": statistics.median(ratios),
               "network_gap_median": statistics.median(r["network"]["gap"] for r in records),
               "fast_gap_median": statistics.median(r["fast"]["gap"] for r in records),
               "ssim_min": min(r["network"]["ssim"] for r in records),
               "ssim_median": statistics.median(r["network"]["ssim"] for r in records),
               "palette_median": statistics.median(r["network"]["palette"] for r in records),
               "fast_palette_median": statistics.median(r["fast"]["palette"] for r in records)}
    log("summary: " + json.dumps(summary))
    return {"steps": args.steps, "rows": args.rows, "photos": used, "trained": trained,
            "train_flags": args.train_flags, "pairs": records, "summary": summary}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="train,infer")
    p.add_argument("--train_steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=1000, help="training steps per painting")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--vgg16_weights",
                   default=os.path.join(SHARED, "weights", "vgg16_hed.weights.h5"))
    p.add_argument("--scorer_script",
                   default=os.path.join(SHARED, "tools", "quality_score.py"))
    p.add_argument("--train_flags", default="", help="flags added to the training (spaces)")
    p.add_argument("--work", default=None, help="folder for the networks and pictures")
    p.add_argument("--sheet", default=None)
    p.add_argument("--load", default="unknown", help="what else ran (recorded)")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    args = p.parse_args(argv)
    from nst_keras import cli

    cli.import_tensorflow_quietly()
    from nst_keras.engine import hardware

    hardware.configure_threads()
    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "load": args.load}
    parts = args.parts.split(",")
    print(out["machine"], flush=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if "train" in parts:
        out["train"] = train_speed(args, log)
    if "infer" in parts:
        out["infer"] = infer_speed(args, log)
    if "quality" in parts:
        out["quality"] = quality(args, log)
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, "networks.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
