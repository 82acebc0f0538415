"""cli: flag parsing into a Config, flagfiles (the shipped configs), defaults."""

import json
import os

import pytest

from nst_keras import cli, settings
from nst_keras import run
from conftest import REPO, fast_flags


def test_command_line_overrides_flagfile(tmp_path, content_path, style_path):
    flagfile = tmp_path / "x.cfg"
    flagfile.write_text("--iterations=7\n--result_prefix=fromfile\n--img_nrows=300\n")
    cli.parse(["prog", f"--flagfile={flagfile}", "--img_nrows=64",
               f"--content_image={content_path}", f"--style_image={style_path}"])
    config = cli.config_from_flags()
    assert config.iterations == 7 and config.result_prefix == "fromfile"
    assert config.img_nrows == 64
    cli.parse(["prog", f"--content_image={content_path}", f"--style_image={style_path}"])
    assert cli.config_from_flags().iterations == 4000  # nothing leaks between parses


def test_default_cfg_holds_the_tutorial_values():
    cli.parse(["prog", f"--flagfile={os.path.join(REPO, 'configs', 'default.cfg')}"])
    c = cli.config_from_flags()
    assert c.content_image == "https://i.imgur.com/F28w3Ac.jpg"
    assert c.style_image == "https://i.imgur.com/9ooB60I.jpg"
    assert (c.img_nrows, c.iterations, c.interpolation) == (400, 4000, "nearest")
    assert (c.content_weight, c.style_weight, c.total_variation_weight) == (2.5e-8, 1e-6, 1e-6)
    assert c.content_layers == ("block5_conv2",)
    assert c.style_layers == tuple(f"block{i}_conv1" for i in range(1, 6))
    assert (c.optimizer, c.resolved_learning_rate(), c.decay_steps, c.decay_rate) == (
        "sgd", 100.0, 100, 0.96)
    assert c.deprocess_mean == (103.939, 116.779, 123.68)
    assert (c.save_every, c.weights, c.model, c.precision) == (100, "imagenet", "vgg19", "float32")


def test_flags_fill_the_config_fields(content_path, style_path):
    cli.parse(["prog", *fast_flags(content_path, f"{style_path},{style_path}", "o",
                                   "--style_blend_weights=0.7,0.3", "--style_scale=0.5",
                                   "--preserve_colors=histogram", "--init=noise",
                                   "--pooling=avg", "--padding=replicate",
                                   "--style_layer_weights=2,1", "--scales=64,128",
                                   "--iterations=10,5", "--ema_decay=0.99",
                                   "--clamp_pixels")])
    c = cli.config_from_flags()
    assert (c.style_blend_weights, c.style_scale, c.preserve_colors, c.init) == (
        (0.7, 0.3), 0.5, "histogram", "noise")
    assert (c.pooling, c.padding, c.style_layer_weights) == ("avg", "replicate", (2.0, 1.0))
    assert (c.scales, c.iterations, c.ema_decay, c.clamp_pixels) == (
        (64, 128), (10, 5), 0.99, True)
    cli.parse(["prog", f"--content_image={content_path}", f"--style_image={style_path}"])
    d = cli.config_from_flags()
    assert (d.init, d.pooling, d.padding, d.preserve_colors, d.scales, d.ema_decay,
            d.clamp_pixels, d.style_scale, d.iterations) == (
        "content", "max", "zero", "none", None, 0.0, False, 1.0, 4000)


@pytest.mark.parametrize("name,want", [
    ("two_styles.cfg", dict(style_blend_weights=(0.7, 0.3), optimizer="adam")),
    ("keep_colors.cfg", dict(preserve_colors="luminance", pooling="avg", ema_decay=0.99)),
    ("high_res.cfg", dict(scales=(512, 1024, 2048), iterations=(600, 200, 100),
                          precision="auto", clamp_pixels=True,
                          padding="replicate")),
])
def test_configs_parse(monkeypatch, name, want):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(repo)
    cli.parse(["prog", f"--flagfile=configs/{name}"])
    c = cli.config_from_flags()
    for key, value in want.items():
        assert getattr(c, key) == value, key
    assert (c.content_weight, c.style_weight) == (2.5e-8, 1e-6)  # the tutorial's


def test_fast_cfg_is_valid_and_lowers_the_loss(tmp_path, content_path, style_path):
    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "configs", "fast.cfg")
    cli.parse(["prog", f"--flagfile={cfg}"])
    config = cli.config_from_flags()
    assert (config.optimizer, config.precision, config.loss_normalization) == (
        "lbfgs", "auto", "gap_total")
    out = str(tmp_path / "out")
    assert run.main(["prog", f"--flagfile={cfg}", f"--content_image={content_path}",
                     f"--style_image={style_path}", f"--output_dir={out}",
                     "--weights=random", "--img_nrows=48", "--iterations=4",
                     "--log_every=1"]) == 0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"))
    if not n.startswith("network_")))  # python -m nst_keras.train's (tests/test_presets.py)
def test_shipped_presets_use_auto_precision_and_name_outputs_after_the_photo(
        monkeypatch, name):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cli.parse(["prog", f"--flagfile=configs/{name}", "--content_image=photos/cat.jpg"])
    config = cli.config_from_flags()
    if name == "default.cfg":  # the tutorial, reproduced exactly
        assert (config.precision, config.result_prefix) == ("float32", "paris_generated")
    else:
        assert config.precision == "auto", name
        if name != "deprocess_offsets.cfg":  # the experiment names its own files
            assert settings.result_prefix(config) == "cat_stylized", name
    cli.parse(["prog"])


@pytest.mark.parametrize("name", ["deprocess_offsets", "reconstruct_content",
                                  "reconstruct_style", "tradeoff"])
def test_experiment_configs_parse_for_imagenet(name):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cli.parse(["prog", f"--flagfile={os.path.join(repo, 'configs', name + '.cfg')}"])
    config = cli.config_from_flags()
    assert config.experiment == name
    assert (config.weights, config.model, config.optimizer) == ("imagenet", "vgg19", "lbfgs")
    assert config.output_dir == f"outputs/{name}" and config.img_nrows >= 256
    if name == "deprocess_offsets":
        assert config.deprocess_offsets == ((103.939, 116.779, 123.68), (123.939, 96.779, 96.68),
                                            (123.68, 116.779, 103.939), (0.0, 0.0, 0.0))
    if name.startswith("reconstruct"):
        assert config.reconstruct_layers == tuple(f"block{i}_conv1" for i in range(1, 6))
    if name == "tradeoff":
        assert config.tradeoff_ratios == (0.4, 4.0, 40.0, 400.0, 4000.0)
    cli.parse(["prog"])
