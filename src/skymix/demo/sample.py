"""The demo's mix: the main job, on a sample session made on the spot.

A four-party call is synthesized (skymix.synth: real VP8, H.264 and Opus encoders, aiortc's
packetizers, every sender with a clock of its own, seconds off and drifting): a 15 fps webcam that
joins late, a phone in portrait that leaves early, someone who turns the camera off for a while,
and 2 % packet loss on the way to the relay. It is written as a relay capture (a pcap and one SDP
per participant) next to the output and mixed by ``skymix.job.mix`` like any other capture.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..job import mix
from ..options import MixOptions
from ..progress import ProgressCallback
from ..report import MixReport
from ..session import load_description
from ..synth import Impairments, preset, synthesize

__all__ = ["run_demo"]


def run_demo(
    output: str | Path, seconds: float = 12.0, progress: ProgressCallback | None = None
) -> MixReport:
    """Synthesize the sample capture beside ``output``, mix it there, write the report
    (``<output>.json``) and return it."""
    output = Path(output)
    folder = output.with_name(f"{output.stem}-capture")
    people = preset(4, seconds)
    people[1] = replace(people[1], camera_off=(seconds * 0.3, seconds * 0.55))
    made = synthesize(people, seconds, folder, seed=7, impairments=Impairments(loss=0.02))
    description = load_description([f"{p.name}={sdp}" for p, sdp in zip(people, made.sdps)])
    return mix(
        [made.pcap],
        output,
        description=description,
        options=MixOptions(),
        progress=progress,
        report=output.with_suffix(".json"),
    )
