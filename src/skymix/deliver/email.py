"""E-mail announcing a recording, over the operator's SMTP server (plain, STARTTLS or SSL).

The server is the operator's, named by one URL (``smtp://user:pass@host:587?starttls=1`` or
``smtps://user:pass@host``, as ``SKYMIX_SMTP_URL`` holds it); ``SmtpTarget.from_url`` is the one
parser of it (``SmtpSettings.from_env`` uses it) and the target shows its password masked.
``message_for`` turns a notification payload into subject, text and HTML (room and recording id
in the subject, the link in both bodies); ``send_email`` sends it.

A server that cannot be reached, refuses the login or the recipients gives a failed
``EmailResult`` with the reason, never an exception: a lost e-mail must not lose the recording.
The password never reaches a result, a reason, a repr or a log line.
"""

from __future__ import annotations

import email.message
import email.utils
import html
import logging
import math
import re
import smtplib
import socket
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from skymix.errors import OptionsError

__all__ = ["EmailMessageParts", "EmailResult", "SmtpTarget", "message_for", "send_email"]

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _mask(secret: str | None) -> str | None:
    """A secret as reprs show it: its last four characters, and only when it is long."""
    if secret is None:
        return None
    return f"****{secret[-4:]}" if len(secret) >= 12 else "****"


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """The operator's SMTP server: where, how (``ssl`` from the start or ``starttls``), who.

    ``user`` and ``password`` are both given or both absent; repr and str show the password as
    ``****`` and its last 4 characters, or ``****`` alone when it is shorter than 12.
    """

    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.host:
            raise OptionsError("the SMTP server needs a host", field="smtp.host")
        if not 0 < self.port < 65536:
            raise OptionsError(f"port {self.port} is out of range", field="smtp.port")
        if self.ssl and self.starttls:
            raise OptionsError(
                "choose SSL from the start (smtps) or STARTTLS, not both", field="smtp.starttls"
            )
        if (self.user is None) != (self.password is None):
            raise OptionsError("a user needs a password and a password a user", field="smtp.user")
        if not self.timeout_s > 0:
            raise OptionsError(f"must be positive, got {self.timeout_s}", field="smtp.timeout_s")

    def __repr__(self) -> str:
        return (
            f"SmtpTarget(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"password={_mask(self.password)!r}, starttls={self.starttls}, ssl={self.ssl}, "
            f"timeout_s={self.timeout_s})"
        )

    @classmethod
    def from_url(cls, url: str, *, field: str = "smtp_url") -> SmtpTarget:
        """The server of ``smtp://[user:password@]host[:port][?starttls=1][&timeout=S]`` or
        ``smtps://...`` (SSL from the start, so no ``starttls=1``).

        User and password are percent-decoded and come together. Default ports: 25 (smtp), 587
        (smtp with STARTTLS), 465 (smtps). A path, a fragment or another query parameter is
        refused. Each problem is an OptionsError naming ``field`` (the variable or setting that
        held the URL); none repeats the URL, which holds the password.
        """
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError:
            parts = None
        if parts is None:  # raised out of the handler: urllib's error may quote the URL
            raise OptionsError("not a URL with a valid host and port", field=field)
        if parts.scheme not in ("smtp", "smtps"):
            raise OptionsError("expected an smtp:// or smtps:// URL", field=field)
        if not parts.hostname:
            raise OptionsError("the URL names no host", field=field)
        if port == 0:
            raise OptionsError("port 0 is out of range", field=field)
        if parts.path not in ("", "/") or parts.fragment:
            raise OptionsError("the URL must not have a path or fragment", field=field)
        starttls, timeout_s = False, 30.0
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if name == "starttls" and value in ("0", "1"):
                starttls = value == "1"
            elif name == "timeout":
                timeout_s = _seconds(value, field)
            else:
                raise OptionsError(
                    "the query parameters are starttls=0 or 1 and timeout=seconds", field=field
                )
        is_ssl = parts.scheme == "smtps"
        if starttls and is_ssl:
            raise OptionsError(
                "smtps:// is SSL from the start: starttls=1 contradicts it", field=field
            )
        user = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        if password is not None and user is None:
            raise OptionsError("a password needs a user name", field=field)
        if user is not None and password is None:
            raise OptionsError("a user name needs a password", field=field)
        return cls(
            host=parts.hostname,
            port=port or (465 if is_ssl else 587 if starttls else 25),
            user=user,
            password=password,
            starttls=starttls,
            ssl=is_ssl,
            timeout_s=timeout_s,
        )


def _seconds(value: str, field: str) -> float:
    """A URL's ``timeout``: a positive, finite number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise OptionsError("timeout must be a positive number of seconds", field=field)
    return seconds


@dataclass(frozen=True, slots=True)
class EmailMessageParts:
    """Subject, plain text and HTML of one notification e-mail."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class EmailResult:
    """What became of an e-mail: sent or not, who the server accepted and refused, and why.

    ``sent`` is true when the server accepted at least one recipient; ``refused`` maps each
    refused recipient to the server's answer.
    """

    sent: bool
    accepted: tuple[str, ...]
    refused: Mapping[str, str]
    reason: str | None

    @property
    def failed(self) -> bool:
        """True when nobody will get the e-mail."""
        return not self.sent


def _one_line(value: object) -> str:
    """A value fit for a header: control characters (line breaks) folded to one space."""
    return _CONTROL.sub(" ", str(value)).strip()


