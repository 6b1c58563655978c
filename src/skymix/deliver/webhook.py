"""Signed webhook POSTs announcing a recording, with bounded retries and an SSRF guard.

The body is JSON signed as the Standard Webhooks specification says (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``: HMAC-SHA256 via ``standardwebhooks.Webhook.sign``),
so a receiver in any language checks it with an existing library. Each try is signed afresh (a
receiver rejects stale timestamps) under the same ``webhook-id``, which is the receiver's
idempotency key.

Retried: timeouts, connection errors, 408, 429 (its ``Retry-After`` honoured up to a cap) and 5xx,
with exponential backoff and jitter, bounded both in tries and in total time (every try's timeout
is cut to what is left). Not retried: other 4xx, a refused address, a certificate that does not
verify, and 3xx (redirects are never followed: a redirect could lead the POST past the address
guard).

The guard resolves the host, refuses loopback, link-local, private, multicast, unspecified and
reserved addresses (anything not globally routable), then connects to the vetted address itself
while the request keeps the original Host header and TLS server name. Checking the address actually
connected to, not a separate earlier lookup, closes the DNS-rebinding gap. ``allow_private`` or
``SKYMIX_ALLOW_PRIVATE_NOTIFY=1`` lifts it (tests and the demo on loopback).

A receiver's fault never raises: the result says failed and why. Secrets never reach a result, a
reason or a log line; URLs are shown without credentials or query.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import ipaddress
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import standardwebhooks
import standardwebhooks.webhooks
from ulid import ULID

from skymix.errors import OptionsError

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "WebhookAttempt",
    "WebhookResult",
    "check_notify_host",
    "is_forbidden_address",
    "send_webhook",
]

log = logging.getLogger(__name__)

ALLOW_PRIVATE_ENV = "SKYMIX_ALLOW_PRIVATE_NOTIFY"
_RETRY_STATUSES = frozenset({408, 429})

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class WebhookAttempt:
    """One try: its number (from 1), what came back, and whether another try follows.

    ``outcome`` is ``delivered``, ``retry`` (another try follows after ``retry_in_s``) or
    ``failed`` (the last try). ``address`` is the IP connected to, when a connection was made.
    """

    number: int
    webhook_id: str
    outcome: str
    status: int | None
    reason: str | None
    address: str | None
    elapsed_s: float
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """What became of a webhook: delivered or not, the last status, the reason, every attempt."""

    delivered: bool
    webhook_id: str
    status: int | None
    reason: str | None
    attempts: tuple[WebhookAttempt, ...]

    @property
    def failed(self) -> bool:
        """True when the receiver did not take the webhook."""
        return not self.delivered


class _Refused(Exception):
    """The host resolves only to addresses the guard refuses: not worth another try."""


@dataclass(frozen=True, slots=True)
class _Response:
    """What of an answer matters here (its body is never read)."""

    status: int
    phrase: str
    retry_after: str | None


def is_forbidden_address(address: IpAddress) -> bool:
    """Whether the guard refuses this address: loopback, link-local, private, multicast,
    unspecified, reserved, or otherwise not globally routable (shared 100.64/10, ULA, ...).

    IPv4 addresses mapped into IPv6 (``::ffff:127.0.0.1``) are judged as the IPv4 they carry.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        not address.is_global
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_unspecified
        or address.is_reserved
    )


