"""`kling submit t2v`, `kling submit i2v` and `kling submit motion`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kling_cli.cli._app import submit_app
from kling_cli.cli._common import AppContext, IntervalOpt, command, rule
from kling_cli.errors import KlingError, UsageError


class Mode(str, Enum):
    std = "std"
    pro = "pro"


class AspectRatio(str, Enum):
    """Every ratio some provider takes; preflight checks the profile's dialect takes it."""

    landscape = "16:9"
    portrait = "9:16"
    square = "1:1"
    classic = "4:3"
    classic_portrait = "3:4"
    photo = "3:2"
    photo_portrait = "2:3"


class Orientation(str, Enum):
    image = "image"
    video = "video"


ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model name, e.g. kling-v3 (default: the "
                                                 "profile's, else kling-v2-6 on every provider).",
                                                 show_default=False)]
ModeOpt = Annotated[Optional[Mode], typer.Option("--mode", help="std (720p) or pro (1080p).", show_default=False)]
CallbackOpt = Annotated[Optional[str], typer.Option("--callback-url", help="URL the provider POSTs the result to.",
                                                    show_default=False)]
ExternalIdOpt = Annotated[Optional[str], typer.Option(
    "--external-id", help="Your own id for the task (unique per account). Default: a generated one where the "
    "provider supports it, so a lost answer can be looked up instead of paid twice.", show_default=False)]
ExtraOpt = Annotated[Optional[list[str]], typer.Option(
    "--extra", metavar="KEY=VALUE", help="Add a provider field kling-cli does not model (repeatable; VALUE is "
    "parsed as JSON when it parses).", show_default=False)]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for the task to finish.")]
TimeoutOpt = Annotated[str, typer.Option("--timeout", help="With --wait: give up waiting after this long (90s, "
                                         "20m, 1h30m; more than 0); the task keeps running.")]
DownloadOpt = Annotated[Optional[Path], typer.Option("--download", metavar="DIR", help="Wait, then download the "
                                                     "videos into DIR.", show_default=False)]


DurationOpt = Annotated[Optional[int], typer.Option("--duration", help="Seconds: 5 or 10 (3-15 on kling-v3).",
                                                   show_default=False)]
NegativePromptOpt = Annotated[Optional[str], typer.Option("--negative-prompt", help="What to avoid.",
                                                          show_default=False)]
CfgScaleOpt = Annotated[Optional[float], typer.Option("--cfg-scale", help="Prompt adherence, 0-1 (not on kling-v2.x).",
                                                      show_default=False)]
CameraOpt = Annotated[Optional[str], typer.Option("--camera-control", metavar="JSON", help="Camera movement, as "
                                                  "Kling's camera_control object.", show_default=False)]
#: how --help marks them: with --from-csv a column stands in, and a profile may give orientation and mode
_REQUIRED = "  [required]"
_REQUIRED_OR_PROFILE = "  [required unless the profile has a default]"


def parse_extra(items: list[str] | None) -> dict[str, Any]:
    from kling_cli.models import json_or_text

    fields: dict[str, Any] = {}
    for item in items or []:
        _flag("extra", item, "text")
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--extra {item!r}: expected KEY=VALUE",
                             hint="e.g. --extra sound=on --extra 'watermark_info={\"enabled\":false}'")
        fields[key.strip()] = json_or_text(value)
    return fields


def _camera(text: str | None) -> dict[str, Any] | None:
    from kling_cli.models import json_object

    if text is None:
        return None
    _flag("camera_control", text, "text")
    try:
        return json_object(text, "--camera-control")
    except ValueError as exc:
        raise UsageError(str(exc), hint='e.g. --camera-control \'{"type":"simple","config":{"zoom":5}}\'') from None


FromCsvOpt = Annotated[Optional[Path], typer.Option(
    "--from-csv", metavar="FILE", help="Submit one task per row; columns are the option names (prompt, model, mode, "
    "duration, image, video, orientation, external_id...) and the flags given here are defaults for every row. "
    "Rerunning submits only the rows not already submitted.", show_default=False)]
ExtraColumnsOpt = Annotated[bool, typer.Option("--extra-columns", help="With --from-csv: send unknown columns as "
                                               "provider fields instead of refusing the file.")]
SkipInvalidOpt = Annotated[bool, typer.Option("--skip-invalid", help="With --from-csv: send the valid rows even if "
                                              "some are invalid (every bad row is still reported).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", "-n", help="Print the resolved request (each row's, with "
                                         "--from-csv) and its estimated cost; send nothing.")]
