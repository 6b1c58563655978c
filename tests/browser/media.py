"""Fake camera and microphone files for Chromium, one pair per peer, and the matching readers.

Each peer's y4m is its colour with a white flash, and its wav its tone (a quiet sine) with a loud
beep of the same tone, both at the instants ``0.5 + 1.5 k`` s of the file. Chromium loops the
files, so they last one LOOP_S period pattern; the flash and the beep start on the same sample
and frame, which makes the per-peer sync checkable in the mixed MP4. Each peer's tone is its own
frequency, a multiple of 200 Hz: the 5 ms boxcar that demodulates one tone nulls the others, so
each peer's beeps are found in the mixed audio on their own.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FPS = 256, 192, 30
RATE = 48000
LOOP_S = 40.0
PERIOD_S = 1.5
FIRST_S = 0.5
FLASH_FRAMES = 3
BEEP_S = 0.12
TONE_LEVEL, BEEP_LEVEL = 0.1, 0.6


@dataclass(frozen=True)
class Peer:
    name: str
    rgb: tuple[int, int, int]
    tone_hz: float

    def yuv(self) -> tuple[int, int, int]:
        """BT.601 limited-range Y, U, V of the peer's colour."""
        r, g, b = self.rgb
        y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
        u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
        v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
        return round(y), round(u), round(v)


PEERS = {
    "ada": Peer("ada", (200, 40, 40), 400.0),
    "bob": Peer("bob", (40, 90, 210), 600.0),
    "cy": Peer("cy", (40, 170, 60), 800.0),
}


def marks() -> list[float]:
    """File times (s) of the flashes and beeps in one loop."""
    return [FIRST_S + k * PERIOD_S for k in range(int((LOOP_S - FIRST_S) / PERIOD_S) + 1)]


def write_y4m(peer: Peer, path: Path) -> None:
    """LOOP_S of the peer's colour at FPS, white for FLASH_FRAMES frames at each mark."""
    flash_frames = {round(t * FPS) + i for t in marks() for i in range(FLASH_FRAMES)}
    y, u, v = peer.yuv()
    quarter = WIDTH * HEIGHT // 4
    colour = bytes([y]) * (WIDTH * HEIGHT) + bytes([u]) * quarter + bytes([v]) * quarter
    white = bytes([235]) * (WIDTH * HEIGHT) + bytes([128]) * (WIDTH * HEIGHT // 2)
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for n in range(round(LOOP_S * FPS)):
            out.write(b"FRAME\n")
            out.write(white if n in flash_frames else colour)


def samples(peer: Peer) -> np.ndarray:
    """LOOP_S of the peer's tone, TONE_LEVEL, and BEEP_LEVEL for BEEP_S from each mark."""
    n = np.arange(round(LOOP_S * RATE))
    level = np.full(len(n), TONE_LEVEL)
    for t in marks():
        start = round(t * RATE)
        level[start : start + round(BEEP_S * RATE)] = BEEP_LEVEL
    return level * np.sin(2 * np.pi * peer.tone_hz * n / RATE)


def write_wav(peer: Peer, path: Path) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((samples(peer) * 32767).astype("<i2").tobytes())


def make_media(peer: Peer, folder: Path) -> tuple[Path, Path]:
    """The peer's y4m and wav in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    video, audio = folder / f"{peer.name}.y4m", folder / f"{peer.name}.wav"
    write_y4m(peer, video)
    write_wav(peer, audio)
    return video, audio


def envelope(x: np.ndarray, rate: int, tone_hz: float) -> np.ndarray:
    """The magnitude of x at tone_hz, averaged over 5 ms (a boxcar nulling multiples of 200 Hz
    away)."""
    t = np.arange(len(x)) / rate
    window = rate // 200
    return np.abs(
        np.convolve(x * np.exp(-2j * np.pi * tone_hz * t), np.ones(window) / window, mode="same")
    )


def tone_onsets(x: np.ndarray, rate: int, tone_hz: float, start_s: float = 0.0) -> np.ndarray:
    """Times (s, from start_s) where the peer's beep starts: the envelope crossing halfway
    between the tone's and the beep's levels, seen at this track's own scale (the median is the
    tone, the 99th percentile the beep), with hysteresis, less half the averaging window."""
    env = envelope(x.astype(np.float64), rate, tone_hz)
    quiet_level, loud_level = np.median(env), np.percentile(env, 99.5)
    if loud_level < 2 * quiet_level + 1e-4:
        return np.array([])
    threshold = (quiet_level + loud_level) / 2
    loud = env > threshold
    quiet = np.flatnonzero(env < (quiet_level + threshold) / 2)
    onsets: list[int] = []
    for rise in np.flatnonzero(loud[1:] & ~loud[:-1]) + 1:
        after = np.searchsorted(quiet, onsets[-1], side="right") if onsets else 0
        if not onsets or (after < len(quiet) and quiet[after] < rise):
            onsets.append(int(rise))
    return np.array(onsets) / rate + start_s - (rate // 200) / 2 / rate


def tone_levels(x: np.ndarray, rate: int, frequencies: list[float]) -> dict[float, float]:
    """The amplitude spectrum's magnitude near each frequency (±5 Hz), over x's whole length."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / len(x)
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return {f: float(spectrum[(freqs > f - 5) & (freqs < f + 5)].max()) for f in frequencies}
