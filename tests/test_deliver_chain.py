"""The delivery chain against real servers: SeaweedFS (the shared fixture), an HTTP receiver on
127.0.0.1 that verifies Standard Webhooks signatures, and aiosmtpd. Upload, link, states,
notifications, a failure kept for later, resume, and the ``upload`` and ``s3-check`` commands."""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from aiosmtpd.controller import Controller

from deliver_tools import (
    HOOK_SECRET,
    LOOPBACK,
    WRONG_S3_SECRET,
    Hooks,
    Inbox,
    events,
    free_port,
    run_cli,
    stopped_recording,
)
from seaweed import S3_ADMIN, S3_READ_ONLY, SeaweedS3
from skymix.deliver.chain import DeliveryOptions, deliver_recording, resume
from skymix.deliver.email import SmtpTarget
from skymix.deliver.settings import RecordingSettings, SmtpSettings
from skymix.deliver.states import EVENT_LOG_NAME, Recording, RecordingState
from skymix.synth import preset, synthesize


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, SmtpSettings]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        target = SmtpTarget(host="127.0.0.1", port=port, timeout_s=5.0)
        yield inbox, SmtpSettings(target=target, sender="recordings@skymix.test")
    finally:
        controller.stop()


def settings_for(
    seaweed: SeaweedS3,
    *,
    secret: str = S3_ADMIN.secret_key,
    access_key: str = S3_ADMIN.access_key,
    hook_url: str | None = None,
    emails: tuple[str, ...] = (),
    endpoint: bool = True,
) -> RecordingSettings:
    doc: dict[str, Any] = {
        "app_id": "acme",
        "storage": {
            "arn": f"arn:aws:s3:{seaweed.region}::{seaweed.bucket}/chain/",
            "access_key_id": access_key,
            "secret_access_key": secret,
            "link_expiry_s": 600,
        },
        "notifications": {
            "enabled": bool(hook_url or emails),
            "url": hook_url,
            "secret": HOOK_SECRET if hook_url else None,
            "emails": list(emails),
        },
    }
    if endpoint:
        doc["storage"]["endpoint_url"] = seaweed.endpoint_url
    return RecordingSettings.from_json(doc)


def test_the_whole_chain_to_link(
    seaweed: SeaweedS3,
    hooks: Hooks,
    smtp: tuple[Inbox, SmtpSettings],
    mp4: bytes,
    tmp_path: Path,
) -> None:
    inbox, smtp_settings = smtp
    recording, file = stopped_recording(tmp_path / "rec", mp4)
    settings = settings_for(seaweed, hook_url=hooks.url, emails=("ops@acme.test",))
    outcome = deliver_recording(
        file, settings, recording, options=DeliveryOptions(smtp=smtp_settings, allow_private=True)
    )
    assert outcome.delivered and outcome.error is None and outcome.link is not None
    key = f"chain/acme/room_7/{recording.id}.mp4"
    stored = seaweed.client().get_object(Bucket=seaweed.bucket, Key=key)
    assert stored["Body"].read() == mp4
    assert stored["Metadata"]["recording-id"] == recording.id
    with urllib.request.urlopen(outcome.link.url, timeout=10) as response:
        assert response.read() == mp4
    (payload,) = hooks.payloads
    assert payload["state"] == "LINK" and payload["recording_id"] == recording.id
    assert payload["url"] == outcome.link.url and payload["key"] == key
    assert payload["sequence"] == 1 and hooks.ids == [f"msg_{recording.id}_1"]
    ((to, message),) = inbox.mails
    assert to == ["ops@acme.test"] and recording.id in message["Subject"]
    body = message.get_body(("plain",))
    assert body is not None and outcome.link.url in body.get_content()
    log = events(tmp_path / "rec")
    kinds = [e["event"] for e in log]
    assert kinds.count("webhook_attempt") == 1
    outcomes = {(e["channel"], e["outcome"]) for e in log if e["event"] == "notification"}
    assert outcomes == {("webhook", "delivered"), ("email", "delivered")}
    assert file.exists()
    assert (
        Recording.load(tmp_path / "rec" / EVENT_LOG_NAME).pending(("webhook", "email")).link
        is False
    )