OutOpt = Annotated[Optional[list[Path]], typer.Option(
    "--out", metavar="FILE", help="With --from-csv: write a results manifest (.csv or .ndjson; repeatable) as rows "
    "progress.", show_default=False)]
MaxInFlightOpt = Annotated[str, typer.Option("--max-in-flight", metavar="N|auto", help="With --from-csv: tasks "
                                             "running on the provider at most (Kling counts running tasks per "
                                             "account); auto finds the account's limit.")]
RateOpt = Annotated[Optional[str], typer.Option("--rate", metavar="R/s", help="With --from-csv: submits per second "
                                                "(or per minute: 30/m) at most.", show_default=False)]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", metavar="K/N", help="With --from-csv: only the rows in "
                                                 "shard K of N (by row identity), for CI matrices.",
                                                 show_default=False)]
ResubmitOpt = Annotated[bool, typer.Option("--resubmit-uncertain", help="With --from-csv: send again rows whose "
                                           "answer was lost and cannot be looked up (may pay twice).")]
EventsOpt = Annotated[Optional[Path], typer.Option(
    "--events", metavar="FILE", help="With --from-csv: append what happens to FILE as NDJSON (submitted, status, "
    "downloaded, failed, uncertain...), one flushed line per event, for another step to tail.", show_default=False)]
MaxCostOpt = Annotated[Optional[str], typer.Option(
    "--max-cost", metavar="N[UNIT]", help="With --from-csv: refuse to start when the estimated cost is over N, and "
    "stop sending rows once the cost reported (else estimated) would pass it; UNIT is the provider's (units, "
    "points...).", show_default=False)]

DEFAULT_MAX_IN_FLIGHT = "5"

_PROFILE_DEFAULTS = {
    "t2v": {"model": "model", "mode": "mode", "duration": "duration", "aspect_ratio": "aspect_ratio",
            "negative_prompt": "negative_prompt", "cfg_scale": "cfg_scale", "callback_url": "callback_url"},
    # not aspect_ratio: most providers take none for image to video (the video takes the image's)
    "i2v": {"i2v_model": "model", "mode": "mode", "duration": "duration", "negative_prompt": "negative_prompt",
            "cfg_scale": "cfg_scale", "callback_url": "callback_url"},
    "motion": {"motion_model": "model", "mode": "mode", "orientation": "orientation", "keep_sound": "keep_sound",
               "callback_url": "callback_url"},
}


def _flag(name: str, value: Any, check: str = "submit_option", label: str | None = None) -> Any:
    """A submit flag's value, checked by the same rule (`kling_cli.rules`) as a profile default or a CSV cell."""
    from kling_cli import rules

    try:
        return rules.submit_option(name, value) if check == "submit_option" else getattr(rules, check)(value)
    except ValueError as exc:
        raise UsageError(f"{label or '--' + name.replace('_', '-')} {exc}", hint="nothing was sent") from None


def _defaults(ctx: AppContext, kind: str, flags: dict[str, Any]) -> dict[str, Any]:
    """Flags given on the command line (checked), over the profile's defaults (checked when it was loaded)."""
    given = {k: v if k == "extra" else _flag(k, v) for k, v in flags.items() if v is not None and v != {}}
    profile = ctx.resolved().defaults
    merged = {field: profile[key] for key, field in _PROFILE_DEFAULTS[kind].items() if key in profile}
    merged.update(given)
    return merged


@dataclass
class _Follow:
    """What to do once the task is accepted: the options every submit command shares."""

    wait: WaitOpt = False
    timeout: TimeoutOpt = "1h"
    interval: IntervalOpt = None
    download: DownloadOpt = None


@dataclass
class _Batch:
    """The --from-csv options every submit command shares."""

    from_csv: FromCsvOpt = None
    extra_columns: ExtraColumnsOpt = False
    skip_invalid: SkipInvalidOpt = False
    dry_run: DryRunOpt = False
    out: OutOpt = None
    max_in_flight: MaxInFlightOpt = DEFAULT_MAX_IN_FLIGHT
    rate: RateOpt = None
    shard: ShardOpt = None
    resubmit_uncertain: ResubmitOpt = False
    max_cost: MaxCostOpt = None
    events: EventsOpt = None


_GROUPS = {"follow": _Follow, "batch": _Batch}


