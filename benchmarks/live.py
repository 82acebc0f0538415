"""Films through trained networks: frames per second, and flicker with and without
the stability term and ``--blend_previous``.

Three parts (``--parts=speed,camera,stability``), each printing its table and writing
``--out`` (one run, one machine: ratios are measured side by side):

* ``speed``: ``nst_keras.video --network`` on a 16:9 pan clip of ``--rows``
  rows (``--frames`` frames, FFV1 in, H.264 out), through a full-width and a
  half-width network (``network_fast``'s), float32 and ``--precision=auto``:
  the frames per second after the first batch (decoding, resizing, the
  network and encoding together, as the command runs) and overall; at
  ``auto`` also with ``--blend_previous=0.5 --flow=dis_fast`` (two optical
  flows a frame).  Speed
  does not depend on the weights' values, so the networks are untrained.
* ``camera``: the page (``python -m nst_keras.app --networks_dir``) in
  headless Chromium with a fake camera (640x480), the camera button pressed,
  through the same two untrained networks at the server's default live size
  (``--live_rows``, 256; ``--camera_rows`` for another): stylised frames
  shown per second, counted over ``--camera_s`` seconds after a warm-up, at
  the server's default precision (``auto``), with the page's Steady at 0 and
  at 0.5 (two optical flows a frame on the server).
* ``stability``: networks trained alike with ``--preset=network_fast``
  (``--steps``) on the photos this machine has (``benchmarks/networks.py``'s
  ``training_photos``, never the four held out for scoring), one without and one
  with each ``--stability_weight`` of ``--stability``; then a pan over a held-out photo
  (``--clip_photo``, 256 rows, ``--dx``/``--dy`` pixels a frame, motion known
  exactly) through each: flicker = mean absolute difference (0..255) between
  each stylised frame and the previous one moved by the pan, over the pixels
  both see (``benchmarks/video.py``'s ``flicker_true``), and the style gap
  closed on the held-out photos at 256 rows by the independent scorer
  (``--scorer_script``).  Each network's film is also made with each
  ``--blend_previous`` share of ``--carry`` (the previous stylised frame
  carried along the optical flow): its flicker, and the style gap closed by
  the film's own frames (every 15th, against the middle content frame),
  both as ratios and losses against the plain network's film without it.
  ``--stable_flags`` are training flags of every run but the plain one
  (``--network_antialias``), ``--tag`` names them apart in ``--work``, where
  trained networks are kept and reused.

Usage (from the repository root)::

    python benchmarks/live.py --parts=speed
    python benchmarks/live.py --parts=stability --painting=../shared/images/starry_night.jpg
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


def pan_clip(photo, path, rows, cols, frames, dx, dy):
    """``benchmarks/video.py``'s pan, at 25 fps."""
    from video import pan_clip as pan  # late: after the quiet TensorFlow import

    return pan(photo, path, rows, cols, frames, dx, dy, fps=25.0)


def _film(network: str, clip: str, out: str, *extra) -> dict:
    from nst_keras import cli, video
    from nst_keras.video import network_film

    argv = ["bench", f"--video={clip}", f"--output={out}", f"--network={network}",
            "--overwrite", *extra]
    cli.parse(argv, video.FLAGS)
    given = [n for n in video.FLAGS if video.FLAGS[n].present]
    config, options = video.config_from_flags(), video.options_from_flags()
    return network_film.stylize_video_with_network(config, options, log=lambda s: None,
                                                   given=given)


