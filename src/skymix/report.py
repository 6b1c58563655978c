"""What a mix did, as typed data: the report a caller reads, ``--report`` writes, and the webhook
payload and the REST API's recording body are built from.

pydantic models, so the report validates when read back (``MixReport.from_json``) and its JSON
Schema (docs/report.schema.json) is generated from the same classes. Times are seconds from the
recording's start on the session clock, rounded to 0.1 ms; SSRCs are hex strings as packet tools
show them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "report_json_schema",
    "AudioCounts",
    "LayoutChange",
    "LayoutTile",
    "MixReport",
    "OutputFile",
    "ParticipantResult",
    "SegmentSpan",
    "StreamSync",
    "VideoCounts",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Counts(_Model):
    decoded: int = 0
    decode_errors: int = 0
    dropped: int = 0
    undecodable: int = 0


class VideoCounts(_Counts):
    """One participant's video: pictures decoded, frames dropped (waiting for a keyframe after a
    loss), decode errors, output frames showing their placeholder, frames of a stream no decoder
    takes."""

    shown_placeholder: int = 0


class AudioCounts(_Counts):
    """One participant's audio: frames decoded, losses concealed by the decoder, frames outside
    the recording, and how their blocks were placed on the recording's sample clock
    (skymix.placement.PlacementStats: stretched or shrunk to follow drift, silent gaps, late
    samples cut)."""

    concealed: int = 0
    blocks: int = 0
    stretched: int = 0
    shrunk: int = 0
    gaps: int = 0
    samples_silent: int = 0
    jumps_back: int = 0
    late: int = 0


class ParticipantResult(_Model):
    id: str
    name: str
    presence_s: list[tuple[float, float]] = Field(
        description="[from, to] stretches of presence, seconds from the recording's start"
    )
    video: VideoCounts
    audio: AudioCounts


class StreamSync(_Model):
    """How one SSRC was put on the session clock: its own clock fit, or lip-synced to its
    participant's audio through sender reports."""

    ssrc: str
    participant: str
    kind: Literal["audio", "video"]
    sync: str
    drift_ppm: float
    starts_at_s: float


class LayoutTile(_Model):
    id: str
    x: int
    y: int
    w: int
    h: int
    video: bool
    speaker: bool


class LayoutChange(_Model):
    """The layout from at_s (recording time) on, until the next change."""

    at_s: float
    tiles: list[LayoutTile]
    hidden: list[str]


class SegmentSpan(_Model):
    """A stretch of the session the recording shows (more than one with trimming)."""

    from_s: float
    to_s: float
    output_s: float


class OutputFile(_Model):
    """A file the mix wrote: the recording, a participant's own recording, the channels WAV, the
    report itself."""

    role: Literal["recording", "participant", "channels", "report"]
    path: str
    participant: str | None = Field(default=None, description="whose file it is (role participant)")
    channel_order: list[str] | None = Field(
        default=None, description="participant ids, one per channel (role channels)"
    )


class MixReport(_Model):
    """What was done, for the caller, the operator and the tests."""

    job_id: str
    output: str
    session_start_ns: int
    duration_s: float
    frames: int
    samples: int
    participants: list[ParticipantResult]
    streams: list[StreamSync]
    layouts: list[LayoutChange]
    segments: list[SegmentSpan]
    files: list[OutputFile]
    damage: list[str] = Field(
        default_factory=list,
        description="one line per damaged, skipped or unmatched part of the input",
    )
    scan: dict[str, Any] = Field(description="the first pass over the captures, as inspect shows")

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON data."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> MixReport:
        """Read a report back (validated)."""
        if isinstance(data, dict):
            return cls.model_validate(data)
        return cls.model_validate_json(data)

    def file(self, role: str, participant: str | None = None) -> OutputFile | None:
        """The written file of a role (and participant), if any."""
        for f in self.files:
            if f.role == role and (participant is None or f.participant == participant):
                return f
        return None

    def summary(self) -> str:
        """A few lines for a person: who, how synced, what was concealed or damaged, where the
        file is."""
        lines = [
            f"skymix: {len(self.participants)} participants, {self.duration_s:.1f} s, "
            f"{self.frames} frames -> {Path(self.output).resolve()}"
        ]
        for p in self.participants:
            spans = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in p.presence_s)
            lines.append(
                f"  {p.name}: present {spans}; video {p.video.decoded} decoded, "
                f"{p.video.dropped} dropped, {p.video.decode_errors} errors; audio "
                f"{p.audio.decoded} frames, {p.audio.concealed} losses concealed, "
                f"{p.audio.gaps} silent gaps"
            )
        for s in self.streams:
            lines.append(
                f"  sync {s.participant} {s.kind} {s.ssrc}: {s.sync}, drift {s.drift_ppm} ppm"
            )
        if self.damage:
            lines.append("  input damage:")
            lines.extend(f"    {line}" for line in self.damage)
        return "\n".join(lines)

    def to_bytes(self) -> bytes:
        """The report file's content (``--report``)."""
        return (json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n").encode()


def report_json_schema() -> dict[str, Any]:
    """The JSON Schema of the report (docs/report.schema.json)."""
    return MixReport.model_json_schema()
