"""Recording settings: the issue's JSON document in and out, every problem named by its field,
secrets masked wherever they could show, safe object keys, and the operator's SMTP server."""

import base64
import json
import logging
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from skymix.deliver.email import SmtpTarget
from skymix.deliver.settings import (
    DEFAULT_KEY_TEMPLATE,
    RecordingSettings,
    Secret,
    SmtpSettings,
    render_key,
    safe_key_part,
)
from skymix.errors import OptionsError

S3_SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKWQON"
HOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
SMTP_PASSWORD = "correct-horse-battery-staple"


def document() -> dict:
    """The issue's example, with real-looking secrets."""
    return {
        "app_id": "acme-support",
        "recording_enabled": True,
        "storage": {
            "arn": "arn:aws:s3:us-west-2::skylink-recording/calls",
            "access_key_id": "KBCSAKIAIOSFODNN7",
            "secret_access_key": S3_SECRET,
            "endpoint_url": None,
            "key_template": "{app_id}/{room}/{recording_id}.mp4",
            "link_expiry_s": 604800,
        },
        "notifications": {
            "enabled": True,
            "url": "https://hooks.example.com/recordings",
            "secret": HOOK_SECRET,
            "emails": ["ops@example.com"],
        },
    }


def with_change(path: str, value: object) -> dict:
    """The example document with one property set (``value`` ... deletes it)."""
    doc = document()
    *parents, last = path.split(".")
    target = doc
    for name in parents:
        target = target[name]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return doc


def test_the_issue_document_round_trips_through_storage_json():
    settings = RecordingSettings.from_json(json.dumps(document()))
    assert settings.storage is not None
    assert settings.storage.secret_access_key.get_secret_value() == S3_SECRET
    assert settings.notifications.secret.get_secret_value() == HOOK_SECRET
    stored = settings.to_json(reveal=True)
    # the issue's document, and the storage fields it leaves at their defaults
    expected = document()
    expected["storage"] |= {"backup": None, "delete_local_after_upload": False}
    expected["limits"] = {"max_length_s": 14400, "empty_room_s": 60}
    assert stored == expected
    assert RecordingSettings.from_json(json.dumps(stored)) == settings


def test_storage_names_the_destination_and_the_object_key():
    storage = RecordingSettings.from_json(document()).storage
    assert storage.destination.bucket == "skylink-recording"
    assert storage.destination.region == "us-west-2"
    key = storage.object_key(app_id="acme-support", room="Room 1", recording_id="01JX")
    assert key == "calls/acme-support/Room_1/01JX.mp4"
    named = RecordingSettings.from_json(with_change("storage.arn", "s3://bkt/one/final.webm"))
    assert named.storage.object_key(app_id="a", room="r", recording_id="i") == "one/final.webm"


def test_defaults_when_only_the_app_id_is_given():
    settings = RecordingSettings.from_json({"app_id": "a"})
    assert settings.recording_enabled is True
    assert settings.storage is None
    assert not settings.notifications.enabled and settings.notifications.emails == []
    minimal = RecordingSettings.from_json({"app_id": "a", "storage": {"arn": "s3://bkt"}})
    assert minimal.storage.key_template == DEFAULT_KEY_TEMPLATE
    assert minimal.storage.link_expiry_s == 7 * 24 * 3600
    assert minimal.storage.access_key_id is None and minimal.storage.secret_access_key is None


def test_secrets_show_masked_in_repr_str_and_api_json(caplog):
    settings = RecordingSettings.from_json(document())
    shown = settings.to_json()
    assert shown["storage"]["secret_access_key"] == "****WQON"
    assert shown["notifications"]["secret"] == "****" + HOOK_SECRET[-4:]
    assert settings.to_json(reveal=False) == shown
    with caplog.at_level(logging.INFO):
        logging.getLogger("skymix.test").info("settings %s %r", settings, settings)
    texts = [repr(settings), str(settings), json.dumps(shown), caplog.text]
    texts.append(settings.model_dump_json())
    texts += [repr(settings.storage), str(settings.storage.secret_access_key)]
    for text in texts:
        assert S3_SECRET not in text and HOOK_SECRET not in text
        assert HOOK_SECRET.removeprefix("whsec_") not in text
    assert "Secret('****WQON')" in repr(settings)


def test_a_short_secret_shows_no_characters():
    assert repr(Secret("abcdefgh")) == "Secret('****')"
    assert str(Secret("abcdefghijkl")) == "****ijkl"


