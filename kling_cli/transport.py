"""HTTP for every dialect: one client per run, one retry policy, one place that maps failures to errors.

Retry policy: connection failures, 408, 429 and 5xx that the dialect marks retryable are retried with
`Retry-After` (capped) or exponential backoff with jitter. A request that creates a paid task is retried
only when it provably never reached the server, or when the server answered with a refusal (a 4xx such as
Kling's 1303 "too many running tasks" means nothing was created). Anything in between (read timeout,
dropped connection, 5xx) raises `SubmitUncertain`: the caller reconciles or reports, it never resends blind.
"""

from __future__ import annotations

import random
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping
from urllib.parse import urlsplit

import httpx

from kling_cli import __version__
from kling_cli.credentials import Credentials
from kling_cli.errors import ApiError, BadResponse, DeadlineExceeded, ProviderUnavailable, SubmitUncertain
from kling_cli.providers.base import Dialect, Reply, WireRequest

USER_AGENT = f"kling-cli/{__version__}"
CONNECT_TIMEOUT = 10.0
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
#: a Retry-After longer than this is not worth blocking a CLI on; we wait this long and try
MAX_RETRY_AFTER = 60.0
#: Kling asks for "exponential backoff, initial >= 1 s" on its concurrency limit
RATE_LIMIT_MIN_DELAY = 1.0

Log = Callable[[int, str], None]


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment is None:
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff_delay(attempt: int, *, rate_limited: bool = False, rng: random.Random | None = None) -> float:
    """0.5 s, 1 s, 2 s ... capped at 8 s, plus up to 25% jitter so that clients spread out."""
    base = min(INITIAL_RETRY_DELAY * (2**attempt), MAX_RETRY_DELAY)
    if rate_limited:
        base = max(base, RATE_LIMIT_MIN_DELAY)
    return base * (1 + 0.25 * (rng or random).random())


class _LazyTLS(ssl.SSLContext):
    """A verified TLS context whose CA bundle is loaded on the first TLS connection, not at start-up.

    Loading it costs ~20 ms, which every run paid twice (API and download clients) even when all its traffic
    is plain http (the sandbox, CI). The real context is httpx's own (`create_ssl_context`: certifi, or
    SSL_CERT_FILE/SSL_CERT_DIR); httpcore only sets ALPN on it and wraps sockets, which are forwarded.
    """

    def __new__(cls) -> _LazyTLS:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        self._real: ssl.SSLContext | None = None
        self._alpn: list[str] | None = None
        self._guard = threading.Lock()

    def _loaded(self) -> ssl.SSLContext:
        with self._guard:
            if self._real is None:
                self._real = httpx.create_ssl_context()
                if self._alpn:
                    self._real.set_alpn_protocols(self._alpn)
            return self._real

    def set_alpn_protocols(self, protocols) -> None:  # type: ignore[override]
        self._alpn = list(protocols)
        if self._real is not None:
            self._real.set_alpn_protocols(self._alpn)

    def wrap_socket(self, *args, **kwargs):  # type: ignore[override]
        return self._loaded().wrap_socket(*args, **kwargs)

    def wrap_bio(self, *args, **kwargs):  # type: ignore[override]
        return self._loaded().wrap_bio(*args, **kwargs)


