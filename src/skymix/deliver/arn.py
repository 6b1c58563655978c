"""Where a recording goes: a local path, ``s3://bucket/key``, or an S3 ARN as customers type it,
and the least-privilege IAM policy for an S3 destination.

Customers copy ARNs from several places, so both forms are taken: the product's own example,
``arn:aws:s3:us-west-2::bucket/prefix`` (region filled in, account empty), and the standard
``arn:aws:s3:::bucket/prefix``, in the partitions aws, aws-cn and aws-us-gov. Each malformed part
gets its own message (a typo in a region must not read as "bad ARN"). Bucket names follow S3's
general purpose naming rules, checked here rather than by a failed upload an hour later.

A destination whose last part ends in .mp4 or .webm names the object itself; otherwise it is a
prefix (kept with a trailing "/", so that ``bucket/calls/*`` in the policy cannot match
``calls-old/``) under which the settings' key template names the object.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import OptionsError

__all__ = [
    "OBJECT_SUFFIXES",
    "PARTITIONS",
    "POLICY_ACTIONS",
    "Destination",
    "check_bucket_name",
    "parse_destination",
    "s3_policy",
]

#: A destination ending in one of these names the object; otherwise it is a prefix.
OBJECT_SUFFIXES = (".mp4", ".webm")

#: partition -> the start every region of it has ("" for any other, the commercial one)
PARTITIONS = {"aws": "", "aws-cn": "cn-", "aws-us-gov": "us-gov-"}

#: What skymix does under the prefix: write (PutObject also covers CreateMultipartUpload,
#: UploadPart and CompleteMultipartUpload), abort and list a failed multipart upload, read for
#: download links, delete the probe object of a credentials check.
POLICY_ACTIONS = (
    "s3:PutObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
    "s3:GetObject",
    "s3:DeleteObject",
)

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_BUCKET_CHARS = re.compile(r"[a-z0-9.-]+")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_OTHER_S3_SERVICES = ("s3-object-lambda", "s3-outposts", "s3express", "s3tables")
_RESOURCE_TYPES = {
    "accesspoint": "an access point ARN",
    "job": "a batch operations job ARN",
    "storage-lens": "a Storage Lens ARN",
    "storage-lens-group": "a Storage Lens group ARN",
    "access-grants": "an access grants ARN",
    "outpost": "an Outposts ARN",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Destination:
    """A parsed destination. ``kind`` "local": ``path`` is set. ``kind`` "s3": ``bucket``,
    ``key`` (the object's key, or a prefix ending in "/", or "" for the bucket's top),
    ``partition`` ("aws" for an s3:// URL) and ``region`` (None when the ARN or URL does not
    say; the store's region is then asked or configured)."""

    kind: Literal["local", "s3"]
    path: str | None = None
    bucket: str | None = None
    key: str = ""
    region: str | None = None
    partition: str | None = None

    @property
    def names_object(self) -> bool:
        """Whether the destination names the object itself (it ends in .mp4 or .webm)."""
        where = self.path if self.kind == "local" else self.key
        return (where or "").lower().endswith(OBJECT_SUFFIXES)

    @property
    def prefix(self) -> str:
        """The prefix objects go under: the key itself for a prefix, the named object's
        folder (with its "/") for an object."""
        if self.names_object:
            return self.key.rpartition("/")[0] + "/" if "/" in self.key else ""
        return self.key

    def object_key(self, name: str) -> str:
        """Where an object called ``name`` (the rendered key template) goes: the destination
        itself when it names an object, else ``name`` under the prefix (a path under the
        folder for a local destination)."""
        if self.kind == "local":
            assert self.path is not None
            return self.path if self.names_object else os.path.join(self.path, name)
        return self.key if self.names_object else self.key + name

    def __str__(self) -> str:
        if self.kind == "local":
            return str(self.path)
        return f"s3://{self.bucket}/{self.key}"


def check_bucket_name(name: str) -> str:
    """``name`` if it is a valid general purpose S3 bucket name; OptionsError saying which
    rule it breaks otherwise."""
    shown = repr(name) if len(name) <= 80 else repr(name[:77] + "...")
    if not 3 <= len(name) <= 63:
        raise OptionsError(f"bad bucket name {shown}: must be 3 to 63 characters long")
    if not _BUCKET_CHARS.fullmatch(name):
        raise OptionsError(
            f"bad bucket name {shown}: only lowercase letters, digits, dots and hyphens"
        )
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise OptionsError(f"bad bucket name {shown}: must begin and end with a letter or digit")
    if ".." in name:
        raise OptionsError(f"bad bucket name {shown}: must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        raise OptionsError(f"bad bucket name {shown}: must not be an IP address")
    for start in _BUCKET_PREFIXES:
        if name.startswith(start):
            raise OptionsError(f"bad bucket name {shown}: must not begin with {start!r}")
    for end in _BUCKET_SUFFIXES:
        if name.endswith(end):
            raise OptionsError(f"bad bucket name {shown}: must not end with {end!r}")
    return name


def _check_key(key: str, what: str) -> str:
    """A key or prefix as given (a prefix gets its trailing "/"); OptionsError when a part of
    it is empty, "." or "..", or it holds control characters."""
    if _CONTROL.search(key):
        raise OptionsError(f"bad {what}: control characters are not allowed")
    if len(key.encode("utf-8")) > 1024:
        raise OptionsError(f"bad {what}: longer than S3's 1024 bytes")
    parts = key.removesuffix("/").split("/") if key else []
    for part in parts:
        if part in ("", ".", ".."):
            raise OptionsError(f"bad {what}: empty, '.' and '..' parts are not allowed")
    if key and not key.lower().endswith(OBJECT_SUFFIXES) and not key.endswith("/"):
        key += "/"
    return key


def _bucket_and_key(resource: str, what: str) -> tuple[str, str]:
    bucket, _, key = resource.partition("/")
    if not bucket:
        raise OptionsError(f"bad {what}: no bucket name")
    return check_bucket_name(bucket), _check_key(key, f"{what} key or prefix")


def _parse_arn(text: str) -> Destination:
    parts = text.split(":", 5)
    if len(parts) != 6:
        raise OptionsError(
            "not an ARN: expected arn:partition:s3:region:account:bucket/prefix, "
            f"found {len(parts)} of its 6 parts"
        )
    _, partition, service, region, account, resource = parts
    if partition not in PARTITIONS:
        raise OptionsError(
            f"unknown ARN partition {partition!r} (expected one of {', '.join(PARTITIONS)})"
        )
    if service != "s3":
        kind = "an S3 service other than buckets" if service in _OTHER_S3_SERVICES else "not S3"
        raise OptionsError(f"not an S3 bucket ARN: service {service!r} is {kind}")
    if region:
        if not _REGION.fullmatch(region):
            raise OptionsError(f"bad region {region!r} in ARN (expected a name like us-west-2)")
        home = PARTITIONS[partition]
        in_partition = (
            region.startswith(home)
            if home
            else not any(region.startswith(h) for h in PARTITIONS.values() if h)
        )
        if not in_partition:
            raise OptionsError(f"region {region!r} is not in partition {partition!r}")
    resource_type = resource.split("/", 1)[0].split(":", 1)[0]
    if resource_type in _RESOURCE_TYPES:
        raise OptionsError(
            f"{_RESOURCE_TYPES[resource_type]} where a bucket is needed "
            "(expected arn:partition:s3:::bucket/prefix)"
        )
    if account:
        raise OptionsError(
            "S3 bucket ARNs have no account id: leave it empty (arn:partition:s3:::bucket/prefix)"
        )
    if "*" in resource or "?" in resource:
        raise OptionsError(
            "an object ARN pattern (with * or ?) where a bucket is needed "
            "(expected arn:partition:s3:::bucket/prefix)"
        )
    if ":" in resource:
        raise OptionsError("bad ARN resource: a bucket name has no ':'")
    bucket, key = _bucket_and_key(resource, "ARN")
    return Destination("s3", bucket=bucket, key=key, region=region or None, partition=partition)


def parse_destination(text: str) -> Destination:
    """A destination from what a customer or operator typed: an ARN, an s3:// URL, or a local
    path; OptionsError naming the part that is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise OptionsError("empty destination")
    if text != text.strip():
        raise OptionsError("destination has leading or trailing spaces")
    if text.lower().startswith("arn:"):
        if not text.startswith("arn:"):
            raise OptionsError("not an ARN: it must begin with lowercase 'arn:'")
        return _parse_arn(text)
    scheme, sep, rest = text.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        if scheme.lower() != "s3":
            raise OptionsError(
                f"unsupported destination scheme {scheme!r} "
                "(expected an S3 ARN, an s3:// URL or a local path)"
            )
        bucket, key = _bucket_and_key(rest, "s3:// URL")
        return Destination("s3", bucket=bucket, key=key, partition="aws")
    if _CONTROL.search(text):
        raise OptionsError("bad local path: control characters are not allowed")
    return Destination("local", path=text)


def s3_policy(destination: Destination | str) -> dict[str, Any]:
    """The least-privilege IAM policy a customer attaches to the user whose keys skymix gets:
    the object actions of POLICY_ACTIONS on ``arn:<partition>:s3:::bucket/prefix*`` only,
    nothing on the bucket or the account. For a destination naming an object, the prefix is
    the object's folder (a credentials check writes its probe object there)."""
    if isinstance(destination, str):
        destination = parse_destination(destination)
    if destination.kind != "s3":
        raise OptionsError("a local destination has no IAM policy: expected an S3 ARN or URL")
    partition = destination.partition or "aws"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SkymixRecordingObjects",
                "Effect": "Allow",
                "Action": list(POLICY_ACTIONS),
                "Resource": f"arn:{partition}:s3:::{destination.bucket}/{destination.prefix}*",
            }
        ],
    }
