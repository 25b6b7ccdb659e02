"""`kling submit t2v` and `kling submit motion`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from kling_cli.cli._app import submit_app
from kling_cli.cli._common import AppContext, command
from kling_cli.errors import UsageError


class Mode(str, Enum):
    std = "std"
    pro = "pro"


class AspectRatio(str, Enum):
    landscape = "16:9"
    portrait = "9:16"
    square = "1:1"


class Orientation(str, Enum):
    image = "image"
    video = "video"


ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model name, e.g. kling-v2-6 (default: the "
                                                 "profile's, else the provider's).", show_default=False)]
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
                                         "20m, 1h); the task keeps running.")]
IntervalOpt = Annotated[Optional[float], typer.Option("--interval", min=0.0, help="Poll every S seconds "
                                                      "(default: 2 s growing to 30 s).", show_default=False)]
DownloadOpt = Annotated[Optional[Path], typer.Option("--download", metavar="DIR", help="Wait, then download the "
                                                     "videos into DIR.", show_default=False)]


def parse_extra(items: list[str] | None) -> dict[str, Any]:
    import json

    fields: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--extra {item!r}: expected KEY=VALUE", hint="e.g. --extra sound=on --extra 'watermark_info={\"enabled\":false}'")
        try:
            fields[key.strip()] = json.loads(value)
        except ValueError:
            fields[key.strip()] = value
    return fields


def _camera(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--camera-control is not valid JSON: {exc}",
                         hint='e.g. --camera-control \'{"type":"simple","config":{"zoom":5}}\'') from None
    if not isinstance(value, dict):
        raise UsageError("--camera-control must be a JSON object")
    return value


def _submit(ctx: AppContext, kind: str, req: Any, *, wait: bool, timeout: str, interval: float | None,
            download: Path | None) -> int:
    from kling_cli.waiting import parse_duration

    deadline = parse_duration(timeout)
    service = ctx.service()
    service.preflight(kind, req)
    task = service.submit(kind, req)
    ctx.running.append(task.id)
    resolved = ctx.resolved()
    ctx.out.info(f"submitted {kind} task {task.id} on profile {resolved.profile} ({resolved.dialect} dialect)")
    if not (wait or download):
        if ctx.out.json_mode:
            ctx.out.task(task)
        else:
            ctx.out.data(task.id)
            ctx.out.info(f"follow it with: kling wait {task.id}")
        return 0
    from kling_cli.cli._many import DownloadPlan, wait_many
    from kling_cli.taskrefs import TaskRef

    plan = DownloadPlan(download) if download is not None else None
    return wait_many(ctx, [TaskRef(task.id, kind)], timeout=deadline, interval=interval, download=plan)


@command(submit_app, "t2v", task_options=True)
def submit_t2v(
    ctx: AppContext,
    prompt: Annotated[str, typer.Argument(help="What the video shows (at most 2500 characters).", show_default=False)],
    model: ModelOpt = None,
    mode: ModeOpt = None,
    duration: Annotated[Optional[int], typer.Option("--duration", min=3, max=15, help="Seconds: 5 or 10 "
                                                    "(3-15 on kling-v3).", show_default=False)] = None,
    aspect_ratio: Annotated[Optional[AspectRatio], typer.Option("--aspect-ratio", show_default=False)] = None,
    negative_prompt: Annotated[Optional[str], typer.Option("--negative-prompt", help="What to avoid.",
                                                           show_default=False)] = None,
    cfg_scale: Annotated[Optional[float], typer.Option("--cfg-scale", min=0.0, max=1.0, help="Prompt adherence, "
                                                       "0-1 (not on kling-v2.x).", show_default=False)] = None,
    camera_control: Annotated[Optional[str], typer.Option("--camera-control", metavar="JSON", help="Camera "
                                                          "movement, as Kling's camera_control object.",
                                                          show_default=False)] = None,
    callback_url: CallbackOpt = None,
    external_id: ExternalIdOpt = None,
    extra: ExtraOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "1h",
    interval: IntervalOpt = None,
    download: DownloadOpt = None,
) -> int:
    """Submit a text-to-video task.

    Example: kling submit t2v "a red fox running through snow" --duration 5 --wait --download videos
    """
    from kling_cli.models import T2VRequest

    defaults = ctx.resolved().defaults
    req = T2VRequest(
        prompt=prompt,
        model=model or defaults.get("model"),
        mode=mode.value if mode else defaults.get("mode"),
        duration=duration if duration is not None else defaults.get("duration"),
        aspect_ratio=aspect_ratio.value if aspect_ratio else defaults.get("aspect_ratio"),
        negative_prompt=negative_prompt if negative_prompt is not None else defaults.get("negative_prompt"),
        cfg_scale=cfg_scale if cfg_scale is not None else defaults.get("cfg_scale"),
        camera_control=_camera(camera_control),
        callback_url=callback_url or defaults.get("callback_url"),
        external_id=external_id,
        extra=parse_extra(extra),
    )
    return _submit(ctx, "t2v", req, wait=wait, timeout=timeout, interval=interval, download=download)


@command(submit_app, "motion", task_options=True)
def submit_motion(
    ctx: AppContext,
    image: Annotated[str, typer.Option("--image", metavar="PATH|URL", help="The subject: a jpg/png file or URL "
                                       "(<= 10 MB, >= 300 px, aspect 1:2.5-2.5:1).", show_default=False)],
    video: Annotated[str, typer.Option("--video", metavar="PATH|URL", help="The motion reference: an mp4/mov URL "
                                       "(<= 100 MB, 3-30 s; 3-10 s with --orientation image).", show_default=False)],
    orientation: Annotated[Optional[Orientation], typer.Option("--orientation", help="Face the way the image "
                                                               "does, or the way the video does.",
                                                               show_default=False)] = None,
    mode: ModeOpt = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Optional text: add elements or camera effects.",
                                                  show_default=False)] = None,
    keep_sound: Annotated[Optional[bool], typer.Option("--keep-sound/--no-keep-sound", help="Keep the reference "
                                                       "video's sound (provider default: keep).",
                                                       show_default=False)] = None,
    model: ModelOpt = None,
    callback_url: CallbackOpt = None,
    external_id: ExternalIdOpt = None,
    extra: ExtraOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = "1h",
    interval: IntervalOpt = None,
    download: DownloadOpt = None,
) -> int:
    """Submit a motion-control task: the subject of an image performs the motion of a reference video.

    Example: kling submit motion --image me.png --video https://example.com/dance.mp4 --orientation video --mode std
    """
    from kling_cli.models import MediaRef, MotionRequest

    defaults = ctx.resolved().defaults
    chosen_orientation = orientation.value if orientation else defaults.get("orientation")
    chosen_mode = mode.value if mode else defaults.get("mode")
    if chosen_orientation not in ("image", "video"):
        raise UsageError("--orientation is required (image or video)",
                         hint="image: the character faces as in the image (clip <= 10 s); video: as in the video")
    if chosen_mode not in ("std", "pro"):
        raise UsageError("--mode is required (std or pro)")
    req = MotionRequest(
        image=MediaRef.parse(image),
        video=MediaRef.parse(video),
        orientation=chosen_orientation,
        mode=chosen_mode,
        prompt=prompt,
        keep_sound=keep_sound if keep_sound is not None else defaults.get("keep_sound"),
        model=model or defaults.get("motion_model"),
        callback_url=callback_url or defaults.get("callback_url"),
        external_id=external_id,
        extra=parse_extra(extra),
    )
    return _submit(ctx, "motion", req, wait=wait, timeout=timeout, interval=interval, download=download)
