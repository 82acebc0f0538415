"""Every term of the objective is reported by its name: the log line, metrics.jsonl,
run.json's final losses (with the weights) and loss.png's curves."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from nst_keras.output import manifest


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, image_dir):
    """A ``--preset=fast`` run (its colour term), tiny, with random weights."""
    out = tmp_path_factory.mktemp("fast")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # whatever prints, at call time
        status = run_cli("--preset=fast", f"--content_image={image_dir / 'content.png'}",
                         f"--style_image={image_dir / 'style.png'}", f"--output_dir={out}",
                         "--weights=random", "--img_nrows=48", "--iterations=3",
                         "--log_every=1", "--content_layers=block2_conv2",
                         "--style_layers=block1_conv1,block2_conv1")
    lines = printed.getvalue().splitlines()
    assert status == 0
    return out, lines


def test_the_log_line_names_every_term_of_the_fast_preset(fast_run):
    _, lines = fast_run
    steps = [line for line in lines if line.startswith("Iteration ")]
    assert len(steps) == 3
    for name in ("content=", "style=", "tv=", "color="):
        assert all(name in line for line in steps), (name, steps)


def test_metrics_and_run_json_hold_every_term_and_its_weight(fast_run):
    out, _ = fast_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "iteration" in r]
    assert len(steps) == 3 and all(r["color_loss"] > 0 for r in steps)
    run = json.loads((out / "run.json").read_text())
    final = run["final_losses"]
    assert final["color_loss"] > 0
    assert final["weights"] == {"content_loss": 1.0, "style_loss": 200.0, "tv_loss": 6.0,
                                "color_loss": 50.0}
    weighted = sum(final["weights"][k] * final[k] for k in final["weights"])
    assert weighted == pytest.approx(final["loss"], rel=1e-5)


def test_the_loss_plot_draws_a_curve_per_weighted_term(tmp_path):
    from nst_keras.output.plot import COLOURS

    history = [{"iteration": i, "loss": 10.0 - i, "content_loss": 1.0, "style_loss": 2.0,
                "tv_loss": 3.0, "color_loss": 0.5, "temporal_loss": 0.03} for i in (1, 2)]
    weights = {"content_loss": 1.0, "style_loss": 2.0, "tv_loss": 0.5, "color_loss": 4.0,
               "temporal_loss": 10.0, "unlogged_loss": 3.0}
    curves = manifest.loss_series(history, weights)
    assert [c.label for c in curves] == ["total", "content x 1", "style x 2",
                                         "total variation x 0.5", "color x 4", "temporal x 10"]
    assert curves[4].ys == [2.0, 2.0] and curves[0].ys == [9.0, 8.0]
    assert manifest.plot_losses(str(tmp_path / "loss.png"), history, weights) is None
    image = np.asarray(Image.open(tmp_path / "loss.png").convert("RGB")).astype(int)
    assert image.shape == (420, 700, 3)

    def pixels(hex_colour):  # pixels of (nearly) this colour
        want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(image - want).sum(axis=-1) < 30).sum())

    # Every curve and its legend line are drawn in its own colour; a sixth is not.
    for colour in COLOURS[:5]:
        assert pixels(colour) > 100, colour
    assert pixels(COLOURS[5]) == 0
