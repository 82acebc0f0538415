"""The feed-forward style network: any size in, the same size out, 0..255, and a
saved file gives the same picture."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from nst_keras.engine import network  # noqa: E402


@pytest.fixture(scope="module")
def small():
    return network.build_network(width=0.125, seed=3)


@pytest.mark.parametrize("rows,cols", [(32, 48), (30, 41)])
def test_any_size_gives_the_same_size_in_the_pixel_range(small, rows, cols):
    photo = np.random.default_rng(0).uniform(0, 255, (2, rows, cols, 3)).astype(np.float32)
    out = np.asarray(small(photo))
    assert out.shape == (2, rows, cols, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out[0] - out[1]).max() > 1.0  # the picture matters
    # Each picture of a batch is stylised alone (instance normalisation).
    assert np.abs(np.asarray(small(photo[1:])) - out[1:]).max() < 1e-3


def test_a_loaded_network_traces_once_for_pictures_of_every_size(small):
    net = network.StyleNetwork(small)
    photos = [np.random.default_rng(i).uniform(0, 255, (rows, cols, 3)).astype(np.uint8)
              for i, (rows, cols) in enumerate([(32, 48), (30, 41), (45, 20)])]
    pictures = [net(p) for p in photos]
    assert [p.shape for p in pictures] == [p.shape for p in photos]
    assert net._forward.experimental_get_tracing_count() == 1
    want = np.clip(np.round(np.asarray(small(photos[1][None].astype(np.float32)))), 0, 255)
    assert np.array_equal(pictures[1], want[0].astype(np.uint8))


def test_width_scales_the_channels_and_the_seed_fixes_the_weights():
    a, b = network.build_network(0.25, seed=1), network.build_network(0.25, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert a.get_layer("c1_conv").filters == 8
    assert network.build_network(0.5, seed=1).get_layer("c1_conv").filters == 16


def test_a_saved_network_loads_and_gives_the_same_picture(small, tmp_path):
    path = str(tmp_path / "painting.keras")
    small.save(path)
    loaded = keras.saving.load_model(path)
    assert network.is_style_network(loaded)
    photo = np.random.default_rng(1).uniform(0, 255, (1, 36, 28, 3)).astype(np.float32)
    assert np.array_equal(np.asarray(loaded(photo)), np.asarray(small(photo)))
    assert not network.is_style_network(keras.Sequential([keras.Input((4,)),
                                                          keras.layers.Dense(2)]))


def _shaken(model, seed):
    """``model`` with instance-norm scales and shifts away from 1 and 0 (a fresh
    network's would hide a mix-up of pictures' or paintings' pairs)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, network.InstanceNormalization):
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(rng.uniform(-0.5, 0.5, layer.beta.shape))
    return model


@pytest.mark.parametrize("styles", [1, 3])
def test_the_fused_normalisation_gives_the_plain_ones_pictures_and_gradients(styles):
    import tensorflow as tf

    fused = _shaken(network.build_network(0.125, seed=4, styles=styles), 5)
    plain = network.portable(fused)
    assert all(l.fused for l in fused.layers if isinstance(l, network.InstanceNormalization))
    assert not any(l.fused for l in plain.layers if isinstance(l, network.InstanceNormalization))
    photo = np.random.default_rng(2).uniform(0, 255, (3, 28, 36, 3)).astype(np.float32)
    blend = np.array([[1, 0, 0], [0.2, 0.3, 0.5], [0, 0, 1]], np.float32)
    inputs = photo if styles == 1 else [photo, blend]

    def loss_and_gradients(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(inputs, training=True) - 100.0))
        return float(loss), tape.gradient(loss, model.trainable_variables)

    (a, ga), (b, gb) = loss_and_gradients(fused), loss_and_gradients(plain)
    assert abs(a - b) <= 1e-4 * a
    out = np.asarray(fused(inputs))
    assert np.abs(out - np.asarray(plain(inputs))).max() < 0.01
    assert np.abs(out[0] - out[2]).max() > 1.0
    for v, x, y in zip(fused.trainable_variables, ga, gb):
        if "gamma" in v.path or "kernel" in v.path:  # (biases before a norm: 0 but noise)
            assert np.abs(x - y).max() <= 0.02 * np.abs(x).max() + 1e-6, v.path


def test_antialiasing_blurs_before_each_stride_and_upsamples_bilinearly(tmp_path):
    """``antialias=True``: a ``Blur`` before both stride-2 convolutions, bilinear
    upsampling, the same weights' shapes, and a file that loads as it was; a photo
    moved by one pixel moves the picture more nearly by one pixel than in the
    plain network of the same weights."""
    plain = _shaken(network.build_network(0.25, seed=6), 7)
    smooth = network.build_network(0.25, seed=6, antialias=True)
    smooth.set_weights(plain.get_weights())
    assert [l.name for l in smooth.layers if isinstance(l, network.Blur)] == ["d1_blur",
                                                                               "d2_blur"]
    assert {l.method for l in smooth.layers if isinstance(l, network.Upsample)} == {"bilinear"}
    assert {l.method for l in plain.layers if isinstance(l, network.Upsample)} == {"nearest"}
    path = str(tmp_path / "smooth.keras")
    smooth.save(path)
    photo = np.random.default_rng(3).uniform(0, 255, (1, 40, 44, 3)).astype(np.float32)
    assert np.array_equal(np.asarray(keras.saving.load_model(path)(photo)),
                          np.asarray(smooth(photo)))
    # A smooth photo (the blur of random pixels), moved by 1 pixel right.
    import scipy.ndimage

    rng = np.random.default_rng(4)
    wide = scipy.ndimage.gaussian_filter(rng.uniform(0, 255, (72, 77, 3)), (2, 2, 0))
    wide = (wide - wide.mean()) * 4 + 128
    a, b = wide[None, :, :-1].astype(np.float32), wide[None, :, 1:].astype(np.float32)

    def moved_error(model):
        pa, pb = np.asarray(model(a))[0], np.asarray(model(b))[0]
        return np.abs(pa[12:-12, 13:-12] - pb[12:-12, 12:-13]).mean()

    assert moved_error(smooth) < 0.8 * moved_error(plain)
