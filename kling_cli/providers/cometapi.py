"""CometAPI: the official Kling wire format under `/kling/v1/...` with a plain Bearer key, and CometAPI's
own error envelope for its own errors.

Wire facts (kling-official-cometapi.md §3, seed 004): bodies, task objects and `task_status` are Kling's;
the query is `GET /kling/v1/{action}/{action2}/{task_id}`; errors CometAPI raises itself look like
`{"error": {"message": "... (request id: ...)", "type": "comet_api_error", "param": "", "code": "..."}}`;
a wrong path answers a 301 or an HTML page, not JSON; a 500 with code `invalid_request` is a malformed
request, not an outage. Motion control is not documented there: it is tried at the official path, and a
404 means the provider does not offer it. Some locales document the new-api TaskDto shape for queries,
so both shapes are read. A task can be queried by its `external_task_id` too (text-to-video reference).
"""

from __future__ import annotations

from typing import Any

from kling_cli.credentials import Credentials
from kling_cli.errors import ApiError, AuthRejected, ProviderUnavailable, RequestRejected, Unsupported
from kling_cli.models import ASPECT_RATIOS, Task
from kling_cli.providers.base import Dialect, Reply, dig, generic_error, text_or_none
from kling_cli.providers.kling import KlingDialect
from kling_cli.providers.newapi import parse_task_dto

_BALANCE = {"insufficient_user_quota", "quota_not_enough", "insufficient_quota"}


class CometApiDialect(KlingDialect):
    name = "cometapi"
    prefix = "/kling"
    # CometAPI's text-to-video reference: prompt "Maximum 500 characters", negative prompt "Maximum 200", aspect
    # ratio "16:9, 9:16, 1:1, 4:3, 3:4, 3:2, 2:3"
    prompt_limit = 500
    negative_prompt_limit = 200
    aspect_ratios = ASPECT_RATIOS
    # Its text-to-video reference: external_task_id "can be used to query tasks" (in the query path, as on the
    # official API). That a miss means the submit created nothing is not documented: a lost submit found is
    # reconciled, one not found stays uncertain and is not sent again.
    lookup_by_external_id = True
    lookup_miss_is_absence = False

    def auth_headers(self, creds: Credentials) -> dict[str, str]:
        return Dialect.auth_headers(self, creds)

    def parse_task(self, kind: str, payload: Any, *, task_id: str | None = None) -> Task:
        data = dig(payload, "data")
        if dig(payload, "code") == "success" or (isinstance(data, dict) and "status" in data
                                                 and "task_status" not in data):
            return parse_task_dto(kind, payload, task_id=task_id)
        return super().parse_task(kind, payload, task_id=task_id)

    def error_for(self, reply: Reply) -> ApiError | None:
        # Motion control is not documented on CometAPI: its answer to a path it lacks (404, or the 301/HTML
        # it sends for wrong paths) means the provider does not offer it, not a bad base URL.
        if reply.request_path.endswith("/motion-control") and (
                reply.status == 404 or 300 <= reply.status < 400 or not reply.is_json):
            return Unsupported(
                f"motion control is not available on this provider (CometAPI answered HTTP {reply.status})",
                hint="use a profile on another provider for motion control, e.g. the official API or ezmodel",
                status=404,
            )
        nested = dig(reply.payload, "error")
        if not isinstance(nested, dict):
            return super().error_for(reply)  # Kling's own envelope, passed through
        code = text_or_none(nested.get("code")) or ""
        message = text_or_none(nested.get("message")) or "no message"
        status = reply.status
        kwargs = {"status": status, "provider_code": code or None}
        if code in _BALANCE:
            return RequestRejected(f"CometAPI refused the request: {message}", code="insufficient_balance",
                                   hint="top up the CometAPI account or raise the key's quota", **kwargs)
        if status == 401:
            return AuthRejected(f"CometAPI rejected the key: {message}", hint="check the key and the base URL "
                                "(a wrong base URL also answers 'invalid token')", **kwargs)
        if status == 403:
            return AuthRejected(f"CometAPI refused access: {message}", code="permission_denied", **kwargs)
        if status >= 500 and code == "invalid_request":
            return RequestRejected(f"CometAPI refused the request: {message}", code="invalid_request", **kwargs)
        if status == 429 or status >= 500:
            return ProviderUnavailable(f"CometAPI is unavailable (HTTP {status}): {message}", retryable=True,
                                       code="rate_limited" if status == 429 else "server_error", **kwargs)
        return generic_error(reply, message, provider_code=code or None) or RequestRejected(
            f"CometAPI refused the request: {message}", **kwargs)
