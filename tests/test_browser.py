"""The page in headless Chromium: an optimisation run from the form to its
download, the painting tool's masks, and the camera through a trained network
(a fake device).

One server (``python -m nst_keras.app``, random weights, tiny networks) and one
browser serve the three tests: each test opens the page afresh, and the module
stops both when it ends.  The helpers are tests/test_app.py's.
"""

import os

import numpy as np
import pytest
from PIL import Image

from conftest import make_picture
from test_app import (CHROMEDRIVER, CHROMIUM, chromium, fill, server_url, start_server,
                      stop_browser_and_server, wait_for)
from test_app_live import make_networks
from test_app_masks import read_run_json

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs the Debian packages chromium and chromium-driver "
           "(/usr/bin/chromium, /usr/bin/chromedriver)")


class Page:
    """The server (its process, URL and results folder), the browser and its
    downloads folder."""

    def __init__(self, process, results, driver, downloads):
        self.process, self.url, self.results = process, server_url(process), results
        self.driver, self.downloads = driver, downloads

    def server_said(self):
        """The server's last lines of output."""
        return "".join(self.process.tail)[-1500:]

    def open(self, ready="ready", value="1"):
        """The page afresh, once ``document.body.dataset[ready]`` reads ``value``."""
        self.driver.get(self.url)
        wait_for(lambda: self.driver.execute_script(
            f"return document.body.dataset.{ready}") == value)
        return self.driver

    def runs(self):
        return sorted(os.listdir(self.results)) if self.results.exists() else []

    def start_a_short_run(self):
        """The fast preset with Adam, 64 rows, 6 steps, started; the runs before it."""
        from selenium.webdriver.support.ui import Select

        Select(self.driver.find_element("id", "preset")).select_by_value("fast")
        Select(self.driver.find_element("id", "optimizer")).select_by_value("adam")
        fill(self.driver, "rows", "64")
        fill(self.driver, "iterations", "6")
        before = set(self.runs())
        self.driver.find_element("id", "stylize").click()
        return before


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    pytest.importorskip("selenium")
    d = tmp_path_factory.mktemp("browser")
    for folder in ("networks", "downloads"):
        (d / folder).mkdir()
    networks = make_networks(d / "networks")
    process = start_server(d / "results", "--max_strength=1.5", f"--networks_dir={networks}",
                           "--live_rows=64")
    driver = None
    try:
        driver = chromium(d / "profile", d / "downloads",
                          ("--use-fake-device-for-media-stream",
                           "--use-fake-ui-for-media-stream"))
        driver.set_script_timeout(30)
        yield Page(process, d / "results", driver, d / "downloads")
    finally:
        stop_browser_and_server(driver, process, d / "profile")


