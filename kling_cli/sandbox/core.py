"""The sandbox: every emulated dialect under its own path prefix, plus a file host, an upload route (a
stand-in for the bucket a profile's uploader writes to) and admin routes.

Scripted outcomes come from markers in the prompt (documented in the README), e.g. `sandbox:fail`,
`sandbox:slow`, `sandbox:429x2`. Counted markers ("x2") fire for the first N matching requests, counted
on disk per marker and prompt so that they work across processes.

An `Account` models a real one beyond the markers: a limit on tasks running at once (past it a submit gets
the dialect's "too many" answer, Kling's 1303), run times drawn from a lognormal distribution, and a rate
of random failures. The benches use it; `kling sandbox serve` exposes it.

Callbacks: a dispatcher thread POSTs each dialect's callback payload once a task with a callback URL
reaches a terminal state (see `CallbackDispatcher`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import random
import re
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from kling_cli.sandbox.server import App, HTTPServer, Request, Response, Router, json_response
from kling_cli.sandbox.store import Store, TaskRow

DEFAULT_TASK_SECONDS = 4.0
SLOW_FACTOR = 5.0
ASSET = Path(__file__).parent / "assets" / "sample.mp4"
SERVE_POLL = 0.02

_MARKER = re.compile(r"sandbox:([a-z0-9_-]+?)(?:x(\d+))?\b")


RANDOM_FAILURE = "sandbox: a random failure (the account's failure rate)"


@dataclass
class Account:
    """How the emulated provider account behaves, to model a real one (all off by default)."""

    #: tasks not yet ended (queued or running, every dialect counted) past which a submit is refused with the
    #: dialect's "too many" answer (Kling: HTTP 429, code 1303); counted on this server's clock
    max_running: int | None = None
    #: run times are lognormal around `task_seconds` (its median), with this standard deviation of their log
    spread: float = 0.0
    #: the share of tasks that fail (at the end of their run time), on top of `sandbox:fail`
    failure_rate: float = 0.0
    #: seeds the draws, for a bench that must be the same from one run to the next
    seed: int | None = None


def markers(text: Any) -> dict[str, int]:
    """`"a sandbox:429x2 b sandbox:fail"` -> `{"429": 2, "fail": 1}`."""
    if not isinstance(text, str):
        return {}
    return {name: int(count or 1) for name, count in _MARKER.findall(text)}


@dataclass(frozen=True)
class Emulation:
    """One provider's emulation, handed to `Sandbox` by the registry the package assembles
    (`kling_cli.sandbox.emulations`): its routes, mounted under a prefix, and the body it POSTs to a
    task's callback URL. The core knows no provider: each emulation stands on the core, not the reverse."""

    router: Callable[[Sandbox, str], Router]
    callback_payload: Callable[[Sandbox, TaskRow], dict[str, Any]]


