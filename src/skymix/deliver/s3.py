"""S3 storage: upload a recording, make its download link, prove the keys work.

Every call takes its destination and credentials explicitly (``S3Access``; parsing ARNs and
settings is another module's job). boto3 does the heavy lifting: its transfer manager sends
multipart uploads with parts in parallel, botocore's "standard" retry mode retries only what is
worth retrying (connection errors, throttling, 5xx, ``RequestTimeout``) with backoff, boundedly.

No partial objects, ever. S3 makes an object visible only when a single PUT or a
CompleteMultipartUpload succeeds, so the one thing that can be left behind is an unfinished
multipart upload (invisible, but billed). On any failure ``upload`` aborts every multipart upload
of the key that this attempt started: those whose ``CreateMultipartUpload`` answer it saw, and
those the store lists for the key as initiated since the attempt began (the answer may have been
lost with the connection). When the store itself is unreachable nothing can be aborted; a later
retry calls ``abort_stale_uploads`` first.

Secrets: the secret key is never logged, shown in a repr or put in an error message. botocore's
messages may name the access key id; that identifies the key and is not a secret.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from s3transfer.subscribers import BaseSubscriber
from ulid import ULID

from ..errors import DeliveryError

__all__ = [
    "MAX_PRESIGN_S",
    "TRANSFER_CONFIG",
    "Link",
    "S3Access",
    "UploadResult",
    "abort_stale_uploads",
    "abort_uploads",
    "check_access",
    "make_client",
    "presigned_link",
    "upload",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024

#: The one set of transfer tunables: multipart from 16 MiB on, 16 MiB parts (a 1 GB file is 64
#: parts, far under S3's 10 000), four parts in flight (the 2-core machines this runs on are
#: network-bound long before that).
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=16 * MiB,
    multipart_chunksize=16 * MiB,
    max_concurrency=4,
    use_threads=True,
)

#: SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600

#: Tries per request (the first and the retries) for errors worth retrying.
DEFAULT_ATTEMPTS = 3

#: How far apart this machine's clock and the store's may be when matching multipart uploads
#: listed by the store to the attempt that started them.
_CLOCK_SLACK = timedelta(seconds=60)

_HINTS: dict[str, str] = {
    "AccessDenied": "the keys lack permission for {action} on {bucket}/{key}",
    "AllAccessDisabled": "access to the bucket is disabled",
    "NoSuchBucket": "the bucket does not exist (check its name and the account)",
    "NoSuchKey": "the object does not exist",
    "NoSuchUpload": "the multipart upload no longer exists",
    "SignatureDoesNotMatch": "the secret access key does not belong to the access key id",
    "InvalidAccessKeyId": "the store does not know the access key id",
    "ExpiredToken": "the temporary credentials have expired",
    "InvalidToken": "the session token is not valid",
    "RequestTimeTooSkewed": "this machine's clock differs too much from the store's (sync it)",
    "AuthorizationHeaderMalformed": "the region is wrong for this bucket",
    "PermanentRedirect": "the region is wrong for this bucket",
    "IllegalLocationConstraintException": "the region is wrong for this bucket",
    "301": "the region is wrong for this bucket",
    "403": "the keys are refused (wrong key, secret or permission)",
    "404": "the bucket or object does not exist",
    "BadDigest": "the data changed in transit (checksum mismatch)",
    "XAmzContentSHA256Mismatch": "the data changed in transit (checksum mismatch)",
    "EntityTooLarge": "the object is larger than the store accepts",
    "MetadataTooLarge": "the metadata is larger than the store accepts (2 KB on AWS)",
    "SlowDown": "the store is throttling requests",
    "InternalError": "the store failed internally",
    "ServiceUnavailable": "the store is unavailable",
}


@dataclass(frozen=True, slots=True)
class S3Access:
    """Where the store is and which credentials to use.

    ``secret_access_key`` None means boto3's default credential chain (environment, profile,
    instance role). ``expires_at`` is the expiry of temporary credentials given explicitly (the
    chain's own expiry is read from it). The repr shows secrets masked.
    """

    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    attempts: int = DEFAULT_ATTEMPTS
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0

    def __repr__(self) -> str:
        return (
            f"S3Access(region={self.region!r}, endpoint_url={self.endpoint_url!r}, "
            f"access_key_id={self.access_key_id!r}, "
            f"secret_access_key={_mask(self.secret_access_key)!r}, "
            f"session_token={_mask(self.session_token)!r}, expires_at={self.expires_at!r})"
        )


@dataclass(frozen=True, slots=True)
class UploadResult:
    """A stored object: where it is, its size, SHA-256 (hex, computed locally), ETag, version."""

    bucket: str
    key: str
    size: int
    sha256: str
    etag: str
    version: str | None


@dataclass(frozen=True, slots=True)
class Link:
    """A presigned GET URL and when it stops working (UTC)."""

    url: str
    expires_at: datetime


def _mask(secret: str | None) -> str | None:
    """``****WQON``: enough to tell two secrets apart, never enough to use one."""
    if secret is None:
        return None
    return "****" + (secret[-4:] if len(secret) >= 12 else "")


def make_client(access: S3Access, *, sign_payload: bool | None = None) -> Any:
    """A boto3 S3 client for ``access``.

    Path-style addressing when an endpoint is given (SeaweedFS, MinIO and most S3-compatible
    stores serve buckets under the path, not as host names); botocore's standard retry mode
    (connection errors, throttling, 5xx, with backoff) bounded to ``access.attempts``;
    connect and read timeouts so a silent store cannot hang a delivery. ``sign_payload``
    False leaves request bodies out of the signature (botocore's default, None, signs them over
    http and not over https): for a caller that sends a checksum header the store verifies.
    """
    if access.attempts < 1:
        raise DeliveryError(f"attempts must be at least 1, got {access.attempts}")
    config = Config(
        region_name=access.region,
        s3={
            "addressing_style": "path" if access.endpoint_url else "auto",
            "payload_signing_enabled": sign_payload,
        },
        retries={"mode": "standard", "max_attempts": access.attempts},
        connect_timeout=access.connect_timeout_s,
        read_timeout=access.read_timeout_s,
        signature_version="s3v4",
    )
    session = _session(access)
    return session.client("s3", endpoint_url=access.endpoint_url, config=config)


def _session(access: S3Access) -> boto3.session.Session:
    if access.secret_access_key is None:
        return boto3.session.Session(region_name=access.region)
    if not access.access_key_id:
        raise DeliveryError("a secret access key was given without an access key id")
    return boto3.session.Session(
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        aws_session_token=access.session_token,
        region_name=access.region,
    )


def _error(
    what: str, action: str, bucket: str, key: str, exc: BaseException, access: S3Access
) -> DeliveryError:
    """A DeliveryError naming the failed step, the store's error code and a hint; no secret."""
    code, detail = _code_of(exc, access)
    hint = _HINTS.get(code, "").format(action=action, bucket=bucket, key=key)
    message = f"{what} s3://{bucket}/{key} failed: {code}"
    if hint:
        message += f" ({hint})"
    if detail:
        message += f": {detail}"
    return DeliveryError(_scrub(message, access), exc)


def _code_of(exc: BaseException, access: S3Access) -> tuple[str, str]:
    """The store's error code (or the client-side failure's kind) and a short detail."""
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(err.get("Code") or meta.get("HTTPStatusCode"))
        detail = str(err.get("Message") or "")
        region = err.get("Region") or meta.get("HTTPHeaders", {}).get("x-amz-bucket-region")
        if region and region != access.region:
            detail += f" (the bucket is in {region}, not {access.region})"
        return code, detail.strip()
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return "NoCredentials", "no credentials were given and the default chain found none"
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | ConnectionError):
        return "ConnectionError", f"cannot reach the store at {access.endpoint_url or 'AWS'}"
    if isinstance(
        exc, botocore.exceptions.ConnectionClosedError | botocore.exceptions.ReadTimeoutError
    ):
        return "ConnectionError", f"the store at {access.endpoint_url or 'AWS'} stopped answering"
    return type(exc).__name__, str(exc)


