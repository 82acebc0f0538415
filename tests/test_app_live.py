"""The page's trained networks (``--networks_dir``): the list, a photo through a
network at once, the camera over a WebSocket (latest frame wins, oversize frames
dropped with a message, one camera at a time), the guard on the new routes, and
the camera in headless Chromium with a fake device (tests/test_browser.py).

Tiny untrained networks, small pictures; every server and browser a test
starts is stopped by it.
"""

import io
import json
import time
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

with warnings.catch_warnings():  # Starlette's note about httpx's successor
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402
    from starlette.testclient import WebSocketDenialResponse  # noqa: E402
    from starlette.websockets import WebSocketDisconnect  # noqa: E402

from nst_keras.app import live, server  # noqa: E402
from test_app import LOCAL, one_line, png  # noqa: E402
from test_app import FORM, uploads  # noqa: E402
from test_app_security import fake_runs, new_manager  # noqa: E402,F401  (a fixture)


def jpeg(array, quality=90):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_networks(d):
    """``one.keras`` (one painting), ``three.keras`` (three, distinct) and a broken
    file in the folder ``d``; returns it."""
    from nst_keras.engine import network

    network.build_network(0.125, seed=5).save(str(d / "one.keras"))
    three = network.build_network(0.125, seed=6, styles=3)
    for layer in three.layers:
        if hasattr(layer, "gamma") and len(layer.gamma.shape) == 2:
            rng = np.random.default_rng(len(layer.name))
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.5, layer.beta.shape).astype("float32"))
    three.save(str(d / "three.keras"))
    (d / "broken.keras").write_bytes(b"not a network")
    (d / "notes.txt").write_text("not a network")
    return d


@pytest.fixture(scope="module")
def networks_dir(tmp_path_factory):
    return make_networks(tmp_path_factory.mktemp("networks"))


@pytest.fixture
def client(tmp_path, networks_dir):
    """A test client (holding the page's cookie) over the networks; its ``Networks``."""
    manager = new_manager(tmp_path)
    networks = live.Networks(str(networks_dir), "float32")
    app = server.create_app(manager, networks=networks, live_rows=32,
                            max_frame_bytes=20_000)
    c = TestClient(app, base_url=LOCAL, follow_redirects=False)
    assert c.get("/").status_code == 200
    yield c, networks
    manager.close()
    c.close()


def connect(c, headers=None):
    """``c.websocket_connect('/api/live')`` as the page opens it: its Host, Origin and
    cookie.  Starlette's test client sends neither the jar's cookies nor the Host of
    its base URL with a WebSocket, and its WebSocket's server port is 80 (the
    cookie's name has the port: ``Policy.cookie_name``)."""
    sent = {"host": LOCAL.split("//")[1], "origin": LOCAL}
    if c.cookies:
        [value] = c.cookies.values()
        sent["cookie"] = f"nst_keras_80={value}"
    sent.update(headers or {})
    return c.websocket_connect("/api/live", headers=sent)


def stylize(c, photo, **form):
    return c.post("api/stylize", data={"network": "one", "rows": "32", **form},
                  files=[("content", ("photo.png", png(photo), "application/octet-stream"))])


def test_the_networks_are_listed_with_their_paintings(client):
    c, _ = client
    answer = c.get("api/networks").json()
    assert answer["networks"] == [{"id": "one", "styles": 1}, {"id": "three", "styles": 3}]
    assert answer["live_rows"] == 32 and answer["max_frame_bytes"] == 20_000
    from nst_keras.app import forms
    assert answer["max_live_rows"] == forms.Limits().max_rows  # the page offers no more


def test_a_photo_through_a_network_at_once(client):
    c, networks = client
    photo = make_picture(48, 64, 1)
    response = stylize(c, photo)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert float(response.headers["x-stylize-ms"]) > 0
    got = np.asarray(Image.open(io.BytesIO(response.content))).astype(int)
    want = networks.get("one")(live.fit_rows(photo, 32))
    assert got.shape == (32, 42, 3) and np.abs(got - want).max() <= 1
    pure = [np.asarray(Image.open(io.BytesIO(stylize(
        c, photo, network="three", blend=b).content))).astype(int) for b in ("1,0,0", "0,1,0")]
    assert np.abs(pure[0] - pure[1]).mean() > 2
    assert np.abs(pure[0] - networks.get("three")(live.fit_rows(photo, 32),
                                                  blend=[1, 0, 0])).max() <= 1


