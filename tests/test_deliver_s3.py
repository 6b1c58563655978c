"""skymix.deliver.s3 against a real SeaweedFS S3 server started with credentials (some tests
through a relay on 127.0.0.1 that changes one request or answer on the way, as a faulty network
or store would)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import os
import re
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def test_empty_file(seaweed: SeaweedS3, tmp_path: Path) -> None:
    src = media_file(tmp_path / "empty.mp4", 0)
    result = upload(src, seaweed.bucket, "app/empty.mp4", access=access_for(seaweed), metadata={})
    assert result.size == 0 and result.sha256 == hashlib.sha256(b"").hexdigest()
    got = seaweed.client().get_object(Bucket=seaweed.bucket, Key="app/empty.mp4")
    assert got["Body"].read() == b""


def test_bytes_changed_in_flight_are_refused_by_the_store(
    seaweed: SeaweedS3, tmp_path: Path
) -> None:
    """A part's bytes change between its hashing and its sending (the file is rewritten while the
    part goes out): the store checks the declared SHA-256, refuses the part (BadDigest), and the
    attempt's multipart upload is aborted."""
    data = os.urandom(12 * MiB)
    src = tmp_path / "changing.mp4"
    src.write_bytes(data)
    sent = [0]
    offset = 10 * MiB - 1  # the last byte of the second part

    def rewrite_during_second_part(n: int) -> None:
        # the first read of the second part's body for sending: its end is not read yet
        if sent[0] <= 5 * MiB < sent[0] + n:
            with src.open("r+b") as f:
                f.seek(offset)
                f.write(bytes([data[offset] ^ 0xFF]))
        sent[0] += n

    one_at_a_time = TransferConfig(
        multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=1
    )
    with pytest.raises(DeliveryError) as info:
        upload(
            src,
            seaweed.bucket,
            "changed/one.mp4",
            access=access_for(seaweed),
            metadata=META,
            config=one_at_a_time,
            progress=rewrite_during_second_part,
        )
    assert "BadDigest" in str(info.value) and "s3://recordings/changed/one.mp4" in str(info.value)
    client = seaweed.client()
    with pytest.raises(ClientError):
        client.head_object(Bucket=seaweed.bucket, Key="changed/one.mp4")
    assert (
        client.list_multipart_uploads(Bucket=seaweed.bucket, Prefix="changed/").get("Uploads", [])
        == []
    )


class _Relay(BaseHTTPRequestHandler):
    """Passes each request to the store and its answer back, through ``server.fault``."""

    protocol_version = "HTTP/1.1"
    server: _RelayServer

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        body = self.server.fault_request(self.command, self.path, body)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(self.server.upstream, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            out = self.server.fault_answer(self.command, self.path, dict(resp.getheaders()))
        finally:
            conn.close()
        self.send_response(resp.status)
        for name, value in out.items():
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", resp.getheader("Content-Length") or str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _RelayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        upstream: str,
        fault_request: Callable[[str, str, bytes], bytes],
        fault_answer: Callable[[str, str, dict[str, str]], dict[str, str]],
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.upstream = upstream
        self.fault_request = fault_request
        self.fault_answer = fault_answer


def _unchanged_request(method: str, path: str, body: bytes) -> bytes:
    return body


def _unchanged_answer(method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
    return headers


def _drop_last_part(method: str, path: str, body: bytes) -> bytes:
    """CompleteMultipartUpload asks for the parts but the last: the store assembles less."""
    if method == "POST" and "uploadId=" in path:
        return re.sub(rb"<Part>(?:(?!<Part>).)*</Part>(?=</CompleteMultipartUpload>)", b"", body)
    return body


def _other_checksum(method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
    """The store reports the checksum of other bytes for the object."""
    if method == "HEAD":
        for name in headers:
            if name.lower() == "x-amz-checksum-sha256":
                headers[name] = base64.b64encode(hashlib.sha256(b"other").digest()).decode() + "-3"
    return headers


@pytest.fixture
def relay(seaweed: SeaweedS3) -> Iterator[Callable[..., str]]:
    """Starts a relay to the store with the given faults; returns its endpoint URL."""
    started: list[_RelayServer] = []

    def start(
        fault_request: Callable[[str, str, bytes], bytes] = _unchanged_request,
        fault_answer: Callable[[str, str, dict[str, str]], dict[str, str]] = _unchanged_answer,
    ) -> str:
        server = _RelayServer(urlsplit(seaweed.endpoint_url).netloc, fault_request, fault_answer)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        ({"fault_request": _drop_last_part}, "the store holds 10485760 bytes, 12582912 were sent"),
        ({"fault_answer": _other_checksum}, "the store's SHA-256 checksum"),
    ],
    ids=["fewer-parts-assembled", "other-checksum-reported"],
)
def test_stored_object_unlike_the_bytes_sent_is_deleted(
    seaweed: SeaweedS3,
    relay: Callable[..., str],
    tmp_path: Path,
    faults: dict[str, Any],
    expected: str,
) -> None:
    """What the store holds after the upload is compared with what was sent: an object
    assembled from fewer parts than were sent (the completion request changed on the way), or
    one whose checksum is not that of the bytes sent, is deleted and the upload fails."""
    src = media_file(tmp_path / "big.mp4", 12 * MiB)
    access = access_for(seaweed)
    access = S3Access(
        region=access.region,
        endpoint_url=relay(**faults),
        access_key_id=access.access_key_id,
        secret_access_key=access.secret_access_key,
    )
    with pytest.raises(DeliveryError) as info:
        upload(
            src, seaweed.bucket, "relayed/one.mp4", access=access, metadata=META, config=SMALL_PARTS
        )
    assert expected in str(info.value) and "the object was deleted" in str(info.value)
    client = seaweed.client()
    with pytest.raises(ClientError):
        client.head_object(Bucket=seaweed.bucket, Key="relayed/one.mp4")
    assert (
        client.list_multipart_uploads(Bucket=seaweed.bucket, Prefix="relayed/").get("Uploads", [])
        == []
    )


def test_relay_without_faults_delivers(
    seaweed: SeaweedS3, relay: Callable[..., str], tmp_path: Path
) -> None:
    """The relay itself changes nothing: the same upload through it succeeds."""
    src = media_file(tmp_path / "big.mp4", 12 * MiB)
    access = access_for(seaweed)
    access = S3Access(
        region=access.region,
        endpoint_url=relay(),
        access_key_id=access.access_key_id,
        secret_access_key=access.secret_access_key,
    )
    result = upload(
        src, seaweed.bucket, "relayed/ok.mp4", access=access, metadata=META, config=SMALL_PARTS
    )
    body = seaweed.client().get_object(Bucket=seaweed.bucket, Key="relayed/ok.mp4")["Body"].read()
    assert body == src.read_bytes() and result.sha256 == hashlib.sha256(body).hexdigest()


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
