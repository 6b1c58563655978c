"""Reading a mixed recording back the way a viewer would: beeps heard, flashes seen, tiles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

BEEP_HZ = 1000  # the synthesizer's beep (skymix.synth.generate)


@dataclass
class Recording:
    audio: np.ndarray  # (channels, samples) float
    audio_start: float
    rate: int
    frames: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]  # (time, Y, U, V)
    report: dict

    def tiles_at(self, t: float) -> dict[str, dict]:
        """The report's tiles (by participant id) of the layout shown at output time t."""
        current: dict | None = None
        for layout in self.report["layouts"]:
            if layout["at_s"] <= t + 1e-6:
                current = layout
        return {tile["id"]: tile for tile in current["tiles"]} if current else {}


def read_recording(path: Path, report: dict) -> Recording:
    audio, start, rate = np.zeros((2, 0)), 0.0, 48000
    frames = []
    with av.open(str(path)) as container:
        if container.streams.audio:
            chunks = []
            for n, frame in enumerate(container.decode(audio=0)):
                if n == 0:
                    start, rate = float(frame.time), frame.sample_rate
                chunks.append(frame.to_ndarray().reshape(len(frame.layout.channels), -1))
            audio = np.concatenate(chunks, axis=1)
    with av.open(str(path)) as container:
        if container.streams.video:
            for frame in container.decode(video=0):
                y, u, v = (
                    np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].copy()
                    for p in frame.planes
                )
                frames.append((float(frame.time), y, u, v))
    return Recording(audio, start, rate, frames, report)


def beep_onsets(rec: Recording, threshold: float = 0.1) -> np.ndarray:
    """Output times (s) where the 1 kHz beep starts, from the first channel.

    The envelope is the magnitude of the signal mixed down by 1 kHz and averaged over 5 ms; an
    onset is taken where it first crosses the threshold, less the averaging window's half. The
    envelope must have fallen below half the threshold since the last onset (hysteresis): codec
    noise on a beep's falling edge crossed the threshold twice in one CI run.
    """
    x = rec.audio[0].astype(np.float64)
    t = np.arange(len(x)) / rec.rate
    window = rec.rate // 200
    envelope = np.abs(
        np.convolve(x * np.exp(-2j * np.pi * BEEP_HZ * t), np.ones(window) / window, mode="same")
    )
    loud = envelope > threshold
    quiet = np.flatnonzero(envelope < threshold / 2)
    onsets = []
    for rise in np.flatnonzero(loud[1:] & ~loud[:-1]) + 1:
        after = np.searchsorted(quiet, onsets[-1], side="right") if onsets else 0
        if not onsets or (after < len(quiet) and quiet[after] < rise):
            onsets.append(rise)
    return np.array(onsets, dtype=np.int64) / rec.rate + rec.audio_start - window / 2 / rec.rate


def flashes(rec: Recording, pid: str) -> list[float]:
    """Output times of frames in which the participant's tile is white (a flash)."""
    seen = []
    for t, y, _, _ in rec.frames:
        tile = rec.tiles_at(t).get(pid)
        if tile is None or not tile["video"]:
            continue
        inner = y[
            tile["y"] + tile["h"] // 3 : tile["y"] + 2 * tile["h"] // 3,
            tile["x"] + tile["w"] // 3 : tile["x"] + 2 * tile["w"] // 3,
        ]
        if np.median(inner) > 200:  # the picture is white but for its moving bar
            seen.append(t)
    return seen


def tile_chroma(rec: Recording, index: int, pid: str) -> tuple[float, float]:
    """Median U, V in the middle of a participant's tile in frame index (the moving bar aside)."""
    t, _, u, v = rec.frames[index]
    tile = rec.tiles_at(t)[pid]
    x0, y0 = (tile["x"] + tile["w"] // 3) // 2, (tile["y"] + tile["h"] // 3) // 2
    x1, y1 = (tile["x"] + 2 * tile["w"] // 3) // 2, (tile["y"] + 2 * tile["h"] // 3) // 2
    return float(np.median(u[y0:y1, x0:x1])), float(np.median(v[y0:y1, x0:x1]))


def load_truth(folder: Path) -> dict:
    return json.loads((folder / "synth-truth.json").read_text())


def expected_output_time(truth: dict, report: dict, relay_s: float) -> float:
    """Where something the relay clock placed at relay_s (sender side) belongs in the recording:
    its arrival over the network's base delay, from the recording's first instant."""
    base = truth["impairments"]["base_delay_ms"] / 1000
    start = report["session_start_ns"] / 1e9 - truth["start_unix"]
    return relay_s + base - start


def displayable_flash_frames(truth: dict, name: str) -> list[float]:
    """Relay times of the participant's flash frames that reached the relay whole and were not
    lost to a keyframe wait (after a loss, frames up to the next keyframe are not shown)."""
    person = next(p for p in truth["participants"] if p["name"] == name)
    if not person.get("video"):
        return []
    times, waiting = [], True
    for frame in person["video"]["frames"]:
        whole = frame["delivered"] >= frame["packets"]
        if not whole:
            waiting = True
            continue
        if frame["keyframe"]:
            waiting = False
        if not waiting and frame["flash"]:
            times.append(frame["relay"])
    return times