def test_stylize_does_not_wait_behind_an_optimisation_run(client, fake_runs):
    """With a run going (and another waiting), a network's picture comes at once."""
    from test_app_security import post_running

    c, _ = client
    manager = c.app.state.manager
    running = post_running(c, manager)
    waiting = c.post("/api/jobs", data=FORM, files=uploads()).json()["id"]
    assert manager.position(manager.jobs[waiting]) == 1
    started = time.monotonic()
    response = stylize(c, make_picture(48, 64, 1))
    assert response.status_code == 200 and time.monotonic() - started < 10
    assert manager.jobs[running].status == "running"  # still going: not queued behind it
    manager.stop(manager.jobs[running])
    manager.stop(manager.jobs[waiting])


@pytest.mark.parametrize("form,message", [
    ({"network": "missing"}, "no network 'missing'"),
    ({"network": "../one"}, "no network '../one'"),
    ({"network": "broken"}, "is not a Keras model file"),
    ({"network": "three", "blend": "1,1"}, "give 3 blend weights, not 2"),
    ({"network": "three", "blend": "1,x,1"}, "blend weights must be numbers"),
    ({"rows": "8"}, "must be 16 to"),
])
def test_bad_stylize_requests_are_one_line(client, form, message):
    c, _ = client
    response = stylize(c, make_picture(48, 64, 1), **form)
    assert response.status_code == 400 and message in one_line(response)


def frames_of(ws, count):
    """``count`` answers: ``[(picture or None, stats)]`` (a picture, then its stats)."""
    out = []
    while len(out) < count:
        message = ws.receive()
        if message.get("bytes") is not None:
            picture = np.asarray(Image.open(io.BytesIO(message["bytes"])))
            stats = json.loads(ws.receive_text())
            out.append((picture, stats))
        else:
            out.append((None, json.loads(message["text"])))
    return out


def test_the_camera_over_a_websocket(client):
    c, networks = client
    frame = make_picture(48, 64, 2)
    with connect(c) as ws:
        ws.send_text(json.dumps({"network": "one", "rows": 32}))
        assert json.loads(ws.receive_text()) == {"ready": "one", "styles": 1, "rows": 32,
                                                 "steady": 0.5}  # --live_steady's default
        ws.send_bytes(jpeg(frame))
        [(picture, stats)] = frames_of(ws, 1)
        want = networks.get("one")(live.fit_rows(np.asarray(Image.open(io.BytesIO(
            jpeg(frame)))), 32))
        assert picture.shape == (32, 42, 3)
        # The network's picture of the decoded frame, as the server's JPEG encodes it.
        assert np.abs(picture.astype(int) - np.asarray(Image.open(io.BytesIO(
            live.jpeg(want))))).max() <= 2
        assert stats["frame"] == 1 and stats["dropped"] == 0 and stats["ms"] > 0
        ws.send_bytes(b"x" * 30_000)  # over max_frame_bytes: dropped, the session goes on
        [(none, said)] = frames_of(ws, 1)
        assert none is None and "was dropped: the limit is 20000 bytes" in said["error"]
        ws.send_bytes(b"not a picture")
        [(none, said)] = frames_of(ws, 1)
        assert none is None and "the camera frame" in said["error"]
        ws.send_text(json.dumps({"network": "three", "blend": [0, 0, 1], "rows": 24}))
        assert json.loads(ws.receive_text())["styles"] == 3
        ws.send_bytes(jpeg(frame))
        [(picture, stats)] = frames_of(ws, 1)
        assert picture.shape == (24, 32, 3) and stats["frame"] == 2
        ws.send_text(json.dumps({"network": "three", "blend": [1, 1]}))
        assert "give 3 blend weights" in json.loads(ws.receive_text())["error"]


