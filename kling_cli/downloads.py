"""Downloading result videos.

Each video streams to `NAME.mp4.part`, resumes with `Range` after an interruption (or starts over when the
server ignores the range), is checked (status, Content-Length, MP4 signature), then renamed: a file
named `NAME.mp4` is always complete. A `NAME.json` sidecar records where it came from and its sha256,
so a rerun skips files that are already complete and refuses to overwrite a file it did not write.

Result URLs are signed CDN links that expire (30 days): a 403/404/410 re-queries the task once for a
fresh URL. The provider's credentials are never sent to the CDN. Memory stays flat: bytes are written
as the network delivers them (chunks of up to 64 KiB) and hashed on a thread beside, through a bounded
backlog (see `_Hasher`).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shlex
import stat
import string
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

import httpx

from kling_cli import rules
from kling_cli.errors import KlingError, NotFound, NoVideo, ProviderUnavailable, RequestRejected, TaskFailed, UsageError
from kling_cli.fsutil import cannot_write, sha256_file, write_atomic
from kling_cli.models import Task, TaskStatus, now_iso, quoted
from kling_cli.transport import USER_AGENT, backoff_delay, loopback_mounts, tls_context

ATTEMPTS = 4
#: box types an MP4/MOV file can start with
MP4_HEADS = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
GONE = (403, 404, 410)
NAME_FIELDS = ("id", "external_id", "index", "kind", "provider")
DEFAULT_TEMPLATE = "{id}"
#: bytes handed to the hashing thread at a time, and how many such batches may wait for it
HASH_BATCH = 1024 * 1024
HASH_BACKLOG = 4
#: every this many bytes written, the kernel is asked to start writing them to disk (see `Downloader._copy`)
WRITEBACK_EVERY = 8 * 1024 * 1024
#: the progress display is told about new bytes at most this often (seconds)
PROGRESS_EVERY = 0.05


class Progress(Protocol):
    def start(self, name: str, total: int | None, done: int) -> None: ...
    def advance(self, count: int) -> None: ...
    def finish(self) -> None: ...


class _NoProgress:
    def start(self, name: str, total: int | None, done: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


class _Gone(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Retry(Exception):
    pass


@dataclass
class Downloaded:
    task: Task
    index: int
    path: Path
    size: int
    sha256: str
    #: already there and complete: nothing was fetched
    skipped: bool = False


def safe_name(text: str) -> str:
    """A file name from untrusted text: no separators, no leading dots, nothing a shell chokes on."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned[:120] or "video"


def check_template(template: str) -> None:
    """Only plain `{field}`s: no attribute or index access, conversion or format spec (`{id.foo}`, `{id:>9999}`)."""
    fields = ", ".join("{" + f + "}" for f in NAME_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"--name {quoted(template)}: {exc}", hint=f"fields: {fields}; '{{{{' for a brace") from None
    for _text, field, spec, conversion in parsed:
        if field is not None and (field not in NAME_FIELDS or spec or conversion):
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise UsageError(f"--name {quoted(template)}: {quoted(shown)} is not a field", hint=f"fields: {fields}")


def file_name(task: Task, index: int, template: str = DEFAULT_TEMPLATE) -> str:
    """The file name for one video: the template's fields are sanitized one by one, then the whole."""
    if len(task.videos) > 1 and "{index}" not in template:
        template += "-{index}"
    values = {"id": task.id, "external_id": task.external_id or task.id, "index": index + 1, "kind": task.kind,
              "provider": task.provider or ""}
    name = safe_name(template.format(**{k: safe_name(str(v)) for k, v in values.items()}))
    return name if name.lower().endswith(".mp4") else name + ".mp4"


def sidecar_path(video: Path) -> Path:
    return video.with_suffix(".json")


def usable_url(url: str | None) -> bool:
    """Only http(s) is fetched: a provider's `file://`, `ftp://`, `data:` or `javascript:` URL is not a video."""
    try:
        rules.http_url(url)
    except ValueError:
        return False
    return True


