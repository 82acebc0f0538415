"""The in-memory pipeline's callbacks: progress at every step, stopping, and
the run directory built on them."""

import json

import numpy as np
import pytest
from PIL import Image

from nst_keras import Config, stylize
from nst_keras.engine.callbacks import Callback
from nst_keras.output import checkpoint

QUIET = dict(log=lambda line: None)


def settings_for(content_path, style_path, **kw):
    base = dict(content_image=content_path, style_image=style_path, weights="random",
                img_nrows=48, iterations=6, log_every=2, save_every=0, style_weight=1e-4,
                optimizer="adam", content_layers=("block2_conv2",),
                style_layers=("block1_conv1", "block2_conv1"))  # shallow: a small network
    return Config(**{**base, **kw})


class Recorder(Callback):
    def __init__(self, stop_at=None, pictures=False):
        self.stop_at, self.want_pictures = stop_at, pictures
        self.events, self.progress, self.pictures = [], [], []
        self.outcome = None

    def on_start(self, run):
        self.events.append(("start", run.step, len(run.stages)))

    def on_step(self, progress):
        self.events.append(("step", progress.step))
        self.progress.append(progress)
        if self.want_pictures:
            self.pictures.append(progress.picture())
        if progress.step == self.stop_at:
            progress.stop("enough")

    def on_end(self, run, outcome):
        self.events.append(("end", outcome.status))
        self.outcome = outcome


def test_every_step_reaches_the_callback_with_its_losses(content_path, style_path):
    rec = Recorder(pictures=True)
    result = stylize(settings_for(content_path, style_path), callbacks=[rec], **QUIET)
    assert rec.events == [("start", 0, 1)] + [("step", i) for i in range(1, 7)] + \
        [("end", "finished")]
    assert [p.total_steps for p in rec.progress] == [6] * 6
    assert all(p.size == (48, 64) and p.scale_index == 0 for p in rec.progress)
    # Logged steps carry the history record, with the same losses.
    logged = [p for p in rec.progress if p.record is not None]
    assert [p.step for p in logged] == [2, 4, 6] == [r["iteration"] for r in result.history]
    for p, r in zip(logged, result.history):
        assert p.losses == {k: r[k] for k in ("loss", "content_loss", "style_loss", "tv_loss")}
    # The losses fall and the last picture is the result.
    assert rec.progress[-1].losses["loss"] < rec.progress[0].losses["loss"]
    np.testing.assert_array_equal(rec.pictures[-1], result.image)
    assert not np.array_equal(rec.pictures[0], rec.pictures[-1])
    np.testing.assert_array_equal(rec.outcome.tensor, result.tensor)
    assert result.status == "finished" and result.paths == []


def test_a_callback_stops_the_run_and_the_picture_is_kept(content_path, style_path):
    straight = Recorder(pictures=True)
    stylize(settings_for(content_path, style_path), callbacks=[straight], **QUIET)
    rec = Recorder(stop_at=3)
    result = stylize(settings_for(content_path, style_path), callbacks=[rec], **QUIET)
    assert result.status == "stopped" and rec.outcome.reason == "enough"
    assert rec.events[-2:] == [("step", 3), ("end", "stopped")]
    np.testing.assert_array_equal(result.image, straight.pictures[2])  # after 3 updates
    assert [r["iteration"] for r in result.history] == [2]


def test_a_stopped_run_directory_resumes_to_the_uninterrupted_image(
        tmp_path, content_path, style_path):
    stylize(settings_for(content_path, style_path, output_dir=str(tmp_path / "straight")),
            **QUIET)
    out = tmp_path / "stopped"
    result = stylize(settings_for(content_path, style_path, output_dir=str(out)),
                     callbacks=[Recorder(stop_at=3)], **QUIET)
    assert result.status == "stopped"
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.npz", "content_stylized_at_iteration_3.png", "loss.png", "metrics.jsonl",
        "run.json"]
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "stopped" and manifest["steps"] == 3
    assert checkpoint.load(str(out)).step == 3
    resumed = stylize(settings_for(content_path, style_path, output_dir=str(out),
                                   resume=str(out)), **QUIET)
    assert resumed.status == "finished"
    np.testing.assert_array_equal(checkpoint.load(str(out)).image,
                                  checkpoint.load(str(tmp_path / "straight")).image)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "content_stylized.png")),
                                  np.asarray(Image.open(tmp_path / "straight" / "content_stylized.png")))


def test_progress_follows_the_scales(content_path, style_path):
    rec = Recorder()
    stylize(settings_for(content_path, style_path, scales=(32, 48), iterations=(2, 3)),
            callbacks=[rec], **QUIET)
    assert [(p.step, p.scale_index, p.scale_count, p.size) for p in rec.progress] == [
        (1, 0, 2, (32, 42)), (2, 0, 2, (32, 42)),
        (3, 1, 2, (48, 64)), (4, 1, 2, (48, 64)), (5, 1, 2, (48, 64))]
    assert [r.get("scale") for r in rec.progress[-1].run.history] == [32, 48]


def test_a_callback_error_fails_the_run_and_is_raised(tmp_path, content_path, style_path):
    class Broken(Callback):
        def on_step(self, progress):
            if progress.step == 2:
                raise RuntimeError("preview window closed")

    out = tmp_path / "run"
    rec = Recorder()
    with pytest.raises(RuntimeError, match="preview window closed"):
        stylize(settings_for(content_path, style_path, output_dir=str(out)),
                callbacks=[rec, Broken()], **QUIET)
    assert rec.events[-1] == ("end", "failed")
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "failed" and "preview window closed" in manifest["message"]


def test_the_style_stopping_rule_ends_the_run_as_finished(tmp_path, content_path, style_path):
    rec = Recorder()
    out = tmp_path / "run"
    result = stylize(settings_for(content_path, style_path, iterations=40, style_weight=1e-2,
                                  learning_rate=20.0, style_stop_fraction=0.5,
                                  output_dir=str(out)), callbacks=[rec], **QUIET)
    styles = [p.losses["style_loss"] for p in rec.progress]
    assert result.status == "finished" and rec.outcome.reason.startswith("style loss at")
    assert len(styles) < 40 and styles[-1] <= 0.5 * styles[0] < styles[-2]
    assert (out / "content_stylized.png").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    # Off (0), every iteration runs.
    rec = Recorder()
    stylize(settings_for(content_path, style_path, iterations=8), callbacks=[rec], **QUIET)
    assert len(rec.progress) == 8
