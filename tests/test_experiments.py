"""Experiments: the offsets report, grids, reconstructions, trade-off."""

import json
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

from nst_keras import Config
from nst_keras.engine.imaging import noise_picture
from nst_keras.experiments import growing_sets, make_grid, offsets_report, reconstruct
from nst_keras.experiments.offsets import offsets_panels
from nst_keras.fields import parse_offsets
from conftest import IMAGENET, run_cli, tiny


WRITE_UP = (123.939, 96.779, 96.68)


# --- the offsets report --------------------------------------------------------

# Four BGR mean-centred pixels; see the hand computation in the test.
KNOWN = np.array([[[[0, 0, 0], [140, -120, -110], [-100, 100, 130], [50, -50, -20]]]],
                 np.float32)


def test_offsets_report_equals_hand_computation_with_clipping():
    imagenet, write_up = offsets_report(KNOWN, [IMAGENET, WRITE_UP])
    # ImageNet means, RGB per pixel: (124,117,104) (14,0,244) (254,217,4) (104,67,154);
    # pixel 1's G is round(-3.221) = -3 -> clipped to 0.
    # Write-up: (97,97,124) (0,0,255) (227,197,24) (77,47,174): pixel 1 clips
    # R (-13) and G (-23) low and B (264) high.
    assert imagenet["offsets"] == list(IMAGENET)
    assert imagenet["mean_rgb"] == [124.0, 100.25, 126.5]
    assert imagenet["mean_shift_rgb"] == [0.0, 0.0, 0.0]
    assert imagenet["clipped_fraction_rgb"] == [0.0, 0.25, 0.0]
    assert imagenet["psnr_vs_imagenet"] is None and imagenet["identical_to_imagenet"]
    assert write_up["offsets"] == list(WRITE_UP)
    assert write_up["mean_rgb"] == [100.25, 85.25, 144.25]
    assert write_up["mean_shift_rgb"] == [-23.75, -15.0, 17.75]
    assert write_up["clipped_low_fraction_rgb"] == [0.25, 0.25, 0.0]
    assert write_up["clipped_high_fraction_rgb"] == [0.0, 0.0, 0.25]
    assert write_up["clipped_fraction_rgb"] == [0.25, 0.25, 0.25]
    # squared differences: 3 pixels x (27^2 + 20^2 + 20^2) + (14^2 + 0 + 11^2) = 4904
    assert write_up["psnr_vs_imagenet"] == pytest.approx(
        10 * math.log10(255**2 / (4904 / 12)), abs=1e-3)
    assert not write_up["identical_to_imagenet"]
    json.dumps([imagenet, write_up], allow_nan=False)  # strict JSON


def test_zero_offsets_give_the_imagenet_picture_shifted_by_the_means():
    rng = np.random.default_rng(3)
    x = rng.uniform(2, 128, size=(1, 20, 30, 3)).astype(np.float32)  # nothing clips
    imagenet, zeros = offsets_report(x, [IMAGENET, (0, 0, 0)])
    assert zeros["clipped_fraction_rgb"] == [0.0, 0.0, 0.0]
    assert imagenet["clipped_fraction_rgb"] == [0.0, 0.0, 0.0]
    mean_rgb = np.array(IMAGENET[::-1])
    np.testing.assert_allclose(zeros["mean_shift_rgb"], -mean_rgb, atol=0.51)
    (pic_i, pic_z), captions = offsets_panels(x, [IMAGENET, (0, 0, 0)])
    diff = pic_i.astype(float) - pic_z.astype(float) - mean_rgb
    assert np.abs(diff).max() <= 1.0
    assert 0 < zeros["psnr_vs_imagenet"] < 10  # ~115 grey levels off
    assert captions == ["103.939,116.779,123.68\nImageNet means", "0,0,0\nzeros"]


# --- grids --------------------------------------------------------------------

def test_grid_has_one_cell_per_panel_and_drawn_captions():
    panels = [np.full((20, 30, 3), v, np.uint8) for v in (0, 80, 160, 240, 40)]
    captions = ["a", "bb", "", "dddd", "e"]
    grid = make_grid(panels, captions, columns=3, pad=4, font_size=10)
    caption_h = (grid.shape[0] - 4) // 2 - 20 - 4
    assert grid.shape[1] == 3 * (30 + 4) + 4
    assert grid.shape[0] == 2 * (20 + caption_h + 4) + 4 and caption_h > 0
    for i, panel in enumerate(panels):
        r, c = divmod(i, 3)
        x0, y0 = 4 + c * 34, 4 + r * (20 + caption_h + 4)
        np.testing.assert_array_equal(grid[y0:y0 + 20, x0:x0 + 30], panel)
        strip = grid[y0 + 20:y0 + 20 + caption_h, x0:x0 + 30]
        inked = (strip < 128).any(axis=-1).sum()
        assert (inked > 0) == bool(captions[i]), i  # a caption is drawn, an empty one is not
    one_row = make_grid(panels[:2], ["x", "y"], pad=2)
    assert one_row.shape[1] == 2 * 32 + 2


