"""Bad input gives one line and exit 2, writes nothing."""

import io
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO, base_args, fast_flags, make_picture, run_cli, tiny


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
    code = run_cli(*args_for(victim, style_path, out, "--overwrite", "--result_prefix=result"))
    one_line_error(code, capsys, "--content_image", "would be overwritten")
    assert victim.read_bytes() == before and os.listdir(out) == ["result.png"]


# -- weights -------------------------------------------------------------------

def test_missing_weights_file_is_one_line(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "out"
    code = run_cli(*base_args(content_path, style_path, str(out), "--iterations=1",
                          f"--weights={tmp_path / 'missing.h5'}"))
    one_line_error(code, capsys, "missing.h5", "--weights")
    assert not out.exists()


def test_imagenet_download_failure_names_the_fixes(tmp_path, content_path, style_path,
                                                  capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    import keras.src.utils.file_utils as file_utils
    import keras.src.applications.vgg19 as vgg19_module

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setattr(vgg19_module.file_utils, "get_file", offline, raising=False)
    out = tmp_path / "out"
    args = base_args(content_path, style_path, str(out), "--iterations=1")
    args = [a for a in args if not a.startswith("--weights")] + ["--weights=imagenet"]
    code = run_cli(*args)
    one_line_error(code, capsys, "--weights=PATH",
                          "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert not out.exists()


# -- flag values ---------------------------------------------------------------

def test_bad_flag_values_are_one_line(tmp_path, content_path, style_path, capsys):
    for extra, needle in [("--optimizer=rmsprop", "--optimizer"),
                          ("--precision=float8", "--precision"),
                          ("--iterations=0", "--iterations"),
                          ("--style_weight=-1", "--style_weight"),
                          ("--content_layers=block9_conv9", "block9_conv9"),
                          ("--no_such_flag=1", "no_such_flag")]:
        out = tmp_path / "out"
        code = run_cli(*base_args(content_path, style_path, str(out), extra))
        one_line_error(code, capsys, needle)
        assert not out.exists()


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


@pytest.mark.parametrize("extra, words", [
    (["--experiment=deprocess_offsets", "--deprocess_offsets=1,2;3,4,5"], "deprocess_offsets"),
    (["--experiment=fig1"], "--experiment"),
    (["--experiment=reconstruct_content", "--reconstruct_layers=block9_conv9"], "block9_conv9"),
    (["--experiment=tradeoff", "--tradeoff_ratios=1,-2"], "tradeoff_ratios"),
    (["--experiment=tradeoff", "--content_weight=0"], "content_weight"),
])
def test_bad_experiment_settings_are_one_line_errors(tmp_path, content_path, style_path,
                                                     capsys, extra, words):
    out = tmp_path / "out"
    assert run_cli(*tiny(content_path, style_path, str(out), "--iterations=2", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err
    assert not out.exists()


def test_subprocess_error_is_a_single_stderr_line(tmp_path, style_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nst_keras.run", f"--content_image={tmp_path / 'none.jpg'}",
         f"--style_image={style_path}", "--weights=random", f"--output_dir={tmp_path / 'o'}"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: image '{tmp_path / 'none.jpg'}' does not exist; check the path"
    ]
    assert not (tmp_path / "o").exists()
