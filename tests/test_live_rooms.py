"""Live rooms with the real Janus: rooms made and destroyed in Janus, recordings started and
stopped with the messages each peer gets, the settings' checks, limits, a Janus killed, a service
killed, and (in a network namespace, where media can flow) real recordings mixed to LINK.

The rules tests run Janus on the host with no media (joins and recordings need none); the media
test runs the live rooms and aiortc publishers in a namespace (live_tools.record_scenario) and
the jobs outside, storing in the real SeaweedFS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from sqlalchemy import text

from deliver_tools import HOOK_SECRET, Hooks
from live_tools import (
    APP,
    ROOM,
    JanusPage,
    Peer,
    live_state,
    make_state,
    new_app,
    record_scenario,
    running_rooms,
)
from seaweed import S3_ADMIN, SeaweedS3
from service_tools import wait_until
from skymix.deliver.settings import RecordingSettings
from skymix.deliver.states import EVENT_LOG_NAME, Recording
from skymix.errors import OptionsError
from skymix.relay.janus import JanusProcess, VideoRoomClient, janus_available
from skymix.report import MixReport
from skymix.service.jobs import run_job
from skymix.service.live import LiveError, LiveRooms
from skymix.service.live import relay as live_relay
from skymix.service.live import rooms as live_rooms
from skymix.service.live.manifest import (
    MANIFEST_NAME,
    PARTICIPANTS_NAME,
    log_presence,
    read_presence,
)
from skymix.service.models import Job, RecordingRow
from skymix.service.outbox import Outbox
from skymix.session import load_description
from skymix.streams.room import scan_room

STORAGE = {
    "storage": {
        "arn": "s3://recordings/live",
        "access_key_id": "AKIDEXAMPLE00001",
        "secret_access_key": "an-example-secret-key-0000",
        "endpoint_url": "http://127.0.0.1:9/",
    }
}


@pytest.fixture(autouse=True)
def _janus_installed() -> None:
    assert janus_available(), "Debian janus is not installed (make test installs it)"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Any, LiveRooms]]:
    with live_state(tmp_path / "data") as (state, rooms):
        new_app(state, "a1", STORAGE)
        yield state, rooms


def join(rooms: LiveRooms, name: str, room: str = "r1", app: str = "a1") -> Peer:
    peer = Peer(name)
    peer.peer_id = rooms.join(app, room, name, peer.send).peer_id
    return peer


def row(state: Any, recording_id: str) -> RecordingRow:
    with state.db.session() as session:
        found = session.get(RecordingRow, recording_id)
    assert found is not None
    return found


def test_a_room_lives_in_janus_from_the_first_join_to_the_last_leave(live: Any) -> None:
    state, rooms = live
    ada = Peer("Ada")
    info = rooms.join("a1", "r1", "Ada", ada.send)
    assert info.peer_id.startswith("p_") and len(info.peer_id) == 18
    assert info.peers == [] and info.recording is None
    assert info.janus["server"] == rooms.relay.ws_url and info.janus["iceServers"] == []
    number = info.janus["room"]
    listed = running_rooms(rooms)[number]
    assert listed["record"] is False and listed["lock_record"] is True
    assert listed["pin_required"] is True and listed["max_publishers"] == 16
    assert listed["is_private"] is True and listed["description"] == "skymix"
    assert rooms.relay.http_url is not None
    with VideoRoomClient(rooms.relay.http_url) as anyone:  # a browser could ask Janus this
        assert number not in {r["room"] for r in anyone.list_rooms()}
    bob = Peer("Bob")
    info_bob = rooms.join("a1", "r1", "Bob", bob.send)
    assert info_bob.janus["room"] == number and info_bob.janus["pin"] == info.janus["pin"]
    assert info_bob.peers == [{"peerId": info.peer_id, "name": "Ada"}]
    assert ada.of("peerJoined") == [
        {"type": "peerJoined", "peerId": info_bob.peer_id, "name": "Bob"}
    ]
    other = rooms.join("a2", "r1", "Cy", Peer("Cy").send)  # another application's r1
    assert other.janus["room"] != number
    rooms.leave(info.peer_id)
    rooms.leave(info.peer_id)  # idempotent
    assert bob.of("peerLeft") == [{"type": "peerLeft", "peerId": info.peer_id, "name": "Ada"}]
    assert number in running_rooms(rooms)
    rooms.leave(info_bob.peer_id)
    assert number not in running_rooms(rooms)
    assert rooms.peers_of("a1", "r1") == []
    # the secret and pin are in no repr
    assert info.janus["pin"] not in repr(rooms)


@pytest.mark.parametrize(
    ("room", "name", "code"),
    [
        ("a/b", "Ada", "invalid_room"),
        ("x" * 129, "Ada", "invalid_room"),
        ("", "Ada", "invalid_room"),
        ("r1", "", "invalid_name"),
        ("r1", "A" * 65, "invalid_name"),
        ("r1", "Ada\n", "invalid_name"),
    ],
)
def test_rooms_and_names_are_checked(live: Any, room: str, name: str, code: str) -> None:
    _, rooms = live
    with pytest.raises(LiveError) as caught:
        rooms.join("a1", room, name, Peer(name).send)
    assert caught.value.code == code


def test_a_room_is_full_at_sixteen(live: Any) -> None:
    _, rooms = live
    for n in range(16):
        join(rooms, f"p{n}")
    with pytest.raises(LiveError) as caught:
        join(rooms, "late")
    assert caught.value.code == "room_full"


def test_start_and_stop_reach_every_peer_and_one_recording_runs_at_a_time(
    tmp_path: Path, database_url: str
) -> None:
    with live_state(tmp_path / "data", database_url=database_url) as (state, rooms):
        new_app(state, "a1", STORAGE)
        _start_and_stop(state, rooms)


def _start_and_stop(state: Any, rooms: LiveRooms) -> None:
    ada, bob = join(rooms, "Ada"), join(rooms, "Bob")
    rooms.start_recording(ada.peer_id)
    start = ada.wait_state("START")
    rid = start["recordingId"]
    assert bob.states() == [("START", rid)]
    assert row(state, rid).state == "START" and row(state, rid).kind == "live"
    number = rooms.janus_room_of("a1", "r1")
    assert number is not None
    listed = running_rooms(rooms)[number]
    rec_dir = state.config.data_dir / "captures" / "a1" / "live" / rid
    assert listed["record"] is True and listed["rec_dir"] == str(rec_dir.resolve())
    # a second start: ERROR to that peer only, naming the running recording
    rooms.start_recording(bob.peer_id)
    refused = bob.of("recordingState")[-1]
    assert refused["state"] == "ERROR" and refused["recordingId"] is None
    assert refused["error"]["code"] == "recording_running"
    assert refused["error"]["recordingId"] == rid and rid in refused["error"]["message"]
    assert ada.states() == [("START", rid)]
    # a late joiner is told of it
    info = rooms.join("a1", "r1", "Cy", Peer("Cy").send)
    assert info.recording == {"state": "START", "recordingId": rid}
    # stop from another peer: STOP to all; a new one may start at once
    rooms.stop_recording(bob.peer_id)
    stop = ada.wait_state("STOP")
    assert stop["recordingId"] == rid and stop["reason"] == "requested"
    assert ("STOP", rid) in bob.states()
    assert running_rooms(rooms)[number]["record"] is False
    rooms.start_recording(bob.peer_id)
    second = [m for m in ada.of("recordingState") if m["state"] == "START"]
    assert len(second) == 2 and second[1]["recordingId"] != rid
    rooms.stop_recording(ada.peer_id)
    # stop with none running: ERROR to that peer
    rooms.stop_recording(ada.peer_id)
    last = ada.of("recordingState")[-1]
    assert last["state"] == "ERROR" and last["error"]["code"] == "no_recording"
    # no media was published: each ends in ERROR nothing_recorded, told to the peers still there
    ended = ada.wait_state("ERROR", recording_id=rid)
    assert ended["error"]["code"] == "nothing_recorded"
    got = row(state, rid)
    assert got.state == "ERROR" and got.error_code == "nothing_recorded"
    assert got.spec["captures"] == [] and got.spec["live"]["stop_reason"] == "requested"
    with state.db.session() as session:
        job = session.get(Job, rid)
    assert job is not None and job.status == "queued"  # the job announces the ERROR
    # the stored secrets are encrypted
    live_spec = got.spec["live"]
    assert state.box.decrypt(live_spec["secret_enc"]) not in json.dumps(got.spec)


def test_a_start_that_cannot_write_its_folder_gets_error_and_leaves_nothing(live: Any) -> None:
    state, rooms = live
    ada, bob = join(rooms, "Ada"), join(rooms, "Bob")
    live_dir = state.config.data_dir / "captures" / "a1" / "live"
    live_dir.parent.mkdir(parents=True)
    live_dir.write_text("a file where the recordings' folder goes")
    rooms.start_recording(ada.peer_id)
    (refused,) = ada.of("recordingState")
    assert refused["state"] == "ERROR" and refused["error"]["code"] == "start_failed"
    assert bob.of("recordingState") == []
    with state.db.session() as session:
        assert session.query(RecordingRow).count() == 0
    number = rooms.janus_room_of("a1", "r1")
    assert running_rooms(rooms)[number]["record"] is False
    live_dir.unlink()
    rooms.start_recording(bob.peer_id)  # the cause gone, it starts
    assert ada.wait_state("START")["recordingId"]


@pytest.mark.parametrize(
    ("document", "code"),
    [
        (None, "no_settings"),
        ({**STORAGE, "recording_enabled": False}, "recording_disabled"),
        ({}, "no_storage"),
    ],
)
def test_an_app_that_cannot_record_gets_error_and_nothing_is_recorded(
    tmp_path: Path, document: dict[str, Any] | None, code: str
) -> None:
    with live_state(tmp_path / "data") as (state, rooms):
        new_app(state, "off", document)
        ada, bob = join(rooms, "Ada", app="off"), join(rooms, "Bob", app="off")
        rooms.start_recording(ada.peer_id)
        refused = ada.of("recordingState")
        assert len(refused) == 1 and refused[0]["state"] == "ERROR"
        assert refused[0]["error"]["code"] == code and refused[0]["recordingId"] is None
        assert bob.of("recordingState") == []
        with state.db.session() as session:
            assert session.query(RecordingRow).count() == 0
        assert not (state.config.data_dir / "captures").exists()
        assert not state.config.recordings_dir.exists()


def test_limits_stop_a_recording_at_its_length_and_when_its_room_is_empty(tmp_path: Path) -> None:
    with live_state(tmp_path / "data") as (state, rooms):
        new_app(state, "a1", {**STORAGE, "limits": {"max_length_s": 1, "empty_room_s": 1}})
        ada = join(rooms, "Ada")
        rooms.start_recording(ada.peer_id)
        stop = ada.wait_state("STOP", 30)
        assert stop["reason"] == "max_length"
        started = ada.wait_state("START")
        assert stop["recordingId"] == started["recordingId"]
        new_app(state, "a2", {**STORAGE, "limits": {"empty_room_s": 1}})
        bob = join(rooms, "Bob", room="r2", app="a2")
        watcher = join(rooms, "Watcher", room="r2", app="a2")
        rooms.start_recording(bob.peer_id)
        rid = bob.wait_state("START")["recordingId"]
        rooms.leave(bob.peer_id)
        number = rooms.janus_room_of("a2", "r2")
        rooms.leave(watcher.peer_id)  # empty now: the Janus room stays while it records
        assert number in running_rooms(rooms)
        wait_until(lambda: row(state, rid).state != "START", "the empty room's STOP", 30)
        assert row(state, rid).spec["live"]["stop_reason"] == "room_empty"
        wait_until(lambda: number not in running_rooms(rooms), "the room destroyed", 30)


def test_limit_settings_are_checked() -> None:
    ok = RecordingSettings.from_json({"app_id": "a", "limits": {"max_length_s": 86400}})
    assert ok.limits.max_length_s == 86400 and ok.limits.empty_room_s == 60
    for limits, field in [
        ({"max_length_s": 0}, "limits.max_length_s"),
        ({"max_length_s": 86401}, "limits.max_length_s"),
        ({"empty_room_s": 3601}, "limits.empty_room_s"),
        ({"empty_room_s": 1.5}, "limits.empty_room_s"),
        ({"other": 1}, "limits.other"),
    ]:
        with pytest.raises(OptionsError) as caught:
            RecordingSettings.from_json({"app_id": "a", "limits": limits})
        assert str(caught.value).startswith(field), caught.value


def test_janus_killed_stops_the_recording_and_comes_back_for_the_next_join(live: Any) -> None:
    state, rooms = live
    ada = join(rooms, "Ada")
    rooms.start_recording(ada.peer_id)
    rid = ada.wait_state("START")["recordingId"]
    pid = rooms.relay.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    stop = ada.wait_state("STOP", 30)
    assert stop["recordingId"] == rid and stop["reason"] == "relay_failed"
    assert row(state, rid).spec["live"]["stop_reason"] == "relay_failed"
    wait_until(rooms.relay.ready.is_set, "a new Janus", 30)
    assert rooms.relay.pid not in (None, pid)
    bob = Peer("Bob")
    info = rooms.join("a1", "r1", "Bob", bob.send)  # the room, made again in the new Janus
    assert info.janus["room"] in running_rooms(rooms)
    rooms.start_recording(info.peer_id)
    assert bob.wait_state("START")["recordingId"] != rid


def test_a_janus_that_stops_answering_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_relay, "KEEPALIVE_S", 0.5)
    monkeypatch.setattr(live_relay, "REQUEST_TIMEOUT_S", 0.5)
    with live_state(tmp_path / "data") as (state, rooms):
        new_app(state, "a1", STORAGE)
        ada = join(rooms, "Ada")
        rooms.start_recording(ada.peer_id)
        rid = ada.wait_state("START")["recordingId"]
        pid = rooms.relay.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # alive, but its API does not answer
        try:
            stop = ada.wait_state("STOP", 30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # killed and reaped by then
                os.kill(pid, signal.SIGCONT)
        assert stop["recordingId"] == rid and stop["reason"] == "relay_failed"
        wait_until(lambda: rooms.relay.ready.is_set() and rooms.relay.pid != pid, "a new Janus")
        assert not Path(f"/proc/{pid}").exists()  # the hung one was killed
        assert row(state, rid).spec["live"]["stop_reason"] == "relay_failed"


def test_a_recording_left_in_start_is_stopped_at_the_next_start(
    tmp_path: Path, hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    notified = {"enabled": True, "url": hooks.url, "secret": HOOK_SECRET}
    with live_state(data) as (state, rooms):
        new_app(state, "a1", {**STORAGE, "notifications": notified})
        ada = join(rooms, "Ada")
        rooms.start_recording(ada.peer_id)
        rid = ada.wait_state("START")["recordingId"]
        rec_dir = data / "captures" / "a1" / "live" / rid
        # what a service killed mid-recording leaves: the row in START, the participants log
        log_presence(rec_dir, "publish", 42, datetime.now(UTC), "Ada")
    # the service stopped without stopping the recording; a new one on the same database
    assert row(make_state(data), rid).state == "START"
    with live_state(data, janus="off") as (state, rooms):
        got = row(state, rid)
        assert got.state == "ERROR" and got.error_code == "nothing_recorded"
        assert got.spec["live"]["stop_reason"] == "service_restarted"
        recording = Recording.load(Path(got.work_dir) / EVENT_LOG_NAME)
        assert recording.state is not None and recording.state.value == "ERROR"
        assert (rec_dir / PARTICIPANTS_NAME).exists()
        # its job announces the ERROR and leaves it as it is
        monkeypatch.setenv("SKYMIX_ALLOW_PRIVATE_NOTIFY", "1")
        assert run_job(state.config.model_dump_json(), rid) == "failed"
        assert Outbox(state).send_due() == 1  # what the service's outbox does next
        (payload,) = hooks.payloads
        assert payload["recording_id"] == rid and payload["state"] == "ERROR"
        assert payload["error"]["code"] == "nothing_recorded"
        got = row(state, rid)
        assert got.state == "ERROR" and got.error_code == "nothing_recorded"
        log = Recording.load(Path(got.work_dir) / EVENT_LOG_NAME)
        assert log.error is not None and log.error.code == "nothing_recorded"


def test_a_recording_an_existing_janus_still_runs_is_followed_after_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with JanusProcess(
        tmp_path / "janus", admin_key="existing-" + "k" * 24, websockets=True
    ) as janus:
        assert janus.ws_url is not None
        existing = {
            "janus": janus.url,
            "janus_admin_key": janus.admin_key,
            "janus_ws_url": janus.ws_url,
        }
        with live_state(data, **existing) as (state, rooms):
            new_app(state, "a1", STORAGE)
            ada = join(rooms, "Ada")
            info_number = rooms.janus_room_of("a1", "r1")
            rooms.start_recording(ada.peer_id)
            rid = ada.wait_state("START")["recordingId"]
            join(rooms, "Idle", room="r2")
            idle_number = rooms.janus_room_of("a1", "r2")
            assert idle_number in running_rooms(rooms)
        # the service stopped (or died): the recording still runs in the existing Janus; the
        # room that recorded nothing is gone from it
        with janus.client() as admin:
            left = {r["room"] for r in admin.list_rooms()}
        assert info_number in left and idle_number not in left
        with live_state(data, **existing) as (state, rooms):
            assert row(state, rid).state == "START"
            bob = Peer("Bob")
            info = rooms.join("a1", "r1", "Bob", bob.send)
            assert info.janus["room"] == info_number and info.janus["server"] == janus.ws_url
            assert info.recording == {"state": "START", "recordingId": rid}
            rooms.start_recording(info.peer_id)
            assert bob.of("recordingState")[-1]["error"]["code"] == "recording_running"
            rooms.stop_recording(info.peer_id)
            assert bob.wait_state("STOP")["reason"] == "requested"
            assert row(state, rid).spec["live"]["stop_reason"] == "requested"
            rooms.leave(info.peer_id)
            assert info_number not in running_rooms(rooms)
        log = (Path(row(make_state(data), rid).work_dir) / EVENT_LOG_NAME).read_text()
        assert "live_followed" in log


def _opus_mjr(folder: Path, room: int, user: int) -> Path:
    """A small Janus MJR00002 audio recording (opus RTP packets) named as Janus names them."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    info = json.dumps({"t": "a", "c": "opus", "s": now_us, "u": now_us}).encode()
    data = b"MJR00002" + struct.pack("!H", len(info)) + info
    for n in range(50):
        rtp = struct.pack("!BBHII", 0x80, 111, n, n * 960, 0x1234) + b"\xf8\xff\xfe"
        data += b"MEET" + struct.pack("!IH", n * 20, len(rtp)) + rtp
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"videoroom-{room}-user-{user}-{now_us}-audio-0.mjr"
    path.write_bytes(data)
    return path


