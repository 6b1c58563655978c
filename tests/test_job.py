"""A mix as a job a service runs: an id, subscribers hearing states and progress, cancellation
from another thread at any point (first pass or second) that leaves nothing behind."""

import threading

import pytest

from skymix import (
    CancelledError,
    EncodeSettings,
    JobState,
    JobSubscriber,
    MixJob,
    MixOptions,
    NothingToMixError,
    mix,
)
from skymix.session import load_description
from skymix.synth import preset, synthesize

SMALL = EncodeSettings(width=320, height=180, preset="ultrafast")


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    folder = tmp_path_factory.mktemp("room")
    people = preset(2, 4.0)
    made = synthesize(people, 4.0, folder, seed=3)
    description = load_description([f"{p.name}={sdp}" for p, sdp in zip(people, made.sdps)])
    return made, description


class Recorder(JobSubscriber):
    def __init__(self):
        self.states = []
        self.progress = []

    def on_state(self, event):
        self.states.append(event)

    def on_progress(self, job_id, event):
        self.progress.append((job_id, event))


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def mix_room(room, folder, **job):
    made, description = room
    return mix(
        [made.pcap],
        folder / "out.mp4",
        description=description,
        options=MixOptions(encode=SMALL),
        **job,
    )


def test_states_progress_and_id_reach_subscribers(room, tmp_path):
    heard = Recorder()
    report = mix_room(room, tmp_path, job_id="rec-42", subscribers=[heard])
    assert report.job_id == "rec-42"
    assert [e.state for e in heard.states] == [
        JobState.STARTED,
        JobState.READING,
        JobState.MIXING,
        JobState.DONE,
    ]
    assert all(e.job_id == "rec-42" for e in heard.states)
    stages = [event.stage for _, event in heard.progress]
    assert "reading" in stages and stages[-1] == "mixing"
    last = heard.progress[-1][1]
    assert last.done == last.total == report.frames
    assert {job_id for job_id, _ in heard.progress} == {"rec-42"}


def test_a_failing_subscriber_does_not_break_the_job(room, tmp_path):

    class Broken(JobSubscriber):
        calls = 0

        def on_progress(self, job_id, event):
            Broken.calls += 1
            raise RuntimeError("listener bug")

    heard = Recorder()
    report = mix_room(room, tmp_path, subscribers=[Broken(), heard])
    assert Broken.calls == 1  # dropped after its first failure
    assert report.frames > 0 and heard.states[-1].state is JobState.DONE


@pytest.mark.parametrize("stage", ["reading", "mixing"])
def test_cancel_from_another_thread_cleans_up(room, tmp_path, stage):
    made, description = room
    out = tmp_path / "out.mp4"
    heard = Recorder()
    jobs = []

    class CancelAt(JobSubscriber):
        def on_progress(self, job_id, event):
            if event.stage == stage and event.done >= 1:
                threading.Thread(target=jobs[0].cancel).start()

    each = tmp_path / "each" / "deeper"  # made by the job: removed again
    job = MixJob(
        [made.pcap],
        out,
        description=description,
        options=MixOptions(encode=SMALL, per_participant=each, channels=tmp_path / "ch.wav"),
        subscribers=[heard, CancelAt()],
        report=tmp_path / "out.json",
    )
    jobs.append(job)
    with pytest.raises(CancelledError):
        job.run()
    assert heard.states[-1].state is JobState.CANCELLED
    assert heard.states[-1].error_code == "cancelled"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_failure_reaches_subscribers_with_its_code(tmp_path):
    empty = tmp_path / "empty.pcap"
    # a valid pcap header (little endian, microseconds, Ethernet) and no packets
    empty.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
    heard = Recorder()
    with pytest.raises(NothingToMixError):
        mix([empty], tmp_path / "out.mp4", subscribers=[heard])
    assert heard.states[-1].state is JobState.FAILED
    assert heard.states[-1].error_code == "nothing_to_mix"
    assert not (tmp_path / "out.mp4").exists()
