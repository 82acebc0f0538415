"""Bad input gives one line and exit 2, writes nothing; odd but valid images just work."""

import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture
from nst_keras import cli, imaging, memory
from nst_keras import Config
from nst_keras.errors import UserError
from conftest import run_cli


def args_for(content, style, out, *extra):
    return [f"--content_image={content}", f"--style_image={style}", f"--output_dir={out}",
            "--weights=random", "--img_nrows=48", "--iterations=2", "--save_every=0",
            "--log_every=0", *extra]


def one_line_error(code, capsys, *needles):
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.fixture
def workdir(tmp_path):
    """A directory holding only what the test puts there (plus the output target)."""
    return tmp_path


def assert_nothing_written(workdir, before):
    assert sorted(os.listdir(workdir)) == sorted(before)


def run_bad(workdir, capsys, content, style, *extra, out_name="out", needles=()):
    before = os.listdir(workdir)
    out = workdir / out_name
    code = run_cli(*args_for(content, style, out, *extra))
    line = one_line_error(code, capsys, *needles)
    assert_nothing_written(workdir, before)
    return line


# -- one test per bad input ----------------------------------------------------

def test_missing_file(workdir, style_path, capsys):
    run_bad(workdir, capsys, workdir / "nope.jpg", style_path,
            needles=("nope.jpg", "does not exist"))


def test_not_an_image(workdir, style_path, capsys):
    fake = workdir / "notes.jpg"
    fake.write_text("this is a text file, not a JPEG\n")
    run_bad(workdir, capsys, fake, style_path, needles=("notes.jpg", "not an image"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(workdir, style_path, capsys, fmt):
    buf = io.BytesIO()
    Image.fromarray(make_picture(120, 160, 4)).save(buf, format=fmt)
    cut = workdir / f"cut.{fmt.lower()}"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    run_bad(workdir, capsys, cut, style_path,
            needles=(cut.name, "truncated or damaged"))


def test_unreachable_url(workdir, content_path, capsys):
    url = "http://127.0.0.1:9/style.jpg"  # nothing listens on the discard port
    run_bad(workdir, capsys, content_path, url, needles=(url, "could not download"))


def test_image_too_small_for_the_network(workdir, style_path, capsys):
    line = run_bad(workdir, capsys, style_path, style_path, "--img_nrows=20",
                   needles=("20x", "at least 32", "--img_nrows"))
    assert "content image" in line


def test_elongated_image_too_narrow(workdir, style_path, capsys):
    thin = workdir / "thin.png"
    Image.fromarray(make_picture(200, 20, 3)).save(thin)  # 48 rows -> 4 columns
    run_bad(workdir, capsys, thin, style_path, needles=("thin.png", "48x4", "at least 32"))


def test_memory_estimate_too_large(workdir, content_path, style_path, capsys):
    line = run_bad(workdir, capsys, content_path, style_path, "--img_nrows=60000",
                   needles=("60000x80000", "GiB", "--img_nrows", "--scales",
                            "--nocheck_memory"))
    fits = int(re.search(r"about (\d+) fits", line).group(1))
    assert 32 <= fits < 60000


def test_memory_check_suggests_a_size_that_fits(monkeypatch):
    have = 3 * 2**30
    monkeypatch.setattr(memory, "available_bytes", lambda: (have, "available memory"))
    config = Config(content_image="c", style_image="s")
    memory.check(400, 600, config)  # fits
    with pytest.raises(UserError) as e:
        memory.check(4000, 6000, config)
    fits = int(re.search(r"about (\d+) fits", str(e.value)).group(1))
    layers = list(config.content_layers) + list(config.style_layers)
    assert memory.estimate_bytes(fits, int(fits * 1.5), "vgg19", layers) <= have
    assert memory.estimate_bytes(fits + 64, int((fits + 64) * 1.5), "vgg19", layers) > have
    memory.check(4000, 6000, config.replace(check_memory=False))  # the escape hatch


def test_memory_estimate_matches_measurement():
    # Peak RSS measured on CPU grew 0.42 GB from 200x300 to 400x600 (memory.py).
    layers = ("block5_conv2",) + tuple(f"block{i}_conv1" for i in range(1, 6))
    grow = memory.estimate_bytes(400, 600, "vgg19", layers) - memory.estimate_bytes(
        200, 300, "vgg19", layers)
    assert 0.42e9 <= grow <= 0.42e9 * 1.6


def test_unknown_layer_lists_valid_names(workdir, content_path, style_path, capsys):
    run_bad(workdir, capsys, content_path, style_path, "--style_layers=block1_conv1,conv9",
            needles=("'conv9'", "block1_conv1, block1_conv2", "block5_conv4"))


@pytest.mark.parametrize("flag", [
    "--iterations=0", "--iterations=-3", "--img_nrows=0", "--img_nrows=-48",
    "--content_weight=-1", "--style_weight=-0.5", "--total_variation_weight=-1",
    "--learning_rate=0", "--learning_rate=-2",
])
def test_zero_or_negative_values(workdir, content_path, style_path, capsys, flag):
    line = run_bad(workdir, capsys, content_path, style_path, flag, needles=(flag,))
    assert "must be" in line


@pytest.mark.parametrize("flag", ["--optimizer=rmsprop", "--precision=float8"])
def test_unknown_optimizer_or_precision(workdir, content_path, style_path, capsys, flag):
    name, value = flag.split("=")
    run_bad(workdir, capsys, content_path, style_path, flag,
            needles=(name, repr(value), "use one of"))


def test_missing_flagfile(workdir, capsys):
    before = os.listdir(workdir)
    code = run_cli(f"--flagfile={workdir / 'missing.cfg'}", f"--output_dir={workdir / 'out'}")
    one_line_error(code, capsys, "missing.cfg", "--flagfile")
    assert_nothing_written(workdir, before)


def test_output_dir_cannot_be_created(workdir, content_path, style_path, capsys):
    blocker = workdir / "a_file"
    blocker.write_text("x")
    run_bad(workdir, capsys, content_path, style_path, out_name="a_file/out",
            needles=("a_file", "--output_dir"))
    run_bad(workdir, capsys, content_path, style_path, out_name="a_file",
            needles=("a_file", "is a file", "--output_dir"))


def test_output_dir_not_writable(workdir, content_path, style_path, capsys, monkeypatch):
    # As root every directory is writable, so report a read-only one through os.access.
    locked = workdir / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p) == str(locked)
                        else real_access(p, m, **k))
    run_bad(workdir, capsys, content_path, style_path, out_name="locked/out",
            needles=("locked", "not a writable directory", "--output_dir"))


def test_input_inside_output_dir_is_never_overwritten(tmp_path, style_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victim = out / "result.png"
    Image.fromarray(make_picture(48, 64)).save(victim)
    before = victim.read_bytes()
    code = run_cli(*args_for(victim, style_path, out, "--overwrite"))
    one_line_error(code, capsys, "--content_image", "would be overwritten")
    assert victim.read_bytes() == before and os.listdir(out) == ["result.png"]


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
               "--log_every=0", "--result_prefix=odd")
    assert code == 0, capsys.readouterr().err
    result = Image.open(out / "odd.png")
    assert result.mode == "RGB" and result.size == (48, 36)  # width int(64 * 36 / 48)
