"""Downloading result videos: streamed to `NAME.part`, resumed with `Range`, checked, then renamed.

Result URLs are signed CDN links that expire (30 days): a 403/404/410 re-queries the task once for a
fresh URL. The provider's credentials are never sent to the CDN.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Callable

import httpx

from kling_cli.errors import NotFound, ProviderUnavailable, RequestRejected, TaskFailed, UsageError
from kling_cli.models import Task, TaskStatus
from kling_cli.render import Output
from kling_cli.transport import USER_AGENT, backoff_delay

CHUNK = 64 * 1024
ATTEMPTS = 4
#: box types an MP4/MOV file can start with
MP4_HEADS = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
GONE = (403, 404, 410)


class _Gone(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Retry(Exception):
    pass


def safe_name(text: str) -> str:
    """A file name from untrusted text: no separators, no leading dots, nothing a shell chokes on."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned[:120] or "video"


def default_name(task: Task, index: int) -> str:
    base = safe_name(task.id)
    return f"{base}.mp4" if len(task.videos) == 1 else f"{base}-{index + 1}.mp4"


def looks_like_mp4(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] in MP4_HEADS


class Downloader:
    def __init__(self, out: Output, *, client: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep):
        self.out = out
        self.sleep = sleep
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self.client.close()

    def fetch_task(
        self, task: Task, out_dir: Path, *, force: bool = False, refresh: Callable[[], Task] | None = None
    ) -> list[Path]:
        if task.status is TaskStatus.FAILED:
            reason = task.error.message if task.error else "no reason given"
            raise TaskFailed(f"task {task.id} failed: {reason}", extra={"task_ids": [task.id]})
        if task.status is not TaskStatus.SUCCEEDED:
            raise UsageError(
                f"task {task.id} is {task.status.value}, there is nothing to download yet",
                hint=f"wait for it first: `kling wait {task.id} --download {out_dir}`",
            )
        if not task.videos or not any(v.url for v in task.videos):
            raise RequestRejected(f"task {task.id} succeeded but the provider gave no video URL", code="no_video")
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in range(len(task.videos)):
            dest = out_dir / default_name(task, index)
            if dest.exists() and not force:
                self.out.info(f"{dest} exists, skipped (use --force to download again)")
                paths.append(dest)
                continue
            paths.append(self._fetch_video(task, index, dest, refresh))
        return paths

    def _fetch_video(self, task: Task, index: int, dest: Path, refresh: Callable[[], Task] | None) -> Path:
        url = task.videos[index].url
        refreshed = False
        while True:
            try:
                return self.fetch(url or "", dest)
            except _Gone as gone:
                if refreshed or refresh is None:
                    raise NotFound(
                        f"the video of task {task.id} is gone (HTTP {gone.status} even with a fresh URL)",
                        hint="providers delete results after 30 days; it cannot be downloaded any more",
                        code="video_gone",
                    ) from None
                refreshed = True
                self.out.debug(f"video URL refused (HTTP {gone.status}); asking the provider for a fresh one")
                fresh = refresh()
                if index >= len(fresh.videos) or not fresh.videos[index].url:
                    raise NotFound(f"task {task.id} no longer lists video {index + 1}", code="video_gone") from None
                url = fresh.videos[index].url

    def fetch(self, url: str, dest: Path) -> Path:
        """Download one URL to `dest` through `dest.part`, resuming and retrying broken transfers."""
        part = dest.with_name(dest.name + ".part")
        for attempt in range(ATTEMPTS):
            try:
                self._stream(url, part)
                os.replace(part, dest)
                return dest
            except _Retry as exc:
                if attempt == ATTEMPTS - 1:
                    raise ProviderUnavailable(
                        f"downloading {dest.name} kept failing: {exc}",
                        hint=f"run the same command again: it resumes from {part.name}",
                        code="download_failed",
                    ) from None
                delay = backoff_delay(attempt)
                self.out.debug(f"download of {dest.name} interrupted ({exc}); resuming in {delay:.1f}s")
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _stream(self, url: str, part: Path) -> None:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                status = response.status_code
                if status in GONE:
                    raise _Gone(status)
                if status == 416 and offset:
                    total = _content_range_total(response.headers.get("content-range"))
                    if total == offset:
                        return  # the .part file is already complete
                    part.unlink()
                    raise _Retry("the partial file did not match the server's; starting over")
                if status >= 500 or status == 429:
                    raise _Retry(f"HTTP {status}")
                if status not in (200, 206):
                    raise RequestRejected(f"the video URL answered HTTP {status}", status=status, code="download_failed")
                if status == 206 and _content_range_start(response.headers.get("content-range")) == offset:
                    mode, expected_total = "ab", _content_range_total(response.headers.get("content-range"))
                else:
                    mode, offset = "wb", 0
                    length = response.headers.get("content-length")
                    expected_total = int(length) if length and length.isdigit() else None
                self._write(response, part, mode, offset, expected_total)
        except httpx.TransportError as exc:
            raise _Retry(str(exc) or type(exc).__name__) from None

    def _write(self, response: httpx.Response, part: Path, mode: str, offset: int, total: int | None) -> None:
        written = offset
        checked = offset > 0
        with part.open(mode) as handle:
            for chunk in response.iter_bytes(CHUNK):
                if not checked:
                    if not looks_like_mp4(chunk[:8]):
                        handle.close()
                        part.unlink()
                        raise RequestRejected(
                            "the video URL did not return an MP4 file "
                            f"(Content-Type {response.headers.get('content-type', 'unknown')})",
                            code="not_a_video",
                        )
                    checked = True
                handle.write(chunk)
                written += len(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if total is not None and written != total:
            raise _Retry(f"got {written} of {total} bytes")
        if written == 0:
            raise _Retry("the server sent no bytes")


def _content_range_start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _content_range_total(header: str | None) -> int | None:
    match = re.search(r"/(\d+)$", header or "")
    return int(match.group(1)) if match else None