def test_a_masked_secret_sent_back_is_refused():
    masked = RecordingSettings.from_json(document()).to_json()
    with pytest.raises(OptionsError) as caught:
        RecordingSettings.from_json(masked)
    assert str(caught.value) == (
        "storage.secret_access_key: a masked secret (****...) cannot be stored: "
        "give the secret itself"
    )
    assert caught.value.field == "storage.secret_access_key"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("app_id", ..., "missing required property 'app_id'"),
        (
            "app_id",
            "",
            "app_id: expected 1 to 128 letters, digits, '.', '_' or '-', beginning "
            "with a letter or digit",
        ),
        (
            "app_id",
            "a/b",
            "app_id: expected 1 to 128 letters, digits, '.', '_' or '-', "
            "beginning with a letter or digit",
        ),
        ("app_id", 7, "app_id: expected a string, got 7"),
        ("recording_enabled", "yes", 'recording_enabled: expected true or false, got "yes"'),
        (
            "colour",
            "red",
            "colour: unknown property (expected one of app_id, recording_enabled, "
            "storage, notifications, limits)",
        ),
        (
            "storage.arn",
            "arn:aws:s3:::Bad_Bucket/x",
            "storage.arn: bad bucket name "
            "'Bad_Bucket': only lowercase letters, digits, dots and hyphens",
        ),
        (
            "storage.arn",
            "arn:aws:s3:us-west-2:123456789012:accesspoint/ap",
            "storage.arn: an "
            "access point ARN where a bucket is needed (expected arn:partition:s3:::bucket/prefix)",
        ),
        (
            "storage.arn",
            "/srv/recordings",
            "storage.arn: expected an S3 ARN or an s3:// URL, not a local path",
        ),
        ("storage.arn", ..., "storage: missing required property 'arn'"),
        (
            "storage.access_key_id",
            ...,
            "storage: give both access_key_id and "
            "secret_access_key, or neither (the default credential chain)",
        ),
        (
            "storage.secret_access_key",
            123456789012345,
            "storage.secret_access_key: expected a string",
        ),
        ("storage.secret_access_key", "", "storage.secret_access_key: expected a non-empty string"),
        (
            "storage.endpoint_url",
            "ftp://store:9000",
            "storage.endpoint_url: expected an http:// or https:// URL with a host for endpoint",
        ),
        (
            "storage.endpoint_url",
            "http://me:pw@store:9000",
            "storage.endpoint_url: the endpoint must not hold a user name or password",
        ),
        (
            "storage.key_template",
            "{app_id}/{user}.mp4",
            "storage.key_template: bad key "
            "template: unknown field {user} (expected app_id, room, recording_id, date, "
            "started_at)",
        ),
        (
            "storage.key_template",
            "{room!r}.mp4",
            "storage.key_template: bad key template: {room} takes no format or conversion",
        ),
        (
            "storage.key_template",
            "{date:%Y}.mp4",
            "storage.key_template: bad key template: {date} takes no format or conversion",
        ),
        (
            "storage.key_template",
            "{room",
            "storage.key_template: bad key template: expected '}' before end of string",
        ),
        (
            "storage.key_template",
            "/{room}.mp4",
            "storage.key_template: bad key template: the key must not be empty or begin with '/'",
        ),
        (
            "storage.key_template",
            "{room}/../{recording_id}.mp4",
            "storage.key_template: bad key template: empty, '.' and '..' parts are not allowed",
        ),
        ("storage.link_expiry_s", 0, "storage.link_expiry_s: expected an integer 1..604800, got 0"),
        (
            "storage.link_expiry_s",
            604801,
            "storage.link_expiry_s: expected an integer 1..604800, got 604801",
        ),
        (
            "storage.link_expiry_s",
            True,
            "storage.link_expiry_s: expected an integer 1..604800, got true",
        ),
        (
            "notifications.url",
            "file:///etc/passwd",
            "notifications.url: expected an http:// or "
            "https:// URL with a host for notification URL",
        ),
        (
            "notifications.url",
            "https://",
            "notifications.url: expected an http:// or https:// "
            "URL with a host for notification URL",
        ),
        (
            "notifications.secret",
            ...,
            "notifications: a notification URL needs a secret to sign with",
        ),
        (
            "notifications.secret",
            "whsec_c2hvcnQ=",
            "notifications.secret: expected whsec_ followed by the base64 of 24 to 64 random bytes",
        ),
        (
            "notifications.secret",
            "not-a-standard-webhooks-secret",
            "notifications.secret: expected whsec_ followed by the base64 of 24 to 64 random bytes",
        ),
        (
            "notifications.emails",
            ["ops@example.com", "ops at example"],
            'notifications.emails[1]: expected an e-mail address, got "ops at example"',
        ),
        (
            "notifications.emails",
            ["a@localhost"],
            'notifications.emails[0]: expected an e-mail address, got "a@localhost"',
        ),
        (
            "notifications.emails",
            "ops@example.com",
            'notifications.emails: expected an array, got "ops@example.com"',
        ),
    ],
)
def test_each_problem_names_its_field_and_reason_and_never_a_secret(path, value, message):
    with pytest.raises(OptionsError) as caught:
        RecordingSettings.from_json(with_change(path, value))
    assert str(caught.value) == message
    for text in (str(caught.value), repr(caught.value)):
        assert S3_SECRET not in text and HOOK_SECRET not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{", "not JSON: Expecting property name enclosed in double quotes (line 1)"),
        (b"\xff{}", "not JSON: not UTF-8 text"),
        ("[]", "expected an object, got []"),
    ],
)
def test_documents_that_are_not_settings_objects(data, message):
    with pytest.raises(OptionsError) as caught:
        RecordingSettings.from_json(data)
    assert str(caught.value) == message