def test_the_page_in_a_real_browser(page, tmp_path):
    for name, seed in (("photo.png", 0), ("painting.png", 1)):
        Image.fromarray(make_picture(60, 80, seed)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a picture\n")
    driver = page.open()
    strength = driver.find_element("id", "strength")  # the server's --max_strength
    assert (strength.get_attribute("min"), strength.get_attribute("max")) == ("-1.5", "1.5")
    driver.find_element("id", "content-input").send_keys(str(tmp_path / "photo.png"))
    driver.find_element("id", "style-input").send_keys(str(tmp_path / "painting.png"))
    before = page.start_a_short_run()
    seen = set()

    def finished():
        state = driver.execute_script(
            "const p = document.getElementById('preview');"
            "return [document.body.dataset.result, p.dataset.updates, p.src];")
        if state[2]:
            seen.add(state[2])
        return state[0] in ("finished", "failed", "stopped")

    wait_for(finished, 60)
    assert driver.execute_script("return document.body.dataset.result") == "finished", \
        driver.find_element("id", "message").text
    updates = int(driver.find_element("id", "preview").get_attribute("data-updates"))
    assert updates >= 2 and len(seen) >= 2  # the preview changed while it formed
    wait_for(lambda: driver.execute_script(
        "const p = document.getElementById('preview');"
        "return p.complete && p.naturalHeight === 64 && p.src.includes('result.png');"))
    assert "Finished at step 6 of 6" in driver.find_element("id", "status").text
    (run,) = set(page.runs()) - before  # run-0007 downloads as nst_keras_run7_result.png
    driver.find_element("id", "download-png").click()
    downloaded = page.downloads / f"nst_keras_run{int(run.split('-')[1])}_result.png"
    wait_for(lambda: downloaded.exists() and downloaded.stat().st_size > 0)
    with Image.open(downloaded) as result:
        assert result.format == "PNG" and result.size[1] == 64
    assert driver.find_elements("css selector", "#gallery .card img")
    driver.find_element("id", "content-input").send_keys(str(tmp_path / "notes.txt"))
    driver.find_element("id", "stylize").click()
    message = driver.find_element("id", "message")
    wait_for(lambda: message.is_displayed() and "not an image" in message.text)
    assert "notes.txt" in message.text


def test_painting_a_region_in_the_browser_sends_the_masks(page, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    Image.fromarray(make_picture(60, 80, 0)).save(tmp_path / "photo.png")
    for k in (1, 2):
        Image.fromarray(make_picture(44, 56, k)).save(tmp_path / f"painting{k}.png")
    driver = page.open()
    driver.find_element("id", "content-input").send_keys(str(tmp_path / "photo.png"))
    driver.find_element("id", "style-input").send_keys(
        f"{tmp_path / 'painting1.png'}\n{tmp_path / 'painting2.png'}")
    canvas = driver.find_element("id", "regions-canvas")
    wait_for(lambda: canvas.is_displayed() and canvas.get_attribute("width") == "80")
    assert "Unpainted: painting 1" in driver.find_element("id", "regions").text
    driver.find_element("css selector", '#brushes .swatch[data-brush="2"]').click()
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvas)
    width = canvas.rect["width"]
    ActionChains(driver).move_to_element_with_offset(canvas, int(-0.3 * width), 0) \
        .click_and_hold().move_by_offset(int(0.3 * width), 0) \
        .move_by_offset(int(0.3 * width), 0).release().perform()
    before = page.start_a_short_run()
    wait_for(lambda: driver.execute_script("return document.body.dataset.result")
             in ("finished", "failed", "stopped"), 90)
    assert driver.execute_script("return document.body.dataset.result") == "finished", \
        driver.find_element("id", "message").text
    (run,) = set(page.runs()) - before
    paths = read_run_json(page.results / run / "run.json")["style_masks"]
    assert [os.path.basename(p) for p in paths] == ["mask_1.png", "mask_2.png"]
    first, second = (np.asarray(Image.open(p).convert("L")).astype(int) for p in paths)
    assert first.shape == second.shape == (60, 80)
    assert set(np.unique(first)) <= {0, 255} and (first + second == 255).all()  # a partition
    assert (second[30, 20:60] == 255).all()  # along the stroke, across the middle
    assert (second[:20] == 0).all() and (second[42:] == 0).all()  # nowhere else
    assert (first[:20] == 255).all() and (first[:, :12] == 255).all()


LIVE_SCRIPT = """
const done = arguments[arguments.length - 1];
const ws = new WebSocket(arguments[0]);
ws.onopen = () => done("open");
ws.onerror = () => done("refused");
setTimeout(() => done("timeout"), 10000);
"""


def test_the_camera_live_in_a_real_browser(page, tmp_path):
    from selenium.webdriver.support.ui import Select

    Image.fromarray(make_picture(60, 80, 0)).save(tmp_path / "photo.png")
    runs = page.runs()
    driver = page.open("networks", "2")
    assert [o.get_attribute("value") for o in
            Select(driver.find_element("id", "network")).options] == ["", "one", "three"]
    # A photo through a network at once.
    driver.find_element("id", "content-input").send_keys(str(tmp_path / "photo.png"))
    Select(driver.find_element("id", "network")).select_by_value("three")
    assert len(driver.find_elements("css selector", "#blend-sliders input")) == 3
    driver.find_element("id", "rows").clear()
    driver.find_element("id", "rows").send_keys("48")
    driver.find_element("id", "stylize").click()
    wait_for(lambda: driver.execute_script("return document.body.dataset.result")
             == "stylized", 30)
    wait_for(lambda: driver.execute_script(
        "const p = document.getElementById('preview');"
        "return p.complete && p.naturalHeight === 48;"))
    assert "Stylised with three in" in driver.find_element("id", "status").text
    # The camera (steadied: the slider shows --live_steady).
    assert driver.execute_script(
        "return [document.getElementById('steady-label').hidden, "
        "document.getElementById('steady').value];") == [False, "0.5"]
    Select(driver.find_element("id", "network")).select_by_value("one")
    driver.find_element("id", "camera").click()
    wait_for(lambda: int(driver.execute_script(
        "return document.body.dataset.liveFrames || '0'")) >= 10, 60)
    shown = driver.execute_script(
        "return [document.body.dataset.liveRows, "
        "document.getElementById('live-fps').textContent];")
    assert shown[0] == "64"
    fps = float(shown[1].split()[0])
    assert shown[1].endswith(" fps") and fps > 0
    print(f"live: {shown[1]} at 64 rows, a tiny network")
    # Another size from the page: the frames come back at it.
    sizes = Select(driver.find_element("id", "live-rows"))
    assert sizes.first_selected_option.get_attribute("value") == "64"
    sizes.select_by_value("128")
    try:
        # (the network's first frames of a new size are traced anew: slow on a
        # machine the rest of the suite keeps busy)
        wait_for(lambda: driver.execute_script("return document.body.dataset.liveRows")
                 == "128", 60)
    except AssertionError:
        raise AssertionError("no frame of 128 rows shown: " + str(driver.execute_script(
            "return [document.body.dataset.liveRows, document.body.dataset.liveFrames, "
            "document.getElementById('live-info').textContent, "
            "document.getElementById('message').textContent, live.ready, live.loading, "
            "live.inFlight, document.getElementById('live-rows').value]"))
            + "; the server said: " + page.server_said()) from None
    driver.execute_script("window.tracks = live.stream.getTracks();")
    driver.find_element("id", "camera").click()  # stop
    assert driver.execute_script(
        "return document.getElementById('camera-video').srcObject === null && "
        "window.tracks.every((t) => t.readyState === 'ended') && "
        "document.body.dataset.live === 'off';")
    # Another origin (the same server by another name) cannot open the WebSocket.
    port = page.url.rstrip("/").rsplit(":", 1)[1]
    driver.get(f"http://localhost:{port}/")
    got = driver.execute_async_script(LIVE_SCRIPT, f"ws://127.0.0.1:{port}/api/live")
    assert got == "refused"
    driver.get(page.url)  # its own page still can
    got = driver.execute_async_script(LIVE_SCRIPT, f"ws://127.0.0.1:{port}/api/live")
    assert got == "open"
    assert page.runs() == runs  # a network's pictures are not runs: nothing was written
