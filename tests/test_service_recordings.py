"""The recordings API on a live ``skymix serve`` (SQLite and PostgreSQL): a job on synthesized
captures followed over Server-Sent Events to LINK, the object in SeaweedFS decoding to the
participants, the webhook verified; paging; another application's recordings; paths that
would leave the captures folder."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, text

from deliver_tools import HOOK_SECRET, Hooks, Inbox, free_port
from postgres import Postgres
from seaweed import S3_ADMIN, SeaweedS3
from service_tools import Service
from skymix.deliver.settings import RecordingSettings
from skymix.deliver.states import EVENT_LOG_NAME, Recording
from skymix.service.config import ServiceConfig
from skymix.service.jobs import MAX_ATTEMPTS, run_job
from skymix.service.models import App, AppSettings, Job, OutboxItem, RecordingRow, utcnow
from skymix.service.state import ServiceState
from skymix.synth import preset, synthesize

OPTIONS = {"size": "160x90", "encode": {"preset": "ultrafast"}}
_NAMES = itertools.count(1)


def settings_doc(
    app_id: str,
    seaweed: SeaweedS3,
    prefix: str,
    hook_url: str | None = None,
    emails: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Recording settings for SeaweedFS (its admin keys), with a webhook and e-mail addresses
    when given."""
    return {
        "app_id": app_id,
        "storage": {
            "arn": f"arn:aws:s3:{seaweed.region}::{seaweed.bucket}/{prefix}/",
            "access_key_id": S3_ADMIN.access_key,
            "secret_access_key": S3_ADMIN.secret_key,
            "endpoint_url": seaweed.endpoint_url,
            "link_expiry_s": 600,
        },
        "notifications": {
            "enabled": hook_url is not None or bool(emails),
            "url": hook_url,
            "secret": HOOK_SECRET if hook_url else None,
            "emails": list(emails),
        },
    }


def store_settings(service: Service, app_id: str, doc: dict[str, Any]) -> None:
    """The application's settings row, written as the settings API stores it (encrypted)."""
    settings = RecordingSettings.from_json(doc)
    config = ServiceConfig.load(environ=service.environment())
    state = ServiceState.open(config, migrate=False)
    try:
        with state.db.session() as session:
            session.merge(
                AppSettings(
                    app_id=app_id,
                    document_enc=state.box.encrypt(json.dumps(settings.to_json(reveal=True))),
                    recording_enabled=settings.recording_enabled,
                    verified=True,
                )
            )
    finally:
        state.close()


def put_settings(client: httpx.Client, doc: dict[str, Any]) -> None:
    """The application's settings over the settings API (created, or replaced); the service
    checks the keys against SeaweedFS."""
    answer = client.post("/rest/recording/notifications", json=doc)
    if answer.status_code == 409:
        answer = client.put(f"/rest/recording/notifications/{doc['app_id']}", json=doc)
    assert answer.status_code in (200, 201), answer.text
    assert answer.json()["verified"] is True


def synth_room(
    service: Service, name: str, seed: int, seconds: float = 2.0, app_id: str = "acme"
) -> dict[str, Any]:
    """A synthesized two-person capture copied under the application's captures folder; the
    request body naming it."""
    return synth_into(service.data_dir, name, seed, seconds, app_id)


def synth_into(
    data_dir: Path, name: str, seed: int, seconds: float = 2.0, app_id: str = "acme"
) -> dict[str, Any]:
    """``synth_room`` for the data folder ``data_dir``."""
    made = synthesize(preset(2, seconds), seconds, data_dir.parent / f"synth-{name}", seed=seed)
    folder = data_dir / "captures" / app_id / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(made.pcap, folder / made.pcap.name)
    for sdp in made.sdps:
        shutil.copy(sdp, folder / sdp.name)
    return {
        "captures": [f"{name}/{made.pcap.name}"],
        "sdp": [f"{name}/{sdp.name}" for sdp in made.sdps],
        "options": OPTIONS,
    }


