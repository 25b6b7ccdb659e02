"""Batch jobs from a CSV file: one task per row, never paid twice.

1. The whole file is validated first (types, enums, lengths, media preflight); with any bad row nothing is
   sent (`--skip-invalid` sends the good ones).
2. Each row has an identity: the hash of its resolved request (media by content), or its `external_id`
   column. The identity decides the row's shard (`--shard K/N`), and the external id it is submitted with
   (`kc-` + the identity), so the provider itself can recognise a row sent before.
3. Before anything is sent, the journal is asked about each identity: a row already submitted is waited
   on or skipped; a row whose answer was lost is looked up by its external id where the provider can,
   else it stays `uncertain` and is not sent again without `--resubmit-uncertain`.
4. A scheduler keeps at most `--max-in-flight` tasks running on the provider and sends at most `--rate`
   submits per second; a "too many running tasks" refusal (Kling 1303) puts the row back, it does not fail.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from kling_cli.errors import (
    AuthRejected,
    BadResponse,
    ConfigError,
    KlingError,
    ProviderUnavailable,
    SubmitUncertain,
    UsageError,
)
from kling_cli.fsutil import sha256_file
from kling_cli.models import MediaRef, MotionRequest, T2VRequest, Task, TaskStatus, json_object, json_or_text

T2V_COLUMNS = ("prompt", "model", "mode", "duration", "aspect_ratio", "negative_prompt", "cfg_scale",
               "camera_control", "callback_url", "external_id")
MOTION_COLUMNS = ("image", "video", "orientation", "mode", "prompt", "keep_sound", "model", "callback_url",
                  "external_id")
COLUMNS = {"t2v": T2V_COLUMNS, "motion": MOTION_COLUMNS}
ENUMS = {"mode": ("std", "pro"), "aspect_ratio": ("16:9", "9:16", "1:1"), "orientation": ("image", "video")}
TRUE, FALSE = ("yes", "true", "1", "y", "on"), ("no", "false", "0", "n", "off")
#: a 1303 ("too many running tasks") sends the row back for this long, growing with each refusal
REQUEUE_DELAY = 2.0
REQUEUE_MAX = 60.0


class RowProblem(Exception):
    pass


@dataclass
class Row:
    number: int  # data row, from 1
    line: int  # line in the file (the header is line 1)
    values: dict[str, str]


@dataclass
class Planned:
    row: Row
    kind: str
    identity: str
    external_id: str
    #: set once the row is known to the provider
    task_id: str | None = None
    state: str = "new"
    tries: int = 0
    not_before: float = 0.0
    #: sent again under --resubmit-uncertain, with the external id of the lost first try
    resubmitted: bool = False


@dataclass
class BatchOptions:
    csv_path: Path
    kind: str
    defaults: dict[str, Any]
    extra_columns: bool = False
    skip_invalid: bool = False
    max_in_flight: int = 5
    rate: float | None = None
    shard: tuple[int, int] | None = None
    resubmit_uncertain: bool = False
    wait: bool = False


# --- reading and checking rows ---------------------------------------------------------------------

def _header(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def read_rows(path: Path) -> Iterator[Row]:
    """Rows as dicts keyed by normalized column names, streamed (memory does not grow with the file)."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"--from-csv: file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"--from-csv: cannot read {path}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [_header(h) for h in next(reader)]
        except StopIteration:
            raise UsageError(f"{path} is empty: it needs a header row") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}:1: not a readable CSV header ({exc})") from None
        if len(set(header)) != len(header):
            raise UsageError(f"{path}:1: a column appears twice")
        number = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise UsageError(f"{path}:{reader.line_num}: not readable as CSV ({exc})") from None
            if not any(cell.strip() for cell in cells):
                continue
            number += 1
            values = dict(zip(header, cells))
            if len(cells) > len(header):
                values["__extra_cells__"] = str(len(cells) - len(header))
            yield Row(number, reader.line_num, values)


