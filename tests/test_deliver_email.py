"""send_email against a real aiosmtpd server on 127.0.0.1: plain, with login, STARTTLS and SSL
(a certificate made by openssl), refusals and an unreachable server; SmtpTarget URL parsing."""

from __future__ import annotations

import email
import email.message
import email.policy
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from skymix.deliver.email import SmtpTarget, message_for, send_email
from skymix.errors import OptionsError
from tls_tools import self_signed

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

PASSWORD = "s3cr3t-Smtp-Passw0rd-WQON"
USER = "mailer"
LINK = "https://store.example.com/acme/r1/01J0.mp4?X-Amz-Signature=abc&X-Amz-Expires=3600"
PAYLOAD: dict[str, object] = {
    "app_id": "acme-support",
    "room": "r1",
    "recording_id": "01JABCDEF",
    "state": "LINK",
    "url": LINK,
    "url_expires_at": "2026-12-14T02:00:00Z",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Inbox:
    """What the server received: (sender, recipients, parsed message) per mail."""

    mails: list[tuple[str, list[str], email.message.EmailMessage]] = field(default_factory=list)
    logins: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    async def handle_RCPT(  # noqa: N802
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@dataclass
class Server:
    inbox: Inbox
    port: int


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), "DNS:localhost,IP:127.0.0.1")


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == USER.encode()
    ok = ok and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


def start(handler: Inbox, **kwargs: Any) -> Iterator[Server]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield Server(handler, port)
    finally:
        controller.stop()


@pytest.fixture
def plain_server() -> Iterator[Server]:
    yield from start(Inbox())


@pytest.fixture
def login_server() -> Iterator[Server]:
    yield from start(
        Inbox(), authenticator=authenticate, auth_required=True, auth_require_tls=False
    )


