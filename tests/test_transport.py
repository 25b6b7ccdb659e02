"""The one retry policy, over real loopback HTTP: what is retried, how long it waits, and that a paid
submit is never sent twice once it may have reached the server."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import jwt
import pytest

from kling_cli.credentials import Credentials
from kling_cli.errors import (
    AuthRejected,
    BadResponse,
    DeadlineExceeded,
    ProviderUnavailable,
    RequestRejected,
    SubmitUncertain,
)
from kling_cli.providers.base import WireRequest
from kling_cli.providers.kling import KlingDialect
from kling_cli.transport import Transport, backoff_delay, parse_retry_after

OK = {"code": 0, "message": "SUCCEED", "request_id": "r", "data": {"task_id": "1", "task_status": "submitted"}}
SUBMIT = WireRequest("POST", "/v1/videos/text2video", json={"prompt": "p"}, creates_task=True)
GET = WireRequest("GET", "/v1/videos/text2video/1")


class FakeTime:
    """A clock that sleeping advances, so waits are recorded instead of spent."""

    def __init__(self, sleeps: list[float]) -> None:
        self.sleeps = sleeps
        self.offset = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.offset += seconds


def transport(url: str, *, sleeps: list[float] | None = None, creds: Credentials | None = None, **kwargs) -> Transport:
    fake = FakeTime(sleeps if sleeps is not None else [])
    kwargs.setdefault("clock", fake.clock)
    return Transport(base_url=url, dialect=KlingDialect(), credentials=creds or Credentials(api_key="k" * 20),
                     sleep=fake.sleep, **kwargs)


@pytest.mark.parametrize(
    "value,expected",
    [("3", 3.0), ("0", 0.0), ("-4", 0.0), ("120", 60.0), ("soon", None), ("", None), ("nan", None)],
)
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after({"retry-after": value}) == expected


def test_parse_retry_after_http_date():
    now = time.time()
    assert parse_retry_after({"retry-after": formatdate(now + 10, usegmt=True)}, now=now) == pytest.approx(10, abs=1)
    assert parse_retry_after({"retry-after": formatdate(now - 10, usegmt=True)}, now=now) == 0.0


def test_backoff_grows_caps_and_jitters():
    assert 0.5 <= backoff_delay(0) <= 0.625
    assert 1.0 <= backoff_delay(1) <= 1.25
    assert 8.0 <= backoff_delay(12) <= 10.0
    assert backoff_delay(0, rate_limited=True) >= 1.0


def test_retry_after_is_honoured(scripted):
    scripted.add(429, {"code": 1303, "message": "parallel task over resource pack limit"}, headers={"Retry-After": "2"})
    scripted.add(200, OK)
    sleeps: list[float] = []
    reply = transport(scripted.url, sleeps=sleeps).send(SUBMIT)
    assert reply.payload["data"]["task_id"] == "1"
    assert sleeps == pytest.approx([2.0], abs=0.05)
    assert len(scripted.requests) == 2  # a 429 refusal created nothing: resending the submit is safe


def test_rate_limit_without_retry_after_backs_off_at_least_a_second(scripted):
    scripted.add(429, {"code": 1303, "message": "busy"})
    scripted.add(200, OK)
    sleeps: list[float] = []
    transport(scripted.url, sleeps=sleeps).send(SUBMIT)
    assert len(sleeps) == 1 and 1.0 <= sleeps[0] <= 1.25


def test_a_rate_limit_holds_back_every_request_to_the_provider(scripted):
    """A second request, from another thread, waits for the first one's Retry-After to pass."""
    import threading

    scripted.add(429, {"code": 1303, "message": "busy"}, headers={"Retry-After": "0.6"})
    scripted.add(200, OK)
    scripted.add(200, OK)
    shared = Transport(base_url=scripted.url, dialect=KlingDialect(), credentials=Credentials(api_key="k" * 20))
    first = threading.Thread(target=shared.send, args=(GET,))
    first.start()
    while not scripted.requests:
        time.sleep(0.005)
    time.sleep(0.1)  # the 429 has been answered: the gate is closed
    shared.send(WireRequest("GET", "/v1/videos/text2video/2"))
    first.join()
    refused_at = scripted.requests[0]["at"]
    assert len(scripted.requests) == 3
    assert min(r["at"] for r in scripted.requests[1:]) >= refused_at + 0.55


@pytest.mark.parametrize("code", [1102, 1101, 1304, 1301, 1201])
def test_never_retried_codes(scripted, code):
    scripted.add(429 if code in (1101, 1102, 1304) else 400, {"code": code, "message": "no"})
    with pytest.raises((RequestRejected, AuthRejected)):
        transport(scripted.url).send(SUBMIT)
    assert len(scripted.requests) == 1


def test_submit_is_not_resent_after_a_read_timeout(scripted):
    scripted.add(200, OK, delay=1.0)
    started = time.monotonic()
    with pytest.raises(SubmitUncertain) as caught:
        transport(scripted.url, timeout=0.2).send(SUBMIT)
    assert time.monotonic() - started < 0.9
    assert len(scripted.requests) == 1
    assert "not sent again" in caught.value.hint


