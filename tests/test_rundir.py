"""rundir (with checkpoint and manifest): nothing lost. Interrupt and resume,
NaN stop, atomic writes, no silent overwrite, run.json, metrics and loss.png."""

import hashlib
import json
import os
import signal
import sys

import numpy as np
import pytest
from PIL import Image

from nst_keras import settings
from nst_keras import Config
from nst_keras.errors import Interrupted, UserError
from nst_keras.output import checkpoint, manifest
from nst_keras.output.stylize import stylize
from conftest import config_for, flags_for, metrics, run_cli


def pixels(path):
    return np.asarray(Image.open(path))


def final_tensor(out):
    return checkpoint.load(str(out)).image


# -- interrupt and resume --------------------------------------------------------

@pytest.mark.parametrize("optimizer,signame", [("sgd", "SIGINT"), ("adam", "SIGTERM")])
def test_interrupt_then_resume_ends_on_the_uninterrupted_image(
        tmp_path, content_path, style_path, capsys, optimizer, signame):
    common = [f"--optimizer={optimizer}", "--iterations=6"]
    straight = tmp_path / "straight"
    assert run_cli(*flags_for(content_path, style_path, straight, *common)) == 0

    # The same run, sent a real signal while it logs iteration 3.
    resumed = tmp_path / "resumed"
    config = config_for(*flags_for(content_path, style_path, resumed, *common))

    def log(line):
        if line.startswith("Iteration 3:"):
            os.kill(os.getpid(), getattr(signal, signame))

    # What the handlers were before the run (SIG_IGN under nohup or a background shell).
    before = {name: signal.getsignal(getattr(signal, name)) for name in ("SIGINT", "SIGTERM")}
    with pytest.raises(Interrupted) as stop:
        stylize(config, log=log)
    assert stop.value.step == 3 and stop.value.signal_name == signame
    assert (resumed / "content_stylized_at_iteration_3.png").exists()
    assert not (resumed / "content_stylized.png").exists()
    assert checkpoint.load(str(resumed)).step == 3
    assert json.loads((resumed / "run.json").read_text())["status"] == "interrupted"
    assert {name: signal.getsignal(getattr(signal, name))  # handlers restored
            for name in before} == before

    # Resume with the same flags (given again, as a user re-running the command would).
    capsys.readouterr()
    assert run_cli(*flags_for(content_path, style_path, resumed, *common),
               f"--resume={resumed}") == 0
    assert "resuming from" in capsys.readouterr().out
    np.testing.assert_array_equal(final_tensor(resumed), final_tensor(straight))
    np.testing.assert_array_equal(pixels(resumed / "content_stylized.png"), pixels(straight / "content_stylized.png"))
    a, b = metrics(straight), metrics(resumed)
    assert [m["iteration"] for m in b] == [1, 2, 3, 4, 5, 6]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k != "elapsed_s"} == \
            {k: v for k, v in y.items() if k != "elapsed_s"}
    manifest_data = json.loads((resumed / "run.json").read_text())
    assert manifest_data["status"] == "finished" and manifest_data["steps"] == 6
    assert [s["first_step"] for s in manifest_data["sessions"]] == [1, 4]


def test_resume_refuses_a_changed_setting_and_takes_the_rest_from_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    saved = Config(content_image="c.png", style_image="s.png", output_dir=str(out),
                   iterations=50, style_weight=3e-4, optimizer="adam")
    checkpoint.save(str(out), checkpoint.Checkpoint(
        image=np.zeros((1, 4, 4, 3), np.float32), optimizer_state=[np.int64(7)], step=7,
        flags=settings.to_dict(saved), scale_index=1,
        extra_images={"ema": np.ones((1, 4, 4, 3), np.float32)}))
    ckpt = checkpoint.load(str(out))
    assert ckpt.scale_index == 1 and ckpt.extra_images["ema"].sum() == 48
    assert int(ckpt.optimizer_state[0]) == 7
    # Only --resume given: everything comes from the checkpoint.
    config = config_for(f"--resume={out}")
    assert (config.style_weight, config.optimizer, config.iterations) == (3e-4, "adam", 50)
    assert config.content_image == "c.png" and config.output_dir == str(out)
    # Changing the number of steps is allowed; changing the objective is not.
    assert config_for(f"--resume={out}", "--iterations=80").iterations == 80
    with pytest.raises(UserError, match="--style_weight=0.001 differs"):
        config_for(f"--resume={out}", "--style_weight=1e-3")
    with pytest.raises(UserError, match="no checkpoint.npz"):
        config_for(f"--resume={tmp_path}")
    (out / "checkpoint.npz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged"):
        config_for(f"--resume={out}")


