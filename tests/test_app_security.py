"""What the web app accepts and from whom (docs/security.md): the Host and Origin
checks, the page's cookie, the token off loopback, the bounded queue, upload
bytes cut off while they stream, a short soak test and the page's messages in
headless Chromium.

Every server here binds 127.0.0.1 on a free port (or is Starlette's test
client) and is stopped by its test; runs are faked where the test is about
the queue, real (random weights, tiny pictures) in the soak test.
"""

import os
import random
import select
import socket
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

with warnings.catch_warnings():  # Starlette's note about httpx's successor
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

from nst_keras.app import forms, guard, jobs, server  # noqa: E402
from nst_keras.settings import Config  # noqa: E402
from test_app import (CHROMEDRIVER, CHROMIUM, ENGINE, FORM, LOCAL, chromium,  # noqa: E402
                      one_line, read_events, uploads, wait_for)

MB = 2 ** 20


def new_manager(tmp_path, **kwargs):
    base = Config(content_image="<upload>", style_image="<upload>", **ENGINE)
    kwargs.setdefault("log", lambda line: None)
    return jobs.Manager(base, ENGINE, str(tmp_path / "results"), **kwargs)


@pytest.fixture
def make_client(tmp_path):
    """``make(policy=..., base_url=..., page=True, **manager)``: a test client (that
    has loaded the page, so holds its cookie, when ``page``) over a fresh manager."""
    made = []

    def make(policy=None, base_url=LOCAL, page=True, limits=None, **kwargs):
        manager = new_manager(tmp_path, **kwargs)
        client = TestClient(server.create_app(manager, limits, policy), base_url=base_url,
                            follow_redirects=False)
        made.append((manager, client))
        if page:
            assert client.get("/").status_code == 200
        return manager, client

    yield make
    for manager, client in made:
        manager.close(10)
        client.close()


@pytest.fixture
def fake_runs(monkeypatch):
    """Runs that start and wait to be stopped (no TensorFlow): the queue's tests."""
    def run(manager, job):
        job.status = "running"
        wait_for(lambda: job.stop_reason is not None or manager.closed, timeout=60)
        job.status, job.reason = "stopped", job.stop_reason
        job.emit("end", **job.public())
    monkeypatch.setattr(jobs.Manager, "_run", run)


def post_job(client, form=None, files=None, **kwargs):
    return client.post("/api/jobs", data=dict(FORM, **(form or {})), files=files or uploads(),
                       **kwargs)


def post_running(client, manager):
    """Posts a job and waits until the worker runs it (so it holds no place in
    the queue); its id."""
    job_id = post_job(client).json()["id"]
    wait_for(lambda: manager.jobs[job_id].status == "running")
    return job_id


# --------------------------------------------------------------------------
# Host, Origin, cookie, token


def test_a_foreign_host_is_refused_with_one_line(make_client):
    manager, client = make_client()
    for path in ("/api/gallery", "/", "/static/app.js"):
        response = client.get(path, headers={"Host": "evil.example"})
        assert response.status_code == 403
        line = one_line(response)
        assert "'evil.example'" in line and "--allowed_hosts=evil.example" in line
    assert post_job(client, headers={"Host": "evil.example:7860"}).status_code == 403
    assert not manager.jobs
    for host in ("localhost:7860", "127.0.0.1", "[::1]:9", "LOCALHOST"):
        assert client.get("/api/gallery", headers={"Host": host}).status_code == 200, host
    _, proxied = make_client(guard.Policy(allowed_hosts=["nst.example"]),
                             base_url="http://nst.example")
    assert proxied.get("/api/gallery").status_code == 200