class Sandbox:
    def __init__(
        self,
        state_dir: Path,
        emulations: Mapping[str, Emulation],
        *,
        task_seconds: float = DEFAULT_TASK_SECONDS,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
        latency: float = 0.0,
        retry_after: float | None = None,
        account: Account | None = None,
    ) -> None:
        self.store = Store(Path(state_dir) / "sandbox.db")
        self.task_seconds = task_seconds
        self.account = account or Account()
        self._draws = random.Random(self.account.seed)
        self._draw_lock = threading.Lock()
        self.store.shape = self._shape
        # Submits checked against max_running are admitted one at a time, from the check until their answer:
        # two submits in parallel must not both take the last slot.
        self._admission = threading.Lock()
        self._admitted = threading.local()
        #: seconds every dialect request waits before it is answered (not the files or admin routes); may be
        #: changed while the sandbox runs
        self.latency = max(0.0, latency)
        self.app = App()
        self.uploads_dir = Path(state_dir) / "uploads"
        self.app.mount(_files_router(self))
        self.app.mount(_uploads_router(self))
        self.app.mount(_admin_router(self))
        #: dialect name -> its path prefix on this server
        self.dialects = {name: f"/{name}" for name in emulations}
        for name, emulation in emulations.items():
            self.app.mount(emulation.router(self, self.dialects[name]), delay=lambda: self.latency)
        #: dialect name -> builder of the body it POSTs to a task's callback URL
        self.callback_payloads: dict[str, Callable[[Sandbox, TaskRow], dict[str, Any]]] = {
            name: emulation.callback_payload for name, emulation in emulations.items()
        }
        self.log = log
        self.server = HTTPServer((host, port), self.app, log)
        self.host = host
        self.dispatcher = CallbackDispatcher(self)
        self.storm_lock = threading.Lock()
        self.storm_left = 0
        self.storm_retry_after = 1.0
        #: add `Retry-After: N` to 429 answers that carry none (providers document none: default off)
        self.retry_after = retry_after
        #: every request asked of this sandbox, (method, path, served by one of its routes), for the tests
        #: that check no request ever leaves the endpoints a dialect is documented to use
        self.asked: deque[tuple[str, str, bool]] = deque(maxlen=100_000)
        #: answers scripted by POST /__sandbox/answer, and the result URL POST /__sandbox/video-url imposes
        self.scripted: list[dict[str, Any]] = []
        self.script_lock = threading.Lock()
        self.forced_video_url: str | None = None
        handle = self.app.handle

        def with_retry_after(req: Request) -> Response:
            self.asked.append((req.method, req.path, self._serves(req)))
            scripted = self._scripted(req)
            if scripted is not None:
                return scripted
            try:
                response = handle(req)
            finally:
                if getattr(self._admitted, "held", False):
                    self._admitted.held = False
                    self._admission.release()
            if response.status == 429 and self.retry_after is not None and "Retry-After" not in response.headers:
                response.headers["Retry-After"] = f"{self.retry_after:g}"
            return response

        self.app.handle = with_retry_after  # type: ignore[method-assign]

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def base_url(self, dialect: str) -> str:
        return self.origin + self.dialects[dialect]

    def start(self) -> Sandbox:
        # A short poll interval: `close()` waits one interval for the serving loop to notice, and the
        # test suite opens and closes a sandbox per test.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": SERVE_POLL}, daemon=True,
                         name="kling-sandbox").start()
        self.dispatcher.start()
        return self

    def serve_forever(self) -> None:
        self.dispatcher.start()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.dispatcher.stop()

    def close(self) -> None:
        self.dispatcher.stop()
        self.server.shutdown()
        self.server.server_close()
        self.store.close()

    # -- helpers for the dialect route modules --------------------------------------------------
    def fires(self, marks: dict[str, int], name: str, key: str) -> bool:
        """True for the first N requests carrying marker `name` (xN) with this key. The "429" refusal of a
        submit ("too many") also fires while the account runs its `max_running` tasks."""
        if name == "429" and self.account.max_running is not None and self._full():
            return True
        if name not in marks:
            return False
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.store.bump(f"fault:{name}:{digest}") <= marks[name]

    def _full(self) -> bool:
        """Whether the account runs as many tasks as it may; if not, this request holds the admission until it
        is answered (its task, if it creates one, is then counted)."""
        if not getattr(self._admitted, "held", False):
            self._admission.acquire()
            self._admitted.held = True
        return self.store.running(time.time()) >= (self.account.max_running or 0)

    def _shape(self, row: TaskRow) -> None:
        """The account's own run time and failures, drawn for each new task."""
        account = self.account
        with self._draw_lock:
            noise = self._draws.gauss(0.0, account.spread) if account.spread else 0.0
            fails = account.failure_rate > 0 and self._draws.random() < account.failure_rate
        row.seconds *= math.exp(noise)
        if fails and row.outcome == "succeeded":
            row.outcome, row.reason = "failed", RANDOM_FAILURE

    def submit_fault(self, marks: dict[str, int], key: str) -> str | None:
        """The scripted refusal of a submit, if any: "429", "billing", "policy" or "500".

        Checked in the order the official dialect checks them; each dialect words the refusal its own way.
        """
        if self.fires(marks, "429", key):
            return "429"
        if "billing" in marks:
            return "billing"
        if "policy" in marks:
            return "policy"
        if self.fires(marks, "500", key):
            return "500"
        return None

    def in_storm(self) -> float | None:
        """The Retry-After to answer with while a rate-limit storm lasts (see POST /__sandbox/storm)."""
        with self.storm_lock:
            if self.storm_left <= 0:
                return None
            self.storm_left -= 1
            return self.storm_retry_after

    def seconds_for(self, marks: dict[str, int]) -> float:
        return self.task_seconds * (SLOW_FACTOR if "slow" in marks else 1.0)

    def count(self, name: str) -> None:
        self.store.bump(f"stat:{name}")

    def video_url(self, where: Request | str, video_id: str) -> str:
        """The result URL on this server; `where` is the request being answered, or an origin (callbacks)."""
        if self.forced_video_url is not None:
            return self.forced_video_url
        origin = where if isinstance(where, str) else where.origin
        return f"{origin}/files/{video_id}.mp4"

    # -- test hooks (the admin routes) ------------------------------------------------------------
    def _serves(self, req: Request) -> bool:
        """Whether one of this sandbox's own routes answers the request (a provider's catch-all for wrong
        paths, e.g. CometAPI's 301, does not count)."""
        for router in self.app.routers:
            if router.prefix and not (req.path == router.prefix or req.path.startswith(router.prefix + "/")):
                continue
            handler, _params, _exists = router.match(req.method, req.path)
            if handler is not None and handler is not getattr(router, "fallback", None):
                return True
        return False

    def _scripted(self, req: Request) -> Response | None:
        with self.script_lock:
            for script in self.scripted:
                path = script["path"]
                if script["method"] in (req.method, "*") and (req.path == path or (
                        script["prefix"] and req.path.startswith(path))):
                    script["count"] -= 1
                    if script["count"] <= 0:
                        self.scripted.remove(script)
                    return Response(script["status"], script["body"], dict(script["headers"]))
        return None

    def _log(self, message: str) -> None:
        if self.log is not None:
            self.log(message)


