"""A page run is its shipped preset whole, keeps its uploads in its run folder
(recorded in ``run.json`` with their SHA-256), and the gallery and Continue
outlive the server; the form's limits are the server's flags; uploads are
decoded and masks checked by ``engine.imaging``.

Random weights, tiny pictures (48 rows), a few steps; every manager and client
a test makes is closed by it (``app_client`` of tests/test_app.py).
"""

import hashlib
import json
import os

import numpy as np
import pytest

from conftest import make_picture
from test_app import (CONTENT, ENGINE, FORM, STYLE, app_client, one_line, png,  # noqa: F401
                      read_events, start, uploads, wait_for)

from nst_keras import cli, settings  # noqa: E402
from nst_keras.app import forms, server  # noqa: E402
from nst_keras.engine import imaging  # noqa: E402
from nst_keras.errors import UserError  # noqa: E402
from nst_keras.settings import Config  # noqa: E402

# The settings the page's form fills in (with the uploads) ...
FORM_FILLS = {"img_nrows", "scales", "iterations", "optimizer", "preserve_colors", "init",
              "style_weight", "style_blend_weights", "style_masks", "content_image",
              "style_image"}
# ... and those every page run sets for itself.  Every other setting must be
# the shipped preset's: a new field of Config is compared without being named.
PER_RUN = {"output_dir", "resume", "result_prefix", "save_every", "log_every", "overwrite",
           "experiment"}
BASE = Config(content_image="<upload>", style_image="<upload>")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def as_json(config: Config) -> dict:
    """The settings as ``run.json`` records them (lists, not tuples)."""
    return json.loads(json.dumps(settings.to_dict(config), default=str))


def differing(page: dict, preset: dict, exempt) -> dict:
    return {k: (page[k], preset[k]) for k in settings.FIELDS
            if k not in exempt and page[k] != preset[k]}


def preset_form(page_name, **changes):
    """The form the page sends for a preset (its own values unless changed)."""
    form = {k: [str(v)] for k, v in forms.PRESETS[page_name]["form"].items()}
    form.update(preset=[page_name], strength=["0"])
    form.update({k: [str(v)] for k, v in changes.items()})
    return form


def test_the_exempt_settings_are_settings():
    assert FORM_FILLS | PER_RUN <= set(settings.FIELDS)
    assert set(forms.FORM_FIELDS) | {"style_weight"} == FORM_FILLS
    assert set(forms.PAGE_RUN) == PER_RUN


@pytest.mark.parametrize("page_name", list(forms.PAGE_PRESETS))
def test_a_page_preset_is_the_shipped_preset_whole(page_name):
    source = forms.PAGE_PRESETS[page_name][0]
    preset = as_json(cli.preset_config(source))
    # The form as the preset fills it in: every setting but the run's own and the
    # uploads is the preset's (img_nrows: high_res's heights are its scales).
    built = forms.build_config(BASE, (), preset_form(page_name), 1)
    page = as_json(built)
    assert differing(page, preset, PER_RUN | {"content_image", "style_image", "img_nrows"}) == {}
    assert built.stage_heights() == cli.preset_config(source).stage_heights()  # the heights
    # Another form: only what it fills in changes.
    form = preset_form(page_name, rows=96, iterations=7, optimizer="adam",
                       preserve_colors="histogram", init="noise", strength=1)
    page = as_json(forms.build_config(BASE, (), form, 1))
    assert differing(page, preset, FORM_FILLS | PER_RUN) == {}
    assert (page["img_nrows"], page["optimizer"], page["preserve_colors"], page["init"]) == \
        (96, "adam", "histogram", "noise")
    assert page["iterations"] in (7, [7, 7, 7])
    assert page["style_weight"] == pytest.approx(10 * preset["style_weight"])
    assert page["log_every"] == 1 and page["save_every"] == 0


def test_the_server_s_explicit_settings_win_over_the_preset():
    base = BASE.replace(weights="random", precision="float32", model="vgg16",
                        style_weight=3.0, color_weight=7.0)
    config = forms.build_config(base, ("weights", "precision", "model", "style_weight"),
                                preset_form("fast"), 1)
    assert (config.weights, config.precision, config.model, config.style_weight) == \
        ("random", "float32", "vgg16", 3.0)
    assert config.color_weight == cli.preset_config("fast").color_weight == 50  # not given