def test_a_slow_server_keeps_the_newest_frame_and_drops_the_rest(client, monkeypatch):
    c, networks = client
    slow = live.Networks.stylize

    def stylize_slowly(self, *args, **kwargs):
        time.sleep(0.4)
        return slow(self, *args, **kwargs)

    monkeypatch.setattr(live.Networks, "stylize", stylize_slowly)
    frames = [make_picture(48, 64, 10 + i) for i in range(6)]
    with connect(c) as ws:
        ws.send_text(json.dumps({"network": "one", "steady": 0}))  # each frame its own
        ws.receive_text()
        for f in frames:  # all at once, faster than the server
            ws.send_bytes(jpeg(f))
        answers = []
        deadline = time.monotonic() + 20
        while sum(1 for p, s in answers if p is not None) + (answers[-1][1]["dropped"]
                                                             if answers else 0) < 6:
            assert time.monotonic() < deadline
            answers += frames_of(ws, 1)
    pictures = [p for p, _ in answers if p is not None]
    assert answers[-1][1]["dropped"] >= 3 and len(pictures) <= 3
    # The last answer is the newest frame's.
    newest = networks.get("one")(live.fit_rows(np.asarray(Image.open(io.BytesIO(
        jpeg(frames[-1])))), 32))
    assert np.abs(pictures[-1].astype(int) - np.asarray(Image.open(io.BytesIO(
        live.jpeg(newest))))).max() <= 2


