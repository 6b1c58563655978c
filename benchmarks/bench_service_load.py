"""The service under load: 200 concurrent clients for 30 s against a live ``skymix serve`` on
loopback, creating, reading and updating notification settings (four clients per application,
each keeping its own address in the document's e-mail list, writes with If-Match: 409 means
read again and retry) and listing recordings (30 rows per application written before the run).
Once on SQLite, once on PostgreSQL (tests/postgres.py, a real server in a temp folder).

Asserted: no errors, no lost writes (every acknowledged write read back, each client's last one
in the final read of every document). Recorded (``extra_info`` and printed): per operation its
count and p50/p99 latency in ms, the requests per second, the If-Match conflicts retried, the
service's CPU milliseconds per request (its process only: the job workers are idle), the
clients' CPU seconds and the load average before the run;
docs/performance.md, "Service load", quotes them. The service and this process share the
machine's cores: the latencies include the clients' own CPU time.

Run: .venv/bin/python -m pytest benchmarks/bench_service_load.py -o python_files='bench_*.py' \
--benchmark-enable -s   (SKYMIX_LOAD_CLIENTS, default 200; SKYMIX_LOAD_SECONDS, default 30).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from load_tools import OPERATIONS, LoadResult, prepare, run_load  # noqa: E402
from postgres import Postgres  # noqa: E402
from service_tools import Service  # noqa: E402

CLIENTS = int(os.environ.get("SKYMIX_LOAD_CLIENTS", "200"))
SECONDS = float(os.environ.get("SKYMIX_LOAD_SECONDS", "30"))
PER_APP = 4


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_service_load(
    benchmark: Any, kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'skymix.db'}"
    else:
        server: Postgres = request.getfixturevalue("postgres")
        url = server.create_database("load")
    service = Service(tmp_path / "data", url)
    service.data_dir.mkdir(parents=True)
    keys = prepare(service, apps=-(-CLIENTS // PER_APP), recordings_per_app=30)
    results: list[LoadResult] = []
    benchmark.group = f"service load: {CLIENTS} clients for {SECONDS:g} s"
    with service:
        assert service.proc is not None
        process = psutil.Process(service.proc.pid)

        def once() -> None:
            results.append(asyncio.run(run_load(service.url, keys, CLIENTS, SECONDS, PER_APP)))

        load_before = os.getloadavg()[0]
        server_before, clients_before = process.cpu_times(), time.process_time()
        benchmark.pedantic(once, rounds=1, warmup_rounds=0)
        server_after, clients_after = process.cpu_times(), time.process_time()
    (result,) = results
    assert result.errors == [], result.errors[:10]
    assert result.lost == [], result.lost[:10]
    figures = result.percentiles()
    assert set(figures) == set(OPERATIONS)
    benchmark.extra_info.update(
        database=kind,
        clients=CLIENTS,
        seconds=SECONDS,
        requests_per_s=round(result.requests / SECONDS, 1),
        conflicts_retried=result.conflicts,
        server_cpu_ms_per_request=round(
            1000
            * (server_after.user + server_after.system - server_before.user - server_before.system)
            / result.requests,
            2,
        ),
        clients_cpu_s=round(clients_after - clients_before, 1),
        load_average_before=round(load_before, 1),
        **{f"{op}_{name}": value for op, row in figures.items() for name, value in row.items()},
    )
    print(benchmark.extra_info)  # noqa: T201 - the figures docs/performance.md quotes