def test_a_page_run_s_run_json_is_the_preset_and_names_its_uploads(app_client):
    manager, client = app_client()
    job_id = start(client)  # the fast preset, 48 rows, 6 Adam steps
    assert read_events(client, job_id)[-1][1]["status"] == "finished"
    job = manager.jobs[job_id]
    run = client.get(f"/api/jobs/{job_id}/run.json").json()
    flags, preset = run["flags"], as_json(cli.preset_config("fast"))
    assert differing(flags, preset, FORM_FILLS | PER_RUN | set(ENGINE)) == {}
    assert flags["color_weight"] == 50 and flags["style_loss"] == preset["style_loss"]
    assert [flags[k] for k in ENGINE] == [list(v) if isinstance(v, tuple) else v
                                          for v in ENGINE.values()]
    # The uploads are files of the run's folder, named with their SHA-256.
    folder = os.path.abspath(job.directory)
    assert sorted(os.listdir(folder)) == sorted(
        ["content.png", "style_1.png", "page.json", "run.json", "metrics.jsonl", "loss.png",
         "checkpoint.npz", "result.png"])
    with open(os.path.join(folder, "content.png"), "rb") as f:
        assert f.read() == CONTENT
    assert run["content_image"] == {"source": os.path.join(folder, "content.png"),
                                    "sha256": sha256(CONTENT)}
    assert run["style_image"] == {"source": os.path.join(folder, "style_1.png"),
                                  "sha256": sha256(STYLE)}
    assert run["uploads"] == {
        "content": {"name": "photo.png", "file": "content.png", "sha256": sha256(CONTENT)},
        "styles": [{"name": "painting.png", "file": "style_1.png", "sha256": sha256(STYLE)}],
        "masks": [], "init": None}
    assert run["versions"]["tensorflow"] and run["versions"]["numpy"]
    assert run["weights"]["source"] == "random" and run["weights"]["seed"] == 3


def test_two_paintings_and_masks_are_recorded_too(app_client):
    from test_app_masks import TWO, halves, post

    manager, client = app_client()
    response = post(client, halves())
    assert response.status_code == 201, response.text
    job = manager.jobs[response.json()["id"]]
    assert read_events(client, job.id)[-1][1]["status"] == "finished"
    with open(job.run_json()) as f:
        record = json.load(f)["uploads"]
    assert [(u["name"], u["file"], u["sha256"]) for u in record["styles"]] == \
        [(name, f"style_{k}.png", sha256(data)) for k, (name, data) in enumerate(TWO, 1)]
    for k, mask in enumerate(record["masks"], 1):
        path = os.path.join(job.directory, f"mask_{k}.png")
        with open(path, "rb") as f:
            assert mask == {"name": f"mask_{k}.png", "file": f"mask_{k}.png",
                            "sha256": sha256(f.read())}
    assert len(record["masks"]) == 2


def test_the_gallery_and_continue_outlive_a_restart(app_client):
    manager, client = app_client()
    finished = start(client, {"iterations": "3"})
    assert read_events(client, finished)[-1][1]["status"] == "finished"
    stopped = start(client, {"iterations": "40"})
    job = manager.jobs[stopped]
    wait_for(lambda: job.step >= 2)
    client.post(f"/api/jobs/{stopped}/stop")
    wait_for(lambda: job.done)
    assert job.status == "stopped"
    before = client.get("/api/gallery").json()["results"]
    manager.close()

    manager, client = app_client()  # the same results directory, a new server
    after = client.get("/api/gallery").json()["results"]
    keys = ("id", "status", "step", "total", "summary", "parent", "image", "can_continue")
    assert [{k: r[k] for k in keys} for r in after] == [{k: r[k] for k in keys} for r in before]
    assert [r["id"] for r in after] == [stopped, finished] and after[0]["can_continue"]
    assert client.get(f"/api/jobs/{finished}/result.png").status_code == 200
    assert client.get(f"/api/jobs/{finished}/run.json").json()["status"] == "finished"
    assert read_events(client, finished)[-1][1]["status"] == "finished"  # its end at once
    response = client.post(f"/api/jobs/{stopped}/continue")
    assert response.status_code == 201, response.text
    new_id = response.json()["id"]
    assert int(new_id) == int(stopped) + 1  # ids go on after the folders found
    events = read_events(client, new_id)
    start_event = next(d for k, d in events if k == "start")
    assert start_event["step"] == job.step
    assert events[-1][1]["status"] == "finished" and events[-1][1]["step"] == 40
    new = manager.jobs[new_id]
    assert new.parent == stopped
    assert new.config.content_image == os.path.abspath(os.path.join(new.directory,
                                                                    "content.png"))
    with open(new.run_json()) as f:
        run = json.load(f)
    assert run["content_image"]["sha256"] == sha256(CONTENT)
    assert run["uploads"]["styles"][0]["sha256"] == sha256(STYLE)
    assert [s["status"] for s in run["sessions"]] == ["stopped", "finished"]
    assert [r["id"] for r in client.get("/api/gallery").json()["results"]] == \
        [new_id, stopped, finished]


