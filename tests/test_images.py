import numpy as np
import pytest
from PIL import Image

from nst_keras import imaging, vgg
from nst_keras.errors import UserError
from conftest import make_picture


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


def test_load_image_matches_keras_load_img_nearest(tmp_path):
    import keras

    pic = make_picture(61, 83, 3)
    path = str(tmp_path / "x.png")
    Image.fromarray(pic).save(path)
    width, height = keras.utils.load_img(path).size
    rows, cols = imaging.target_size(width, height, 40)
    assert (rows, cols) == (40, int(width * 40 / height))
    ours = imaging.load_image(path, (rows, cols))
    theirs = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(rows, cols)))
    np.testing.assert_array_equal(ours, theirs.astype(np.uint8))
    smooth = imaging.load_image(path, (rows, cols), interpolation="lanczos")
    assert smooth.shape == ours.shape and not np.array_equal(smooth, ours)


def test_missing_image_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        imaging.load_image(str(tmp_path / "nope.jpg"))


def test_save_image_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.png"
    imaging.save_image(str(path), make_picture(10, 12))
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("nst_keras.imaging.os.replace", broken)
    with pytest.raises(OSError):
        imaging.save_image(str(path), make_picture(10, 12, 5))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
