"""Flicker of a stylised film: independent frames against the temporal method.

    python benchmarks/video.py --photo=PHOTO.jpg --style=PAINTING.jpg \\
        --weights=VGG16.weights.h5 --scorer_script=quality_score.py

1. The clip: a camera pan over ``--photo`` (``--dx``, ``--dy`` pixels per
   frame, ``--frames`` frames of ``--rows`` rows), made at run time and
   written losslessly (FFV1), so the true motion is known exactly.
2. The films, all through ``film.stylize_video`` with VGG16 (``--weights``),
   ``gap_total`` normalisation, style weight 160, L-BFGS and average pooling
   (the ``fast`` preset's objective when docs/video.md's figures were measured;
   ``--loss_normalization``,
   ``--style_weight``): independent frames (``--temporal_weight=0``,
   ``--iterations`` steps each), the temporal method (``--temporal_weight``,
   then ``--frame_iterations`` per frame), its long-term variant
   (``--temporal_frames=1,2,4``) and the temporal method on ``--workers``
   Ray workers (two chunks cross-faded).
3. The scores: flicker = mean absolute difference (0..255) between each
   stylised frame and the previous one moved by the pan, over the pixels
   both frames see (``flicker_true``); the same with the flow OpenCV's DIS
   method estimates on the content frames and Ruder et al.'s masks
   (``flicker_flow``, what a film of unknown motion allows); style strength = mean
   ``style_sim`` of the frames from the independent scorer script
   (``--scorer_script``, whose networks did not make the frames); seconds
   per frame.

Writes ``benchmarks/video_cpu.json`` (or ``--out``), ``docs/video_strip.png``
(consecutive frames of both methods) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from nst_keras import cli
from nst_keras.engine import hardware, imaging
from nst_keras.output import files
from nst_keras.engine import flow
from nst_keras.video import videoio

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def pan_clip(photo: str, path: str, rows: int, cols: int, frames: int, dx: int, dy: int,
             fps: float = 10.0) -> list:
    """A pan over ``photo`` (``frames`` crops of ``rows`` x ``cols`` moving by dx, dy
    a frame) written losslessly (FFV1) to ``path``; the crops."""
    need_rows, need_cols = rows + dy * frames, cols + dx * frames
    picture = imaging.open_picture(photo)
    scale = max(need_rows / picture.height, need_cols / picture.width)
    size = (int(np.ceil(picture.height * scale)), int(np.ceil(picture.width * scale)))
    canvas = imaging.load_image(photo, size, "lanczos")
    crops = [canvas[t * dy:t * dy + rows, t * dx:t * dx + cols] for t in range(frames)]
    videoio.encode(path, crops, fps, (rows, cols), codec="ffv1")
    return crops


def make_clip(photo: str, path: str, args) -> list:
    """The pan of ``args`` (``--rows``, 4:3, ``--frames``, ``--dx``, ``--dy``)."""
    return pan_clip(photo, path, args.rows, args.rows * 4 // 3 // 2 * 2, args.frames,
                    args.dx, args.dy)


def flicker_true(frames, dx: int, dy: int) -> float:
    """Mean |S_t(p) - S_{t-1}(p + d)| over the pixels both frames see."""
    rows, cols = frames[0].shape[:2]
    diffs = [np.abs(frames[t][:rows - dy, :cols - dx].astype(np.float64) -
                    frames[t - 1][dy:, dx:].astype(np.float64)).mean()
             for t in range(1, len(frames))]
    return float(np.mean(diffs))


def flicker_flow(frames, contents) -> float:
    """The same with the DIS flow of the content frames and Ruder's masks (what a
    film without known motion allows; the temporal method uses the same flow)."""
    diffs = []
    for t in range(1, len(frames)):
        backward = flow.optical_flow(contents[t], contents[t - 1], "dis")
        forward = flow.optical_flow(contents[t - 1], contents[t], "dis")
        mask = flow.consistency_weights(backward, forward)[..., None]
        warped = flow.warp(frames[t - 1], backward)
        diff = np.abs(frames[t].astype(np.float64) - warped) * mask
        diffs.append(diff.sum() / max(3 * mask.sum(), 1))
    return float(np.mean(diffs))


def engine_flags(args) -> list:
    return [f"--style_image={args.style}", "--model=vgg16", f"--weights={args.weights}",
            f"--loss_normalization={args.loss_normalization}", "--content_weight=1",
            f"--style_weight={args.style_weight}", "--total_variation_weight=1",
            "--optimizer=lbfgs", f"--iterations={args.iterations}", "--pooling=avg",
            "--precision=float32", "--log_every=0", "--save_every=0"]


def run_film(clip: str, root: str, name: str, args, *extra) -> dict:
    """One film; returns its stylised frames, wall seconds and seconds per frame."""
    from nst_keras.video import film
    from nst_keras import video  # late: TensorFlow after the quiet import

    out = os.path.join(root, f"{name}.mp4")
    cli.parse(["prog", f"--video={clip}", f"--output={out}", *engine_flags(args), *extra],
              video.FLAGS)
    config, options = video.config_from_flags(), video.options_from_flags()
    stamps = []
    start = time.perf_counter()
    summary = film.stylize_video(config, options, log=lambda s: None,
                                 on_frame=lambda p, path: stamps.append(time.perf_counter()))
    wall = time.perf_counter() - start
    paths = _frame_files(config.output_dir)
    frames = [imaging.load_image(f) for f in paths]
    after_first = np.diff(stamps).mean() if len(stamps) > 2 else None
    record = {"name": name, "flags": extra, "frames": summary["frames"],
              "wall_s": round(wall, 2), "s_per_frame": round(wall / summary["frames"], 2),
              "s_per_later_frame": None if after_first is None else round(after_first, 2)}
    return {"record": record, "frames": frames, "paths": paths}


def _frame_files(output_dir: str) -> list:
    """The film's final frames (chunks cross-faded) as PNG files; their paths."""
    from nst_keras.video import film  # late: TensorFlow after the quiet import

    data = json.load(open(os.path.join(output_dir, film.MANIFEST)))
    plan = data["key"]["film"]
    chunks = tuple(film.Chunk(**c) for c in plan["chunks"])
    filmed = film.Film(tuple(plan["sources"]), plan["rows"], plan["cols"], plan["fps"],
                       plan["start_s"], plan["audio"], chunks)
    folder = tempfile.mkdtemp(dir=output_dir)
    paths = []
    for i, frame in enumerate(film.film_frames(output_dir, filmed)):
        paths.append(os.path.join(folder, f"{i:04d}.png"))
        files.save_image(paths[-1], frame)
    return paths


