"""The whole program: a run from the command line, a real SIGINT to a
subprocess, the console script."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nst_keras import cli
from nst_keras.output import checkpoint
from conftest import REPO, base_args, flags_for, run_cli
from conftest import metrics as read_metrics  # the name `metrics` is a local below


def test_three_step_run_writes_images_and_metrics(tmp_path, content_path, style_path, capsys):
    out = str(tmp_path / "out")
    code = run_cli(*base_args(content_path, style_path, out, "--iterations=3", "--log_every=1",
                          "--save_every=2", "--result_prefix=pic"))
    assert code == 0
    names = sorted(os.listdir(out))
    assert names == ["checkpoint.npz", "loss.png", "metrics.jsonl", "pic.png", "pic_at_iteration_2.png",
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


def test_real_sigint_to_the_program(tmp_path, content_path, style_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nst_keras.run",
         *flags_for(content_path, style_path, out, "--iterations=100000")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    try:
        for line in proc.stdout:
            if line.startswith("Iteration 2:"):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stopped: interrupted by SIGINT at iteration ")
    step = int(lines[0].split("at iteration ")[1].split(";")[0])
    assert step >= 2 and f"--resume={out}" in lines[0]
    assert checkpoint.load(str(out)).step == step
    assert (out / f"content_stylized_at_iteration_{step}.png").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert all(np.isfinite(m["loss"]) for m in read_metrics(out))  # whole lines only
    assert run_cli(f"--resume={out}", f"--iterations={step + 1}") == 0
    assert checkpoint.load(str(out)).step == step + 1


def test_console_script_points_at_main():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["scripts"]["nst-keras"] == "nst_keras.run:console_main"
    from nst_keras import run

    assert callable(run.console_main) and run.main.__module__ == "nst_keras.run"