class FallbackRouter(Router):
    """A router that answers every unmatched path under its prefix with `fallback` (a provider's own
    "wrong URL" answer) instead of the app's generic JSON 404 / 405."""

    def __init__(self, prefix: str, fallback: Callable[[Request], Response]) -> None:
        super().__init__(prefix)
        self.fallback = fallback

    def match(self, method: str, path: str) -> tuple[Callable[[Request], Response] | None, dict[str, str], bool]:
        handler, params, _exists = super().match(method, path)
        if handler is None:
            return self.fallback, {}, True
        return handler, params, True


def bearer_token(req: Request, *, any_case: bool = False) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = (req.headers.get("Authorization") or "").partition(" ")
    if scheme != "Bearer" and not (any_case and scheme.lower() == "bearer"):
        return None
    return token.strip() or None


TERMINAL = ("succeeded", "failed")
CALLBACK_INTERVAL = 0.1
CALLBACK_TIMEOUT = 2.0


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs whose host is literally loopback (localhost, 127.0.0.0/8, ::1).

    Decided from the URL text alone (no DNS lookup): the sandbox never sends traffic off this machine.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CallbackDispatcher:
    """Every ~0.1 s, POST the callback of each task that has a callback URL, reached a terminal state
    and was not yet notified.

    "Notified" is claimed in the task's `meta` with one conditional UPDATE before sending, so a task is
    notified at most once per database, across restarts and processes sharing a state dir. A sweep runs
    at start and at close too, so a callback due while a short-lived process runs is sent by it.
    Delivery failures are logged and not retried (retry policies are undocumented everywhere).
    Only loopback URLs are called: the sandbox is a local emulator and must not reach the network.
    """

    def __init__(self, sandbox: Sandbox, interval: float = CALLBACK_INTERVAL) -> None:
        self.sandbox = sandbox
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._deliveries: list[threading.Thread] = []
        #: how a payload is delivered (replaceable in tests)
        self.post: Callable[[str, dict[str, Any]], None] = _post_json

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kling-sandbox-callbacks")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
            self._sweep_safely()  # what became due since the last sweep
        for delivery in self._deliveries:
            delivery.join(timeout=CALLBACK_TIMEOUT)
        self._deliveries = []

    def _run(self) -> None:
        self._sweep_safely()
        while not self._stop.wait(self.interval):
            self._sweep_safely()

    def _sweep_safely(self) -> None:
        try:
            self.sweep()
        except Exception as exc:  # a closed store at shutdown, a bad row: keep the thread alive
            self.sandbox._log(f"callback sweep failed: {type(exc).__name__}: {exc}")

    def sweep(self, now: float | None = None) -> int:
        """Notify every due task once; returns how many were handed to `post`."""
        now = time.time() if now is None else now
        sent = 0
        for row in self.sandbox.store.with_callbacks():
            if row.phase(now) not in TERMINAL:
                continue
            build = self.sandbox.callback_payloads.get(row.dialect)
            if build is None or not row.callback_url:
                continue
            url = row.callback_url
            deliver = is_loopback_url(url)
            if not self.sandbox.store.claim(
                    row.id, {**row.meta, "notified": {"at": now, "phase": row.phase(now), "sent": deliver}}):
                continue  # another sandbox process on this state dir sent it
            if not deliver:
                self.sandbox._log(f"callback for {row.dialect} task {row.id} skipped: {url} is not loopback")
                continue
            payload = build(self.sandbox, row)
            # one short thread per delivery, so that a slow receiver does not hold up the others
            delivery = threading.Thread(target=self._deliver, args=(url, payload, row), daemon=True)
            delivery.start()
            self._deliveries = [d for d in self._deliveries if d.is_alive()] + [delivery]
            sent += 1
        return sent

    def _deliver(self, url: str, payload: dict[str, Any], row: TaskRow) -> None:
        try:
            self.post(url, payload)
        except Exception as exc:
            self.sandbox._log(f"callback for {row.dialect} task {row.id} to {url} failed: {exc}")