def test_key_template_renders_safe_keys():
    key = render_key(
        DEFAULT_KEY_TEMPLATE, app_id="acme", room="Sales Team/Q4 ..", recording_id="01JEXAMPLE"
    )
    assert key == "acme/Sales_Team_Q4_../01JEXAMPLE.mp4"
    climbing = render_key("{room}/{recording_id}.mp4", room="../../etc", recording_id="x")
    assert climbing == "_.._etc/x.mp4"
    assert not climbing.startswith("/") and ".." not in climbing.split("/")
    assert render_key("{room}/x.mp4", room="..") == "_/x.mp4"
    assert render_key("{room}/x.mp4", room="") == "_/x.mp4"
    assert render_key("{room}.mp4", room="\u00e9t\u00e9") == "_t_.mp4"
    assert len(render_key("{room}.mp4", room="r" * 500)) == 128 + 4


def test_key_template_dates_come_from_started_at():
    started = datetime(2026, 12, 7, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    key = render_key("{date}/{started_at}-{recording_id}.mp4", started_at=started, recording_id="r")
    assert key == "2026-12-07/20261207T010405Z-r.mp4"
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert render_key("{date}/{started_at}.webm", started_at=naive) == (
        "2026-01-02/20260102T030405Z.webm"
    )
    given = render_key("{date}.mp4", date="2025-05-05", started_at=naive)
    assert given == "2025-05-05.mp4"
    assert render_key("{date}.mp4", date=datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01.mp4"


@pytest.mark.parametrize(
    ("template", "fields", "message"),
    [
        ("{room}.mp4", {}, "the key template needs {room}, which was not given"),
        (
            "{room}.mp4",
            {"user": "x"},
            "unknown key field 'user' (expected app_id, room, recording_id, date, started_at)",
        ),
        ("{room}}", {"room": "x"}, "bad key template: Single '}' encountered in format string"),
        ("", {}, "bad key template: the key must not be empty or begin with '/'"),
        ("a" * 1030, {}, "bad key template: the key is longer than S3's 1024 bytes"),
    ],
)
def test_bad_templates_and_missing_fields_are_clear(template, fields, message):
    with pytest.raises(OptionsError) as caught:
        render_key(template, **fields)
    assert str(caught.value) == message


def test_safe_key_part_keeps_safe_characters():
    assert safe_key_part("Room-1_a.b") == "Room-1_a.b"
    assert safe_key_part(".hidden") == "hidden"
    assert safe_key_part("a\x00b\nc") == "a_b_c"


SENDER = "recordings@example.com"
FROM = {"SKYMIX_SMTP_FROM": SENDER}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("mail.example.com", 25, False, False, None, None)),
        ("smtp://mail.example.com:2525", ("mail.example.com", 2525, False, False, None, None)),
        (
            "smtp://bot:" + SMTP_PASSWORD + "@127.0.0.1:1025?starttls=1",
            ("127.0.0.1", 1025, True, False, "bot", SMTP_PASSWORD),
        ),
        (
            "smtp://bot:" + SMTP_PASSWORD + "@mail?starttls=1",
            ("mail", 587, True, False, "bot", SMTP_PASSWORD),
        ),
        ("smtp://mail?starttls=0", ("mail", 25, False, False, None, None)),
        (
            "smtps://bot%40example.com:p%3Ass%2Fword%40x@mail",
            ("mail", 465, False, True, "bot@example.com", "p:ss/word@x"),
        ),
        ("smtps://bot:pw@[::1]:4650/", ("::1", 4650, False, True, "bot", "pw")),
    ],
)
def test_smtp_from_env(url, expected):
    smtp = SmtpSettings.from_env({"SKYMIX_SMTP_URL": url, "SKYMIX_SMTP_FROM": SENDER})
    target = smtp.target
    got = (target.host, target.port, target.starttls, target.ssl, target.user, target.password)
    assert got == expected
    assert target == SmtpTarget.from_url(url)
    assert smtp.sender == SENDER


