"""Callbacks the providers POST to you: recognising them, checking their signatures, reading the task.

- aigw (seed 000): the body carries `sign = SHA256(taskNo + timestamp + apiKey)` as lowercase hex.
- the official Kling API (kling-official-cometapi.md §1.9): when a webhook secret is set in the console,
  headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature` ("v1,<base64>", several
  separated by spaces while a secret rotates) carry base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")),
  the secret being the base64 text after "whsec_"; timestamps more than 5 minutes off are refused.
Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any, Mapping

from kling_cli.models import Task, TaskError, TaskStatus, Video, epoch_to_iso, to_number, to_str_id
from kling_cli.providers.aigw import parse_aigw_task
from kling_cli.providers.base import dig, text_or_none
from kling_cli.providers.kling import parse_kling_task

TOLERANCE = 300
NEW_DESIGN_STATUS = {"submitted": TaskStatus.QUEUED, "processing": TaskStatus.RUNNING,
                     "succeeded": TaskStatus.SUCCEEDED, "failed": TaskStatus.FAILED}


class InvalidCallback(Exception):
    """The body or its signature is not acceptable; the message says why."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        #: the HTTP status a receiver answers: 401 for a signature problem, 400 for an unreadable body
        self.status = status


@dataclass
class Callback:
    source: str  # "aigw" or "kling"
    signed: bool
    task: Task


def aigw_signature(task_no: str, timestamp: Any, api_key: str) -> str:
    return hashlib.sha256(f"{task_no}{timestamp}{api_key}".encode()).hexdigest()


def kling_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCallback("the webhook secret is not valid base64 (expected whsec_...)") from None
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verify_kling(headers: Mapping[str, str], body: bytes, secret: str, *, now: float | None = None,
                 tolerance: int = TOLERANCE) -> None:
    h = _lower_headers(headers)
    webhook_id, stamp, signatures = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (webhook_id and stamp and signatures):
        raise InvalidCallback("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        moment = int(stamp)
    except ValueError:
        raise InvalidCallback(f"webhook-timestamp is not a number: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - moment) > tolerance:
        raise InvalidCallback(f"webhook-timestamp is {int(current - moment)} s away from now (limit {tolerance} s)")
    expected = kling_signature(secret, webhook_id, stamp, body)
    offered = [part.split(",", 1)[1] for part in signatures.split() if part.startswith("v1,")]
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise InvalidCallback("the webhook signature does not match")


def verify_aigw(body: dict[str, Any], api_key: str) -> None:
    sign = body.get("sign")
    if not isinstance(sign, str) or not sign:
        raise InvalidCallback("the callback has no sign field")
    expected = aigw_signature(str(body.get("taskNo", "")), body.get("timestamp", ""), api_key)
    if not hmac.compare_digest(expected, sign.strip().lower()):
        raise InvalidCallback("the sign field does not match SHA256(taskNo + timestamp + apiKey)")


def read_callback(
    body: bytes,
    headers: Mapping[str, str],
    *,
    api_key: str | None = None,
    webhook_secret: str | None = None,
    now: float | None = None,
) -> Callback:
    """Recognise, verify (where the provider signs) and normalise one callback."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InvalidCallback("the body is not JSON", status=400) from None
    if not isinstance(payload, dict):
        raise InvalidCallback("the body is not a JSON object", status=400)
    if "taskNo" in payload:
        if not api_key:
            raise InvalidCallback("an aigw callback is signed with the API key, and no key is configured")
        verify_aigw(payload, api_key)
        task = parse_aigw_task("motion", payload, payload)
        return Callback("aigw", True, task)
    signed = "webhook-signature" in _lower_headers(headers)
    if signed:
        if not webhook_secret:
            raise InvalidCallback("the callback is signed and no webhook secret is configured")
        verify_kling(headers, body, webhook_secret, now=now)
    elif webhook_secret:
        # with a secret set, Kling signs every callback: an unsigned one did not come from Kling
        raise InvalidCallback("the callback is not signed, and a webhook secret is configured")
    if "task_id" in payload:
        return Callback("kling", signed, parse_kling_task("t2v", payload, payload))
    if "id" in payload and "status" in payload:
        return Callback("kling", signed, _new_design_task(payload))
    raise InvalidCallback("not a callback kling-cli knows (no taskNo, task_id or id)", status=400)


def _new_design_task(payload: dict[str, Any]) -> Task:
    """The official API's new design ("API 2.0") task object, as its callbacks send it."""
    raw = payload.get("status")
    status = NEW_DESIGN_STATUS.get(raw, TaskStatus.UNKNOWN) if isinstance(raw, str) else TaskStatus.UNKNOWN
    videos = [Video(id=to_str_id(o.get("id")), url=text_or_none(o.get("url")), duration=to_number(o.get("duration")))
              for o in payload.get("outputs") or [] if isinstance(o, dict) and o.get("type") == "video"]
    task = Task(id=to_str_id(payload.get("id")) or "", kind="t2v", status=status, raw_status=raw if isinstance(raw, str)
                else None, videos=videos, external_id=text_or_none(payload.get("external_id")),
                created_at=epoch_to_iso(payload.get("create_time"), unit="ms"),
                updated_at=epoch_to_iso(payload.get("update_time"), unit="ms"), raw=payload)
    if status is TaskStatus.FAILED:
        task.error = TaskError(code=None, message=text_or_none(dig(payload, "message")) or "the provider gave no reason")
    return task