_STORED_IN = {
    "backup": "the backup bucket (the application's bucket failed)",
    "backup_folder": "the operator's backup folder, to be delivered later",
}


def message_for(payload: Mapping[str, object]) -> EmailMessageParts:
    """The e-mail announcing a recording, from its notification payload.

    Reads ``app_id``, ``room``, ``recording_id``, ``state`` (LINK or ERROR), ``url`` and
    ``url_expires_at`` (the download link and when it stops working), ``stored_in`` (said when
    a backup took the file), and ``error`` (a string, or a mapping with ``code`` and
    ``message``). Missing fields are left out.
    """
    room = _one_line(payload.get("room") or "(no room)")
    recording_id = _one_line(payload.get("recording_id") or "(no id)")
    app_id = payload.get("app_id")
    state = _one_line(payload.get("state") or "").upper()
    url = payload.get("url")
    expires = payload.get("url_expires_at")
    error = payload.get("error")
    if isinstance(error, Mapping):
        code, text = error.get("code"), error.get("message")
        error = f"{text} ({code})" if code and text else text or code
    if state == "ERROR":
        headline = "failed"
    elif url:
        headline = "is ready"
    else:
        headline = f"is {state.lower() or 'updated'}"
    subject = _one_line(f"Recording {headline}: room {room}, recording {recording_id}")

    lines: list[tuple[str, str]] = []
    if app_id:
        lines.append(("Application", str(app_id)))
    lines += [("Room", room), ("Recording", recording_id)]
    if state:
        lines.append(("State", state))
    if url:
        lines.append(("Download", str(url)))
    if url and expires:
        lines.append(("Link expires", str(expires)))
    stored_in = payload.get("stored_in")
    if stored_in in _STORED_IN:
        lines.append(("Stored in", _STORED_IN[str(stored_in)]))
    if error:
        lines.append(("Error", str(error)))
    text = f"The recording of room {room} {headline}.\n\n" + "".join(
        f"{name}: {value}\n" for name, value in lines
    )
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>"
        + (
            f'<a href="{html.escape(value)}">{html.escape(value)}</a>'
            if name == "Download"
            else html.escape(value)
        )
        + "</td></tr>\n"
        for name, value in lines
    )
    body = (
        "<!DOCTYPE html>\n<html><body>\n"
        f"<p>The recording of room {html.escape(room)} {html.escape(headline)}.</p>\n"
        f"<table>\n{rows}</table>\n</body></html>\n"
    )
    return EmailMessageParts(subject, text, body)


def _build(
    sender: str, recipients: Sequence[str], subject: str, text: str, html_body: str | None
) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = _one_line(sender)
    message["To"] = ", ".join(_one_line(r) for r in recipients)
    message["Subject"] = _one_line(subject)
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain="skymix")
    message.set_content(text)
    if html_body is not None:
        message.add_alternative(html_body, subtype="html")
    return message


def _reason(exc: BaseException, target: SmtpTarget) -> str:
    """Why sending failed, naming the server but never the password."""
    where = f"SMTP server {target.host}:{target.port}"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"{where} refused the login of {target.user!r} ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{where} answered {_answer(exc.smtp_code, exc.smtp_error)}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"{where} timed out"
    if isinstance(exc, socket.gaierror):
        return f"{where}: name resolution failed: {exc.strerror or exc}"
    return f"{where}: {type(exc).__name__}: {_one_line(exc)}"


def send_email(
    target: SmtpTarget,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    text: str,
    html_body: str | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> EmailResult:
    """Send one e-mail (text, plus HTML when given) to ``recipients`` through ``target``.

    Never raises for the server's or the network's fault: the result says what happened.
    ``ssl_context`` checks the server's certificate (the system's trust store by default).
    """
    if not recipients:
        return EmailResult(False, (), {}, "no recipients")
    context = ssl_context or ssl.create_default_context()
    client: smtplib.SMTP | None = None
    try:
        message = _build(sender, recipients, subject, text, html_body)
        if target.ssl:
            client = smtplib.SMTP_SSL(
                target.host, target.port, timeout=target.timeout_s, context=context
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=target.timeout_s)
        client.ehlo()
        if target.starttls:
            client.starttls(context=context)
            client.ehlo()
        if target.user is not None and target.password is not None:
            client.login(target.user, target.password)
        refused_raw = client.send_message(message, from_addr=sender, to_addrs=list(recipients))
    except smtplib.SMTPRecipientsRefused as exc:
        refused = {r: _answer(code, text) for r, (code, text) in exc.recipients.items()}
        reason = f"SMTP server {target.host}:{target.port} refused every recipient"
        log.warning("e-mail %r not sent: %s", _one_line(subject), reason)
        return EmailResult(False, (), refused, reason)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        reason = _reason(exc, target)
        log.warning("e-mail %r not sent: %s", _one_line(subject), reason)
        return EmailResult(False, (), {}, reason)
    finally:
        if client is not None:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()
    refused = {r: _answer(code, text) for r, (code, text) in refused_raw.items()}
    accepted = tuple(r for r in recipients if r not in refused)
    log.info("e-mail %r sent to %d recipient(s)", _one_line(subject), len(accepted))
    partly = f"refused {len(refused)} recipient(s)" if refused else None
    return EmailResult(True, accepted, refused, partly)


def _answer(code: int, text: bytes | str) -> str:
    """An SMTP answer as one line: ``550 no such user``."""
    message = text.decode(errors="replace") if isinstance(text, bytes) else text
    return f"{code} {_one_line(message)}"