def decoded(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def test_a_steady_camera_carries_the_previous_frame_along_the_motion(client):
    """``steady``: the second answer is the network's picture with that share of the
    first answer warped along the flow, not the picture alone; 0 turns it off."""
    pytest.importorskip("cv2")
    from nst_keras.engine import flow

    c, networks = client
    scene = make_picture(48, 80, 3)
    first, second = scene[:, 6:70], scene[:, 3:67]  # the scene moves 3 px right
    net = networks.get("one")
    alone = [net(live.fit_rows(decoded(jpeg(f)), 32)) for f in (first, second)]
    moved = flow.motion(live.fit_rows(decoded(jpeg(second)), 32),
                        live.fit_rows(decoded(jpeg(first)), 32), live.STEADY_FLOW)
    carried = flow.carry(alone[1], alone[0].astype(np.float32), moved, 0.5)
    want = decoded(live.jpeg(np.clip(np.round(carried), 0, 255).astype(np.uint8))).astype(int)
    assert moved[1].mean() > 0.5  # the flow holds over most of the frame
    with connect(c) as ws:
        ws.send_text(json.dumps({"network": "one", "rows": 32, "steady": 0.5}))
        assert json.loads(ws.receive_text())["steady"] == 0.5
        got = []
        for f in (first, second):
            ws.send_bytes(jpeg(f))
            got.append(frames_of(ws, 1)[0][0].astype(int))
        assert np.abs(got[0] - decoded(live.jpeg(alone[0]))).max() <= 2  # nothing to carry
        assert np.abs(got[1] - want).max() <= 2
        assert np.abs(got[1] - decoded(live.jpeg(alone[1]))).mean() > 1  # not the frame alone
        ws.send_text(json.dumps({"network": "one", "rows": 32, "steady": 0}))
        ws.receive_text()
        ws.send_bytes(jpeg(second))
        assert np.abs(frames_of(ws, 1)[0][0].astype(int)
                      - decoded(live.jpeg(alone[1]))).max() <= 2
        for bad, message in ((2, "must be 0 to 0.95"), ("x", "must be a number from 0"),
                             (float("nan"), "must be 0 to 0.95")):
            ws.send_text(json.dumps({"network": "one", "steady": bad}))
            assert message in json.loads(ws.receive_text())["error"]


def test_a_frame_that_fails_is_reported_and_the_next_one_is_answered(client, monkeypatch,
                                                                     capfd):
    c, networks = client
    real, calls = networks.stylize, []

    def fails_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return real(*args)

    monkeypatch.setattr(networks, "stylize", fails_once)
    frame = jpeg(make_picture(48, 64, 2))
    with connect(c) as ws:
        ws.send_text(json.dumps({"network": "one", "rows": 32, "steady": 0}))
        ws.receive_text()
        ws.send_bytes(frame)
        [(none, said)] = frames_of(ws, 1)
        assert none is None and "could not be stylised (RuntimeError)" in said["error"]
        ws.send_bytes(frame)
        [(picture, stats)] = frames_of(ws, 1)
        assert picture.shape == (32, 42, 3) and stats["frame"] == 1 and stats["dropped"] == 1
    assert "a frame failed (RuntimeError: out of memory)" in capfd.readouterr().err


class Said:
    """A stand-in WebSocket that keeps the text messages sent to it."""

    def __init__(self):
        self.texts = []

    async def send_text(self, text):
        self.texts.append(json.loads(text))


def test_settings_that_change_while_a_frame_is_steadied_leave_the_camera_going(
        networks_dir, monkeypatch):
    """The page's new size arrives (on the event loop) while a frame is steadied
    (in a thread): that frame is answered and not kept, and the next frame at
    the new size starts afresh.  (It used to end the session's worker.)"""
    pytest.importorskip("cv2")
    import asyncio

    from nst_keras.engine import flow

    session = live.LiveSession(Said(), live.Networks(str(networks_dir), "float32"), 128,
                               10 ** 6, 10 ** 7, 32, 0.5)
    asyncio.run(session._settings(json.dumps({"network": "one", "rows": 32})))
    scene = make_picture(48, 80, 3)
    session._stylize(jpeg(scene[:, 6:70]))
    assert session.previous is not None and session.previous[0].shape == (32, 42, 3)
    real = flow.motion

    def motion_while_the_size_changes(*args):
        asyncio.run(session._settings(json.dumps({"network": "one", "rows": 48})))
        return real(*args)

    monkeypatch.setattr(flow, "motion", motion_while_the_size_changes)
    answer = decoded(session._stylize(jpeg(scene[:, 3:67])))
    assert answer.shape == (32, 42, 3)  # the frame begun at the old size
    assert session.previous is None  # not carried into the new size's frames
    monkeypatch.setattr(flow, "motion", real)
    assert decoded(session._stylize(jpeg(scene[:, 3:67]))).shape == (48, 64, 3)
    assert [m.get("rows") for m in session.ws.texts] == [32, 48]


def test_without_opencv_the_camera_is_not_steadied(tmp_path, networks_dir, monkeypatch):
    monkeypatch.setattr(live, "steady_available", lambda: False)
    manager = new_manager(tmp_path)
    app = server.create_app(manager, networks=live.Networks(str(networks_dir), "float32"))
    c = TestClient(app, base_url=LOCAL)
    try:
        assert c.get("/").status_code == 200
        answer = c.get("api/networks").json()
        assert answer["steady_available"] is False and answer["live_steady"] == 0.0
        with connect(c) as ws:
            ws.send_text(json.dumps({"network": "one"}))  # the server's 0
            assert json.loads(ws.receive_text())["steady"] == 0.0
            ws.send_text(json.dumps({"network": "one", "steady": 0.5}))
            error = json.loads(ws.receive_text())["error"]
            assert "needs OpenCV: pip install 'nst_keras[video]'" in error
    finally:
        manager.close()
        c.close()


def test_one_camera_at_a_time(client):
    c, _ = client
    with connect(c) as first:
        first.send_text(json.dumps({"network": "one"}))
        first.receive_text()
        with connect(c) as second:
            said = json.loads(second.receive_text())
            assert said == {"error": live.BUSY}
            with pytest.raises(WebSocketDisconnect):
                second.receive_text()
    with connect(c) as again:  # the first one left: free again
        again.send_text(json.dumps({"network": "one"}))
        assert json.loads(again.receive_text())["ready"] == "one"


@pytest.mark.parametrize("headers,message", [
    ({"origin": "http://evil.example"}, "refused a WebSocket from 'http://evil.example'"),
    ({"origin": "null"}, "refused a WebSocket from 'null'"),
    ({"host": "evil.example"}, "host 'evil.example' is not served here"),
])
def test_the_websocket_from_elsewhere_is_refused(client, headers, message):
    c, _ = client
    with pytest.raises(WebSocketDenialResponse) as refused:
        with connect(c, headers):
            pass
    assert refused.value.status_code == 403 and message in refused.value.text


def test_the_new_routes_need_the_page_s_cookie(tmp_path, networks_dir):
    manager = new_manager(tmp_path)
    app = server.create_app(manager, networks=live.Networks(str(networks_dir), "float32"))
    c = TestClient(app, base_url=LOCAL)
    try:
        for response in (c.get("api/networks"), stylize(c, make_picture(48, 64, 1))):
            assert response.status_code == 403 and "page's cookie" in one_line(response)
        with pytest.raises(WebSocketDenialResponse) as refused:
            with connect(c):
                pass
        assert refused.value.status_code == 403 and "page's cookie" in refused.value.text
        assert c.get("/").status_code == 200  # now it has the cookie
        with connect(c) as ws:
            ws.send_text(json.dumps({"network": "one"}))
            assert json.loads(ws.receive_text())["ready"] == "one"
    finally:
        manager.close()
        c.close()


def test_a_missing_networks_dir_is_one_line(tmp_path, capsys):
    assert server.main(["app", f"--networks_dir={tmp_path / 'none'}", "--port=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--networks_dir=" in err[0] and "is not a folder" in err[0]
