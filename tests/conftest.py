"""Session-wide fixtures shared by several test files."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from deliver_tools import Hooks, webhook_receiver
from seaweed import NO_DELETE_PREFIX, S3_ADMIN, S3_READ_ONLY, S3_WRITE_ONLY, SeaweedS3


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real SeaweedFS S3 server on 127.0.0.1 with bucket ``recordings``, enforcing keys; no
    one may delete under NO_DELETE_PREFIX."""
    server = SeaweedS3(
        tmp_path_factory.mktemp("seaweed"),
        "recordings",
        (S3_ADMIN, S3_READ_ONLY, S3_WRITE_ONLY),
    )
    server.start()
    server.deny_delete(NO_DELETE_PREFIX)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    """A webhook receiver on 127.0.0.1 verifying signatures made with HOOK_SECRET."""
    with webhook_receiver() as state:
        yield state


@pytest.fixture(scope="session")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real (tiny) MP4 made by the ffmpeg CLI."""
    out = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=1"]
        + ["-c:v", "libx264", "-pix_fmt", "yuv420p", str(out)],
        check=True,
        timeout=60,
    )
    return out.read_bytes()