def test_continue_needs_the_run_s_files(app_client):
    manager, client = app_client()
    stopped = start(client, {"iterations": "40"})
    job = manager.jobs[stopped]
    wait_for(lambda: job.step >= 2)
    client.post(f"/api/jobs/{stopped}/stop")
    wait_for(lambda: job.done)
    os.remove(os.path.join(job.directory, "style_1.png"))
    assert not job.public()["can_continue"]
    response = client.post(f"/api/jobs/{stopped}/continue")
    assert response.status_code == 400 and "can be continued" in one_line(response)
    assert sorted(os.listdir(os.path.dirname(job.directory))) == ["run-0001"]


def test_the_form_s_limits_are_the_server_s_flags(app_client):
    assert forms.Limits() == forms.Limits.of(server.ServerOptions())
    f = server.make_flags()
    server.cli.parse(["nst_keras.app", "--max_rows=64", "--max_iterations=10",
                      "--max_strength=1", "--max_upload_mb=3"], f)
    limits = forms.Limits.of(server.cli.options_from_flags(server.ServerOptions, f))
    assert (limits.max_rows, limits.max_iterations, limits.strength_range,
            limits.max_bytes) == (64, 10, (-1.0, 1.0), 3 * 2 ** 20)
    _, client = app_client(limits=limits)
    assert client.get("/api/presets").json()["limits"] == {
        "max_rows": 64, "max_bytes": 3 * 2 ** 20, "max_pixels": 40_000_000,
        "max_styles": server.MAX_STYLES, "max_iterations": 10, "strength": [-1.0, 1.0]}
    for form, words in (({"rows": "65"}, "between 32 and 64"),
                        ({"iterations": "11"}, "between 1 and 10"),
                        ({"strength": "1.5"}, "between -1.0 and 1.0")):
        response = client.post("/api/jobs", data=dict(FORM, **form), files=uploads())
        assert response.status_code == 400 and words in one_line(response), form
    assert server.main(["nst_keras.app", "--port=0", "--max_rows=20"]) == 2


def test_uploads_are_decoded_and_masks_checked_by_the_engine():
    data = png(make_picture(40, 50, 0))
    picture = imaging.decode_picture(data, "the photo", 10 ** 6, 10 ** 6, 32)
    np.testing.assert_array_equal(picture, imaging.load_image(make_picture(40, 50, 0)))
    assert imaging.picture_suffix(data) == ".png"
    assert imaging.picture_suffix(png(make_picture(40, 50, 0), "JPEG")) == ".jpg"
    assert imaging.picture_suffix(b"words") == ".img"
    for args, words in (((b"", 100, 100), "is empty"),
                        ((data, 100, 10 ** 6), "the limit is 100 bytes"),
                        ((data, 10 ** 6, 1000), "over the limit of 1,000 pixels"),
                        ((b"words\n", 100, 100), "it is not an image; give a JPEG"),
                        ((data[:200], 10 ** 6, 10 ** 6), "truncated or damaged")):
        with pytest.raises(UserError, match=words):
            imaging.decode_picture(args[0], "the photo", *args[1:])
    with pytest.raises(UserError, match="at least 64 pixels"):
        imaging.decode_picture(data, "the photo", 10 ** 6, 10 ** 6, 64)
    imaging.check_mask(np.full((24, 32), 9, np.uint8), "m", (48, 64))
    with pytest.raises(UserError, match="black everywhere: that style would apply nowhere"):
        imaging.check_mask(np.zeros((24, 32)), "m", (48, 64))
    with pytest.raises(UserError, match=r"is 32x32 pixels, not the photo's shape \(64x48\)"):
        imaging.check_mask(np.ones((32, 32)), "m", (48, 64))
    # The engine's own mask loader says the same of a black mask.
    with pytest.raises(UserError, match="black everywhere: that style would apply nowhere"):
        imaging.load_mask(np.zeros((24, 32), np.uint8), (24, 32))
