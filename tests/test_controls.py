"""Artist controls: several styles, style scale, colours, init, pooling and
padding, layers, multi-scale, iterate averaging, clamping."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nst_keras import Config, cli, imaging, objective, optim, pipeline, stylize, vgg
from conftest import make_picture
from conftest import run_cli

# Shallow layers keep the network (and the tests) small.
FAST = dict(weights="random", seed=3, img_nrows=48, log_every=1, save_every=0,
            content_layers=("block2_conv2",), style_layers=("block1_conv1", "block2_conv1"))
QUIET = dict(log=lambda s: None)


def fast_flags(content, style, out, *extra):
    return [f"--content_image={content}", f"--style_image={style}", f"--output_dir={out}",
            "--weights=random", "--seed=3", "--img_nrows=48", "--log_every=1",
            "--save_every=0", "--content_layers=block2_conv2",
            "--style_layers=block1_conv1,block2_conv1", *extra]


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def tv(x):
    return float(objective.total_variation_loss(tf.constant(x)))


@pytest.fixture(scope="module")
def backbone():
    return vgg.load_backbone("vgg19", "random", seed=3)[0]


# -- several styles ---------------------------------------------------------

def test_blend_weights_one_zero_equal_the_single_style(tmp_path, content_path, style_path,
                                                        style2_path):
    runs = {
        "single": [],
        "blend10": ["--style_blend_weights=1,0"],
        "equal": [],
    }
    style_arg = {"single": style_path, "blend10": f"{style_path},{style2_path}",
                 "equal": f"{style_path},{style2_path}"}
    loss = {}
    for name, extra in runs.items():
        out = str(tmp_path / name)
        assert run_cli(*fast_flags(content_path, style_arg[name], out, "--iterations=3",
                               "--style_weight=1e-4", *extra)) == 0
        loss[name] = np.array([m["loss"] for m in metrics(out)])
    np.testing.assert_allclose(loss["blend10"], loss["single"], rtol=1e-3)
    assert abs(loss["equal"][0] - loss["single"][0]) > 1e-2 * loss["single"][0]


def test_blend_targets_are_the_weighted_gram_average(backbone):
    content, s1, s2 = (make_picture(48, 64, i) for i in range(3))
    config = Config(content_image="c", style_image=["a", "b"], **FAST,
                    style_blend_weights=(3.0, 1.0))
    blended = pipeline.build_loss(config, content, [s1, s2], backbone)
    one = pipeline.build_loss(config.replace(style_blend_weights=None, style_image="a"),
                            content, [s1], backbone)
    two = pipeline.build_loss(config.replace(style_blend_weights=None, style_image="b"),
                            content, [s2], backbone)
    for k in config.style_layers:
        want = 0.75 * one.style.targets[k].numpy() + 0.25 * two.style.targets[k].numpy()
        np.testing.assert_allclose(blended.style.targets[k].numpy(), want, rtol=1e-5)


# -- keep the content's colours ----------------------------------------------

def iq_distance(picture, content):
    a = imaging.rgb_to_yiq(picture)[..., 1:]
    b = imaging.rgb_to_yiq(content)[..., 1:]
    return float(np.abs(a - b).mean())


def test_luminance_mode_keeps_the_content_chroma_from_noise():
    content = make_picture(48, 64, 0)
    style = make_picture(48, 64, 1)
    base = Config(content_image="c", style_image="s", **FAST, iterations=3, init="noise",
                  optimizer="adam", style_weight=1e-4)
    kept = stylize(base.replace(preserve_colors="luminance"), content, style, **QUIET)
    free = stylize(base, content, style, **QUIET)
    d_kept, d_free = iq_distance(kept.image, content), iq_distance(free.image, content)
    # Only rounding and gamut clipping (a new luminance with the content's
    # chroma can fall outside 0..255) move I and Q away from the content's.
    assert d_kept < 4.0
    assert d_free > 10 * d_kept  # from noise, the free run is nowhere near the content
    inside = ((kept.image > 0) & (kept.image < 255)).all(axis=-1)
    assert inside.mean() > 0.5
    iq = np.abs(imaging.rgb_to_yiq(kept.image) - imaging.rgb_to_yiq(content))[..., 1:]
    assert iq[inside].max() < 0.7  # unclipped pixels: rounding to uint8 only
    # The optimised image is grey (luminance only): its channels agree.
    rgb = vgg.deprocess_image(kept.tensor).astype(np.float64)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() < np.abs(
        vgg.deprocess_image(free.tensor)[..., 0].astype(float)
        - vgg.deprocess_image(free.tensor)[..., 2]).mean()


def test_luminance_inputs_are_grey_and_style_luminance_is_matched():
    content = make_picture(48, 64, 0)
    style = np.clip(make_picture(48, 64, 1) * 0.5, 0, 255).astype(np.uint8)
    c, (s,) = imaging.colors_for_loss("luminance", content, [style])
    assert np.allclose(c[..., 0], c[..., 1]) and np.allclose(s[..., 0], s[..., 2])
    y_c = imaging.rgb_to_yiq(content)[..., 0]
    assert s[..., 0].mean() == pytest.approx(y_c.mean(), abs=1.0)
    assert s[..., 0].std() == pytest.approx(y_c.std(), rel=0.05)


def stats(picture):
    x = np.asarray(picture, np.float64).reshape(-1, 3)
    return x.mean(0), np.cov(x, rowvar=False)


def test_histogram_mode_moves_style_colour_statistics_onto_the_content():
    content = make_picture(48, 64, 0)
    # A dim, reddish style: very different colour statistics.
    style = (make_picture(40, 56, 1) * np.array([0.6, 0.25, 0.15])).astype(np.uint8)
    matched = imaging.match_color_statistics(style, content)
    (mc, cc), (ms, cs), (mm, cm) = stats(content), stats(style), stats(matched)
    assert np.abs(ms - mc).max() > 30 and np.abs(cs - cc).max() > 300
    np.testing.assert_allclose(mm, mc, atol=2.0)
    np.testing.assert_allclose(cm, cc, atol=0.05 * np.abs(cc).max())
    # The engine feeds the matched style to the loss.
    config = Config(content_image=content, style_image=style, **FAST,
                    preserve_colors="histogram").validate()
    sources = pipeline.open_sources(config)
    stage = pipeline.plan_stages(config, *sources.content.size)[0]
    inputs = pipeline.stage_inputs(config, sources, stage)
    np.testing.assert_allclose(stats(inputs.styles[0])[0], stats(inputs.content)[0], atol=2.0)
    np.testing.assert_array_equal(inputs.content, inputs.content_colour)


# -- style scale ------------------------------------------------------------

def test_style_scale_changes_the_gram_targets_as_expected(backbone):
    content, style = make_picture(48, 64, 0), make_picture(96, 128, 1)
    config = Config(content_image=content, style_image=style, **FAST)
    targets = {}
    for scale in (1.0, 2.0):
        c = config.replace(style_scale=scale).validate()
        sources = pipeline.open_sources(c)
        stage = pipeline.plan_stages(c, *sources.content.size)[0]
        inputs = pipeline.stage_inputs(c, sources, stage)
        assert inputs.styles[0].shape[:2] == (48 * scale, 64 * scale)
        loss = pipeline.build_loss(c, inputs.content, inputs.styles, backbone)
        targets[scale] = {k: v.numpy() for k, v in loss.style.targets.items()}
    # Scale 1 is keras.io: the plain Gram of the style resized to the output.
    ex = vgg.build_extractor(backbone, list(config.style_layers))
    small = imaging.load_image(style, (48, 64))
    feats = ex(vgg.preprocess_image(small))
    for k in config.style_layers:
        np.testing.assert_allclose(targets[1.0][k], objective.gram_matrix(feats[k][0]).numpy(),
                                   rtol=1e-5)
    # Scale 2: the style at 96x128 (its own size), Gram over 4x the positions,
    # rescaled by the position ratio 1/4 to the output's count.
    feats = ex(vgg.preprocess_image(style))
    for k in config.style_layers:
        want = objective.gram_matrix(feats[k][0]).numpy() / 4.0
        np.testing.assert_allclose(targets[2.0][k], want, rtol=1e-5)
        assert not np.allclose(targets[2.0][k], targets[1.0][k], rtol=0.05)


def test_style_scale_normalisation_keeps_a_flat_style_comparable(backbone):
    content = make_picture(48, 64, 0)
    flat = np.full((100, 100, 3), (200, 120, 40), np.uint8)
    norms = []
    for scale in (0.75, 1.0, 2.0):
        c = Config(content_image=content, style_image=flat,
                   **{**FAST, "style_layers": ("block1_conv1",)}, style_scale=scale).validate()
        sources = pipeline.open_sources(c)
        inputs = pipeline.stage_inputs(c, sources, pipeline.plan_stages(c, 100, 100)[0])
        loss = pipeline.build_loss(c, inputs.content, inputs.styles, backbone)
        norms.append(np.linalg.norm(loss.style.targets["block1_conv1"].numpy()))
    # Unnormalised Grams would differ by the pixel counts (0.56x, 1x, 4x).
    assert max(norms) / min(norms) < 1.15


# -- initial image ----------------------------------------------------------

def test_seed_reproduces_noise_init(content_path, style_path):
    config = Config(content_image=content_path, style_image=style_path, **FAST,
                    iterations=2, init="noise")
    a = stylize(config, **QUIET).tensor
    b = stylize(config, **QUIET).tensor
    c = stylize(config.replace(seed=4, weights="random"), **QUIET).tensor
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 10
    noise = imaging.noise_picture(48, 64, 7)
    np.testing.assert_array_equal(noise, imaging.noise_picture(48, 64, 7))
    assert 0 <= noise.min() and noise.max() <= 255 and noise.std() > 60


def test_init_style_and_path(tmp_path, content_path, style_path):
    path = tmp_path / "start.png"
    start = make_picture(30, 30, 5)
    Image.fromarray(start).save(path)
    for init, want in [("style", imaging.load_image(style_path, (48, 64))),
                       (str(path), imaging.load_image(str(path), (48, 64))),
                       ("content", imaging.load_image(content_path, (48, 64)))]:
        config = Config(content_image=content_path, style_image=style_path, **FAST,
                        init=init).validate()
        sources = pipeline.open_sources(config)
        stage = pipeline.plan_stages(config, *sources.content.size)[0]
        inputs = pipeline.stage_inputs(config, sources, stage)
        got = pipeline.initial_image(config, sources, stage, inputs)
        np.testing.assert_array_equal(vgg.deprocess_image(got), want)


# -- network: pooling, padding, layers --------------------------------------

def test_avg_pooling_keeps_every_conv_weight(backbone):
    names = ["block5_conv4"]
    avg = vgg.build_extractor(backbone, names, pooling="avg")
    mx = vgg.build_extractor(backbone, names, pooling="max")
    kinds = [type(layer).__name__ for layer in avg.layers]
    assert kinds.count("AveragePooling2D") == 4 and "MaxPooling2D" not in kinds
    convs = [layer for layer in backbone.layers if layer.weights]
    assert len(convs) == 16
    for layer in convs:
        for got, want in zip(avg.get_layer(layer.name).get_weights(), layer.get_weights()):
            np.testing.assert_array_equal(got, want)
    x = tf.constant(vgg.preprocess_image(make_picture(48, 64)))
    assert not np.allclose(avg(x)["block5_conv4"], mx(x)["block5_conv4"])


def test_replicate_padding_changes_only_the_border_of_the_first_layer(backbone):
    x = vgg.preprocess_image(make_picture(40, 48))
    zero = vgg.build_extractor(backbone, ["block1_conv1"])(x)["block1_conv1"].numpy()
    rep = vgg.build_extractor(backbone, ["block1_conv1"], padding="replicate")(x)
    rep = rep["block1_conv1"].numpy()
    np.testing.assert_allclose(rep[:, 1:-1, 1:-1], zero[:, 1:-1, 1:-1], rtol=1e-5, atol=1e-4)
    assert np.abs(rep[:, 0] - zero[:, 0]).max() > 1.0
    kernel, bias = backbone.get_layer("block1_conv1").get_weights()
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")
    want = tf.nn.relu(tf.nn.conv2d(padded, kernel, 1, "VALID") + bias).numpy()
    np.testing.assert_allclose(rep, want, rtol=1e-4, atol=1e-3)


def test_style_layer_weights_and_several_content_layers(backbone):
    content, style = make_picture(48, 64, 0), make_picture(48, 64, 1)
    x = tf.constant(vgg.preprocess_image(make_picture(48, 64, 2)))
    cfg = Config(content_image="c", style_image="s", **FAST, content_weight=1.0,
                 style_weight=1.0, total_variation_weight=0.0)
    weighted = pipeline.build_loss(cfg.replace(style_layer_weights=(1.0, 0.0)), content,
                                 [style], backbone).terms(x)
    only_first = pipeline.build_loss(cfg.replace(style_layers=("block1_conv1",)), content,
                                   [style], backbone).terms(x)
    equal = pipeline.build_loss(cfg, content, [style], backbone).terms(x)
    assert float(weighted["style_loss"]) == pytest.approx(float(only_first["style_loss"]),
                                                          rel=1e-6)
    assert float(equal["style_loss"]) != pytest.approx(float(weighted["style_loss"]), rel=1e-2)
    two = cfg.replace(content_layers=("block1_conv2", "block2_conv2"))
    both = pipeline.build_loss(two, content, [style], backbone).terms(x)["content_loss"]
    each = [pipeline.build_loss(two.replace(content_layers=(n,)), content, [style],
                              backbone).terms(x)["content_loss"] for n in two.content_layers]
    assert float(both) == pytest.approx(float(sum(each)) / 2, rel=1e-5)


def test_bad_control_values_are_one_line_errors(tmp_path, content_path, style_path,
                                                style2_path, capsys):
    cases = [
        (["--style_layers=block1_conv1,block5_conv4", "--model=vgg16"], "block5_conv4"),
        (["--style_blend_weights=1,2,3", f"--style_image={style_path},{style2_path}"],
         "--style_blend_weights"),
        (["--style_layer_weights=1"], "--style_layer_weights"),
        (["--preserve_colors=sepia"], "--preserve_colors"),
        (["--init=missing.png"], "--init"),
        (["--pooling=min"], "--pooling"),
        (["--scales=64,128", "--iterations=1,2,3"], "--iterations"),
        (["--scales=16"], "--scales"),
        (["--ema_decay=1"], "--ema_decay"),
        (["--style_scale=0"], "--style_scale"),
        (["--style_scale=0.2"], "style image"),
    ]
    for extra, needle in cases:
        out = tmp_path / "out"
        code = run_cli(*fast_flags(content_path, style_path, str(out), *extra))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (extra, err)
        assert needle in err[0], (extra, err)
        assert not out.exists()
    # The unknown-layer line lists the valid names of the chosen model.
    run_cli(*fast_flags(content_path, style_path, str(tmp_path / "o"), "--model=vgg16",
                    "--style_layers=block5_conv4"))
    line = capsys.readouterr().err
    assert "block5_conv3" in line and "block1_conv1" in line and "vgg16" in line


# -- multi-scale ------------------------------------------------------------

def test_multi_scale_ends_at_the_last_size_and_starts_from_the_previous_result(
        tmp_path, content_path, style_path, monkeypatch):
    calls = []
    real = pipeline.run_stage

    def spy(config, stage, inputs, start, *args, **kwargs):
        result = real(config, stage, inputs, start, *args, **kwargs)
        calls.append((stage, np.array(start), result.tensor))
        return result

    monkeypatch.setattr(pipeline, "run_stage", spy)
    out = str(tmp_path / "ms")
    assert run_cli(*fast_flags(content_path, style_path, out, "--scales=32,48",
                           "--iterations=2,3", "--optimizer=adam", "--save_every=2",
                           "--ema_decay=0.5")) == 0
    assert [c[0].rows for c in calls] == [32, 48]
    first_end = calls[0][2]
    want = tf.image.resize(first_end, (48, 64), method="bicubic").numpy()
    np.testing.assert_allclose(calls[1][1], want, rtol=1e-5, atol=1e-3)
    assert Image.open(os.path.join(out, "result.png")).size == (64, 48)
    assert Image.open(os.path.join(out, "result_at_iteration_2.png")).size == (42, 32)
    m = metrics(out)
    assert [r["iteration"] for r in m] == [1, 2, 3, 4, 5]
    assert [r["scale"] for r in m] == [32, 32, 48, 48, 48]


def test_multi_scale_warm_starts_adam(content_path, style_path, monkeypatch):
    seen = {}
    real = optim.GradientDescent.warm_start

    def spy(new, old, size):
        text = real(new, old, size)
        seen["text"] = text
        seen["step"] = int(new.optimizer.iterations.numpy())
        return text

    monkeypatch.setattr(optim.GradientDescent, "warm_start", spy)
    config = Config(content_image=content_path, style_image=style_path, **{
        **FAST, "img_nrows": 400}, scales=(32, 40), iterations=(3, 1), optimizer="adam")
    result = stylize(config, **QUIET)
    assert seen["step"] == 3 and "first moments" in seen["text"]
    assert result.image.shape == (40, 53, 3)


# -- averaging and clamping -------------------------------------------------

def test_ema_output_differs_from_the_raw_iterate_and_is_smoother(content_path, style_path):
    config = Config(content_image=content_path, style_image=style_path, **FAST,
                    iterations=12, optimizer="adam", learning_rate=20.0, init="noise",
                    style_weight=1e-4, ema_decay=0.8)
    result = stylize(config, **QUIET)
    assert result.iterate is not None
    assert np.abs(result.tensor - result.iterate).mean() > 1.0
    assert tv(result.tensor) < 0.9 * tv(result.iterate)
    plain = stylize(config.replace(ema_decay=0.0), **QUIET)
    assert plain.iterate is None
    np.testing.assert_allclose(plain.tensor, result.iterate, atol=1e-3)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_clamp_pixels_keeps_the_valid_range(content_path, style_path, optimizer):
    config = Config(content_image=content_path, style_image=style_path, **FAST,
                    iterations=4, optimizer=optimizer, learning_rate=60.0,
                    style_weight=1.0)
    low, high = vgg.pixel_bounds()
    free = stylize(config, **QUIET).tensor
    assert (free < low - 1).any() or (free > high + 1).any()
    kept = stylize(config.replace(clamp_pixels=True), **QUIET).tensor
    assert (kept >= low - 1e-3).all() and (kept <= high + 1e-3).all()


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
                          precision="mixed_bfloat16", clamp_pixels=True,
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
