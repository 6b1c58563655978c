import json
import logging
import os
import shutil
import threading
from datetime import UTC, datetime, timedelta

import pytest
from ulid import ULID

from skymix.deliver.states import (
    EVENT_LOG_NAME,
    ErrorReason,
    NotificationDue,
    NotificationPayload,
    Recording,
    RecordingState,
    StoredUpload,
    new_recording_id,
)
from skymix.errors import (
    DeliveryError,
    DescriptionError,
    OptionsError,
    OutputConflictError,
    OutputError,
    RecordingStateError,
)
from skymix.report import AudioCounts, MixReport, ParticipantResult, VideoCounts

EXPIRES = datetime(2026, 12, 14, 2, 0, tzinfo=UTC)
URL = "https://s3.example.com/bucket/acme/r1.mp4?X-Amz-Signature=abc"


def new(tmp_path, **kw):
    return Recording.create(tmp_path / EVENT_LOG_NAME, "acme-support", "room-1", **kw)


def heard(rec):
    calls = []
    rec.on("recordingState", lambda *args: calls.append(args))
    return calls


def log_lines(rec):
    return [json.loads(line) for line in rec.log_path.read_text().splitlines()]


def report():
    def part(pid, name, spans):
        return ParticipantResult(
            id=pid, name=name, presence_s=spans, video=VideoCounts(), audio=AudioCounts()
        )

    return MixReport(
        job_id="j1",
        output="out.mp4",
        session_start_ns=0,
        duration_s=62.5,
        frames=1875,
        samples=3_000_000,
        participants=[
            part("alice", "Alice", [(0.0, 20.0), (30.0, 62.5)]),
            part("bob", "Bob", [(5.5, 40.0)]),
        ],
        streams=[],
        layouts=[],
        segments=[],
        files=[],
        scan={},
    )


def test_start_stop_link_is_announced_in_order_with_the_js_api_arguments(tmp_path):
    rec = new(tmp_path)
    calls = heard(rec)
    rec.start()
    rec.stop()
    rec.link(URL, EXPIRES)
    assert calls == [
        ("START", rec.id, None, None),
        ("STOP", rec.id, None, None),
        ("LINK", rec.id, URL, None),
    ]
    assert rec.state is RecordingState.LINK and rec.link_expires_at == EXPIRES
    assert rec.started_at is not None and rec.stopped_at is not None
    assert rec.started_at <= rec.stopped_at


@pytest.mark.parametrize("after", [["start"], ["start", "stop"]])
def test_error_is_reachable_from_start_and_stop_with_its_reason(tmp_path, after):
    rec = new(tmp_path)
    calls = heard(rec)
    for step in after:
        getattr(rec, step)()
    rec.fail(DeliveryError("bucket b, key k: AccessDenied"))
    reason = ErrorReason("delivery_failed", "bucket b, key k: AccessDenied")
    assert calls[-1] == ("ERROR", rec.id, None, reason)
    assert rec.error == reason and str(reason) == "delivery_failed: bucket b, key k: AccessDenied"


def test_an_unforeseen_exception_is_an_internal_error_named_by_its_type_only(tmp_path):
    rec = new(tmp_path)
    rec.start()
    rec.fail(KeyError("secret-ish text"))
    assert rec.error == ErrorReason("internal_error", "unexpected KeyError")


# (steps taken first, the illegal step): backwards, twice the same, skipping, out of ERROR
ILLEGAL = [
    ([], "stop"),
    ([], "link"),
    ([], "fail"),
    (["start"], "start"),
    (["start"], "link"),
    (["start", "stop"], "start"),
    (["start", "stop"], "stop"),
    (["start", "stop", "link"], "start"),
    (["start", "stop", "link"], "stop"),
    (["start", "stop", "link"], "link"),
    (["start", "stop", "link"], "fail"),
    (["start", "fail"], "start"),
    (["start", "fail"], "stop"),
    (["start", "fail"], "fail"),
]


def step(rec, name):
    if name == "link":
        rec.link(URL, EXPIRES)
    elif name == "fail":
        rec.fail(DeliveryError("down"))
    else:
        getattr(rec, name)()


@pytest.mark.parametrize(("before", "illegal"), ILLEGAL)
def test_illegal_transitions_raise_and_change_nothing(tmp_path, before, illegal):
    rec = new(tmp_path)
    for name in before:
        step(rec, name)
    calls = heard(rec)
    state, lines = rec.state, rec.log_path.read_text()
    with pytest.raises(RecordingStateError) as exc:
        step(rec, illegal)
    assert exc.value.code == "recording_state_invalid" and exc.value.recording_id == rec.id
    assert "cannot go to" in str(exc.value)
    assert rec.state is state and rec.log_path.read_text() == lines and calls == []