def _scrub(text: str, access: S3Access) -> str:
    for secret in (access.secret_access_key, access.session_token):
        if secret:
            text = text.replace(secret, "****")
    return text


def _metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """S3 metadata travels in HTTP headers: lower-case ASCII names, values percent-encoded
    where they are not printable ASCII (a room named in any script still fits)."""
    out: dict[str, str] = {}
    for name, value in metadata.items():
        if not name or not name.isascii() or not name.replace("-", "").isalnum():
            raise DeliveryError(f"metadata name {name!r} must be ASCII letters, digits and '-'")
        text = str(value)
        if not (text.isascii() and text.isprintable()):
            text = quote(text, safe=" !\"#$&'()*+,/:;<=>?@[\\]^`{|}~")
        out[name.lower()] = text
    return out


class _SentDigests:
    """The SHA-256 of each part as it is sent, and the whole file's from those same bytes.

    A hook reads each part just before its request is built (in the transfer manager's worker
    thread, while other parts are in flight), hashes it and declares the digest as the part's
    ``ChecksumSHA256``: the store verifies the part against it, botocore computes no checksum
    of its own, and no pass over the file precedes the first byte. The whole file's digest is
    fed the same bytes in part order (a part read ahead of its turn waits, so at most about
    one part per worker thread is held); it is therefore the digest of what the store holds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[int, bytes] = {}
        self._waiting: dict[int, bytes] = {}
        self._next = 1
        self._draining = False
        self._whole = hashlib.sha256()
        self.changed = False
        self.multipart = False

    def before_part(self, params: dict[str, Any], **kwargs: object) -> None:
        """botocore's ``before-parameter-build`` hook for PutObject and UploadPart."""
        body = params.get("Body")
        if body is None or "ChecksumSHA256" in params:
            return
        self.multipart = self.multipart or "PartNumber" in params
        # callbacks off while reading: the bytes are not being sent yet (s3transfer turns
        # them on once the request is built)
        getattr(body, "signal_not_transferring", lambda: None)()
        data = body.read()
        body.seek(0)
        digest = self.add(int(params.get("PartNumber", 1)), data)
        params["ChecksumSHA256"] = base64.b64encode(digest).decode()

    def add(self, number: int, data: bytes) -> bytes:
        """Record part ``number`` (from 1) and hand its bytes to the whole file's digest."""
        digest = hashlib.sha256(data).digest()
        with self._lock:
            if self._parts.setdefault(number, digest) != digest:
                self.changed = True
            if number < self._next:
                return digest
            self._waiting[number] = data
            if self._draining:
                return digest
            self._draining = True
        while True:
            with self._lock:
                ready = self._waiting.pop(self._next, None)
                if ready is None:
                    self._draining = False
                    return digest
                self._next += 1
            self._whole.update(ready)

    def results(self) -> tuple[str, str]:
        """The whole file's SHA-256 (hex) and the checksum the store must report (base64): the
        whole file's digest for a single PUT; for a multipart upload the digest of the parts'
        digests, then "-" and the number of parts. Raises if a part was missed or changed."""
        with self._lock:
            count = len(self._parts)
            if self.changed:
                raise DeliveryError("the file changed while it was being sent")
            if self._waiting or self._next != count + 1:
                raise DeliveryError(f"parts {sorted(self._parts)} do not make a whole file")
            parts = [self._parts[n] for n in range(1, count + 1)]
            whole = self._whole.copy()
        if not self.multipart:
            return whole.hexdigest(), base64.b64encode(whole.digest()).decode()
        composite = hashlib.sha256(b"".join(parts)).digest()
        return whole.hexdigest(), f"{base64.b64encode(composite).decode()}-{count}"