def test_every_response_forbids_framing_by_other_pages(make_client, fake_runs):
    manager, client = make_client(limits=forms.Limits(max_bytes=4000))
    answers = [client.get(path) for path in ("/", "/static/app.js", "/static/app.css",
                                             "/api/presets", "/api/gallery", "/api/jobs/9/x")]
    answers.append(client.get("/api/gallery", headers={"Host": "evil.example"}))  # refused
    answers.append(post_job(client, headers={"Origin": "http://evil.example"}))
    answers.append(post_job(client))  # 413: over the upload limit
    answers.append(post_job(make_client()[1]))  # 201
    answers.append(make_client(page=False)[1].get("/api/gallery"))  # no cookie
    answers.append(make_client(guard.Policy(token="t"), page=False)[1].get("/?token=t"))
    assert [a.status_code for a in answers] == [200] * 5 + [404, 403, 403, 413, 201, 403, 303]
    for answer in answers:
        assert answer.headers.get_list("content-security-policy") == ["frame-ancestors 'none'"]


def test_a_cross_origin_post_is_refused(make_client, fake_runs):
    manager, client = make_client()
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://127.0.0.1:7861"},
                    {"Referer": "http://evil.example/page.html"}):
        response = post_job(client, headers=headers)
        assert response.status_code == 403, headers
        assert "only this server's own page may change anything" in one_line(response)
    assert not manager.jobs
    assert post_job(client, headers={"Origin": LOCAL}).status_code == 201  # its own page
    job = next(iter(manager.jobs))
    stop = client.post(f"/api/jobs/{job}/stop", headers={"Origin": "http://evil.example"})
    assert stop.status_code == 403 and manager.jobs[job].stop_reason is None
    client.post(f"/api/jobs/{job}/stop", headers={"Referer": LOCAL + "/"})
    wait_for(lambda: manager.jobs[job].done)


def test_without_the_page_s_cookie_nothing_is_served_but_the_page(make_client, fake_runs):
    manager, client = make_client(page=False)
    response = post_job(client)
    assert response.status_code == 403 and "load / first" in one_line(response)
    assert client.get("/api/gallery").status_code == 403 and not manager.jobs
    assert client.get("/static/app.css").status_code == 200
    page = client.get("/")
    cookie = page.headers["set-cookie"]
    assert page.status_code == 200 and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert client.get("/api/gallery").status_code == 200
    response = post_job(client)  # loopback with the cookie: works
    assert response.status_code == 201, response.text
    client.cookies.clear()
    client.cookies.set("nst_keras_7860", "guessed")
    assert client.get("/api/gallery").status_code == 403
    manager.stop(manager.jobs[response.json()["id"]])


def test_a_token_server_wants_the_token_once(make_client, fake_runs):
    policy = guard.Policy(token="s3cret")
    manager, client = make_client(policy, page=False)
    for path in ("/", "/?token=wrong", "/api/gallery"):
        response = client.get(path)
        assert response.status_code == 403 and "?token=" in one_line(response), path
    assert post_job(client).status_code == 403 and not manager.jobs
    response = client.get("/?token=s3cret")
    assert response.status_code == 303 and response.headers["location"] == "./"
    assert client.get("/").status_code == 200  # the cookie is enough from now on
    response = post_job(client)
    assert response.status_code == 201, response.text
    manager.stop(manager.jobs[response.json()["id"]])


@pytest.mark.parametrize("host,no_token,token", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False),
    ("0.0.0.0", False, True), ("192.168.1.20", False, True), ("0.0.0.0", True, False)])
def test_off_loopback_a_token_is_required_unless_no_token(host, no_token, token, capsys):
    f = server.make_flags()
    server.cli.parse(["nst_keras.app", f"--host={host}", "--allowed_hosts=a.example,b.example",
                      "--max_queue=2"] + (["--no_token"] if no_token else []), f)
    options = server.cli.options_from_flags(server.ServerOptions, f)
    assert (options.no_token, options.max_queue) == (no_token, 2)
    policy = server.policy_of(options)
    assert (policy.token is not None) == token
    assert {"a.example", "b.example", "localhost", host} <= policy.hosts
    err = capsys.readouterr().err.strip()
    if guard.is_loopback(host):
        assert err == ""
    else:
        assert err.count("\n") == 0 and err.startswith(f"warning: --host={host}")
        assert ("there is no login" in err) == no_token


# --------------------------------------------------------------------------
# The queue


