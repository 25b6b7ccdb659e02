"""The sandbox: every emulated dialect under its own path prefix, plus a file host and admin routes.

Scripted outcomes come from markers in the prompt (documented in the README), e.g. `sandbox:fail`,
`sandbox:slow`, `sandbox:429x2`. Counted markers ("x2") fire for the first N matching requests, counted
on disk per marker and prompt so that they work across processes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable

from kling_cli.sandbox.server import App, HTTPServer, Request, Response, Router, json_response, serve_in_thread
from kling_cli.sandbox.store import Store

DEFAULT_TASK_SECONDS = 4.0
SLOW_FACTOR = 5.0
ASSET = Path(__file__).parent / "assets" / "sample.mp4"

_MARKER = re.compile(r"sandbox:([a-z0-9_-]+?)(?:x(\d+))?\b")


def markers(text: Any) -> dict[str, int]:
    """`"a sandbox:429x2 b sandbox:fail"` -> `{"429": 2, "fail": 1}`."""
    if not isinstance(text, str):
        return {}
    return {name: int(count or 1) for name, count in _MARKER.findall(text)}


class Sandbox:
    def __init__(
        self,
        state_dir: Path,
        *,
        task_seconds: float = DEFAULT_TASK_SECONDS,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.store = Store(Path(state_dir) / "sandbox.db")
        self.task_seconds = task_seconds
        self.app = App()
        self.app.mount(_files_router(self))
        self.app.mount(_admin_router(self))
        from kling_cli.sandbox import kling_api

        #: dialect name -> its path prefix on this server
        self.dialects = {"kling": "/kling"}
        self.app.mount(kling_api.router(self, self.dialects["kling"]))
        self.server = HTTPServer((host, port), self.app, log)
        self.host = host

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
        serve_in_thread(self.server)
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.store.close()

    # -- helpers for the dialect route modules --------------------------------------------------
    def fires(self, marks: dict[str, int], name: str, key: str) -> bool:
        """True for the first N requests carrying marker `name` (xN) with this key."""
        if name not in marks:
            return False
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.store.bump(f"fault:{name}:{digest}") <= marks[name]

    def seconds_for(self, marks: dict[str, int]) -> float:
        return self.task_seconds * (SLOW_FACTOR if "slow" in marks else 1.0)

    def count(self, name: str) -> None:
        self.store.bump(f"stat:{name}")

    def video_url(self, req: Request, video_id: str) -> str:
        return f"{req.origin}/files/{video_id}.mp4"


def _files_router(sandbox: Sandbox) -> Router:
    """A stand-in CDN: the result MP4, with Content-Length and byte ranges."""
    router = Router("/files")

    @router.route("GET", "/{name}")
    def get_file(req: Request) -> Response:
        video_id = req.params["name"].removesuffix(".mp4")
        row = sandbox.store.by_video(video_id)
        if row is None or row.phase() != "succeeded":
            return Response(404, b"Not Found", {"Content-Type": "text/plain"})
        size = ASSET.stat().st_size
        start, end = 0, size - 1
        status, headers = 200, {"Content-Type": "video/mp4", "Accept-Ranges": "bytes"}
        wanted = req.headers.get("Range")
        if wanted:
            parsed = _parse_range(wanted, size)
            if parsed is None:
                return Response(416, b"", {"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return Response(status, headers=headers, file=(ASSET, start, end - start + 1))

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
        return json_response(200, {"ok": True})

    return router