def test_a_recording_whose_folder_is_gone_is_still_mixed_and_a_bad_row_stops_nobody(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    with live_state(data) as (state, rooms):
        new_app(state, "a1", STORAGE)
        ada = join(rooms, "Ada")
        rooms.start_recording(ada.peer_id)
        rid = ada.wait_state("START")["recordingId"]
        got = row(state, rid)
        work_dir = Path(got.work_dir)
        number = got.spec["live"]["janus_room"]
        with state.db.session() as session:  # a row recovery cannot make sense of
            broken = RecordingRow(
                id="01BROKENROW0000000000000000",
                app_id="a1",
                room="r9",
                kind="live",
                state="START",
                spec={"live": "not a mapping"},
                work_dir=str(work_dir.parent / "01BROKENROW0000000000000000"),
                created_at=got.created_at,
                updated_at=got.updated_at,
            )
            session.add(broken)
            session.add(
                RecordingRow(
                    id="01UNDECODABLE0000000000000",
                    app_id="a1",
                    room="r8",
                    kind="live",
                    state="START",
                    spec={},
                    work_dir=str(work_dir.parent / "01UNDECODABLE0000000000000"),
                    created_at=got.created_at,
                    updated_at=got.updated_at,
                )
            )
            session.flush()
            # a spec the database holds but JSON cannot read: loading the row raises
            session.execute(
                text("UPDATE recordings SET spec = '{not json' WHERE id = :id"),
                {"id": "01UNDECODABLE0000000000000"},
            )
    shutil.rmtree(work_dir)  # its event log is gone; Janus wrote a file
    mjr = _opus_mjr(data / "captures" / "a1" / "live" / rid, number, 7)
    with live_state(data) as (state, rooms):
        got = row(state, rid)
        assert got.state == "STOP" and got.spec["live"]["stop_reason"] == "service_restarted"
        assert got.spec["captures"] == [f"live/{rid}/{mjr.name}"]
        log = (work_dir / EVENT_LOG_NAME).read_text()
        assert "event_log_renewed" in log and "live_stopped" in log
        bad = row(state, "01BROKENROW0000000000000000")
        assert bad.state == "ERROR" and bad.error_code == "recovery_failed"
        with state.db.session() as session:  # both jobs queued: the ERROR is announced too
            assert session.get(Job, rid) is not None
            assert session.get(Job, "01BROKENROW0000000000000000") is not None
            undecodable = session.execute(
                text("SELECT state, error_code FROM recordings WHERE id = :id"),
                {"id": "01UNDECODABLE0000000000000"},
            ).one()
            assert tuple(undecodable) == ("ERROR", "recovery_failed")
        bob = join(rooms, "Bob")  # the room records again
        rooms.start_recording(bob.peer_id)
        assert bob.wait_state("START")["recordingId"] != rid


def test_a_stop_that_cannot_be_stored_is_kept_and_stored_when_it_can(
    live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_rooms, "RETRY_S", 0.5)  # between tries of a pending STOP
    state, rooms = live
    ada, bob = join(rooms, "Ada"), join(rooms, "Bob")
    rooms.start_recording(ada.peer_id)
    rid = ada.wait_state("START")["recordingId"]
    events = Path(row(state, rid).work_dir) / EVENT_LOG_NAME
    aside = events.with_name("aside")
    events.rename(aside)
    events.mkdir()  # the event log cannot be written: its STOP cannot be stored
    rooms.stop_recording(ada.peer_id)
    assert ada.wait_state("STOP")["recordingId"] == rid
    assert ("STOP", rid) in bob.states()
    assert row(state, rid).state == "START"
    number = rooms.janus_room_of("a1", "r1")
    assert running_rooms(rooms)[number]["record"] is False  # Janus stopped all the same
    rooms.start_recording(bob.peer_id)  # the STOP is tried first; it still fails
    refused = bob.of("recordingState")[-1]
    assert refused["state"] == "ERROR" and refused["error"]["code"] == "stop_pending"
    events.rmdir()
    aside.rename(events)
    wait_until(lambda: row(state, rid).state != "START", "the STOP stored at last", 30)
    got = row(state, rid)
    assert got.state == "ERROR" and got.error_code == "nothing_recorded"
    assert got.spec["live"]["stop_reason"] == "requested"
    with state.db.session() as session:
        assert session.get(Job, rid) is not None
    rooms.start_recording(bob.peer_id)
    assert [s for s, _ in bob.states()].count("START") == 2
    assert events.read_text().count('"live_stopped"') == 1


def test_a_pending_stop_whose_row_was_deleted_is_given_up(live: Any) -> None:
    state, rooms = live
    ada = join(rooms, "Ada")
    rooms.start_recording(ada.peer_id)
    rid = ada.wait_state("START")["recordingId"]
    events = Path(row(state, rid).work_dir) / EVENT_LOG_NAME
    aside = events.with_name("aside")
    events.rename(aside)
    events.mkdir()  # its STOP cannot be stored
    rooms.stop_recording(ada.peer_id)
    ada.wait_state("STOP")
    with state.db.session() as session:  # its application deleted meanwhile
        session.delete(session.get(RecordingRow, rid))
    events.rmdir()
    aside.rename(events)
    rooms.start_recording(ada.peer_id)  # the pending STOP is dropped, not tried forever
    last = ada.of("recordingState")[-1]
    assert last["state"] == "START" and last["recordingId"] != rid
    assert "live_stopped" not in events.read_text()


def test_a_start_whose_participants_log_fails_leaves_nothing_running(
    live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, rooms = live
    ada = Peer("Ada")
    info = rooms.join("a1", "r1", "Ada", ada.send)
    ada.peer_id = info.peer_id
    page = JanusPage(rooms.relay.http_url or "")
    rooms.publisher(ada.peer_id, page.join(info.janus["room"], info.janus["pin"], "Ada"))

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live_rooms, "log_presence", disk_full)
    rooms.start_recording(ada.peer_id)
    (refused,) = ada.of("recordingState")
    assert refused["state"] == "ERROR" and refused["error"]["code"] == "start_failed"
    with state.db.session() as session:
        assert session.query(RecordingRow).count() == 0
    assert running_rooms(rooms)[info.janus["room"]]["record"] is False
    monkeypatch.undo()
    rooms.start_recording(ada.peer_id)
    assert ada.wait_state("START")["recordingId"]


def test_a_publisher_whose_participants_log_fails_publishes_all_the_same(live: Any) -> None:
    state, rooms = live
    ada = join(rooms, "Ada")
    rooms.start_recording(ada.peer_id)
    rid = ada.wait_state("START")["recordingId"]
    participants = state.config.data_dir / "captures" / "a1" / "live" / rid / PARTICIPANTS_NAME
    participants.unlink(missing_ok=True)
    participants.mkdir()  # the participants log cannot be written
    bob = Peer("Bob")
    info = rooms.join("a1", "r1", "Bob", bob.send)
    bob.peer_id = info.peer_id
    page = JanusPage(rooms.relay.http_url or "")
    rooms.publisher(bob.peer_id, page.join(info.janus["room"], info.janus["pin"], "Bob"))
    assert bob.of("error") == []


def test_a_janus_user_is_one_peer_s_and_rooms_per_app_are_bounded(
    live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, rooms = live
    ada, bob = Peer("Ada"), Peer("Bob")
    info = rooms.join("a1", "r1", "Ada", ada.send)
    bob.peer_id = rooms.join("a1", "r1", "Bob", bob.send).peer_id
    uid = JanusPage(rooms.relay.http_url or "").join(info.janus["room"], info.janus["pin"], "Ada")
    rooms.publisher(info.peer_id, uid)
    rooms.publisher(info.peer_id, uid)  # again: the same peer
    with pytest.raises(LiveError) as caught:
        rooms.publisher(bob.peer_id, uid)  # Ada's tile is not Bob's to take
    assert caught.value.code == "publisher_taken"
    monkeypatch.setattr(live_rooms, "MAX_ROOMS_PER_APP", 2)
    join(rooms, "Cy", room="r2")
    with pytest.raises(LiveError) as caught:
        join(rooms, "Dee", room="r3")
    assert caught.value.code == "too_many_rooms"
    join(rooms, "Eve", room="r3", app="a2")  # another application's rooms are its own
    join(rooms, "Fay", room="r2")  # a room that is open takes more peers


def test_no_secret_in_the_log_and_a_browser_cannot_record_or_make_rooms(
    live: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state, rooms = live
    caplog.set_level("DEBUG")
    ada = Peer("Ada")
    info = rooms.join("a1", "r1", "Ada", ada.send)
    ada.peer_id = info.peer_id
    number, pin = info.janus["room"], info.janus["pin"]
    page = JanusPage(rooms.relay.http_url or "")  # a browser holding the pin
    rooms.publisher(ada.peer_id, page.join(number, pin, "Ada"))
    rooms.start_recording(ada.peer_id)
    rid = ada.wait_state("START")["recordingId"]
    secret = state.box.decrypt(row(state, rid).spec["live"]["secret_enc"])
    rooms.stop_recording(ada.peer_id)
    ada.wait_state("STOP")
    assert rooms.relay._process is not None
    admin_key = rooms.relay._process.admin_key
    for hidden in (secret, pin, admin_key):
        assert hidden not in caplog.text
    assert "recording" in caplog.text and "joined" in caplog.text  # the log was captured
    # what the page can ask Janus by itself
    evil = state.config.data_dir / "evil"
    answer = page.message({"request": "configure", "record": True, "filename": str(evil)})
    assert "error_code" in answer or answer.get("configured") == "ok"
    refused = [
        page.message({"request": "enable_recording", "room": number, "record": True}),
        page.message({"request": "create", "room": 4242, "pin": pin}),
        page.message({"request": "destroy", "room": number}),
        page.message({"request": "destroy", "room": number, "secret": pin}),
        page.message({"request": "edit", "room": number, "new_rec_dir": str(evil)}),
    ]
    assert all("error_code" in r for r in refused), refused
    assert running_rooms(rooms)[number]["record"] is False
    assert not list(state.config.data_dir.glob("evil*"))


def test_a_janus_request_that_hangs_holds_up_only_its_own_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_relay, "REQUEST_TIMEOUT_S", 60.0)
    monkeypatch.setattr(live_relay, "KEEPALIVE_S", 600.0)
    with live_state(tmp_path / "data") as (state, rooms):
        new_app(state, "a1", STORAGE)
        ada = join(rooms, "Ada")
        pid = rooms.relay.pid
        assert pid is not None
        made: dict[str, Any] = {}

        def new_room() -> None:  # its Janus room is asked for from a Janus that hangs
            with contextlib.suppress(LiveError):
                made["info"] = rooms.join("a1", "r9", "Cy", Peer("Cy").send)

        def join_open_room() -> None:  # Ada's room needs no Janus request
            made["bob"] = join(rooms, "Bob")
            rooms.leave(made["bob"].peer_id)
            made["peers"] = rooms.peers_of("a1", "r1")

        os.kill(pid, signal.SIGSTOP)
        hung = threading.Thread(target=new_room, daemon=True)
        other = threading.Thread(target=join_open_room, daemon=True)
        try:
            hung.start()
            wait_until(lambda: rooms.peers_of("a1", "r9") == [] and hung.is_alive(), "r9 asked")
            time.sleep(0.5)  # r9's request is on its way to the stopped Janus
            other.start()
            wait_until(lambda: "peers" in made, "Bob in and out of r1 while r9 waits", 20)
            assert hung.is_alive() and made["peers"] == [ada.peer_id]
        finally:
            os.kill(pid, signal.SIGCONT)
        hung.join(70)
        assert made["info"].janus["room"] in running_rooms(rooms)


def _existing(tmp_path: Path) -> Iterator[tuple[JanusProcess, dict[str, Any]]]:
    with JanusProcess(tmp_path / "janus", admin_key="existing-" + "k" * 24, websockets=True) as j:
        assert j.ws_url is not None
        yield j, {"janus": j.url, "janus_admin_key": j.admin_key, "janus_ws_url": j.ws_url}


@pytest.fixture
def quick_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_relay, "KEEPALIVE_S", 0.5)
    monkeypatch.setattr(live_relay, "REQUEST_TIMEOUT_S", 0.5)
    monkeypatch.setattr(live_rooms, "RETRY_S", 0.5)


def test_an_existing_janus_out_of_reach_for_a_moment_keeps_its_rooms_and_recordings(
    tmp_path: Path, quick_relay: None
) -> None:
    existing = contextlib.contextmanager(_existing)
    with (
        existing(tmp_path) as (janus, fields),
        live_state(tmp_path / "data", **fields) as (
            state,
            rooms,
        ),
    ):
        new_app(state, "a1", STORAGE)
        ada, bob = join(rooms, "Ada"), join(rooms, "Bob", room="r2")
        rooms.start_recording(ada.peer_id)
        rooms.start_recording(bob.peer_id)
        rid = ada.wait_state("START")["recordingId"]
        rid2 = bob.wait_state("START")["recordingId"]
        r1, r2 = rooms.janus_room_of("a1", "r1"), rooms.janus_room_of("a1", "r2")
        assert r1 is not None and r2 is not None
        generation = rooms.relay.generation
        assert janus.pid is not None
        os.kill(janus.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: not rooms.relay.ready.is_set(), "the relay seen failing", 30)
            rooms.stop_recording(bob.peer_id)  # Janus cannot be told now
            rooms.leave(bob.peer_id)  # nor its room destroyed
        finally:
            os.kill(janus.pid, signal.SIGCONT)
        wait_until(lambda: rooms.relay.generation > generation, "the relay back", 30)
        with janus.client() as admin:
            wait_until(
                lambda: r2 not in {r["room"] for r in admin.list_rooms()},
                "the left room destroyed",
                30,
            )
            listed = {r["room"]: r for r in admin.list_rooms()}
        assert listed[r1]["record"] is True  # r1 records on, as it did
        assert row(state, rid).state == "START" and ("STOP", rid) not in ada.states()
        assert ada.of("error") == []
        assert row(state, rid2).spec["live"]["stop_reason"] == "requested"
        assert rooms.janus_room_of("a1", "r1") == r1
        rooms.stop_recording(ada.peer_id)
        assert ada.wait_state("STOP")["reason"] == "requested"
        assert running_rooms(rooms)[r1]["record"] is False


def test_an_existing_janus_restarted_between_keepalives_is_noticed(
    tmp_path: Path, quick_relay: None
) -> None:
    existing = contextlib.contextmanager(_existing)
    with (
        existing(tmp_path) as (janus, fields),
        live_state(tmp_path / "data", **fields) as (
            state,
            rooms,
        ),
    ):
        new_app(state, "a1", STORAGE)
        ada = join(rooms, "Ada")
        rooms.start_recording(ada.peer_id)
        rid = ada.wait_state("START")["recordingId"]
        old = rooms.janus_room_of("a1", "r1")
        janus.restart()  # the same URL; its rooms and sessions are gone
        stop = ada.wait_state("STOP", 30)
        assert stop["recordingId"] == rid and stop["reason"] == "relay_failed"
        (told,) = ada.of("error")
        assert told["code"] == "relay_restarted"
        wait_until(lambda: row(state, rid).state != "START", "its STOP stored")
        assert row(state, rid).spec["live"]["stop_reason"] == "relay_failed"
        rooms.leave(ada.peer_id)
        info = rooms.join("a1", "r1", "Ada", Peer("Ada").send)  # the room made again
        assert info.janus["room"] != old and info.janus["room"] in running_rooms(rooms)


def test_calls_of_a_peer_whose_room_the_service_stop_closed_get_unknown_peer(
    tmp_path: Path,
) -> None:
    existing = contextlib.contextmanager(_existing)
    with existing(tmp_path) as (_, fields):
        state = make_state(tmp_path / "data", **fields)
        rooms = LiveRooms(state)
        rooms.start()
        new_app(state, "a1", STORAGE)
        ada = join(rooms, "Ada")
        codes: list[str] = []
        others: list[BaseException] = []
        done = threading.Event()

        def keep_asking() -> None:  # a page's calls while the service stops
            while not done.is_set():
                try:
                    rooms.stop_recording(ada.peer_id)
                except LiveError as exc:
                    codes.append(exc.code)
                except Exception as exc:  # noqa: BLE001 - what the test looks for
                    others.append(exc)

        asking = threading.Thread(target=keep_asking, daemon=True)
        asking.start()
        try:
            wait_until(lambda: len(ada.of("recordingState")) > 0, "the page asking")
            rooms.stop()
        finally:
            done.set()
            asking.join(10)
            state.close()
        assert others == [] and set(codes) == {"unknown_peer"}


def test_recovery_with_an_existing_janus_down_destroys_its_room_once_it_answers(
    tmp_path: Path, quick_relay: None
) -> None:
    data = tmp_path / "data"
    existing = contextlib.contextmanager(_existing)
    with existing(tmp_path) as (janus, fields):
        with live_state(data, **fields) as (state, rooms):
            new_app(state, "a1", STORAGE)
            ada = join(rooms, "Ada")
            rooms.start_recording(ada.peer_id)
            rid = ada.wait_state("START")["recordingId"]
            number = rooms.janus_room_of("a1", "r1")
        assert janus.pid is not None
        os.kill(janus.pid, signal.SIGSTOP)  # out of reach when the service starts again
        try:
            with live_state(data, **fields) as (state, rooms):
                assert row(state, rid).spec["live"]["stop_reason"] == "service_restarted"
                os.kill(janus.pid, signal.SIGCONT)
                with janus.client() as admin:
                    wait_until(
                        lambda: number not in {r["room"] for r in admin.list_rooms()},
                        "the room destroyed",
                        30,
                    )
        finally:
            os.kill(janus.pid, signal.SIGCONT)


def test_a_recording_recovery_cannot_stop_still_has_an_existing_janus_stop_recording(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    existing = contextlib.contextmanager(_existing)
    with existing(tmp_path) as (janus, fields):
        with live_state(data, **fields) as (state, rooms):
            new_app(state, "a1", STORAGE)
            ada = join(rooms, "Ada")
            rooms.start_recording(ada.peer_id)
            rid = ada.wait_state("START")["recordingId"]
            number = rooms.janus_room_of("a1", "r1")
            work_dir = Path(row(state, rid).work_dir)
        # no event log can be read or made again there: recovery's error path
        shutil.rmtree(work_dir)
        work_dir.write_text("not a folder")
        with live_state(data, **fields) as (state, rooms):
            got = row(state, rid)
            assert got.state == "ERROR" and got.error_code == "recovery_failed"
            with janus.client() as admin:  # Janus records no more into its folder
                wait_until(
                    lambda: number not in {r["room"] for r in admin.list_rooms()},
                    "the room destroyed",
                    30,
                )


def test_a_first_relay_start_that_fails_on_the_disk_is_tried_again(
    tmp_path: Path, quick_relay: None
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / live_relay.JANUS_DIR).write_text("not a folder")  # Janus's config cannot be written
    with live_state(data) as (state, rooms):
        assert not rooms.relay.ready.is_set()
        (data / live_relay.JANUS_DIR).unlink()
        wait_until(rooms.relay.ready.is_set, "the relay started on a later try", 30)
        new_app(state, "a1", STORAGE)
        ada = join(rooms, "Ada")
        assert rooms.janus_room_of("a1", "r1") in running_rooms(rooms)
        rooms.leave(ada.peer_id)


def test_live_rooms_are_unavailable_when_off(tmp_path: Path) -> None:
    with live_state(tmp_path / "data", janus="off") as (_, rooms):
        with pytest.raises(LiveError) as caught:
            rooms.join("a1", "r1", "Ada", Peer("Ada").send)
        assert caught.value.code == "live_unavailable"


def test_an_existing_janus_needs_its_admin_key_and_ws_url(tmp_path: Path) -> None:
    state = make_state(tmp_path / "data", janus="http://127.0.0.1:1/janus")
    with pytest.raises(OptionsError) as caught:
        LiveRooms(state)
    assert caught.value.field == "janus_admin_key"
    state = make_state(
        tmp_path / "data2", janus="http://127.0.0.1:1/janus", janus_admin_key="k" * 20
    )
    with pytest.raises(OptionsError) as caught:
        LiveRooms(state)
    assert caught.value.field == "janus_ws_url"


# --- media: recorded in a namespace, mixed here ----------------------------------------------


def _job(state: Any, rid: str, monkeypatch: pytest.MonkeyPatch) -> RecordingRow:
    monkeypatch.setenv("SKYMIX_ALLOW_PRIVATE_NOTIFY", "1")
    run_job(state.config.model_dump_json(), rid)
    return row(state, rid)


def _report(got: RecordingRow) -> MixReport:
    return MixReport.from_json((Path(got.work_dir) / "report.json").read_bytes())


def _linked(url: str, folder: Path) -> tuple[float, set[str]]:
    """The linked MP4 (fetched from the store): its duration and its streams' kinds."""
    file = folder / "linked.mp4"
    file.write_bytes(httpx.get(url, timeout=30).raise_for_status().content)
    with av.open(str(file)) as container:
        kinds: set[str] = {s.type for s in container.streams}
        frames = sum(1 for _ in container.decode(video=0))
        assert frames > 0
        return float(container.duration or 0) / 1e6, kinds


def test_live_recordings_are_mixed_with_names_after_stop_a_janus_crash_and_a_service_crash(
    tmp_path: Path, seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~40 s: three real recordings (aiortc publishers through Janus) and their three mixes
    data = tmp_path / "data"
    state = make_state(data)
    new_app(
        state,
        APP,
        {
            "storage": {
                "arn": f"arn:aws:s3:{seaweed.region}::{seaweed.bucket}/live-test/",
                "access_key_id": S3_ADMIN.access_key,
                "secret_access_key": S3_ADMIN.secret_key,
                "endpoint_url": seaweed.endpoint_url,
            }
        },
    )
    result = record_scenario(data, tmp_path / "ns")
    users = {name: str(uid) for name, uid in result["users"].items()}
    assert result["evil"] == []  # a page's own configure record/filename wrote nothing
    first, crashed_janus, crashed_service = result["recordings"]
    ada = result["messages"]["Ada"]
    states = [
        (m["state"], m["recordingId"], m["reason"]) for m in ada if m["type"] == "recordingState"
    ]
    assert states[:4] == [
        ("START", first, None),
        ("STOP", first, "requested"),
        ("START", crashed_janus, None),
        ("STOP", crashed_janus, "relay_failed"),
    ]
    bob = result["messages"]["Bob"]
    assert [(m["state"], m["recordingId"]) for m in bob if m["type"] == "recordingState"] == []

    # 1: a normal recording; Bob was there for about 1.5 s in the middle
    got = row(state, first)
    assert got.state == "STOP"
    rec_dir = data / "captures" / APP / "live" / first
    manifest = json.loads((rec_dir / MANIFEST_NAME).read_text())
    named = {p["id"]: p for p in manifest["participants"]}
    assert named[users["Ada"]]["name"] == "Ada" and named[users["Bob"]]["name"] == "Bob"
    assert got.spec["manifest"] == f"live/{first}/{MANIFEST_NAME}"
    assert all(c.startswith(f"live/{first}/videoroom-") for c in got.spec["captures"])
    # the engine: a manifest entry whose id is a .mjr file's user gives it its name (and its
    # declared streams are not "unmatched"); without it the user is "user <id>"
    files = [data / "captures" / APP / c for c in got.spec["captures"]]
    plain = scan_room(files)
    in_first = {users["Ada"]: "Ada", users["Bob"]: "Bob"}
    assert sorted(p.name for p in plain.participants) == sorted(f"user {u}" for u in in_first)
    scan = scan_room(files, load_description([], rec_dir / MANIFEST_NAME))
    assert {p.id: p.name for p in scan.participants} == in_first
    assert scan.unmatched == []
    got = _job(state, first, monkeypatch)
    assert got.state == "LINK", (got.error_code, got.error_message)
    report = _report(got)
    assert got.url is not None
    seconds, kinds = _linked(got.url, tmp_path)
    assert kinds == {"video", "audio"} and abs(seconds - report.duration_s) < 0.5
    people = {p.id: p for p in report.participants}
    assert people[users["Ada"]].name == "Ada" and people[users["Bob"]].name == "Bob"
    ((bob_from, bob_to),) = people[users["Bob"]].presence_s
    assert 0.8 < bob_to - bob_from < 3.0
    assert 3.0 < report.duration_s < 8.0
    assert not [d for d in report.damage if "no packet matched" in d], report.damage

    # 2: Janus SIGKILLed: files cut in the middle of a frame, mixed all the same
    got = row(state, crashed_janus)
    assert got.spec["live"]["stop_reason"] == "relay_failed" and got.spec["captures"]
    got = _job(state, crashed_janus, monkeypatch)
    assert got.state == "LINK", (got.error_code, got.error_message)
    report = _report(got)
    assert [p.name for p in report.participants] == ["Ada"]
    assert report.duration_s > 0.5
    assert any("truncated" in line for line in report.damage), report.damage

    # 3: the service killed: the next start stops it (service_restarted) and mixes what is there
    assert row(state, crashed_service).state == "START"
    with live_state(data) as (restarted, rooms):
        got = row(restarted, crashed_service)
        assert got.state == "STOP" and got.spec["live"]["stop_reason"] == "service_restarted"
        dan = join(rooms, "Dan", room=ROOM, app=APP)  # a page back in the room hears the end
        got = _job(restarted, crashed_service, monkeypatch)
        assert got.state == "LINK", (got.error_code, got.error_message)
        link = dan.wait_state("LINK", 30)
        assert link["recordingId"] == crashed_service and link["url"] == got.url
    assert [p.name for p in _report(got).participants] == ["Carol"]


def test_the_participants_log_survives_a_torn_line_and_gives_spans(tmp_path: Path) -> None:
    t0 = datetime(2026, 12, 7, 10, 0, 0, tzinfo=UTC)
    log_presence(tmp_path, "publish", 1, t0, "Ada")
    log_presence(tmp_path, "publish", 2, t0 + timedelta(seconds=2), "Bob")
    log_presence(tmp_path, "leave", 2, t0 + timedelta(seconds=5))
    log_presence(tmp_path, "publish", 2, t0 + timedelta(seconds=7), "Bob again")
    log_presence(tmp_path, "publish", 1, t0 + timedelta(seconds=8), "Ada")  # twice: one span
    with open(tmp_path / PARTICIPANTS_NAME, "a") as f:
        f.write('{"event": "leave", "id": "1", "at": "2026-12')  # a crash mid-line
    people = read_presence(tmp_path)
    assert people["1"].name == "Ada" and people["1"].spans == [[t0, None]]
    assert people["2"].name == "Bob again"
    assert people["2"].spans == [
        [t0 + timedelta(seconds=2), t0 + timedelta(seconds=5)],
        [t0 + timedelta(seconds=7), None],
    ]
    assert (tmp_path / PARTICIPANTS_NAME).stat().st_mode & 0o777 == 0o600
