"""send_webhook against a real HTTP receiver on 127.0.0.1 that verifies signatures with the
standardwebhooks package; retries, Retry-After, redirects, a silent receiver and the SSRF guard."""

from __future__ import annotations

import base64
import email.utils
import http.server
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import standardwebhooks

from skymix.deliver.webhook import (
    ALLOW_PRIVATE_ENV,
    WebhookAttempt,
    is_forbidden_address,
    send_webhook,
)
from skymix.errors import OptionsError
from tls_tools import self_signed

SECRET = "whsec_" + base64.b64encode(b"skymix-test-webhook-secret-0123").decode()
PAYLOAD = {"app_id": "acme", "room": "r1", "recording_id": "01J0", "state": "LINK", "seq": 1}


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1 answering scripted statuses and recording what it got."""

    statuses: list[tuple[int, dict[str, str]]]
    received: list[tuple[dict[str, str], bytes, float]] = field(default_factory=list)
    verified: list[object] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/recordings"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(None)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), "DNS:localhost")


def serve(tls: tuple[Path, Path] | None) -> Iterator[Receiver]:
    state = Receiver(statuses=[])
    verifier = standardwebhooks.Webhook(SECRET)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k: v for k, v in self.headers.items()}
            state.received.append((headers, body, time.monotonic()))
            try:
                state.verified.append(verifier.verify(body, headers))
            except standardwebhooks.WebhookVerificationError:
                status, extra = 401, {}
            else:
                status, extra = state.statuses.pop(0) if state.statuses else (200, {})
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _no_env_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)


def assert_no_secret(*texts: object) -> None:
    raw = SECRET.removeprefix("whsec_")
    for text in texts:
        assert raw not in str(text) and SECRET not in str(text)


def test_delivered_and_signature_verifies(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[WebhookAttempt] = []
    result = send_webhook(receiver.url, SECRET, PAYLOAD, allow_private=True, on_attempt=seen.append)
    assert result.delivered and not result.failed and result.status == 200
    assert receiver.verified == [PAYLOAD]
    headers = receiver.received[0][0]
    assert headers["webhook-id"] == result.webhook_id and result.webhook_id.startswith("msg_")
    assert headers["Content-Type"] == "application/json"
    assert [a.outcome for a in seen] == ["delivered"] and seen[0].address == "127.0.0.1"
    assert_no_secret(result, repr(result), caplog.text)


def test_a_wrong_secret_fails_verification(receiver: Receiver) -> None:
    other = "whsec_" + base64.b64encode(b"another-secret-entirely-000000").decode()
    result = send_webhook(receiver.url, other, PAYLOAD, allow_private=True)
    assert result.failed and result.status == 401 and len(receiver.received) == 1
    assert receiver.verified == []
    headers, body, _ = receiver.received[0]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(body, headers)


def test_500_twice_then_200_delivers_once_with_one_webhook_id(receiver: Receiver) -> None:
    receiver.statuses = [(500, {}), (503, {})]
    seen: list[WebhookAttempt] = []
    result = send_webhook(
        receiver.url,
        SECRET,
        PAYLOAD,
        webhook_id="msg_fixed",
        backoff_s=0.05,
        allow_private=True,
        on_attempt=seen.append,
    )
    assert result.delivered and len(result.attempts) == 3
    assert [a.outcome for a in seen] == ["retry", "retry", "delivered"]
    assert [a.status for a in seen] == [500, 503, 200]
    assert {h["webhook-id"] for h, _, _ in receiver.received} == {"msg_fixed"}
    assert len(receiver.verified) == 3  # every try signed and verifiable
    assert seen[0].retry_in_s is not None and 0.025 <= seen[0].retry_in_s <= 0.05
    assert seen[1].retry_in_s is not None and 0.05 <= seen[1].retry_in_s <= 0.1


def test_429_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.statuses = [(429, {"Retry-After": "1"})]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, backoff_s=0.01, allow_private=True)
    assert result.delivered and [a.status for a in result.attempts] == [429, 200]
    assert result.attempts[0].retry_in_s == 1.0
    first, second = receiver.received[0][2], receiver.received[1][2]
    assert second - first >= 0.95


def test_retry_after_as_an_http_date(receiver: Receiver) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    receiver.statuses = [(503, {"Retry-After": when})]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, backoff_s=0.01, allow_private=True)
    assert result.delivered
    wait = result.attempts[0].retry_in_s
    assert wait is not None and 0.9 <= wait <= 2.0


def test_retry_after_is_capped(receiver: Receiver) -> None:
    receiver.statuses = [(429, {"Retry-After": "3600"})]
    result = send_webhook(
        receiver.url, SECRET, PAYLOAD, backoff_s=0.01, retry_after_cap_s=0.2, allow_private=True
    )
    assert result.delivered and result.attempts[0].retry_in_s == pytest.approx(0.2)


def test_400_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [(400, {})]
    seen: list[WebhookAttempt] = []
    result = send_webhook(receiver.url, SECRET, PAYLOAD, allow_private=True, on_attempt=seen.append)
    assert result.failed and result.status == 400 and len(receiver.received) == 1
    assert result.reason is not None and "answered 400" in result.reason
    assert [a.outcome for a in seen] == ["failed"]


def test_302_is_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [(302, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"})]
    result = send_webhook(receiver.url, SECRET, PAYLOAD, allow_private=True)
    assert result.failed and result.status == 302 and len(receiver.received) == 1
    assert result.reason is not None and "redirects are not followed" in result.reason


def test_tries_are_bounded(receiver: Receiver) -> None:
    receiver.statuses = [(502, {})] * 10
    result = send_webhook(
        receiver.url, SECRET, PAYLOAD, max_tries=3, backoff_s=0.01, allow_private=True
    )
    assert result.failed and len(receiver.received) == 3 and result.status == 502
    assert [a.outcome for a in result.attempts] == ["retry", "retry", "failed"]


def test_a_receiver_that_never_answers_is_bounded_by_total_time() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        began = time.monotonic()
        result = send_webhook(
            url, SECRET, PAYLOAD, timeout=0.3, max_total_s=1.0, backoff_s=0.05, allow_private=True
        )
        took = time.monotonic() - began
    finally:
        stop.set()
        thread.join(5)
        for sock in accepted:
            sock.close()
        listener.close()
    assert result.failed and result.status is None
    assert took < 1.6
    assert len(result.attempts) >= 2
    assert all(a.reason is not None and "timed out" in a.reason for a in result.attempts)


def test_a_receiver_dripping_its_answer_is_cut_at_the_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drip() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                while not stop.wait(0.05):
                    try:
                        conn.sendall(b"X")
                    except OSError:
                        break

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        began = time.monotonic()
        result = send_webhook(
            url, SECRET, PAYLOAD, timeout=0.4, max_total_s=0.7, backoff_s=0.05, allow_private=True
        )
        took = time.monotonic() - began
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert result.failed and took < 1.2
    assert result.reason is not None and "timed out" in result.reason


def test_a_closed_port_is_a_connection_error_and_retried() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = send_webhook(
        f"http://127.0.0.1:{port}/",
        SECRET,
        PAYLOAD,
        max_tries=2,
        backoff_s=0.01,
        allow_private=True,
    )
    assert result.failed and len(result.attempts) == 2
    assert result.reason is not None and "ConnectionRefusedError" in result.reason


def test_loopback_ip_refused_without_allowance(receiver: Receiver) -> None:
    seen: list[WebhookAttempt] = []
    result = send_webhook(receiver.url, SECRET, PAYLOAD, on_attempt=seen.append)
    assert result.failed and receiver.received == []
    assert result.reason is not None and "refused" in result.reason
    assert [a.outcome for a in seen] == ["failed"]  # a refusal is not retried


def test_a_hostname_resolving_to_loopback_is_refused(receiver: Receiver) -> None:
    url = f"http://localhost:{receiver.port}/hooks"
    result = send_webhook(url, SECRET, PAYLOAD)
    assert result.failed and receiver.received == []
    assert result.reason is not None and "localhost resolves to" in result.reason


def test_the_environment_allowance(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    result = send_webhook(f"http://localhost:{receiver.port}/hooks", SECRET, PAYLOAD)
    assert result.delivered and receiver.received[0][0]["Host"] == f"localhost:{receiver.port}"


def test_https_to_the_vetted_address_checks_the_host_name(
    certificate: tuple[Path, Path],
) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    for server in serve(certificate):
        url = f"https://localhost:{server.port}/hooks"
        result = send_webhook(url, SECRET, PAYLOAD, allow_private=True, ssl_context=trusted)
        assert result.delivered, result.reason
        assert server.verified == [PAYLOAD]
        assert server.received[0][0]["Host"] == f"localhost:{server.port}"
        # the certificate names localhost, not 127.0.0.1: the name checked is the URL's host
        by_ip = send_webhook(
            f"https://127.0.0.1:{server.port}/hooks",
            SECRET,
            PAYLOAD,
            max_tries=1,
            allow_private=True,
            ssl_context=trusted,
        )
        assert by_ip.failed and by_ip.reason is not None and "certificate" in by_ip.reason
        untrusted = send_webhook(url, SECRET, PAYLOAD, allow_private=True)
        assert untrusted.failed and len(untrusted.attempts) == 1  # not worth retrying
        assert len(server.received) == 1


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        (str(ipaddress.IPv4Address(0)), True),  # unspecified
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        (str(ipaddress.IPv6Address(0)), True),  # unspecified
        ("fe80::1", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_forbidden_addresses(address: str, forbidden: bool) -> None:
    assert is_forbidden_address(ipaddress.ip_address(address)) is forbidden


def test_bad_urls_and_secrets_fail_without_raising_or_showing_the_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for url in ("ftp://example.com/x", "http:///nohost", "http://example.com:99999999/"):
        result = send_webhook(url, SECRET, PAYLOAD)
        assert result.failed and result.attempts == ()
    empty = send_webhook("https://example.com/", "whsec_", PAYLOAD)
    assert empty.failed and empty.reason is not None and "not a Standard" in empty.reason
    bad = send_webhook("https://example.com/", "whsec_not base64!!", PAYLOAD)
    assert bad.failed and bad.reason is not None and "not a Standard Webhooks secret" in bad.reason
    assert "not base64" not in caplog.text + repr(bad)


def test_credentials_in_the_url_never_show(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://user:hunter2pass@127.0.0.1:{port}/p?token=tok3nvalue"
    result = send_webhook(url, SECRET, PAYLOAD, max_tries=1, allow_private=True)
    assert result.failed
    for text in (repr(result), caplog.text):
        assert "hunter2pass" not in text and "tok3nvalue" not in text


def test_arguments_out_of_range_raise() -> None:
    with pytest.raises(OptionsError, match="max_tries"):
        send_webhook("https://example.com/", SECRET, PAYLOAD, max_tries=0)
    with pytest.raises(OptionsError, match="max_total_s"):
        send_webhook("https://example.com/", SECRET, PAYLOAD, max_total_s=0)
