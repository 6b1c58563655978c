"""skymix.deliver.s3 against a real SeaweedFS S3 server started with credentials."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from seaweed import NO_DELETE_PREFIX, S3_ADMIN, S3_READ_ONLY, S3_WRITE_ONLY, Identity, SeaweedS3
from skymix.deliver.s3 import (
    MAX_PRESIGN_S,
    S3Access,
    abort_stale_uploads,
    check_access,
    presigned_link,
    upload,
)
from skymix.errors import DeliveryError

MiB = 1024 * 1024
SMALL_PARTS = TransferConfig(
    multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2
)
META = {
    "recording-id": "01JABCDEF",
    "room": "Café support",
    "duration": "12.5",
    "participants": "3",
}


def access_for(server: SeaweedS3, ident: Identity = S3_ADMIN, **kw: Any) -> S3Access:
    return S3Access(
        region=server.region,
        endpoint_url=server.endpoint_url,
        access_key_id=ident.access_key,
        secret_access_key=ident.secret_key,
        **kw,
    )


def media_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def assert_no_secret(exc: BaseException, text: str, *secrets: str) -> None:
    last = getattr(exc, "last_exception", None)
    for secret in secrets:
        assert secret not in str(exc)
        assert secret not in repr(exc)
        assert secret not in str(last) and secret not in repr(last)
        assert secret not in text


def test_upload_reads_back_with_metadata_and_checksum(seaweed: SeaweedS3, tmp_path: Path) -> None:
    src = media_file(tmp_path / "rec.mp4", 300_000)
    result = upload(
        src, seaweed.bucket, "app/room/one.mp4", access=access_for(seaweed), metadata=META
    )
    data = src.read_bytes()
    assert (result.bucket, result.key, result.size) == (
        seaweed.bucket,
        "app/room/one.mp4",
        len(data),
    )
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.etag
    got = seaweed.client().get_object(
        Bucket=seaweed.bucket, Key="app/room/one.mp4", ChecksumMode="ENABLED"
    )
    assert got["Body"].read() == data
    assert got["ContentType"] == "video/mp4"
    assert got["Metadata"]["recording-id"] == "01JABCDEF"
    assert got["Metadata"]["room"] == "Caf%C3%A9 support"
    assert got["Metadata"]["participants"] == "3"
    assert got["Metadata"]["sha256"] == result.sha256
    assert got["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


def test_multipart_upload_intact_and_nothing_left_unfinished(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    src = media_file(tmp_path / "big.mp4", 12 * MiB + 12345)
    sent: list[int] = []
    result = upload(
        src,
        seaweed.bucket,
        "big/one.mp4",
        access=access_for(seaweed),
        metadata=META,
        config=SMALL_PARTS,
        progress=sent.append,
    )
    assert result.etag.endswith("-3")  # three parts: 5 + 5 + 2 MiB
    assert sum(sent) == src.stat().st_size
    client = seaweed.client()
    body = client.get_object(Bucket=seaweed.bucket, Key="big/one.mp4")["Body"].read()
    assert (
        hashlib.sha256(body).hexdigest()
        == result.sha256
        == hashlib.sha256(src.read_bytes()).hexdigest()
    )
    listed = client.list_multipart_uploads(Bucket=seaweed.bucket, Prefix="big/")
    assert listed.get("Uploads", []) == []


def test_wrong_secret_names_the_code_and_hides_the_secret(
    seaweed: SeaweedS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="skymix")
    caplog.set_level(logging.DEBUG, logger="botocore.retries.standard")
    bad = Identity(S3_ADMIN.access_key, "totally-Wrong-Secret-9999XYZW")
    src = media_file(tmp_path / "rec.mp4", 10_000)
    with pytest.raises(DeliveryError) as info:
        upload(src, seaweed.bucket, "x/denied.mp4", access=access_for(seaweed, bad), metadata=META)
    text = str(info.value)
    assert "SignatureDoesNotMatch" in text and "x/denied.mp4" in text and seaweed.bucket in text
    assert "secret access key does not belong" in text
    assert isinstance(info.value.last_exception, ClientError)
    assert "Not retrying request." in caplog.text and "Retry needed" not in caplog.text
    assert_no_secret(info.value, caplog.text, bad.secret_key)
    assert "****" in repr(access_for(seaweed, bad)) and bad.secret_key not in repr(
        access_for(seaweed, bad)
    )
    assert src.exists()
    with pytest.raises(ClientError):
        seaweed.client().head_object(Bucket=seaweed.bucket, Key="x/denied.mp4")


def test_missing_bucket(seaweed: SeaweedS3, tmp_path: Path) -> None:
    src = media_file(tmp_path / "rec.mp4", 1000)
    with pytest.raises(DeliveryError) as info:
        upload(src, "no-such-bucket", "a.mp4", access=access_for(seaweed), metadata={})
    assert "NoSuchBucket" in str(info.value) and "no-such-bucket" in str(info.value)
    assert_no_secret(info.value, "", S3_ADMIN.secret_key)


def test_presigned_link_fetches_the_bytes_and_caps_expiry(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    src = media_file(tmp_path / "rec.mp4", 50_000)
    access = access_for(seaweed)
    upload(src, seaweed.bucket, "links/one.mp4", access=access, metadata=META)
    now = datetime.now(UTC)
    link = presigned_link(seaweed.bucket, "links/one.mp4", 3600, access=access, now=now)
    assert link.expires_at == now + timedelta(seconds=3600)
    assert link.url.startswith(seaweed.endpoint_url + "/" + seaweed.bucket + "/links/one.mp4?")
    with urllib.request.urlopen(link.url, timeout=10) as resp:  # loopback, our own server
        assert resp.read() == src.read_bytes()

    long = presigned_link(seaweed.bucket, "links/one.mp4", 30 * 86400, access=access, now=now)
    assert long.expires_at == now + timedelta(seconds=MAX_PRESIGN_S)
    assert parse_qs(urlsplit(long.url).query)["X-Amz-Expires"] == [str(MAX_PRESIGN_S)]

    temporary = access_for(seaweed, expires_at=now + timedelta(hours=2))
    short = presigned_link(seaweed.bucket, "links/one.mp4", 86400, access=temporary, now=now)
    assert short.expires_at == now + timedelta(hours=2)
    expired = access_for(seaweed, expires_at=now - timedelta(seconds=1))
    with pytest.raises(DeliveryError, match="expired"):
        presigned_link(seaweed.bucket, "links/one.mp4", 60, access=expired, now=now)


def test_check_access_passes_with_good_keys(seaweed: SeaweedS3) -> None:
    check_access(seaweed.bucket, "calls", access=access_for(seaweed))
    left = seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix="calls/")
    assert left.get("KeyCount", 0) == 0


def test_check_access_names_a_missing_delete_permission(seaweed: SeaweedS3) -> None:
    with pytest.raises(DeliveryError) as info:
        check_access(seaweed.bucket, NO_DELETE_PREFIX, access=access_for(seaweed))
    text = str(info.value)
    assert "s3:DeleteObject" in text and "AccessDenied" in text and "left behind" in text
    assert f"s3://{seaweed.bucket}/{NO_DELETE_PREFIX}.skymix-probe-" in text


@pytest.mark.parametrize(
    ("ident", "bucket", "expected"),
    [
        (S3_READ_ONLY, None, ["s3:PutObject", "AccessDenied"]),
        (S3_WRITE_ONLY, None, ["s3:GetObject", "AccessDenied"]),
        (
            Identity(S3_ADMIN.access_key, "bad-Secret-For-Probe-5555QRST"),
            None,
            ["SignatureDoesNotMatch"],
        ),
        (
            Identity("UNKNOWNKEYID0001", "some-Secret-Unknown-6666UVWX"),
            None,
            ["InvalidAccessKeyId"],
        ),
        (S3_ADMIN, "missing-bucket", ["NoSuchBucket"]),
    ],
)
def test_check_access_names_the_failure(
    seaweed: SeaweedS3,
    ident: Identity,
    bucket: str | None,
    expected: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="skymix")
    with pytest.raises(DeliveryError) as info:
        check_access(bucket or seaweed.bucket, "calls/", access=access_for(seaweed, ident))
    for word in expected:
        assert word in str(info.value)
    assert_no_secret(info.value, caplog.text, ident.secret_key)


def test_failure_after_first_part_aborts_the_attempt(seaweed: SeaweedS3, tmp_path: Path) -> None:
    src = media_file(tmp_path / "big.mp4", 12 * MiB)
    sent = [0]

    def stop_after_first_part(n: int) -> None:
        sent[0] += n
        if sent[0] >= 5 * MiB:
            raise RuntimeError("caller gave up")

    with pytest.raises(DeliveryError, match="RuntimeError"):
        upload(
            src,
            seaweed.bucket,
            "aborted/one.mp4",
            access=access_for(seaweed),
            metadata=META,
            config=SMALL_PARTS,
            progress=stop_after_first_part,
        )
    client = seaweed.client()
    with pytest.raises(ClientError):
        client.head_object(Bucket=seaweed.bucket, Key="aborted/one.mp4")
    listed = client.list_multipart_uploads(Bucket=seaweed.bucket, Prefix="aborted/")
    assert listed.get("Uploads", []) == []


def test_server_killed_mid_multipart_leaves_no_object(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Over 5 s: two server starts on one folder (the restart shows what the crash left)."""
    caplog.set_level(logging.DEBUG, logger="botocore.retries.standard")
    server = SeaweedS3(tmp_path / "weed", "crash", (S3_ADMIN,))
    server.start()
    try:
        src = media_file(tmp_path / "big.mp4", 12 * MiB)
        sent = [0]

        def on_progress(n: int) -> None:
            # runs in the transfer manager's worker thread: the server is dead before the
            # next bytes of the second part go out
            sent[0] += n
            if sent[0] >= 5 * MiB:
                server.kill()

        access = access_for(server, attempts=2, connect_timeout_s=1.0, read_timeout_s=5.0)
        one_at_a_time = TransferConfig(
            multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=1
        )
        with pytest.raises(DeliveryError) as info:
            upload(
                src,
                server.bucket,
                "calls/crash.mp4",
                access=access,
                metadata=META,
                config=one_at_a_time,
                progress=on_progress,
            )
        assert "s3://crash/calls/crash.mp4" in str(info.value)
        assert "ConnectionError" in str(info.value)
        assert "Retry needed" in caplog.text  # a lost connection is worth retrying
        assert "Max attempts of 2 reached." in caplog.text
        assert_no_secret(info.value, "", S3_ADMIN.secret_key)
        assert src.stat().st_size == 12 * MiB

        server.restart()
        client = server.client()
        with pytest.raises(ClientError):
            client.head_object(Bucket=server.bucket, Key="calls/crash.mp4")
        access = access_for(server)
        stale = client.list_multipart_uploads(Bucket=server.bucket, Prefix="calls/")
        assert len(stale.get("Uploads", [])) == 1
        assert abort_stale_uploads(server.bucket, "calls/crash.mp4", access=access) == 1
        after = client.list_multipart_uploads(Bucket=server.bucket, Prefix="calls/")
        assert after.get("Uploads", []) == []

        result = upload(
            src,
            server.bucket,
            "calls/crash.mp4",
            access=access,
            metadata=META,
            config=one_at_a_time,
        )
        body = client.get_object(Bucket=server.bucket, Key="calls/crash.mp4")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == result.sha256
    finally:
        server.stop()


