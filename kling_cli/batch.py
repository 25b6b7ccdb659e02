"""Batch jobs from a CSV file: one task per row, never paid twice.

1. The whole file is validated first (types, enums, lengths, media preflight); with any bad row nothing is
   sent (`--skip-invalid` sends the good ones).
2. Each row has an identity: the hash of its resolved request (media by content), or its `external_id`
   column. The identity decides the row's shard (`--shard K/N`), and the external id it is submitted with
   (`kc-` + the identity), so the provider itself can recognise a row sent before.
3. Before anything is sent, the journal is asked about each row's external id: a row already submitted is
   waited on or skipped. Each other row is claimed in the journal just before it is sent (see `claims`):
   a row another process is sending is followed, not sent; a row whose answer was lost is looked up by its
   external id where the provider can (or by the task id an earlier run wrote in the manifest), else it
   stays `uncertain` and is not sent again without `--resubmit-uncertain`.
4. A scheduler keeps at most `--max-in-flight` tasks running on the provider (or finds the account's limit:
   `auto`), starts the next row as soon as a task is seen to end, and sends at most `--rate` submits per
   second; a "too many running tasks" refusal (Kling 1303) puts the row back, it does not fail, and lowers
   the limit for a while (see `slots`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from kling_cli import rules
from kling_cli.errors import (
    AuthRejected,
    BadResponse,
    ConfigError,
    KlingError,
    ProviderUnavailable,
    SubmitUncertain,
    UsageError,
)
from kling_cli.events import ERROR, FAILED, FOLLOWING, REQUEUED, STATUS, Event
from kling_cli.fsutil import sha256_file
from kling_cli.models import (
    Cost,
    I2VRequest,
    MediaRef,
    MotionRequest,
    SubmitRequest,
    T2VRequest,
    Task,
    TaskStatus,
    json_or_text,
)

T2V_COLUMNS = ("prompt", "model", "mode", "duration", "aspect_ratio", "negative_prompt", "cfg_scale",
               "camera_control", "callback_url", "external_id")
I2V_COLUMNS = ("image", "image_tail", "prompt", "model", "mode", "duration", "aspect_ratio", "negative_prompt",
               "cfg_scale", "camera_control", "callback_url", "external_id")
MOTION_COLUMNS = ("image", "video", "orientation", "mode", "prompt", "keep_sound", "model", "callback_url",
                  "external_id")
COLUMNS = {"t2v": T2V_COLUMNS, "i2v": I2V_COLUMNS, "motion": MOTION_COLUMNS}
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
    #: None: auto (find the account's limit)
    max_in_flight: int | None = 5
    rate: float | None = None
    shard: tuple[int, int] | None = None
    resubmit_uncertain: bool = False
    wait: bool = False
    #: --max-cost as given ("100units"); parsed against the provider's unit when the batch runs
    max_cost: str | None = None


# --- reading and checking rows ---------------------------------------------------------------------

def _header(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _lines(path: Path, handle: BinaryIO) -> Iterator[str]:
    """The file's lines, decoded one at a time so that a bad byte is named by its own line (a text stream
    decodes ahead in chunks), with the UTF-8 BOM dropped; CR LF ends are left to the csv module."""
    for number, raw in enumerate(handle, 1):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}:{number}: not valid UTF-8 (byte {exc.start + 1} of the line)",
                             hint="save the file as UTF-8") from None
        if "\0" in text:
            raise UsageError(f"{path}:{number}: a NUL byte; a text CSV has none",
                             hint="this looks like a binary file or a UTF-16 export: save it as UTF-8 CSV")
        yield text


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, its cells), refusing what cannot be read one way only: an unterminated
    quote would otherwise swallow the lines after it into one cell."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise UsageError(f"--from-csv: file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"--from-csv: {path} is a directory, not a CSV file") from None
    except OSError as exc:
        raise UsageError(f"--from-csv: cannot read {path}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(_lines(path, handle), strict=True)
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                problem = ("a quote opened on this line is never closed" if "unexpected end of data" in str(exc)
                           else f"a quoted cell starting on this line is malformed ({exc})")
                raise UsageError(f"{path}:{start}: {problem}", hint="close the quote, or double a quote "
                                 'inside a quoted cell ("")') from None
            except OSError as exc:
                raise UsageError(f"--from-csv: cannot read {path}: {exc.strerror}") from None
            yield start, cells


def _columns(path: Path, cells: list[str]) -> list[str]:
    header = [_header(h) for h in cells]
    if len(set(header)) != len(header):
        raise UsageError(f"{path}:1: a column appears twice")
    return header


def read_header(path: Path) -> list[str]:
    first = next(_records(path), None)
    if first is None:
        raise UsageError(f"{path} is empty: it needs a header row")
    return _columns(path, first[1])


def read_rows(path: Path) -> Iterator[Row]:
    """Rows as dicts keyed by normalized column names, streamed (memory does not grow with the file)."""
    records = _records(path)
    first = next(records, None)
    if first is None:
        raise UsageError(f"{path} is empty: it needs a header row")
    header = _columns(path, first[1])
    number = 0
    for line, cells in records:
        if not any(cell.strip() for cell in cells):
            continue
        number += 1
        values = dict(zip(header, cells))
        if len(cells) > len(header):
            values["__extra_cells__"] = str(len(cells) - len(header))
        yield Row(number, line, values)


def check_columns(path: Path, kind: str, extra_columns: bool) -> list[str]:
    """Unknown columns: an error unless --extra-columns passes them through as provider fields."""
    header = read_header(path)
    unknown = [name for name in header if name not in COLUMNS[kind]]
    if unknown and not extra_columns:
        raise UsageError(f"{path}:1: unknown column(s) for {kind}: {', '.join(unknown)}",
                         hint=f"columns: {', '.join(COLUMNS[kind])}; --extra-columns sends others as provider fields")
    return unknown


def _typed(name: str, text: str) -> Any:
    try:
        return rules.cell(name, text)
    except ValueError as exc:
        raise RowProblem(f"{name} {exc}") from None


def row_request(kind: str, row: Row, defaults: dict[str, Any], extra_names: list[str]) -> SubmitRequest:
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
    if kind == "i2v":
        if not values.get("image"):
            raise RowProblem("image is empty (give the column, or --image as a default for every row)")
        return I2VRequest.from_values({**values, "extra": extra})
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


def identity(kind: str, req: SubmitRequest, occurrence: int, digests: dict[str, str]) -> str:
    """What makes two rows the same paid request. Local media count by content, so the identity is the same
    on every machine of a CI matrix; the n-th identical row is a different row."""
    if req.external_id:
        return "ext:" + req.external_id
    fields: dict[str, Any] = {k: v for k, v in vars(req).items()
                              if k not in ("external_id", "image_base64", "image_tail_base64")}
    for key, ref in fields.items():
        if isinstance(ref, MediaRef):
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


def parse_max_in_flight(text: str) -> int | None:
    """A number of tasks, or `auto` (None): find the account's limit."""
    if text.strip().lower() == "auto":
        return None
    if not re.fullmatch(r"\s*\d+\s*", text) or int(text) < 1:
        raise UsageError(f"--max-in-flight {text!r}: expected a number of tasks (1 or more) or auto")
    return int(text)


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
    #: rows another process submitted while this one ran, followed here
    followed: int = 0
    #: tasks the provider says succeeded but that name no video
    no_video: int = 0
    #: tasks that could not be followed (unknown to the provider, or it stayed unreachable)
    errors: list[KlingError] = field(default_factory=list)
    timed_out: bool = False
    pending: list[str] = field(default_factory=list)
    #: the journal stopped answering: nothing more was sent
    journal_lost: KlingError | None = None
    not_sent: int = 0
    #: --max-cost: the budget, what this run's rows cost (reported, else estimated), and whether it stopped
    budget: Cost | None = None
    spent: float = 0.0
    budget_stopped: bool = False


