"""vgg: pre/deprocessing, weights loading, the feature extractor (pooling,
padding), VGG16."""

import functools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from nst_keras import cli
from nst_keras import run
from nst_keras.engine import vgg
from nst_keras.engine.vgg import load_backbone
from conftest import base_args, make_picture, metrics, run_cli


def test_preprocess_deprocess_round_trip_is_exact():
    pic = np.arange(48 * 64 * 3, dtype=np.int64).reshape(48, 64, 3) % 256
    pic = pic.astype(np.uint8)
    back = vgg.deprocess_image(vgg.preprocess_image(pic))
    assert back.dtype == np.uint8 and back.shape == (48, 64, 3)
    np.testing.assert_array_equal(back, pic)


def test_preprocess_matches_keras_vgg19_preprocess_input():
    import keras

    pic = make_picture(20, 30)
    ours = vgg.preprocess_image(pic)
    theirs = keras.applications.vgg19.preprocess_input(pic[None].astype("float32"))
    assert ours.shape == (1, 20, 30, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    # BGR order: channel 0 is blue minus 103.939.
    np.testing.assert_allclose(ours[0, ..., 0], pic[..., 2] - 103.939, atol=1e-4)


def test_deprocess_uses_the_given_offsets():
    x = np.zeros((1, 4, 5, 3), np.float32)
    out = vgg.deprocess_image(x, mean=(10.0, 20.0, 30.0))
    # Offsets are B, G, R; the output is RGB.
    assert out[0, 0].tolist() == [30, 20, 10]
    out = vgg.deprocess_image(x - 50, mean=(10.0, 20.0, 300.0))
    assert out[0, 0].tolist() == [250, 0, 0]  # clipped to 0..255


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5"])
def test_weights_file_loads_and_changes_the_loss(tmp_path, content_path, style_path, suffix):
    backbone = load_backbone("vgg19", "random", seed=11)[0]
    path = str(tmp_path / f"vgg19{suffix}")
    if suffix == ".weights.h5":
        backbone.save_weights(path)
    else:  # the legacy layout keras.io downloads
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, backbone)
    losses = {"file": _first_style_loss(content_path, style_path, str(tmp_path / "file"),
                                        f"--weights={path}")}
    losses.update(_seeded_losses(content_path, style_path, str(tmp_path.parent / "seeded")))
    assert losses["file"] == pytest.approx(losses["seed11"], rel=1e-6)
    assert losses["file"] != pytest.approx(losses["seed0"], rel=1e-2)


def _first_style_loss(content_path, style_path, out, *extra):
    assert run_cli(*base_args(content_path, style_path, out, "--iterations=1", "--log_every=1",
                              "--save_every=0", "--style_weight=1", "--content_layers=block2_conv2",
                              "--style_layers=block1_conv1,block2_conv1", *extra)) == 0
    return metrics(out)[0]["style_loss"]


@functools.lru_cache(maxsize=1)
def _seeded_losses(content_path, style_path, out):
    """The random-weight runs both weight files are compared with (run once)."""
    return {name: _first_style_loss(content_path, style_path, f"{out}_{name}", f"--seed={seed}")
            for name, seed in (("seed11", 11), ("seed0", 0))}


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


def test_an_extractor_asked_for_again_is_the_one_already_built(backbone):
    """The same backbone, layers, precision, pooling and padding: the same model;
    any of them changed, or under a distribution strategy: another; the oldest
    is forgotten past ``KEPT_EXTRACTORS``."""
    vgg._kept_extractor.cache_clear()
    names = ["block1_conv1", "block2_conv1"]
    first = vgg.build_extractor(backbone, names)
    assert vgg.build_extractor(backbone, names + ["block1_conv1"]) is first
    others = [vgg.build_extractor(backbone, ["block1_conv1"]),
              vgg.build_extractor(backbone, names, precision="mixed_bfloat16"),
              vgg.build_extractor(backbone, names, pooling="avg"),
              vgg.build_extractor(backbone, names, padding="replicate")]
    assert all(o is not first for o in others) and len({id(o) for o in others}) == 4
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert vgg.build_extractor(backbone, names) is not first
    assert vgg.build_extractor(backbone, names) is not first  # five kept: first was dropped
    x = tf.constant(vgg.preprocess_image(make_picture(24, 32)))
    np.testing.assert_array_equal(vgg.features(first, x)["block2_conv1"],
                                  vgg.build_extractor(backbone, names)(x)["block2_conv1"])


@pytest.mark.parametrize("precision,pooling,padding", [
    ("float32", "max", "zero"), ("float32", "avg", "replicate"),
    ("mixed_bfloat16", "max", "replicate"), ("mixed_float16", "avg", "zero")])
def test_features_are_the_keras_models_values_and_gradients_bit_for_bit(
        backbone, precision, pooling, padding):
    names = ["block1_conv1", "block2_conv2", "block3_conv1"]
    extractor = vgg.build_extractor(backbone, names, precision, pooling, padding)
    x = tf.constant(vgg.preprocess_image(make_picture(24, 32)))

    def value_and_grad(call):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = call(x)
            loss = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                             for v in out.values()])
        return out, tape.gradient(loss, x)

    want, want_grad = value_and_grad(lambda image: extractor(image, training=False))
    got, grad = value_and_grad(lambda image: vgg.features(extractor, image))
    assert sorted(got) == names
    for name in names:
        assert got[name].dtype == want[name].dtype == extractor.get_layer(name).compute_dtype
        np.testing.assert_array_equal(tf.cast(got[name], tf.float32),
                                      tf.cast(want[name], tf.float32))
    np.testing.assert_array_equal(grad, want_grad)
    assert float(tf.reduce_max(tf.abs(want_grad))) > 0
    # A model of another making is called as it is.
    import keras

    other = keras.Model(extractor.input, {"only": extractor.output["block1_conv1"]})
    assert list(vgg.features(other, x)) == ["only"]


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


def test_model_vgg16_runs_from_the_command_line(tmp_path, content_path, style_path):
    out = str(tmp_path / "out")
    code = run.main(["nst_keras.run", f"--content_image={content_path}",
                     f"--style_image={style_path}", f"--output_dir={out}", "--weights=random",
                     "--img_nrows=48", "--model=vgg16", "--iterations=3", "--log_every=1",
                     "--save_every=0", "--content_layers=block4_conv2",
                     "--precision=mixed_bfloat16"])
    assert code == 0
    assert {"metrics.jsonl", "content_stylized.png"} <= set(os.listdir(out))
    with open(os.path.join(out, "metrics.jsonl")) as f:
        losses = [json.loads(line)["loss"] for line in f]
    assert len(losses) == 3 and losses[2] < losses[0]
    backbone = load_backbone("vgg16", "random", 0)[0]
    assert "block5_conv4" not in [layer.name for layer in backbone.layers]
