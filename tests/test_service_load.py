"""A short, bounded load on a live ``skymix serve`` (SQLite and PostgreSQL): 48 concurrent
clients for 5 s creating, reading and updating settings (four clients per application, writes
with If-Match) and listing recordings. No errors, no lost writes (every acknowledged write read
back), every operation done; no timing is asserted (benchmarks/bench_service_load.py is the
30-second run whose latencies docs/performance.md records)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from load_tools import OPERATIONS, prepare, run_load
from service_tools import Service

CLIENTS = 48
SECONDS = 5.0


def test_a_bounded_load_has_no_errors_and_loses_no_write(database_url: str, tmp_path: Path) -> None:
    service = Service(tmp_path / "data", database_url)
    service.data_dir.mkdir(parents=True)
    keys = prepare(service, apps=CLIENTS // 4, recordings_per_app=30)
    with service:
        result = asyncio.run(run_load(service.url, keys, CLIENTS, SECONDS))
    assert result.errors == []
    assert result.lost == []
    counts = result.percentiles()
    assert set(counts) == set(OPERATIONS)
    assert counts["create"]["count"] == CLIENTS
    assert counts["update"]["count"] >= CLIENTS  # every client wrote, most more than once
    log = service.log()
    assert "Traceback" not in log
    for key in keys.values():
        assert key not in log
