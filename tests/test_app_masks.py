"""A style per region in the web app: the painted masks the page sends
(``mask_1`` ... one per painting), checked, saved in the run's directory and
named in its ``run.json`` (``style_masks``).  The painting tool in headless
Chromium: tests/test_browser.py.

Random weights, tiny pictures, a few steps, as in tests/test_app.py (whose
helpers these tests use).
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture
from test_app import FORM, app_client, one_line, png, read_events, uploads, wait_for  # noqa: F401

STYLE_1, STYLE_2 = png(make_picture(40, 56, 1)), png(make_picture(44, 52, 2))
TWO = (("one.png", STYLE_1), ("two.png", STYLE_2))


def halves(rows=48, cols=64):
    """Two masks that share the photo out: the left part and the right part."""
    left = np.zeros((rows, cols), np.uint8)
    left[:, :cols // 3] = 255
    return left, 255 - left


def mask_files(*masks):
    """The form's ``mask_<k>`` files: arrays (saved as PNG) or ``(name, bytes)``."""
    files = []
    for k, mask in enumerate(masks, 1):
        name, data = (f"mask_{k}.png", png(mask)) if isinstance(mask, np.ndarray) else mask
        files.append((f"mask_{k}", (name, data, "image/png")))
    return files


def post(client, masks, styles=TWO, form=None):
    blend = {"blend": ["1"] * len(styles)} if len(styles) > 1 else {}
    return client.post("/api/jobs", data=dict(FORM, **blend, **(form or {})),
                       files=uploads(styles=styles) + mask_files(*masks))


def read_run_json(path):
    """The settings a run's ``run.json`` records."""
    with open(path) as f:
        run = json.load(f)
    return run["flags"]


def test_the_masks_are_saved_and_named_in_run_json(app_client):
    manager, client = app_client()
    sent = halves()
    response = post(client, sent)
    assert response.status_code == 201, response.text
    job = manager.jobs[response.json()["id"]]
    paths = job.config.style_masks
    assert [os.path.basename(p) for p in paths] == ["mask_1.png", "mask_2.png"]
    assert all(os.path.dirname(p) == os.path.abspath(job.directory) for p in paths)
    events = read_events(client, job.id)
    end = events[-1][1]
    assert end["status"] == "finished", end
    assert end["summary"]["regions"] is True
    config = read_run_json(job.run_json())
    assert config["style_masks"] == list(paths)
    for path, mask in zip(config["style_masks"], sent):
        with Image.open(path) as saved:
            assert saved.format == "PNG"
            np.testing.assert_array_equal(np.asarray(saved.convert("L")), mask)
    assert client.get(f"/api/jobs/{job.id}/run.json").json()  # the download names them too


def test_one_painting_with_its_mask_and_no_masks_at_all(app_client):
    manager, client = app_client()
    where = halves()[1]
    response = post(client, [where], styles=TWO[:1])
    assert response.status_code == 201, response.text
    job = manager.jobs[response.json()["id"]]
    assert read_events(client, job.id)[-1][1]["status"] == "finished"
    (path,) = read_run_json(job.run_json())["style_masks"]
    np.testing.assert_array_equal(np.asarray(Image.open(path)), where)
    response = post(client, [])  # nothing painted: the ordinary run
    plain = manager.jobs[response.json()["id"]]
    assert read_events(client, plain.id)[-1][1]["status"] == "finished"
    assert read_run_json(plain.run_json())["style_masks"] is None
    assert not [n for n in os.listdir(plain.directory) if n.startswith("mask_")]


def test_a_stopped_painted_run_continues_with_its_masks(app_client):
    manager, client = app_client()
    response = post(client, halves(), form={"iterations": "40"})
    job = manager.jobs[response.json()["id"]]
    wait_for(lambda: job.step >= 2)
    client.post(f"/api/jobs/{job.id}/stop")
    wait_for(lambda: job.done)
    assert job.status == "stopped", job.error
    response = client.post(f"/api/jobs/{job.id}/continue")
    assert response.status_code == 201, response.text
    end = read_events(client, response.json()["id"])[-1][1]
    assert end["status"] == "finished" and end["step"] == 40, end
    new = manager.jobs[end["id"]]  # the masks' copies in the new run's own folder
    assert [os.path.dirname(p) for p in new.config.style_masks] == \
        [os.path.abspath(new.directory)] * 2
    for copy, mask in zip(new.config.style_masks, job.config.style_masks):
        with open(copy, "rb") as a, open(mask, "rb") as b:
            assert a.read() == b.read()


BLACK = np.zeros((48, 64), np.uint8)
BAD = {
    "too_few": (halves()[:1], "give one mask per painting (2"),
    "too_many": (halves() + (halves()[0],), "give one mask per painting (2"),
    "text": ((halves()[0], ("notes.txt", b"not a picture\n")),
             "mask of painting 2 (notes.txt): it is not an image"),
    "all_black": ((255 - BLACK, BLACK), "mask of painting 2 is black everywhere"),
    "wrong_shape": ((halves()[0], np.full((64, 64), 255, np.uint8)), "not the photo's shape"),
    "tiny": ((halves()[0], np.full((12, 16), 255, np.uint8)), "at least 32 pixels"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_mask_is_one_line_and_writes_nothing(case, app_client, tmp_path):
    masks, words = BAD[case]
    manager, client = app_client()
    response = post(client, masks)
    assert response.status_code == 400, response.text
    assert words in one_line(response)
    assert not manager.jobs and not os.path.exists(tmp_path / "results")


def test_a_second_mask_1_is_refused(app_client, tmp_path):
    manager, client = app_client()
    files = uploads(styles=TWO) + mask_files(*halves()) + mask_files(halves()[0])
    response = client.post("/api/jobs", data=dict(FORM, blend=["1", "1"]), files=files)
    assert response.status_code == 400 and "two mask_1 files" in one_line(response)
    assert not os.path.exists(tmp_path / "results")
