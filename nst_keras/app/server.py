"""The web app's server: Starlette routes, server-sent events, command line.

Routes (all under the server's own origin; the page needs nothing else):

* ``GET /``, ``/static/app.js``, ``/static/app.css``: the page;
* ``GET /api/presets``: the presets and limits the page's form offers;
* ``POST /api/jobs``: uploads (``content``, ``style`` one or more, ``blend``,
  optionally ``mask_1`` ... ``mask_<n>``: one painted mask per style) and the
  form; answers ``{"id", "position"}`` or ``400 {"error"}``;
* ``GET /api/jobs/{id}/events``: the job's progress as server-sent events;
* ``POST /api/jobs/{id}/stop`` and ``/continue``;
* ``GET /api/jobs/{id}/result.png`` and ``/run.json``: the downloads;
* ``GET /api/gallery``: every result of the results directory, earlier starts'
  too;
* ``GET /api/networks``: the trained networks of ``--networks_dir`` and the
  live defaults; ``POST /api/stylize`` (``content``, ``network``, ``rows``,
  ``blend``): the photo through a network at once, as ``image/png``;
* ``/api/live``: the camera through a network, a WebSocket
  (``live.LiveSession``).

In front of them ``guard.Guard`` checks the Host, the Origin, the page's
cookie (set by ``GET /``) and the upload's bytes as they stream in, for the
WebSocket too (docs/security.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import sys
import tempfile
import threading
from typing import Dict, List, Optional

import uvicorn
from absl import flags
from starlette.applications import Starlette
from starlette.formparsers import MultiPartException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from nst_keras import cli, settings
from nst_keras.app import forms, guard, jobs, live
from nst_keras.app.options import ServerOptions
from nst_keras.errors import UserError

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
PAGE_FILES = {"index.html": "text/html; charset=utf-8",
              "app.js": "text/javascript; charset=utf-8",
              "app.css": "text/css; charset=utf-8"}
POLL_S = 0.05        # how often an event stream looks for news
KEEPALIVE_S = 5.0    # a comment line this often, so a closed page is noticed
MAX_STYLES = 8
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def _page(name: str):
    with open(os.path.join(STATIC, name), "rb") as f:
        body = f.read()

    async def serve(request: Request) -> Response:
        return Response(body, media_type=PAGE_FILES[name], headers=HEADERS)
    return serve


class Handlers:
    """The routes' handlers over one ``jobs.Manager``."""

    def __init__(self, manager: jobs.Manager, limits: forms.Limits):
        self.manager, self.limits = manager, limits

    def _job(self, request: Request) -> jobs.Job:
        job = self.manager.result(request.path_params["job_id"])
        if job is None:
            raise UserError("no such run in the results directory; start a new one")
        return job

    async def presets(self, request: Request) -> Response:
        return JSONResponse({
            "presets": [{"name": n, "label": p["label"], "form": p["form"]}
                        for n, p in forms.PRESETS.items()],
            "limits": {"max_rows": self.limits.max_rows, "max_bytes": self.limits.max_bytes,
                       "max_pixels": self.limits.max_pixels, "max_styles": MAX_STYLES,
                       "max_iterations": self.limits.max_iterations,
                       "strength": self.limits.strength_range},
            "options": {"optimizer": list(settings.OPTIMIZERS),
                        "preserve_colors": list(settings.COLOR_MODES)}}, headers=HEADERS)

    async def read_form(self, request: Request):
        # The body's bytes are counted as they arrive (guard.Body), so this
        # never holds more than the limit.
        try:
            form = await request.form(max_files=2 * MAX_STYLES + 1, max_fields=64,
                                      max_part_size=self.limits.max_bytes)
        except MultiPartException as e:
            raise UserError(f"the upload could not be read ({e.message})") from None
        fields: Dict[str, List[str]] = {}
        files: Dict[str, list] = {"content": [], "style": []}
        masks: Dict[int, tuple] = {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                if key in files:
                    files[key].append((value.filename or "", await value.read()))
                elif forms.mask_number(key) is not None:
                    if forms.mask_number(key) in masks:
                        raise UserError(f"the form has two {key} files; paint the photo again")
                    masks[forms.mask_number(key)] = (value.filename or "", await value.read())
            else:
                fields.setdefault(key, []).append(str(value))
        await form.close()
        files["masks"] = masks
        return fields, files

    def _pictures(self, files):
        """The uploads checked and decoded: the photo's array and the uploads to save
        (``jobs.Job``'s ``pending``)."""
        if not files["content"] or not files["content"][0][1]:
            raise UserError("choose a content photo first")
        styles = [f for f in files["style"] if f[1]]
        if not styles:
            raise UserError("choose at least one style picture")
        if len(styles) > MAX_STYLES:
            raise UserError(f"at most {MAX_STYLES} style pictures, please")
        name, data = files["content"][0]
        content = forms.decode_picture(data, name, "content photo", self.limits)
        for i, (n, d) in enumerate(styles):
            forms.decode_picture(d, n, f"style picture {i + 1}", self.limits)
        return content, {"content": files["content"][0], "styles": styles}

    def _init_path(self, fields) -> Optional[str]:
        choice = (fields.get("init") or ["content"])[0]
        if not choice.startswith("result:"):
            return None
        source = self.manager.result(choice[len("result:"):])
        if source is None or source.image_path is None or not os.path.isfile(source.image_path):
            raise UserError("that gallery result is gone; choose another starting picture")
        return source.image_path

    async def create(self, request: Request) -> Response:
        try:
            fields, files = await self.read_form(request)
            self.manager.check_room()  # before decoding the pictures
            content, pending = self._pictures(files)
            n_styles = len(pending["styles"])
            pending["masks"] = forms.decode_masks(files["masks"], n_styles, content.shape,
                                                  self.limits)
            pending["init"] = self._init_path(fields)
            config = forms.build_config(self.manager.base, self.manager.explicit, fields,
                                        n_styles, pending["init"], pending["masks"],
                                        self.limits)
            names = [pending["content"][0]] + [n for n, _ in pending["styles"]]
            summary = forms.summary(fields, config, names, pending["masks"] is not None)
            job = self.manager.new_job(config, summary, pending=pending)
            position = self.manager.submit(job)
        except UserError as e:
            return _error(str(e), getattr(e, "status", 400))
        return JSONResponse({"id": job.id, "position": position}, status_code=201,
                            headers=HEADERS)

    async def stop(self, request: Request) -> Response:
        try:
            job = self._job(request)
        except UserError as e:
            return _error(str(e), 404)
        self.manager.stop(job)
        return JSONResponse(job.public(), headers=HEADERS)

    async def resume(self, request: Request) -> Response:
        try:
            new = self.manager.continue_job(self._job(request))
        except UserError as e:
            return _error(str(e), getattr(e, "status", 400))
        return JSONResponse({"id": new.id, "position": self.manager.position(new)},
                            status_code=201, headers=HEADERS)

    async def download(self, request: Request) -> Response:
        try:
            job = self._job(request)
        except UserError as e:
            return _error(str(e), 404)
        what = request.path_params["what"]
        if what not in ("result.png", "run.json"):
            return _error("not found", 404)
        path = job.image_path if what == "result.png" else job.run_json()
        if path is None or not os.path.isfile(path):
            return _error("this run has no result yet", 404)
        kind = "image/png" if what == "result.png" else "application/json"
        return FileResponse(path, media_type=kind, filename=f"nst_keras_run{job.id}_{what}",
                            headers=HEADERS)

    async def gallery(self, request: Request) -> Response:
        return JSONResponse({"results": self.manager.gallery()}, headers=HEADERS)

    async def events(self, request: Request) -> Response:
        try:
            job = self._job(request)
        except UserError as e:
            return _error(str(e), 404)
        return StreamingResponse(event_stream(self.manager, job), headers=HEADERS,
                                 media_type="text/event-stream")


class NetworkHandlers:
    """The trained networks' routes: the list, a picture at once, the camera."""

    def __init__(self, handlers: Handlers, networks: Optional[live.Networks] = None,
                 live_rows: int = 256, max_frame_bytes: int = 2 ** 20,
                 live_steady: float = 0.5):
        self.handlers, self.limits = handlers, handlers.limits
        self.networks = networks or live.Networks(None)
        self.live_rows, self.max_frame_bytes = int(live_rows), int(max_frame_bytes)
        self.steady_available = live.steady_available()
        self.live_steady = float(live_steady) if self.steady_available else 0.0

    async def list_networks(self, request: Request) -> Response:
        described = await asyncio.to_thread(self.networks.describe)
        return JSONResponse({"networks": described, "live_rows": self.live_rows,
                             "max_frame_bytes": self.max_frame_bytes,
                             "max_live_rows": self.limits.max_rows,
                             "live_steady": self.live_steady,
                             "steady_available": self.steady_available}, headers=HEADERS)

    async def stylize(self, request: Request) -> Response:
        """One photo through a network at once: the PNG (``X-Stylize-Ms``: how long)."""
        try:
            fields, files = await self.handlers.read_form(request)
            if not files["content"] or not files["content"][0][1]:
                raise UserError("choose a content photo first")
            name, data = files["content"][0]
            network_id = (fields.get("network") or [""])[0]
            try:
                rows = int((fields.get("rows") or [str(self.live_rows)])[0])
            except ValueError:
                raise UserError("the output size (rows) must be a whole number") from None
            if not live.MIN_LIVE_ROWS <= rows <= self.limits.max_rows:
                raise UserError(f"the output size must be {live.MIN_LIVE_ROWS} to "
                                f"{self.limits.max_rows} rows")
            blend = live.parse_blend(fields.get("blend"))
            made = await asyncio.to_thread(
                live.stylize_upload, self.networks, network_id, data, name, rows, blend,
                self.limits.max_bytes, self.limits.max_pixels)
        except UserError as e:
            return _error(str(e), getattr(e, "status", 400))
        return Response(made["png"], media_type="image/png",
                        headers={**HEADERS, "X-Stylize-Ms": str(made["ms"])})

    async def live(self, websocket: WebSocket) -> None:
        await live.LiveSession(websocket, self.networks, self.limits.max_rows,
                               self.max_frame_bytes, self.limits.max_pixels,
                               self.live_rows, self.live_steady).run()


def _sse(kind: str, data: Dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _with_preview(job: jobs.Job, batch: List[Dict]) -> List[Dict]:
    """The batch with the latest preview attached to its last preview event."""
    last = max((i for i, e in enumerate(batch) if e.get("preview")), default=None)
    picture = job.preview
    if last is None or picture is None:
        return batch
    batch = list(batch)
    batch[last] = dict(batch[last], image="data:image/png;base64," +
                       base64.b64encode(picture).decode("ascii"))
    return batch


async def event_stream(manager: jobs.Manager, job: jobs.Job):
    """A job's events as server-sent events, until it ends (or the server stops)."""
    index, position, quiet = 0, None, 0.0
    with job.listening():
        while True:
            job.heard()
            place = manager.position(job)
            if place != position:
                position = place
                yield _sse("queue", {"position": place})
            batch = job.events_since(index)
            index += len(batch)
            for event in _with_preview(job, batch):
                yield _sse(event["type"], event)
            if batch and batch[-1]["type"] == "end" or manager.closed and job.done:
                return
            quiet = 0.0 if batch else quiet + POLL_S
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_S)


def create_app(manager: jobs.Manager, limits: Optional[forms.Limits] = None,
               policy: Optional[guard.Policy] = None,
               networks: Optional[live.Networks] = None, live_rows: int = 256,
               max_frame_bytes: int = 2 ** 20, live_steady: float = 0.5) -> Starlette:
    """The Starlette application over ``manager`` (and the trained ``networks``),
    behind ``guard.Guard(policy)`` (default: served on loopback only, no token;
    bodies up to ``limits.max_bytes``)."""
    limits, policy = limits or forms.Limits(), policy or guard.Policy()
    h = Handlers(manager, limits)
    n = NetworkHandlers(h, networks, live_rows, max_frame_bytes, live_steady)
    routes = [Route("/", _page("index.html")),
              Route("/static/app.js", _page("app.js")),
              Route("/static/app.css", _page("app.css")),
              Route("/api/presets", h.presets),
              Route("/api/gallery", h.gallery),
              Route("/api/networks", n.list_networks),
              Route("/api/stylize", n.stylize, methods=["POST"]),
              WebSocketRoute("/api/live", n.live),
              Route("/api/jobs", h.create, methods=["POST"]),
              Route("/api/jobs/{job_id}/events", h.events),
              Route("/api/jobs/{job_id}/stop", h.stop, methods=["POST"]),
              Route("/api/jobs/{job_id}/continue", h.resume, methods=["POST"]),
              Route("/api/jobs/{job_id}/{what:str}", h.download)]
    app = Starlette(routes=routes, middleware=[Middleware(guard.Guard, policy=policy,
                                                           max_bytes=limits.max_bytes)])
    app.state.manager, app.state.policy = manager, policy
    # A frame over --max_frame_kb gets a message; one over this ends the connection.
    app.state.ws_max_size = 4 * int(max_frame_bytes) + 2 ** 16
    return app


# --------------------------------------------------------------------------
# Command line


def make_flags() -> flags.FlagValues:
    """The engine's flags plus the server's own (``ServerOptions``)."""
    f = flags.FlagValues()
    cli.define_flags(f)
    cli.define_flags(f, ServerOptions)
    return f


def base_config(f: flags.FlagValues):
    """The server's ``Config`` and the engine settings given on its command line."""
    for name in ("content_image", "style_image"):
        if f[name].value is None:  # the page uploads them
            f[name].value = "<upload>" if name == "content_image" else ["<upload>"]
    explicit = [n for n in settings.FIELDS if f[n].present]
    return cli.config_from_flags(f).replace(output_dir=None, resume=None), explicit


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port=0``: a free one); ``UserError`` if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        sock.close()
        why = getattr(e, "strerror", None) or str(e)
        raise UserError(f"cannot listen on {host}:{port} ({why}); choose another "
                        "--port (or --port=0 for any free one)") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