def test_default_credential_chain(
    seaweed: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = S3Access(region=seaweed.region, endpoint_url=seaweed.endpoint_url)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(DeliveryError, match="NoCredentials"):
        check_access(seaweed.bucket, "chain/", access=chain)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ADMIN.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_ADMIN.secret_key)
    check_access(seaweed.bucket, "chain/", access=chain)
    src = media_file(tmp_path / "rec.mp4", 2000)
    result = upload(src, seaweed.bucket, "chain/one.mp4", access=chain, metadata={})
    link = presigned_link(seaweed.bucket, result.key, 60, access=chain)
    with urllib.request.urlopen(link.url, timeout=10) as resp:  # loopback, our own server
        assert resp.read() == src.read_bytes()


def test_refused_before_any_request(seaweed: SeaweedS3, tmp_path: Path) -> None:
    access = access_for(seaweed)
    with pytest.raises(DeliveryError, match="cannot read"):
        upload(tmp_path / "absent.mp4", seaweed.bucket, "a.mp4", access=access, metadata={})
    src = media_file(tmp_path / "rec.mp4", 10)
    with pytest.raises(DeliveryError, match="metadata name"):
        upload(src, seaweed.bucket, "a.mp4", access=access, metadata={"room name": "x"})
    with pytest.raises(DeliveryError, match="at least 1 s"):
        presigned_link(seaweed.bucket, "a.mp4", 0, access=access)
    with pytest.raises(DeliveryError, match="without an access key id"):
        check_access(seaweed.bucket, "", access=S3Access(secret_access_key="x" * 20))