def _let_go(release: Callable[[], None]) -> None:
    """Give claims up; if the journal is gone they end with this process (or, seen from another host, their
    lease), which is all a claim needs."""
    try:
        release()
    except Exception:
        pass


class BatchRun:
    """Submit the planned rows under the in-flight and rate limits, following tasks as they run."""

    def __init__(self, service, opts: BatchOptions, plan: Plan, waiter, events, *, manifest=None) -> None:
        """`events` (an `events.Stream`) receives everything that happens to the rows; `manifest` is read only,
        for the task ids an earlier run kept."""
        self.service = service
        self.opts = opts
        self.plan = plan
        self.waiter = waiter
        self.events = events
        self.manifest = manifest
        self.queue: deque[Planned] = deque()
        #: rows another process has claimed, by external id: waiting for their task ids
        self.following: dict[str, Planned] = {}
        self.next_watch = 0.0
        #: tasks other processes submitted: their in-flight slots are those processes' own
        self.foreign: set[str] = set()
        self.by_task: dict[str, Planned] = {}
        self.result = BatchResult()
        self.next_submit = 0.0
        from kling_cli.slots import Slots

        self.slots = Slots(opts.max_in_flight, scale=waiter.policy.scale, say=service.out.info)
        #: --max-cost: each row this run sent, at its reported cost once known, else its estimate
        self.costs: dict[int, float] = {}
        if opts.max_cost is not None:
            from kling_cli.pricing import parse_budget, unit_of

            resolved = service.resolved
            self.result.budget = parse_budget(opts.max_cost, unit_of(resolved.provider, resolved.dialect))
        # downloads, emitted about tasks, are placed on their rows
        events.locate = self.by_task.get
        # the poll loop is the engine's own: it learns first, then tells the stream
        waiter.on_update = lambda task: events.emit(Event(STATUS, task=task, row=self.by_task.get(task.id)))
        waiter.on_done = self._finished
        waiter.on_error = self._query_error

    # -- events ---------------------------------------------------------------------------------
    def _mark(self, item: Planned, state: str, detail: str = "", task: Task | None = None,
              error: str | None = None) -> None:
        """The row reached `state`: a task status, or submitted, uncertain, refused, error."""
        item.state = state
        name = {"succeeded": STATUS, "failed": FAILED}.get(state, state) if task is not None else state
        self.events.emit(Event(name, task=task, task_id=item.task_id, row=item, detail=detail, error=error))

    def _finished(self, task: Task) -> None:
        item = self.by_task.get(task.id)
        if task.id not in self.foreign:
            self.slots.ended()
        if item is None:
            return
        self._count(task)
        budget = self.result.budget
        if budget is not None and task.cost is not None and task.cost.unit == budget.unit \
                and item.row.number in self.costs:
            self.costs[item.row.number] = task.cost.amount
        self._mark(item, task.status.value, task.error.message if task.error else "", task)

    def _count(self, task: Task) -> None:
        """A finished task in the totals; a success that names no video is never a plain success (exit 5)."""
        if task.status is not TaskStatus.SUCCEEDED:
            self.result.failed += 1
        elif task.without_video:
            from kling_cli.errors import NoVideo

            self.result.no_video += 1
            self.result.errors.append(NoVideo.of(task.id, task.raw))
        else:
            self.result.succeeded += 1

    def _query_error(self, task_id: str, error: KlingError, final: bool) -> None:
        item = self.by_task.get(task_id)
        if item is not None and final:
            self.result.errors.append(error)
            self._mark(item, "error", error.message, error=error.message)
        else:  # one poll failed; it is tried again
            self.events.emit(Event(ERROR, task_id=task_id, row=item, detail=error.message, error=error.message,
                                   final=final))

    # -- reconciling with the journal -----------------------------------------------------------
    def reconcile(self) -> None:
        """Rows the journal has a task for are followed or reported; every other row is queued, to be claimed
        when its turn comes (the claim decides, as the journal may have changed by then)."""
        journal = self.service.journal
        known = journal.submitted(self.service.resolved.profile, [item.external_id for item in self.plan.rows]) \
            if journal is not None else {}
        for item in self.plan.rows:
            entry = known.get(item.external_id)
            if entry is not None:
                self._known(item, entry.to_task())
            else:
                self.queue.append(item)

    def _known(self, item: Planned, task: Task, *, other: bool = False) -> None:
        """A row submitted by an earlier run, or (`other`) by another process of this one: done ones are
        reported as they are, running ones followed."""
        from kling_cli.taskrefs import TaskRef

        item.task_id = task.id
        self.by_task[task.id] = item
        if other:
            self.result.followed += 1
            self.foreign.add(task.id)
        else:
            self.result.skipped += 1
        if task.terminal:
            self._count(task)
            self._mark(item, task.status.value, "done by another process" if other else "done in an earlier run",
                       task)
        else:
            by = "by another process" if other else "in an earlier run"
            self._mark(item, "submitted", f"submitted {by}: following it", task)
            self.waiter.add(TaskRef(task.id, item.kind))  # it holds a slot on the provider either way

    def _take(self, item: Planned) -> bool:
        """Claim the row, then send it, follow it or reconcile it; True when a submit was sent."""
        from kling_cli.claims import this_process
        from kling_cli.journal import HELD, KNOWN, JournalError

        journal = self.service.journal
        if journal is None:
            return self._send(item)
        profile = self.service.resolved.profile
        try:
            claim = journal.claim(profile, item.external_id, this_process())
        except JournalError as exc:
            self.queue.appendleft(item)
            self._journal_lost(exc)
            return False
        if claim.state == KNOWN:
            self._known(item, claim.entry.to_task(), other=True)
            return False
        if claim.state == HELD:
            self.following[item.external_id] = item
            self.events.emit(Event(FOLLOWING, row=item, detail=f"{claim.holder} is submitting it: waiting for its "
                                   "task id"))
            return False
        try:
            if claim.entry is not None and not self._recover(item, claim.entry, claim.took_over):
                return False
            return self._send(item)
        except JournalError as exc:  # its intent could not be recorded: it was not sent
            self.queue.appendleft(item)
            self._journal_lost(exc)
            return False
        finally:
            _let_go(lambda: journal.release(profile, item.external_id, this_process()))

    def _recover(self, item: Planned, entry, took_over: bool) -> bool:
        """The claimed row was sent before and its answer never recorded: find its task (the manifest of an
        earlier run, or the provider by external id), or leave it uncertain. True: provably never created,
        or --resubmit-uncertain: send it."""
        from kling_cli.claims import ABSENT, recover

        task = self._from_manifest(item)
        if task is not None:
            self.service.journal.record_submitted(entry.id, task)
            self._known(item, task)
            return False
        found = recover(self.service, item.kind, entry)
        if isinstance(found, Task):
            self._known(item, found)
            return False
        if found == ABSENT:
            return True
        if self.opts.resubmit_uncertain:
            item.resubmitted = True
            return True
        self.service.journal.record_state(entry.id, "uncertain", entry.error)
        self.result.uncertain += 1
        why = "the process sending it is gone" if took_over else "its answer was lost"
        self._mark(item, "uncertain", f"{why} and the provider cannot be asked whether it was created; not sent "
                   "again (--resubmit-uncertain sends it)", error=entry.error)
        return False

    def _from_manifest(self, item: Planned) -> Task | None:
        """The task an earlier run of this batch wrote in its manifest for this very row, if the provider
        still has it (the journal may have lost the answer while the manifest kept it)."""
        from kling_cli.errors import NotFound

        row = self.manifest.rows.get(item.row.number) if self.manifest is not None else None
        if not row or not row.get("task_id") or row.get("identity") != item.identity \
                or row.get("external_id") not in (None, "", item.external_id):
            return None
        try:
            return self.service.get(str(row["task_id"]), item.kind)
        except NotFound:
            return None

    def _watch(self) -> float | None:
        """Look at the followed rows: a recorded task id is followed, a claim given up is claimed here."""
        from kling_cli.claims import FOLLOW_POLL, this_process
        from kling_cli.journal import JournalError

        if not self.following:
            return None
        wait = self.next_watch - self.service.clock()
        if wait > 0:
            return wait
        try:
            seen = self.service.journal.watch(self.service.resolved.profile, list(self.following), this_process())
        except JournalError as exc:
            self._journal_lost(exc)
            return None
        for external_id, state in seen.items():
            if state.entry is not None:
                self._known(self.following.pop(external_id), state.entry.to_task(), other=True)
            elif not state.held:
                self.queue.appendleft(self.following.pop(external_id))
        self.next_watch = self.service.clock() + FOLLOW_POLL
        return FOLLOW_POLL if self.following else None

    def _journal_lost(self, exc: KlingError) -> None:
        """Without the journal no row may be claimed or sent: stop submitting, keep following nothing new."""
        self.result.journal_lost = exc
        self.result.not_sent = len(self.queue) + len(self.following)
        self.queue.clear()
        self.following.clear()

    # -- the loop ---------------------------------------------------------------------------------
    def _own_in_flight(self) -> int:
        return sum(1 for task_id in self.waiter.tracked if task_id not in self.foreign)

    def _slots(self) -> int:
        return self.slots.room(self._own_in_flight(), self.service.clock())

    def _submit_ready(self) -> float | None:
        """Send what the limits allow; return the seconds until the next row could go (None: nothing left)."""
        while self.queue:
            now = self.service.clock()
            item = self.queue[0]
            wait = max(self.next_submit - now, item.not_before - now)
            if wait > 0:
                return wait
            if self._slots() <= 0:  # a task seen to end frees one: the loop comes back here at once
                return self.slots.wake(now) if self._own_in_flight() else 0.5
            if self.result.budget is not None and not self._affordable(item):
                return None
            self.queue.popleft()
            if self._take(item) and self.opts.rate:
                self.next_submit = self.service.clock() + 1.0 / self.opts.rate
        return None

    # -- --max-cost -------------------------------------------------------------------------------
    def estimate(self, item: Planned) -> float | None:
        from kling_cli.pricing import estimate

        resolved = self.service.resolved
        wire = self.service.dialect.build_submit(item.kind, self.rebuild(item))
        guess = estimate(resolved.provider, resolved.dialect, item.kind, wire.json)
        return guess.cost.amount if guess.cost is not None else None

    def check_budget(self) -> None:
        """Before anything is sent: the rows left to send must fit the budget by their estimates."""
        budget = self.result.budget
        if budget is None:
            return
        guesses = [self.estimate(item) for item in self.queue]
        total = sum(g for g in guesses if g is not None)
        unknown = sum(1 for g in guesses if g is None)
        if unknown:
            self.service.out.warn(f"--max-cost: {unknown} rows have no public price; they count as 0 until the "
                                  "provider reports what they cost")
        if total > budget.amount:
            raise UsageError(f"--max-cost {budget.amount:g} {budget.unit}: the {len(self.queue)} rows left to send "
                             f"are estimated at {total:g} {budget.unit}; nothing was sent",
                             hint="raise --max-cost, or send fewer rows (--shard, a shorter CSV)")

    def _affordable(self, item: Planned) -> bool:
        """Whether sending this row keeps this run's cost within the budget; if not, stop sending rows (those in
        flight are still followed, the rest are left for a rerun)."""
        budget = self.result.budget
        assert budget is not None
        self.result.spent = sum(self.costs.values())
        # a row without a public price counts as 0 until its cost is reported: reaching the budget stops too
        cost = self.estimate(item) or 0.0
        if self.result.spent < budget.amount and self.result.spent + cost <= budget.amount + 1e-9:
            return True
        self.result.budget_stopped = True
        self.result.not_sent = len(self.queue)
        self.queue.clear()
        return False

    def _send(self, item: Planned) -> bool:
        from kling_cli.taskrefs import TaskRef

        req = self.rebuild(item)
        try:
            self.service.preflight(item.kind, req)
            task = self.service.submit(item.kind, req, identity=item.identity, batch=str(self.opts.csv_path),
                                       row=item.row.number, adopt=not item.identity.startswith("ext:"),
                                       busy_retries=False)
        except ProviderUnavailable as exc:
            if exc.code in ("concurrency_limit", "rate_limited") and not isinstance(exc, SubmitUncertain):
                # Too many running: with tasks of ours running the limit drops to them and the row goes when
                # one ends; with none, the slots are others' and the row waits (as told, or longer each time).
                now, own = self.service.clock(), self._own_in_flight()
                self.slots.refused(own, now)
                item.tries += 1
                backoff = exc.retry_after if exc.retry_after is not None else \
                    min(REQUEUE_DELAY * 2 ** (item.tries - 1), REQUEUE_MAX) / self.waiter.policy.scale
                item.not_before = now if own else now + backoff
                self.queue.appendleft(item)
                self.events.emit(Event(REQUEUED, row=item, detail=exc.message))
                return True
            if isinstance(exc, SubmitUncertain):
                self.result.uncertain += 1
                self._mark(item, "uncertain", exc.message, error=exc.message)
                return True
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
                return True
            self.result.refused += 1
            self._mark(item, "refused", exc.message, error=exc.message)
            return True
        item.task_id = task.id
        self.by_task[task.id] = item
        self.result.submitted += 1
        if self.result.budget is not None:
            self.costs[item.row.number] = self.estimate(item) or 0.0
        self._mark(item, "submitted", task.id, task)
        # just submitted: its first poll is when its schedule says
        self.waiter.add(TaskRef(task.id, item.kind, task if task.terminal else None), fresh=True)
        self.slots.sent(self._own_in_flight())
        return True

    def _upload_ahead(self) -> None:
        """The local files the rows left to send need as URLs, uploaded before the first submit, so that an
        uploader that fails costs nothing; each file once (a URL that expires before its row goes is uploaded
        again then)."""
        if self.service.uploads is not None:
            for item in self.queue:
                self.service.upload_media(item.kind, self.rebuild(item))

    def rebuild(self, item: Planned) -> SubmitRequest:
        req = row_request(item.kind, item.row, self.opts.defaults, self.plan.extra_names)
        req.external_id = item.external_id
        return req

    def run(self) -> BatchResult:
        self.waiter.start()
        try:
            self.reconcile()
            self.check_budget()
            self._upload_ahead()
            self._loop()
            self.slots.finish()
        finally:
            journal = self.service.journal
            if journal is not None and self.result.journal_lost is None:
                from kling_cli.claims import this_process

                _let_go(lambda: journal.release_all(this_process()))
        self.result.pending = list(self.waiter.tracked)
        self.result.spent = sum(self.costs.values())
        return self.result

    def _loop(self) -> None:
        while True:
            until_submit = self._submit_ready()
            until_watch = self._watch()
            if self.result.journal_lost is not None:
                break
            if not self.queue and not self.following and (not self.opts.wait or not self.waiter.tracked):
                break
            now = self.service.clock()
            if now >= self.waiter.deadline:
                self.result.timed_out = True
                break
            until_poll = self.waiter.step() if self.waiter.tracked else None
            if self.waiter.outcome.timed_out:
                self.result.timed_out = True
                break
            pauses = [p for p in (until_submit, until_poll, until_watch) if p is not None]
            pause = min(pauses) if pauses else 0.5
            if pause > 0:
                self.service.sleep(min(pause, max(self.waiter.deadline - self.service.clock(), 0.0)))
