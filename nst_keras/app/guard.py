"""What the server accepts, and from whom: a pure-ASGI layer in front of the routes.

In the order it checks a request (docs/security.md says why):

* **Host**: only the bound address, ``localhost``, ``127.0.0.1``, ``[::1]``
  (any port) and ``--allowed_hosts`` are served, so a page of another site
  whose name was pointed at this machine (DNS rebinding) is refused;
* **Origin**: a state-changing request (POST, PUT, PATCH, DELETE) whose
  ``Origin`` (or, without one, ``Referer``) is another origin is refused;
* **the page's cookie**: loading ``/`` sets a per-server secret in a
  ``SameSite=Strict; HttpOnly`` cookie; everything but the page itself
  (``/`` and ``/static/``) needs it.  With a token (a ``--host`` off
  loopback), ``/`` sets the cookie only for ``/?token=TOKEN`` (or a valid
  cookie already there);
* **bytes**: a body is counted as it streams in, before any form parser sees
  it; past the limit (or declared past it) the request is answered 413 at
  once and the rest is read and dropped for a moment, never kept.

The WebSocket of the live camera (``/api/live``) passes the same Host and
cookie checks, and its ``Origin`` (which browsers always send with one) must
be this server's own, whatever the method: a page of another site could
otherwise open it with the visitor's cookie (cross-site WebSocket
hijacking).  A refused WebSocket is answered 403 with the line, before any
message.

Every refusal is one plain-text line with ``Connection: close``.  Every
response, refusals too, says ``Content-Security-Policy: frame-ancestors 'none'``
(``EVERY_RESPONSE``): no page of another site may show this one in a frame
(clickjacking).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import secrets
import socket
import time
from typing import Iterable, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.requests import cookie_parser

from nst_keras.app.forms import size_text

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
LINGER_S = 2.0   # after a refusal, how long the rest of a body is read and dropped
EVERY_RESPONSE = ((b"content-security-policy", b"frame-ancestors 'none'"),)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> Tuple[str, str]:
    """A ``Host`` value's name and port: ``[::1]:7860`` -> ``('::1', '7860')``."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else ""
    if value.count(":") == 1:
        name, port = value.split(":")
        return name, port
    return value, ""


def _own_names() -> set:
    """This machine's name and the addresses it resolves to (for a wildcard bind)."""
    names = set()
    try:
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name.lower())
            names.update(socket.gethostbyname_ex(name)[2])
    except OSError:
        pass
    return names


def _origin_of(url: str, default_scheme: str = "http") -> str:
    """``scheme://host:port`` -> ``host[:port]``, the default port left out."""
    parts = urlsplit(url if "//" in url else f"{default_scheme}://{url}")
    netloc = (parts.netloc or "").lower().rpartition("@")[2]
    port = DEFAULT_PORTS.get(parts.scheme.lower())
    if port and netloc.endswith(":" + port):
        netloc = netloc[:-len(port) - 1]
    return netloc


class Policy:
    """Who the server answers (see the module docstring); one per server.

    Args:
      bound: the address the server listens on.
      allowed_hosts: more host names to serve (``--allowed_hosts``).
      token: the secret a visitor gives once as ``/?token=...`` (None: none).
    """

    def __init__(self, bound: str = "127.0.0.1", allowed_hosts: Optional[Iterable[str]] = (),
                 token: Optional[str] = None):
        self.bound, self.token = bound, token
        self.secret = secrets.token_urlsafe(32)
        self.hosts = {split_host(h)[0] for h in allowed_hosts or () if h.strip()}
        self.hosts |= set(LOOPBACK_NAMES) | {bound.strip("[]").lower()}
        if bound in WILDCARDS:
            self.hosts |= _own_names()

    def cookie_name(self, scope) -> str:
        """One name per port: cookies are shared between the ports of a host."""
        server = scope.get("server") or ("", 0)
        return f"nst_keras_{server[1]}"

    def cookie(self, scope) -> bytes:
        return (f"{self.cookie_name(scope)}={self.secret}; Path=/; HttpOnly; "
                "SameSite=Strict").encode("latin-1")

    def has_secret(self, scope, headers: Headers) -> bool:
        value = cookie_parser(headers.get("cookie", "")).get(self.cookie_name(scope), "")
        return hmac.compare_digest(value.encode(), self.secret.encode())

    def token_given(self, scope) -> bool:
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])
        return self.token is not None and hmac.compare_digest(given[0].encode(),
                                                              self.token.encode())

    def host_refusal(self, headers: Headers) -> Optional[str]:
        value = headers.get("host", "")
        if split_host(value)[0] in self.hosts:
            return None
        shown = value.strip()[:100] or "(none)"
        return (f"host {shown!r} is not served here; to serve it (a reverse proxy's name), "
                f"start the server with --allowed_hosts={split_host(value)[0] or 'NAME'}")

    def origin_refusal(self, scope, headers: Headers) -> Optional[str]:
        if scope["method"] not in UNSAFE_METHODS:
            return None
        source = headers.get("origin") or headers.get("referer")
        if source is None:
            return None
        own = _origin_of(headers.get("host", ""), scope.get("scheme", "http"))
        if source != "null" and _origin_of(source) == own:
            return None
        return (f"refused a {scope['method']} from {source[:100]!r}: only this server's own "
                "page may change anything")

    def websocket_refusal(self, scope, headers: Headers) -> Optional[str]:
        """Why a WebSocket may not open (``None``: it may)."""
        line = self.host_refusal(headers)
        if line:
            return line
        source = headers.get("origin")
        own = _origin_of(headers.get("host", ""), "http")
        if source is not None and (source == "null" or _origin_of(source) != own):
            return (f"refused a WebSocket from {source[:100]!r}: only this server's own page "
                    "may open it")
        return self.secret_refusal(scope, headers)

    def secret_refusal(self, scope, headers: Headers) -> Optional[str]:
        if self.has_secret(scope, headers):
            return None
        if self.token is not None:
            return ("this server needs its token: open the address with ?token=... that it "
                    "printed when it started")
        return ("this needs the page's cookie: load / first (as a browser does; a script: "
                "GET / with a cookie jar)")