class _Progress(BaseSubscriber):  # type: ignore[misc]
    """Hands the transfer manager's byte counts to a plain callable."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        self._fn = fn

    def on_progress(self, future: object, bytes_transferred: int, **kwargs: object) -> None:
        self._fn(bytes_transferred)


def upload(
    path: str | Path,
    bucket: str,
    key: str,
    *,
    access: S3Access,
    metadata: Mapping[str, str],
    content_type: str = "video/mp4",
    config: TransferConfig = TRANSFER_CONFIG,
    progress: Callable[[int], None] | None = None,
    on_multipart_start: Callable[[str], None] | None = None,
) -> UploadResult:
    """Upload ``path`` to ``bucket``/``key`` with a SHA-256 checksum the store verifies.

    ``metadata`` (recording id, room, duration, participants) is stored with the object; values
    that are not printable ASCII are percent-encoded. Each part is hashed as it is sent (no
    pass over the file first) and the store verifies it; the stored object's size and checksum
    are then compared with those of the bytes sent (a mismatch is deleted), and the whole
    file's SHA-256, of the same bytes, is returned. ``progress`` receives byte counts as parts
    are sent.
    ``on_multipart_start`` receives the id of a multipart upload as soon as the store gives it,
    before any part is sent: a caller that records it can abort that upload after a crash
    (``abort_uploads``) without the right to list the bucket's uploads. On
    any failure the multipart uploads this attempt started are aborted and a DeliveryError
    names the bucket, key, the store's error code and a hint; the local file is never touched.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DeliveryError(f"cannot read {path}: {exc.strerror}", exc) from exc
    extra = {
        "ChecksumAlgorithm": "SHA256",
        "ContentType": content_type,
        "Metadata": _metadata(metadata),
    }
    # the SHA-256 checksum header, which the store verifies and the signature covers, protects
    # the body: no second SHA-256 of it for the signature (the default over http)
    client = make_client(access, sign_payload=False)
    sent = _SentDigests()
    for operation in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-parameter-build.s3.{operation}", sent.before_part)
    started_ids: set[str] = set()

    def seen_create(parsed: Mapping[str, Any], **kwargs: object) -> None:
        if "UploadId" in parsed:
            started_ids.add(str(parsed["UploadId"]))
            if on_multipart_start is not None:
                on_multipart_start(str(parsed["UploadId"]))

    client.meta.events.register("after-call.s3.CreateMultipartUpload", seen_create)
    began = datetime.now(UTC)
    t0 = time.monotonic()
    subscribers = [_Progress(progress)] if progress else None
    try:
        with create_transfer_manager(client, config) as manager:
            future = manager.upload(
                str(path), bucket, key, extra_args=extra, subscribers=subscribers
            )
            future.result()
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except BaseException as exc:
        _abort_attempt(client, bucket, key, started_ids, began)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise _error("upload to", "s3:PutObject", bucket, key, exc, access) from None
    digest = _verify(client, bucket, key, head, size, sent, access)
    log.info(
        "uploaded %s (%d bytes) to s3://%s/%s in %.2f s",
        path.name,
        size,
        bucket,
        key,
        time.monotonic() - t0,
    )
    return UploadResult(
        bucket=bucket,
        key=key,
        size=size,
        sha256=digest,
        etag=str(head.get("ETag", "")).strip('"'),
        version=head.get("VersionId"),
    )


