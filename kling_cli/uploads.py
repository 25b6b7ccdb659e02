"""Local files where a provider takes URLs only: put each one where the provider can fetch it, once.

An uploader is the profile's `upload_command`, a template run without a shell the way git runs credential
helpers: split once into arguments, `{path}`, `{name}`, `{sha256}` and `{ext}` substituted inside each
argument, the public URL read from the last line it prints on stdout. On the sandbox profile it is the
sandbox's own upload route. A file is known by its content (sha256): this run remembers its URL, and the
journal keeps it (sha256 -> URL, per uploader, with the time) for the next runs, until the URL is older
than the uploader's declared lifetime (`upload_ttl`, for presigned URLs).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kling_cli.errors import ConfigError, PreflightError
from kling_cli.fsutil import sha256_file
from kling_cli.models import quoted
from kling_cli.rules import PLACEHOLDER

if TYPE_CHECKING:
    from kling_cli.journal import Journal

#: how long an uploader may run: a 100 MB video on a slow uplink takes minutes, a hung one must not stall CI
UPLOAD_TIMEOUT = 1800.0


class UploadError(ConfigError):
    code = "upload_failed"


@dataclass(frozen=True)
class LocalFile:
    path: str  # absolute
    sha256: str
    ext: str  # from its content: jpg, png, mp4, mov
    size: int

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


@dataclass(frozen=True)
class Known:
    url: str
    uploaded_at: float  # seconds since the epoch


class Uploader:
    #: what the journal keys its URLs by (None: cannot be known yet, e.g. a sandbox not started)
    key: str | None = None
    #: how messages name it
    name = "the uploader"
    #: seconds its URLs stay valid; None: for good
    ttl: float | None = None

    def upload(self, file: LocalFile) -> str:
        raise NotImplementedError


class CommandUploader(Uploader):
    def __init__(self, profile: str, template: str, ttl: float | None = None) -> None:
        import shlex

        self.words = shlex.split(template)  # checked by rules.upload_command when the profile was read
        self.ttl = ttl
        program = os.path.basename(self.words[0])
        # the template itself may carry a token: messages and the journal name the program and a digest only
        self.key = f"{program} #{hashlib.sha256(template.encode()).hexdigest()[:12]}"
        self.name = f"the uploader of profile {profile!r} ({program})"

    def argv(self, file: LocalFile) -> list[str]:
        """One pass per argument, so a value that looks like a placeholder is never substituted again."""
        values = {"path": file.path, "name": file.name, "sha256": file.sha256, "ext": file.ext}
        argv = [PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in self.words]
        for word, arg in zip(self.words[1:], argv[1:]):
            if arg.startswith("-") and not word.startswith("-"):  # "{name}" holding "--config=..."
                raise UploadError(f"{quoted(arg)} would reach {self.name} as an argument, and would be read as an "
                                  "option",
                                  hint=f"nothing was submitted; rename {file.path}, or put {{name}} after a prefix "
                                  "in upload_command")
        return argv

    def upload(self, file: LocalFile) -> str:
        argv = self.argv(file)
        hint = "nothing was submitted; fix upload_command in the profile (see the README, 'Local files')"
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=UPLOAD_TIMEOUT)
        except FileNotFoundError:
            raise UploadError(f"{self.name} cannot run: {argv[0]}: command not found", hint=hint) from None
        except subprocess.TimeoutExpired:
            raise UploadError(f"{self.name} did not finish uploading {file.path} within {UPLOAD_TIMEOUT:g} s",
                              hint=hint) from None
        except OSError as exc:
            raise UploadError(f"{self.name} cannot run: {argv[0]}: {exc.strerror or exc}", hint=hint) from None
        said = _last_line(done.stderr)
        if done.returncode != 0:
            how = f"was killed by signal {-done.returncode}" if done.returncode < 0 else \
                f"failed (exit {done.returncode})"
            raise UploadError(f"{self.name} {how} uploading {file.path}" + (f": {said}" if said else ""), hint=hint)
        return checked_url(self.name, _last_line(done.stdout), file, said, hint)


class SandboxUploader(Uploader):
    """The sandbox's `PUT /uploads/{name}`, which answers with the URL it then serves the file at."""

    name = "the sandbox's upload route"

    def __init__(self, origin: Callable[[], str], started: Callable[[], bool]) -> None:
        self._origin = origin
        self._started = started

    @property
    def key(self) -> str | None:  # type: ignore[override]
        # a sandbox started by this process listens on a port of its own: an earlier one's URLs are gone
        return f"sandbox {self._origin()}" if self._started() else None

    def upload(self, file: LocalFile) -> str:
        import httpx

        target = f"{self._origin()}/uploads/{file.sha256}.{file.ext}"
        try:
            with open(file.path, "rb") as handle:
                answer = httpx.put(target, content=handle, timeout=60.0, trust_env=False)
        except (OSError, httpx.HTTPError) as exc:
            raise UploadError(f"{self.name} failed uploading {file.path}: {exc}") from None
        if answer.status_code != 200:
            raise UploadError(f"{self.name} failed uploading {file.path} (HTTP {answer.status_code}): "
                              f"{_last_line(answer.content)}")
        return checked_url(self.name, _last_line(answer.content), file, "", "")