def test_wrong_secret_is_an_error_then_resume_links(
    seaweed: SeaweedS3,
    hooks: Hooks,
    mp4: bytes,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    bad = settings_for(seaweed, secret=WRONG_S3_SECRET, hook_url=hooks.url)
    outcome = deliver_recording(file, bad, recording, options=LOOPBACK)
    assert recording.state is RecordingState.ERROR and outcome.error is not None
    assert outcome.error.code == "delivery_failed"
    assert "SignatureDoesNotMatch" in outcome.error.message
    assert file.read_bytes() == mp4
    everything = (
        repr(outcome) + str(outcome.error) + caplog.text + (folder / EVENT_LOG_NAME).read_text()
    )
    assert WRONG_S3_SECRET not in everything and HOOK_SECRET not in everything
    assert [p["state"] for p in hooks.payloads] == ["ERROR"]
    assert hooks.payloads[0]["error"]["code"] == "delivery_failed"

    again = resume(folder, settings_for(seaweed, hook_url=hooks.url), options=LOOPBACK)
    assert again.delivered and again.recording.id == recording.id and again.link is not None
    with urllib.request.urlopen(again.link.url, timeout=10) as response:
        assert response.read() == mp4
    assert [(p["state"], p["sequence"]) for p in hooks.payloads] == [("ERROR", 1), ("LINK", 2)]
    assert {p["recording_id"] for p in hooks.payloads} == {recording.id}
    states = [e["state"] for e in events(folder) if e["event"] == "state"]
    assert states == ["START", "STOP", "ERROR", "LINK"]
    # nothing left: a second resume sends nothing again
    third = resume(folder, settings_for(seaweed, hook_url=hooks.url), options=LOOPBACK)
    assert third.delivered and third.webhook is None and len(hooks.payloads) == 2


def test_a_failed_notification_loses_nothing(
    seaweed: SeaweedS3, smtp: tuple[Inbox, SmtpSettings], mp4: bytes, tmp_path: Path
) -> None:
    _, smtp_settings = smtp
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    dead = f"http://127.0.0.1:{free_port()}/hooks"
    gone = SmtpSettings(
        target=SmtpTarget(host="127.0.0.1", port=free_port(), timeout_s=2.0),
        sender="recordings@skymix.test",
    )
    settings = settings_for(seaweed, hook_url=dead, emails=("ops@acme.test",))
    options = DeliveryOptions(smtp=gone, allow_private=True, webhook_max_tries=1)
    outcome = deliver_recording(file, settings, recording, options=options)
    assert outcome.delivered
    assert outcome.webhook is not None and outcome.webhook.failed
    assert outcome.email is not None and outcome.email.failed
    failed = {e["channel"] for e in events(folder) if e["event"] == "notification"}
    assert failed == {"webhook", "email"}
    assert all(e["outcome"] == "failed" for e in events(folder) if e["event"] == "notification")
    # the outcomes are final: resume does not send them again, even with the server back
    again = resume(
        folder, settings, options=DeliveryOptions(smtp=smtp_settings, allow_private=True)
    )
    assert again.delivered and again.webhook is None and again.email is None


def test_cli_upload_resumes_a_failed_recording(
    seaweed: SeaweedS3, mp4: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    outcome = deliver_recording(file, settings_for(seaweed, secret=WRONG_S3_SECRET), recording)
    assert not outcome.delivered
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(settings_for(seaweed, endpoint=False).to_json(reveal=True)))
    done = run_cli(
        "upload",
        str(folder),
        "--settings",
        str(settings_file),
        "--endpoint-url",
        seaweed.endpoint_url,
    )
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1]
    with urllib.request.urlopen(link, timeout=10) as response:
        assert response.read() == mp4
    assert Recording.load(folder / EVENT_LOG_NAME).state is RecordingState.LINK