def test_error_then_link_is_announced_again_with_the_next_notification_number(tmp_path):
    rec = new(tmp_path)
    rec.start()
    rec.stop()
    rec.fail(DeliveryError("store down"))
    assert rec.notification_sequence == 1
    calls = heard(rec)
    rec.link(URL, EXPIRES)
    assert calls == [("LINK", rec.id, URL, None)]
    assert rec.error is None and rec.notification_sequence == 2
    states = [e for e in log_lines(rec) if e["event"] == "state"]
    assert [(e["state"], e.get("notification")) for e in states] == [
        ("START", None),
        ("STOP", None),
        ("ERROR", 1),
        ("LINK", 2),
    ]


def test_a_raising_subscriber_is_logged_and_the_others_still_hear(tmp_path, caplog):
    rec = new(tmp_path)
    order = []

    def broken(*args):
        order.append("broken")
        raise RuntimeError("subscriber bug")

    rec.on("recordingState", lambda *a: order.append("first"))
    rec.on("recordingState", broken)
    rec.on("recordingState", lambda *a: order.append("third"))
    with caplog.at_level(logging.ERROR, logger="skymix.deliver.states"):
        rec.start()
        rec.stop()
    assert order == ["first", "broken", "third"] * 2
    assert rec.state is RecordingState.STOP
    assert "subscriber failed" in caplog.text and "subscriber bug" in caplog.text


def test_off_unsubscribes_and_unknown_events_are_refused(tmp_path):
    rec = new(tmp_path)
    calls = []

    def fn(*args):
        calls.append(args)

    rec.on("recordingState", fn)
    rec.off("recordingState", fn)
    rec.start()
    assert calls == []
    with pytest.raises(OptionsError, match="recordingState"):
        rec.on("stateChanged", fn)


def test_a_subscriber_reading_the_log_sees_its_own_transition_on_disk(tmp_path):
    rec = new(tmp_path)
    seen = []

    def read_back(state, recording_id, url, error):
        # a fresh open, as another process would read it after a crash
        seen.append(Recording.load(rec.log_path).state.value)
        last = json.loads(rec.log_path.read_text().splitlines()[-1])
        assert last["event"] == "state" and last["state"] == state

    rec.on("recordingState", read_back)
    rec.start()
    rec.stop()
    rec.link(URL, EXPIRES)
    assert seen == ["START", "STOP", "LINK"]


def test_the_log_holds_every_event_with_its_sequence_number(tmp_path):
    rec = new(tmp_path)
    rec.start()
    assert rec.append("upload_attempt", attempt=1, status="timeout") == 3
    rec.stop()
    lines = log_lines(rec)
    assert [e["seq"] for e in lines] == [1, 2, 3, 4]
    assert [e["event"] for e in lines] == ["recording", "state", "upload_attempt", "state"]
    assert lines[0]["recording_id"] == rec.id and lines[0]["app_id"] == "acme-support"
    assert lines[2]["status"] == "timeout"
    for e in lines:
        datetime.fromisoformat(e["at"].replace("Z", "+00:00"))


def test_append_refuses_reserved_kinds_and_non_json_values(tmp_path):
    rec = new(tmp_path)
    with pytest.raises(OptionsError):
        rec.append("state", state="LINK")
    with pytest.raises(OptionsError):
        rec.append("webhook_attempt", body=object())
    assert len(log_lines(rec)) == 1


def test_create_refuses_an_existing_log_and_bad_ids(tmp_path):
    rec = new(tmp_path)
    with pytest.raises(OutputConflictError):
        new(tmp_path)
    assert Recording.load(rec.log_path).id == rec.id
    with pytest.raises(OptionsError, match="recording_id"):
        Recording.create(tmp_path / "x.jsonl", "a", "r", recording_id="../etc")
    given = Recording.create(tmp_path / "y.jsonl", "a", "r", recording_id="call-42")
    assert given.id == "call-42"


def test_ids_sort_by_creation_time(tmp_path):
    ids = [new_recording_id() for _ in range(200)]  # many within one millisecond
    assert ids == sorted(ids) and len(set(ids)) == 200
    before = datetime.now(UTC) - timedelta(seconds=1)
    rid = new(tmp_path).id
    assert len(rid) == 26 and ULID.from_str(rid).datetime >= before


