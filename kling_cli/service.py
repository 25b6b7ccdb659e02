"""Orchestration on normalized types: submit, look up, and the sandbox started on demand.

Commands call this; it calls one dialect (pure translation) through one transport (HTTP, retries).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from kling_cli.config import Resolved, data_dir
from kling_cli.errors import (
    KlingError,
    NotFound,
    NoVideo,
    PreflightError,
    ProviderUnavailable,
    RequestRejected,
    SubmitUncertain,
    Unsupported,
    UsageError,
)
from kling_cli.models import (
    DEFAULT_MODELS,
    KINDS,
    I2VRequest,
    MediaRef,
    SubmitRequest,
    T2VRequest,
    Task,
    TaskError,
    id_problem,
    quoted,
)
from kling_cli.providers import get_dialect
from kling_cli.providers.base import Dialect
from kling_cli.render import Output

if TYPE_CHECKING:
    from kling_cli.journal import Journal
    from kling_cli.taskrefs import TaskRef


NO_VIDEO = "the provider says the task succeeded but gave no video URL"
DEFAULT_CONCURRENCY = 16
DEFAULT_DOWNLOADS = 4


def new_external_id() -> str:
    import secrets  # only submits need it; `kling status` does not pay for the import

    return "kc-" + secrets.token_hex(12)


def journal_request(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the journal keeps it: inline media replaced by its size and digest."""
    kept = {}
    for key, value in body.items():
        if key == "external_task_id":
            continue
        if isinstance(value, str) and len(value) > 4096:  # inline base64 media; prompts stop at 2500
            digest = hashlib.sha256(value.encode()).hexdigest()
            value = f"<inline data, {len(value)} chars, sha256 {digest}>"
        kept[key] = value
    return kept


def request_hash(kind: str, record: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, "request": record}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _needs_url(dialect: str, what: str, path: str, flag: str) -> PreflightError:
    return PreflightError(
        f"the {dialect} dialect takes the {what} as a URL only, and {path} is a local file",
        hint=f"name an uploader in the profile (upload_command, see the README's 'Local files') and kling uploads "
        f"it, or pass {flag} https://...",
    )


