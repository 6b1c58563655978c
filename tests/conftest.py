"""Session-wide fixtures shared by several test files."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator

import pytest

from deliver_tools import Hooks, webhook_receiver
from postgres import Postgres
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server on 127.0.0.1 (and a Unix socket in its folder) for the session."""
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A new empty database of each kind the service runs on: an SQLite file, and a database
    on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'skymix.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database(f"t{next(_DATABASES)}")


_DATABASES = itertools.count(1)