def parts_of(message: email.message.EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def test_message_for_a_link() -> None:
    parts = message_for(PAYLOAD)
    assert "r1" in parts.subject and "01JABCDEF" in parts.subject
    assert LINK in parts.text and "2026-12-14T02:00:00Z" in parts.text
    assert 'href="https://store.example.com/acme/r1/01J0.mp4?X-Amz-Signature=abc&amp;' in parts.html


def test_message_for_an_error_escapes_and_keeps_headers_on_one_line() -> None:
    parts = message_for(
        {
            "room": "evil\r\nBcc: victim@example.com",
            "recording_id": "01JX",
            "state": "ERROR",
            "error": {"code": "delivery_failed", "message": "<b>bucket</b> missing"},
        }
    )
    assert "\n" not in parts.subject and "\r" not in parts.subject and "failed" in parts.subject
    assert "&lt;b&gt;bucket&lt;/b&gt; missing (delivery_failed)" in parts.html
    assert "Download" not in parts.text


def test_plain_delivery_with_the_link(
    plain_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    parts = message_for(PAYLOAD)
    target = SmtpTarget.from_url(f"smtp://127.0.0.1:{plain_server.port}")
    result = send_email(
        target,
        "rec@skymix.test",
        ["ops@example.com", "dev@example.com"],
        parts.subject,
        parts.text,
        parts.html,
    )
    assert result.sent and result.reason is None
    assert result.accepted == ("ops@example.com", "dev@example.com")
    [(sender, recipients, message)] = plain_server.inbox.mails
    assert sender == "rec@skymix.test" and recipients == ["ops@example.com", "dev@example.com"]
    assert message["Subject"] == parts.subject
    text, html = parts_of(message)
    assert LINK in text and LINK.replace("&", "&amp;") in html


def test_login_then_delivery(login_server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    target = SmtpTarget.from_url(f"smtp://{USER}:{PASSWORD}@127.0.0.1:{login_server.port}")
    parts = message_for(PAYLOAD)
    result = send_email(target, "rec@skymix.test", ["ops@example.com"], parts.subject, parts.text)
    assert result.sent
    [(_, _, message)] = login_server.inbox.mails
    assert LINK in str(message.get_content())
    assert PASSWORD not in repr(target) + repr(result) + caplog.text


def test_a_wrong_password_is_a_failed_result(
    login_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = PASSWORD + "x"
    target = SmtpTarget("127.0.0.1", login_server.port, USER, wrong)
    result = send_email(target, "rec@skymix.test", ["ops@example.com"], "s", "t")
    assert result.failed and login_server.inbox.mails == []
    assert result.reason is not None and "refused the login of 'mailer'" in result.reason
    assert wrong not in repr(result) + str(result) + caplog.text + repr(target)


def test_no_login_where_the_server_requires_one(login_server: Server) -> None:
    target = SmtpTarget("127.0.0.1", login_server.port)
    result = send_email(target, "rec@skymix.test", ["ops@example.com"], "s", "t")
    assert result.failed and result.reason is not None and "530" in result.reason


def test_starttls_with_login(certificate: tuple[Path, Path]) -> None:
    for server in start(
        Inbox(),
        tls_context=server_context(certificate),
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    ):
        target = SmtpTarget.from_url(f"smtp://{USER}:{PASSWORD}@localhost:{server.port}?starttls=1")
        result = send_email(
            target,
            "rec@skymix.test",
            ["ops@example.com"],
            "s",
            "t " + LINK,
            ssl_context=client_context(certificate),
        )
        assert result.sent, result.reason
        assert LINK in str(server.inbox.mails[0][2].get_content())


def test_starttls_with_an_untrusted_certificate_fails(certificate: tuple[Path, Path]) -> None:
    for server in start(Inbox(), tls_context=server_context(certificate), require_starttls=True):
        target = SmtpTarget("localhost", server.port, starttls=True)
        result = send_email(target, "rec@skymix.test", ["ops@example.com"], "s", "t")
        assert result.failed and result.reason is not None
        assert "SSLCertVerificationError" in result.reason and server.inbox.mails == []


def test_ssl_from_the_start(certificate: tuple[Path, Path]) -> None:
    for server in start(Inbox(), ssl_context=server_context(certificate)):
        target = SmtpTarget.from_url(f"smtps://localhost:{server.port}")
        assert target.ssl and not target.starttls
        result = send_email(
            target,
            "rec@skymix.test",
            ["ops@example.com"],
            "s",
            "t",
            ssl_context=client_context(certificate),
        )
        assert result.sent, result.reason
        assert len(server.inbox.mails) == 1


def test_refused_recipients_are_recorded(plain_server: Server) -> None:
    target = SmtpTarget("127.0.0.1", plain_server.port)
    some = send_email(target, "rec@skymix.test", ["ops@example.com", "nobody@x.test"], "s", "t")
    assert some.sent and some.accepted == ("ops@example.com",)
    assert some.refused == {"nobody@x.test": "550 no such user"}
    none = send_email(target, "rec@skymix.test", ["nobody@x.test"], "s", "t")
    assert none.failed and none.refused == {"nobody@x.test": "550 no such user"}


def test_an_unreachable_server_is_recorded_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    target = SmtpTarget.from_url(f"smtp://{USER}:{PASSWORD}@127.0.0.1:{free_port()}?timeout=2")
    result = send_email(target, "rec@skymix.test", ["ops@example.com"], "s", "t")
    assert result.failed and result.accepted == ()
    assert result.reason is not None and "ConnectionRefusedError" in result.reason
    assert f"127.0.0.1:{target.port}" in result.reason
    assert PASSWORD not in repr(result) + caplog.text


def test_no_recipients() -> None:
    result = send_email(SmtpTarget("127.0.0.1", 25), "a@b.test", [], "s", "t")
    assert result.failed and result.reason == "no recipients"


def test_smtp_url_parsing() -> None:
    target = SmtpTarget.from_url("smtp://us%40er:p%3Ass-word-1234@mail.example.com?starttls=1")
    assert (target.host, target.port, target.user, target.password) == (
        "mail.example.com",
        587,
        "us@er",
        "p:ss-word-1234",
    )
    assert target.starttls and not target.ssl and target.timeout_s == 30.0
    for shown in (repr(target), str(target)):
        assert "p:ss-word-1234" not in shown and "password='****1234'" in shown
    assert SmtpTarget.from_url("smtp://mail.example.com").port == 25
    assert SmtpTarget.from_url(" smtp://mail.example.com/ ").host == "mail.example.com"
    assert SmtpTarget.from_url("smtps://u:pw@mail.example.com").port == 465
    assert "password='****'" in repr(SmtpTarget.from_url("smtps://u:pw@mail.example.com"))
    assert SmtpTarget.from_url("smtp://mail.example.com:2525?starttls=0").port == 2525
    assert SmtpTarget.from_url("smtp://mail?timeout=2.5&starttls=1").timeout_s == 2.5


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://u:hunter2hunter2@host", "expected an smtp:// or smtps:// URL"),
        ("smtp://u:hunter2hunter2@:25", "the URL names no host"),
        ("smtp://u:hunter2hunter2@host:99999", "not a URL with a valid host and port"),
        ("smtp://u:hunter2hunter2@host:0", "port 0 is out of range"),
        ("smtp://u:hunter2hunter2@host/inbox", "the URL must not have a path or fragment"),
        ("smtp://u:hunter2hunter2@host#x", "the URL must not have a path or fragment"),
        ("smtp://u:hunter2hunter2@host?tls=1", "the query parameters are starttls=0 or 1"),
        ("smtp://u:hunter2hunter2@host?starttls=yes", "the query parameters are starttls=0 or 1"),
        ("smtp://u:hunter2hunter2@host?timeout=soon", "timeout must be a positive number"),
        ("smtp://u:hunter2hunter2@host?timeout=-1", "timeout must be a positive number"),
        ("smtp://u:hunter2hunter2@host?timeout=inf", "timeout must be a positive number"),
        ("smtps://u:hunter2hunter2@host?starttls=1", "starttls=1 contradicts it"),
        ("smtp://:hunter2hunter2@host", "a password needs a user name"),
        ("smtp://u@host", "a user name needs a password"),
        ("smtp://u:@host", "a user name needs a password"),
    ],
)
def test_bad_smtp_urls(url: str, message: str) -> None:
    with pytest.raises(OptionsError, match=message) as caught:
        SmtpTarget.from_url(url, field="smtp.url")
    assert caught.value.field == "smtp.url" and str(caught.value).startswith("smtp.url: ")
    assert "hunter2hunter2" not in str(caught.value) + repr(caught.value)
    assert caught.value.__context__ is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"host": ""}, "smtp.host"),
        ({"port": 0}, "smtp.port"),
        ({"ssl": True, "starttls": True}, "smtp.starttls"),
        ({"user": "u"}, "smtp.user"),
        ({"password": "hunter2hunter2"}, "smtp.user"),
        ({"timeout_s": 0.0}, "smtp.timeout_s"),
    ],
)
def test_a_target_built_directly_is_checked_too(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OptionsError) as caught:
        SmtpTarget(**{"host": "mail", "port": 25, **kwargs})
    assert caught.value.field == field
    assert "hunter2hunter2" not in str(caught.value)


def test_the_message_says_when_a_backup_took_the_file():
    backup = message_for({"room": "r", "recording_id": "1", "state": "LINK", "url": "https://x/y",
                          "stored_in": "backup"})  # fmt: skip
    assert "Stored in: the backup bucket" in backup.text
    primary = message_for({"room": "r", "recording_id": "1", "state": "LINK", "url": "https://x/y",
                           "stored_in": "primary"})  # fmt: skip
    assert "Stored in" not in primary.text