def set_job(service: Service, recording_id: str, status: str) -> None:
    """Put a job back in a status, as a crash or an operator could leave it."""
    state = ServiceState.open(ServiceConfig.load(environ=service.environment()), migrate=False)
    try:
        with state.db.session() as session:
            job = session.get(Job, recording_id)
            assert job is not None
            job.status, job.lease_owner, job.lease_until = status, None, None
    finally:
        state.close()


def job_status(service: Service, recording_id: str) -> str:
    state = ServiceState.open(ServiceConfig.load(environ=service.environment()), migrate=False)
    try:
        with state.db.session() as session:
            job = session.get(Job, recording_id)
            assert job is not None
            return job.status
    finally:
        state.close()


def follow(client: httpx.Client, recording_id: str) -> list[dict[str, Any]]:
    """The recording's event stream, read to its end: each event's data."""
    seen = []
    with client.stream("GET", f"/rest/recordings/{recording_id}/events", timeout=120) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert kind == "recordingState"
                seen.append(json.loads(line.removeprefix("data: ")))
    return seen


@dataclass
class Live:
    service: Service
    acme: str
    other: str
    inbox: Inbox


def _url(request: pytest.FixtureRequest, tmp: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp / 'skymix.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.create_database(f"rec{next(_NAMES)}")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """One service per database for the module, with apps acme and other."""
    tmp = tmp_path_factory.mktemp("recordings")
    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    env = {
        "SKYMIX_ALLOW_PRIVATE_NOTIFY": "1",
        "SKYMIX_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "SKYMIX_SMTP_FROM": "recordings@skymix.test",
    }
    service = Service(tmp / "data", _url(request, tmp), env=env)
    service.data_dir.mkdir(parents=True)
    acme = service.create_app("acme")
    other = service.create_app("other")
    smtp.start()
    try:
        with service:
            yield Live(service, acme, other, inbox)
    finally:
        smtp.stop()
    log = service.log()
    assert "Traceback" not in log
    for secret in (S3_ADMIN.secret_key, HOOK_SECRET, acme, other):
        assert secret not in log


def test_a_job_runs_to_link_over_the_api(
    live: Live, seaweed: SeaweedS3, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = live.service
    body = synth_room(service, "standup", seed=3) | {"room": "standup"}
    with service.client(live.acme) as client:
        put_settings(client, settings_doc("acme", seaweed, "svc", hooks.url, ("ops@acme.test",)))
        answer = client.post("/rest/recordings", json=body)
        assert answer.status_code == 202, answer.text
        created = answer.json()
        rid = created["id"]
        assert created["state"] == "STOP" and created["room"] == "standup"
        assert answer.headers["location"] == f"/rest/recordings/{rid}"
        states = follow(client, rid)
        assert [s["state"] for s in states] in (["STOP", "LINK"], ["LINK"])
        assert states[-1]["url"] and states[-1]["recording_id"] == rid
        got = client.get(f"/rest/recordings/{rid}").json()
        assert json.dumps(got).count(S3_ADMIN.secret_key) == 0
    assert got["state"] == "LINK" and got["error"] is None
    assert got["link_expires_at"] is not None
    assert got["report"]["participants"] and len(got["report"]["participants"]) == 2
    timings = got["timings"]
    assert timings["created_at"] <= timings["job_started_at"] <= timings["mixed_at"]
    assert timings["mixed_at"] <= timings["finished_at"]
    fetched = service.data_dir.parent / f"{rid}.mp4"
    with urllib.request.urlopen(got["url"], timeout=10) as response:
        fetched.write_bytes(response.read())
    with av.open(str(fetched)) as container:
        assert container.streams.video[0].width == 160
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 30
    key = f"svc/acme/standup/{rid}.mp4"
    assert seaweed.client().head_object(Bucket=seaweed.bucket, Key=key)["ContentLength"] > 0
    # LINK comes before the announcements: wait for both channels' outcomes in the event log
    log = service.data_dir / "recordings" / "acme" / rid / "events.jsonl"
    deadline = time.monotonic() + 30
    while log.read_text().count('"event": "notification"') < 2:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    (payload,) = [p for p in hooks.payloads if p["recording_id"] == rid]
    assert payload["state"] == "LINK" and len(payload["participants"]) == 2
    assert hooks.ids == [f"msg_{rid}_1"]
    (text,) = [
        part.get_content()
        for to, mail in live.inbox.mails
        if to == ["ops@acme.test"] and (part := mail.get_body(("plain",))) is not None
    ]
    assert rid in text and got["url"] in text
    # run twice, finished once: a done job is skipped; one queued again does nothing new (run
    # here as the service's workers run it: with its environment's SKYMIX_ALLOW_PRIVATE_NOTIFY)
    monkeypatch.setenv("SKYMIX_ALLOW_PRIVATE_NOTIFY", "1")
    config_json = ServiceConfig.load(environ=service.environment()).model_dump_json()
    before = log.read_text()
    assert run_job(config_json, rid) == "skipped"
    assert log.read_text() == before
    set_job(service, rid, "queued")  # the service's watcher may take it too: one run wins
    assert run_job(config_json, rid) in ("done", "skipped")
    while job_status(service, rid) != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    after = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert after.count("upload") == 1 and after.count("mixed") == 1
    assert [e for e in after[len(before.splitlines()) :]] == ["job_attempt"]
    assert hooks.ids == [f"msg_{rid}_1"]
    # the metrics count the job and its notifications, sent by the worker process
    with service.client() as client:
        metrics = client.get("/metrics").text
    for channel in ("webhook", "email"):
        line = f'skymix_notification_attempts_total{{channel="{channel}",outcome="delivered"}} '
        assert metric(metrics, line) >= 1
    assert metric(metrics, "skymix_job_duration_seconds_count ") >= 1
    assert metric(metrics, 'skymix_recordings{state="LINK"} ') >= 1


def metric(text: str, prefix: str) -> float:
    """The value of the one sample of a Prometheus scrape that starts with ``prefix``."""
    (value,) = [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]
    return float(value)


def test_captures_are_read_from_an_s3_prefix_with_the_apps_keys(
    live: Live, seaweed: SeaweedS3
) -> None:
    service = live.service
    body = synth_room(service, "from-s3", seed=4)
    folder = service.data_dir / "captures" / "acme"
    client = seaweed.client()
    prefix = f"inputs/{service.data_dir.parent.name}"
    for name in body["captures"] + body["sdp"]:
        client.upload_file(str(folder / name), seaweed.bucket, f"{prefix}/{name}")
        (folder / name).unlink()
    body |= {"s3_prefix": f"s3://{seaweed.bucket}/{prefix}", "room": "s3room"}
    with service.client(live.acme) as api:
        put_settings(api, settings_doc("acme", seaweed, "svc"))
        answer = api.post("/rest/recordings", json=body)
        assert answer.status_code == 202, answer.text
        rid = answer.json()["id"]
        assert follow(api, rid)[-1]["state"] == "LINK"
        got = api.get(f"/rest/recordings/{rid}").json()
        assert len(got["report"]["participants"]) == 2
        missing = api.post("/rest/recordings", json=body | {"captures": ["from-s3/none.pcap"]})
        assert missing.status_code == 202
        states = follow(api, missing.json()["id"])
    assert states[-1]["state"] == "ERROR"
    assert "from-s3/none.pcap" in states[-1]["error"]["message"]
    assert S3_ADMIN.secret_key not in json.dumps(states)


def test_a_capture_that_cannot_be_mixed_is_announced_in_error(
    live: Live, seaweed: SeaweedS3, hooks: Hooks
) -> None:
    service = live.service
    bad = service.data_dir / "captures" / "acme" / "unmixable.pcap"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20)
    with service.client(live.acme) as client:
        put_settings(client, settings_doc("acme", seaweed, "svc", hooks.url))
        answer = client.post("/rest/recordings", json={"captures": ["unmixable.pcap"]})
        assert answer.status_code == 202, answer.text
        rid = answer.json()["id"]
        states = follow(client, rid)
        got = client.get(f"/rest/recordings/{rid}").json()
    assert states[-1]["state"] == "ERROR" and states[-1]["error"]["code"]
    assert got["room"] == "unmixable" and got["error"] == states[-1]["error"]
    # the file is named relative to the data folder, never by the service's own path
    message = got["error"]["message"]
    assert "captures/acme/unmixable.pcap" in message, message
    assert str(service.data_dir) not in message and str(service.data_dir.resolve()) not in message
    assert got["url"] is None and got["report"] is None
    deadline = time.monotonic() + 30
    while not hooks.ids:
        assert time.monotonic() < deadline, "the ERROR was not announced"
        time.sleep(0.1)
    assert hooks.ids == [f"msg_{rid}_1"]
    (payload,) = hooks.payloads
    assert payload["state"] == "ERROR" and payload["error"]["code"] == got["error"]["code"]


def test_recordings_are_paged_newest_first_and_filtered(live: Live, seaweed: SeaweedS3) -> None:
    service = live.service
    store_settings(service, "other", settings_doc("other", seaweed, "paging"))
    broken = service.data_dir / "captures" / "other" / "broken.pcap"
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20)
    made = []
    with service.client(live.other) as client:
        for n in range(5):
            answer = client.post(
                "/rest/recordings", json={"captures": ["broken.pcap"], "room": f"r{n % 2}"}
            )
            assert answer.status_code == 202, answer.text
            made.append(answer.json()["id"])
        for rid in made:
            assert [s["state"] for s in follow(client, rid)][-1] == "ERROR"
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/rest/recordings", params=params).json()
            pages.append([item["id"] for item in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [rid for page in pages for rid in page] == made[::-1]
        # a recording made meanwhile does not shift the pages already given
        later = client.get("/rest/recordings", params={"limit": 2, "cursor": made[3]}).json()
        assert [item["id"] for item in later["items"]] == [made[2], made[1]]
        rooms = client.get("/rest/recordings", params={"room": "r1"}).json()["items"]
        assert {item["id"] for item in rooms} == {made[1], made[3]}
        errors = client.get("/rest/recordings", params={"state": "ERROR"}).json()["items"]
        assert len(errors) == 5 and all(e["error"]["code"] for e in errors)
        assert client.get("/rest/recordings", params={"state": "LINK"}).json()["items"] == []
        assert client.get("/rest/recordings", params={"state": "DONE"}).status_code == 422
        assert client.get("/rest/recordings", params={"cursor": "../x"}).status_code == 422
        assert client.get("/rest/recordings", params={"limit": 0}).status_code == 422
    with service.client(live.acme) as client:
        mine = client.get("/rest/recordings", params={"limit": 100}).json()["items"]
        assert not {item["id"] for item in mine} & set(made)
        # another application's recording is exactly as missing as one that does not exist
        for path in (f"/rest/recordings/{made[0]}", f"/rest/recordings/{made[0]}/events"):
            theirs, missing = client.get(path), client.get(path.replace(made[0], "01NOSUCH"))
            assert theirs.status_code == missing.status_code == 404
            assert theirs.json() == missing.json()
    with service.client() as client:
        assert client.get(f"/rest/recordings/{made[0]}").status_code == 401
        assert client.post("/rest/recordings", json={"captures": ["x"]}).status_code == 401


def test_paths_out_of_the_captures_folder_are_refused(live: Live, tmp_path: Path) -> None:
    service = live.service
    secret_file = tmp_path / "secret.pcap"
    secret_file.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20)
    captures = service.data_dir / "captures" / "other"
    captures.mkdir(parents=True, exist_ok=True)
    link = captures / "escape.pcap"
    if not link.is_symlink():
        link.symlink_to(secret_file)
    # another application's captures: neither read nor told apart from missing files
    theirs = service.data_dir / "captures" / "acme" / "private" / "theirs.pcap"
    theirs.parent.mkdir(parents=True, exist_ok=True)
    theirs.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20)
    peek = captures / "peek.pcap"
    if not peek.is_symlink():
        peek.symlink_to(theirs)
    outside = service.data_dir / "skymix.db"
    bad = [
        ({"captures": ["private/theirs.pcap"]}, ["body", "captures", 0]),
        ({"captures": ["acme/private/theirs.pcap"]}, ["body", "captures", 0]),
        ({"captures": ["../acme/private/theirs.pcap"]}, ["body", "captures", 0]),
        ({"captures": ["peek.pcap"]}, ["body", "captures", 0]),
        ({"captures": ["../skymix.db"]}, ["body", "captures", 0]),
        ({"captures": [str(outside)]}, ["body", "captures", 0]),
        ({"captures": ["a\x00b.pcap"]}, ["body", "captures", 0]),
        ({"captures": ["escape.pcap"]}, ["body", "captures", 0]),
        ({"captures": ["broken.pcap"], "sdp": ["x/../../skymix.db"]}, ["body", "sdp", 0]),
        ({"captures": ["broken.pcap"], "manifest": "/etc/passwd"}, ["body", "manifest"]),
        ({"captures": ["no-such.pcap"]}, ["body", "captures", 0]),
        (
            {"captures": ["x.pcap"], "s3_prefix": "s3://b/p", "sdp": ["../x.sdp"]},
            ["body", "sdp", 0],
        ),
        ({"captures": ["x" * 300 + ".pcap"]}, ["body", "captures", 0]),
        ({"captures": ["broken.pcap"], "room": "a\x00b"}, ["body", "room"]),
        ({"captures": ["broken.pcap"], "options": {"labels": "\ud800"}}, ["body"]),
        ({"captures": ["broken.pcap"], "options": {"channels": "/tmp/x.wav"}}, None),
        ({"captures": ["broken.pcap"], "options": {"size": "huge"}}, None),
    ]
    (captures / "broken.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20)
    with service.client(live.other) as client:
        before = len(client.get("/rest/recordings", params={"limit": 100}).json()["items"])
        for body, loc in bad:
            sent = json.dumps(body)  # ASCII: a lone surrogate goes as its escape
            answer = client.post(
                "/rest/recordings", content=sent, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 422, (body, answer.text)
            detail = answer.json()["detail"][0]
            if loc is not None:
                assert detail["loc"] == loc, (body, detail)
            assert detail["loc"][:2] != ["body", None]
        # acme's file is as missing to other as a file nobody has
        for name in ("private/theirs.pcap", "private/nobody.pcap"):
            answer = client.post("/rest/recordings", json={"captures": [name]})
            assert answer.json()["detail"][0]["msg"] == f"no such capture file: {name}"
        for path in ("/rest/recordings/..%2Fetc", "/rest/recordings/a%00b/events"):
            assert client.get(path).status_code in (404, 422)
        assert client.get("/rest/recordings", params={"room": "a\x00"}).status_code == 422
        after = len(client.get("/rest/recordings", params={"limit": 100}).json()["items"])
    assert after == before


def test_a_job_needs_settings(live: Live) -> None:
    service = live.service
    key = service.create_app("bare")
    (service.data_dir / "captures" / "bare").mkdir(parents=True, exist_ok=True)
    (service.data_dir / "captures" / "bare" / "empty.pcap").write_bytes(b"")
    with service.client(key) as client:
        answer = client.post("/rest/recordings", json={"captures": ["empty.pcap"]})
        assert answer.status_code == 409
        assert client.get("/rest/recordings").json()["items"] == []


def _job_state(
    tmp_path: Path, database_url: str, settings: dict[str, Any] | None = None
) -> ServiceState:
    """A migrated database and data folder with app acme and its ``settings`` (by default no
    storage: nothing to upload)."""
    config = ServiceConfig.load(
        environ={"SKYMIX_DATA_DIR": str(tmp_path / "data"), "SKYMIX_DATABASE_URL": database_url}
    )
    state = ServiceState.open(config)
    with state.db.session() as session:
        session.add(App(app_id="acme", key_id="k" * 12, key_hash="0" * 64))
        session.flush()
        session.add(
            AppSettings(
                app_id="acme",
                document_enc=state.box.encrypt(json.dumps(settings or {"app_id": "acme"})),
                recording_enabled=True,
            )
        )
    return state


def _queued(state: ServiceState, rid: str, folder: Path, **job: Any) -> None:
    with state.db.session() as session:
        session.add(
            RecordingRow(
                id=rid, app_id="acme", room="r", kind="capture", state="STOP", work_dir=str(folder)
            )
        )
        session.flush()
        session.add(Job(recording_id=rid, **({"status": "queued"} | job)))


def test_leases_decide_who_runs_a_job(database_url: str, tmp_path: Path) -> None:
    """A live worker's lease is respected; a dead worker's, or an expired one, is taken; a job
    cut short too often is given up; a job whose working folder is gone fails, named."""
    state = _job_state(tmp_path, database_url)
    config_json = state.config.model_dump_json()
    try:
        soon = utcnow() + timedelta(seconds=60)
        host = socket.gethostname()
        alive = f"{host}/{os.getppid()}"
        for rid, job in {
            "held": {"status": "running", "lease_owner": alive, "lease_until": soon},
            "gone": {"status": "running", "lease_owner": f"{host}/999999999", "lease_until": soon},
            "tired": {"status": "running", "attempts": MAX_ATTEMPTS, "lease_until": utcnow()},
        }.items():
            folder = tmp_path / rid
            folder.mkdir()
            recording = Recording.create(folder / EVENT_LOG_NAME, "acme", "r", rid)
            recording.start()
            recording.stop()
            _queued(state, rid, folder, **job)
        _queued(state, "lost", tmp_path / "no-such-folder")
        assert run_job(config_json, "held") == "skipped"
        assert run_job(config_json, "tired") == "failed"
        assert run_job(config_json, "lost") == "failed"
        with state.db.session() as session:
            held = session.get(Job, "held")
            assert held is not None and held.status == "running" and held.attempts == 0
            tired = session.get(RecordingRow, "tired")
            assert tired is not None and tired.state == "ERROR"
            assert tired.error_message is not None and "given up" in tired.error_message
            lost = session.get(RecordingRow, "lost")
            assert lost is not None and lost.state == "ERROR" and lost.error_code
            lost_job = session.get(Job, "lost")
            assert lost_job is not None and lost_job.duration_s is not None
        # a dead owner's lease is taken at once (nothing to mix: the job fails, named)
        assert run_job(config_json, "gone") == "failed"
        with state.db.session() as session:
            gone = session.get(Job, "gone")
            assert (
                gone is not None and gone.attempts == 1 and gone.lease_owner != f"{host}/999999999"
            )
    finally:
        state.close()


def test_a_room_named_like_a_path_stays_under_the_prefix(live: Live, seaweed: SeaweedS3) -> None:
    """A room is free text: "../../.." in it climbs out of neither the bucket prefix (the key's
    part is made safe) nor the data folder (working folders are named by app and recording)."""
    service = live.service
    room = "../../../etc/passwd"
    body = synth_room(service, "climber", seed=5, seconds=1.0) | {"room": room}
    with service.client(live.acme) as client:
        put_settings(client, settings_doc("acme", seaweed, "jail"))
        answer = client.post("/rest/recordings", json=body)
        assert answer.status_code == 202, answer.text
        rid = answer.json()["id"]
        assert follow(client, rid)[-1]["state"] == "LINK"
        got = client.get(f"/rest/recordings/{rid}").json()
    assert got["room"] == room
    listed = seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix="jail/")
    keys = [o["Key"] for o in listed.get("Contents", []) if rid in o["Key"]]
    assert keys == [f"jail/acme/_.._.._etc_passwd/{rid}.mp4"]
    folder = service.data_dir / "recordings" / "acme" / rid
    assert (folder / "events.jsonl").is_file()
    assert folder.resolve().is_relative_to(service.data_dir.resolve())


def _recording(state: ServiceState, rid: str, spec: dict[str, Any], **job: Any) -> Path:
    """A recording of acme in STOP as the API makes it, its job queued; its event log."""
    folder = state.config.recordings_dir / "acme" / rid
    folder.mkdir(parents=True)
    recording = Recording.create(folder / EVENT_LOG_NAME, "acme", "r", rid)
    recording.start()
    recording.stop()
    with state.db.session() as session:
        session.add(
            RecordingRow(
                id=rid,
                app_id="acme",
                room="r",
                kind="capture",
                state="STOP",
                spec={"options": OPTIONS} | spec,
                work_dir=str(folder),
            )
        )
        session.flush()
        session.add(Job(recording_id=rid, **({"status": "queued"} | job)))
    return folder / EVENT_LOG_NAME


def _rows(state: ServiceState, rid: str) -> tuple[RecordingRow, Job, list[OutboxItem]]:
    with state.db.session() as session:
        row, job = session.get(RecordingRow, rid), session.get(Job, rid)
        items = list(session.scalars(select(OutboxItem).where(OutboxItem.recording_id == rid)))
    assert row is not None and job is not None
    return row, job, items


def _due(state: ServiceState, rid: str) -> None:
    """A job queued again after a transient error made due now (its wait over)."""
    with state.db.session() as session:
        job = session.get(Job, rid)
        assert job is not None and job.status == "queued" and job.lease_until is not None
        job.lease_until = None


def _kinds(log: Path) -> list[str]:
    return [json.loads(line)["event"] for line in log.read_text().splitlines()]


#: A write to a recording's row once it is in LINK fails, as when the database restarts.
_FAIL_AFTER_LINK = {
    "sqlite": [
        "CREATE TRIGGER fail_after_link BEFORE UPDATE ON recordings WHEN OLD.state = 'LINK' "
        "BEGIN SELECT RAISE(ABORT, 'the database is restarting'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fail_after_link() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the database is restarting'; END $$",
        "CREATE TRIGGER fail_after_link BEFORE UPDATE ON recordings FOR EACH ROW "
        "WHEN (OLD.state = 'LINK') EXECUTE FUNCTION fail_after_link()",
    ],
}
_DROP = {
    "sqlite": "DROP TRIGGER fail_after_link",
    "postgresql": "DROP TRIGGER fail_after_link ON recordings",
}


def test_a_database_error_after_link_queues_the_job_again_and_fills_the_outbox(
    database_url: str, seaweed: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails after LINK (a trigger refuses the row's last write): the recording
    stays in LINK, the notification that failed in the job is in the outbox all the same, the
    job is queued again without a lease; run again, it is done without mixing or uploading
    again."""
    monkeypatch.setenv("SKYMIX_ALLOW_PRIVATE_NOTIFY", "1")
    monkeypatch.setenv("SKYMIX_WEBHOOK_MAX_TRIES", "1")
    nobody = f"http://127.0.0.1:{free_port()}/hooks"
    doc = settings_doc("acme", seaweed, f"transient-{tmp_path.name}", nobody)
    state = _job_state(
        tmp_path, database_url, RecordingSettings.from_json(doc).to_json(reveal=True)
    )
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    config_json = state.config.model_dump_json()
    try:
        log = _recording(state, "afterlink", synth_into(state.config.data_dir, "t", seed=6))
        with state.db.session() as session:
            for statement in _FAIL_AFTER_LINK[dialect]:
                session.execute(text(statement))
        assert run_job(config_json, "afterlink") == "queued"
        row, job, items = _rows(state, "afterlink")
        assert row.state == "LINK" and row.error_code is None and row.url
        assert job.status == "queued" and job.lease_owner is None and job.attempts == 1
        assert job.last_error is not None and "restarting" not in job.last_error
        assert [(i.channel, i.status) for i in items] == [("webhook", "pending")]
        with state.db.session() as session:
            session.execute(text(_DROP[dialect]))
        _due(state, "afterlink")
        assert run_job(config_json, "afterlink") == "done"
        row, job, items = _rows(state, "afterlink")
        assert row.state == "LINK" and job.status == "done" and job.attempts == 2
        assert len(items) == 1
        kinds = _kinds(log)
        assert kinds.count("mixing") == 1 and kinds.count("upload") == 1
    finally:
        state.close()


def test_an_unreachable_store_queues_the_job_again(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 store of the inputs does not answer: not the input's fault, so the recording
    does not fail; the job is queued again for the watcher."""
    monkeypatch.setenv("SKYMIX_ALLOW_PRIVATE_NOTIFY", "1")
    settings = {
        "app_id": "acme",
        "storage": {
            "arn": "arn:aws:s3:us-east-1::bucket/p/",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "not-a-real-secret-0123456789",
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
        },
    }
    state = _job_state(tmp_path, database_url, settings)
    try:
        spec = {"captures": ["a.pcap"], "s3_prefix": "s3://bucket/in"}
        log = _recording(state, "nostore", spec)
        assert run_job(state.config.model_dump_json(), "nostore") == "queued"
        row, job, items = _rows(state, "nostore")
        assert row.state == "STOP" and row.error_code is None
        assert job.status == "queued" and job.lease_owner is None and job.attempts == 1
        assert job.last_error is not None and "delivery_failed" in job.last_error
        assert items == [] and _kinds(log).count("state") == 2
        # run again only once its wait is over
        assert job.lease_until is not None and job.lease_until > utcnow() + timedelta(seconds=1)
        assert run_job(state.config.model_dump_json(), "nostore") == "skipped"
    finally:
        state.close()


def test_a_job_given_up_announces_its_error(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job run MAX_ATTEMPTS times goes to ERROR, naming the last error, and its ERROR is in
    the outbox for the webhook."""
    monkeypatch.setenv("SKYMIX_ALLOW_PRIVATE_NOTIFY", "1")
    hook = f"http://127.0.0.1:{free_port()}/hooks"
    settings = {
        "app_id": "acme",
        "notifications": {"enabled": True, "url": hook, "secret": HOOK_SECRET},
    }
    state = _job_state(tmp_path, database_url, settings)
    try:
        _recording(
            state,
            "tired",
            {"captures": ["a.pcap"]},
            status="queued",
            attempts=MAX_ATTEMPTS,
            last_error="delivery_failed: the store did not answer",
        )
        assert run_job(state.config.model_dump_json(), "tired") == "failed"
        row, job, items = _rows(state, "tired")
        assert [(i.channel, i.status) for i in items] == [("webhook", "pending")]
        assert row.state == "ERROR" and row.error_message is not None
        assert "given up" in row.error_message and "did not answer" in row.error_message
    finally:
        state.close()


def test_a_store_whose_name_now_resolves_to_this_host_is_refused(
    database_url: str, seaweed: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings' S3 endpoint is checked again when the job runs (DNS may have changed):
    localhost is refused unless the operator allows private addresses, and the ERROR names
    the setting; nothing is uploaded."""
    monkeypatch.delenv("SKYMIX_ALLOW_PRIVATE_NOTIFY", raising=False)
    prefix = f"rebound-{tmp_path.name}"
    doc = settings_doc("acme", seaweed, prefix)
    doc["storage"]["endpoint_url"] = seaweed.endpoint_url.replace("127.0.0.1", "localhost")
    settings = RecordingSettings.from_json(doc).to_json(reveal=True)
    state = _job_state(tmp_path, database_url, settings)
    try:
        _recording(state, "rebound", synth_into(state.config.data_dir, "rb", seed=2, seconds=1.0))
        assert run_job(state.config.model_dump_json(), "rebound") == "failed"
        row, job, _ = _rows(state, "rebound")
        assert row.state == "ERROR" and row.error_code == "options_invalid"
        assert row.error_message is not None and "storage.endpoint_url" in row.error_message
        assert "refused" in row.error_message and job.status == "failed"
        listed = seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix=f"{prefix}/")
        assert listed.get("Contents", []) == []
    finally:
        state.close()
