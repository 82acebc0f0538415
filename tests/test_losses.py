"""The package's objective equals an independent transcription of keras.io."""

import numpy as np
import pytest
import tensorflow as tf

from nst_keras import Config, objective, stylize, vgg
from nst_keras.pipeline import build_loss
import keras_io_reference as ref
from conftest import ROWS, COLS




WEIGHTS = [
    dict(content_weight=2.5e-8, style_weight=1e-6, total_variation_weight=1e-6),
    dict(content_weight=1.0, style_weight=0.0, total_variation_weight=0.0),
    dict(content_weight=0.0, style_weight=1.0, total_variation_weight=0.0),
    dict(content_weight=0.0, style_weight=0.0, total_variation_weight=1.0),
]


@pytest.mark.parametrize("w", WEIGHTS)
def test_objective_and_gradient_equal_keras_io(backbone, pictures, w):
    content, style = pictures
    base = vgg.preprocess_image(content)
    style_ref = vgg.preprocess_image(style)
    rng = np.random.default_rng(0)
    combination = (base + rng.normal(0, 20, base.shape)).astype(np.float32)

    reference = ref.make_loss(backbone, ROWS, COLS, **w)
    want_loss, want_grad = reference(
        tf.constant(combination), tf.constant(base), tf.constant(style_ref)
    )
    config = Config(content_image="c", style_image="s", weights="random", seed=3, **w)
    module = build_loss(config, content, [style], backbone)
    terms, grad = module.value_and_grad(tf.constant(combination))
    got, want = float(terms["loss"]), float(want_loss)
    assert want > 0
    assert got == pytest.approx(want, rel=1e-5)
    g, wg = grad.numpy(), want_grad.numpy()
    assert np.abs(wg).max() > 0
    assert np.linalg.norm(g - wg) <= 1e-5 * np.linalg.norm(wg) * 10  # summation order
    np.testing.assert_allclose(g, wg, rtol=1e-3, atol=1e-5 * np.abs(wg).max())


def test_separate_terms_are_the_keras_io_functions(pictures):
    content, _ = pictures
    x = tf.constant(vgg.preprocess_image(content))
    y = x + 1.0
    assert float(objective.content_loss(x, y)) == pytest.approx(ROWS * COLS * 3)
    assert float(objective.total_variation_loss(y)) == pytest.approx(
        float(objective.total_variation_loss(x)), rel=1e-6
    )
    f = tf.reshape(tf.range(12, dtype=tf.float32), (2, 2, 3))
    g = objective.gram_matrix(f).numpy()
    flat = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(g, flat.T @ flat)
    assert float(objective.style_loss(tf.constant(flat.T @ flat), f, 2, 2)) == 0.0


def test_engine_sgd_losses_equal_keras_io_loop_steps_1_to_5(backbone, pictures):
    content, style = pictures
    want, want_image = ref.run_sgd(
        backbone, vgg.preprocess_image(content), vgg.preprocess_image(style), 5
    )
    # Style-heavy weights so that all three terms move the image.
    result = stylize(
        Config(content_image="c", style_image="s", weights="random", seed=3,
               img_nrows=ROWS, iterations=5, log_every=1, save_every=0),
        content=content, style=style, log=lambda s: None,
    )
    got = np.array([h["loss"] for h in result.history])
    assert [h["iteration"] for h in result.history] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert got[-1] < got[0]
    np.testing.assert_allclose(result.tensor, want_image, rtol=0, atol=1e-2)
