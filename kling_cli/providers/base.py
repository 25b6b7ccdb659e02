"""What a dialect is: a pure translator between normalized requests/tasks and one provider's wire format.

Dialects do no I/O. `transport` sends their `WireRequest`s, hands every answer back as a `Reply`, and asks
`error_for()` whether it is an error; retries, timeouts and auth refresh live in the transport only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from kling_cli.credentials import Credentials
from kling_cli.errors import (
    ApiError,
    AuthRejected,
    BadResponse,
    NotFound,
    ProviderUnavailable,
    RequestRejected,
    Unsupported,
)
from kling_cli.models import DEFAULT_MODELS, SubmitRequest, Task, TaskStatus


@dataclass
class WireRequest:
    method: str
    path: str
    json: Any = None
    params: dict[str, str] | None = None
    #: sending this creates a paid task: it is never retried once it may have reached the server
    creates_task: bool = False


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str
    payload: Any = None
    is_json: bool = False
    request_path: str = ""

    @classmethod
    def build(cls, status: int, headers: Mapping[str, str], body: bytes, request_path: str = "") -> Reply:
        text = body.decode("utf-8", errors="replace")
        try:
            payload, is_json = json.loads(text), True
        except ValueError:
            payload, is_json = None, False
        return cls(status, headers, text, payload, is_json, request_path)


class Dialect:
    name = "base"
    kinds: frozenset[str] = frozenset({"t2v", "i2v", "motion"})
    #: the provider can find a task by the client's external id (so a lost submit can be reconciled)
    lookup_by_external_id = False
    #: ... and finding none proves the submit created nothing, so it may be sent again (same external id)
    lookup_miss_is_absence = True
    #: a local image (motion subject, image-to-video frames) may be sent inline as raw base64 (else a URL)
    image_base64 = True
    #: the motion reference video may be sent inline as base64 (else it must be a URL)
    video_base64 = False
    prompt_limit = 2500
    negative_prompt_limit = 2500
    #: the text-to-video aspect ratios the provider takes
    aspect_ratios: tuple[str, ...] = ("16:9", "9:16", "1:1")
    #: the kinds whose tasks need a non-empty prompt here beyond text to video (where the docs call it optional)
    prompt_required: frozenset[str] = frozenset()
    #: an image-to-video task takes an aspect ratio (Kling's does not: the video takes the image's)
    i2v_aspect_ratio = False
    #: how many ids one batch query may carry; 0 when the provider has no batch query
    batch_size = 0
    #: kinds whose body reaches Kling without the model (the gateway routes and bills by it, then drops it)
    drops_model: frozenset[str] = frozenset()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    # -- requests -------------------------------------------------------------------------------
    def auth_headers(self, creds: Credentials) -> dict[str, str]:
        if not creds.api_key:
            raise Unsupported(
                f"the {self.name} dialect takes an API key, not an access key + secret key",
                hint="store an API key with `kling profile add NAME --provider ... --api-key-file FILE --force`",
                code="bad_credentials",
            )
        return {"Authorization": f"Bearer {creds.api_key}"}

    def model_for(self, kind: str, requested: str | None) -> str:
        """The model name sent: the one asked for (--model, a CSV cell, the profile), else the default."""
        return requested or DEFAULT_MODELS[kind]

    def build_submit(self, kind: str, req: SubmitRequest) -> WireRequest:
        raise NotImplementedError

    def build_get(self, kind: str, task_id: str) -> WireRequest:
        raise NotImplementedError

    def build_get_by_external_id(self, kind: str, external_id: str) -> WireRequest:
        raise Unsupported(f"the {self.name} dialect cannot look a task up by its external id")

    def build_get_many(self, task_ids: list[str]) -> WireRequest:
        raise Unsupported(f"the {self.name} dialect has no batch query")

    # -- replies --------------------------------------------------------------------------------
    def parse_submit(self, kind: str, reply: Reply) -> Task:
        raise NotImplementedError

    def parse_task(self, kind: str, payload: Any, *, task_id: str | None = None) -> Task:
        raise NotImplementedError

    def parse_many(self, payload: Any) -> list[Any]:
        """The task payloads in a batch answer, each to be read by `parse_task`."""
        raise NotImplementedError

    def error_for(self, reply: Reply) -> ApiError | None:
        """The error this reply means, or None when it is a success."""
        raise NotImplementedError


# --- helpers shared by the dialects -------------------------------------------------------------


def segment(value: str) -> str:
    """One URL path segment from data (a task id, an external id): every character that could end it or
    change its meaning is percent-encoded, dots included where they would form a dot segment. So whatever an
    id looks like, the request stays on the endpoint it was built for."""
    from urllib.parse import quote

    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def dig(value: Any, *keys: str | int) -> Any:
    """value[k1][k2]... or None as soon as a step is missing or of the wrong type."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(value, list) or not -len(value) <= key < len(value):
                return None
        elif not isinstance(value, dict):
            return None
        value = value[key] if isinstance(key, int) else value.get(key)
    return value


def text_or_none(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def unknown_task(kind: str, task_id: str | None, payload: Any, raw_status: Any = None) -> Task:
    """A reply we cannot read as a task: kept whole, status unknown, never a crash."""
    return Task(
        id=task_id or "",
        kind=kind,
        status=TaskStatus.UNKNOWN,
        raw_status=raw_status if isinstance(raw_status, str) else None,
        raw=payload,
    )


def inline_or_url(ref: Any, encoded: str | None) -> str | None:
    """A local image as the raw base64 preflight read, or the URL as given (or as an uploader returned it)."""
    if ref is None:
        return None
    return ref.value if ref.is_url else encoded


def drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def generic_error(reply: Reply, message: str | None = None, *, provider_code: Any = None) -> ApiError | None:
    """Classify by HTTP status alone, for answers that carry no business code we understand."""
    status = reply.status
    if 200 <= status < 300 and reply.is_json:
        return None
    if 300 <= status < 400:
        where = reply.headers.get("location", "elsewhere")
        return BadResponse(
            f"the provider redirected {reply.request_path or 'the request'} to {where} (HTTP {status})",
            hint="the base URL is probably wrong: check it with `kling profile show NAME`",
            status=status,
        )
    if not reply.is_json and status < 500 and status not in (408, 429):
        looks = "an HTML page" if "<html" in reply.text[:500].lower() else "something that is not JSON"
        return BadResponse(
            f"the provider answered {reply.request_path or 'the request'} with {looks} (HTTP {status}), not the API",
            hint="the base URL is probably wrong: check it with `kling profile show NAME`",
            status=status,
        )
    detail = f": {message}" if message else ""
    kwargs = {"status": status, "provider_code": provider_code}
    if status in (401, 403):
        return AuthRejected(f"the provider rejected the credentials (HTTP {status}){detail}",
                            hint="check the key with `kling profile show NAME`", **kwargs)
    if status == 404:
        return NotFound(f"not found (HTTP 404){detail}", **kwargs)
    if status in (408, 429):
        return ProviderUnavailable(f"the provider is busy (HTTP {status}){detail}", retryable=True,
                                   code="rate_limited" if status == 429 else "unavailable", **kwargs)
    if status >= 500:
        body = detail or (": the answer was not JSON" if not reply.is_json else "")
        return ProviderUnavailable(f"the provider failed (HTTP {status}){body}", retryable=True,
                                   code="server_error", **kwargs)
    return RequestRejected(f"the provider rejected the request (HTTP {status}){detail}", **kwargs)