_tls: _LazyTLS | None = None
_tls_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """One TLS context per process, shared by the API and download clients, loaded on first use."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = _LazyTLS()
        return _tls


def loopback_mounts(limits: httpx.Limits) -> dict[str, httpx.BaseTransport]:
    """Loopback hosts (the sandbox, a local gateway) are reached directly, never through a proxy from the
    environment, which would carry the request off this machine or refuse it."""
    direct = httpx.HTTPTransport(verify=tls_context(), limits=limits, trust_env=False)
    return {"all://127.0.0.1": direct, "all://localhost": direct, "all://[::1]": direct}


def build_client(base_url: str | None = None, *, timeout: float = 30.0, max_connections: int = 20) -> httpx.Client:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.Client(
        verify=tls_context(),
        base_url=base_url or "",
        timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
        limits=limits,
        mounts=loopback_mounts(limits),
    )


@dataclass
class _Failure:
    error: ApiError
    #: the request may have reached the server
    sent: bool
    #: the server answered with a refusal, so nothing was created
    refused: bool = False
    #: the server answered 2xx, yet the body is not a success
    answered_ok: bool = False


class Transport:
    def __init__(
        self,
        *,
        base_url: str,
        dialect: Dialect,
        credentials: Credentials,
        timeout: float = 30.0,
        retries: int = 2,
        log: Log = lambda _level, _msg: None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        client: httpx.Client | None = None,
        max_connections: int = 20,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc.rpartition("@")[2] or self.base_url  # never the user part
        self.dialect = dialect
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.log = log
        self.sleep = sleep
        self.clock = clock
        self.client = client or build_client(self.base_url, timeout=timeout, max_connections=max_connections)
        # A rate limit seen by one request holds back every request to this provider until it passes.
        self._gate_until = 0.0
        self._gate_lock = threading.Lock()
        #: the API answered this run at least once: the base URL is right
        self._api_answered = False

    def close(self) -> None:
        self.client.close()

    def _attempt_timeout(self, deadline: float | None) -> float:
        if deadline is None:
            return self.timeout
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise DeadlineExceeded("the deadline passed")
        return min(self.timeout, remaining)

    def _wait_at_gate(self, deadline: float | None) -> None:
        while True:
            with self._gate_lock:
                wait = self._gate_until - self.clock()
            if wait <= 0:
                return
            if deadline is not None and self.clock() + wait >= deadline:
                raise DeadlineExceeded("the deadline passed while the provider asked to slow down")
            self.sleep(wait)

    @property
    def gate_until(self) -> float:
        """The clock time before which no request goes out (a rate limit asked us to wait)."""
        with self._gate_lock:
            return self._gate_until

    def _close_gate(self, delay: float) -> None:
        with self._gate_lock:
            self._gate_until = max(self._gate_until, self.clock() + delay)

    def send(self, wire: WireRequest, *, deadline: float | None = None, busy_retries: bool = True) -> Reply:
        """`busy_retries=False`: a "too many running tasks" refusal (Kling 1303) is raised at once, not retried."""
        attempt = 0
        reauthed = False
        while True:
            self._wait_at_gate(deadline)
            timeout = self._attempt_timeout(deadline)
            outcome = self._attempt(wire, timeout, deadline)
            if isinstance(outcome, Reply):
                return outcome
            error = outcome.error
            if error.reauth and self.credentials.access_key and not reauthed:
                reauthed = True
                self.log(1, f"token refused ({error.provider_code}): minting a new one and trying once more")
                continue
            if wire.creates_task and outcome.answered_ok:
                # HTTP said yes but the body cannot be read as a yes or a no: the task may exist.
                raise SubmitUncertain(
                    f"the submit reached {self.host}, which answered HTTP {error.status} with something unreadable: "
                    f"{error.message}",
                    hint="it was not sent again; check whether the task exists before submitting again",
                    status=error.status, provider_code=error.provider_code, request_id=error.request_id)
            if not error.retryable or (error.code == "concurrency_limit" and not busy_retries):
                raise error
            if wire.creates_task and outcome.sent and not outcome.refused:
                raise SubmitUncertain(
                    f"the submit may have reached {self.host} but its answer was lost: {error.message}",
                    hint="it was not sent again, so it cannot be charged twice; check whether the task exists "
                    "before submitting again",
                    status=error.status,
                    provider_code=error.provider_code,
                    request_id=error.request_id,
                    retryable=True,
                ) from error
            if attempt >= self.retries:
                if attempt:
                    error.message += f" (after {attempt + 1} attempts)"
                raise error
            rate_limited = error.code in ("rate_limited", "concurrency_limit") or error.status == 429
            delay = error.retry_after
            if delay is None:
                delay = backoff_delay(attempt, rate_limited=rate_limited)
            if deadline is not None and self.clock() + delay >= deadline:
                raise error
            self.log(1, f"{error.message}; retrying in {delay:.1f}s")
            if rate_limited:
                self._close_gate(delay)
            else:
                self.sleep(delay)
            attempt += 1

    def _attempt(self, wire: WireRequest, timeout: float, deadline: float | None) -> Reply | _Failure:
        started = self.clock()
        try:
            response = self.client.request(
                wire.method,
                wire.path,
                json=wire.json,
                params=wire.params,
                headers=self.dialect.auth_headers(self.credentials),
                timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing reached the server: always safe to try again.
            error = ProviderUnavailable(f"cannot reach {self.host}: {_reason(exc)}", code="network", retryable=True)
            return _Failure(error, sent=False)
        except httpx.TimeoutException:
            if deadline is not None and self.clock() >= deadline - 0.001:
                raise DeadlineExceeded("the deadline passed") from None
            error = ProviderUnavailable(f"no answer from {self.host} within {timeout:g}s", code="timeout",
                                        retryable=True)
            return _Failure(error, sent=True)
        except httpx.TransportError as exc:
            error = ProviderUnavailable(f"the connection to {self.host} broke: {_reason(exc)}", code="network",
                                        retryable=True)
            return _Failure(error, sent=True)
        reply = Reply.build(response.status_code, response.headers, response.content, wire.path)
        self.log(2, f"{wire.method} {wire.path} -> {response.status_code} ({(self.clock() - started) * 1000:.0f} ms)")
        error = self.dialect.error_for(reply)
        if isinstance(error, BadResponse) and self._api_answered and not wire.creates_task:
            # A wrong base URL shows on the first request of a run; one odd answer among good ones (HTML from
            # a proxy, an empty 200) is one failed query, like a 502.
            error = ProviderUnavailable(f"{error.message}, after good answers earlier", retryable=True,
                                        code="bad_answer", status=error.status)
        elif reply.is_json and not isinstance(error, BadResponse):
            self._api_answered = True
        if error is None:
            return reply
        if error.retry_after is None:
            error.retry_after = parse_retry_after(reply.headers)
        return _Failure(error, sent=True, refused=400 <= reply.status < 500 or error.refusal,
                        answered_ok=200 <= reply.status < 300 and not error.refusal)


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