def checked_url(name: str, url: str, file: LocalFile, said: str, hint: str) -> str:
    from kling_cli import rules

    if not url:
        raise UploadError(f"{name} printed no URL for {file.path}" + (f" (its last words: {said})" if said else ""),
                          hint=hint or None)
    try:
        return rules.http_url(url)
    except ValueError:
        raise UploadError(f"{name} printed {quoted(url, 80)} for {file.path}, not an http(s) URL"
                          + (f" (its last words: {said})" if said else ""), hint=hint or None) from None


def shown(url: str) -> str:
    """A URL fit for a log: a presigned URL's query (its signature, a read grant) is left out."""
    base, query = url.split("?", 1) if "?" in url else (url, "")
    return f"{base}?..." if query else base


def _last_line(output: bytes) -> str:
    lines = [line.strip() for line in output.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


class Uploads:
    """The URL of each local file a request needs as one: this run's, the journal's while fresh, or a new
    upload (remembered in both)."""

    def __init__(self, uploader: Uploader, journal: Journal | None, *, say: Callable[[str], None],
                 warn: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self.uploader = uploader
        self.journal = journal
        self.say = say
        self.warn = warn
        self.clock = clock
        self._files: dict[tuple[str, int, int], LocalFile] = {}
        self._urls: dict[str, Known] = {}
        #: how many uploads this run made, and of which files (for the tests and --dry-run's summary)
        self.uploaded: list[LocalFile] = []

    def local(self, path_text: str) -> LocalFile:
        """The file, hashed once per run (a CSV whose 200 rows share one video reads it once)."""
        from kling_cli.media import content_ext, local_path

        path = local_path(path_text).resolve()
        try:
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            if key not in self._files:
                self._files[key] = LocalFile(str(path), sha256_file(path), content_ext(path), stat.st_size)
        except OSError as exc:  # gone or unreadable since preflight read it
            raise PreflightError(f"cannot read {path}: {exc.strerror or exc}", hint="nothing was submitted") from None
        return self._files[key]

    def _fresh(self, known: Known | None) -> Known | None:
        ttl = self.uploader.ttl
        return known if known is not None and (ttl is None or self.clock() - known.uploaded_at < ttl) else None

    def known(self, file: LocalFile) -> Known | None:
        """The URL this file already has (this run's, else the journal's), while it is younger than the TTL."""
        found = self._fresh(self._urls.get(file.sha256))
        if found is not None or self.journal is None:
            return found
        key = self.uploader.key
        if key is None:
            return None
        try:
            stored = self.journal.upload_of(file.sha256, key)
        except Exception:  # reading the journal is best-effort: the file is uploaded again
            return None
        found = self._fresh(Known(*stored) if stored else None)
        if found is not None:
            self._urls[file.sha256] = found
        return found

    def url_for(self, file: LocalFile) -> str:
        found = self.known(file)
        if found is not None:
            return found.url
        url = self.uploader.upload(file)
        known = Known(url, self.clock())
        self._urls[file.sha256] = known
        self.uploaded.append(file)
        self.say(f"uploaded {file.path} ({file.size} bytes) with {self.uploader.name}: {shown(url)}")
        if self.journal is not None and self.uploader.key is not None:
            try:
                self.journal.record_upload(file.sha256, self.uploader.key, url, file.name, file.size, known.uploaded_at)
            except Exception as exc:  # the URL works without it; the next run uploads the file again
                self.warn(f"journal: could not record the upload of {file.path} ({exc})")
        return url
