"""The sandbox's callback dispatcher, on the official dialect (kling-official-cometapi.md §1.9), and the
helpers the other test_sandbox_* files share: a loopback callback receiver and a task clock shifter."""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from kling_cli.presets import DIALECTS, SANDBOX_API_KEY
from kling_cli.sandbox import new_sandbox
from kling_cli.sandbox.core import Sandbox, is_loopback_url

AUTH = {"Authorization": f"Bearer {SANDBOX_API_KEY}"}


class CallbackReceiver:
    """A tiny HTTP server on 127.0.0.1 that records every POST (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, dict[str, str], Any]] = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.put((self.path, dict(self.headers), json.loads(raw)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def get(self, timeout: float = 3.0) -> tuple[str, dict[str, str], Any]:
        return self.received.get(timeout=timeout)

    def assert_quiet(self, seconds: float = 0.3) -> None:
        with pytest.raises(queue.Empty):
            self.received.get(timeout=seconds)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = CallbackReceiver()
    yield server
    server.close()


@pytest.fixture
def slow_sandbox(tmp_path: Path):
    """A sandbox whose tasks take 100 s: tests move a task through its phases with `age`, no sleeping."""
    server = new_sandbox(tmp_path / "slow-sandbox-state", task_seconds=100).start()
    yield server
    server.close()


def age(sandbox: Sandbox, task_id: str, seconds: float) -> None:
    """Pretend a task was created `seconds` earlier (the store derives its phase from the clock)."""
    with closing(sqlite3.connect(sandbox.store.path)) as db, db:
        db.execute("UPDATE tasks SET created = created - ? WHERE id = ?", (seconds, task_id))


def stats(sandbox: Sandbox) -> dict[str, int]:
    return httpx.get(f"{sandbox.origin}/__sandbox/stats").json()["counters"]


def wait_for(predicate, timeout: float = 3.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- tests ------------------------------------------------------------------------------------------

def test_every_dialect_is_mounted_under_its_own_prefix(sandbox):
    assert set(sandbox.dialects) == set(DIALECTS) | {"newapi-upstream"}  # new-api without motion control
    for name in DIALECTS:
        assert sandbox.base_url(name) == f"{sandbox.origin}/{name}"


def _submit(sandbox: Sandbox, prompt: str, callback_url: str) -> str:
    answer = httpx.post(f"{sandbox.base_url('kling')}/v1/videos/text2video", headers=AUTH,
                        json={"model_name": "kling-v2-6", "prompt": prompt, "callback_url": callback_url})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["task_id"]


def test_callback_is_the_bare_task_object_sent_once(sandbox, receiver):
    task_id = _submit(sandbox, "a red fox", receiver.url("/hook?x=1"))
    path, headers, body = receiver.get()
    assert path == "/hook?x=1"
    assert headers["Content-Type"] == "application/json"
    assert "code" not in body and "data" not in body  # no envelope (§1.9)
    assert body["task_id"] == task_id
    assert body["task_status"] == "succeed"
    video = body["task_result"]["videos"][0]
    assert video["url"] == f"{sandbox.origin}/files/{video['id']}.mp4"
    assert isinstance(body["created_at"], int) and body["created_at"] > 1e12  # milliseconds
    assert httpx.get(video["url"]).status_code == 200
    receiver.assert_quiet()
    assert sandbox.store.get("kling", task_id).meta["notified"]["sent"] is True


def test_a_failed_task_calls_back_with_its_reason(sandbox, receiver):
    task_id = _submit(sandbox, "sandbox:fail", receiver.url())
    _path, _headers, body = receiver.get()
    assert body["task_id"] == task_id
    assert body["task_status"] == "failed"
    assert "risk control" in body["task_status_msg"]
    assert body["task_result"] == {}


def test_notified_is_durable_across_a_restart(tmp_path, receiver):
    first = new_sandbox(tmp_path / "state", task_seconds=0.3).start()
    try:
        _submit(first, "a red fox", receiver.url())
        receiver.get()
    finally:
        first.close()
    second = new_sandbox(tmp_path / "state", task_seconds=0.3).start()
    try:
        receiver.assert_quiet(0.4)
    finally:
        second.close()


def test_a_task_that_ended_while_no_sandbox_ran_is_notified_by_the_next_one(tmp_path, receiver):
    # e.g. submitted by one `kling` process, finished after it exited
    later = new_sandbox(tmp_path / "state", task_seconds=0.3)
    row = later.store.create(task_id="823456789012345678", dialect="kling", kind="t2v", request={"prompt": "x"},
                             external_id=None, seconds=0.0, outcome="succeeded", reason=None,
                             video_id="923456789012345678", callback_url=receiver.url())
    later.start()
    try:
        _path, _headers, body = receiver.get()
        assert body["task_id"] == row.id
        assert body["task_status"] == "succeed"
    finally:
        later.close()


def test_callbacks_never_leave_loopback(sandbox):
    sent: list[str] = []
    sandbox.dispatcher.post = lambda url, payload: sent.append(url)
    task_id = _submit(sandbox, "a red fox", "http://example.invalid/hook")
    wait_for(lambda: "notified" in sandbox.store.get("kling", task_id).meta)
    assert sandbox.store.get("kling", task_id).meta["notified"]["sent"] is False
    assert sent == []


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:8080/hook", True),
    ("http://127.9.9.9/hook", True),
    ("https://localhost/hook", True),
    ("http://[::1]:9000/", True),
    ("http://10.0.0.1/hook", False),
    ("http://192.168.1.2/hook", False),
    ("https://example.com/hook", False),
    ("http://127.0.0.1.example.com/", False),
    ("ftp://127.0.0.1/hook", False),
    ("not a url", False),
])
def test_is_loopback_url(url, loopback):
    assert is_loopback_url(url) is loopback