def _verify(
    client: Any,
    bucket: str,
    key: str,
    head: Mapping[str, Any],
    size: int,
    sent: _SentDigests,
    access: S3Access,
) -> str:
    """The stored object has the file's size and the checksum of the bytes sent, or it is
    deleted: a wrong object must not look delivered. A store that reports no checksum is
    trusted on its size. Returns the whole file's SHA-256 (hex)."""
    stored = head.get("ChecksumSHA256")
    problem = None
    try:
        digest, checksum = sent.results()
    except DeliveryError as exc:
        digest, checksum, problem = "", "", str(exc)
    if problem is not None:
        log.debug("s3://%s/%s: %s", bucket, key, problem)
    elif int(head["ContentLength"]) != size:
        problem = f"the store holds {head['ContentLength']} bytes, {size} were sent"
    elif stored is not None and stored != checksum:
        problem = f"the store's SHA-256 checksum {stored} is not that of the bytes sent {checksum}"
    elif stored is None:
        log.debug("s3://%s/%s: the store reports no checksum", bucket, key)
    if problem is None:
        return digest
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _error(
            "removing the mismatched", "s3:DeleteObject", bucket, key, exc, access
        ) from None
    raise DeliveryError(f"upload to s3://{bucket}/{key}: {problem}; the object was deleted")


def _abort_attempt(
    client: Any, bucket: str, key: str, started_ids: set[str], began: datetime
) -> None:
    """Abort the multipart uploads of ``key`` this attempt started; best effort (the store may
    be gone: then ``abort_stale_uploads`` cleans up on the next try)."""
    ids = set(started_ids)
    try:
        for upload_ in _list_uploads(client, bucket, key):
            initiated = upload_.get("Initiated")
            if isinstance(initiated, datetime) and initiated >= began - _CLOCK_SLACK:
                ids.add(str(upload_["UploadId"]))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        log.warning("cannot list multipart uploads of s3://%s/%s: %s", bucket, key, type(exc))
    for upload_id in sorted(ids):
        _abort_one(client, bucket, key, upload_id)


def _abort_one(client: Any, bucket: str, key: str, upload_id: str) -> bool:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
            return False
        log.warning("cannot abort multipart upload of s3://%s/%s: %s", bucket, key, type(exc))
        return False
    except botocore.exceptions.BotoCoreError as exc:
        log.warning("cannot abort multipart upload of s3://%s/%s: %s", bucket, key, type(exc))
        return False
    log.info("aborted multipart upload %s of s3://%s/%s", upload_id, bucket, key)
    return True


