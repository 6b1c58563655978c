"""A live recording's participants: written as they come and go, made a manifest at STOP.

While a recording runs, every publish and leave the service sees is appended to
``participants.jsonl`` in the recording's folder, fsynced (after a crash, recovery still knows
the names and times). At STOP, ``write_manifest`` turns it into ``manifest.json``: one
participant per Janus user id that has .mjr files, with its display name, its joins and leaves
clipped to the recording, and one stream per file (kind, SSRC, codec from the file's first
packet), validated with skymix.session.manifest as the job will read it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...errors import CaptureError, SkymixError
from ...ingest.mjr import parse_videoroom_name, read_mjr
from ...session.manifest import parse_manifest

__all__ = [
    "MANIFEST_NAME",
    "PARTICIPANTS_NAME",
    "Presence",
    "iso",
    "log_presence",
    "read_presence",
    "recorded_files",
    "write_manifest",
]

log = logging.getLogger(__name__)

PARTICIPANTS_NAME = "participants.jsonl"
MANIFEST_NAME = "manifest.json"


def iso(t: datetime) -> str:
    """UTC ISO 8601 with microseconds and a Z."""
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def log_presence(folder: Path, event: str, janus_id: int, at: datetime, name: str = "") -> None:
    """Append one publish (with the name) or leave of a Janus user to the folder's log, fsynced."""
    line: dict[str, Any] = {"event": event, "id": str(janus_id), "at": iso(at)}
    if event == "publish":
        line["name"] = name
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / PARTICIPANTS_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Presence:
    """One Janus user's name and the spans it published: [join, leave or None]."""

    name: str
    spans: list[list[datetime | None]]


def read_presence(folder: Path) -> dict[str, Presence]:
    """The participants log, by Janus user id (a torn last line, from a crash, is skipped)."""
    people: dict[str, Presence] = {}
    try:
        text = (folder / PARTICIPANTS_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return people
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            who, at = str(entry["id"]), _parse(str(entry["at"]))
        except (ValueError, KeyError, TypeError):
            continue
        person = people.setdefault(who, Presence(str(entry.get("name") or who), []))
        if entry.get("event") == "publish":
            person.name = str(entry.get("name") or person.name)
            if not person.spans or person.spans[-1][1] is not None:
                person.spans.append([at, None])
        elif entry.get("event") == "leave" and person.spans and person.spans[-1][1] is None:
            person.spans[-1][1] = at
    return people


def recorded_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The folder's audio and video .mjr files Janus wrote (sorted), and those that cannot be
    read with why (a file Janus had no time to write its header to)."""
    good: list[Path] = []
    bad: list[tuple[Path, str]] = []
    for path in sorted(folder.glob("*.mjr")):
        parsed = parse_videoroom_name(path.name)
        if parsed is None or parsed.kind == "data":
            continue
        try:
            read_mjr(path)
        except CaptureError as exc:
            bad.append((path, str(exc)))
            continue
        good.append(path)
    return good, bad


def _first_packet(path: Path) -> tuple[int, int] | None:
    """(SSRC, payload type) of the file's first RTP packet, or None without one."""
    for datagram in read_mjr(path):
        data = datagram.data
        if len(data) >= 12 and data[0] >> 6 == 2:
            return int.from_bytes(data[8:12], "big"), data[1] & 0x7F
    return None


def _stream(path: Path) -> dict[str, Any] | None:
    recording = read_mjr(path)
    info = recording.info
    first = _first_packet(path)
    if first is None:
        return None
    ssrc, payload_type = first
    codec: dict[str, Any] = {
        "payload_type": payload_type,
        "name": info.codec,
        "clock_rate": info.clock_rate,
    }
    if info.kind == "audio" and info.codec.lower() == "opus":
        codec["channels"] = 2
    return {"kind": info.kind, "ssrcs": [ssrc], "codecs": [codec]}


def _clip(
    spans: Iterable[list[datetime | None]], start: datetime, end: datetime
) -> tuple[list[str], list[str]]:
    joins: list[str] = []
    leaves: list[str] = []
    for a, b in spans:
        a = max(a or start, start)
        b = min(b or end, end)
        if b <= a:
            continue
        joins.append(iso(a))
        leaves.append(iso(b))
    return joins, leaves


def write_manifest(folder: Path, files: list[Path], start: datetime, end: datetime) -> Path:
    """Write the recording's manifest.json from its participants log and .mjr files; the path.

    Only users with files are in it; a user the log does not name keeps the id as name.
    """
    people = read_presence(folder)
    by_user: dict[str, list[Path]] = {}
    for path in files:
        parsed = parse_videoroom_name(path.name)
        assert parsed is not None  # recorded_files keeps videoroom names only
        by_user.setdefault(parsed.user, []).append(path)
    participants: list[dict[str, Any]] = []
    for user, paths in sorted(by_user.items()):
        streams = [s for s in (_stream(p) for p in paths) if s is not None]
        if not streams:
            continue
        person = people.get(user)
        entry: dict[str, Any] = {"id": user, "name": person.name if person else user}
        if person is not None and person.spans:
            joins, leaves = _clip(person.spans, start, end)
            if joins:
                entry["joins"], entry["leaves"] = joins, leaves
        entry["streams"] = streams
        participants.append(entry)
    document = {"participants": participants}
    try:
        parse_manifest(document, file=MANIFEST_NAME, base_dir=str(folder))
    except SkymixError:
        log.exception("live recording manifest in %s is not valid", folder)
        raise
    path = folder / MANIFEST_NAME
    partial = folder / f".{MANIFEST_NAME}.partial"
    with open(partial, "w", encoding="utf-8") as out:
        json.dump(document, out, ensure_ascii=False, indent=2)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    return path