def crash_in_the_middle_of_a_line(rec):
    """What a process killed while writing leaves: the last line cut short."""
    data = rec.log_path.read_bytes()
    cut = data.rstrip(b"\n").rfind(b"\n") + 10
    with open(rec.log_path, "r+b") as f:
        f.truncate(cut)


def test_load_after_a_crash_drops_the_torn_line_and_says_what_is_left(tmp_path, caplog):
    rec = new(tmp_path)
    rec.start()
    rec.stop()
    rec.record_mixed(tmp_path / "recording.mp4")
    rec.record_upload(bucket="b", key="acme/r.mp4", size=10, sha256="ab" * 32)
    crash_in_the_middle_of_a_line(rec)
    with caplog.at_level(logging.WARNING):
        back = Recording.load(rec.log_path)
    assert "torn" in caplog.text
    assert (back.id, back.app_id, back.room) == (rec.id, "acme-support", "room-1")
    assert back.state is RecordingState.STOP and back.mixed_file == tmp_path / "recording.mp4"
    assert back.upload is None
    left = back.pending()
    assert (left.mix, left.upload, left.link, left.notification) == (False, True, True, None)
    # the file was cut back to whole lines: the next event starts on its own line
    assert back.log_path.read_bytes().endswith(b"\n")
    back.record_upload(bucket="b", key="acme/r.mp4", size=10, sha256="ab" * 32)
    back.link(URL, EXPIRES)
    again = Recording.load(rec.log_path)
    assert again.upload == StoredUpload("b", "acme/r.mp4", 10, "ab" * 32, backup=False)
    assert again.state is RecordingState.LINK and again.url == URL
    assert again.link_expires_at == EXPIRES
    assert again.pending().notification == NotificationDue(
        1, RecordingState.LINK, ("webhook", "email")
    )


def test_load_of_a_log_whose_last_line_lost_only_its_newline(tmp_path):
    rec = new(tmp_path)
    rec.start()
    with open(rec.log_path, "r+b") as f:
        f.truncate(os.path.getsize(rec.log_path) - 1)
    back = Recording.load(rec.log_path)
    assert back.state is None
    assert back.pending().mix and back.pending().link
    back.start()
    assert [e["seq"] for e in log_lines(back)] == [1, 2]


def test_a_damaged_line_before_the_last_is_an_error_naming_it(tmp_path):
    rec = new(tmp_path)
    rec.start()
    rec.stop()
    lines = rec.log_path.read_text().splitlines()
    lines[1] = lines[1][:15]
    rec.log_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DescriptionError, match="line 2"):
        Recording.load(rec.log_path)


def test_an_impossible_history_is_refused(tmp_path):
    rec = new(tmp_path)
    rec.start()
    with open(rec.log_path, "a") as f:
        f.write(
            json.dumps({"seq": 3, "at": "2026-12-07T00:00:00Z", "event": "state", "state": "START"})
            + "\n"
        )
    with pytest.raises(DescriptionError, match="cannot hold"):
        Recording.load(rec.log_path)


def test_error_then_resume_after_crash_leaves_upload_link_and_notification(tmp_path):
    rec = new(tmp_path)
    rec.start()
    rec.stop()
    rec.record_mixed("recording.mp4")
    rec.fail(DeliveryError("store down"))
    rec.record_notification(1, "webhook", "delivered")
    back = Recording.load(rec.log_path)
    assert back.state is RecordingState.ERROR
    assert back.error == ErrorReason("delivery_failed", "store down")
    left = back.pending()
    assert (left.mix, left.upload, left.link) == (False, True, True)
    assert left.notification == NotificationDue(1, RecordingState.ERROR, ("email",))
    back.record_notification(1, "email", "failed", reason="smtp: connection refused")
    assert Recording.load(rec.log_path).pending().notification is None
    assert back.pending(channels=("webhook",)).notification is None
    with pytest.raises(OptionsError):
        back.record_notification(7, "email", "delivered")


def payload_link(tmp_path):
    rec = new(tmp_path)
    rec.start()
    rec.stop()
    rec.record_upload(bucket="skylink-recording", key="calls/r.mp4", size=1234, sha256="cd" * 32)
    rec.link(URL, EXPIRES)
    return rec