def test_grid_wraps_long_captions_into_more_lines():
    panel = [np.zeros((16, 40, 3), np.uint8)]
    short = make_grid(panel, ["ab"], font_size=10)
    long = make_grid(panel, ["123.939,96.779,96.68\nwrite-up variant"], font_size=10)
    assert long.shape[1] == short.shape[1] and long.shape[0] > short.shape[0]


# --- command line runs --------------------------------------------------------

def test_deprocess_offsets_cli_writes_grid_and_report(tmp_path, content_path, style_path):
    out = str(tmp_path / "out")
    offsets = "103.939,116.779,123.68;123.939,96.779,96.68;0,0,0"
    assert run_cli(*tiny(content_path, style_path, out, "--experiment=deprocess_offsets",
                     "--iterations=3", f"--deprocess_offsets={offsets}",
                     "--content_layers=block2_conv2", "--style_layers=block1_conv1")) == 0
    report = json.load(open(os.path.join(out, "deprocess_offsets.json")))
    assert [r["offsets"] for r in report] == [list(t) for t in parse_offsets(offsets)]
    result = np.asarray(Image.open(os.path.join(out, "content_stylized.png")), float)
    np.testing.assert_allclose(report[0]["mean_rgb"], result.mean(axis=(0, 1)), atol=1e-3)
    assert report[0]["psnr_vs_imagenet"] is None
    assert report[1]["mean_shift_rgb"][2] > 0 > report[1]["mean_shift_rgb"][0]
    grid = Image.open(os.path.join(out, "deprocess_offsets.png"))
    assert grid.size[0] == 3 * (64 + 4) + 4 and grid.size[1] > 48


def test_content_reconstruction_lowers_the_layer_loss_by_a_large_factor(content_path):
    from nst_keras.engine.imaging import load_image

    target = load_image(content_path)
    config = Config(weights="random", optimizer="lbfgs", iterations=30, log_every=0,
                    total_variation_weight=0)
    picture, record = reconstruct(config, target, "content", ["block2_conv1"], log=None)
    assert record["layers"] == ["block2_conv1"]
    assert record["final_loss"] * 100 < record["initial_loss"]
    noise = noise_picture(*target.shape[:2], seed=0)
    # closer to the content picture than the noise it started from
    err = lambda a: np.abs(a.astype(float) - target.astype(float)).mean()  # noqa: E731
    assert err(picture) < 0.5 * err(noise)


def test_style_reconstruction_stays_in_pixel_range_so_the_picture_keeps_its_loss(style_path):
    from nst_keras.engine import pipeline
    from nst_keras.experiments.reconstruct import reconstruction_config
    from nst_keras.engine.imaging import load_image
    from nst_keras.engine.vgg import preprocess_image

    target = load_image(style_path)
    config = Config(weights="random", optimizer="lbfgs", iterations=15, log_every=0,
                    total_variation_weight=0)
    layers = ["block1_conv1", "block2_conv1"]
    picture, record = reconstruct(config, target, "style", layers, log=None)
    assert record["final_loss"] * 10 < record["initial_loss"]
    loss = pipeline.build_loss(reconstruction_config(config, "style", layers), target, [target])
    # the saved (rounded, clipped) picture has the loss the optimiser reached
    saved = float(loss.terms(preprocess_image(picture))["style_loss"])
    assert saved == pytest.approx(record["final_loss"], rel=0.1)


