"""timeline: the active speaker chosen from audio levels with hysteresis, and levels in dBov."""

from typing import Any

import pytest

from skymix.errors import ComposeError
from skymix.timeline import SpeakerTracker, dbov_from_rfc6464, dbov_from_rms

MS = 1_000_000


def run(tracker: SpeakerTracker, start_ms: int, end_ms: int, levels: Any) -> dict[int, str | None]:
    """Feed 20 ms blocks; levels(t_ms) gives the block's dBov per participant."""
    return {t: tracker.update(t * MS, levels(t)) for t in range(start_ms, end_ms, 20)}


def established(speaker: str = "a") -> SpeakerTracker:
    """A tracker whose speaker is `speaker`, who spoke until 1500 ms."""
    tracker = SpeakerTracker()
    run(tracker, 0, 1500, lambda t: {speaker: -25.0})
    assert tracker.speaker == speaker
    return tracker


def test_tracker_first_speaker_after_hold() -> None:
    tracker = SpeakerTracker()
    seen = run(tracker, 0, 1100, lambda t: {"a": -25.0, "b": -70.0} if t >= 40 else {})
    assert seen[1020] is None and seen[1040] == "a"


def test_tracker_ignores_a_cough() -> None:
    tracker = established("a")
    seen = run(
        tracker, 1500, 5000, lambda t: {"a": -70.0, "b": -10.0 if 2000 <= t < 2200 else -70.0}
    )
    assert set(seen.values()) == {"a"}


def test_tracker_switches_to_a_sustained_talker() -> None:
    tracker = established("a")

    def levels(t: int) -> dict[str, float]:  # b talks from 2000: 200 ms on, 100 ms pause
        talking = t >= 2000 and (t - 2000) % 300 < 200
        return {"a": -70.0, "b": -25.0 if talking else -70.0}

    seen = run(tracker, 1500, 4000, levels)
    assert seen[2980] == "a" and seen[3000] == "b"  # held 1 s, a quiet since 1480
    assert set(seen[t] for t in range(3000, 4000, 20)) == {"b"}


def test_tracker_pauses_longer_than_bridge_restart_the_hold() -> None:
    tracker = established("a")
    seen = run(
        tracker,
        1500,
        6000,
        lambda t: {"b": -25.0 if t >= 2000 and (t - 2000) % 600 < 200 else -70.0},
    )
    assert set(seen.values()) == {"a"}
    patient = SpeakerTracker(bridge=0.5)
    run(patient, 0, 1500, lambda t: {"a": -25.0})
    seen = run(
        patient,
        1500,
        6000,
        lambda t: {"b": -25.0 if t >= 2000 and (t - 2000) % 600 < 200 else -70.0},
    )
    assert seen[3000] == "a" and seen[3200] == "b"  # the first "on" block 1 s after 2000 + 200


def test_tracker_waits_for_the_current_speaker_to_stop() -> None:
    tracker = established("a")
    seen = run(tracker, 1500, 5000, lambda t: {"a": -30.0 if t < 3000 else -70.0, "b": -20.0})
    assert seen[3460] == "a" and seen[3480] == "b"  # a last spoke at 2980, quiet for 0.5 s


def test_tracker_needs_clearly_louder() -> None:
    # a's level is below speech but b is only 3 dB above it: not ahead.
    tracker = established("a")
    seen = run(tracker, 1500, 5000, lambda t: {"a": -55.0, "b": -52.0})
    assert set(seen.values()) == {"a"}
    seen = run(tracker, 5000, 7000, lambda t: {"a": -55.0, "b": -45.0})
    assert seen[5980] == "a" and seen[6000] == "b"


def test_tracker_silence_keeps_the_last_speaker() -> None:
    tracker = established("b")
    seen = run(tracker, 1500, 20000, lambda t: {"a": -127.0, "b": -127.0})
    assert set(seen.values()) == {"b"}
    assert tracker.update(20_000 * MS, {}) == "b"


def test_tracker_remove_and_time() -> None:
    tracker = established("a")
    tracker.remove("b")
    assert tracker.speaker == "a"
    tracker.remove("a")
    assert tracker.speaker is None
    with pytest.raises(ComposeError, match="backwards"):
        tracker.update(0, {})
    with pytest.raises(ComposeError, match="hold"):
        SpeakerTracker(hold=-1.0)


def test_levels() -> None:
    assert dbov_from_rms(1.0) == 0.0
    assert dbov_from_rms(0.5) == pytest.approx(-6.0206)
    assert dbov_from_rms(0.0) == -127.0 and dbov_from_rms(1e-9) == -127.0
    assert dbov_from_rfc6464(0) == 0.0 and dbov_from_rfc6464(127) == -127.0
    with pytest.raises(ComposeError, match="0..127"):
        dbov_from_rfc6464(128)