def _run(ctx: AppContext, kind: str, fields: dict[str, Any], batch: _Batch, follow: _Follow, build) -> int:
    from kling_cli.waiting import parse_duration

    deadline = _flag("timeout", parse_duration(follow.timeout), "wait_timeout")
    defaults = _defaults(ctx, kind, fields)
    if batch.from_csv is not None:
        from kling_cli.cli._batch import RunOptions, batch_options, run_batch
        from kling_cli.cli._many import DownloadPlan

        opts = batch_options(kind, batch.from_csv, defaults, extra_columns=batch.extra_columns,
                             skip_invalid=batch.skip_invalid, max_in_flight=batch.max_in_flight, rate=batch.rate,
                             shard=batch.shard, resubmit_uncertain=batch.resubmit_uncertain,
                             wait=follow.wait or follow.download is not None, max_cost=batch.max_cost)
        plan = DownloadPlan(follow.download) if follow.download is not None else None
        return run_batch(ctx, opts, RunOptions(batch.dry_run, batch.out or [], deadline, follow.interval, plan,
                                               events=batch.events))
    if (batch.out or batch.shard or batch.rate or batch.extra_columns or batch.skip_invalid or batch.max_cost
            or batch.events or batch.resubmit_uncertain or batch.max_in_flight != DEFAULT_MAX_IN_FLIGHT):
        raise UsageError("--out, --shard, --rate, --max-in-flight, --max-cost, --events, --extra-columns, "
                         "--skip-invalid and --resubmit-uncertain go with --from-csv")
    if batch.dry_run:
        return _dry_run(ctx, kind, build(defaults))
    return _submit(ctx, kind, build(defaults), follow, deadline)


def _dry_run(ctx: AppContext, kind: str, req: Any) -> int:
    """The request a submit would send, and its estimated cost; nothing is sent."""
    from kling_cli.cli._batch import dry_run_request, say_uploads

    service = ctx.service()
    service.preflight(kind, req)
    body, guess = dry_run_request(service, kind, req)
    ctx.out.json(body)
    say_uploads(ctx, body.get("uploads", []))
    ctx.out.info(f"dry run: nothing was sent; estimated cost: {guess.text()}")
    return 0


def _submit(ctx: AppContext, kind: str, req: Any, follow: _Follow, deadline: float) -> int:
    from kling_cli.service import new_external_id

    service = ctx.service(journal_required=True)
    service.preflight(kind, req)
    service.upload_media(kind, req)  # checked first: nothing is uploaded that Kling would refuse
    given = req.external_id
    req.external_id = req.external_id or new_external_id()
    ctx.submitting = req.external_id  # named if Ctrl-C lands while the answer is awaited
    if given and service.journal is not None:  # another kling may be sending the same id: claim it first
        from kling_cli.claims import submit_once

        task = submit_once(service, kind, req, say=ctx.out.info)
    else:
        task = service.submit(kind, req)
    ctx.submitting = None
    ctx.running.append(task.id)
    resolved = ctx.resolved()
    ctx.out.info(f"submitted {kind} task {task.id} on profile {resolved.profile} ({resolved.dialect} dialect)")
    if not (follow.wait or follow.download):
        if ctx.out.json_mode:
            ctx.out.task(task)
        else:
            ctx.out.data(task.id)
            ctx.out.info(f"follow it with: `{ctx.suggest('wait', task.id)}`")
        return 0
    from kling_cli.cli._many import DownloadPlan, wait_many
    from kling_cli.labels import label
    from kling_cli.taskrefs import TaskRef

    plan = DownloadPlan(follow.download) if follow.download is not None else None
    labels = {task.id: label(None, req.prompt)} if req.prompt else {}
    return wait_many(ctx, [TaskRef(task.id, kind)], timeout=deadline, interval=follow.interval, download=plan,
                     labels=labels)


def _prompt_and_id(prompt: str | None, external_id: str | None, batch: _Batch) -> None:
    """The PROMPT argument and --external-id, checked by the rules a CSV cell follows; an external id names one
    task, so not with --from-csv."""
    if prompt is not None:
        _flag("prompt", prompt, label="PROMPT")
    if external_id is not None:
        _flag("external_id", external_id)
    if external_id and batch.from_csv:
        raise UsageError("--external-id names one task: with --from-csv use an external_id column")


def _video_fields(model: str | None, mode: Mode | None, duration: int | None, aspect_ratio: AspectRatio | None,
                  negative_prompt: str | None, cfg_scale: float | None, camera_control: str | None,
                  callback_url: str | None, extra: list[str] | None) -> dict[str, Any]:
    """The options text and image to video share, named like their CSV columns."""
    return {"model": model, "mode": mode.value if mode else None, "duration": duration,
            "aspect_ratio": aspect_ratio.value if aspect_ratio else None, "negative_prompt": negative_prompt,
            "cfg_scale": cfg_scale, "camera_control": _camera(camera_control), "callback_url": callback_url,
            "extra": parse_extra(extra)}