def _resolve(host: str, port: int, allow_private: bool) -> list[IpAddress]:
    """The host's addresses the guard lets through, in resolver order; _Refused when none."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    allowed = [a for a in seen if allow_private or not is_forbidden_address(a)]
    if not allowed:
        raise _Refused(
            f"{host} resolves to a loopback, private or otherwise non-public address "
            f"({', '.join(str(a) for a in seen)}); refused"
        )
    return allowed


def check_notify_host(host: str, port: int, *, allow_private: bool = False) -> None:
    """OptionsError when the guard would refuse ``host``: it resolves only to loopback, private
    or otherwise non-public addresses, or not at all. For a notification URL when settings are
    stored (every send checks again: the answer can change). ``allow_private`` or
    ``SKYMIX_ALLOW_PRIVATE_NOTIFY=1`` lets any host through unresolved."""
    if allow_private or os.environ.get(ALLOW_PRIVATE_ENV) == "1":
        return
    try:
        _resolve(host, port, allow_private=False)
    except _Refused as exc:
        raise OptionsError(str(exc)) from None
    except (OSError, UnicodeError) as exc:
        raise OptionsError(f"{host}: {_describe(exc)}") from None


def _connect_vetted(
    addresses: list[IpAddress], port: int, timeout: float, allow_private: bool
) -> socket.socket:
    """A TCP connection to the first vetted address that answers, its peer checked again."""
    last: OSError | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((str(address), port), timeout=timeout)
        except OSError as exc:
            last = exc
            continue
        peer = ipaddress.ip_address(str(sock.getpeername()[0]).split("%", 1)[0])
        if not allow_private and is_forbidden_address(peer):
            sock.close()
            raise _Refused(f"connected to non-public address {peer}; refused")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    assert last is not None
    raise last


class _VettedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection that connects to a vetted address, keeping the original Host."""

    def __init__(
        self, host: str, port: int, timeout: float, addresses: list[IpAddress], allow: bool
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.vetted = addresses
        self.allow_private = allow
        self.connect_s = timeout

    def connect(self) -> None:
        """Connect to the vetted address instead of resolving the host again."""
        self.sock = _connect_vetted(self.vetted, self.port, self.connect_s, self.allow_private)


class _VettedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to a vetted address; the certificate is checked for the host name."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        addresses: list[IpAddress],
        allow: bool,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.vetted = addresses
        self.allow_private = allow
        self.tls_context = context
        self.connect_s = timeout

    def connect(self) -> None:
        """Connect to the vetted address, then TLS with the original host as server name."""
        sock = _connect_vetted(self.vetted, self.port, self.connect_s, self.allow_private)
        self.sock = sock  # the watchdog can cut a handshake that drags on
        self.sock = self.tls_context.wrap_socket(sock, server_hostname=self.host)


def _shown(url: urllib.parse.SplitResult) -> str:
    """The URL as logs and reasons show it: no credentials, no query, no fragment."""
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{host}{port}{url.path or '/'}"


def _retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def _describe(exc: BaseException) -> str:
    """A short reason for a failed try, from the exception's class and message."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror or exc}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def send_webhook(
    url: str,
    secret: str,
    payload: Mapping[str, object],
    *,
    webhook_id: str | None = None,
    timeout: float = 10.0,
    max_tries: int = 5,
    max_total_s: float = 60.0,
    backoff_s: float = 0.5,
    backoff_cap_s: float = 30.0,
    retry_after_cap_s: float = 60.0,
    allow_private: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    on_attempt: Callable[[WebhookAttempt], None] | None = None,
) -> WebhookResult:
    """POST ``payload`` as signed JSON to ``url``; retry what is worth retrying, within bounds.

    ``secret`` is a Standard Webhooks secret (``whsec_`` + base64). ``webhook_id`` is the same on
    every try (a new ``msg_<ULID>`` when not given). ``on_attempt`` hears every try's outcome, for
    the recording's event log. Raises only for arguments out of range (OptionsError); a URL,
    secret or receiver that cannot work gives a failed result with its reason.
    """
    for name, value in (
        ("timeout", timeout),
        ("max_total_s", max_total_s),
        ("backoff_s", backoff_s),
        ("backoff_cap_s", backoff_cap_s),
        ("retry_after_cap_s", retry_after_cap_s),
    ):
        if not value > 0:
            raise OptionsError(f"must be positive, got {value}", field=name)
    if max_tries < 1:
        raise OptionsError(f"must be at least 1, got {max_tries}", field="max_tries")
    msg_id = webhook_id or f"msg_{ULID()}"
    allow = allow_private or os.environ.get(ALLOW_PRIVATE_ENV) == "1"
    attempts: list[WebhookAttempt] = []

    def give_up(reason: str, status: int | None = None) -> WebhookResult:
        log.warning("webhook %s not delivered: %s", msg_id, reason)
        return WebhookResult(False, msg_id, status, reason, tuple(attempts))

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return give_up("the notification URL cannot be parsed")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return give_up("the notification URL must be http:// or https:// with a host")
    host = parts.hostname
    port = port or (443 if parts.scheme == "https" else 80)
    shown = _shown(parts)
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    try:
        signer = standardwebhooks.Webhook(secret)
    except (ValueError, RuntimeError, standardwebhooks.webhooks.EmptyWebhookSecretError):
        return give_up("the webhook secret is not a Standard Webhooks secret (whsec_ + base64)")
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    context = ssl_context or ssl.create_default_context()

    deadline = time.monotonic() + max_total_s
    for number in range(1, max_tries + 1):
        tried = time.monotonic()
        outcome = _try_once(
            parts.scheme,
            host,
            port,
            target,
            max(min(timeout, deadline - tried), 0.001),
            allow,
            context,
            _headers(signer, msg_id, body),
            body.encode(),
        )
        elapsed = time.monotonic() - tried
        if outcome.reason is None:
            attempt = WebhookAttempt(
                number, msg_id, "delivered", outcome.status, None, outcome.address, elapsed
            )
            attempts.append(attempt)
            if on_attempt is not None:
                on_attempt(attempt)
            log.info("webhook %s delivered to %s on try %d", msg_id, shown, number)
            return WebhookResult(True, msg_id, outcome.status, None, tuple(attempts))

        reason = f"{shown}: {outcome.reason}" if outcome.prefixed else outcome.reason
        wait: float | None = None
        if outcome.retryable and number < max_tries:
            wait = min(backoff_cap_s, backoff_s * 2 ** (number - 1)) * random.uniform(0.5, 1.0)
            if outcome.retry_after is not None:
                wait = max(wait, min(outcome.retry_after, retry_after_cap_s))
            if time.monotonic() + wait >= deadline:
                reason = f"{reason}; no time left for another try within {max_total_s:g} s"
                wait = None
        attempt = WebhookAttempt(
            number,
            msg_id,
            "retry" if wait is not None else "failed",
            outcome.status,
            reason,
            outcome.address,
            elapsed,
            wait,
        )
        attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)
        if wait is None:
            return give_up(reason, outcome.status)
        log.info("webhook %s try %d: %s; retrying in %.2f s", msg_id, number, reason, wait)
        time.sleep(wait)
    raise AssertionError("unreachable: the last try returns")


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One try's outcome: ``reason`` None when delivered; whether it is worth another try."""

    status: int | None
    reason: str | None
    retryable: bool
    address: str | None = None
    retry_after: float | None = None
    prefixed: bool = True


def _try_once(
    scheme: str,
    host: str,
    port: int,
    target: str,
    timeout: float,
    allow: bool,
    context: ssl.SSLContext,
    headers: dict[str, str],
    body: bytes,
) -> _Outcome:
    """Resolve and vet the host, POST once, and judge the answer."""
    try:
        addresses = _resolve(host, port, allow)
        response, address = _post(
            scheme, host, port, target, timeout, addresses, allow, context, headers, body
        )
    except _Refused as exc:
        return _Outcome(None, str(exc), retryable=False, prefixed=False)
    except ssl.SSLCertVerificationError as exc:
        return _Outcome(None, _describe(exc), retryable=False)
    except (OSError, http.client.HTTPException) as exc:
        return _Outcome(None, _describe(exc), retryable=True)
    status = response.status
    if 200 <= status < 300:
        return _Outcome(status, None, retryable=False, address=address)
    reason = f"answered {status} {response.phrase}".rstrip()
    if 300 <= status < 400:
        reason += " (redirects are not followed)"
    return _Outcome(
        status,
        reason,
        retryable=status in _RETRY_STATUSES or status >= 500,
        address=address,
        retry_after=_retry_after(response.retry_after),
    )


def _headers(signer: standardwebhooks.Webhook, msg_id: str, body: str) -> dict[str, str]:
    """The Standard Webhooks headers for one try, signed now."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "Content-Type": "application/json",
        "User-Agent": "skymix-webhook",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(msg_id, now, body),
    }


def _post(
    scheme: str,
    host: str,
    port: int,
    target: str,
    timeout: float,
    addresses: list[IpAddress],
    allow: bool,
    context: ssl.SSLContext,
    headers: dict[str, str],
    body: bytes,
) -> tuple[_Response, str | None]:
    """One POST over a connection to a vetted address; the answer and the address used.

    The answer's body is not read: only its status and Retry-After matter.
    """
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = _VettedHTTPSConnection(host, port, timeout, addresses, allow, context)
    else:
        connection = _VettedHTTPConnection(host, port, timeout, addresses, allow)
    watchdog = _Watchdog(connection, timeout)
    try:
        connection.request("POST", target, body=body, headers=headers)
        peer = connection.sock.getpeername()[0] if connection.sock is not None else None
        answer = connection.getresponse()
        if watchdog.fired:
            raise TimeoutError(f"no complete answer within {timeout:g} s")
        return _Response(answer.status, answer.reason, answer.getheader("Retry-After")), peer
    except (OSError, http.client.HTTPException) as exc:
        if watchdog.fired:
            raise TimeoutError(f"no answer within {timeout:g} s") from exc
        raise
    finally:
        watchdog.cancel()
        connection.close()


class _Watchdog:
    """Cuts a connection still busy after its time.

    Socket timeouts bound each read, not the whole answer: a receiver that drips its status line
    and headers a byte at a time would otherwise hold a try far past its timeout.
    """

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._connection = connection
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        self.fired = True
        sock = self._connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                log.debug("webhook connection already closed when its time ran out")

    def cancel(self) -> None:
        """Stop the timer: the try has ended."""
        self._timer.cancel()