def test_a_reconstruction_is_one_engine_run_from_the_noise(content_path, monkeypatch):
    from nst_keras.engine import pipeline
    from nst_keras.engine.imaging import load_image
    from nst_keras.engine.vgg import preprocess_image
    from nst_keras.experiments.reconstruct import reconstruction_config

    module = sys.modules["nst_keras.experiments.reconstruct"]  # the name is the function's

    target = load_image(content_path)
    config = Config(weights="random", optimizer="adam", iterations=3, log_every=0,
                    total_variation_weight=0, img_nrows=400, style_scale=2.0,
                    color_weight=5.0, preserve_colors="histogram")
    runs, stylize = [], module.stylize.stylize

    def counted(run_config, **kwargs):
        runs.append(run_config)
        return stylize(run_config, **kwargs)

    monkeypatch.setattr(module.stylize, "stylize", counted)
    picture, record = reconstruct(config, target, "content", ["block2_conv1"], log=None)
    (run,) = runs
    assert (run.content_weight, run.style_weight, run.color_weight) == (1.0, 0.0, 0.0)
    assert (run.init, run.clamp_pixels, run.img_nrows, run.output_dir) == (
        "noise", True, target.shape[0], None)
    assert (run.style_scale, run.preserve_colors) == (1.0, "none")  # the picture as it is
    assert picture.shape == target.shape
    # the initial loss is the matched term at the run's own starting noise
    loss = pipeline.build_loss(reconstruction_config(config, "content", ["block2_conv1"],
                                                     target.shape[0]), target, [target])
    noise = preprocess_image(noise_picture(*target.shape[:2], seed=0))
    assert record["initial_loss"] == pytest.approx(
        float(loss.terms(noise)["content_loss"]), rel=1e-5)
    assert record["evaluations"] == 3 and record["final_loss"] < record["initial_loss"]


def test_reconstruct_content_cli_one_image_per_layer(tmp_path, content_path):
    out = str(tmp_path / "out")
    layers = "block1_conv1,block3_conv1"
    assert run_cli(f"--content_image={content_path}", f"--output_dir={out}", "--weights=random",
               "--img_nrows=48", "--optimizer=lbfgs", "--iterations=15", "--log_every=0",
               "--total_variation_weight=0", "--experiment=reconstruct_content",
               f"--reconstruct_layers={layers}") == 0  # no style image needed
    assert sorted(os.listdir(out)) == [
        "reconstruct_content.json", "reconstruct_content.png",
        "reconstruct_content_block1_conv1.png", "reconstruct_content_block3_conv1.png"]
    report = json.load(open(os.path.join(out, "reconstruct_content.json")))
    assert [r["layers"] for r in report] == [["block1_conv1"], ["block3_conv1"]]
    assert all(r["final_loss"] * 10 < r["initial_loss"] for r in report)
    grid = Image.open(os.path.join(out, "reconstruct_content.png"))
    assert grid.size[0] == 3 * (64 + 4) + 4  # the original + one per layer


def test_style_sets_grow_and_change_the_noise(tmp_path, style_path):
    assert growing_sets(["a", "b", "c"]) == [("a",), ("a", "b"), ("a", "b", "c")]
    out = str(tmp_path / "out")
    layers = ["block1_conv1", "block2_conv1", "block3_conv1"]
    assert run_cli(f"--style_image={style_path}", f"--output_dir={out}", "--weights=random",
               "--img_nrows=40", "--optimizer=lbfgs", "--iterations=10", "--log_every=0",
               "--total_variation_weight=0", "--experiment=reconstruct_style",
               f"--reconstruct_layers={','.join(layers)}") == 0  # no content image needed
    report = json.load(open(os.path.join(out, "reconstruct_style.json")))
    assert [r["layers"] for r in report] == [layers[:1], layers[:2], layers]
    assert all(r["final_loss"] * 10 < r["initial_loss"] for r in report)
    noise = noise_picture(40, 56, seed=0).astype(float)
    for r in report:
        pic = np.asarray(Image.open(os.path.join(out, r["file"])), float)
        assert pic.shape == (40, 56, 3)
        assert np.abs(pic - noise).mean() > 10  # the result moved away from the noise
    assert r["file"] == "reconstruct_style_upto_block3_conv1.png"
    grid = Image.open(os.path.join(out, "reconstruct_style.png"))
    assert grid.size[0] == 4 * (56 + 4) + 4


def test_tradeoff_row_one_panel_per_ratio(tmp_path, content_path, style_path):
    out = str(tmp_path / "out")
    assert run_cli(*tiny(content_path, style_path, out, "--experiment=tradeoff", "--iterations=6",
                     "--log_every=3", "--content_weight=1", "--total_variation_weight=0",
                     "--tradeoff_ratios=0.0001,10000", "--content_layers=block2_conv2",
                     "--style_layers=block1_conv1,block2_conv1")) == 0
    report = json.load(open(os.path.join(out, "tradeoff.json")))
    assert [r["ratio"] for r in report] == [0.0001, 10000.0]
    assert [r["style_weight"] for r in report] == pytest.approx([1e-4, 1e4])
    low, high = report
    # more style weight: a closer style match, a worse content match
    assert high["style_loss"] < 0.5 * low["style_loss"]
    assert high["content_loss"] > 2 * low["content_loss"]
    a, b = (np.asarray(Image.open(os.path.join(out, r["file"])), float) for r in report)
    assert np.abs(a - b).mean() > 1
    grid = Image.open(os.path.join(out, "tradeoff.png"))
    assert grid.size[0] == 2 * (64 + 4) + 4
