"""Jobs on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1 started by the test, ``skymix serve`` with ``SKYMIX_DASK`` on PostgreSQL, two
recordings mixed on the workers; the worker running one of them SIGKILLed mid-mix (the moment
read from the event log, the worker from the job's lease owner): the job is rerun on the other
worker and ends in LINK once, its object in SeaweedFS decoding. Then the service stopped while a
third job mixes: the cluster finishes it (LINK in its event log with the service down), and the
service started again shows it in LINK without running it again. The workers hold the secret key
and the database URL in their environment; the tasks carry neither."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import pytest

from dask_tools import DaskCluster
from postgres import Postgres
from seaweed import S3_ADMIN, SeaweedS3
from service_tools import Service
from skymix.errors import OptionsError, SecretKeyError
from skymix.service.config import ServiceConfig
from skymix.service.dask_executor import DATABASE, SECRET, run_dask_job
from skymix.service.jobs import LEASE_S
from test_service_recordings import follow, settings_doc, store_settings, synth_room


def events(service: Service, rid: str) -> list[dict[str, Any]]:
    path = service.data_dir / "recordings" / "acme" / rid / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("PPid:\t", 1)[1].split()[0])


def worker_running(cluster: DaskCluster, owner: str) -> str:
    """The name of the cluster's worker whose process (the nanny's child) is ``owner``."""
    pid = int(owner.rpartition("/")[2])
    nanny = parent_of(pid)
    (name,) = [name for name, proc in cluster.procs.items() if proc.pid in (pid, nanny)]
    return name


def test_jobs_run_on_dask_and_a_killed_workers_job_is_rerun_elsewhere(
    postgres: Postgres, seaweed: SeaweedS3, tmp_path: Path
) -> None:
    url = postgres.create_database("dask_jobs")
    cluster = DaskCluster(tmp_path / "dask")
    service = Service(tmp_path / "data", url, env={"SKYMIX_DASK": cluster.address})
    cluster.env = {
        "SKYMIX_SECRET_KEY": service.secret_key,
        "SKYMIX_DATABASE_URL": url,
        "SKYMIX_ALLOW_PRIVATE_NOTIFY": "1",  # the store is on 127.0.0.1: checked by each job
    }
    service.data_dir.mkdir(parents=True)
    key = service.create_app("acme")
    store_settings(service, "acme", settings_doc("acme", seaweed, "dask"))
    long_body = synth_room(service, "long", seed=7, seconds=4.0) | {"room": "long"}
    short_body = synth_room(service, "short", seed=8) | {"room": "short"}
    later_body = synth_room(service, "later", seed=9, seconds=3.0) | {"room": "later"}
    cluster.start()
    try:
        service.start()
        with service.client(key) as client:
            long_id = client.post("/rest/recordings", json=long_body).json()["id"]
            short_id = client.post("/rest/recordings", json=short_body).json()["id"]
            deadline = time.monotonic() + 60
            while "mixing" not in [e["event"] for e in events(service, long_id)]:
                assert time.monotonic() < deadline, events(service, long_id)
                time.sleep(0.01)
            (attempt,) = [e for e in events(service, long_id) if e["event"] == "job_attempt"]
            killed = worker_running(cluster, attempt["owner"])
            cluster.kill_worker(killed)
            killed_at = time.time()
            assert "mixed" not in [e["event"] for e in events(service, long_id)]
            ends = {rid: follow(client, rid)[-1] for rid in (long_id, short_id)}
            got = {rid: client.get(f"/rest/recordings/{rid}").json() for rid in ends}
        attempts = [e for e in events(service, long_id) if e["event"] == "job_attempt"]
        rerun_by = worker_running(cluster, attempts[-1]["owner"])
        # the service stopped mid-mix: the cluster finishes the job without it
        with service.client(key) as client:
            later_id = client.post("/rest/recordings", json=later_body).json()["id"]
        while "mixing" not in [e["event"] for e in events(service, later_id)]:
            assert time.monotonic() < deadline + 60, events(service, later_id)
            time.sleep(0.01)
        service.stop()
        while "LINK" not in [e.get("state") for e in events(service, later_id)]:
            assert time.monotonic() < deadline + 120, events(service, later_id)
            time.sleep(0.05)
        service.start()
        with service.client(key) as client:
            later = client.get(f"/rest/recordings/{later_id}").json()
    finally:
        service.stop()
        cluster.stop()
    assert later["state"] == "LINK" and later["url"]
    assert [e["event"] for e in events(service, later_id)].count("job_attempt") == 1
    for rid in (long_id, short_id, later_id):
        assert rid == later_id or ends[rid]["state"] == got[rid]["state"] == "LINK", got[rid]
        states = [e["state"] for e in events(service, rid) if e["event"] == "state"]
        assert states == ["START", "STOP", "LINK"]
        assert [e["event"] for e in events(service, rid)].count("upload") == 1
    assert len(attempts) == 2 and rerun_by == ("w2" if killed == "w1" else "w1")
    # the dead worker's lease is taken at once on its host, not after it expires
    rerun_at = datetime.fromisoformat(attempts[-1]["at"].replace("Z", "+00:00")).timestamp()
    assert rerun_at - killed_at < LEASE_S / 2
    listed = seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix="dask/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    assert keys == sorted(
        [
            f"dask/acme/long/{long_id}.mp4",
            f"dask/acme/short/{short_id}.mp4",
            f"dask/acme/later/{later_id}.mp4",
        ]
    )
    fetched = tmp_path / "long.mp4"
    seaweed.client().download_file(seaweed.bucket, f"dask/acme/long/{long_id}.mp4", str(fetched))
    with av.open(str(fetched)) as container:
        assert container.streams.video[0].width == 160
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 90  # 4 s
    assert len(got[long_id]["report"]["participants"]) == 2
    logs = service.log() + "".join(cluster.log(name) for name in ("scheduler", "w1", "w2"))
    assert "Traceback" not in service.log()
    for secret in (S3_ADMIN.secret_key, service.secret_key, key):
        assert secret not in logs


def test_a_worker_without_the_services_secrets_says_which_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SKYMIX_SECRET_KEY", "SKYMIX_SECRET_KEY_FILE", "SKYMIX_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    config_json = ServiceConfig(data_dir=tmp_path).model_dump_json()
    with pytest.raises(SecretKeyError, match="SKYMIX_SECRET_KEY"):
        run_dask_job(config_json, "01J0000000000000000000000", [SECRET])
    with pytest.raises(OptionsError) as raised:
        run_dask_job(config_json, "01J0000000000000000000000", [DATABASE])
    assert raised.value.field == "SKYMIX_DATABASE_URL"
    assert not os.listdir(tmp_path)  # nothing made: no key file, no database