def test_submit_is_not_resent_after_a_5xx(scripted):
    scripted.add(500, {"code": 5000, "message": "internal error"})
    with pytest.raises(SubmitUncertain):
        transport(scripted.url).send(SUBMIT)
    assert len(scripted.requests) == 1


def test_queries_are_retried_after_5xx_and_timeouts(scripted):
    scripted.add(503, {"code": 5001, "message": "maintenance"})
    scripted.add(200, OK, delay=0.5)
    scripted.add(200, OK)
    sleeps: list[float] = []
    reply = transport(scripted.url, sleeps=sleeps, timeout=0.2).send(GET)
    assert reply.status == 200 and len(scripted.requests) == 3 and len(sleeps) == 2


def test_retries_run_out_with_the_attempt_count(scripted):
    for _ in range(3):
        scripted.add(500, {"code": 5000, "message": "internal error"})
    with pytest.raises(ProviderUnavailable) as caught:
        transport(scripted.url, retries=2).send(GET)
    assert "after 3 attempts" in caught.value.message and caught.value.exit_code == 6


def test_unreachable_host_is_retried_even_for_submits():
    sleeps: list[float] = []
    with pytest.raises(ProviderUnavailable) as caught:
        transport("http://127.0.0.1:9", sleeps=sleeps, retries=2).send(SUBMIT)
    assert caught.value.code == "network" and len(sleeps) == 2  # nothing was sent: safe to try again


def test_expired_token_is_minted_again_once(scripted):
    scripted.add(401, {"code": 1004, "message": "Authorization has expired"})
    scripted.add(200, OK)
    creds = Credentials(access_key="AK", secret_key="S" * 32)
    transport(scripted.url, creds=creds).send(SUBMIT)
    assert len(scripted.requests) == 2  # one refused, one with a token minted again
    for request in scripted.requests:
        token = request["headers"]["Authorization"].removeprefix("Bearer ")
        assert jwt.decode(token, "S" * 32, algorithms=["HS256"])["iss"] == "AK"


def test_token_refused_twice_is_an_auth_error(scripted):
    scripted.add(401, {"code": 1004, "message": "expired"})
    scripted.add(401, {"code": 1004, "message": "expired"})
    with pytest.raises(AuthRejected) as caught:
        transport(scripted.url, creds=Credentials(access_key="AK", secret_key="S" * 32)).send(GET)
    assert caught.value.exit_code == 4 and len(scripted.requests) == 2


def test_plain_api_key_is_not_retried_on_expiry(scripted):
    scripted.add(401, {"code": 1004, "message": "expired"})
    with pytest.raises(AuthRejected):
        transport(scripted.url).send(GET)
    assert len(scripted.requests) == 1


def test_html_instead_of_json_is_a_configuration_error(scripted):
    scripted.add(200, raw=b"<!DOCTYPE html><html><body>Welcome</body></html>", headers={"Content-Type": "text/html"})
    with pytest.raises(BadResponse) as caught:
        transport(scripted.url).send(GET)
    assert caught.value.exit_code == 3 and "HTML page" in caught.value.message


def test_redirects_are_not_followed(scripted):
    scripted.add(301, raw=b"", headers={"Location": "https://docs.example/"})
    with pytest.raises(BadResponse) as caught:
        transport(scripted.url).send(SUBMIT)
    assert "redirected" in caught.value.message and len(scripted.requests) == 1


def test_deadline_bounds_each_call(scripted):
    scripted.add(200, OK, delay=2.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        transport(scripted.url, timeout=30, clock=time.monotonic).send(GET, deadline=time.monotonic() + 0.3)
    assert time.monotonic() - started < 1.0


def test_user_agent(scripted):
    scripted.add(200, OK)
    transport(scripted.url).send(GET)
    assert scripted.requests[0]["headers"]["User-Agent"].startswith("kling-cli/")


def _tls_server(tmp_path, body: bytes):
    """A loopback HTTPS server with a throwaway self-signed certificate; returns (url, cert path, stop)."""
    import shutil
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"https://127.0.0.1:{httpd.server_address[1]}", cert, httpd


def test_https_is_verified_with_the_lazily_loaded_context(tmp_path, monkeypatch):
    import kling_cli.transport as transport_module

    url, cert, httpd = _tls_server(tmp_path, json.dumps(OK).encode())
    try:
        monkeypatch.setattr(transport_module, "_tls", None)
        with pytest.raises(ProviderUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            transport(url, retries=0).send(GET)  # an unknown certificate is refused
        monkeypatch.setattr(transport_module, "_tls", None)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert transport(url).send(GET).payload["code"] == 0  # trusted through SSL_CERT_FILE, as httpx does
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    "status,raw",
    [(200, b'{"code": 1399, "message": "account frozen", "data": null}'), (200, b"<html>welcome</html>")],
)
def test_an_unreadable_2xx_answer_to_a_submit_is_uncertain_not_refused(scripted, status, raw):
    scripted.add(status, raw=raw)
    with pytest.raises(SubmitUncertain):
        transport(scripted.url).send(SUBMIT)
    assert len(scripted.requests) == 1


def test_loopback_is_never_sent_through_a_proxy(scripted, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.255.255.1:3128")
    scripted.add(200, OK)
    assert transport(scripted.url, timeout=2).send(GET).status == 200
