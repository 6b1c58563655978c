"""AudioTrack: blocks placed by time land where they belong, drift is steered out without gaps,
losses stay silent, and the ring gives back exactly what was placed."""

from __future__ import annotations

import numpy as np
import pytest

from skymix import SkymixError
from skymix.placement import JUMP, STEER, AudioTrack


def ramp(start: int, n: int) -> np.ndarray:
    """A block whose samples say their own position (both channels)."""
    values = np.arange(start, start + n, dtype=np.float32)
    return np.stack([values, -values], axis=1)


def test_blocks_on_time_come_back_exactly():
    track = AudioTrack(capacity=4096)
    out = []
    for k in range(20):  # wraps the 4096-sample ring several times
        track.place(k * 960, ramp(k * 960, 960))
        out.append(track.read(k * 960, 960))
    got = np.concatenate(out)
    assert np.array_equal(got, ramp(0, 20 * 960))
    assert track.stats.stretched == track.stats.shrunk == track.stats.gaps == 0


@pytest.mark.parametrize("ppm", [300.0, -300.0, 45.0])
def test_a_drifting_sender_is_steered_without_gaps_or_overlaps(ppm):
    """An hour at 300 ppm is a second: blocks stay within STEER + 1 samples of their time,
    back to back, corrected one sample at a time."""
    track = AudioTrack(capacity=1 << 16)
    step = 960 * (1 + ppm * 1e-6)
    ideal = 1000.0
    worst = 0.0
    written = 0
    blocks = 30_000  # 10 minutes
    for k in range(blocks):
        before = track.cursor
        track.place(ideal, np.ones((960, 2), np.float32))
        if before is not None:
            worst = max(worst, abs(ideal - before))
        ideal += step
        written += 960
        if k % 50 == 49:
            block = track.read(track.cursor - 30_000, 20_000)
            assert np.all(block == 1.0)  # no holes, no doubled samples
    assert worst <= STEER + 1
    corrections = track.stats.stretched + track.stats.shrunk
    assert corrections == pytest.approx(abs(ppm) * 1e-6 * 960 * blocks, abs=STEER + 2)
    assert (track.stats.stretched > 0) == (ppm > 0)


def test_a_lost_block_stays_silent_and_later_blocks_keep_their_place():
    track = AudioTrack(capacity=8192)
    track.place(0, np.ones((960, 2), np.float32))
    track.place(2 * 960, np.full((960, 2), 2.0, np.float32))  # block 1 was lost
    got = track.read(0, 3 * 960)
    assert np.all(got[:960] == 1.0) and np.all(got[960:1920] == 0.0) and np.all(got[1920:] == 2.0)
    assert track.stats.gaps == 1 and track.stats.samples_silent == 960


def test_small_errors_are_absorbed_large_ones_jump():
    track = AudioTrack(capacity=8192)
    track.place(0, np.ones((100, 2), np.float32))
    track.place(100 + STEER, np.ones((100, 2), np.float32))  # within tolerance: back to back
    assert track.cursor == 200
    track.place(200 + JUMP + 1, np.ones((100, 2), np.float32))
    assert track.cursor == 200 + JUMP + 1 + 100 and track.stats.gaps == 1
    track.place(0, np.ones((10, 2), np.float32))  # a sender clock jump back
    assert track.stats.jumps_back == 1


def test_audio_placed_where_the_recording_already_is_is_dropped_and_counted():
    track = AudioTrack(capacity=8192)
    track.read(0, 1000)
    track.place(900, np.ones((200, 2), np.float32))
    assert track.stats.late == 100
    got = track.read(1000, 200)
    assert np.all(got[:100] == 1.0) and np.all(got[100:] == 0.0)


def test_overlapping_placements_add_up():
    track = AudioTrack(capacity=8192)
    track.place(0, np.ones((100, 2), np.float32))
    track.place(-1000, np.ones((100, 2), np.float32))  # jump back: mixed over what is there
    track.place(50, np.ones((100, 2), np.float32))
    assert track.read(0, 150)[50:100].max() == 2.0


def test_bad_shapes_and_placing_too_far_ahead_are_errors():
    track = AudioTrack(capacity=1024)
    with pytest.raises(SkymixError, match=r"shape \(10,\)"):
        track.place(0, np.ones(10, np.float32))
    with pytest.raises(SkymixError, match="ahead"):
        track.place(5000, np.ones((100, 2), np.float32))