class Serving:
    """A server running in a thread (for tests and scripts); ``close()`` ends it."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0):
        self.socket = bind(host, port)
        self.url = url_of(self.socket)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                    timeout_graceful_shutdown=2,
                                                    ws_max_size=app.state.ws_max_size))
        self.manager = app.state.manager
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.manager.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.socket.close()


def policy_of(options: ServerOptions) -> guard.Policy:
    """Who the server answers: off loopback a token is required unless ``--no_token``
    (then the warning says that anyone who can reach it can use it)."""
    token = None
    if not guard.is_loopback(options.host):
        if options.no_token:
            print(f"warning: --host={options.host}: anyone who can reach this address can "
                  "use the app and its results; there is no login", file=sys.stderr,
                  flush=True)
        else:
            token = secrets.token_urlsafe(24)
            print(f"warning: --host={options.host}: anyone who can reach this address and "
                  "has the token in the address below can use the app and its results",
                  file=sys.stderr, flush=True)
    return guard.Policy(options.host, options.allowed_hosts, token)


def main(argv=None) -> int:
    """Serves the app until Ctrl-C; returns the exit status (2: bad flags)."""
    argv = sys.argv if argv is None else argv
    f = make_flags()
    if cli.print_help_if_asked(argv, __doc__, f):
        return 0
    try:
        cli.parse(argv, f)
        config, explicit = base_config(f)
        options = cli.options_from_flags(ServerOptions, f)
        if options.networks_dir and not os.path.isdir(options.networks_dir):
            raise UserError(f"--networks_dir={options.networks_dir} is not a folder; give the "
                            "folder of your .keras networks (python -m nst_keras.train "
                            "--output=DIR/NAME.keras)")
        sock = bind(options.host, options.port)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    results = options.results_dir or tempfile.mkdtemp(prefix="nst_keras_app_")
    os.makedirs(results, exist_ok=True)
    policy = policy_of(options)
    cli.import_tensorflow_quietly()
    manager = jobs.Manager(config, explicit, results, options.abandon_s,
                           max_queue=options.max_queue)
    # The networks run at --precision when it is given, else the fastest this machine has.
    networks = live.Networks(options.networks_dir,
                             config.precision if "precision" in explicit else "auto")
    app = create_app(manager, forms.Limits.of(options), policy, networks, options.live_rows,
                     options.max_frame_kb * 1024, options.live_steady)
    url = url_of(sock) + (f"?token={policy.token}" if policy.token else "")
    print(f"nst_keras app: {url} (results in {results}; Ctrl-C to stop)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=2,
                                           ws_max_size=app.state.ws_max_size))
    try:
        server.run(sockets=[sock])
    finally:
        manager.close()
        sock.close()
    return 0
