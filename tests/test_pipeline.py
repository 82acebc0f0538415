"""pipeline: stylize in memory and its stages: several styles, colours, style
scale, the initial image, multi-scale."""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from nst_keras import Config, stylize
from nst_keras.engine import imaging, objective, pipeline, vgg
from conftest import FAST, QUIET, fast_flags, make_picture, metrics, run_cli


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
        want = 0.75 * one.term("style_loss").targets[k].numpy() + 0.25 * two.term("style_loss").targets[k].numpy()
        np.testing.assert_allclose(blended.term("style_loss").targets[k].numpy(), want, rtol=1e-5)


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
        targets[scale] = {k: v.numpy() for k, v in loss.term("style_loss").targets.items()}
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
        norms.append(np.linalg.norm(loss.term("style_loss").targets["block1_conv1"].numpy()))
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
    assert Image.open(os.path.join(out, "content_stylized.png")).size == (64, 48)
    assert Image.open(os.path.join(out, "content_stylized_at_iteration_2.png")).size == (42, 32)
    m = metrics(out)
    assert [r["iteration"] for r in m] == [1, 2, 3, 4, 5]
    assert [r["scale"] for r in m] == [32, 32, 48, 48, 48]