def _list_uploads(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """The unfinished multipart uploads of exactly ``key`` (the listing is by prefix)."""
    found: list[dict[str, Any]] = []
    paginator = client.get_paginator("list_multipart_uploads")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        found.extend(u for u in page.get("Uploads", []) if u.get("Key") == key)
    return found


def abort_uploads(bucket: str, key: str, upload_ids: Iterable[str], *, access: S3Access) -> int:
    """Abort the multipart uploads of ``key`` with these ids (those an earlier attempt
    recorded); ids the store no longer knows are skipped. Returns how many were aborted. Needs
    only s3:AbortMultipartUpload, which the least-privilege policy grants."""
    client = make_client(access)
    return sum(_abort_one(client, bucket, key, upload_id) for upload_id in upload_ids)


def abort_stale_uploads(bucket: str, key: str, *, access: S3Access) -> int:
    """Abort every unfinished multipart upload of ``key`` the store lists (a failed earlier
    attempt's whose id was never recorded), before a retry; returns how many were aborted. Needs
    s3:ListBucketMultipartUploads, a bucket action the least-privilege policy does not grant:
    callers treat its DeliveryError as "not checked" and rely on ``abort_uploads``."""
    client = make_client(access)
    try:
        uploads = _list_uploads(client, bucket, key)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise _error(
            "listing multipart uploads of",
            "s3:ListBucketMultipartUploads",
            bucket,
            key,
            exc,
            access,
        ) from None
    return sum(_abort_one(client, bucket, key, str(u["UploadId"])) for u in uploads)


def _credential_expiry(access: S3Access) -> datetime | None:
    """When the credentials stop working: given explicitly, or the default chain's own."""
    if access.expires_at is not None:
        return access.expires_at
    if access.secret_access_key is not None:
        return None
    creds = _session(access).get_credentials()
    expiry = getattr(creds, "_expiry_time", None)
    return expiry if isinstance(expiry, datetime) else None


def presigned_link(
    bucket: str,
    key: str,
    expiry_s: int,
    *,
    access: S3Access,
    now: datetime | None = None,
) -> Link:
    """A presigned GET URL for ``bucket``/``key`` valid ``expiry_s`` seconds, capped at 7 days
    (SigV4's limit) and at the credentials' own expiry (``access.expires_at``, or the default
    chain's); ``expires_at`` says when it ends."""
    if expiry_s < 1:
        raise DeliveryError(f"a link must be valid at least 1 s, got {expiry_s}")
    now = now or datetime.now(UTC)
    seconds = min(int(expiry_s), MAX_PRESIGN_S)
    cred_expiry = _credential_expiry(access)
    if cred_expiry is not None:
        left = int((cred_expiry - now).total_seconds())
        if left < 1:
            raise DeliveryError(
                f"link to s3://{bucket}/{key}: the temporary credentials expired at {cred_expiry}"
            )
        seconds = min(seconds, left)
    if seconds < expiry_s:
        log.info(
            "link to s3://%s/%s valid %d s, not the %d s asked", bucket, key, seconds, expiry_s
        )
    client = make_client(access)
    try:
        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds
        )
    except botocore.exceptions.BotoCoreError as exc:
        raise _error("presigning a link to", "s3:GetObject", bucket, key, exc, access) from None
    return Link(url=str(url), expires_at=now + timedelta(seconds=seconds))


def check_access(bucket: str, prefix: str, *, access: S3Access) -> None:
    """Prove the keys can write, read and delete a probe object under ``prefix``.

    Raises a DeliveryError naming the step that failed (PutObject, GetObject, DeleteObject) and
    why: AccessDenied for that action, NoSuchBucket, wrong region, clock skew, an unknown key id
    or a secret that does not match it.
    """
    stem = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    key = f"{stem}.skymix-probe-{ULID()}"
    body = b"skymix access probe\n"
    client = make_client(access)
    steps: list[tuple[str, Callable[[], object]]] = [
        (
            "s3:PutObject",
            lambda: client.put_object(
                Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256"
            ),
        ),
        ("s3:GetObject", lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read()),
        ("s3:DeleteObject", lambda: client.delete_object(Bucket=bucket, Key=key)),
    ]
    for action, step in steps:
        try:
            result = step()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            what = f"access check ({action}) on"
            if action == "s3:GetObject":
                _delete_quietly(client, bucket, key)
            elif action == "s3:DeleteObject":
                what = f"access check ({action}; the probe object is left behind) on"
            raise _error(what, action, bucket, key, exc, access) from None
        if action == "s3:GetObject" and result != body:
            raise DeliveryError(f"access check on s3://{bucket}/{key}: the probe read back differs")
    log.info("access to s3://%s/%s checked: put, get and delete work", bucket, stem)


def _delete_quietly(client: Any, bucket: str, key: str) -> None:
    """Remove the probe after a failed read, if the keys allow it."""
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        log.warning("access probe s3://%s/%s could not be deleted", bucket, key)
