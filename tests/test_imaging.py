"""imaging: opening (odd formats), resizing, colour transforms (saving: tests/test_files.py)."""

import numpy as np
import pytest
from PIL import Image

from nst_keras import Config
from nst_keras.engine import imaging, pipeline
from nst_keras.errors import UserError
from conftest import FAST, make_picture, run_cli


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


# -- odd but valid images ------------------------------------------------------

def _blocks(rows=48, cols=64):
    """Flat colour blocks: survive GIF palettes and lossless WebP exactly."""
    pic = np.zeros((rows, cols, 3), np.uint8)
    pic[: rows // 2, : cols // 2] = (200, 30, 40)
    pic[: rows // 2, cols // 2:] = (20, 180, 60)
    pic[rows // 2:, : cols // 2] = (30, 40, 220)
    pic[rows // 2:, cols // 2:] = (250, 240, 10)
    return pic


def _odd_image(kind, d):
    """Writes an odd image; returns (path, expected RGB picture, tolerance)."""
    pic = make_picture(48, 64, 6)
    if kind == "grayscale":
        gray = pic[..., 1]
        Image.fromarray(gray, "L").save(d / "g.png")
        return d / "g.png", np.stack([gray] * 3, -1), 0
    if kind == "rgba":
        alpha = np.full((48, 64), 255, np.uint8)
        alpha[:, :32] = 0  # left half transparent -> white
        Image.fromarray(np.dstack([pic, alpha]), "RGBA").save(d / "a.png")
        want = pic.copy()
        want[:, :32] = 255
        return d / "a.png", want, 0
    if kind == "palette":
        img = Image.fromarray(_blocks()).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
        img.save(d / "p.png")
        return d / "p.png", _blocks(), 0
    if kind == "16bit":
        gray = pic[..., 0]
        Image.fromarray(gray.astype(np.uint16) * 257).save(d / "i16.png")
        assert Image.open(d / "i16.png").mode.startswith("I")
        return d / "i16.png", np.stack([gray] * 3, -1), 0
    if kind == "cmyk":
        Image.fromarray(_blocks()).convert("CMYK").save(d / "c.jpg", quality=98)
        assert Image.open(d / "c.jpg").mode == "CMYK"
        return d / "c.jpg", _blocks(), 12
    if kind == "exif_rotated":
        stored = np.ascontiguousarray(np.rot90(_blocks(), k=1))  # 64 rows x 48 cols
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 clockwise to display
        Image.fromarray(stored).save(d / "r.jpg", exif=exif, quality=98)
        return d / "r.jpg", _blocks(), 12
    if kind in ("gif", "webp"):
        first, second = _blocks(), 255 - _blocks()
        frames = [Image.fromarray(first), Image.fromarray(second)]
        path = d / f"anim.{kind}"
        extra = {"lossless": True} if kind == "webp" else {}
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0,
                       **extra)
        assert getattr(Image.open(path), "n_frames", 1) == 2
        return path, first, 0
    raise ValueError(kind)


ODD_KINDS = ["grayscale", "rgba", "palette", "16bit", "cmyk", "exif_rotated", "gif", "webp"]


@pytest.mark.parametrize("kind", ODD_KINDS)
def test_odd_image_runs_as_rgb_of_the_right_size(tmp_path, kind, capsys):
    path, want, tol = _odd_image(kind, tmp_path)
    got = imaging.load_image(str(path))
    assert got.dtype == np.uint8 and got.shape == (48, 64, 3)  # upright, RGB
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.mean() <= tol / 3 and np.percentile(diff, 90) <= tol, diff.max()
    out = tmp_path / "out"
    code = run_cli(f"--content_image={path}", f"--style_image={path}", f"--output_dir={out}",
               "--weights=random", "--img_nrows=36", "--iterations=1", "--save_every=0",
               "--log_every=0", "--result_prefix=odd", "--content_layers=block1_conv2",
               "--style_layers=block1_conv1")  # one block: the picture is what is tested
    assert code == 0, capsys.readouterr().err
    result = Image.open(out / "odd.png")
    assert result.mode == "RGB" and result.size == (48, 36)  # width int(64 * 36 / 48)


# -- colour transforms ---------------------------------------------------------

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