@command(submit_app, "t2v", task_options=True, groups=_GROUPS)
def submit_t2v(
    ctx: AppContext,
    prompt: Annotated[Optional[str], typer.Argument(help="What the video shows (at most 2500 characters; 500 on "
                                                    "CometAPI), in quotes.  [required unless --from-csv]",
                                                    show_default=False)] = None,
    model: ModelOpt = None,
    mode: ModeOpt = None,
    duration: DurationOpt = None,
    aspect_ratio: Annotated[Optional[AspectRatio], typer.Option("--aspect-ratio", help="16:9, 9:16 or 1:1; "
                                                                "CometAPI also takes 4:3, 3:4, 3:2, 2:3.",
                                                                show_default=False)] = None,
    negative_prompt: NegativePromptOpt = None,
    cfg_scale: CfgScaleOpt = None,
    camera_control: CameraOpt = None,
    callback_url: CallbackOpt = None,
    external_id: ExternalIdOpt = None,
    extra: ExtraOpt = None,
    *,
    follow: _Follow,
    batch: _Batch,
) -> int:
    """Submit a text-to-video task, or one per row of a CSV file.

    Example: kling submit t2v "a red fox running through snow" --duration 5 --wait --download videos
    """
    from kling_cli.models import T2VRequest

    if (prompt is None) == (batch.from_csv is None):
        try:
            ctx.resolved()  # so that the examples name the profile where this shell needs it
        except KlingError:
            pass
        raise UsageError("give either a PROMPT or --from-csv FILE",
                         hint=f"`{ctx.suggest('submit', 't2v', 'a red fox')}` or "
                         f"`{ctx.suggest('submit', 't2v', '--from-csv', 'FILE')}`")
    _prompt_and_id(prompt, external_id, batch)
    fields = _video_fields(model, mode, duration, aspect_ratio, negative_prompt, cfg_scale, camera_control,
                           callback_url, extra)

    def build(values: dict[str, Any]) -> T2VRequest:
        return T2VRequest(prompt=prompt or "", model=values.get("model"), mode=values.get("mode"),
                          duration=values.get("duration"), aspect_ratio=values.get("aspect_ratio"),
                          negative_prompt=values.get("negative_prompt"), cfg_scale=values.get("cfg_scale"),
                          camera_control=values.get("camera_control"), callback_url=values.get("callback_url"),
                          external_id=external_id, extra=values.get("extra", {}))

    return _run(ctx, "t2v", fields, batch, follow, build)


@command(submit_app, "i2v", task_options=True, groups=_GROUPS)
def submit_i2v(
    ctx: AppContext,
    prompt: Annotated[Optional[str], typer.Argument(help="What happens in the video (optional on most providers; "
                                                    "ezmodel and AceData require one).", show_default=False)] = None,
    image: Annotated[Optional[str], typer.Option("--image", metavar="PATH|URL", help="The first frame: a jpg/png "
                                                 "file or URL (<= 10 MB, >= 300 px, aspect 1:2.5-2.5:1)." + _REQUIRED,
                                                 show_default=False)] = None,
    image_tail: Annotated[Optional[str], typer.Option("--image-tail", metavar="PATH|URL", help="The last frame "
                                                      "(same rules); not with --camera-control.",
                                                      show_default=False)] = None,
    model: ModelOpt = None,
    mode: ModeOpt = None,
    duration: DurationOpt = None,
    aspect_ratio: Annotated[Optional[AspectRatio], typer.Option("--aspect-ratio", help="Where the provider takes "
                                                                "one (AceData); elsewhere the video takes the "
                                                                "image's.", show_default=False)] = None,
    negative_prompt: NegativePromptOpt = None,
    cfg_scale: CfgScaleOpt = None,
    camera_control: CameraOpt = None,
    callback_url: CallbackOpt = None,
    external_id: ExternalIdOpt = None,
    extra: ExtraOpt = None,
    *,
    follow: _Follow,
    batch: _Batch,
) -> int:
    """Submit an image-to-video task (the image is the first frame), or one per row of a CSV file.

    --image is required; with --from-csv, an image column may give it instead.

    Example: kling submit i2v --image me.png "she turns and smiles" --image-tail end.png --wait --download videos
    """
    from kling_cli.models import I2VRequest

    if prompt is not None and batch.from_csv is not None:
        raise UsageError("give either a PROMPT or --from-csv FILE (with a prompt column)",
                         hint=f"`{ctx.suggest('submit', 'i2v', '--from-csv', 'FILE')}`")
    _prompt_and_id(prompt, external_id, batch)
    fields = {"image": image, "image_tail": image_tail, "prompt": prompt,
              **_video_fields(model, mode, duration, aspect_ratio, negative_prompt, cfg_scale, camera_control,
                              callback_url, extra)}

    def build(values: dict[str, Any]) -> I2VRequest:
        if values.get("image") is None:
            raise UsageError("--image is required", hint="the first frame: a jpg/png file or an https:// URL")
        return I2VRequest.from_values({**values, "external_id": external_id})

    return _run(ctx, "i2v", fields, batch, follow, build)