def check_columns(path: Path, kind: str, extra_columns: bool) -> list[str]:
    """Unknown columns: an error unless --extra-columns passes them through as provider fields."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = [_header(h) for h in next(csv.reader(handle), [])]
    unknown = [name for name in header if name not in COLUMNS[kind]]
    if unknown and not extra_columns:
        raise UsageError(f"{path}:1: unknown column(s) for {kind}: {', '.join(unknown)}",
                         hint=f"columns: {', '.join(COLUMNS[kind])}; --extra-columns sends others as provider fields")
    return unknown


def _typed(name: str, text: str) -> Any:
    if name in ENUMS:
        if text not in ENUMS[name]:
            raise RowProblem(f"{name} must be one of {', '.join(ENUMS[name])}, got {text!r}")
        return text
    if name == "duration":
        if not re.fullmatch(r"\d+", text) or not 3 <= int(text) <= 15:
            raise RowProblem(f"duration must be a whole number of seconds from 3 to 15, got {text!r}")
        return int(text)
    if name == "cfg_scale":
        try:
            value = float(text)
        except ValueError:
            raise RowProblem(f"cfg_scale must be a number, got {text!r}") from None
        if not 0 <= value <= 1:
            raise RowProblem(f"cfg_scale must be between 0 and 1, got {text}")
        return value
    if name == "keep_sound":
        lowered = text.lower()
        if lowered not in TRUE + FALSE:
            raise RowProblem(f"keep_sound must be yes or no, got {text!r}")
        return lowered in TRUE
    if name == "camera_control":
        try:
            return json_object(text, "camera_control")
        except ValueError as exc:
            raise RowProblem(str(exc)) from None
    if name == "callback_url" and not text.startswith(("http://", "https://")):
        raise RowProblem(f"callback_url must be an http(s) URL, got {text!r}")
    return text


def row_request(kind: str, row: Row, defaults: dict[str, Any], extra_names: list[str]) -> T2VRequest | MotionRequest:
    if "__extra_cells__" in row.values:
        raise RowProblem(f"{row.values['__extra_cells__']} more cell(s) than the header has columns")
    values = dict(defaults)
    extra: dict[str, Any] = dict(values.pop("extra", {}) or {})
    for name, text in row.values.items():
        text = text.strip()
        if not text:
            continue
        if name in extra_names:
            extra[name] = json_or_text(text)
        else:
            values[name] = _typed(name, text)
    if kind == "t2v":
        if not values.get("prompt"):
            raise RowProblem("prompt is empty")
        return T2VRequest(prompt=values["prompt"], model=values.get("model"), mode=values.get("mode"),
                          duration=values.get("duration"), aspect_ratio=values.get("aspect_ratio"),
                          negative_prompt=values.get("negative_prompt"), cfg_scale=values.get("cfg_scale"),
                          camera_control=values.get("camera_control"), callback_url=values.get("callback_url"),
                          external_id=values.get("external_id"), extra=extra)
    for needed in ("image", "video", "orientation", "mode"):
        if not values.get(needed):
            raise RowProblem(f"{needed} is empty (give the column, or --{needed} as a default for every row)")
    return MotionRequest(image=MediaRef.parse(values["image"]), video=MediaRef.parse(values["video"]),
                         orientation=values["orientation"], mode=values["mode"], prompt=values.get("prompt"),
                         keep_sound=values.get("keep_sound"), model=values.get("model"),
                         callback_url=values.get("callback_url"), external_id=values.get("external_id"),
                         extra=extra)


def _file_digest(path: str, cache: dict[str, str]) -> str:
    if path not in cache:
        cache[path] = sha256_file(path)
    return cache[path]


def identity(kind: str, req: T2VRequest | MotionRequest, occurrence: int, digests: dict[str, str]) -> str:
    """What makes two rows the same paid request. Local media count by content, so the identity is the same
    on every machine of a CI matrix; the n-th identical row is a different row."""
    if req.external_id:
        return "ext:" + req.external_id
    fields: dict[str, Any] = {k: v for k, v in vars(req).items() if k not in ("external_id", "image_base64")}
    if isinstance(req, MotionRequest):
        for key in ("image", "video"):
            ref: MediaRef = fields[key]
            fields[key] = ref.value if ref.is_url else "sha256:" + _file_digest(ref.value, digests)
    canonical = json.dumps({"kind": kind, "request": fields, "n": occurrence}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def row_external_id(ident: str) -> str:
    return ident[4:] if ident.startswith("ext:") else "kc-" + ident[:24]


def in_shard(ident: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    k, n = shard
    return int(hashlib.sha256(ident.encode()).hexdigest(), 16) % n == k - 1


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise UsageError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/3")
    return int(match.group(1)), int(match.group(2))


def parse_rate(text: str | None) -> float | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min))?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"--rate {text!r}: expected submits per second or minute, e.g. 2/s or 30/m")
    per = 60.0 if match.group(2) in ("m", "min") else 1.0
    return float(match.group(1)) / per


@dataclass
class Plan:
    rows: list[Planned] = field(default_factory=list)
    #: (row number, line, what is wrong) for every invalid row
    problems: list[tuple[int, int, str]] = field(default_factory=list)
    total: int = 0
    accepted: int = 0
    #: columns sent as provider fields (--extra-columns)
    extra_names: list[str] = field(default_factory=list)
    out_of_shard: int = 0


def plan_rows(service, opts: BatchOptions, *, on_row: Callable[[Row, Any, str, str], None] | None = None,
              keep: bool = True) -> Plan:
    """Validate every row (and, with `on_row`, hand each resolved request over, e.g. for --dry-run).

    With `keep=False` the rows are not kept, so memory does not grow with the file (--dry-run)."""
    plan = Plan(extra_names=check_columns(opts.csv_path, opts.kind, opts.extra_columns))
    #: occurrences of each identity so far, keyed by 64 bits of it (kept for every row: keep it small)
    seen: dict[int, int] = {}
    digests: dict[str, str] = {}
    media: dict = {}
    for row in read_rows(opts.csv_path):
        plan.total += 1
        try:
            req = row_request(opts.kind, row, opts.defaults, plan.extra_names)
            service.preflight(opts.kind, req, media_cache=media)
            base = identity(opts.kind, req, 0, digests)
            key = int(hashlib.sha256(base.encode()).hexdigest()[:16], 16)
            seen[key] = count = seen.get(key, 0) + 1
            ident = base if count == 1 or base.startswith("ext:") else identity(opts.kind, req, count - 1, digests)
            if base.startswith("ext:") and count > 1:
                raise RowProblem(f"external_id {req.external_id} is used by more than one row")
        except (RowProblem, KlingError, OSError) as exc:
            plan.problems.append((row.number, row.line, getattr(exc, "message", None) or str(exc)))
            continue
        if not in_shard(ident, opts.shard):
            plan.out_of_shard += 1
            continue
        external_id = row_external_id(ident)
        if on_row is not None:
            on_row(row, req, ident, external_id)
        plan.accepted += 1
        if keep:
            plan.rows.append(Planned(row, opts.kind, ident, external_id))
    return plan


# --- running ---------------------------------------------------------------------------------------

@dataclass
class BatchResult:
    succeeded: int = 0
    failed: int = 0
    refused: int = 0
    uncertain: int = 0
    submitted: int = 0
    skipped: int = 0
    #: tasks that could not be followed (unknown to the provider, or it stayed unreachable)
    errors: list[KlingError] = field(default_factory=list)
    timed_out: bool = False
    pending: list[str] = field(default_factory=list)


class BatchRun:
    """Submit the planned rows under the in-flight and rate limits, following tasks as they run."""

    def __init__(self, service, opts: BatchOptions, plan: Plan, waiter, *, manifest=None,
                 on_event: Callable[[Planned, str, str, Task | None], None] = lambda _p, _e, _d, _t: None,
                 on_done: Callable[[Planned, Task], None] = lambda _p, _t: None) -> None:
        self.service = service
        self.opts = opts
        self.plan = plan
        self.waiter = waiter
        self.manifest = manifest
        self.on_event = on_event
        self.on_done_cb = on_done
        self.queue: deque[Planned] = deque()
        self.by_task: dict[str, Planned] = {}
        self.result = BatchResult()
        self.next_submit = 0.0
        #: a 1303 told us how many tasks the account can run: no more until one finishes
        self.cap: int | None = None
        waiter.on_done = self._finished
        waiter.on_error = self._query_error

    # -- events ---------------------------------------------------------------------------------
    def _mark(self, item: Planned, state: str, detail: str = "", task: Task | None = None, **fields: Any) -> None:
        item.state = state
        if self.manifest is not None:
            from kling_cli.manifest import task_fields

            from kling_cli.labels import row_prompt, shorten

            values = {"line": item.row.line, "identity": item.identity, "kind": item.kind, "external_id":
                      item.external_id, "prompt_start": shorten(row_prompt(item.row.values, self.opts.defaults)),
                      **(task_fields(task) if task else {}), **fields}
            if not task:
                values["status"] = state
            self.manifest.update(item.row.number, **values)
        self.on_event(item, state, detail, task)

    def _finished(self, task: Task) -> None:
        item = self.by_task.get(task.id)
        self.cap = None  # a slot freed up
        if item is None:
            return
        if task.status is TaskStatus.SUCCEEDED:
            self.result.succeeded += 1
        else:
            self.result.failed += 1
        self._mark(item, task.status.value, task.error.message if task.error else "", task)
        self.on_done_cb(item, task)

    def _query_error(self, task_id: str, error: KlingError, final: bool) -> None:
        item = self.by_task.get(task_id)
        if item is not None and final:
            self.result.errors.append(error)
            self._mark(item, "error", error.message, error=error.message)

    # -- reconciling with the journal -----------------------------------------------------------
    def reconcile(self) -> None:
        """Decide, row by row, what the journal says is left to do."""
        journal = self.service.journal
        profile = self.service.resolved.profile
        for item in self.plan.rows:
            entry = journal.find_identity(profile, item.identity) if journal is not None else None
            if entry is None:
                self.queue.append(item)
                continue
            item.external_id = entry.external_id
            if entry.state == "submitted" and entry.task_id:
                self._known(item, entry.to_task())
            elif self.service.dialect.lookup_by_external_id:
                found = self.service.find_by_external_id(item.kind, entry.external_id)
                if found is not None:
                    journal.record_submitted(entry.id, found)
                    self._known(item, found)
                else:
                    self.queue.append(item)  # provably never created: safe to send (same external id)
            elif self.opts.resubmit_uncertain:
                item.resubmitted = True
                self.queue.append(item)
            else:
                journal.record_state(entry.id, "uncertain", entry.error)
                self.result.uncertain += 1
                self._mark(item, "uncertain", "its answer was lost and the provider cannot be asked; "
                           "not sent again (--resubmit-uncertain sends it)", error=entry.error)

    def _known(self, item: Planned, task: Task) -> None:
        """A row submitted by an earlier run: done ones are reported as they are, running ones followed."""
        from kling_cli.taskrefs import TaskRef

        item.task_id = task.id
        self.by_task[task.id] = item
        self.result.skipped += 1
        if task.terminal:
            if task.status is TaskStatus.SUCCEEDED:
                self.result.succeeded += 1
            else:
                self.result.failed += 1
            self._mark(item, task.status.value, "done in an earlier run", task)
            self.on_done_cb(item, task)
        else:
            self._mark(item, "submitted", "submitted in an earlier run: following it", task)
            self.waiter.add(TaskRef(task.id, item.kind))  # it holds a slot on the provider either way

    # -- the loop ---------------------------------------------------------------------------------
    def _slots(self) -> int:
        limit = self.opts.max_in_flight if self.cap is None else min(self.cap, self.opts.max_in_flight)
        return limit - len(self.waiter.tracked)

    def _submit_ready(self) -> float | None:
        """Send what the limits allow; return the seconds until the next row could go (None: nothing left)."""
        while self.queue:
            now = self.service.clock()
            item = self.queue[0]
            wait = max(self.next_submit - now, item.not_before - now)
            if wait > 0:
                return wait
            if self._slots() <= 0:
                return None if self.waiter.tracked else 0.5
            self.queue.popleft()
            self._send(item)
            if self.opts.rate:
                self.next_submit = self.service.clock() + 1.0 / self.opts.rate
        return None

    def _send(self, item: Planned) -> None:
        from kling_cli.taskrefs import TaskRef

        req = self.rebuild(item)
        try:
            self.service.preflight(item.kind, req)
            task = self.service.submit(item.kind, req, identity=item.identity, batch=str(self.opts.csv_path),
                                       row=item.row.number)
        except ProviderUnavailable as exc:
            if exc.code in ("concurrency_limit", "rate_limited") and not isinstance(exc, SubmitUncertain):
                item.tries += 1
                item.not_before = self.service.clock() + min(REQUEUE_DELAY * 2 ** (item.tries - 1), REQUEUE_MAX)
                self.cap = max(1, len(self.waiter.tracked)) if self.waiter.tracked else None
                self.queue.appendleft(item)
                self.on_event(item, "requeued", exc.message, None)
                return
            if isinstance(exc, SubmitUncertain):
                self.result.uncertain += 1
                self._mark(item, "uncertain", exc.message, error=exc.message)
                return
            raise
        except (AuthRejected, BadResponse, ConfigError):
            raise  # every other row would fail the same way: stop the batch
        except KlingError as exc:
            if item.resubmitted:
                # Refusing a resend with the same external id (Kling keeps them unique) says the first try
                # went through: paid once, its task id unknown.
                self.result.uncertain += 1
                self._mark(item, "uncertain", f"sent again and refused ({exc.message}): the first submit "
                           "probably went through; its task id is unknown", error=exc.message)
                return
            self.result.refused += 1
            self._mark(item, "refused", exc.message, error=exc.message)
            return
        item.task_id = task.id
        self.by_task[task.id] = item
        self.result.submitted += 1
        self._mark(item, "submitted", task.id, task)
        # just submitted: nothing to learn before the first interval
        self.waiter.add(TaskRef(task.id, item.kind, task if task.terminal else None),
                        delay=self.waiter.policy.next(None))

    def rebuild(self, item: Planned) -> T2VRequest | MotionRequest:
        req = row_request(item.kind, item.row, self.opts.defaults, self.plan.extra_names)
        req.external_id = item.external_id
        return req

    def run(self) -> BatchResult:
        self.waiter.start()
        self.reconcile()
        while True:
            until_submit = self._submit_ready()
            if not self.queue and (not self.opts.wait or not self.waiter.tracked):
                break
            now = self.service.clock()
            if now >= self.waiter.deadline:
                self.result.timed_out = True
                break
            until_poll = self.waiter.step() if self.waiter.tracked else None
            if self.waiter.outcome.timed_out:
                self.result.timed_out = True
                break
            pauses = [p for p in (until_submit, until_poll) if p is not None]
            pause = min(pauses) if pauses else 0.5
            if pause > 0:
                self.service.sleep(min(pause, max(self.waiter.deadline - self.service.clock(), 0.0)))
        self.result.pending = list(self.waiter.tracked)
        return self.result