def _declared_length(headers: Headers) -> Optional[int]:
    value = headers.get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _has_body(headers: Headers) -> bool:
    return bool(_declared_length(headers)) or "chunked" in headers.get("transfer-encoding", "")


async def drain(receive, seconds: float = LINGER_S, most: Optional[int] = None) -> None:
    """Reads and drops the rest of a body for at most ``seconds`` (and ``most`` bytes),
    so that the client reads the answer before the connection closes."""
    deadline, dropped = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and (most is None or dropped <= most):
        try:
            message = await asyncio.wait_for(receive(), deadline - time.monotonic())
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


async def refuse_websocket(scope, receive, send, line: str) -> None:
    """Answers a WebSocket's opening with 403 and ``line`` (the ASGI denial
    response where the server has it, else a close before accepting)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = (line + "\n").encode("utf-8")
        await send({"type": "websocket.http.response.start", "status": 403, "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()), *EVERY_RESPONSE]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": line[:120]})


async def refuse(send, status: int, line: str, receive=None, most: Optional[int] = None,
                 extra_headers=()) -> None:
    """Answers ``status`` with one plain-text line; with ``receive``, drains the body
    (see ``drain``) before the connection closes."""
    body = (line + "\n").encode("utf-8")
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
               (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
               *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": receive is not None})
    if receive is not None:
        await drain(receive, most=most)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _too_large(limit: int, declared: Optional[int] = None) -> str:
    size = size_text(declared) if declared is not None else f"over {size_text(limit)}"
    return (f"the upload is {size}; the limit is {size_text(limit)} in all "
            "(--max_upload_mb); send smaller pictures")


class Body:
    """A request's ``receive`` that counts the body's bytes and cuts it off past
    ``limit``: the client is answered 413, the app sees the client leave."""

    def __init__(self, receive, send, limit: int):
        self._receive, self._send, self.limit = receive, send, limit
        self.count, self.ended, self.cut, self.started = 0, False, False, False

    async def receive(self):
        if self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        self.count += len(message.get("body", b""))
        self.ended = not message.get("more_body", False)
        if self.count > self.limit:
            self.cut = True
            if not self.started:
                await refuse(self._send, 413, _too_large(self.limit),
                             None if self.ended else self._receive, most=self.limit)
            return {"type": "http.disconnect"}
        return message

    async def send(self, message) -> None:
        if self.cut:
            return  # the client has its answer
        self.started = True
        await self._send(message)


def with_headers(send, headers):
    """``send`` that adds ``headers`` to every response's start (once each)."""
    names = {name for name, _ in headers}

    async def sending(message):
        if message["type"] == "http.response.start":
            kept = [h for h in message.get("headers", []) if h[0].lower() not in names]
            message = dict(message, headers=[*kept, *headers])
        await send(message)
    return sending


class Guard:
    """The ASGI layer of ``Policy`` in front of ``app`` (see the module docstring);
    ``max_bytes``: the largest request body."""

    def __init__(self, app, policy: Policy, max_bytes: int):
        self.app, self.policy, self.max_bytes = app, policy, int(max_bytes)

    def _refusal(self, scope, headers: Headers) -> Optional[Tuple[int, str]]:
        policy, path = self.policy, scope["path"]
        for check in (lambda: policy.host_refusal(headers),
                      lambda: policy.origin_refusal(scope, headers)):
            line = check()
            if line:
                return 403, line
        page = path == "/" or path.startswith("/static/")
        if page and not (path == "/" and policy.token is not None):
            return None
        if path == "/" and policy.token_given(scope):
            return None
        line = policy.secret_refusal(scope, headers)
        return (403, line) if line else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket":
            line = self.policy.websocket_refusal(scope, Headers(scope=scope))
            if line:
                await refuse_websocket(scope, receive, send, line)
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = with_headers(send, EVERY_RESPONSE)
        headers = Headers(scope=scope)
        linger = receive if _has_body(headers) and "100-continue" not in headers.get(
            "expect", "").lower() else None
        refusal = self._refusal(scope, headers)
        declared = _declared_length(headers)
        if refusal is None and declared is not None and declared > self.max_bytes:
            refusal = 413, _too_large(self.max_bytes, declared)
        if refusal is not None:
            await refuse(send, *refusal, receive=linger, most=self.max_bytes)
            return
        if scope["path"] == "/" and scope["method"] in ("GET", "HEAD"):
            await self._page(scope, receive, send)
            return
        body = Body(receive, send, self.max_bytes)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.cut:
                raise  # a refused upload's parser sees the client leave: nothing to report

    async def _page(self, scope, receive, send) -> None:
        """``/`` with the cookie set; ``/?token=`` sets it and sends the page to ``./``
        so that the token leaves the address bar."""
        cookie = (b"set-cookie", self.policy.cookie(scope))
        if self.policy.token_given(scope):
            await send({"type": "http.response.start", "status": 303,
                        "headers": [cookie, (b"location", b"./"), (b"content-length", b"0"),
                                    (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), cookie])
            await send(message)
        await self.app(scope, receive, with_cookie)