@pytest.mark.parametrize("stop_at", [3, 4])
def test_multi_scale_with_averaging_resumes_to_the_uninterrupted_image(
        tmp_path, content_path, style_path, capsys, stop_at):
    # Scales 32 and 48 with 3 steps each: stopping at 3 is the end of the first
    # scale, at 4 inside the second (image, Adam moments and average restored).
    common = ["--optimizer=adam", "--scales=32,48", "--iterations=3", "--ema_decay=0.5"]
    straight = tmp_path / "straight"
    assert run_cli(*flags_for(content_path, style_path, straight, *common)) == 0
    resumed = tmp_path / "resumed"
    config = config_for(*flags_for(content_path, style_path, resumed, *common))

    def log(line):
        if line.startswith(f"Iteration {stop_at}:"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        stylize(config, log=log)
    ckpt = checkpoint.load(str(resumed))
    assert (ckpt.step, ckpt.scale_index) == (stop_at, 0 if stop_at == 3 else 1)
    assert "average_total" in ckpt.extra_images
    assert run_cli(*flags_for(content_path, style_path, resumed, *common),
               f"--resume={resumed}") == 0
    np.testing.assert_array_equal(final_tensor(resumed), final_tensor(straight))
    np.testing.assert_array_equal(pixels(resumed / "content_stylized.png"), pixels(straight / "content_stylized.png"))
    assert pixels(resumed / "content_stylized.png").shape[0] == 48
    assert [m["scale"] for m in metrics(resumed)] == [32, 32, 32, 48, 48, 48]


# -- NaN / Inf -------------------------------------------------------------------

def test_nan_stop_keeps_the_last_finite_image(tmp_path, content_path, style_path, capsys):
    # SGD with a huge learning rate: the loss is finite at iterations 1-4 and
    # infinite at 5 (the loss of the image after 4 updates), so the image
    # after 3 updates is the last with a finite loss.
    blow_up = ["--learning_rate=1e5", "--style_weight=1e-6"]
    out = tmp_path / "nan"
    code = run_cli(*flags_for(content_path, style_path, out, "--iterations=20", *blow_up))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "loss became inf at iteration 5" in err[0]
    assert "kept the last finite image (after 3 updates)" in err[0]
    assert str(out / "content_stylized.png") in err[0]
    ref = tmp_path / "ref"
    assert run_cli(*flags_for(content_path, style_path, ref, "--iterations=3", *blow_up)) == 0
    np.testing.assert_array_equal(pixels(out / "content_stylized.png"), pixels(ref / "content_stylized.png"))
    assert [m["iteration"] for m in metrics(out)] == [1, 2, 3, 4]  # strict JSON, finite
    data = json.loads((out / "run.json").read_text())
    assert data["status"] == "non_finite" and data["steps"] == 3
    assert "loss became inf" in data["message"]


# -- atomic writes ---------------------------------------------------------------

def test_json_and_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    manifest.write_json(str(path), {"a": 1})
    ckpt = checkpoint.Checkpoint(image=np.ones((1, 2, 2, 3), np.float32),
                                 optimizer_state=[], step=1, flags={})
    checkpoint.save(str(tmp_path), ckpt)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nst_keras.output.files.os.replace", fail)
    with pytest.raises(OSError):
        manifest.write_json(str(path), {"a": 2, "long": "x" * 10000})
    with pytest.raises(OSError):
        checkpoint.save(str(tmp_path), ckpt)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp files


def test_metrics_line_short_write_is_cut_back(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    manifest.append_json_line(str(path), {"iteration": 1, "loss": 2.0})
    before = path.read_bytes()
    real_write = os.write
    monkeypatch.setattr(manifest.os, "write", lambda fd, data: real_write(fd, data[:7]))
    with pytest.raises(OSError, match="short write"):
        manifest.append_json_line(str(path), {"iteration": 2, "loss": 1.0})
    assert path.read_bytes() == before
    monkeypatch.undo()
    manifest.append_json_line(str(path), {"iteration": 2, "loss": 1.0})
    assert [json.loads(x)["iteration"] for x in path.read_text().splitlines()] == [1, 2]


# -- no overwrite without --overwrite -----------------------------------------------

def test_existing_results_need_overwrite(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "out"
    first = flags_for(content_path, style_path, out, "--iterations=2", "--save_every=1")
    assert run_cli(*first) == 0
    names = sorted(os.listdir(out))
    assert [n for n in names if n != "loss.png"] == [
        "checkpoint.npz", "content_stylized.png", "content_stylized_at_iteration_1.png",
        "content_stylized_at_iteration_2.png", "metrics.jsonl", "run.json"]
    stamps = {n: (out / n).read_bytes() for n in names}
    capsys.readouterr()
    code = run_cli(*flags_for(content_path, style_path, out, "--iterations=1", "--seed=3"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--overwrite" in err[0] and "run.json" in err[0]
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == stamps
    # Another prefix still collides on run.json / metrics.jsonl.
    assert run_cli(*flags_for(content_path, style_path, out, "--iterations=1",
                          "--result_prefix=other")) == 2
    assert run_cli(*flags_for(content_path, style_path, out, "--iterations=1",
                          "--overwrite")) == 0
    assert sorted(n for n in os.listdir(out) if n != "loss.png") == [
        "checkpoint.npz", "content_stylized.png", "metrics.jsonl", "run.json"]  # stale snapshots
    assert [m["iteration"] for m in metrics(out)] == [1]


# -- run.json, loss.png ----------------------------------------------------------------

def test_run_json_describes_the_run(tmp_path, content_path, style_path):
    out = tmp_path / "out"
    assert run_cli(*flags_for(content_path, style_path, out, "--iterations=2")) == 0
    data = json.loads((out / "run.json").read_text())
    assert data["status"] == "finished" and data["steps"] == 2
    assert data["flags"]["iterations"] == 2 and data["flags"]["weights"] == "random"
    for name in ("python", "tensorflow", "keras", "numpy"):
        assert data["versions"][name]
    assert data["device"]["device"]
    assert data["started"] <= data["ended"]
    assert data["final_losses"]["iteration"] == 2
    assert data["final_losses"]["loss"] == pytest.approx(metrics(out)[-1]["loss"])
    want = hashlib.sha256(open(content_path, "rb").read()).hexdigest()
    assert data["content_image"]["sha256"] == want
    Image.open(out / "loss.png").verify()


def test_run_json_names_each_style_picture_with_its_hash(tmp_path, content_path, style_path,
                                                         style2_path):
    want = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (style_path, style2_path)]
    for given in (f"{style_path},{style2_path}", (style_path, style2_path)):
        config = Config(content_image=content_path, style_image=given)
        data = manifest.Manifest(str(tmp_path), config, "random").data
        assert [s["source"] for s in data["style_image"]] == [style_path, style2_path]
        assert [s["sha256"] for s in data["style_image"]] == want
    one = manifest.Manifest(str(tmp_path), Config(content_image=content_path,
                                                  style_image=style_path), "random").data
    assert one["style_image"] == {"source": style_path, "sha256": want[0]}


def test_weights_source_and_hash(tmp_path, monkeypatch):
    blob = tmp_path / "w.weights.h5"
    blob.write_bytes(b"not really weights")
    info = manifest.weights_info(Config(weights=str(blob)), "file")
    assert info["sha256"] == hashlib.sha256(b"not really weights").hexdigest()
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    cached = home / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.write_bytes(b"imagenet bytes")
    monkeypatch.setenv("KERAS_HOME", str(home))
    info = manifest.weights_info(Config(weights="imagenet"), "imagenet")
    assert info["path"] == str(cached)
    assert info["sha256"] == hashlib.sha256(b"imagenet bytes").hexdigest()


def test_loss_plot_needs_logged_steps(tmp_path):
    weights = {"content_loss": 1.0, "style_loss": 1.0, "tv_loss": 1.0}
    note = manifest.plot_losses(str(tmp_path / "loss.png"), [], weights)
    assert "no logged steps" in note and "--log_every" in note
    assert not (tmp_path / "loss.png").exists()


def test_run_json_records_the_precision_auto_chose_and_the_threads(
        tmp_path, content_path, style_path, monkeypatch):
    from nst_keras.engine import hardware
    from nst_keras.output import precision_cache
    from nst_keras.output.stylize import stylize as run_stylize

    monkeypatch.delenv(hardware.PIN_VARIABLE, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # a fresh precision cache
    out = tmp_path / "run"
    lines = []
    run_stylize(Config(content_image=content_path, style_image=style_path, weights="random",
                       img_nrows=48, iterations=2, log_every=1, save_every=0,
                       content_layers=("block2_conv2",), style_layers=("block1_conv1",),
                       output_dir=str(out)), log=lines.append)
    manifest_data = json.loads((out / "run.json").read_text())
    device = manifest_data["device"]
    # answered from the cache file the run wrote
    want, _ = hardware.auto_precision(store=precision_cache.PrecisionCache())
    assert device["precision_requested"] == "auto" == manifest_data["flags"]["precision"]
    assert device["precision"] == want and want in hardware.PRECISIONS
    assert device["threads"] >= 1 and device["precision_reason"]
    assert f"{want} (auto: " in lines[0]