def test_smtp_password_is_masked_and_no_url_means_no_email(monkeypatch):
    url = f"smtp://bot:{SMTP_PASSWORD}@127.0.0.1:1025?timeout=5"
    monkeypatch.setenv("SKYMIX_SMTP_URL", url)
    monkeypatch.setenv("SKYMIX_SMTP_FROM", SENDER)
    smtp = SmtpSettings.from_env()
    assert smtp is not None and smtp.target.user == "bot" and smtp.target.timeout_s == 5.0
    assert SMTP_PASSWORD not in repr(smtp) and SMTP_PASSWORD not in str(smtp)
    assert "password='****aple'" in repr(smtp) and "password='****aple'" in str(smtp.target)
    short = SmtpSettings.from_env({"SKYMIX_SMTP_URL": "smtp://bot:pw12345678@m", **FROM})
    assert "password='****'" in repr(short) and "5678" not in repr(short)
    assert SmtpSettings.from_env({}) is None
    assert SmtpSettings.from_env({"SKYMIX_SMTP_URL": ""}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SKYMIX_SMTP_URL": f"http://u:{SMTP_PASSWORD}@mail"},
            "SKYMIX_SMTP_URL: expected an smtp:// or smtps:// URL",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail:99999"},
            "SKYMIX_SMTP_URL: not a URL with a valid host and port",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail:0"},
            "SKYMIX_SMTP_URL: port 0 is out of range",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@:25"},
            "SKYMIX_SMTP_URL: the URL names no host",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail/inbox"},
            "SKYMIX_SMTP_URL: the URL must not have a path or fragment",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail#top"},
            "SKYMIX_SMTP_URL: the URL must not have a path or fragment",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail?tls=1"},
            "SKYMIX_SMTP_URL: the query parameters are starttls=0 or 1 and timeout=seconds",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail?starttls=yes"},
            "SKYMIX_SMTP_URL: the query parameters are starttls=0 or 1 and timeout=seconds",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail?timeout=0"},
            "SKYMIX_SMTP_URL: timeout must be a positive number of seconds",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtps://u:{SMTP_PASSWORD}@mail?starttls=1"},
            "SKYMIX_SMTP_URL: smtps:// is SSL from the start: starttls=1 contradicts it",
        ),
        (
            {"SKYMIX_SMTP_URL": f"smtp://:{SMTP_PASSWORD}@mail"},
            "SKYMIX_SMTP_URL: a password needs a user name",
        ),
        (
            {"SKYMIX_SMTP_URL": "smtps://bot@[::1]:4650"},
            "SKYMIX_SMTP_URL: a user name needs a password",
        ),
        ({"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail"}, "SKYMIX_SMTP_FROM: not set"),
        (
            {"SKYMIX_SMTP_URL": f"smtp://u:{SMTP_PASSWORD}@mail", "SKYMIX_SMTP_FROM": "nobody"},
            "SKYMIX_SMTP_FROM: expected the sender's e-mail address",
        ),
    ],
)
def test_smtp_problems_name_the_variable_and_never_the_password(env, message):
    env = FROM | env if "FROM" not in message else env
    with pytest.raises(OptionsError) as caught:
        SmtpSettings.from_env(env)
    assert str(caught.value) == message
    assert caught.value.field == message.split(":")[0]
    assert SMTP_PASSWORD not in repr(caught.value)
    assert caught.value.__context__ is None
