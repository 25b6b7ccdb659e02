"""A tiny HTTP framework on the stdlib server: requests, responses, a router with `{name}` segments.

Responses are written with one `sendall` (headers and body together) and Nagle is off: a keep-alive
client otherwise stalls ~40 ms per request on delayed ACKs. Files go from the page cache to the socket by
`sendfile`, after their headers.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit


class BadJson(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    host: str
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise BadJson() from None

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def origin(self) -> str:
        return f"http://{self.host}"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: serve (path, start, length) from disk instead of `body`
    file: tuple[Path, int, int] | None = None
    #: close the connection without answering: the request was handled, the answer is lost
    drop: bool = False
    #: send only this many body bytes, then close (a download cut halfway)
    truncate: int | None = None


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def html_response(status: int, text: str) -> Response:
    return Response(status, text.encode(), {"Content-Type": "text/html; charset=utf-8"})


Handler = Callable[[Request], Response]


class Router:
    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix.rstrip("/")
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        compiled = _compile(self.prefix + pattern)

        def register(handler: Handler) -> Handler:
            self.routes.append((method, compiled, handler))
            return handler

        return register

    def match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str], bool]:
        """(handler, params, path_exists) for a request."""
        path_exists = False
        for route_method, regex, handler in self.routes:
            found = regex.match(path)
            if found:
                path_exists = True
                if route_method == method or (method == "HEAD" and route_method == "GET"):
                    return handler, found.groupdict(), True
        return None, {}, path_exists


def _compile(pattern: str) -> re.Pattern[str]:
    pieces = []
    for piece in re.split(r"(\{\w+\})", pattern):
        name = re.fullmatch(r"\{(\w+)\}", piece)
        pieces.append(f"(?P<{name.group(1)}>[^/]+)" if name else re.escape(piece))
    return re.compile("^" + "".join(pieces) + "$")


class App:
    """Routers tried in order; the first one whose prefix matches answers."""

    def __init__(self) -> None:
        self.routers: list[Router] = []
        #: router -> seconds to wait before answering each of its requests (a slow network or provider)
        self.delays: dict[Router, Callable[[], float]] = {}
        self.not_found: Callable[[Request], Response] = lambda req: json_response(404, {"error": "not found"})

    def mount(self, router: Router, *, delay: Callable[[], float] | None = None) -> None:
        self.routers.append(router)
        if delay is not None:
            self.delays[router] = delay

    def handle(self, req: Request) -> Response:
        for router in self.routers:
            if router.prefix and not (req.path == router.prefix or req.path.startswith(router.prefix + "/")):
                continue
            handler, params, exists = router.match(req.method, req.path)
            if handler is not None:
                req.params = {name: unquote(value) for name, value in params.items()}  # a segment, decoded
                delay = self.delays.get(router)
                seconds = delay() if delay is not None else 0.0
                if seconds > 0:
                    time.sleep(seconds)
                return handler(req)
            if exists:
                return json_response(405, {"error": "method not allowed"})
        return self.not_found(req)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.log is not None:
            self.server.log(format % args)

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers=self.headers,
            body=body,
            host=self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}",
        )
        try:
            response = self.server.app.handle(req)
        except Exception as exc:  # a sandbox bug must look like a provider 500, not hang the client
            response = json_response(500, {"error": f"sandbox bug: {type(exc).__name__}: {exc}"})
        self._write(response)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _dispatch

    def _write(self, response: Response) -> None:
        if response.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        length = response.file[2] if response.file else len(response.body)
        head = [f"HTTP/1.1 {response.status} {self.responses.get(response.status, ('',))[0]}"]
        headers = {"Content-Length": str(length), "Date": self.date_time_string(), **response.headers}
        head += [f"{k}: {v}" for k, v in headers.items()]
        header_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        send_body = self.command != "HEAD"
        limit = response.truncate if response.truncate is not None else length
        try:
            if response.file is None:
                self.wfile.write(header_bytes + (response.body[:limit] if send_body else b""))
            else:
                self.wfile.write(header_bytes)
                if send_body:
                    self._send_file(*response.file, limit=limit)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if response.truncate is not None:
            self.close_connection = True

    def _send_file(self, path: Path, start: int, length: int, *, limit: int) -> None:
        """The bytes go from the page cache to the socket (os.sendfile where there is one): no copy through
        Python, so a large file is served at loopback speed."""
        remaining = min(length, limit)
        if remaining <= 0:
            return
        self.wfile.flush()
        with path.open("rb") as handle:
            self.connection.sendfile(handle, start, remaining)


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    #: the listen backlog: the stdlib's 5 drops the connections of a client that opens dozens at once, and
    #: each dropped one costs the client a SYN retransmission (1 s, then 3 s...)
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: App, log: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.log = log
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]