def style_sims(script: str, content: str, style: str, paths) -> list:
    result = subprocess.run([sys.executable, script, "--content", content, "--style", style,
                             *paths], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [line["style_sim"] for line in lines[1:]]  # the first line is the content's


def contact_strip(rows_of_frames, labels, path: str, first: int, count: int) -> None:
    """``count`` consecutive frames from ``first`` of each film, one row per film."""
    h, w = rows_of_frames[0][0].shape[:2]
    label_w = 110
    sheet = Image.new("RGB", (label_w + count * (w + 2), len(labels) * (h + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (frames, label) in enumerate(zip(rows_of_frames, labels)):
        draw.text((4, r * (h + 2) + h // 2 - 12), label, fill="black")
        for c in range(count):
            sheet.paste(Image.fromarray(frames[first + c]), (label_w + c * (w + 2), r * (h + 2)))
    sheet.save(path)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("photo", "style", "weights", "scorer_script"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--rows", type=int, default=128)
    p.add_argument("--dx", type=int, default=3)
    p.add_argument("--dy", type=int, default=1)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--frame_iterations", type=int, default=25)
    p.add_argument("--loss_normalization", default="gap_total")
    p.add_argument("--style_weight", type=float, default=160.0)
    p.add_argument("--temporal_weight", type=float, default=50.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip", default="", help="comma separated runs to leave out: long,workers")
    p.add_argument("--out", default=os.path.join(HERE, "video_cpu.json"))
    p.add_argument("--strip", default=os.path.join(REPO, "docs", "video_strip.png"))
    return p.parse_args()


def runs_of(args) -> list:
    temporal = [f"--temporal_weight={args.temporal_weight}",
                f"--frame_iterations={args.frame_iterations}"]
    runs = [("independent", "--temporal_weight=0"), ("temporal", *temporal)]
    if "long" not in args.skip:
        runs.append(("temporal_long_term", *temporal, "--temporal_frames=1,2,4"))
    if "workers" not in args.skip:
        runs.append((f"temporal_{args.workers}_workers", *temporal,
                     f"--workers={args.workers}", "--chunk_overlap=4"))
    return runs


def main() -> None:
    args = parse_args()
    cli.import_tensorflow_quietly()
    device = hardware.describe_device()
    cpu_flags = sorted(f for f in device.cpu_flags if f.startswith(("avx512", "amx")))
    results = {}
    with tempfile.TemporaryDirectory() as root:
        clip = os.path.join(root, "pan.mkv")
        contents = make_clip(args.photo, clip, args)
        content_png = os.path.join(root, "content.png")
        files.save_image(content_png, contents[0])
        for name, *extra in runs_of(args):
            run = run_film(clip, root, name, args, *extra)
            record = run["record"]
            record["flicker_true"] = round(flicker_true(run["frames"], args.dx, args.dy), 3)
            record["flicker_flow"] = round(flicker_flow(run["frames"], contents), 3)
            sims = style_sims(args.scorer_script, content_png, args.style, run["paths"])
            record["style_sim"] = round(float(np.mean(sims)), 4)
            results[name] = {"record": record, "frames": run["frames"]}
            print(json.dumps(record), flush=True)
        report(args, device, cpu_flags, contents, results)


def report(args, device, cpu_flags, contents, results) -> None:
    base = results["independent"]["record"]
    records = [r["record"] for r in results.values()]
    for r in records:
        r["flicker_reduction"] = round(base["flicker_true"] / max(r["flicker_true"], 1e-9), 2)
        r["style_sim_vs_independent"] = round(r["style_sim"] - base["style_sim"], 4)
    serial = results["temporal"]["record"]["s_per_frame"]
    parallel = [r for r in records if r["name"].endswith("_workers")]
    summary = {"device": device.name, "cpu_flags": cpu_flags, "cores": hardware.usable_cores(),
               "clip": {"frames": args.frames, "rows": args.rows, "dx": args.dx, "dy": args.dy,
                        "flicker_of_the_content": round(flicker_true(contents, args.dx,
                                                                     args.dy), 3),
                        "flicker_flow_of_the_content": round(flicker_flow(contents,
                                                                          contents), 3)},
               "settings": {"iterations": args.iterations,
                            "frame_iterations": args.frame_iterations,
                            "temporal_weight": args.temporal_weight,
                            "style_weight": args.style_weight,
                            "flags": [f.replace(args.weights, os.path.basename(args.weights))
                                      for f in engine_flags(args)[1:]]},
               "runs": records}
    if parallel:
        summary["speedup_workers"] = round(serial / parallel[0]["s_per_frame"], 3)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    contact_strip([results["independent"]["frames"], results["temporal"]["frames"]],
                  ["independent", "temporal"], args.strip, max(0, args.frames // 2 - 3), 6)
    print(f"{device.name}; {summary['cores']} cores; {' '.join(cpu_flags) or 'no avx512/amx'}")
    print("| run | flicker (true motion) | flicker (DIS flow) | style_sim | s per frame |")
    print("|---|---|---|---|---|")
    for r in records:
        print(f"| {r['name']} | {r['flicker_true']} | {r['flicker_flow']} | {r['style_sim']} "
              f"| {r['s_per_frame']} |")


if __name__ == "__main__":
    sys.exit(main())
