"""STOP -> LINK of a live room's recording: how long after STOP the download link comes, for
recordings of 1, 10 and 60 minutes with 4 publishers, through a live ``skymix serve``.

The recording: a real Janus videoroom recording of 2 Chromium publishers
(``mjr_tools.record_chromium_room``: Debian Chromium with its built-in fake camera and microphone,
Debian janus.js, a real Janus, in a private network namespace; VP8 640x480 20 fps + Opus, 6 s),
extended to the length by ``mjr_tools.extend_room`` (frames repeated with running sequence
numbers, timestamps and packet times) and copied once more under new user ids: 4 publishers, 8
.mjr files named as Janus names them. They are put where a live STOP leaves them
(``captures/<app>/live/<recording id>/``) and the job is started by ``POST /rest/recordings``
with options ``{}``: the job a live STOP hands over (mix at the defaults, upload, link). The
service runs on SQLite with one job worker; the storage is a real SeaweedFS S3 server
(tests/seaweed.py) on 127.0.0.1.

Recorded (``extra_info`` and printed): STOP -> LINK from the recording's own timings
(``created_at`` -> ``finished_at``: the job's queue wait, mix and delivery, split in
``queued_s``, ``mix_s``, ``deliver_s``), the same seen by the client (POST sent -> LINK read by
polling every 0.2 s), each divided by the recording's length; the CPU seconds the service spent
(its own and its finished job processes': on a shared machine the figure that depends least on
the others' load), the output's duration, the load average before and after.
docs/performance.md, "STOP to LINK", quotes them.

Run: .venv/bin/python -m pytest benchmarks/bench_live_stop_link.py -o python_files='bench_*.py'
--benchmark-enable -s    (one round each; the 60-minute case takes many minutes: leave it out
with ``-k 'not 60min'``, e.g. ``make bench BENCH_ARGS="-k 'not 60min'"``).
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from mjr_tools import extend_room, record_chromium_room  # noqa: E402
from seaweed import S3_ADMIN, SeaweedS3  # noqa: E402
from service_tools import Service, wait_until  # noqa: E402

APP = "bench"
PUBLISHERS = 4
POLL_S = 0.2


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The real recording: 2 Chromium publishers' audio and video .mjr files from Janus."""
    folder = tmp_path_factory.mktemp("janus")
    users = record_chromium_room(folder)
    files = sorted((folder / "rec").glob("*.mjr"))
    assert len(users) == 2 and len(files) == 4, files
    return files


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """The service on SQLite with application APP, its settings storing to SeaweedFS."""
    tmp = tmp_path_factory.mktemp("stop_link")
    seaweed = SeaweedS3(tmp / "seaweed", "recordings", (S3_ADMIN,))
    seaweed.start()
    try:
        server = Service(
            tmp / "data",
            f"sqlite:///{tmp / 'skymix.db'}",
            env={"SKYMIX_ALLOW_PRIVATE_NOTIFY": "1"},  # SeaweedFS on 127.0.0.1
        )
        server.data_dir.mkdir(parents=True)
        key = server.create_app(APP)
        with server:
            with server.client(key) as client:
                answer = client.post(
                    "/rest/recording/notifications",
                    json={
                        "app_id": APP,
                        "storage": {
                            "arn": f"arn:aws:s3:{seaweed.region}::{seaweed.bucket}/live/",
                            "access_key_id": S3_ADMIN.access_key,
                            "secret_access_key": S3_ADMIN.secret_key,
                            "endpoint_url": seaweed.endpoint_url,
                            "link_expiry_s": 3600,
                        },
                        "notifications": {"enabled": False, "emails": []},
                    },
                )
                assert answer.status_code == 201, answer.text
            yield server, key
    finally:
        seaweed.stop()


def _cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the service and of its finished job processes (each job runs in a child
    process of its own, joined when done)."""
    t = process.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def _children_cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the service's child processes it has joined."""
    t = process.cpu_times()
    return float(t.children_user + t.children_system)


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


@pytest.mark.parametrize("minutes", [1, 10, 60], ids=lambda m: f"{m}min")
def test_stop_to_link(
    benchmark: Any, minutes: int, source: list[Path], service: tuple[Service, str]
) -> None:
    server, key = service
    length_s = 60.0 * minutes
    name = f"live/stoplink-{minutes}min"
    folder = server.data_dir / "captures" / APP / name
    files = extend_room(source, folder, length_s, copies=PUBLISHERS // 2)
    body = {
        "captures": [f"{name}/{f.name}" for f in files],
        "room": f"stoplink-{minutes}min",
        "options": {},
    }
    seen: dict[str, Any] = {}
    benchmark.group = "live STOP -> LINK, 4 publishers"
    with server.client(key) as client:

        def once() -> None:
            sent = time.monotonic()
            answer = client.post("/rest/recordings", json=body)
            assert answer.status_code == 202, answer.text
            rid = answer.json()["id"]

            def done() -> bool:
                got = client.get(f"/rest/recordings/{rid}").json()
                if got["state"] in ("LINK", "ERROR"):
                    seen.update(got, wall_s=time.monotonic() - sent)
                    return True
                time.sleep(POLL_S)
                return False

            wait_until(done, lambda: f"no LINK for {rid}", bound_s=600 + 2 * length_s)

        assert server.proc is not None
        process = psutil.Process(server.proc.pid)
        load_before = os.getloadavg()[0]
        cpu_before, children_before = _cpu_s(process), _children_cpu_s(process)
        benchmark.pedantic(once, rounds=1, warmup_rounds=0)
        # the job's process ends after LINK: its CPU counts once the service has joined it
        wait_until(
            lambda: _children_cpu_s(process) > children_before, "the job process did not end"
        )
        cpu_s = _cpu_s(process) - cpu_before
        load_after = os.getloadavg()[0]
    assert seen["state"] == "LINK", seen.get("error")
    assert len(seen["report"]["participants"]) == PUBLISHERS, seen["report"]
    timings = seen["timings"]
    output = server.data_dir.parent / f"{seen['id']}.mp4"
    with urllib.request.urlopen(seen["url"], timeout=60) as response:
        output.write_bytes(response.read())
    with av.open(str(output)) as container:
        assert container.duration is not None
        duration_s = container.duration / av.time_base
        first = next(container.decode(video=0))
        size = f"{first.width}x{first.height}"
    output.unlink()
    assert abs(duration_s - length_s) < 2.0, duration_s
    stop_link_s = _seconds(timings["created_at"], timings["finished_at"])
    benchmark.extra_info.update(
        minutes=minutes,
        publishers=PUBLISHERS,
        mjr_mb=round(sum(f.stat().st_size for f in files) / 1e6, 1),
        output=size,
        output_s=round(duration_s, 1),
        stop_link_s=round(stop_link_s, 1),
        stop_link_ratio=round(stop_link_s / length_s, 4),
        client_wall_s=round(seen["wall_s"], 1),
        client_wall_ratio=round(seen["wall_s"] / length_s, 4),
        queued_s=round(_seconds(timings["created_at"], timings["job_started_at"]), 2),
        mix_s=round(_seconds(timings["job_started_at"], timings["mixed_at"]), 1),
        deliver_s=round(_seconds(timings["mixed_at"], timings["finished_at"]), 2),
        service_cpu_s=round(cpu_s, 1),
        service_cpu_ratio=round(cpu_s / length_s, 4),
        load_average_before=round(load_before, 1),
        load_average_after=round(load_after, 1),
    )
    for f in files:
        f.unlink()
    print(benchmark.extra_info)  # noqa: T201 - the figures docs/performance.md quotes
