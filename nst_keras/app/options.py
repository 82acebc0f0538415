"""The options of ``python -m nst_keras.app`` (every ``Config`` flag besides)."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from nst_keras import fields
from nst_keras.constants import MIN_SIDE

_app = fields.group("app")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """The options of ``python -m nst_keras.app`` (``app.server``)."""

    port: int = _app(7860, "Port to serve on (0: any free port).", flag="integer")
    host: str = _app("127.0.0.1", "Address to bind; anything but loopback lets other "
                     "machines use the app and needs a token (see docs/security.md).")
    results_dir: Optional[str] = _app(
        None, "Directory of the page's runs, one directory each with its uploads; the gallery "
        "lists every run in it, also those of earlier starts (default: a new temporary "
        "directory).")
    abandon_s: float = _app(
        15.0, "Stop a run when no page has listened to it for this many seconds.",
        flag="float", check=fields.positive_finite)
    max_upload_mb: int = _app(25, "Largest upload, in MB.", flag="integer",
                              check=fields.positive_int)
    max_pixels: int = _app(40_000_000, "Most pixels an uploaded picture may have.",
                           flag="integer", check=fields.positive_int)
    max_rows: int = _app(
        2048, f"Largest output height (rows) the page may ask for; at least {MIN_SIDE}.",
        flag="integer", check=lambda name, value: int(value) >= MIN_SIDE or fields.fail(
            name, value, f"must be at least {MIN_SIDE} (the smallest picture side)"))
    max_iterations: int = _app(20000, "Most iterations per scale the page may ask for.",
                               flag="integer", check=fields.positive_int)
    max_strength: float = _app(
        2.0, "The page's style strength goes from -this to +this: log10 of the factor on the "
        "preset's style_weight.", flag="float", check=fields.positive_finite)
    max_queue: int = _app(4, "Most runs that may wait behind the running one; one more is "
                          "refused (429) until one ends.", flag="integer", check=fields.positive_int)
    allowed_hosts: Optional[Tuple[str, ...]] = _app(
        None, "More host names to serve besides the bound address and loopback (a reverse "
        "proxy's name); see docs/security.md.", flag="strings")
    networks_dir: Optional[str] = _app(
        None, "Folder of trained style networks (.keras files from python -m nst_keras.train): "
        "the page lists them, stylises a photo through one at once and the camera live.")
    live_rows: int = _app(256, "Height of the camera's frames the page sends to a network.", flag="integer", check=lambda name, value: 16 <= int(value)
                          <= 1080 or fields.fail(name, value, "must be 16 to 1080"))
    live_steady: float = _app(
        0.5, "Share of the previous stylised camera frame carried along the optical flow into "
        "the next, where the flow holds (less flicker; 0: each frame alone): where the page's "
        "Steady slider starts. Needs OpenCV (the video extra); without it the camera runs at 0.",
        flag="float", check=fields.carried_share)
    max_frame_kb: int = _app(1024, "Largest camera frame, in KB; a bigger one is dropped "
                             "with a message.", flag="integer", check=fields.positive_int)
    no_token: bool = _app(False, "Serve a --host other than loopback without a token: then "
                          "anyone who can reach it can use the app.", flag="boolean")


# --------------------------------------------------------------------------
# Validation