_MOTION_REQUIRED = {
    "image": "the subject: a jpg/png file or an https:// URL",
    "video": "the motion reference: an mp4/mov file or https:// URL",
    "orientation": "image keeps the image's facing (clip <= 10 s), video follows the video",
    "mode": "std or pro",
}


@command(submit_app, "motion", task_options=True, groups=_GROUPS)
def submit_motion(
    ctx: AppContext,
    image: Annotated[Optional[str], typer.Option("--image", metavar="PATH|URL", help="The subject: a jpg/png file or "
                                                 "URL (<= 10 MB, >= 300 px, aspect 1:2.5-2.5:1)." + _REQUIRED,
                                                 show_default=False)] = None,
    video: Annotated[Optional[str], typer.Option("--video", metavar="PATH|URL", help="The motion reference: an mp4/mov "
                                                 "file (uploaded by the profile's uploader) or URL (<= 100 MB, 3-30 s; "
                                                 "3-10 s with --orientation image)."
                                                 + _REQUIRED, show_default=False)] = None,
    orientation: Annotated[Optional[Orientation], typer.Option("--orientation", help="Face the way the image "
                                                               "does, or the way the video does."
                                                               + _REQUIRED_OR_PROFILE, show_default=False)] = None,
    mode: Annotated[Optional[Mode], typer.Option("--mode", help="std (720p) or pro (1080p)." + _REQUIRED_OR_PROFILE,
                                                 show_default=False)] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Optional text: add elements or camera effects.",
                                                  show_default=False)] = None,
    keep_sound: Annotated[Optional[bool], typer.Option("--keep-sound/--no-keep-sound", help="Keep the reference "
                                                       "video's sound (provider default: keep).",
                                                       show_default=False)] = None,
    model: ModelOpt = None,
    callback_url: CallbackOpt = None,
    external_id: ExternalIdOpt = None,
    extra: ExtraOpt = None,
    *,
    follow: _Follow,
    batch: _Batch,
) -> int:
    """Submit a motion-control task (the subject of an image performs the motion of a reference video), or one per
    row of a CSV file.

    --image, --video, --orientation and --mode are required; with --from-csv, columns may give them instead.

    Example: kling submit motion --image me.png --video https://example.com/dance.mp4 --orientation video --mode std
    """
    from kling_cli.models import MediaRef, MotionRequest

    if external_id and batch.from_csv:
        raise UsageError("--external-id names one task: with --from-csv use an external_id column")
    if external_id is not None:
        _flag("external_id", external_id)
    fields = {"image": image, "video": video, "orientation": orientation.value if orientation else None,
              "mode": mode.value if mode else None, "prompt": prompt, "keep_sound": keep_sound, "model": model,
              "callback_url": callback_url, "extra": parse_extra(extra)}

    def build(values: dict[str, Any]) -> MotionRequest:
        missing = [name for name in _MOTION_REQUIRED if values.get(name) is None]
        if missing:
            flags = [f"--{name}" for name in missing]
            named = flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " and " + flags[-1]
            raise UsageError(f"{named} {'is' if len(flags) == 1 else 'are'} required",
                             hint="; ".join(f"--{name}: {_MOTION_REQUIRED[name]}" for name in missing))
        return MotionRequest(image=MediaRef.parse(values["image"]), video=MediaRef.parse(values["video"]),
                             orientation=values["orientation"], mode=values["mode"], prompt=values.get("prompt"),
                             keep_sound=values.get("keep_sound"), model=values.get("model"),
                             callback_url=values.get("callback_url"), external_id=external_id,
                             extra=values.get("extra", {}))

    return _run(ctx, "motion", fields, batch, follow, build)