def test_a_full_queue_is_429_and_a_stopped_or_abandoned_waiting_job_frees_a_place(
        make_client, fake_runs):
    manager, client = make_client(max_queue=2, abandon_s=60)
    ids = [post_running(client, manager)] + [post_job(client).json()["id"] for _ in range(2)]
    running, waiting = manager.jobs[ids[0]], [manager.jobs[i] for i in ids[1:]]
    response = post_job(client)
    assert response.status_code == 429
    assert one_line(response) == "2 runs are waiting; try again when one ends"
    assert client.post(f"/api/jobs/{waiting[0].id}/stop").status_code == 200
    assert waiting[0].status == "cancelled" and not os.path.exists(waiting[0].directory)
    response = post_job(client)  # the stopped one's place, at once
    assert response.status_code == 201 and response.json()["position"] == 2
    assert post_job(client).status_code == 429
    manager.abandon_s = 0.2  # the waiting jobs' pages have gone
    time.sleep(0.3)
    assert post_job(client).status_code == 201
    assert waiting[1].status == "cancelled" and "no page" in waiting[1].reason
    manager.stop(running)
    wait_for(lambda: running.done, timeout=10)


def test_a_long_running_server_holds_no_pictures_and_forgets_old_steps(make_client,
                                                                       monkeypatch):
    """A queued job's pictures are files (none in memory); an ended job no page
    listens to drops its preview, and all but the newest ``KEEP_JOBS`` ended jobs
    keep only their end event.  Every run stays listed and known."""
    def run(manager, job):  # a run of one step that stops, as a real one reports it
        assert job.pending is None and os.path.isfile(job.config.content_image)
        job.status, job.preview = "running", b"a preview"
        job.emit("progress", step=1)
        job.image_path = os.path.join(job.directory, "final.png")
        job.status, job.reason = "stopped", "stopped in the page"
        job.emit("end", **job.public())
    monkeypatch.setattr(jobs.Manager, "_run", run)
    monkeypatch.setattr(jobs, "KEEP_JOBS", 3)
    manager, client = make_client()
    ids = []
    for _ in range(5):
        ids.append(post_job(client).json()["id"])
        wait_for(lambda: manager.jobs[ids[-1]].done and manager.running is None)
    kinds = lambda: [[e["type"] for e in manager.jobs[i].events] for i in ids]  # noqa: E731
    wait_for(lambda: kinds() == [["end"]] * 2 + [["progress", "end"]] * 3)
    assert list(manager.jobs) == ids
    assert all(j.preview is None and j.pending is None for j in manager.jobs.values())
    gallery = client.get("/api/gallery").json()["results"]
    assert [j["id"] for j in gallery] == ids[::-1]
    assert client.post(f"/api/jobs/{ids[0]}/stop").status_code == 200
    assert [k for k, _ in read_events(client, ids[0]) if k != "queue"] == ["end"]


# --------------------------------------------------------------------------
# Bytes cut off while they stream


def rss_peak_reset():
    """Resets this process's peak RSS (Linux); its RSS now in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status("VmRSS")


def proc_status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


BOUNDARY = "soakboundary"
PREAMBLE = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; "
            "filename=\"big.png\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()


def raw_upload(url, cookie, total, chunk, chunked=True):
    """POSTs a multipart body of ``total`` bytes to ``url``api/jobs over a raw socket,
    chunked without a Content-Length (or declaring it), stopping as soon as an
    answer arrives: ``(status, body line, bytes sent)``."""
    host_port = url.split("//")[1].rstrip("/")
    host, port = host_port.rsplit(":", 1)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    head = (f"POST /api/jobs HTTP/1.1\r\nHost: {host_port}\r\n{length}\r\nCookie: {cookie}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()
    sent = 0
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head)
        pieces = [PREAMBLE] + [chunk] * (total // len(chunk))
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:
                break  # answered
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except OSError:
                break
            sent += len(piece)
        answer = b""
        while not answer_complete(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode().rstrip("\n"), sent


def answer_complete(answer):
    head, found, body = answer.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
               if line.startswith(b"content-length:")]
    return bool(found and lengths) and len(body) >= lengths[0]


@pytest.fixture
def serve(tmp_path):
    """``serve(limits=..., **manager)``: a real server on 127.0.0.1 (uvicorn in a
    thread); ``(serving, client)`` with the client holding the page's cookie."""
    made = []

    def make(limits=None, **kwargs):
        serving = server.Serving(server.create_app(new_manager(tmp_path, **kwargs), limits))
        client = httpx.Client(base_url=serving.url, timeout=30)
        made.append((serving, client))
        assert client.get("/").status_code == 200
        return serving, client

    yield make
    for serving, client in made:
        client.close()
        serving.close()
        assert not serving.thread.is_alive()


