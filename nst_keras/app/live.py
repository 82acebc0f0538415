"""The page's trained networks: one picture at once, and the camera live.

* ``Networks``: the ``.keras`` style networks of ``--networks_dir`` (id: the
  file name without ``.keras``; no path ever comes from the browser), each
  loaded once at ``--precision`` (``auto`` by default), and one lock for the
  network passes, taken in turn by every caller;
* ``stylize_upload``: ``POST /api/stylize``'s picture (the photo at the
  asked rows through the chosen network, the blend of a several-painting
  one), computed beside the optimisation runs, never queued behind them;
* ``LiveSession``: one camera over a WebSocket (``/api/live``).  The page
  sends a JSON text message ``{"network", "blend", "rows", "steady"}`` (again
  whenever a setting changes) and binary frames (JPEG, PNG or WebP); the server
  answers each frame it stylises with a binary JPEG of the stylised frame
  and a text ``{"frame", "ms", "dropped"}``.  A reader keeps only the
  newest frame not yet taken (latest wins: when the server is slower than
  the camera the older frames are dropped, never queued); a frame over
  ``--max_frame_kb`` is dropped with a text ``{"error"}`` and the session
  goes on.  ``steady`` (0 to 0.95, ``--live_steady`` by default) carries
  that share of the previous stylised frame along the optical flow (OpenCV's
  DIS, fast preset) into the next where the flow holds, as films'
  ``--blend_previous`` does: less flicker.  One camera at a time: a second
  page's connection is told so in one line and closed.

Nothing here reads the browser's paths or writes a file.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
from PIL import Image

from nst_keras.engine import imaging
from nst_keras.errors import UserError
from nst_keras.fields import MAX_CARRIED as MAX_STEADY

JPEG_QUALITY = 85
MIN_LIVE_ROWS = 16
STEADY_FLOW = "dis_fast"
BUSY = "another page is using the live camera; stop it there first (one camera at a time)"


def steady_available() -> bool:
    """Whether the camera can be steadied (OpenCV, the video extra, is installed)."""
    return importlib.util.find_spec("cv2") is not None


class Networks:
    """The style networks of ``folder`` (``None``: none), loaded when first used."""

    def __init__(self, folder: Optional[str], precision: str = "auto"):
        self.folder, self.precision = folder, precision
        self.lock = threading.Lock()       # one network pass at a time, in turn
        self._loaded: Dict[str, tuple] = {}
        self._loading = threading.Lock()
        self.camera = threading.Lock()     # held by the page whose camera is live

    def ids(self) -> List[str]:
        if not self.folder or not os.path.isdir(self.folder):
            return []
        return sorted(n[:-len(".keras")] for n in os.listdir(self.folder)
                      if n.endswith(".keras") and not n.startswith("."))

    def get(self, network_id: str):
        """The loaded ``StyleNetwork`` of ``network_id`` (``UserError`` if unknown)."""
        if network_id not in self.ids():
            raise UserError(f"no network {str(network_id)[:60]!r} in the server's "
                            "--networks_dir; choose one from the list")
        path = os.path.join(self.folder, network_id + ".keras")
        stamp = os.stat(path).st_mtime_ns
        with self._loading:
            held = self._loaded.get(network_id)
            if held is None or held[0] != stamp:
                from nst_keras.engine import network as netlib  # late: TensorFlow

                held = (stamp, netlib.load_network(path, self.precision))
                self._loaded[network_id] = held
        return held[1]

    def describe(self) -> List[Dict]:
        """``[{"id", "styles"}]`` of the networks that load (the others are left out)."""
        out = []
        for network_id in self.ids():
            try:
                out.append({"id": network_id, "styles": self.get(network_id).styles})
            except UserError:
                continue
        return out

    def stylize(self, network_id: str, picture: np.ndarray, blend=None) -> np.ndarray:
        network = self.get(network_id)
        check_blend(network, blend)
        with self.lock:
            return network(picture, batch_size=1, blend=blend)


def check_blend(network, blend) -> None:
    """``UserError`` (``blend_vector``'s reason) unless ``blend`` suits ``network``."""
    from nst_keras.engine.network import blend_vector  # late: starts TensorFlow

    try:
        blend_vector(blend, network.styles)
    except ValueError as e:
        raise UserError(str(e)) from None


def parse_blend(values) -> Optional[List[float]]:
    """The page's blend weights (``None`` or empty: equal); ``UserError`` if not numbers."""
    if values is None or values == [] or values == "":
        return None
    if isinstance(values, str):
        values = [values]
    # A form's fields ("1", "0.5") or comma-separated ones ("1,0.5"); JSON numbers.
    values = [part for v in values for part in (
        str(v).split(",") if isinstance(v, str) else [v]) if str(part).strip()]
    try:
        weights = [float(v) for v in values]
    except (TypeError, ValueError):
        raise UserError("blend weights must be numbers") from None
    if not all(np.isfinite(weights)):
        raise UserError("blend weights must be finite numbers")
    return weights or None


def parse_steady(value) -> float:
    """The camera's steadiness (0 to ``MAX_STEADY``); ``UserError`` if not, or if
    it is asked for without OpenCV."""
    try:
        steady = float(value)
    except (TypeError, ValueError):
        raise UserError("the live steadiness must be a number from 0 to "
                        f"{MAX_STEADY}") from None
    if not 0.0 <= steady <= MAX_STEADY:  # also refuses NaN
        raise UserError(f"the live steadiness must be 0 to {MAX_STEADY}, not {value!r}")
    if steady and not steady_available():
        raise UserError("a steady camera needs OpenCV: pip install 'nst_keras[video]' "
                        "on the server, or set Steady to 0")
    return steady


def fit_rows(picture: np.ndarray, rows: int) -> np.ndarray:
    """``picture`` resized to ``rows`` rows (its aspect kept; bilinear)."""
    height, width = picture.shape[:2]
    if height == rows:
        return picture
    size = imaging.target_size(width, height, rows)
    return imaging.load_image(picture, size, "bilinear")


def jpeg(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def steadied(frame: np.ndarray, picture: np.ndarray, previous, steady: float):
    """``(kept, answer)``: ``picture`` with ``steady`` of ``previous`` (the last
    answer as ``(frame, stylised float32)``, or ``None``) carried along the flow
    from ``previous``'s frame to ``frame``; ``kept`` is the next ``previous``."""
    from nst_keras.engine import flow  # late: OpenCV (the video extra)

    out = picture.astype(np.float32)
    if previous is not None and previous[0].shape == frame.shape:
        moved = flow.motion(frame, previous[0], STEADY_FLOW)
        out = flow.carry(out, previous[1], moved, steady)
    return (frame, out), np.clip(np.round(out), 0, 255).astype(np.uint8)


class LiveSession:
    """One page's camera over ``websocket`` (Starlette), until either side ends it.

    ``networks``: ``Networks``; ``max_rows``: the largest frame height asked
    for; ``max_frame_bytes``: a frame over it is dropped with a message;
    ``max_pixels``: the same for a frame that decodes too large.
    """

    def __init__(self, websocket, networks: Networks, max_rows: int, max_frame_bytes: int,
                 max_pixels: int, default_rows: int, default_steady: float = 0.0):
        self.ws, self.networks = websocket, networks
        self.max_rows, self.max_frame_bytes = int(max_rows), int(max_frame_bytes)
        self.max_pixels, self.rows = int(max_pixels), int(default_rows)
        self.network_id, self.blend = None, None
        self.steady = float(default_steady)
        # (frame, stylised float32) of the last answer, for steady.  The frames are
        # stylised in a thread while the settings may change on the event loop:
        # a change that drops it bumps ``generation``, and a frame begun before
        # the change neither reads nor keeps it.
        self.previous, self.generation = None, 0
        self.latest: Optional[bytes] = None
        self.arrived = asyncio.Event()
        self.closed = False
        self.frames = self.dropped = 0

    async def run(self) -> None:
        await self.ws.accept()
        if not self.networks.camera.acquire(blocking=False):
            await self._say({"error": BUSY})
            await self.ws.close(code=1013)
            return
        try:
            worker = asyncio.ensure_future(self._work())
            try:
                await self._read()
            finally:
                self.closed = True
                self.arrived.set()
                await worker
        finally:
            self.networks.camera.release()

    async def _say(self, message: Dict) -> None:
        try:
            await self.ws.send_text(json.dumps(message))
        except Exception:  # noqa: BLE001  the page has gone; the reader sees it too
            self.closed = True

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            if text is not None:
                await self._settings(text)
            elif data is not None:
                if len(data) > self.max_frame_bytes:
                    self.dropped += 1
                    await self._say({"error": f"a camera frame of {imaging.size_text(len(data))}"
                                     f" was dropped: the limit is "
                                     f"{imaging.size_text(self.max_frame_bytes)} "
                                     "(--max_frame_kb); send smaller frames"})
                    continue
                if self.latest is not None:
                    self.dropped += 1  # not taken yet: the newer frame wins
                self.latest = data
                self.arrived.set()

    async def _settings(self, text: str) -> None:
        try:
            asked = json.loads(text)
            if not isinstance(asked, dict):
                raise ValueError
        except ValueError:
            await self._say({"error": "the live settings must be a JSON object"})
            return
        try:
            network_id = str(asked.get("network") or "")
            network = await asyncio.to_thread(self.networks.get, network_id)  # may load it
            blend = parse_blend(asked.get("blend"))
            check_blend(network, blend)
            rows = int(asked.get("rows") or self.rows)
            if not MIN_LIVE_ROWS <= rows <= self.max_rows:
                raise UserError(f"live rows {rows} must be {MIN_LIVE_ROWS} to {self.max_rows}")
            steady = parse_steady(asked.get("steady", self.steady))
        except (UserError, TypeError, ValueError) as e:
            await self._say({"error": str(e) if isinstance(e, UserError)
                             else "the live rows must be a whole number"})
            return
        if (network_id, rows) != (self.network_id, self.rows):
            # nothing to carry into another network's or size's frames
            self.previous, self.generation = None, self.generation + 1
        self.network_id, self.blend, self.rows, self.steady = network_id, blend, rows, steady
        await self._say({"ready": network_id, "styles": network.styles, "rows": rows,
                         "steady": steady})

    def _stylize(self, data: bytes) -> bytes:
        """The answer to one frame (run in a thread: it reads the settings once)."""
        generation, previous = self.generation, self.previous
        network_id, blend, rows, steady = self.network_id, self.blend, self.rows, self.steady
        frame = imaging.decode_picture(data, "the camera frame", self.max_frame_bytes,
                                       self.max_pixels, 1)
        frame = fit_rows(frame, rows)
        picture = self.networks.stylize(network_id, frame, blend)
        if not steady:
            previous, out = None, picture
        else:
            previous, out = steadied(frame, picture, previous, steady)
        if generation == self.generation:
            self.previous = previous
        return jpeg(out)

    async def _work(self) -> None:
        while not self.closed:
            await self.arrived.wait()
            self.arrived.clear()
            data, self.latest = self.latest, None
            if data is None or self.closed:
                continue
            if self.network_id is None:
                await self._say({"error": "choose a network before sending frames"})
                continue
            started = time.perf_counter()
            try:
                answer = await asyncio.to_thread(self._stylize, data)
            except UserError as e:
                self.dropped += 1
                await self._say({"error": str(e)})
                continue
            except Exception as e:  # noqa: BLE001  one frame fails, the camera goes on
                self.dropped += 1
                print(f"live camera: a frame failed ({type(e).__name__}: {e})", file=sys.stderr,
                      flush=True)
                await self._say({"error": f"a camera frame could not be stylised "
                                 f"({type(e).__name__}); the next frames are tried"})
                continue
            self.frames += 1
            try:
                await self.ws.send_bytes(answer)
            except Exception:  # noqa: BLE001  the page has gone
                return
            await self._say({"frame": self.frames, "dropped": self.dropped,
                             "ms": round(1000 * (time.perf_counter() - started), 1)})


def stylize_upload(networks: Networks, network_id: str, data: bytes, name: str, rows: int,
                   blend, max_bytes: int, max_pixels: int) -> Dict:
    """The PNG of one uploaded photo through a network and how long it took."""
    started = time.perf_counter()
    photo = imaging.decode_picture(data, f"the content photo ({name})" if name else
                                   "the content photo", max_bytes, max_pixels, MIN_LIVE_ROWS)
    picture = networks.stylize(network_id, fit_rows(photo, rows), blend)
    return {"png": png(picture), "ms": round(1000 * (time.perf_counter() - started), 1),
            "shape": picture.shape}