def test_payload_of_a_link_has_the_issue_fields(tmp_path):
    rec = payload_link(tmp_path)
    body = NotificationPayload.build(rec, report()).to_json()
    assert set(body) == {
        "app_id", "room", "recording_id", "state", "sequence", "url", "url_expires_at",
        "bucket", "key", "backup", "stored_in", "duration_s", "size", "sha256", "participants",
        "started_at", "stopped_at", "error",
    }  # fmt: skip
    assert body["app_id"] == "acme-support" and body["room"] == "room-1"
    assert body["recording_id"] == rec.id and body["state"] == "LINK" and body["sequence"] == 1
    assert body["url"] == URL and body["url_expires_at"] == "2026-12-14T02:00:00Z"
    assert (body["bucket"], body["key"], body["size"]) == ("skylink-recording", "calls/r.mp4", 1234)
    assert body["sha256"] == "cd" * 32 and body["backup"] is False and body["error"] is None
    assert body["stored_in"] == "primary"
    assert body["duration_s"] == 62.5
    assert body["participants"] == [
        {"id": "alice", "name": "Alice", "joined_s": 0.0, "left_s": 62.5},
        {"id": "bob", "name": "Bob", "joined_s": 5.5, "left_s": 40.0},
    ]
    started = datetime.fromisoformat(body["started_at"])
    assert started == rec.started_at and datetime.fromisoformat(body["stopped_at"]) >= started
    assert json.loads(NotificationPayload.build(rec, report()).to_bytes()) == body


def test_payload_takes_upload_values_given_plainly(tmp_path):
    rec = payload_link(tmp_path)
    body = NotificationPayload.build(
        rec, report(), bucket="backup", key="k2", size=9, sha256="ef" * 32, backup=True
    ).to_json()
    assert (body["bucket"], body["key"], body["size"], body["backup"]) == ("backup", "k2", 9, True)


def test_payload_of_an_error_before_mixing_has_the_reason_and_no_file(tmp_path):
    rec = new(tmp_path)
    rec.start()
    rec.fail(DeliveryError("relay lost"))
    body = NotificationPayload.build(rec).to_json()
    assert body["state"] == "ERROR" and body["sequence"] == 1
    assert body["error"] == {"code": "delivery_failed", "message": "relay lost"}
    assert body["url"] is None and body["bucket"] is None and body["participants"] == []
    assert body["duration_s"] is None and body["stopped_at"] is None


def test_payload_is_refused_before_there_is_anything_to_announce(tmp_path):
    rec = new(tmp_path)
    rec.start()
    with pytest.raises(RecordingStateError, match="nothing to announce"):
        NotificationPayload.build(rec)


def test_repr_names_the_recording(tmp_path):
    rec = payload_link(tmp_path)
    assert (
        repr(rec) == f"Recording(id={rec.id!r}, app_id='acme-support', room='room-1', state=LINK)"
    )


def test_a_transition_that_cannot_be_written_is_neither_made_nor_announced(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    rec = Recording.create(folder / EVENT_LOG_NAME, "a", "r")
    calls = heard(rec)
    shutil.rmtree(folder)
    with pytest.raises(OutputError, match="cannot append"):
        rec.start()
    assert rec.state is None and calls == []


def test_events_from_several_threads_get_distinct_consecutive_numbers(tmp_path):
    rec = new(tmp_path)

    def attempts(name):
        for i in range(40):
            rec.append("webhook_attempt", worker=name, attempt=i)

    threads = [threading.Thread(target=attempts, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["seq"] for e in log_lines(rec)] == list(range(1, 82))
    assert Recording.load(rec.log_path).append("done") == 82


def test_a_recording_read_back_announces_the_same_payload(tmp_path):
    rec = payload_link(tmp_path)
    back = Recording.load(rec.log_path)
    assert NotificationPayload.build(back, report()) == NotificationPayload.build(rec, report())
    assert back.created_at == rec.created_at


def test_multipart_starts_and_the_backup_copy_survive_a_reload(tmp_path):
    rec = new(tmp_path)
    rec.start()
    rec.stop()
    rec.record_multipart_start("bkt", "calls/r.mp4", "upload-1")
    rec.record_multipart_start("bkt", "calls/r.mp4", "upload-2")
    copy = tmp_path / "spare" / "r.mp4"
    rec.record_backup_copy(copy, 1234, "ab" * 32)
    rec.fail(DeliveryError("the store is down"))
    back = Recording.load(rec.log_path)
    assert [m.upload_id for m in back.multipart_starts] == ["upload-1", "upload-2"]
    assert back.backup_copy == rec.backup_copy and back.backup_copy.path == copy
    body = NotificationPayload.build(back).to_json()
    assert body["stored_in"] == "backup_folder" and body["backup"] is True
    assert (body["size"], body["sha256"], body["url"]) == (1234, "ab" * 32, None)
    with pytest.raises(OptionsError):
        rec.append("multipart_started", upload_id="x")  # only through its own method
