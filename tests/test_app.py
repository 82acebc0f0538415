"""The web app (``python -m nst_keras.app``): its handlers with Starlette's test
client (the page itself in headless Chromium: tests/test_browser.py, with the
helpers at the end of this file).

Random weights, tiny pictures; every server, run and browser a test starts
is stopped by it.
"""

import collections
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, make_picture

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

with warnings.catch_warnings():  # Starlette's note about httpx's successor
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from nst_keras.app import forms, jobs, server  # noqa: E402
import nst_keras.app as launcher  # noqa: E402
from nst_keras.settings import Config  # noqa: E402

# Shallow layers keep the unit tests' runs short; the browser test uses the defaults.
ENGINE = dict(weights="random", seed=3, content_layers=("block2_conv2",),
              style_layers=("block1_conv1", "block2_conv1"))
FORM = {"preset": "fast", "rows": "48", "iterations": "6", "optimizer": "adam",
        "preserve_colors": "none", "init": "content", "strength": "0"}


def png(array, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


CONTENT, STYLE = png(make_picture(48, 64, 0)), png(make_picture(40, 56, 1))
LOCAL = "http://127.0.0.1:7860"  # the test client's address: a loopback host


def one_line(response):
    """The one-line message of a refusal: the API's ``{"error"}`` or a plain-text line."""
    if response.headers.get("content-type", "").startswith("application/json"):
        message = response.json()["error"]
    else:
        message = response.text.rstrip("\n")
    assert message and "\n" not in message and len(message) < 300, message
    return message


def uploads(content=("photo.png", CONTENT), styles=(("painting.png", STYLE),)):
    files = [("content", (content[0], content[1], "application/octet-stream"))]
    return files + [("style", (n, d, "application/octet-stream")) for n, d in styles]


@pytest.fixture
def app_client(tmp_path):
    """``make(abandon_s=..., limits=...)``: a client over a fresh manager."""
    made = []

    def make(abandon_s=15.0, limits=None):
        base = Config(content_image="<upload>", style_image="<upload>", **ENGINE)
        manager = jobs.Manager(base, ENGINE, str(tmp_path / "results"), abandon_s,
                               log=lambda line: None)
        client = TestClient(server.create_app(manager, limits), base_url=LOCAL)
        assert client.get("/").status_code == 200  # the page's cookie, as a browser gets it
        made.append((manager, client))
        return manager, client

    yield make
    for manager, client in made:
        manager.close()
        client.close()


def read_events(client, job_id):
    """The job's server-sent events until it ends: ``[(type, data)]``."""
    with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines()
                     if not line.startswith(":"))
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def wait_for(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def start(client, form=None, files=None):
    response = client.post("api/jobs", data=dict(FORM, **(form or {})),
                           files=files or uploads())
    assert response.status_code == 201, response.text
    return response.json()["id"]


def picture_of(response):
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_the_page_is_served_whole_and_offline(app_client):
    _, client = app_client()
    page = client.get("/")
    assert page.status_code == 200 and 'id="stylize"' in page.text
    for name in ("app.js", "app.css"):
        assert client.get(f"/static/{name}").status_code == 200
    for name in server.PAGE_FILES:  # nothing fetched from elsewhere
        with open(os.path.join(server.STATIC, name)) as f:
            text = f.read()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert client.get("/static/../server.py").status_code == 404
    assert {p["name"] for p in client.get("/api/presets").json()["presets"]} == set(forms.PRESETS)


def test_a_run_streams_previews_then_the_result(app_client, monkeypatch):
    # Each step waits until the stream has looked for news after it, so every
    # preview event reaches the page in its own read (the stream attaches only
    # the latest picture to a read), however slow this machine is.
    step = jobs.LiveFeed.on_step

    def step_then_wait_to_be_heard(feed, progress):
        step(feed, progress)
        emitted = time.monotonic()
        wait_for(lambda: feed.job.last_heard > emitted, timeout=20.0)

    monkeypatch.setattr(jobs.LiveFeed, "on_step", step_then_wait_to_be_heard)
    manager, client = app_client()
    job_id = start(client)
    events = read_events(client, job_id)
    kinds = [k for k, _ in events]
    assert kinds[-1] == "end" and "start" in kinds
    steps = [d for k, d in events if k == "progress"]
    assert [d["step"] for d in steps] == list(range(1, 7))
    assert all(d["loss"] > 0 and d["eta_s"] >= 0 for d in steps)
    previews = [d["image"] for d in steps if "image" in d]
    assert len(previews) == sum(d["preview"] for d in steps)
    assert len(set(previews)) >= 2 and all(p.startswith("data:image/png;base64,") for p in previews)
    end = events[-1][1]
    assert end["status"] == "finished" and end["step"] == 6
    picture = picture_of(client.get(end["image"].replace("api", "/api", 1)))
    assert picture.shape[0] == 48
    run = client.get(f"/api/jobs/{job_id}/run.json").json()
    assert run["status"] == "finished"
    gallery = client.get("/api/gallery").json()["results"]
    assert [g["id"] for g in gallery] == [job_id] and gallery[0]["summary"]["rows"] == 48
    # A result of the gallery is a starting picture for the next run.
    second = start(client, {"init": f"result:{job_id}", "iterations": "2"})
    assert read_events(client, second)[-1][1]["status"] == "finished"
    init = manager.jobs[second].config.init  # a copy in the second run's own folder
    assert os.path.dirname(init) == os.path.abspath(manager.jobs[second].directory)
    with open(init, "rb") as copy, open(manager.jobs[job_id].image_path, "rb") as source:
        assert copy.read() == source.read()


def test_stop_keeps_the_picture_and_continue_finishes_it(app_client):
    manager, client = app_client()
    job_id = start(client, {"iterations": "40"})
    job = manager.jobs[job_id]
    wait_for(lambda: job.step >= 2)
    assert client.post(f"/api/jobs/{job_id}/stop").status_code == 200
    wait_for(lambda: job.done)
    assert job.status == "stopped" and job.step < 40
    assert picture_of(client.get(f"/api/jobs/{job_id}/result.png")).shape[0] == 48
    assert job.public()["can_continue"]
    response = client.post(f"/api/jobs/{job_id}/continue")
    assert response.status_code == 201
    events = read_events(client, response.json()["id"])
    start_event = next(d for k, d in events if k == "start")
    assert start_event["step"] == job.step and len(start_event["losses"]) == job.step
    assert events[-1][1]["status"] == "finished" and events[-1][1]["step"] == 40
    assert os.path.isfile(job.image_path)  # the stopped result is kept as it was


def test_a_run_no_page_listens_to_is_stopped(app_client):
    manager, client = app_client(abandon_s=0.3)
    job = manager.jobs[start(client, {"iterations": "5000"})]
    wait_for(lambda: job.done)
    assert job.status == "stopped" and "no page listened" in job.reason
    assert job.step < 5000


def test_a_page_that_closes_mid_run_stops_it(tmp_path):
    """A real server: the event stream's client goes away, the run stops."""
    import httpx

    base = Config(content_image="<upload>", style_image="<upload>", **ENGINE)
    manager = jobs.Manager(base, ENGINE, str(tmp_path), abandon_s=0.5, log=lambda line: None)
    serving = server.Serving(server.create_app(manager))
    try:
        with httpx.Client(base_url=serving.url, timeout=30) as client:
            client.get("/")  # the page's cookie
            job = manager.jobs[start(client, {"iterations": "5000"})]
            with client.stream("GET", f"api/jobs/{job.id}/events") as events:
                for line in events.iter_lines():
                    if line.startswith("event: progress"):
                        break
            assert job.status == "running"
            wait_for(lambda: job.done)
        assert job.status == "stopped" and "no page listened" in job.reason
    finally:
        serving.close()
    assert not serving.thread.is_alive()


def test_a_second_run_waits_in_the_queue(app_client):
    manager, client = app_client()
    first = manager.jobs[start(client, {"iterations": "5000"})]
    second = manager.jobs[start(client, {"iterations": "5000"})]
    wait_for(lambda: first.status == "running")
    assert manager.position(second) == 1 and manager.position(first) == 0
    client.post(f"/api/jobs/{second.id}/stop")
    assert second.status == "cancelled"
    client.post(f"/api/jobs/{first.id}/stop")
    wait_for(lambda: first.done)
    assert first.status == "stopped"


def truncated_jpeg():
    return png(make_picture(64, 64, 0), "JPEG")[:300]


BAD = {
    "text": (dict(files=uploads(content=("notes.txt", b"just some words\n"))), "not an image"),
    "truncated": (dict(files=uploads(content=("cut.jpg", truncated_jpeg()))), "truncated"),
    "tiny": (dict(files=uploads(content=("tiny.png", png(make_picture(10, 10))))),
             "at least 32 pixels"),
    "absurd_size": (dict(form={"rows": "100000"}), "between 32 and 2048"),
    "no_style": (dict(files=uploads(styles=())), "at least one style picture"),
    "bad_iterations": (dict(form={"iterations": "many"}), "must be a number"),
    "too_big": (dict(limits=forms.Limits(max_bytes=4000)), "the limit is"),
    "too_many_pixels": (dict(limits=forms.Limits(max_pixels=1000)), "over the limit"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_readable_line_and_writes_nothing(case, app_client, tmp_path):
    given, words = BAD[case]
    manager, client = app_client(limits=given.get("limits"))
    response = client.post("/api/jobs", data=dict(FORM, **given.get("form", {})),
                           files=given.get("files", uploads()))
    assert response.status_code in (400, 413), response.text
    assert words in one_line(response)
    assert not manager.jobs and not os.path.exists(tmp_path / "results")
    assert client.get("/api/presets").status_code == 200  # still serving


def test_the_command_says_what_to_install_without_the_extra(monkeypatch, capsys):
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as stop:
        launcher.console_main(["nst-keras-app"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pip install 'nst_keras[app]'" in err


@pytest.mark.parametrize("flag,message", [
    ("--max_upload_mb=0", "--max_upload_mb=0 must be a positive integer"),
    ("--max_pixels=-5", "--max_pixels=-5 must be a positive integer"),
    ("--abandon_s=0", "--abandon_s=0.0 must be a positive number")])
def test_a_bad_server_option_is_one_line_exit_2(flag, message, capsys):
    assert server.main(["nst_keras.app", "--port=0", "--weights=random", flag]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err == f"error: {message}"


def test_the_server_options_come_from_their_flags():
    f = server.make_flags()
    server.cli.parse(["nst_keras.app", "--port=0", "--host=::1", "--max_pixels=1000"], f)
    options = server.cli.options_from_flags(server.ServerOptions, f)
    assert (options.port, options.host, options.max_pixels) == (0, "::1", 1000)
    assert (options.abandon_s, options.max_upload_mb, options.results_dir) == (15.0, 25, None)


# --------------------------------------------------------------------------
# Helpers for the page in a real browser (tests/test_browser.py)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def start_server(results, *flags):
    """``python -m nst_keras.app --port=0 [flags]`` with random weights; the process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "nst_keras.app", "--port=0", "--weights=random",
         "--precision=float32", f"--results_dir={results}", "--abandon_s=30", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)
    return process


def server_url(process, timeout=60.0):
    """The URL the app prints.  From then on a thread reads the rest of its output
    (a full pipe would stop the server at its next line) and keeps the last
    lines in ``process.tail`` for failure messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "http://127.0.0.1:" in line:
            process.tail = collections.deque(maxlen=40)
            threading.Thread(target=lambda: process.tail.extend(process.stdout),
                             daemon=True).start()
            return line.split()[2]
        assert line or process.poll() is None, "the app exited before serving"
    raise AssertionError("the app printed no URL")


def stop_browser_and_server(driver, process, profile) -> None:
    """Quits the browser, stops the server process within 15 s (then kills it) and
    removes the browser profile."""
    if driver is not None:
        driver.quit()
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    shutil.rmtree(profile, ignore_errors=True)


def chromium(user_dir, downloads, extra=()):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={user_dir}", "--window-size=1280,1000", *extra):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def fill(driver, element_id, value):
    element = driver.find_element("id", element_id)
    element.clear()
    element.send_keys(value)
