"""``skymix serve`` SIGKILLed while a job mixes, uploads or notifies, then started again: the
job is found in the database, the event log says what is left, and the recording ends in LINK
exactly once, as one object in the bucket, no multipart upload left unfinished, every
notification with one webhook-id. And the outbox: a notification that failed its tries in the
job is sent again on its schedule, across a restart, with the same webhook-id.

The phase is read from the event log, as tests/test_deliver_backup.py's killed-server test
does; SeaweedFS is paused (SIGSTOP) to hold a job in its upload, and a receiver that listens
but does not answer yet holds one in its notification. The database kinds alternate (SQLite,
PostgreSQL) to keep the file short: each test is two service starts and up to two mixes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from deliver_tools import HOOK_SECRET, Hooks, free_port
from postgres import Postgres
from seaweed import S3_ADMIN, SeaweedS3
from service_tools import Service, wait_until
from skymix.demo.receiver import WebhookReceiver
from skymix.service.config import ServiceConfig
from skymix.service.models import Job, OutboxItem, RecordingRow
from skymix.service.state import ServiceState
from test_service_recordings import follow, settings_doc, store_settings, synth_room


def log_events(service: Service, rid: str) -> list[dict[str, Any]]:
    path = service.data_dir / "recordings" / "acme" / rid / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for(service: Service, rid: str, done: Callable[[list[dict[str, Any]]], bool]) -> None:
    wait_until(lambda: done(log_events(service, rid)), lambda: log_events(service, rid))


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def worker_gone(pid: int) -> bool:
    """True once the process is gone (or a zombie nobody reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def stop_gracefully(service: Service) -> None:
    """SIGTERM, and the service shuts down by itself (exit 143, the command line's status for
    SIGTERM): it waits for no running job and no open event stream (a wait would outlast the
    bound and fail the test)."""
    assert service.proc is not None
    proc = service.proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    service.proc = None


def kill_service(service: Service, rid: str, graceful: bool = False) -> None:
    """SIGKILL the service (or SIGTERM: stopped in a few seconds, not after the job); its
    job's worker goes with it."""
    attempts = [e for e in log_events(service, rid) if e["event"] == "job_attempt"]
    if graceful:
        stop_gracefully(service)
    else:
        service.kill()
    pid = int(attempts[-1]["owner"].rpartition("/")[2])
    wait_until(lambda: worker_gone(pid), "the job's worker outlived the service", 10)


def finish(service: Service, key: str, rid: str) -> dict[str, Any]:
    """Start the service again and follow the recording to its end; the recording."""
    service.start()
    with service.client(key) as client:
        states = follow(client, rid)
        assert states[-1]["state"] == "LINK", states
        recording: dict[str, Any] = client.get(f"/rest/recordings/{rid}").json()
    # the row shows LINK as soon as it is announced; the job's end is written just after it
    wait_until(lambda: job_of(service, rid)[0] != "running", lambda: job_of(service, rid))
    return recording


def check_delivered_once(
    service: Service, seaweed: SeaweedS3, prefix: str, rid: str, ids: list[str]
) -> None:
    events = log_events(service, rid)
    assert [e["state"] for e in events if e["event"] == "state"] == ["START", "STOP", "LINK"]
    assert kinds(events).count("upload") == 1
    client = seaweed.client()
    listed = client.list_objects_v2(Bucket=seaweed.bucket, Prefix=f"{prefix}/")
    assert [o["Key"] for o in listed.get("Contents", [])] == [f"{prefix}/acme/crash/{rid}.mp4"]
    unfinished = client.list_multipart_uploads(Bucket=seaweed.bucket, Prefix=f"{prefix}/")
    assert unfinished.get("Uploads", []) == []
    assert ids and set(ids) == {f"msg_{rid}_1"}
    attempts = [e for e in events if e["event"] == "job_attempt"]
    assert len(attempts) == 2
    assert "Traceback" not in service.log()
    for secret in (S3_ADMIN.secret_key, HOOK_SECRET):
        assert secret not in service.log()


def start_job(
    service: Service, seaweed: SeaweedS3, prefix: str, hook_url: str, seconds: float = 2.0
) -> tuple[str, str]:
    """The service started with app acme (its settings naming ``hook_url``) and a job posted;
    the app's key and the recording id."""
    service.data_dir.mkdir(parents=True, exist_ok=True)
    key = service.create_app("acme")
    store_settings(service, "acme", settings_doc("acme", seaweed, prefix, hook_url))
    body = synth_room(service, "crash", seed=5, seconds=seconds) | {"room": "crash"}
    service.start()
    with service.client(key) as client:
        answer = client.post("/rest/recordings", json=body)
        assert answer.status_code == 202, answer.text
    return key, answer.json()["id"]


def job_of(service: Service, rid: str) -> tuple[str, int]:
    """The job's status and attempts, read from the database."""
    state = ServiceState.open(ServiceConfig.load(environ=service.environment()), migrate=False)
    try:
        with state.db.session() as session:
            job = session.get(Job, rid)
            assert job is not None
            return job.status, job.attempts
    finally:
        state.close()


def service_for(tmp_path: Path, database_url: str) -> Service:
    return Service(tmp_path / "data", database_url, env={"SKYMIX_ALLOW_PRIVATE_NOTIFY": "1"})


@pytest.mark.parametrize("graceful", [False, True], ids=["SIGKILL", "SIGTERM"])
def test_killed_while_mixing(
    graceful: bool, seaweed: SeaweedS3, hooks: Hooks, tmp_path: Path
) -> None:
    service = service_for(tmp_path, f"sqlite:///{tmp_path / 'skymix.db'}")
    try:
        key, rid = start_job(service, seaweed, f"crash-mix-{graceful}", hooks.url, seconds=4.0)
        wait_for(service, rid, lambda events: "mixing" in kinds(events))
        kill_service(service, rid, graceful)
        assert "mixed" not in kinds(log_events(service, rid))
        # a run the service's own stop cut short is not one of the job's attempts; a crash's is
        assert job_of(service, rid) == (("queued", 0) if graceful else ("running", 1))
        recording = finish(service, key, rid)
        assert job_of(service, rid) == ("done", 1 if graceful else 2)
    finally:
        service.stop()
    assert recording["state"] == "LINK" and len(recording["report"]["participants"]) == 2
    assert kinds(log_events(service, rid)).count("mixing") == 2
    check_delivered_once(service, seaweed, f"crash-mix-{graceful}", rid, hooks.ids)


def test_a_dead_worker_costs_only_its_own_job(
    seaweed: SeaweedS3, hooks: Hooks, tmp_path: Path
) -> None:
    """Two jobs mixing side by side; one's worker is SIGKILLed (as the kernel's OOM killer
    would): that job runs again, the other finishes on its first attempt."""
    service = service_for(tmp_path, f"sqlite:///{tmp_path / 'skymix.db'}")
    service.env["SKYMIX_WORKERS"] = "2"
    service.data_dir.mkdir(parents=True, exist_ok=True)
    key = service.create_app("acme")
    prefix = f"crash-oom-{tmp_path.name}"
    store_settings(service, "acme", settings_doc("acme", seaweed, prefix, hooks.url))
    bodies = [
        synth_room(service, "victim", seed=7, seconds=3.0) | {"room": "victim"},
        synth_room(service, "survivor", seed=8, seconds=8.0) | {"room": "survivor"},
    ]
    try:
        service.start()
        with service.client(key) as client:
            victim, survivor = [
                client.post("/rest/recordings", json=b).json()["id"] for b in bodies
            ]
            for rid in (victim, survivor):
                wait_for(service, rid, lambda events: "mixing" in kinds(events))
            assert "mixed" not in kinds(log_events(service, survivor))
            (attempt,) = [e for e in log_events(service, victim) if e["event"] == "job_attempt"]
            os.kill(int(attempt["owner"].rpartition("/")[2]), signal.SIGKILL)
            for rid in (survivor, victim):
                assert follow(client, rid)[-1]["state"] == "LINK"
    finally:
        service.stop()
    assert kinds(log_events(service, survivor)).count("job_attempt") == 1
    assert kinds(log_events(service, victim)).count("job_attempt") == 2
    assert job_of(service, survivor) == ("done", 1) and job_of(service, victim) == ("done", 2)
    assert "Traceback" not in service.log()


def test_killed_while_uploading(
    postgres: Postgres, seaweed: SeaweedS3, hooks: Hooks, tmp_path: Path
) -> None:
    service = service_for(tmp_path, postgres.create_database("crash_upload"))
    assert seaweed.proc is not None
    paused = False
    try:
        key, rid = start_job(service, seaweed, f"crash-up-{tmp_path.name}", hooks.url)
        wait_for(service, rid, lambda events: "mixing" in kinds(events))
        os.kill(seaweed.proc.pid, signal.SIGSTOP)  # the upload that follows the mix hangs
        paused = True
        wait_for(service, rid, lambda events: "mixed" in kinds(events))
        time.sleep(1.0)
        kill_service(service, rid)
        assert "upload" not in kinds(log_events(service, rid))
        os.kill(seaweed.proc.pid, signal.SIGCONT)
        paused = False
        recording = finish(service, key, rid)
    finally:
        if paused:
            os.kill(seaweed.proc.pid, signal.SIGCONT)
        service.stop()
    assert recording["state"] == "LINK"
    assert kinds(log_events(service, rid)).count("mixing") == 1  # not mixed again
    check_delivered_once(service, seaweed, f"crash-up-{tmp_path.name}", rid, hooks.ids)


def test_killed_while_notifying(seaweed: SeaweedS3, tmp_path: Path) -> None:
    service = service_for(tmp_path, f"sqlite:///{tmp_path / 'skymix.db'}")
    receiver = WebhookReceiver(HOOK_SECRET)  # listening, not answering until started
    try:
        key, rid = start_job(service, seaweed, "crash-hook", receiver.url)
        wait_for(service, rid, lambda events: any(e.get("state") == "LINK" for e in events))
        time.sleep(1.0)  # the POST is sent and waits for its answer
        events = log_events(service, rid)
        assert "notification" not in kinds(events)
        kill_service(service, rid)
        receiver.start()
        recording = finish(service, key, rid)
        wait_until(
            lambda: "notification" in kinds(log_events(service, rid)),
            "no notification outcome after the restart",
            30,
        )
    finally:
        service.stop()
        receiver.stop()
    assert recording["state"] == "LINK"
    ids = [w.webhook_id for w in receiver.received]
    assert all(w.payload["state"] == "LINK" for w in receiver.received)
    assert kinds(log_events(service, rid)).count("mixing") == 1
    check_delivered_once(service, seaweed, "crash-hook", rid, ids)


def test_the_outbox_retries_a_failed_notification_across_a_restart(
    postgres: Postgres, seaweed: SeaweedS3, hooks: Hooks, tmp_path: Path
) -> None:
    service = service_for(tmp_path, postgres.create_database("crash_outbox"))
    service.env |= {"SKYMIX_WEBHOOK_MAX_TRIES": "1", "SKYMIX_OUTBOX_SCHEDULE": "0.5,0.5,0.5,60"}
    nobody = f"http://127.0.0.1:{free_port()}/hooks"  # refuses every connection
    prefix = f"outbox-{tmp_path.name}"
    try:
        key, rid = start_job(service, seaweed, prefix, nobody)
        state = ServiceState.open(ServiceConfig.load(environ=service.environment()), migrate=False)
        try:

            def items() -> list[OutboxItem]:
                with state.db.session() as session:
                    return list(session.scalars(select(OutboxItem)))

            wait_until(lambda: bool(items()) and items()[0].attempts >= 1, "the outbox never tried")
            (item,) = items()
            assert item.status == "pending" and item.webhook_id == f"msg_{rid}_1"
            service.kill()
            # the receiver is fixed while the service is down; the retries go on after it
            store_settings(service, "acme", settings_doc("acme", seaweed, prefix, hooks.url))
            service.start()
            wait_until(lambda: items()[0].status == "delivered", lambda: items()[0].last_error)
            (item,) = items()
            assert item.attempts >= 2 and item.webhook_id == f"msg_{rid}_1"
            with state.db.session() as session:
                job = session.get(Job, rid)
                assert job is not None and job.status == "done"
        finally:
            state.close()
        with service.client(key) as client:
            assert client.get(f"/rest/recordings/{rid}").json()["state"] == "LINK"
    finally:
        service.stop()
    assert hooks.ids == [f"msg_{rid}_1"]
    assert hooks.payloads[0]["state"] == "LINK"
    failed = [e for e in log_events(service, rid) if e["event"] == "notification"]
    assert [e["outcome"] for e in failed] == ["failed"]


def test_a_stop_ends_open_event_streams(tmp_path: Path) -> None:
    """SIGTERM with a client following a recording that is not finished: the stream ends and
    the service stops at once (the server would otherwise wait for the response to end)."""
    service = service_for(tmp_path, f"sqlite:///{tmp_path / 'skymix.db'}")
    service.data_dir.mkdir(parents=True)
    key = service.create_app("acme")
    with service:
        state = ServiceState.open(ServiceConfig.load(environ=service.environment()), migrate=False)
        try:
            with state.db.session() as session:
                session.add(
                    RecordingRow(
                        id="held",
                        app_id="acme",
                        room="r",
                        kind="capture",
                        state="STOP",
                        work_dir=str(tmp_path),
                    )
                )
                session.flush()
                session.add(Job(recording_id="held", status="failed"))
        finally:
            state.close()
        lines: list[str] = []
        with service.client(key) as client:
            with client.stream("GET", "/rest/recordings/held/events", timeout=30) as answer:
                for line in answer.iter_lines():
                    lines.append(line)
                    if line.startswith("data: "):
                        stop_gracefully(service)  # with this stream still open
    (data,) = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert json.loads(data)["state"] == "STOP"
