"""The command line: flags, flagfiles, outputs, weights resolution."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from nst_keras import cli
from nst_keras.vgg import load_backbone
from conftest import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_args(content_path, style_path, out, *extra):
    return [
        f"--content_image={content_path}",
        f"--style_image={style_path}",
        f"--output_dir={out}",
        "--weights=random",
        "--img_nrows=48",
        *extra,
    ]


def read_metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_three_step_run_writes_images_and_metrics(tmp_path, content_path, style_path, capsys):
    out = str(tmp_path / "out")
    code = run_cli(*base_args(content_path, style_path, out, "--iterations=3", "--log_every=1",
                          "--save_every=2", "--result_prefix=pic"))
    assert code == 0
    names = sorted(n for n in os.listdir(out) if n != "loss.png")  # loss.png needs matplotlib
    assert names == ["checkpoint.npz", "metrics.jsonl", "pic.png", "pic_at_iteration_2.png",
                     "run.json"]
    for name in ("pic.png", "pic_at_iteration_2.png"):
        img = Image.open(os.path.join(out, name))
        assert img.mode == "RGB" and img.size == (64, 48)
    metrics = read_metrics(out)
    assert [m["iteration"] for m in metrics] == [1, 2, 3]
    loss = [m["loss"] for m in metrics]
    assert loss[0] > loss[1] > loss[2]
    assert set(metrics[0]) >= {"loss", "content_loss", "style_loss", "tv_loss", "elapsed_s"}
    assert "Iteration 3: loss=" in capsys.readouterr().out


def test_command_line_overrides_flagfile(tmp_path, content_path, style_path):
    flagfile = tmp_path / "x.cfg"
    flagfile.write_text("--iterations=7\n--result_prefix=fromfile\n--img_nrows=300\n")
    cli.parse(["prog", f"--flagfile={flagfile}", "--img_nrows=64",
               f"--content_image={content_path}", f"--style_image={style_path}"])
    config = cli.config_from_flags()
    assert config.iterations == 7 and config.result_prefix == "fromfile"
    assert config.img_nrows == 64
    cli.parse(["prog", f"--content_image={content_path}", f"--style_image={style_path}"])
    assert cli.config_from_flags().iterations == 4000  # nothing leaks between parses


def test_default_cfg_holds_the_tutorial_values():
    cli.parse(["prog", f"--flagfile={os.path.join(REPO, 'configs', 'default.cfg')}"])
    c = cli.config_from_flags()
    assert c.content_image == "https://i.imgur.com/F28w3Ac.jpg"
    assert c.style_image == "https://i.imgur.com/9ooB60I.jpg"
    assert (c.img_nrows, c.iterations, c.interpolation) == (400, 4000, "nearest")
    assert (c.content_weight, c.style_weight, c.total_variation_weight) == (2.5e-8, 1e-6, 1e-6)
    assert c.content_layers == ("block5_conv2",)
    assert c.style_layers == tuple(f"block{i}_conv1" for i in range(1, 6))
    assert (c.optimizer, c.resolved_learning_rate(), c.decay_steps, c.decay_rate) == (
        "sgd", 100.0, 100, 0.96)
    assert c.deprocess_mean == (103.939, 116.779, 123.68)
    assert (c.save_every, c.weights, c.model, c.precision) == (100, "imagenet", "vgg19", "float32")


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
    losses = {}
    for name, extra in [("file", [f"--weights={path}"]), ("seed11", ["--seed=11"]),
                        ("seed0", ["--seed=0"])]:
        out = str(tmp_path / name)
        assert run_cli(*base_args(content_path, style_path, out, "--iterations=1", "--log_every=1",
                              "--save_every=0", "--style_weight=1", *extra)) == 0
        losses[name] = read_metrics(out)[0]["style_loss"]
    assert losses["file"] == pytest.approx(losses["seed11"], rel=1e-6)
    assert losses["file"] != pytest.approx(losses["seed0"], rel=1e-2)


def assert_one_line_error(code, capsys, *needles):
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_missing_weights_file_is_one_line(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "out"
    code = run_cli(*base_args(content_path, style_path, str(out), "--iterations=1",
                          f"--weights={tmp_path / 'missing.h5'}"))
    assert_one_line_error(code, capsys, "missing.h5", "--weights")
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
    assert_one_line_error(code, capsys, "--weights=PATH",
                          "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert not out.exists()


def test_bad_flag_values_are_one_line(tmp_path, content_path, style_path, capsys):
    for extra, needle in [("--optimizer=rmsprop", "--optimizer"),
                          ("--precision=float8", "--precision"),
                          ("--iterations=0", "--iterations"),
                          ("--style_weight=-1", "--style_weight"),
                          ("--content_layers=block9_conv9", "block9_conv9"),
                          ("--no_such_flag=1", "no_such_flag")]:
        out = tmp_path / "out"
        code = run_cli(*base_args(content_path, style_path, str(out), extra))
        assert_one_line_error(code, capsys, needle)
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