def test_cli_upload_failure_exits_1_and_keeps_the_file(
    seaweed: SeaweedS3, mp4: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    recording.record_mixed(file)
    settings_file = tmp_path / "settings.json"
    bad = settings_for(seaweed, secret=WRONG_S3_SECRET)
    settings_file.write_text(json.dumps(bad.to_json(reveal=True)))
    done = run_cli("upload", str(folder), "--settings", str(settings_file))
    assert done.returncode == 1
    assert (
        "SignatureDoesNotMatch" in done.stderr and WRONG_S3_SECRET not in done.stderr + done.stdout
    )
    assert file.read_bytes() == mp4
    assert Recording.load(folder / EVENT_LOG_NAME).state is RecordingState.ERROR


def test_cli_s3_check(seaweed: SeaweedS3, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(settings_for(seaweed).to_json(reveal=True)))
    done = run_cli("s3-check", "--settings", str(good))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "OK"
    read_only = tmp_path / "ro.json"
    ro = settings_for(
        seaweed, access_key=S3_READ_ONLY.access_key, secret=S3_READ_ONLY.secret_key, endpoint=False
    )
    read_only.write_text(json.dumps(ro.to_json(reveal=True)))
    refused = run_cli(
        "s3-check", "--settings", str(read_only), "--endpoint-url", seaweed.endpoint_url
    )
    assert refused.returncode == 1
    assert "s3:PutObject" in refused.stderr and "AccessDenied" in refused.stderr
    assert S3_READ_ONLY.secret_key not in refused.stderr + refused.stdout


def test_cli_mix_to_an_arn_runs_the_whole_chain(
    seaweed: SeaweedS3, hooks: Hooks, tmp_path: Path
) -> None:
    room = synthesize(preset(2, 2.0), 2.0, tmp_path / "room", seed=3)
    settings_file = tmp_path / "settings.json"
    settings = settings_for(seaweed, hook_url=hooks.url)
    settings_file.write_text(json.dumps(settings.to_json(reveal=True)))
    work = tmp_path / "work"
    done = run_cli(
        "mix",
        str(room.pcap),
        *[a for sdp in room.sdps for a in ("--sdp", str(sdp))],
        "--size",
        "160x90",
        "--preset",
        "ultrafast",
        "-o",
        f"arn:aws:s3:{seaweed.region}::{seaweed.bucket}/mixed/",
        "--settings",
        str(settings_file),
        "--endpoint-url",
        seaweed.endpoint_url,
        "--recording-id",
        "rec-cli-1",
        "--room",
        "standup",
        "--work-dir",
        str(work),
        env_extra={"SKYMIX_ALLOW_PRIVATE_NOTIFY": "1"},
    )
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1]
    fetched = tmp_path / "fetched.mp4"
    with urllib.request.urlopen(link, timeout=10) as response:
        fetched.write_bytes(response.read())
    assert fetched.read_bytes() == (work / "recording.mp4").read_bytes()
    with av.open(str(fetched)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 30
    key = "mixed/acme/standup/rec-cli-1.mp4"
    assert seaweed.client().head_object(Bucket=seaweed.bucket, Key=key)["ContentLength"] > 0
    (payload,) = hooks.payloads
    assert payload["recording_id"] == "rec-cli-1" and payload["state"] == "LINK"
    assert payload["duration_s"] and len(payload["participants"]) == 2
    assert Recording.load(work / EVENT_LOG_NAME).state is RecordingState.LINK
    assert (work / "report.json").is_file()


def test_cli_mix_that_fails_leaves_the_recording_in_error(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    capture = tmp_path / "broken.pcap"
    capture.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20)
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(settings_for(seaweed).to_json(reveal=True)))
    work = tmp_path / "work"
    done = run_cli(
        "mix",
        str(capture),
        "-o",
        f"s3://{seaweed.bucket}/mixed/",
        "--settings",
        str(settings_file),
        "--endpoint-url",
        seaweed.endpoint_url,
        "--work-dir",
        str(work),
    )
    assert done.returncode == 1, done.stderr
    recording = Recording.load(work / EVENT_LOG_NAME)
    assert recording.state is RecordingState.ERROR and recording.room == "broken"
    assert recording.error is not None and recording.error.code != "internal_error"
    assert not (work / "recording.mp4").exists()


def test_cli_mix_to_s3_without_settings_uses_the_default_chain(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    """No --settings: the keys come from the environment (boto3's chain), the object is the one
    the URL names, in the format its name asks (.webm: VP9 + Opus), with that content type."""
    room = synthesize(preset(2, 1.5), 1.5, tmp_path / "room", seed=4)
    work = tmp_path / "work"
    done = run_cli(
        "mix",
        str(room.pcap),
        *[a for sdp in room.sdps for a in ("--sdp", str(sdp))],
        "--size",
        "160x90",
        "-o",
        f"s3://{seaweed.bucket}/nosettings/standup.webm",
        "--endpoint-url",
        seaweed.endpoint_url,
        "--work-dir",
        str(work),
        env_extra={
            "AWS_ACCESS_KEY_ID": S3_ADMIN.access_key,
            "AWS_SECRET_ACCESS_KEY": S3_ADMIN.secret_key,
            "AWS_DEFAULT_REGION": seaweed.region,
        },
    )
    assert done.returncode == 0, done.stderr
    head = seaweed.client().head_object(Bucket=seaweed.bucket, Key="nosettings/standup.webm")
    assert head["ContentType"] == "video/webm"
    fetched = tmp_path / "fetched.webm"
    with urllib.request.urlopen(done.stdout.strip().splitlines()[-1], timeout=10) as response:
        fetched.write_bytes(response.read())
    with av.open(str(fetched)) as container:
        assert "webm" in container.format.name
        assert container.streams.video[0].codec_context.name == "vp9"
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 20
    assert (
        S3_ADMIN.secret_key not in done.stdout + done.stderr + (work / EVENT_LOG_NAME).read_text()
    )


def test_cli_mix_to_a_bad_arn_names_the_output_argument(tmp_path: Path) -> None:
    done = run_cli(
        "mix", str(tmp_path / "none.pcap"), "-o", "arn:aws:s3:::Bad_Bucket/x/", "--room", "r"
    )
    assert done.returncode == 2
    assert "argument -o/--output: bad bucket name 'Bad_Bucket'" in done.stderr