def _no_usable_url(task: Task, detail: str = "") -> RequestRejected:
    return RequestRejected(f"task {task.id} succeeded but the provider gave no usable video URL{detail}",
                           hint="nothing was written; only http(s) URLs are downloaded", code="no_video")


def looks_like_mp4(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] in MP4_HEADS


def _existing(dest: Path, task: Task, index: int) -> dict | None:
    """The sidecar of a file that is already there and is the complete download of this very video."""
    try:
        meta = json.loads(sidecar_path(dest).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("task_id") != task.id or meta.get("video_index") != index + 1:
        return None
    complete = meta.get("size") == dest.stat().st_size and meta.get("sha256") == sha256_file(dest)
    return meta if complete else None


class Downloader:
    def __init__(self, out, *, client: httpx.Client | None = None, sleep: Callable[[float], None] = time.sleep,
                 max_connections: int = 16) -> None:
        self.out = out
        self.sleep = sleep
        #: destinations taken by this run: two videos must never share a file (a --name without {id})
        self._claimed: dict[Path, str] = {}
        self._claim_lock = threading.Lock()
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self.client = client or httpx.Client(
            verify=tls_context(),
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            limits=limits,
            mounts=loopback_mounts(limits),
        )

    def close(self) -> None:
        self.client.close()

    # -- one task --------------------------------------------------------------------------------
    @staticmethod
    def check_ready(task: Task, out_dir: str, *, suggest: Callable[..., str] = lambda *words: shlex.join(
            ["kling", *words])) -> None:
        """Raise unless the task has videos to download; `suggest` writes the command a hint names."""
        if task.status is TaskStatus.FAILED:
            reason = task.error.message if task.error else "no reason given"
            raise TaskFailed(f"task {task.id} failed: {reason}", extra={"task_ids": [task.id]})
        if task.status is not TaskStatus.SUCCEEDED:
            raise UsageError(
                f"task {task.id} is {task.status.value}, there is nothing to download yet",
                hint=f"wait for it first: `{suggest('wait', task.id, '--download', out_dir)}`",
            )
        if task.without_video:
            raise NoVideo.of(task.id, task.raw)
        if not any(usable_url(v.url) for v in task.videos):
            shown = next((v.url for v in task.videos if v.url), None)
            raise _no_usable_url(task, f" (it gave {quoted(shown)})" if shown else "")

    def fetch_video(
        self,
        task: Task,
        index: int,
        out_dir: Path,
        *,
        template: str = DEFAULT_TEMPLATE,
        force: bool = False,
        refresh: Callable[[], Task] | None = None,
        progress: Progress | None = None,
    ) -> Downloaded:
        dest = out_dir / file_name(task, index, template)
        part = dest.with_name(dest.name + ".part")
        self._claim(dest, f"{task.id} video {index + 1}")  # refused: the .part is another video's, left alone
        try:
            if dest.exists() and not force:
                meta = _existing(dest, task, index)
                if meta is not None:
                    return Downloaded(task, index, dest, meta["size"], meta["sha256"], skipped=True)
                raise UsageError(f"{dest} exists and is not the complete download of this video",
                                 hint="move it away, or use --force to replace it", code="file_exists")
            out_dir.mkdir(parents=True, exist_ok=True)
            if force and part.exists():
                part.unlink()  # --force starts from the first byte, whatever an earlier attempt left
            size, digest, url = self._with_fresh_url(task, index, refresh,
                                                     lambda u, stale: self._to_part(u, part, progress, stale))
            os.replace(part, dest)
            video = task.videos[index]
            sidecar = {
                "task_id": task.id, "provider": task.provider, "dialect": task.dialect, "profile": task.profile,
                "kind": task.kind, "external_id": task.external_id, "request": task.request,
                "video_index": index + 1, "video_id": video.id, "url": url, "duration": video.duration,
                "sha256": digest, "size": size, "downloaded_at": now_iso(),
            }
            write_atomic(sidecar_path(dest), (json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n").encode())
            return Downloaded(task, index, dest, size, digest)
        except OSError as exc:  # a full disk, a file-size limit, permissions: what was written stays for a resume
            _drop_if_empty(part)
            raise cannot_write(out_dir, exc, then=f"run the same command again: it resumes from {part.name}"
                               ) from None
        except KlingError:
            _drop_if_empty(part)  # nothing was fetched: no trace left
            raise

    def _claim(self, dest: Path, what: str) -> None:
        with self._claim_lock:
            owner = self._claimed.setdefault(dest.resolve(), what)
        if owner != what:
            raise UsageError(f"{what} and {owner} would both be written to {dest}",
                             hint="make --name unique per video, e.g. with {id} and {index}", code="name_clash")

    def fetch_to_stream(self, task: Task, index: int, stream: BinaryIO, *, refresh: Callable[[], Task] | None = None,
                        progress: Progress | None = None) -> int:
        """`-o -`: one video to stdout. No resume: bytes already written cannot be taken back."""
        def copy(url: str, stale: bool) -> tuple[int, str]:
            return self._stream(url, stream, 0, hashlib.sha256(), progress or _NoProgress(), resumable=False,
                                stale_if_refused=stale)

        try:
            size, _digest, _url = self._with_fresh_url(task, index, refresh, copy)
            stream.flush()
        except BrokenPipeError:
            raise  # the reader went away: the command stops quietly
        except OSError as exc:
            raise cannot_write("stdout", exc, then="download it into a directory (-o DIR)") from None
        return size

    def _with_fresh_url(self, task: Task, index: int, refresh: Callable[[], Task] | None,
                        fetch: Callable[[str, bool], tuple[int, str]]) -> tuple[int, str, str]:
        """Fetch a video; a URL that is refused (403/404/410) or whose host refuses the connection (a
        stale URL, e.g. from a task printed by an earlier run) is replaced once by a fresh one."""
        url = task.videos[index].url or ""
        refreshed = False
        while True:
            if not usable_url(url):
                raise _no_usable_url(task, f" (it gave {quoted(url)})" if url else "")
            try:
                size, digest = fetch(url, refresh is not None and not refreshed)
                return size, digest, url
            except _Gone as gone:
                if refreshed or refresh is None:
                    raise NotFound(
                        f"the video of task {task.id} is gone (HTTP {gone.status}"
                        f"{' even with a fresh URL' if refreshed else ''})",
                        hint="providers delete results after 30 days; it cannot be downloaded any more",
                        code="video_gone",
                    ) from None
                refreshed = True
                why = f"HTTP {gone.status}" if gone.status else "its host refused the connection"
                self.out.debug(f"video URL refused ({why}); asking the provider for a fresh one")
                fresh = refresh()
                if index >= len(fresh.videos) or not fresh.videos[index].url:
                    raise NotFound(f"task {task.id} no longer lists video {index + 1}", code="video_gone") from None
                url = fresh.videos[index].url or ""
                task.videos[index] = fresh.videos[index]

    # -- bytes -----------------------------------------------------------------------------------
    def _to_part(self, url: str, part: Path, progress: Progress | None, stale_if_refused: bool = False
                 ) -> tuple[int, str]:
        progress = progress or _NoProgress()
        for attempt in range(ATTEMPTS):
            digest = hashlib.sha256()
            offset = 0
            if part.exists():
                with part.open("rb") as handle:  # resuming: the hash must cover what is already there
                    while chunk := handle.read(1024 * 1024):
                        digest.update(chunk)
                        offset += len(chunk)
            try:
                with part.open("ab") as handle:
                    return self._stream(url, handle, offset, digest, progress, resumable=True, part=part,
                                        stale_if_refused=stale_if_refused and attempt == 0)
            except _Retry as exc:
                if attempt == ATTEMPTS - 1:
                    raise ProviderUnavailable(
                        f"downloading {part.name.removesuffix('.part')} kept failing: {exc}",
                        hint=f"run the same command again: it resumes from {part.name}",
                        code="download_failed",
                    ) from None
                delay = backoff_delay(attempt)
                self.out.debug(f"download of {part.name} interrupted ({exc}); resuming in {delay:.1f}s")
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _stream(self, url: str, sink: BinaryIO, offset: int, digest, progress: Progress, *, resumable: bool,
                part: Path | None = None, stale_if_refused: bool = False) -> tuple[int, str]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self.client.stream("GET", url, headers=headers) as response:
                status = response.status_code
                if status in GONE:
                    raise _Gone(status)
                if status == 416 and offset:
                    if _total(response.headers.get("content-range")) == offset:
                        return offset, digest.hexdigest()  # the .part file was already complete
                    raise _restart(part, "the partial file did not match the server's; starting over")
                if status >= 500 or status == 429:
                    if not resumable:
                        raise ProviderUnavailable(f"the video URL answered HTTP {status}", status=status,
                                                  code="download_failed")
                    raise _Retry(f"HTTP {status}")
                if status not in (200, 206):
                    raise RequestRejected(f"the video URL answered HTTP {status}", status=status,
                                          code="download_failed")
                if status == 206 and _start(response.headers.get("content-range")) == offset:
                    total = _total(response.headers.get("content-range"))
                elif offset:
                    # The server ignored the range: start over from the first byte.
                    sink.seek(0)
                    sink.truncate()
                    offset, digest = 0, hashlib.sha256()
                    total = _length(response)
                else:
                    total = _length(response)
                progress.start(part.name.removesuffix(".part") if part else "stdout", total, offset)
                # Chunks as the network delivers them (up to 64 KiB): re-chunking would copy every byte, and
                # hold back what already arrived when the connection breaks, so a resume would start earlier.
                identity = response.headers.get("content-encoding", "identity") in ("", "identity")
                chunks = response.iter_raw() if identity else response.iter_bytes()
                hasher = _Hasher(digest)
                try:
                    written = self._copy(chunks, sink, offset, hasher, progress, response, part, writeback=resumable)
                    sink.flush()
                    if resumable:
                        os.fsync(sink.fileno())
                    digest_hex = hasher.hexdigest()
                finally:
                    hasher.abandon()  # on the way out of a failure; nothing left to do after hexdigest()
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:  # a redirect to file://, ftp://...
            raise RequestRejected(f"no usable video URL: {url} redirects to a URL that is not http(s) ({exc})",
                                  hint="only http(s) URLs are downloaded", code="no_video") from None
        except httpx.TooManyRedirects:
            raise RequestRejected(f"the video URL redirects in a loop: {url}", code="download_failed") from None
        except httpx.DecodingError as exc:
            raise RequestRejected(f"the video URL sent a body that is not what its Content-Encoding says ({exc})",
                                  code="download_failed") from None
        except httpx.ConnectError as exc:
            if stale_if_refused:
                raise _Gone(0) from None
            if not resumable:
                raise ProviderUnavailable(f"cannot reach the video URL: {exc}", code="download_failed") from None
            raise _Retry(str(exc) or type(exc).__name__) from None
        except httpx.TransportError as exc:
            if not resumable:
                raise ProviderUnavailable(f"the download broke: {exc}", code="download_failed") from None
            raise _Retry(str(exc) or type(exc).__name__) from None
        if total is not None and written != total:
            if not resumable:
                raise ProviderUnavailable(f"the download broke after {written} of {total} bytes",
                                          code="download_failed")
            raise _Retry(f"got {written} of {total} bytes")
        if written == 0:
            if not resumable:
                raise ProviderUnavailable("the video URL sent no bytes", code="download_failed")
            raise _Retry("the server sent no bytes")
        progress.finish()
        return written, digest_hex

    def _copy(self, chunks, sink: BinaryIO, offset: int, hasher: _Hasher, progress: Progress,
              response: httpx.Response, part: Path | None, *, writeback: bool) -> int:
        """Write each chunk as it arrives, hash it on the side, tell the progress display now and then.

        Per chunk only the write happens here: hashing runs on another thread (hashlib releases the GIL),
        the display is updated at most every PROGRESS_EVERY seconds, and the kernel is asked to start
        writing the file out every WRITEBACK_EVERY bytes, so that the final fsync has little left to do.
        """
        written = offset
        checked = offset > 0
        shown = 0
        next_show = 0.0
        flushed = offset
        fd = _regular_fd(sink) if writeback and _fadvise is not None else None
        write = sink.write
        clock = time.monotonic
        head = b""
        for chunk in chunks:
            if not checked:
                # the first 8 bytes say whether it is an MP4, however the network split them
                head += chunk
                if len(head) < 8:
                    continue
                if not looks_like_mp4(head[:8]):
                    raise _not_video(response, part)
                checked, chunk = True, head
            write(chunk)
            hasher.update(chunk)
            written += len(chunk)
            now = clock()
            if now >= next_show:
                progress.advance(written - offset - shown)
                shown = written - offset
                next_show = now + PROGRESS_EVERY
            if fd is not None and written - flushed >= WRITEBACK_EVERY:
                sink.flush()
                try:
                    _fadvise(fd, flushed, written - flushed, os.POSIX_FADV_DONTNEED)
                except OSError:
                    fd = None
                flushed = written
        if not checked and head:
            raise _not_video(response, part)  # fewer than 8 bytes in all
        if written - offset > shown:
            progress.advance(written - offset - shown)
        return written


class _Hasher:
    """sha256 beside the download: chunks are handed over in batches of HASH_BATCH bytes to a thread of its
    own (hashlib releases the GIL on large buffers, so hashing overlaps receiving and writing). At most
    HASH_BACKLOG batches wait, so memory stays bounded when hashing is slower than the network. A download
    smaller than one batch is hashed inline, with no thread."""

    def __init__(self, digest) -> None:
        self.digest = digest
        self._batch: list[bytes] = []
        self._size = 0
        self._queue: queue.Queue[list[bytes] | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, chunk: bytes) -> None:
        self._batch.append(chunk)
        self._size += len(chunk)
        if self._size >= HASH_BATCH:
            if self._queue is None:
                self._queue = queue.Queue(HASH_BACKLOG)
                self._thread = threading.Thread(target=self._run, args=(self._queue,), daemon=True,
                                                name="kling-sha256")
                self._thread.start()
            self._queue.put(self._batch)
            self._batch, self._size = [], 0

    def _run(self, batches: queue.Queue[list[bytes] | None]) -> None:
        update = self.digest.update
        while (batch := batches.get()) is not None:
            for chunk in batch:
                update(chunk)

    def hexdigest(self) -> str:
        if self._queue is not None:
            self._queue.put(None)
            assert self._thread is not None
            self._thread.join()
            self._queue = None
        for chunk in self._batch:
            self.digest.update(chunk)
        self._batch, self._size = [], 0
        return self.digest.hexdigest()

    def abandon(self) -> None:
        """Stop the thread after what it holds; the digest is not used any more."""
        self._batch, self._size = [], 0
        if self._queue is not None:
            self._queue.put(None)
            self._queue = None


#: tells the kernel to start writing a range of the file out (Linux; absent elsewhere)
_fadvise = getattr(os, "posix_fadvise", None)


def _regular_fd(sink: BinaryIO) -> int | None:
    try:
        fd = sink.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


def _drop_if_empty(part: Path) -> None:
    """An empty .part carries nothing to resume from: it is not left behind."""
    try:
        if part.stat().st_size == 0:
            part.unlink()
    except OSError:
        pass


def _restart(part: Path | None, reason: str) -> _Retry:
    if part is not None and part.exists():
        part.unlink()
    return _Retry(reason)


def _not_video(response: httpx.Response, part: Path | None) -> RequestRejected:
    if part is not None and part.exists():
        part.unlink()
    kind = response.headers.get("content-type", "unknown")
    return RequestRejected(f"the video URL did not return an MP4 file (Content-Type {kind})", code="not_a_video")


def _length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


def _start(header: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _total(header: str | None) -> int | None:
    match = re.search(r"/(\d+)$", header or "")
    return int(match.group(1)) if match else None