def cookie_of(serving, client):
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_an_oversize_chunked_upload_is_cut_off_and_never_held(serve):
    limit = 32 * MB
    serving, client = serve(forms.Limits(max_bytes=limit))
    chunk = os.urandom(MB)
    before = rss_peak_reset()
    status, line, sent = raw_upload(serving.url, cookie_of(serving, client), 3 * limit, chunk)
    growth = proc_status("VmHWM") - before
    print(f"chunked {3 * limit / MB:.0f} MB upload, limit {limit / MB:.0f} MB: answered after "
          f"{sent / MB:.1f} MB sent; peak RSS growth {growth / MB:.1f} MB")
    assert status == 413 and "the upload is over 32 MB; the limit is 32 MB" in line
    assert sent < 3 * limit  # cut off, not read whole
    assert growth < limit + 32 * MB  # the bound: the limit plus 32 MB
    status, line, sent = raw_upload(serving.url, cookie_of(serving, client), 3 * limit, chunk,
                                    chunked=False)
    assert status == 413 and "the upload is 96 MB; the limit is 32 MB" in line
    assert sent < limit  # declared too large: refused before reading
    assert not serving.manager.jobs and client.get("/api/gallery").status_code == 200


# --------------------------------------------------------------------------
# Soak


class Soak:
    """Client threads doing what pages and scripts do, until ``deadline``."""

    def __init__(self, serving, seconds, limit):
        self.serving, self.limit = serving, limit
        self.deadline = time.monotonic() + seconds
        self.counts, self.errors, self.lock = {}, [], threading.Lock()

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def submit(self, client, iterations):
        response = client.post("api/jobs", data=dict(FORM, rows="32", iterations=str(iterations)),
                               files=uploads())
        self.count(response.status_code)
        assert response.status_code in (201, 429), response.text
        return response.json()["id"] if response.status_code == 201 else None

    def runner(self, client, rng):
        job = self.submit(client, rng.randint(2, 4))
        if job is not None:
            assert read_events(client, job)[-1][0] == "end"
        else:
            time.sleep(0.2)

    def stopper(self, client, rng):
        job = self.submit(client, 50)
        if job is not None:
            time.sleep(rng.uniform(0, 0.5))
            assert client.post(f"api/jobs/{job}/stop").status_code == 200

    def leaver(self, client, rng):
        job = self.submit(client, 50)
        if job is not None:
            with client.stream("GET", f"api/jobs/{job}/events") as events:
                next(events.iter_lines())  # then the page closes
        time.sleep(0.3)

    def uploader(self, client, rng):
        status, line, _ = raw_upload(self.serving.url, cookie_of(self.serving, client),
                                     3 * self.limit, os.urandom(64 * 1024), rng.random() < 0.5)
        assert status == 413 and "the limit is" in line
        response = client.post("api/jobs", data=FORM,
                               files=uploads(content=("notes.txt", b"words\n")))
        assert response.status_code in (400, 429), response.text  # 429: the queue was full
        assert response.status_code == 429 or "not an image" in one_line(response)
        self.count("refused")

    def reader(self, client, rng):
        for result in client.get("api/gallery").json()["results"]:
            for path in (result["image"], result["run_json"]):
                if path:
                    assert client.get(path).status_code == 200
                    self.count("download")
        assert client.get("").status_code == 200 and client.get("api/presets").status_code == 200
        time.sleep(0.1)

    def thread(self, action, seed):
        rng = random.Random(seed)
        try:
            with httpx.Client(base_url=self.serving.url, timeout=30) as client:
                client.get("")
                while time.monotonic() < self.deadline:
                    action(client, rng)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{action.__name__}: {type(e).__name__}: {e}")

    def run(self):
        actions = [self.runner, self.runner, self.stopper, self.leaver, self.uploader,
                   self.reader]
        threads = [threading.Thread(target=self.thread, args=(a, i))
                   for i, a in enumerate(actions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)


def rss():
    return proc_status("VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_short_soak_leaves_nothing_behind(tmp_path):
    before_threads = set(threading.enumerate())
    limit = 2 * MB
    manager = new_manager(tmp_path, abandon_s=1.0, max_queue=3)
    serving = server.Serving(server.create_app(manager, forms.Limits(max_bytes=limit)))
    try:
        with httpx.Client(base_url=serving.url, timeout=60) as client:  # warm up: one run
            client.get("")
            job = client.post("api/jobs", data=dict(FORM, rows="32", iterations="2"),
                              files=uploads()).json()["id"]
            assert read_events(client, job)[-1][1]["status"] == "finished"
        memory, started = rss(), time.monotonic()
        soak = Soak(serving, 2.0, limit)
        soak.run()
        for job in list(manager.jobs.values()):
            manager.stop(job, "the test ended")
        wait_for(lambda: all(j.done for j in manager.jobs.values()), timeout=30)
        growth = rss() - memory
        with httpx.Client(base_url=serving.url, timeout=10) as client:
            assert client.get("").status_code == 200  # still answering
        statuses = [j.status for j in manager.jobs.values()]
        print(f"soak {time.monotonic() - started:.1f} s: {len(statuses)} jobs "
              f"{ {s: statuses.count(s) for s in set(statuses)} }, requests {soak.counts}, "
              f"RSS growth {growth / MB:.0f} MB")
        assert not soak.errors, soak.errors
        assert "finished" in statuses and soak.counts.get("refused")
        assert growth < 300 * MB  # the bound after one warm-up run
    finally:
        serving.close()
    assert not serving.thread.is_alive()
    wait_for(lambda: set(threading.enumerate()) <= before_threads, timeout=15)
    results = tmp_path / "results"
    for entry in os.listdir(results):
        assert entry.startswith("run-") and (results / entry).is_dir(), entry
        for name in os.listdir(results / entry):
            assert not name.startswith(".") and "tmp" not in name, (entry, name)


# --------------------------------------------------------------------------
# The page's messages in a real browser


def noise_png(path, side):
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason="needs the Debian packages chromium and chromium-driver")
def test_the_page_shows_the_queue_full_and_too_large_lines(tmp_path, serve, fake_runs):
    pytest.importorskip("selenium")
    serving, client = serve(forms.Limits(max_bytes=300_000), max_queue=1, abandon_s=60)
    noise_png(tmp_path / "big.png", 400)  # about 480 KB
    for name, seed in (("photo.png", 0), ("painting.png", 1)):
        Image.fromarray(make_picture(60, 80, seed)).save(tmp_path / name)
    driver = chromium(tmp_path / "profile", tmp_path)
    try:
        driver.get(serving.url)
        wait_for(lambda: driver.execute_script("return document.body.dataset.ready") == "1")
        message = driver.find_element("id", "message")
        driver.find_element("id", "content-input").send_keys(str(tmp_path / "big.png"))
        driver.find_element("id", "style-input").send_keys(str(tmp_path / "painting.png"))
        driver.find_element("id", "stylize").click()
        wait_for(lambda: message.is_displayed() and "the limit is" in message.text, 20)
        assert message.text.startswith("the upload is") and "300000 bytes" in message.text
        ids = [post_running(client, serving.manager), post_job(client).json()["id"]]  # one waits
        driver.find_element("id", "content-input").send_keys(str(tmp_path / "photo.png"))
        driver.find_element("id", "stylize").click()
        wait_for(lambda: message.is_displayed() and "waiting" in message.text, 20)
        assert message.text == "1 run is waiting; try again when one ends"
        client.post(f"api/jobs/{ids[1]}/stop")
        driver.find_element("id", "stylize").click()
        wait_for(lambda: "number 1 in the queue" in driver.find_element("id", "status").text)
        assert not message.is_displayed()
    finally:
        driver.quit()
