"""When the application's bucket fails: the backup bucket, the operator's backup folder, the
local file kept or deleted as the settings say, and a server killed mid-upload, all against real
SeaweedFS servers (the shared one, and one of this file's own that is killed)."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deliver_tools import (
    HOOK_SECRET,
    LOOPBACK,
    WRONG_S3_SECRET,
    Hooks,
    events,
    run_cli,
    stopped_recording,
)
from seaweed import S3_ADMIN, SeaweedS3
from skymix.deliver.chain import DeliveryOptions, deliver_recording, resume
from skymix.deliver.settings import RecordingSettings
from skymix.deliver.states import EVENT_LOG_NAME, Recording, RecordingState

BACKUP_BUCKET = "recordings-backup"


@pytest.fixture(scope="module")
def backup_bucket(seaweed: SeaweedS3) -> str:
    """A second bucket on the shared server."""
    client = seaweed.client()
    try:
        client.create_bucket(Bucket=BACKUP_BUCKET)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return BACKUP_BUCKET


def settings(
    seaweed: SeaweedS3,
    *,
    bucket: str | None = None,
    secret: str = S3_ADMIN.secret_key,
    backup: str | None = None,
    hook_url: str | None = None,
    delete_local: bool = False,
) -> RecordingSettings:
    storage: dict[str, Any] = {
        "arn": f"arn:aws:s3:{seaweed.region}::{bucket or seaweed.bucket}/primary/",
        "access_key_id": S3_ADMIN.access_key,
        "secret_access_key": secret,
        "endpoint_url": seaweed.endpoint_url,
        "link_expiry_s": 600,
        "delete_local_after_upload": delete_local,
    }
    if backup is not None:
        storage["backup"] = {
            "arn": f"arn:aws:s3:{seaweed.region}::{backup}/spare/",
            "access_key_id": S3_ADMIN.access_key,
            "secret_access_key": S3_ADMIN.secret_key,
            "endpoint_url": seaweed.endpoint_url,
        }
    return RecordingSettings.from_json(
        {
            "app_id": "acme",
            "storage": storage,
            "notifications": {
                "enabled": hook_url is not None,
                "url": hook_url,
                "secret": None if hook_url is None else HOOK_SECRET,
            },
        }
    )


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def test_the_backup_bucket_takes_the_file_when_the_primary_fails(
    seaweed: SeaweedS3, backup_bucket: str, hooks: Hooks, mp4: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    chosen = settings(
        seaweed, bucket="no-such-bucket-here", backup=backup_bucket, hook_url=hooks.url
    )
    outcome = deliver_recording(file, chosen, recording, options=LOOPBACK)
    assert outcome.delivered and outcome.link is not None
    assert fetch(outcome.link.url) == mp4
    key = f"spare/acme/room_7/{recording.id}.mp4"
    stored = seaweed.client().get_object(Bucket=backup_bucket, Key=key)
    assert stored["Body"].read() == mp4
    (payload,) = hooks.payloads
    assert payload["state"] == "LINK" and payload["backup"] is True
    assert payload["stored_in"] == "backup"
    assert (payload["bucket"], payload["key"]) == (backup_bucket, key)
    failed = [e for e in events(folder) if e["event"] == "upload_failed"]
    assert [e["target"] for e in failed] == ["primary"]
    assert "NoSuchBucket" in failed[0]["error"]["message"]
    assert file.read_bytes() == mp4  # kept: the settings do not ask to delete it
    # a resume has nothing left to do, and links to the backup bucket again if asked
    again = resume(folder, chosen, options=LOOPBACK)
    assert again.delivered and again.webhook is None


def test_both_buckets_failing_is_an_error_naming_both(
    seaweed: SeaweedS3, hooks: Hooks, mp4: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    chosen = settings(
        seaweed, secret=WRONG_S3_SECRET, backup="no-such-backup-bucket", hook_url=hooks.url
    )
    outcome = deliver_recording(file, chosen, recording, options=LOOPBACK)
    assert recording.state is RecordingState.ERROR and outcome.error is not None
    assert "SignatureDoesNotMatch" in outcome.error.message
    assert "the backup bucket failed too" in outcome.error.message
    assert "NoSuchBucket" in outcome.error.message
    (payload,) = hooks.payloads
    assert payload["stored_in"] is None and payload["backup"] is False
    everything = outcome.error.message + (folder / EVENT_LOG_NAME).read_text()
    assert WRONG_S3_SECRET not in everything and S3_ADMIN.secret_key not in everything
    assert file.read_bytes() == mp4


def test_the_backup_folder_keeps_the_file_for_a_later_upload(
    seaweed: SeaweedS3, hooks: Hooks, mp4: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    spare = tmp_path / "operator-backup"
    options = DeliveryOptions(allow_private=True, backup_dir=spare)
    failing = settings(seaweed, secret=WRONG_S3_SECRET, hook_url=hooks.url)
    outcome = deliver_recording(file, failing, recording, options=options)
    assert recording.state is RecordingState.ERROR and outcome.error is not None
    assert "kept in the operator's backup folder" in outcome.error.message
    copy = spare / seaweed.bucket / "primary" / "acme" / "room_7" / f"{recording.id}.mp4"
    assert copy.read_bytes() == mp4
    assert not [p for p in copy.parent.iterdir() if p.name != copy.name]  # no temporary left
    (payload,) = hooks.payloads
    assert payload["state"] == "ERROR" and payload["stored_in"] == "backup_folder"
    assert payload["backup"] is True and payload["size"] == len(mp4)
    assert str(spare) not in json.dumps(payload)  # the operator's paths stay the operator's
    # the working folder is cleaned up; the copy is what a later upload sends
    file.unlink()
    again = resume(folder, settings(seaweed, hook_url=hooks.url), options=options)
    assert again.delivered and again.link is not None
    assert fetch(again.link.url) == mp4
    assert [(p["state"], p["stored_in"]) for p in hooks.payloads] == [
        ("ERROR", "backup_folder"),
        ("LINK", "primary"),
    ]


def test_a_backup_folder_that_cannot_be_written_is_named(
    seaweed: SeaweedS3, mp4: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    options = DeliveryOptions(backup_dir=blocked)
    outcome = deliver_recording(
        file, settings(seaweed, secret=WRONG_S3_SECRET), recording, options=options
    )
    assert outcome.error is not None and "the copy to the backup folder failed" in str(
        outcome.error
    )
    assert recording.backup_copy is None and file.read_bytes() == mp4


def test_the_local_file_is_deleted_only_after_a_verified_upload(
    seaweed: SeaweedS3, mp4: bytes, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    recording, file = stopped_recording(folder, mp4)
    failing = settings(seaweed, secret=WRONG_S3_SECRET, delete_local=True)
    assert not deliver_recording(file, failing, recording).delivered
    assert file.read_bytes() == mp4  # the upload failed: the file stays
    done = resume(folder, settings(seaweed, delete_local=True))
    assert done.delivered and done.link is not None
    assert not file.exists()
    assert fetch(done.link.url) == mp4
    kinds = [e["event"] for e in events(folder)]
    assert kinds.index("upload") < kinds.index("local_deleted")


def test_server_killed_mid_upload_then_skymix_upload_links(tmp_path: Path) -> None:
    """The issue's crash: SeaweedFS SIGKILLed while a multipart upload is under way (as soon as
    the event log records the upload's id). Over 5 s: two server starts and a 96 MiB file."""
    server = SeaweedS3(tmp_path / "weed", "crash-chain", (S3_ADMIN,))
    server.start()
    try:
        folder = tmp_path / "rec"
        data = os.urandom(96 * 1024 * 1024)
        recording, file = stopped_recording(folder, data)
        chosen = settings(server, bucket=server.bucket)
        log = folder / EVENT_LOG_NAME

        def kill_once_the_upload_began() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if b'"multipart_started"' in log.read_bytes():
                    server.kill()
                    return
                time.sleep(0.002)

        killer = threading.Thread(target=kill_once_the_upload_began)
        killer.start()
        outcome = deliver_recording(file, chosen, recording)
        killer.join()
        assert recording.state is RecordingState.ERROR and outcome.error is not None
        assert "ConnectionError" in outcome.error.message or "connect" in outcome.error.message
        assert S3_ADMIN.secret_key not in outcome.error.message + log.read_text()
        assert file.read_bytes() == data
        (started,) = recording.multipart_starts

        server.restart()
        client = server.client()
        key = f"primary/acme/room_7/{recording.id}.mp4"
        with pytest.raises(ClientError):
            client.head_object(Bucket=server.bucket, Key=key)
        unfinished = client.list_multipart_uploads(Bucket=server.bucket, Prefix="primary/")
        assert [u["UploadId"] for u in unfinished.get("Uploads", [])] == [started.upload_id]

        settings_file = tmp_path / "settings.json"
        settings_file.write_text(json.dumps(chosen.to_json(reveal=True)))
        done = run_cli(
            "upload",
            str(folder),
            "--settings",
            str(settings_file),
            "--endpoint-url",
            server.endpoint_url,
        )
        assert done.returncode == 0, done.stderr
        assert fetch(done.stdout.strip().splitlines()[-1]) == data
        after = Recording.load(log)
        assert after.id == recording.id and after.state is RecordingState.LINK
        assert [e["state"] for e in events(folder) if e["event"] == "state"] == [
            "START",
            "STOP",
            "ERROR",
            "LINK",
        ]
        aborted = [e for e in events(folder) if e["event"] == "aborted_uploads"]
        assert aborted and aborted[0]["count"] >= 1
        left = client.list_multipart_uploads(Bucket=server.bucket, Prefix="primary/")
        assert left.get("Uploads", []) == []
    finally:
        server.stop()


def test_s3_check_checks_the_backup_bucket_too(seaweed: SeaweedS3, tmp_path: Path) -> None:
    settings_file = tmp_path / "settings.json"
    chosen = settings(seaweed, backup="no-such-backup-bucket")
    settings_file.write_text(json.dumps(chosen.to_json(reveal=True)))
    done = run_cli("s3-check", "--settings", str(settings_file))
    assert done.returncode == 1
    assert "backup bucket: access check (s3:PutObject)" in done.stderr
    assert "NoSuchBucket" in done.stderr