def speed(args, log):
    from nst_keras.engine import network

    work = tempfile.mkdtemp(prefix="nst-live-speed-")
    cols = args.rows * 16 // 9 // 2 * 2
    clip = os.path.join(work, "pan.mkv")
    pan_clip(os.path.join(SHARED, "images", "tubingen.jpg"), clip, args.rows, cols,
             args.frames, 2, 0)
    rows = []
    for width in (1.0, 0.5):
        path = os.path.join(work, f"w{width}.keras")
        network.build_network(width, seed=0).save(path)
        for precision, share in (("float32", 0.0), ("auto", 0.0), ("auto", 0.5)):
            summary = _film(path, clip, os.path.join(work, "out.mp4"),
                            f"--precision={precision}", f"--blend_previous={share}",
                            *(["--flow=dis_fast"] if share else []))
            resolved = network.load_network(path, precision).model.get_layer(
                "pad_to_multiple").dtype_policy.name if precision == "auto" else precision
            row = {"width": width, "precision": precision, "resolved": resolved,
                   "blend_previous": share,
                   "rows": args.rows, "cols": cols, "frames": summary["frames"],
                   "fps_after_first_batch": summary["frames_per_s"],
                   "fps_overall": round(summary["frames"] / summary["seconds"], 2)}
            rows.append(row)
            log(f"width {width:<4} {precision:<8} ({resolved}), blend {share:g}: "
                f"{row['fps_after_first_batch']:.1f} fps after the first batch, "
                f"{row['fps_overall']:.1f} overall ({summary['frames']} frames "
                f"{args.rows}x{cols})")
    return rows