def _origin(base_url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def _one_control(req: I2VRequest) -> None:
    """Kling takes an end frame, motion-brush masks or camera control, one at a time (its image-to-video
    reference: image_tail, static_mask/dynamic_masks and camera_control are mutually exclusive)."""
    given = [name for name, present in (
        ("--image-tail", req.image_tail is not None), ("--camera-control", req.camera_control is not None),
        ("motion-brush masks (static_mask, dynamic_masks)", any(k in req.extra for k in ("static_mask",
                                                                                          "dynamic_masks"))))
        if present]
    if len(given) > 1:
        raise PreflightError(f"{' and '.join(given)} cannot be used together: Kling takes an end frame, masks or "
                             "camera control, one at a time", hint="keep one of them")


def _id_trouble(task: Task) -> str | None:
    """What is wrong with the task id a provider's answer names, said as "... names ...", or None."""
    problem = id_problem(task.id)
    if problem is None:
        return None
    return "names no task id" if not task.id else f"names an unusable task id {quoted(task.id)} ({problem})"


def _naming(exc: KlingError, external_id: str | None) -> KlingError:
    """The error of a submit whose fate is unknown, naming the external id to look it up by."""
    if external_id and "external_id" not in exc.extra:
        exc.hint = f"{exc.hint} (external id {external_id})" if exc.hint else f"its external id is {external_id}"
        exc.extra["external_id"] = external_id
    return exc


def _cached(cache: dict, key: tuple, check: Callable[[], Any]) -> Any:
    """Run a media check once per key; a failure is remembered and raised again."""
    if key not in cache:
        try:
            cache[key] = check()
        except KlingError as exc:
            cache[key] = exc
    if isinstance(cache[key], KlingError):
        raise cache[key]
    return cache[key]


class Service:
    def __init__(
        self,
        resolved: Resolved,
        out: Output,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        journal: Journal | None = None,
    ) -> None:
        self.resolved = resolved
        self.out = out
        self.sleep = sleep
        self.clock = clock
        self.dialect = get_dialect(resolved.dialect, resolved.options)
        self.journal = journal
        #: parallel requests for multi-task commands; set before the first request
        self.concurrency = DEFAULT_CONCURRENCY
        #: parallel downloads, on a pool of their own so that a long download never holds up a query
        self.download_concurrency = DEFAULT_DOWNLOADS
        self._pool = None
        self._download_pool = None
        self._lazy_lock = threading.RLock()
        self._transport = None
        self._sandbox = None
        self._downloader = None
        self._uploads = None
        #: task id -> the model it was submitted with (None: not known here), for answers that do not say
        self._models: dict[str, str | None] = {}
        #: warnings given once per command, however many rows a batch checks
        self._warned: set[str] = set()
        if resolved.sandbox:
            out.warn(f"sandbox: emulating the {resolved.dialect} dialect; no real video is made, nothing is charged")

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.resolved.base_url is None:
            from kling_cli.sandbox import start_background

            self._sandbox = start_background(data_dir() / "sandbox", self.resolved.sandbox_settings)
            self.resolved.base_url = self._sandbox.base_url(self.resolved.dialect)
            self.out.ephemeral_origin = self._sandbox.origin  # its URLs die with this process
            self.out.debug(f"sandbox listening on {self.resolved.base_url}")
        return self.resolved.base_url

    @property
    def transport(self):
        # Worker threads of get_many and of downloads may all reach here first: build it once.
        with self._lazy_lock:
            if self._transport is None:
                self._transport = self._new_transport()
        return self._transport

    def _new_transport(self):
        from kling_cli.transport import Transport

        return Transport(
            base_url=self.base_url,
            dialect=self.dialect,
            credentials=self.resolved.credentials,
            timeout=self.resolved.timeout,
            retries=self.resolved.retries,
            log=lambda level, msg: self.out.debug(msg, level),
            sleep=self.sleep,
            clock=self.clock,
            max_connections=max(20, self.concurrency),
        )

    @property
    def pool(self):
        with self._lazy_lock:
            if self._pool is None:
                from kling_cli.pool import Pool

                self._pool = Pool(self.concurrency)
        return self._pool

    @property
    def download_pool(self):
        with self._lazy_lock:
            if self._download_pool is None:
                from kling_cli.pool import Pool

                self._download_pool = Pool(self.download_concurrency, name="kling-download")
        return self._download_pool

    def gate(self) -> float:
        """The clock time before which the provider asked for no request (0 before any request)."""
        return self._transport.gate_until if self._transport is not None else 0.0

    def close(self) -> None:
        # workers first: a download thread still running must not find the journal closed under it
        for pool in (self._pool, self._download_pool):
            if pool is not None:
                pool.close()
        if self.journal is not None:
            self.journal.close()
        if self._transport is not None:
            self._transport.close()
        if self._downloader is not None:
            self._downloader.close()
        if self._sandbox is not None:
            self._sandbox.close()

    def stamp(self, task: Task) -> Task:
        task.provider = self.resolved.provider
        task.dialect = self.resolved.dialect
        task.profile = self.resolved.profile
        if task.without_video and task.error is None:
            task.error = TaskError(code=NoVideo.code, message=NO_VIDEO)
        return task

    # -- preflight ------------------------------------------------------------------------------
    def preflight(self, kind: str, req: SubmitRequest, *, media_cache: dict | None = None) -> None:
        """Everything that can be checked locally, checked before a request that costs money.

        With `media_cache` (a batch validating many rows) each file is checked once and not loaded.
        """
        from kling_cli.media import check_prompt, check_video

        dialect = self.dialect
        if kind not in dialect.kinds:
            raise Unsupported(f"the {dialect.name} dialect does not offer {kind} tasks")
        where = f" on the {dialect.name} dialect" if dialect.prompt_limit != Dialect.prompt_limit else ""
        check_prompt(req.prompt, dialect.prompt_limit, where=where)
        model = req.model or DEFAULT_MODELS[kind]
        named = model if req.model else f"{model} (the default model)"
        if req.model and req.model != DEFAULT_MODELS[kind] and kind in dialect.drops_model:
            self.warn_once(f"the {dialect.name} dialect drops the model of {kind} tasks: {req.model} is what the "
                           f"gateway routes and bills, but Kling runs its default ({DEFAULT_MODELS[kind]})")
        if kind in dialect.prompt_required and not (req.prompt or "").strip():
            what, flag = ("motion control", '--prompt "..."') if kind == "motion" else ("image to video", "a PROMPT")
            raise PreflightError(f"the {dialect.name} dialect refuses {what} without a prompt (its provider "
                                 "requires one where Kling's docs call it optional)",
                                 hint=f"add {flag} describing the scene")
        cache = media_cache if media_cache is not None else {}
        if isinstance(req, (T2VRequest, I2VRequest)):
            check_prompt(req.negative_prompt, dialect.negative_prompt_limit, "negative prompt", where)
            if isinstance(req, T2VRequest) and not req.prompt.strip():
                raise UsageError("the prompt is empty", hint="describe the video to generate")
            if req.aspect_ratio is not None and isinstance(req, I2VRequest) and not dialect.i2v_aspect_ratio:
                raise PreflightError(f"the {dialect.name} dialect takes no aspect ratio for image to video: the video "
                                     "takes the image's", hint="leave --aspect-ratio out")
            if req.aspect_ratio is not None and req.aspect_ratio not in dialect.aspect_ratios:
                raise PreflightError(f"aspect ratio {req.aspect_ratio} is not offered by the {dialect.name} dialect",
                                     hint=f"use one of {', '.join(dialect.aspect_ratios)}")
            # Kling's own model names: 5 or 10 s, 3-15 s on kling-v3 (other gateways name models their way)
            if req.duration is not None and model.startswith("kling-") and not model.startswith("kling-v3") \
                    and req.duration not in (5, 10):
                raise PreflightError(f"duration {req.duration} s is not offered by {named}: use 5 or 10",
                                     hint="3-15 s needs --model kling-v3")
            if req.cfg_scale is not None and model.startswith("kling-v2"):
                self.warn_once(f"--cfg-scale has no effect on {named}: Kling's docs say kling-v2.x models do not "
                               "support it")
            if isinstance(req, I2VRequest):
                _one_control(req)
                for attr, flag in (("image", "--image"), ("image_tail", "--image-tail")):
                    self._local_image(req, attr, flag, cache, media_cache is None)
            return
        self._local_image(req, "image", "--image", cache, media_cache is None)
        if not req.video.is_url:
            key = ("video", req.video.value, req.orientation)
            _cached(cache, key, lambda: check_video(req.video.value, req.orientation))
            if not self.dialect.video_base64:
                self._uploadable("motion reference video", req.video.value, "--video")

    def _local_image(self, req: SubmitRequest, attr: str, flag: str, cache: dict, load: bool) -> None:
        """A local image checked (once per batch), then inlined as raw base64 where the dialect takes it, else
        left for the uploader; `load`: read its bytes now (a batch's planning does not)."""
        from kling_cli.media import check_image

        ref = getattr(req, attr)
        if ref is None or ref.is_url:
            return
        inline = self.dialect.image_base64
        _info, encoded = _cached(cache, ("image", ref.value),
                                 lambda: check_image(ref.value, with_base64=load and inline))
        if inline:
            setattr(req, f"{attr}_base64", encoded)
        else:
            self._uploadable({"image": "image", "image_tail": "end frame"}[attr] if isinstance(req, I2VRequest)
                             else "subject image", ref.value, flag)

    def _uploadable(self, what: str, path: str, flag: str) -> None:
        """A local file this dialect takes as a URL only: fine when the profile has an uploader."""
        if self.uploads is None:
            raise _needs_url(self.dialect.name, what, path, flag)

    # -- local files as URLs ----------------------------------------------------------------------
    @property
    def uploads(self):
        """The profile's uploader (`upload_command`; on the sandbox profile, the sandbox's upload route), with
        what this run and the journal know of its uploads; None when the profile names none."""
        with self._lazy_lock:
            if self._uploads is None:
                from kling_cli.uploads import CommandUploader, SandboxUploader, Uploads

                resolved = self.resolved
                if resolved.upload_command:
                    uploader = CommandUploader(resolved.profile, resolved.upload_command, resolved.upload_ttl)
                elif resolved.sandbox:
                    uploader = SandboxUploader(lambda: _origin(self.base_url), lambda: resolved.base_url is not None)
                else:
                    return None
                self._uploads = Uploads(uploader, self.journal, say=self.out.info, warn=self.out.warn)
        return self._uploads

    def _url_refs(self, kind: str, req: SubmitRequest) -> list[tuple[str, MediaRef]]:
        """(attribute, local file) of each medium this request must send as a URL on this dialect."""
        attrs = {"i2v": ("image", "image_tail"), "motion": ("image", "video")}.get(kind, ())
        found = []
        for attr in attrs:
            ref = getattr(req, attr)
            inline = self.dialect.video_base64 if attr == "video" else self.dialect.image_base64
            if ref is not None and not ref.is_url and not inline:
                found.append((attr, ref))
        return found

    def upload_media(self, kind: str, req: SubmitRequest) -> None:
        """Each local file the dialect needs as a URL, uploaded (or found uploaded) and replaced by its URL.
        Preflight has checked the files: nothing Kling would refuse is uploaded."""
        for attr, ref in self._url_refs(kind, req):
            if self.uploads is None:
                raise _needs_url(self.dialect.name, attr.replace("_", " "), ref.value, f"--{attr.replace('_', '-')}")
            setattr(req, attr, MediaRef(self.uploads.url_for(self.uploads.local(ref.value)), True))

    def upload_plan(self, kind: str, req: SubmitRequest) -> list[dict[str, Any]]:
        """For --dry-run: each local file the request would need uploaded, with the URL it already has (None:
        it would be uploaded); the request then shows that URL, or a placeholder."""
        plan = []
        for attr, ref in self._url_refs(kind, req):
            file = self.uploads.local(ref.value)
            known = self.uploads.known(file)
            setattr(req, attr, MediaRef(known.url if known else f"<upload of {file.path}>", True))
            plan.append({"file": file.path, "sha256": file.sha256, "url": known.url if known else None})
        return plan

    def warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.out.warn(message)

    # -- operations -----------------------------------------------------------------------------
    def wire_request(self, kind: str, req: SubmitRequest) -> tuple[Any, dict[str, Any]]:
        """The submit as it would be sent, and the record the journal keeps of it. Local files are uploaded
        first: a failed upload sends nothing and records nothing."""
        if req.external_id is None:
            req.external_id = new_external_id()
        self.upload_media(kind, req)
        wire = self.dialect.build_submit(kind, req)
        return wire, journal_request(wire.json)

    def submit(self, kind: str, req: SubmitRequest, *, identity: str | None = None,
               batch: str | None = None, row: int | None = None, adopt: bool = False,
               busy_retries: bool = True) -> Task:
        """Create one task, its intent journaled first. A lost answer is reconciled by external id where the
        provider can look one up, and never sent again blind. `adopt`: the external id is derived from the
        request (a CSV row's `kc-` id), so a task that already has it is this very request, sent before.
        `busy_retries=False`: a "too many running tasks" refusal is raised at once (a batch waits for a slot)."""
        wire, record = self.wire_request(kind, req)
        entry = None
        if self.journal is not None:
            from kling_cli.timing import timing_key

            entry = self.journal.record_intent(
                external_id=req.external_id, request_hash=identity or request_hash(kind, record),
                profile=self.resolved.profile, provider=self.resolved.provider, dialect=self.resolved.dialect,
                kind=kind, request=record, batch=batch, row=row, timing_key=timing_key(
                    self.resolved.dialect, kind, self.dialect.model_for(kind, req.model), req.mode,
                    getattr(req, "duration", None)))
        try:
            task = self._send_submit(kind, req, wire, adopt=adopt, busy_retries=busy_retries)
        except SubmitUncertain as exc:
            self._note(entry, "uncertain", exc.message)
            raise
        except KlingError as exc:  # refused, or never sent: nothing was created
            self._note(entry, "refused", exc.message)
            raise
        task.model = task.model or self.dialect.model_for(kind, req.model)
        self._models[task.id] = task.model
        if entry is not None:
            self._remember(lambda: self.journal.record_submitted(entry, task))
        return task

    def _note(self, entry: int | None, state: str, message: str) -> None:
        if entry is not None:
            self._remember(lambda: self.journal.record_state(entry, state, message))

    def _remember(self, write: Callable[[], None]) -> None:
        """Journal writes after a request are best-effort: the answer is already printed."""
        try:
            write()
        except Exception as exc:  # sqlite3.Error, OSError: never fail a command that already got its answer
            self.out.warn(f"journal: could not record ({exc}); a rerun will check the provider instead")

    def _send_submit(self, kind: str, req: SubmitRequest, wire, *, adopt: bool = False,
                     busy_retries: bool = True) -> Task:
        resent = False
        for attempt in range(self.resolved.retries + 1):
            try:
                reply = self.transport.send(wire, busy_retries=busy_retries)
                task = self.dialect.parse_submit(kind, reply)
                trouble = _id_trouble(task)
                if trouble:  # never followed: an id is a path segment of every later request
                    raise SubmitUncertain(
                        f"the provider accepted the submit but its answer {trouble}",
                        hint="it was not sent again; check whether the task exists before submitting again",
                        status=reply.status)
                return self.stamp(task)
            except SubmitUncertain as exc:
                if not (self.dialect.lookup_by_external_id and req.external_id):
                    raise _naming(exc, req.external_id)
                found = self._reconcile(kind, req.external_id, exc)
                if found is not None:
                    return found
                if not self.dialect.lookup_miss_is_absence:
                    exc.hint = (f"{exc.hint} (the provider found no task with external id {req.external_id}, which "
                                "does not prove there is none)")
                    raise _naming(exc, req.external_id)
                cause = exc.__cause__ if isinstance(exc.__cause__, KlingError) else exc
                if attempt == self.resolved.retries:
                    # Each lookup said "no such task": what is known is that nothing was created.
                    raise ProviderUnavailable(
                        f"the submit failed {attempt + 1} times (last: {cause.message}); after each failure its "
                        f"external id {req.external_id} was looked up and no task was found: nothing was created, "
                        "nothing was paid",
                        hint="run the same command again later", code="not_created", status=exc.status,
                        extra={"external_id": req.external_id}) from None
                from kling_cli.transport import backoff_delay

                delay = backoff_delay(attempt)
                self.out.debug(f"task {req.external_id} was not created; sending the submit again in {delay:.1f}s",
                               1)
                self.sleep(delay)
                resent = True
            except RequestRejected as exc:
                # After a resend, a refusal may mean "that external id exists": the first try got through. So may
                # a refusal of an id derived from the request (Kling 1201): a run whose journal is gone sent it.
                adopting = adopt and exc.code == "invalid_request" and self.dialect.lookup_by_external_id
                if (resent or adopting) and req.external_id:
                    found = self.find_by_external_id(kind, req.external_id)
                    if found is not None:
                        return found
                raise
        raise AssertionError("unreachable")

    def _reconcile(self, kind: str, external_id: str, cause: SubmitUncertain) -> Task | None:
        self.out.debug(f"{cause.message}; looking the task up by external id {external_id}", 1)
        try:
            return self.find_by_external_id(kind, external_id)
        except Exception:
            raise _naming(cause, external_id) from None

    def find_by_external_id(self, kind: str, external_id: str) -> Task | None:
        wire = self.dialect.build_get_by_external_id(kind, external_id)
        try:
            reply = self.transport.send(wire)
        except NotFound:
            return None
        task = self.dialect.parse_task(kind, reply.payload)
        if not task.id:  # an answer naming no task finds nothing
            return None
        return self._readable(task, f"external id {external_id}")

    def _readable(self, task: Task, asked: str) -> Task:
        """A task from a query's answer, refused (one failed query) when the id it names cannot be followed."""
        trouble = _id_trouble(task)
        if trouble:
            raise ProviderUnavailable(f"the provider's answer about {asked} {trouble}", code="bad_answer")
        return self.stamp(task)

    def get(self, task_id: str, kind: str | None = None, *, deadline: float | None = None,
            journaled: bool = True) -> Task:
        """One query. Without a kind, the journal knows it for tasks this machine submitted; else each kind is
        tried in turn (the kind is part of the URL)."""
        if kind is None and journaled and self.journal is not None:
            try:
                entry = self.journal.find_task(task_id)
            except Exception:
                entry = None
            if entry is not None:
                kind = entry.kind
                self.out.debug(f"task {task_id} is a {kind} task (from the journal)")
        task = self._query(task_id, kind, deadline)
        if journaled:
            self._with_models([task])
        if journaled and self.journal is not None:
            self._remember(lambda: self.journal.record_task(task))
        return task

    def _with_models(self, tasks: list[Task]) -> None:
        """Most answers do not name the model: it is the one this process submitted, else the journal's."""
        missing = [task for task in tasks if task.model is None]
        unknown = [task.id for task in missing if task.id not in self._models]
        if unknown:
            found: dict[str, str] = {}
            if self.journal is not None:
                try:
                    found = self.journal.models(unknown)
                except Exception:  # reading the journal is best-effort
                    pass
            self._models.update({task_id: found.get(task_id) for task_id in unknown})
        for task in missing:
            task.model = self._models.get(task.id)

    def _query(self, task_id: str, kind: str | None, deadline: float | None) -> Task:
        kinds = [kind] if kind else [k for k in KINDS if k in self.dialect.kinds]
        for candidate in kinds:
            try:
                reply = self.transport.send(self.dialect.build_get(candidate, task_id), deadline=deadline)
            except NotFound:
                if kind:
                    raise
                continue
            task = self._readable(self.dialect.parse_task(candidate, reply.payload, task_id=task_id),
                                  f"task {task_id}")
            if not kind:
                self.out.debug(f"task {task_id} is a {candidate} task (found by trying the kinds in turn)")
            return task
        raise NotFound(
            f"no task {task_id} on profile {self.resolved.profile!r} (tried {', '.join(kinds)})",
            hint="check the id, and that it was submitted with this profile",
        )

    def get_many(self, refs: list[TaskRef], *, deadline: float | None = None) -> dict[str, Task | KlingError]:
        """Query many tasks at once: in batches where the dialect has a batch query, else in parallel.

        Every id gets a task or the error that stopped its query; one bad id never fails the others.
        """
        from concurrent.futures import wait

        results: dict[str, Task | KlingError] = {}
        size = self.dialect.batch_size
        if len(refs) == 1 and not size:  # no thread hop for the common single task
            try:
                return {refs[0].id: self.get(refs[0].id, refs[0].kind, deadline=deadline)}
            except KlingError as exc:
                return {refs[0].id: exc}
        unknown = [ref.id for ref in refs if ref.kind is None]
        if unknown and self.journal is not None:
            try:
                kinds = self.journal.kinds(unknown)
            except Exception:  # reading the journal is best-effort
                kinds = {}
            for ref in refs:
                ref.kind = ref.kind or kinds.get(ref.id)
        if size and len(refs) > 1:
            chunks = [refs[i:i + size] for i in range(0, len(refs), size)]
            futures = {self.pool.submit(self._get_batch, chunk, deadline): chunk for chunk in chunks}
        else:
            # the journal is read and written once for all of them, around the fan-out
            futures = {self.pool.submit(self.get, ref.id, ref.kind, deadline=deadline, journaled=False): [ref]
                       for ref in refs}
        wait(futures)
        for future, chunk in futures.items():
            error = future.exception()
            if error is None:
                found = future.result()
                results.update(found if isinstance(found, dict) else {chunk[0].id: found})
            elif isinstance(error, KlingError):
                results.update({ref.id: error for ref in chunk})
            else:
                raise error
        found = [r for r in results.values() if isinstance(r, Task)]
        self._with_models(found)
        if self.journal is not None:
            self._remember(lambda: self.journal.record_tasks(found))
        return results

    def _get_batch(self, refs: list[TaskRef], deadline: float | None) -> dict[str, Task | KlingError]:
        reply = self.transport.send(self.dialect.build_get_many([ref.id for ref in refs]), deadline=deadline)
        kinds = {ref.id: ref.kind for ref in refs}
        found: dict[str, Task | KlingError] = {}
        for item in self.dialect.parse_many(reply.payload):
            task = self.dialect.parse_task("t2v", item)
            if task.id in kinds:
                found[task.id] = self.stamp(task)
        for ref in refs:
            if ref.id not in found:
                found[ref.id] = NotFound(f"no task {ref.id} on profile {self.resolved.profile!r}")
        return found

    def remember_files(self, task_id: str, paths: list[str]) -> None:
        if self.journal is not None and paths:
            self._remember(lambda: self.journal.record_files(task_id, paths))

    @property
    def downloader(self):
        with self._lazy_lock:
            if self._downloader is None:
                from kling_cli.downloads import Downloader

                self._downloader = Downloader(self.out, sleep=self.sleep,
                                              max_connections=max(self.download_concurrency, 4))
        return self._downloader