# No proxies: a proxy from the environment would carry a loopback callback off this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _post_json(url: str, payload: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "kling-sandbox-callback"},
    )
    with _OPENER.open(request, timeout=CALLBACK_TIMEOUT) as answer:
        answer.read()


def _files_router(sandbox: Sandbox) -> Router:
    """A stand-in CDN: the result MP4, with Content-Length and byte ranges."""
    router = Router("/files")

    @router.route("GET", "/{name}")
    def get_file(req: Request) -> Response:
        video_id = req.params["name"].removesuffix(".mp4")
        row = sandbox.store.by_video(video_id)
        if row is None or row.phase() != "succeeded":
            return Response(404, b"Not Found", {"Content-Type": "text/plain"})
        marks = markers(row.request.get("prompt"))
        sandbox.count("files:requests")
        if sandbox.fires(marks, "expired", f"expired:{video_id}"):
            # what a CDN answers to a signed URL past its expiry
            return Response(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                            {"Content-Type": "application/xml"})
        size = ASSET.stat().st_size
        start, end = 0, size - 1
        status, headers = 200, {"Content-Type": "video/mp4", "Accept-Ranges": "bytes"}
        wanted = req.headers.get("Range")
        if wanted:
            sandbox.count("files:ranges")
            parsed = _parse_range(wanted, size)
            if parsed is None:
                return Response(416, b"", {"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response = Response(status, headers=headers, file=(ASSET, start, end - start + 1))
        if not wanted and sandbox.fires(marks, "cut", f"cut:{video_id}"):
            response.truncate = size // 2  # the connection drops halfway through the file
        return response

    return router


_UPLOAD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_UPLOAD_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "mp4": "video/mp4",
                 "mov": "video/quicktime"}


def _uploads_router(sandbox: Sandbox) -> Router:
    """Where local files go on the sandbox profile (and where `curl -T FILE .../uploads/NAME` puts one): a PUT
    stores the body under its name and answers with the URL it is served at, on one line of text, the way an
    uploader prints it. The name is the uploader's choice (`{sha256}.{ext}`): the same file, the same URL."""
    router = Router("/uploads")

    def located(req: Request) -> Path | None:
        name = req.params["name"]
        return sandbox.uploads_dir / name if _UPLOAD_NAME.match(name) else None

    @router.route("PUT", "/{name}")
    def put(req: Request) -> Response:
        path = located(req)
        if path is None:
            return Response(400, b"bad name: letters, digits, '.', '_' and '-' only\n", {"Content-Type": "text/plain"})
        if not req.body:
            return Response(400, b"empty body\n", {"Content-Type": "text/plain"})
        sandbox.uploads_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{threading.get_ident()}")
        partial.write_bytes(req.body)
        partial.replace(path)
        sandbox.count("uploads")
        return Response(200, f"{req.origin}/uploads/{path.name}\n".encode(), {"Content-Type": "text/plain"})

    @router.route("GET", "/{name}")
    def get(req: Request) -> Response:
        path = located(req)
        if path is None or not path.is_file():
            return Response(404, b"Not Found", {"Content-Type": "text/plain"})
        kind = _UPLOAD_TYPES.get(path.suffix.lstrip(".").lower(), "application/octet-stream")
        return Response(200, headers={"Content-Type": kind}, file=(path, 0, path.stat().st_size))

    return router


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end


def _admin_router(sandbox: Sandbox) -> Router:
    router = Router("/__sandbox")

    @router.route("GET", "/stats")
    def stats(_req: Request) -> Response:
        return json_response(200, sandbox.store.stats())

    @router.route("POST", "/reset")
    def reset(_req: Request) -> Response:
        sandbox.store.reset()
        sandbox.store.next_ids.clear()
        sandbox.scripted.clear()
        sandbox.forced_video_url = None
        return json_response(200, {"ok": True})

    @router.route("GET", "/requests")
    def requests(_req: Request) -> Response:
        """Every request asked so far, and whether one of the sandbox's routes serves its path."""
        return json_response(200, {"requests": [{"method": method, "path": path, "served": served}
                                                for method, path, served in list(sandbox.asked)]})

    @router.route("POST", "/task-id")
    def task_id(req: Request) -> Response:
        """The next `count` tasks created (any dialect) get this id: a hostile one, to test clients."""
        body = req.json()
        sandbox.store.next_ids.extend([str(body["id"])] * int(body.get("count", 1)))
        return json_response(200, {"ok": True})

    @router.route("POST", "/video-url")
    def video_url(req: Request) -> Response:
        """Every result URL (answers and callbacks) is this one from now on; null restores the real ones."""
        url = req.json().get("url")
        sandbox.forced_video_url = None if url is None else str(url)
        return json_response(200, {"ok": True})

    @router.route("POST", "/answer")
    def answer(req: Request) -> Response:
        """The next `count` requests for `path` (a prefix with "prefix": true) by `method` ("*": any) get this
        answer instead of the emulated one: `status`, `headers`, and `json` (a JSON body) or `text`."""
        body = req.json()
        payload = json.dumps(body["json"]).encode() if "json" in body else str(body.get("text", "")).encode()
        headers = {"Content-Type": "application/json"} if "json" in body else {}
        with sandbox.script_lock:
            sandbox.scripted.append({"method": str(body.get("method", "*")), "path": str(body["path"]),
                                     "prefix": bool(body.get("prefix")), "status": int(body.get("status", 200)),
                                     "body": payload, "headers": {**headers, **(body.get("headers") or {})},
                                     "count": int(body.get("count", 1))})
        return json_response(200, {"ok": True})

    @router.route("GET", "/tasks")
    def tasks(_req: Request) -> Response:
        """Every task, for tests that count what was created server-side."""
        return json_response(200, {"tasks": [
            {"id": row.id, "dialect": row.dialect, "kind": row.kind, "external_id": row.external_id,
             "prompt": row.request.get("prompt") or (row.request.get("params") or {}).get("prompt"),
             "created": row.created, "seconds": row.seconds, "outcome": row.outcome, "request": row.request}
            for row in sandbox.store.all()]})

    @router.route("POST", "/storm")
    def storm(req: Request) -> Response:
        """The next `count` task queries (official dialect) answer 429, code 1302, with Retry-After."""
        body = req.json()
        with sandbox.storm_lock:
            sandbox.storm_left = int(body.get("count", 0))
            sandbox.storm_retry_after = float(body.get("retry_after", 1))
        return json_response(200, {"ok": True})

    return router
