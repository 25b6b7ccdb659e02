"""Exit codes and the error tree. No I/O here: the CLI boundary renders these."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    AUTH = 4
    REJECTED = 5
    UNAVAILABLE = 6
    TIMEOUT = 7
    TASK_FAILED = 8
    BUDGET = 9
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "unexpected error (a bug: re-run with KLING_DEBUG=1 and report it)",
    ExitCode.USAGE: "usage: bad option or argument, or a preflight check on your media or prompt failed",
    ExitCode.CONFIG: "configuration: no profile, no key, a bad config file or setting, a base URL that is not the "
                     "API, or a local directory that cannot be written (full disk, permissions)",
    ExitCode.AUTH: "the provider rejected the credentials or their permissions",
    ExitCode.REJECTED: "the provider rejected the request (bad input, no balance, content policy, no such task, "
                       "a feature it does not offer), a task succeeded without a video or gave no usable video "
                       "URL, or a callback is invalid",
    ExitCode.UNAVAILABLE: "the provider stayed unavailable after retries (5xx, rate limit, network), or a "
                          "submit's answer was lost",
    ExitCode.TIMEOUT: "the wait deadline passed while the task was still running",
    ExitCode.TASK_FAILED: "a task failed (its reason is shown)",
    ExitCode.BUDGET: "--max-cost was reached: rows were left unsent (a rerun sends them)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); submitted tasks keep running remotely",
}


class KlingError(Exception):
    """An expected failure, rendered as one line plus a hint."""

    exit_code: ExitCode = ExitCode.ERROR
    code: str = "error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code
        self.extra = extra or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "hint": self.hint}
        body.update(self.extra)
        return {"error": body}


class UsageError(KlingError):
    exit_code = ExitCode.USAGE
    code = "usage"


class PreflightError(UsageError):
    code = "preflight"


class ConfigError(KlingError):
    exit_code = ExitCode.CONFIG
    code = "config"


class ApiError(KlingError):
    """The provider answered with an error, or could not be reached."""

    exit_code = ExitCode.REJECTED
    code = "rejected"
    #: the provider said no in so many words, whatever the HTTP status (e.g. a refusal inside an HTTP 200):
    #: nothing was created
    refusal = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider_code: Any = None,
        request_id: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        reauth: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.status = status
        self.provider_code = provider_code
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after = retry_after
        #: the credentials should be minted afresh and the request tried once more (JWT nbf/exp)
        self.reauth = reauth


class AuthRejected(ApiError):
    exit_code = ExitCode.AUTH
    code = "auth_rejected"


class RequestRejected(ApiError):
    exit_code = ExitCode.REJECTED
    code = "rejected"


class NotFound(RequestRejected):
    code = "not_found"


class Unsupported(RequestRejected):
    code = "unsupported"


class NoVideo(RequestRejected):
    """The provider says the task succeeded but names no video: never a plain success."""

    code = "no_video"

    @classmethod
    def of(cls, task_id: str, raw: Any) -> NoVideo:
        """The error for one such task, with the provider's payload kept (`raw` in the JSON error object)."""
        return cls(f"task {task_id} succeeded without a video: the provider gave no video URL",
                   hint=f"see what the provider sent with `kling status {task_id} --json --raw`",
                   extra={"task_ids": [task_id], "raw": raw})


class BadResponse(ApiError):
    """The answer is not the API's (HTML, a redirect, not JSON): almost always a wrong base URL."""

    exit_code = ExitCode.CONFIG
    code = "bad_response"


class ProviderUnavailable(ApiError):
    exit_code = ExitCode.UNAVAILABLE
    code = "unavailable"


class SubmitUncertain(ProviderUnavailable):
    """A paid submit may or may not have been created: it must not be sent again blindly."""

    code = "submit_uncertain"


class DeadlineExceeded(KlingError):
    exit_code = ExitCode.TIMEOUT
    code = "deadline"


class WaitTimeout(KlingError):
    exit_code = ExitCode.TIMEOUT
    code = "wait_timeout"


class TaskFailed(KlingError):
    exit_code = ExitCode.TASK_FAILED
    code = "task_failed"


class Interrupted(KlingError):
    exit_code = ExitCode.INTERRUPTED
    code = "interrupted"
