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
