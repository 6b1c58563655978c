"""Session-wide fixtures shared by several test files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
