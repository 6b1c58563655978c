"""`skymix inspect`: a room scan as a table a person reads."""

from __future__ import annotations

from typing import Any

from .streams.room import SUMMARY_LINES, RoomScan

__all__ = ["format_scan"]


def _seconds(ns: int | None, start: int | None) -> str:
    return "-" if ns is None or start is None else f"{(ns - start) / 1e9:8.2f}"


def format_scan(scan: RoomScan) -> str:
    """Participants with their streams, then what was skipped, the damage summary (skipped,
    unclaimed and unmatched streams, damaged files) and the first problems."""
    data: dict[str, Any] = scan.to_json()
    start = scan.start_ns
    lines = []
    if start is not None and scan.end_ns is not None:
        lines.append(
            f"capture: {(scan.end_ns - start) / 1e9:.2f} s, "
            f"{sum(f.datagrams for f in scan.files.values())} datagrams in "
            f"{len(scan.files)} file(s)"
        )
    for p in data["participants"]:
        spans = ", ".join(
            f"{_seconds(a, start).strip()}-{_seconds(b, start).strip()} s" for a, b in p["presence"]
        )
        lines.append(f"\n{p['name']} (id {p['id']}): present {spans}")
        lines.append(
            f"  {'stream':<7}{'codec':<7}{'ssrc':<12}{'resolution':<13}{'packets':>8}"
            f"{'loss %':>8}{'reord':>6}{'dup':>5}{'frames':>7}{'keyfr':>6}{'gaps':>5}"
            f"{'drift ppm':>10}{'SRs':>5}"
        )
        for s in p["streams"]:
            res = ",".join(f"{w}x{h}" for w, h in s["resolutions"]) or "-"
            drift = ",".join(f"{c['drift_ppm']:+.0f}" for c in s["clock"].values()) or "-"
            ssrcs = ",".join(f"{x:08x}" for x in s["ssrcs"])
            keyframes = s["keyframes"] if s["kind"] == "video" else "-"
            lines.append(
                f"  {s['kind']:<7}{s['codec']:<7}{ssrcs:<12}{res:<13}{s['packets']:>8}"
                f"{s['loss_percent']:>8.2f}{s['reordered']:>6}{s['duplicates']:>5}"
                f"{s['frames']:>7}{keyframes:>6}{s['gaps']:>5}{drift:>10}"
                f"{s['sender_reports']:>5}"
            )
            if s["note"]:
                lines.append(f"    {s['note']}")
    if data["skipped"]:
        lines.append("\nskipped: " + ", ".join(f"{n} {k}" for k, n in data["skipped"].items()))
    for f, st in data["files"].items():
        if st["skipped"]:
            lines.append(f"{f}: skipped " + ", ".join(f"{n} {k}" for k, n in st["skipped"].items()))
    damage = scan.damage_summary()
    if damage:
        lines.append("\ndamage:")
        lines.extend(f"  {line}" for line in damage)
    problems = data["problems"]
    lines.extend(f"problem: {problem}" for problem in problems[:SUMMARY_LINES])
    if len(problems) > SUMMARY_LINES:
        lines.append(f"... and {len(problems) - SUMMARY_LINES} more problems")
    return "\n".join(lines)