def stability(args, log):
    import numpy as np
    from PIL import Image

    import networks as nb
    import quality as qb
    from video import flicker_true

    from nst_keras import train
    from nst_keras.engine import network as netlib
    from nst_keras.output import networks
    from nst_keras.video import network_film

    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="nst-live-stability-"))
    photos = os.path.join(work, "photos")
    used = nb.training_photos(photos)
    log(f"training photos ({len(used)}): {', '.join(used)}")
    trained = {}
    weights = [float(w) for w in str(args.stability).split(",") if w.strip()]
    runs = [("plain", 0.0)] + [(f"stable_{w:g}{args.tag}", w) for w in weights]
    for name, weight in runs:
        net_path = os.path.join(work, f"{name}.keras")
        if not os.path.exists(net_path):
            config, options = nb._objective([
                f"--style_image={args.painting}", f"--photos={photos}",
                f"--output={net_path}", f"--output_dir={os.path.join(work, name)}",
                "--model=vgg16", f"--weights={args.vgg16_weights}", f"--steps={args.steps}",
                f"--stability_weight={weight}", "--overwrite", *args.train_flags.split(),
                *(args.stable_flags.split() if name != "plain" else [])])
            start = time.perf_counter()
            with redirect_stdout(io.StringIO()):
                record = train.train(options, config, log=lambda s: None)
            trained[name] = {"seconds": round(time.perf_counter() - start, 1),
                             "final": record.get("final"), "precision": record["precision"]}
            log(f"trained {name} (stability {weight:g}): {args.steps} steps in "
                f"{trained[name]['seconds']:.0f} s; final {record.get('final')}")
    clip = os.path.join(work, "pan.mkv")
    cols = args.rows * 4 // 3 // 2 * 2
    contents = pan_clip(qb.resolve_image(args.clip_photo), clip, args.rows, cols,
                        args.frames, args.dx, args.dy)
    score = qb.script_scorer(args.scorer_script)
    held_out = [qb.resolve_image(f"skimage:{n}") for n in nb.HELD_OUT]
    # docs/video.md's clip for the optimisation's figures: 14 frames of 128x170 over
    # Tuebingen, 3 px right and 1 px down a frame (a training photo of the networks).
    same = pan_clip(os.path.join(SHARED, "images", "tubingen.jpg"),
                    os.path.join(work, "tubingen.mkv"), 128, 170, 14, 3, 1)
    results = {"content_flicker": round(flicker_true(contents, args.dx, args.dy), 3)}
    for name, weight in runs:
        net = netlib.load_network(os.path.join(work, f"{name}.keras"), "auto")
        frames = list(networks_frames(net, contents))
        gaps, ssims = [], []
        for photo_path in held_out:
            image = os.path.join(work, f"{name}_{os.path.basename(photo_path)}.png")
            Image.fromarray(networks.picture(net, photo_path, args.rows)).save(image)
            photo, scored = score(photo_path, args.painting, [image])
            gaps.append(qb.gap_closed(scored["style_sim"], photo["style_sim"]))
            ssims.append(scored["content_ssim"])
        results[name] = {"stability_weight": weight,
                         "flicker": round(flicker_true(frames, args.dx, args.dy), 3),
                         "flicker_video_md_clip": round(flicker_true(
                             list(networks_frames(net, same)), 3, 1), 3),
                         "gap_median": round(statistics.median(gaps), 4),
                         "gaps": [round(g, 4) for g in gaps],
                         "ssim_median": round(statistics.median(ssims), 4)}
        log(f"{name}: flicker {results[name]['flicker']:.2f} (the photo's own "
            f"{results['content_flicker']:.2f}), style gap closed median "
            f"{results[name]['gap_median']:.3f}")
        np.save(os.path.join(work, f"{name}_frames.npy"), np.stack(frames[:8]))
        # The film with --blend_previous: flicker and the style gap closed of its
        # frames (every 15th from the 10th, scored against the middle content frame).
        middle = os.path.join(work, "content_middle.png")
        Image.fromarray(contents[len(contents) // 2]).save(middle)
        results[name]["blend_previous"] = {}
        for share in [0.0] + [float(c) for c in args.carry.split(",") if c.strip()]:
            film = frames if not share else list(network_film.carried_frames(
                net, network_film.with_motion(contents), share))
            paths = []
            for k in range(10, len(film), 15):
                paths.append(os.path.join(work, f"{name}_carry{share:g}_{k}.png"))
                Image.fromarray(film[k]).save(paths[-1])
            photo, *scored = score(middle, args.painting, paths)
            film_gap = qb.gap_closed(float(np.mean([r["style_sim"] for r in scored])),
                                     photo["style_sim"])
            results[name]["blend_previous"][f"{share:g}"] = {
                "flicker": round(flicker_true(film, args.dx, args.dy), 3),
                "film_gap": round(film_gap, 4)}
            log(f"{name}, --blend_previous={share:g}: flicker "
                f"{results[name]['blend_previous'][f'{share:g}']['flicker']:.2f}, style gap "
                f"closed by the film's frames {film_gap:.3f}")
    for name, weight in runs[1:]:
        results[name]["flicker_ratio"] = round(results[name]["flicker"] /
                                               max(results["plain"]["flicker"], 1e-9), 3)
        results[name]["flicker_ratio_video_md_clip"] = round(
            results[name]["flicker_video_md_clip"] /
            max(results["plain"]["flicker_video_md_clip"], 1e-9), 3)
        results[name]["gap_loss"] = round(results["plain"]["gap_median"] -
                                          results[name]["gap_median"], 4)
        log(f"stability {weight:g}: flicker ratio {results[name]['flicker_ratio']:.2f}, "
            f"style gap lost {results[name]['gap_loss']:.3f}")
    base = results["plain"]["blend_previous"]["0"]
    for name, _ in runs:
        for share, row in results[name]["blend_previous"].items():
            row["flicker_ratio"] = round(row["flicker"] / max(base["flicker"], 1e-9), 3)
            row["film_gap_loss"] = round(base["film_gap"] - row["film_gap"], 4)
            log(f"{name}, --blend_previous={share}: flicker ratio {row['flicker_ratio']:.2f}, "
                f"film's style gap lost {row['film_gap_loss']:.3f}")
    return {"painting": os.path.basename(args.painting), "steps": args.steps,
            "stability_weight": args.stability, "clip": {"photo": args.clip_photo,
            "rows": args.rows, "cols": cols, "frames": args.frames, "dx": args.dx,
            "dy": args.dy}, "photos": used, "trained": trained, **results}


def camera(args, log):
    """The page's camera in headless Chromium (a fake 640x480 device) through an
    untrained full- and half-width network at the server's default live size,
    each with the page's Steady at 0 and 0.5."""
    import subprocess

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from test_app import chromium, server_url, stop_browser_and_server
    from selenium.webdriver.support.ui import Select

    from nst_keras.engine import network

    work = tempfile.mkdtemp(prefix="nst-live-camera-")
    nets = os.path.join(work, "networks")
    os.makedirs(nets)
    for width in (1.0, 0.5):
        network.build_network(width, seed=0).save(os.path.join(nets, f"width_{width}.keras"))
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_keras.app", "--port=0", f"--networks_dir={nets}",
         f"--results_dir={os.path.join(work, 'results')}", f"--live_rows={args.camera_rows}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    rows, driver = [], None
    try:
        driver = chromium(os.path.join(work, "profile"), work,
                          ("--use-fake-device-for-media-stream",
                           "--use-fake-ui-for-media-stream"))
        driver.get(server_url(process))
        deadline = time.monotonic() + 60
        while driver.execute_script("return document.body.dataset.networks") != "2":
            assert time.monotonic() < deadline, "the page listed no networks"
            time.sleep(0.1)
        for width, steady in ((1.0, 0.0), (1.0, 0.5), (0.5, 0.0), (0.5, 0.5)):
            Select(driver.find_element("id", "network")).select_by_value(f"width_{width}")
            driver.execute_script(f"document.getElementById('steady').value = '{steady}';")
            driver.find_element("id", "camera").click()
            time.sleep(args.camera_s / 3)  # warm up: the first frames trace the network
            first = int(driver.execute_script("return document.body.dataset.liveFrames||'0'"))
            start = time.perf_counter()
            time.sleep(args.camera_s)
            last = int(driver.execute_script("return document.body.dataset.liveFrames||'0'"))
            seconds = time.perf_counter() - start
            shown = driver.execute_script(
                "return [document.getElementById('live-fps').textContent,"
                "document.getElementById('live-info').textContent,"
                "document.getElementById('live').naturalHeight,"
                "document.getElementById('live').naturalWidth];")
            driver.find_element("id", "camera").click()
            time.sleep(1)
            row = {"width": width, "steady": steady, "fps": round((last - first) / seconds, 2),
                   "page_shows": shown[0], "server": shown[1], "rows": shown[2],
                   "cols": shown[3]}
            rows.append(row)
            log(f"camera, width {width}, steady {steady}: {row['fps']:.1f} fps over "
                f"{seconds:.0f} s at "
                f"{shown[2]}x{shown[3]} (the page shows {shown[0]}; {shown[1]})")
    finally:
        stop_browser_and_server(driver, process, os.path.join(work, "profile"))
    return rows


def networks_frames(net, contents, batch_size=1):
    from nst_keras.video.network_film import stylised_frames

    return stylised_frames(net, contents, batch_size)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="speed")
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--camera_s", type=float, default=15.0)
    p.add_argument("--camera_rows", type=int, default=256,
                   help="the server's --live_rows for the camera part (256: its default)")
    p.add_argument("--stability", default="300,1000",
                   help="stability weights to train with, comma separated")
    p.add_argument("--painting", default=os.path.join(SHARED, "images", "starry_night.jpg"))
    p.add_argument("--clip_photo", default="skimage:astronaut")
    p.add_argument("--dx", type=int, default=3)
    p.add_argument("--dy", type=int, default=1)
    p.add_argument("--vgg16_weights",
                   default=os.path.join(SHARED, "weights", "vgg16_hed.weights.h5"))
    p.add_argument("--scorer_script", default=os.path.join(SHARED, "tools", "quality_score.py"))
    p.add_argument("--train_flags", default="")
    p.add_argument("--stable_flags", default="",
                   help="training flags of the runs but the plain one")
    p.add_argument("--carry", default="0.5,0.7",
                   help="--blend_previous shares to film each network with, comma separated")
    p.add_argument("--tag", default="", help="added to the stable runs' names (--work)")
    p.add_argument("--work", default=None)
    p.add_argument("--load", default="unknown", help="what else ran (recorded)")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "live.json"))
    args = p.parse_args(argv)
    from nst_keras import cli

    cli.import_tensorflow_quietly()
    from nst_keras.engine import hardware

    import networks as nb

    hardware.configure_threads()
    out = {"date": time.strftime("%Y-%m-%d"), "machine": nb.machine(), "load": args.load}
    print(out["machine"], flush=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    parts = args.parts.split(",")
    if "speed" in parts:
        out["speed"] = speed(args, log)
    if "camera" in parts:
        out["camera"] = camera(args, log)
    if "stability" in parts:
        out["stability"] = stability(args, log)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
