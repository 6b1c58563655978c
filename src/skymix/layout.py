"""Where each participant's video goes in the output frame, and who is the active speaker.

compute_layout() is pure geometry: given the canvas size, the participants present (in join
order), the active speaker and a layout spec (grid, speaker, picture-in-picture, or custom regions
from a JSON file), it returns a Layout: one Placement (rectangle, z, fit, highlight) per tile and
the participants that are not shown. The pipeline calls it only when the participants, their video
state or the active speaker change, and turns the placements into skymix.compose Tiles.

Every rectangle has even coordinates and an even size, so a tile covers whole yuv420p chroma
samples. Rules, rounding and tie-breaks are in docs/layouts.md.

SpeakerTracker picks the active speaker from per-participant audio levels with hysteresis, so
that a cough does not move the picture; time is given by the caller, never read from a clock.

A custom layout file is checked against its JSON Schema (docs/layout.schema.json; the same text
is LAYOUT_SCHEMA here, a test keeps the two identical) by a small validator for the keywords that
schema uses, since skymix does not depend on ``jsonschema``. Errors name the file and the JSON path
of the bad value, e.g. ``layout.json, regions[1].show: expected ...``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, cast, get_args

from .compose.video import Fit, Rect
from .errors import ComposeError, DescriptionError
from .session.manifest import read_json_file

__all__ = [
    "LAYOUT_SCHEMA",
    "Corner",
    "CustomSpec",
    "GridSpec",
    "Layout",
    "LayoutSpec",
    "Length",
    "Overflow",
    "Participant",
    "PipSpec",
    "Placement",
    "Region",
    "Selector",
    "SpeakerSpec",
    "SpeakerTracker",
    "StripSide",
    "compute_layout",
    "dbov_from_rfc6464",
    "dbov_from_rms",
    "load_custom_layout",
    "parse_custom_layout",
]

RGB: TypeAlias = tuple[int, int, int]
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]
StripSide = Literal["bottom", "right"]
Overflow = Literal["hide", "shrink", "last"]
Selector = Literal["speaker", "others", "rest", "*"]
Length: TypeAlias = int | float
"""An int is pixels; a float is a fraction 0..1 of the canvas width (x, width) or height."""

_FITS: tuple[str, ...] = get_args(Fit)
_CORNERS: tuple[str, ...] = get_args(Corner)
_SIDES: tuple[str, ...] = get_args(StripSide)
_OVERFLOWS: tuple[str, ...] = get_args(Overflow)
_SELECTORS: tuple[str, ...] = get_args(Selector)
_NS = 1_000_000_000
_SILENT_DBOV = -127.0
_FRACTION_SLACK = 1e-9


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Participant:
    """A participant present in the call; has_video False gets a placeholder tile."""

    id: str
    has_video: bool = True


@dataclass(frozen=True, slots=True)
class Placement:
    """One tile: whose, where (output pixels, even), its z (higher is drawn later, on top), how
    the picture fits, whether it is the active speaker's (to highlight) and whether the
    participant has video (else the pipeline draws a placeholder)."""

    id: str
    rect: Rect
    z: int
    fit: Fit
    speaker: bool
    has_video: bool


@dataclass(frozen=True, slots=True)
class Layout:
    """What compute_layout() decided.

    placements: in drawing order (z ascending, ties in layout order); a participant appears at
    most once, except in custom layouts where a region shows ``"*"`` or names them again.
    hidden: ids of participants present but in no placement, in join order.
    background: the colour behind and between the tiles (pass to composite()).
    Layouts compare equal exactly when they would be drawn the same (``layout != previous``).
    """

    placements: tuple[Placement, ...]
    hidden: tuple[str, ...]
    background: RGB = (0, 0, 0)

    def changed(self, previous: Layout | None) -> bool:
        """True if drawing this layout differs from drawing ``previous`` (None: the first)."""
        return previous is None or self != previous

    def changed_ids(self, previous: Layout | None) -> frozenset[str]:
        """Ids whose placements differ from ``previous``: added, removed, moved, resized, refit,
        re-highlighted or re-stacked; every placed id when there is no previous layout.

        A change of background alone changes no id (see changed()).
        """

        def by_id(layout: Layout | None) -> dict[str, list[tuple[int, Placement]]]:
            out: dict[str, list[tuple[int, Placement]]] = {}
            for index, p in enumerate(layout.placements if layout else ()):
                out.setdefault(p.id, []).append((index, p))
            return out

        new, old = by_id(self), by_id(previous)
        # The index matters only where tiles overlap; comparing it for all is simpler and a
        # change of index without a change of overlap is rare (another tile added or removed).
        return frozenset(i for i in new.keys() | old.keys() if new.get(i) != old.get(i))

    def placements_of(self, participant: str) -> tuple[Placement, ...]:
        """The participant's placements (empty if hidden or absent)."""
        return tuple(p for p in self.placements if p.id == participant)


# --- specs -----------------------------------------------------------------------------------


def _check_common(gap: int, aspect: tuple[int, int], fit: str, background: RGB) -> None:
    _check_even("gap", gap)
    if (
        not isinstance(aspect, tuple)
        or len(aspect) != 2
        or not all(_is_int(a) and a >= 1 for a in aspect)
    ):
        raise ComposeError(f"aspect must be two positive integers (w, h), got {aspect!r}")
    if fit not in _FITS:
        raise ComposeError(f"fit must be 'contain' or 'cover', got {fit!r}")
    if (
        not isinstance(background, tuple)
        or len(background) != 3
        or not all(_is_int(c) and 0 <= c <= 255 for c in background)
    ):
        raise ComposeError(f"background must be three integers 0..255 (RGB), got {background!r}")


def _check_even(name: str, value: int) -> None:
    if not _is_int(value) or value < 0 or value % 2:
        raise ComposeError(f"{name} must be an even number of pixels >= 0 (yuv420p), got {value!r}")


def _check_fraction(name: str, value: float, low_open: bool, high: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 < value if low_open else 0 <= value)
        or value > high
    ):
        bound = f"in (0, {high}]" if low_open else f"in [0, {high}]"
        raise ComposeError(f"{name} must be a fraction {bound}, got {value!r}")


@dataclass(frozen=True, slots=True)
class GridSpec:
    """All participants in equal tiles, rows and columns chosen to make them largest.

    gap: pixels between tiles and at the canvas edges (even). aspect: the source aspect the
    tiles are sized for. fit: how the compositor fits each picture into its tile (``contain``
    tiles have the source aspect; ``cover`` tiles fill their grid cells). video_only: leave out
    (list as hidden) participants without video.
    """

    gap: int = 0
    aspect: tuple[int, int] = (16, 9)
    fit: Fit = "contain"
    background: RGB = (0, 0, 0)
    video_only: bool = False

    def __post_init__(self) -> None:
        _check_common(self.gap, self.aspect, self.fit, self.background)


@dataclass(frozen=True, slots=True)
class SpeakerSpec:
    """The active speaker large, the others in a strip along the bottom or the right.

    strip_size: the strip's thickness as a fraction of the canvas height (bottom) or width
    (right); strip tiles have the source aspect and that thickness. When the others do not fit
    along the strip, their tiles shrink to at most ``min_scale`` of that size, and those that
    still do not fit (the last joined) are hidden.
    """

    strip: StripSide = "bottom"
    strip_size: float = 0.2
    min_scale: float = 0.5
    gap: int = 0
    aspect: tuple[int, int] = (16, 9)
    fit: Fit = "contain"
    background: RGB = (0, 0, 0)
    video_only: bool = False

    def __post_init__(self) -> None:
        _check_common(self.gap, self.aspect, self.fit, self.background)
        if self.strip not in _SIDES:
            raise ComposeError(f"strip must be 'bottom' or 'right', got {self.strip!r}")
        _check_fraction("strip_size", self.strip_size, True, 0.5)
        _check_fraction("min_scale", self.min_scale, True, 1.0)


@dataclass(frozen=True, slots=True)
class PipSpec:
    """One participant full frame, one more as a small inset in a corner; others hidden.

    main: ``speaker`` puts the active speaker full frame (the first participant until there is
    one), ``first`` always the first participant. The inset is the first other participant.
    size: the inset's width as a fraction of the canvas width (its height from ``aspect``; the
    inset shrinks if it would not fit between the margins). margin: pixels between the inset and
    the canvas edges (even).
    """

    corner: Corner = "bottom-right"
    size: float = 0.25
    margin: int = 16
    main: Literal["speaker", "first"] = "speaker"
    aspect: tuple[int, int] = (16, 9)
    fit: Fit = "contain"
    background: RGB = (0, 0, 0)
    video_only: bool = False

    def __post_init__(self) -> None:
        _check_common(0, self.aspect, self.fit, self.background)
        if self.corner not in _CORNERS:
            raise ComposeError(f"corner must be one of {', '.join(_CORNERS)}, got {self.corner!r}")
        if self.main not in ("speaker", "first"):
            raise ComposeError(f"main must be 'speaker' or 'first', got {self.main!r}")
        _check_fraction("size", self.size, True, 1.0)
        _check_even("margin", self.margin)


@dataclass(frozen=True, slots=True)
class Region:
    """A rectangle of a custom layout and who is shown in it, as a grid of tiles.

    x, y, width, height: an int is pixels, a float a fraction 0..1 of the canvas (a region
    reaching past the canvas is clipped to it). show: participant ids (shown in that order, if
    present), or ``speaker`` (the active speaker), ``others`` (all but the speaker and those named
    by id in any region), ``rest`` (those no region selects, ``*`` aside), ``*`` (everyone).
    max_rows, max_cols: limit the grid; when both are given and more participants are selected
    than rows x cols, ``overflow`` decides: ``hide`` shows the first, ``last`` the last joined,
    ``shrink`` ignores the limits. fit, gap: None takes the layout's.
    """

    x: Length
    y: Length
    width: Length
    height: Length
    show: Selector | tuple[str, ...]
    z: int = 0
    max_rows: int | None = None
    max_cols: int | None = None
    overflow: Overflow = "shrink"
    fit: Fit | None = None
    gap: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        problem = _region_problem(self.x, self.y, self.width, self.height)
        if problem is not None:
            label = f"region {self.name!r}" if self.name else "region"
            raise ComposeError(f"{label} {problem[0]}: {problem[1]}")
        if isinstance(self.show, str):
            if self.show not in _SELECTORS:
                raise ComposeError(
                    f"show must be one of {', '.join(_SELECTORS)} or a tuple of "
                    f"participant ids, got {self.show!r}"
                )
        elif (
            not isinstance(self.show, tuple)
            or not self.show
            or not all(isinstance(s, str) and s for s in self.show)
        ):
            raise ComposeError(f"show must be a non-empty tuple of ids, got {self.show!r}")
        if not _is_int(self.z):
            raise ComposeError(f"z must be an integer, got {self.z!r}")
        for name, value in (("max_rows", self.max_rows), ("max_cols", self.max_cols)):
            if value is not None and (not _is_int(value) or value < 1):
                raise ComposeError(f"{name} must be a positive integer or None, got {value!r}")
        if self.overflow not in _OVERFLOWS:
            raise ComposeError(
                f"overflow must be one of {', '.join(_OVERFLOWS)}, got {self.overflow!r}"
            )
        if self.fit is not None and self.fit not in _FITS:
            raise ComposeError(f"fit must be 'contain', 'cover' or None, got {self.fit!r}")
        if self.gap is not None:
            _check_even("gap", self.gap)


def _region_problem(x: Length, y: Length, width: Length, height: Length) -> tuple[str, str] | None:
    """(field, what is wrong) for the first bad coordinate of a region, or None.

    The one check behind both Region (ComposeError) and the JSON loader (DescriptionError with
    the JSON path), so the two cannot disagree.
    """
    for name, value in (("x", x), ("y", y), ("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return name, f"expected pixels (an integer) or a fraction (0.0..1.0), got {value!r}"
        if isinstance(value, float) and not 0.0 <= value <= 1.0:
            return name, (
                f"a fraction of the canvas must be within 0.0..1.0, got {value!r} "
                "(write pixels as integers)"
            )
        if value < 0:
            return name, f"expected pixels >= 0, got {value!r}"
    for name, value, axis in (("width", width, "width"), ("height", height, "height")):
        if isinstance(value, int) and value < 2:
            return name, (
                f"{value} {'pixel is' if value == 1 else 'pixels are'} too small for "
                f"a tile; write 1.0 for the whole canvas {axis}"
            )
        if isinstance(value, float) and value == 0.0:
            return name, "a region must not be empty"
    for name, start, size in (("width", x, width), ("height", y, height)):
        if (
            isinstance(start, float)
            and isinstance(size, float)
            and start + size > 1.0 + _FRACTION_SLACK
        ):
            other = "x" if name == "width" else "y"
            return name, (
                f"{other} + {name} = {start + size:g} reaches past the canvas "
                "(fractions must add up to at most 1.0)"
            )
    return None


@dataclass(frozen=True, slots=True)
class CustomSpec:
    """Regions from a JSON layout file (load_custom_layout) or built in code.

    gap, aspect, fit: defaults for regions that do not set their own. file: where the spec was
    read from (for messages). At most one region may use each of the selectors speaker, others,
    rest and ``*``.
    """

    regions: tuple[Region, ...]
    gap: int = 0
    aspect: tuple[int, int] = (16, 9)
    fit: Fit = "contain"
    background: RGB = (0, 0, 0)
    video_only: bool = False
    file: str | None = None

    def __post_init__(self) -> None:
        _check_common(self.gap, self.aspect, self.fit, self.background)
        if not isinstance(self.regions, tuple) or not self.regions:
            raise ComposeError("a custom layout needs a non-empty tuple of regions")
        used: dict[str, int] = {}
        for i, region in enumerate(self.regions):
            if not isinstance(region, Region):
                raise ComposeError(f"regions[{i}]: expected a Region, got {type(region).__name__}")
            if isinstance(region.show, str):
                if region.show in used:
                    raise ComposeError(
                        f"regions[{i}]: {region.show!r} is already shown by "
                        f"regions[{used[region.show]}]"
                    )
                used[region.show] = i


LayoutSpec: TypeAlias = GridSpec | SpeakerSpec | PipSpec | CustomSpec


# --- geometry ----------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _floor_even(value: int) -> int:
    """The even integer at or below value (also for negative values)."""
    return value - value % 2


def _round_even(num: int, den: int) -> int:
    """num / den (both >= 0, den > 0) rounded to the nearest even integer, halves up."""
    return 2 * ((num + den) // (2 * den))


def _aspect_size(cw: int, ch: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """The largest even (w, h) of the source aspect (sides rounded to even) within cw x ch."""
    aw, ah = aspect
    if cw <= 0 or ch <= 0:
        return 0, 0
    if cw * ah <= ch * aw:  # the width limits
        return cw, min(ch, _round_even(cw * ah, aw))
    return min(cw, _round_even(ch * aw, ah)), ch


def _fit_rect(area: Rect, aspect: tuple[int, int], fit: Fit) -> Rect:
    """A single tile in ``area``: all of it for cover, the centred source-aspect part for
    contain."""
    if fit == "cover":
        return area
    w, h = _aspect_size(area.w, area.h, aspect)
    return Rect(
        area.x + _floor_even((area.w - w) // 2), area.y + _floor_even((area.h - h) // 2), w, h
    )


def _grid_shape(
    n: int,
    w: int,
    h: int,
    gap: int,
    aspect: tuple[int, int],
    max_rows: int | None = None,
    max_cols: int | None = None,
) -> tuple[int, int, int, int] | None:
    """(rows, cols, cell_w, cell_h) of the grid of n tiles in w x h that shows them largest.

    Largest: the source-aspect tile that fits a cell, in whole even pixels, has the largest area.
    Ties go to fewer empty cells, then to more columns in a landscape area (w >= h) and more rows
    in a portrait one. None if no grid within max_rows x max_cols holds n.
    """
    best: tuple[tuple[int, int, int], tuple[int, int, int, int]] | None = None
    for cols in range(1, min(n, max_cols or n) + 1):
        rows = -(-n // cols)
        if max_rows is not None and rows > max_rows:
            continue
        cw = max(0, _floor_even((w - (cols + 1) * gap) // cols))
        ch = max(0, _floor_even((h - (rows + 1) * gap) // rows))
        tw, th = _aspect_size(cw, ch, aspect)
        key = (tw * th, n - rows * cols, cols if w >= h else -cols)
        if best is None or key > best[0]:
            best = key, (rows, cols, cw, ch)
    return None if best is None else best[1]


def _grid(
    n: int,
    area: Rect,
    gap: int,
    aspect: tuple[int, int],
    fit: Fit,
    max_rows: int | None = None,
    max_cols: int | None = None,
) -> list[Rect] | None:
    """n tile rectangles in area, row by row; the last row centred, the block centred.

    ``gap`` separates tiles from each other and from the area's edges. None if no grid within
    max_rows x max_cols holds n.
    """
    if n == 0:
        return []
    shape = _grid_shape(n, area.w, area.h, gap, aspect, max_rows, max_cols)
    if shape is None:
        return None
    rows, cols, cw, ch = shape
    tw, th = (cw, ch) if fit == "cover" else _aspect_size(cw, ch, aspect)
    block_h = rows * th + (rows - 1) * gap
    y = area.y + _floor_even((area.h - block_h) // 2)
    rects = []
    for row in range(rows):
        k = min(cols, n - row * cols)
        x = area.x + _floor_even((area.w - (k * tw + (k - 1) * gap)) // 2)
        for col in range(k):
            rects.append(Rect(x + col * (tw + gap), y + row * (th + gap), tw, th))
    return rects


# --- layouts -----------------------------------------------------------------------------------


def compute_layout(
    canvas: tuple[int, int],
    participants: Sequence[Participant | tuple[str, bool]],
    speaker: str | None,
    spec: LayoutSpec,
) -> Layout:
    """Place the participants present on a canvas of (width, height) pixels.

    participants: in a stable order, taken as the join order (Participant or (id, has_video)).
    speaker: the active speaker's id (SpeakerTracker), None while there is none; an id not present
    counts as None. Layouts that need a speaker use the first participant until there is one,
    without highlighting them.
    """
    width, height = _check_canvas(canvas)
    people = _participants(participants)
    eligible = [p for p in people if p.has_video or not spec.video_only]
    active = speaker if any(p.id == speaker for p in eligible) else None
    full = Rect(0, 0, width, height)
    placed: list[tuple[Participant, Rect, int, Fit]]
    if isinstance(spec, GridSpec):
        rects = _grid(len(eligible), full, spec.gap, spec.aspect, spec.fit)
        assert rects is not None
        placed = [(p, r, 0, spec.fit) for p, r in zip(eligible, rects)]
    elif isinstance(spec, SpeakerSpec):
        placed = _speaker_layout(full, eligible, active, spec)
    elif isinstance(spec, PipSpec):
        placed = _pip_layout(full, eligible, active, spec)
    elif isinstance(spec, CustomSpec):
        placed = _custom_layout(full, people, eligible, active, spec)
    else:
        raise ComposeError(f"unknown layout spec {type(spec).__name__}")
    # A canvas too small for the gaps leaves no room: such a tile is not placed but hidden.
    placed = [item for item in placed if item[1].w > 0 and item[1].h > 0]
    placed.sort(key=lambda item: item[2])  # stable: ties keep layout order
    placements = tuple(
        Placement(p.id, rect, z, fit, p.id == active, p.has_video) for p, rect, z, fit in placed
    )
    shown = {p.id for p in placements}
    return Layout(placements, tuple(p.id for p in people if p.id not in shown), spec.background)


def _check_canvas(canvas: tuple[int, int]) -> tuple[int, int]:
    try:
        width, height = canvas
    except (TypeError, ValueError):
        raise ComposeError(f"canvas must be (width, height), got {canvas!r}") from None
    if not (
        _is_int(width)
        and _is_int(height)
        and width >= 2
        and height >= 2
        and width % 2 == 0
        and height % 2 == 0
    ):
        raise ComposeError(f"canvas must be even positive integers (yuv420p), got {canvas!r}")
    return width, height


def _participants(items: Iterable[Participant | tuple[str, bool]]) -> list[Participant]:
    people = []
    seen = set()
    for item in items:
        p = (
            item
            if isinstance(item, Participant)
            else Participant(*item)
            if isinstance(item, tuple) and len(item) == 2
            else None
        )
        if p is None or not isinstance(p.id, str) or not isinstance(p.has_video, bool):
            raise ComposeError(f"participant must be (id: str, has_video: bool), got {item!r}")
        if p.id in seen:
            raise ComposeError(f"participant {p.id!r} is listed twice")
        seen.add(p.id)
        people.append(p)
    return people


def _main_participant(eligible: list[Participant], active: str | None) -> Participant:
    return next((p for p in eligible if p.id == active), eligible[0])


def _speaker_layout(
    full: Rect, eligible: list[Participant], active: str | None, spec: SpeakerSpec
) -> list[tuple[Participant, Rect, int, Fit]]:
    if not eligible:
        return []
    g, fit, aspect = spec.gap, spec.fit, spec.aspect
    main = _main_participant(eligible, active)
    others = [p for p in eligible if p is not main]
    if not others:
        return [(main, _fit_rect(Rect(g, g, full.w - 2 * g, full.h - 2 * g), aspect, fit), 0, fit)]
    aw, ah = aspect
    bottom = spec.strip == "bottom"
    # Work along the strip as if it were horizontal: "length" runs along it, "depth" across.
    length, depth_total = (full.w, full.h) if bottom else (full.h, full.w)
    depth = max(2, _floor_even(math.floor(depth_total * spec.strip_size)))
    along = _round_even(depth * aw, ah) if bottom else _round_even(depth * ah, aw)
    room = length - 2 * g
    k = len(others)
    count = k
    if k * along + (k - 1) * g > room:
        fitted = _floor_even((room - (k - 1) * g) // k)
        smallest = max(2, _floor_even(math.ceil(along * spec.min_scale)))
        if fitted < smallest:
            fitted = smallest
            count = max(0, (room + g) // (fitted + g))
        along = fitted
    across = _round_even(along * ah, aw) if bottom else _round_even(along * aw, ah)
    across = min(across, depth)
    start = g + _floor_even((room - (count * along + (count - 1) * g)) // 2)
    band = depth_total - g - depth  # where the strip begins across the canvas
    offset = band + _floor_even((depth - across) // 2)
    strip: list[tuple[Participant, Rect, int, Fit]] = []
    for i, p in enumerate(others[:count]):
        pos = start + i * (along + g)
        rect = Rect(pos, offset, along, across) if bottom else Rect(offset, pos, across, along)
        strip.append((p, rect, 0, fit))
    main_depth = max(0, depth_total - depth - 3 * g)
    area = (
        Rect(g, g, full.w - 2 * g, main_depth) if bottom else Rect(g, g, main_depth, full.h - 2 * g)
    )
    return [(main, _fit_rect(area, aspect, fit), 0, fit), *strip]


def _pip_layout(
    full: Rect, eligible: list[Participant], active: str | None, spec: PipSpec
) -> list[tuple[Participant, Rect, int, Fit]]:
    if not eligible:
        return []
    main = _main_participant(eligible, active if spec.main == "speaker" else None)
    placed = [(main, _fit_rect(full, spec.aspect, spec.fit), 0, spec.fit)]
    inset = next((p for p in eligible if p is not main), None)
    if inset is not None:
        m = spec.margin
        w = _floor_even(math.floor(full.w * spec.size))
        w, h = _aspect_size(min(w, full.w - 2 * m), full.h - 2 * m, spec.aspect)
        x = m if spec.corner.endswith("left") else full.w - m - w
        y = m if spec.corner.startswith("top") else full.h - m - h
        placed.append((inset, Rect(x, y, w, h), 1, spec.fit))
    return placed


def _pixels(value: Length, size: int) -> float:
    """A region coordinate in pixels: ints are pixels, floats fractions of ``size``."""
    return value * size if isinstance(value, float) else float(value)


def _even_edge(value: float, limit: int) -> int:
    """A region edge rounded to the nearest even pixel (halves up), within 0..limit.

    Edges rather than sizes are rounded, so regions that meet as fractions meet in pixels.
    """
    return min(limit, max(0, 2 * math.floor(value / 2 + 0.5)))


def _custom_layout(
    full: Rect,
    people: list[Participant],
    eligible: list[Participant],
    active: str | None,
    spec: CustomSpec,
) -> list[tuple[Participant, Rect, int, Fit]]:
    by_id = {p.id: p for p in eligible}
    join_index = {p.id: i for i, p in enumerate(people)}
    main = _main_participant(eligible, active) if eligible else None
    named = {i for r in spec.regions if isinstance(r.show, tuple) for i in r.show}
    selections: list[list[Participant]] = []
    for region in spec.regions:
        if isinstance(region.show, tuple):
            selections.append([by_id[i] for i in region.show if i in by_id])
        elif region.show == "speaker":
            selections.append([main] if main else [])
        elif region.show == "others":
            selections.append([p for p in eligible if p is not main and p.id not in named])
        elif region.show == "*":
            selections.append(list(eligible))
        else:
            selections.append([])  # "rest": filled below, once the others are known
    taken = {p.id for r, s in zip(spec.regions, selections) if r.show != "*" for p in s}
    for index, region in enumerate(spec.regions):
        if region.show == "rest":
            selections[index] = [p for p in eligible if p.id not in taken]
    placed: list[tuple[Participant, Rect, int, Fit]] = []
    for region, selection in zip(spec.regions, selections):
        left, top = _pixels(region.x, full.w), _pixels(region.y, full.h)
        x0, y0 = _even_edge(left, full.w), _even_edge(top, full.h)
        x1 = _even_edge(left + _pixels(region.width, full.w), full.w)
        y1 = _even_edge(top + _pixels(region.height, full.h), full.h)
        area = Rect(x0, y0, x1 - x0, y1 - y0)
        if area.w == 0 or area.h == 0:
            continue
        fit = region.fit or spec.fit
        gap = spec.gap if region.gap is None else region.gap
        rects = _grid(len(selection), area, gap, spec.aspect, fit, region.max_rows, region.max_cols)
        if rects is None:  # more selected than max_rows x max_cols places
            if region.overflow == "shrink":
                rects = _grid(len(selection), area, gap, spec.aspect, fit)
            else:
                assert region.max_rows is not None and region.max_cols is not None
                places = region.max_rows * region.max_cols
                if region.overflow == "last":
                    latest = sorted(selection, key=lambda p: join_index[p.id])[-places:]
                    selection = [p for p in selection if p in latest]
                else:
                    selection = selection[:places]
                rects = _grid(
                    len(selection), area, gap, spec.aspect, fit, region.max_rows, region.max_cols
                )
        assert rects is not None
        placed.extend((p, r, region.z, fit) for p, r in zip(selection, rects))
    return placed


# --- active speaker ---------------------------------------------------------------------------


def dbov_from_rms(rms: float) -> float:
    """The level in dBov of a block whose RMS is ``rms`` relative to full scale (1.0 for float
    samples, 32768 for int16 already divided): 20 log10(rms), silence -127 as in RFC 6464."""
    if rms <= 0.0:
        return _SILENT_DBOV
    return max(_SILENT_DBOV, 20.0 * math.log10(rms))


def dbov_from_rfc6464(level: int) -> float:
    """The level in dBov of an RFC 6464 audio level header value (0..127 means -0..-127 dBov).

    A packet whose voice-activity bit is clear can be passed as silence (-127) instead.
    """
    if not _is_int(level) or not 0 <= level <= 127:
        raise ComposeError(f"an RFC 6464 level is an integer 0..127, got {level!r}")
    return -float(level)


class SpeakerTracker:
    """Chooses the active speaker from per-participant audio levels, with hysteresis.

    Feed update() each block of levels (dBov, e.g. every 20 ms audio block or every output
    frame) with the caller's time in ns. Rules (docs/layouts.md):

    - a participant speaks in a block when their level is at least ``speech_db``;
    - another participant is *ahead* in a block when they speak and are at least ``switch_db``
      louder than the current speaker in that block (missing from ``levels``: silent);
    - the candidate is the loudest participant ahead; they stay candidate through blocks where
      they are not ahead as long as those last at most ``bridge`` seconds (pauses between words);
    - the candidate becomes the speaker in a block where they are ahead, have been candidate for
      at least ``hold`` seconds, and the current speaker has not spoken for ``quiet`` seconds;
    - nobody speaking changes nothing: silence keeps the last speaker.

    With no speaker yet, the first candidate held for ``hold`` seconds becomes the speaker.
    """

    def __init__(
        self,
        *,
        switch_db: float = 6.0,
        hold: float = 1.0,
        quiet: float = 0.5,
        bridge: float = 0.3,
        speech_db: float = -50.0,
    ) -> None:
        for name, value in (
            ("switch_db", switch_db),
            ("hold", hold),
            ("quiet", quiet),
            ("bridge", bridge),
        ):
            if not value >= 0:
                raise ComposeError(f"{name} must be >= 0, got {value!r}")
        self.switch_db = switch_db
        self.speech_db = speech_db
        self._hold = round(hold * _NS)
        self._quiet = round(quiet * _NS)
        self._bridge = round(bridge * _NS)
        self._speaker: str | None = None
        self._spoke_ns: int | None = None
        self._candidate: str | None = None
        self._since_ns = 0
        self._ahead_ns = 0
        self._now_ns: int | None = None

    @property
    def speaker(self) -> str | None:
        """The active speaker, None until someone has spoken long enough."""
        return self._speaker

    def update(self, now_ns: int, levels: Mapping[str, float]) -> str | None:
        """Take one block of levels (dBov) at time ``now_ns``; return the active speaker.

        Times must not go backwards. Participants missing from ``levels`` are silent.
        """
        if self._now_ns is not None and now_ns < self._now_ns:
            raise ComposeError(f"time went backwards: {now_ns} ns after {self._now_ns} ns")
        self._now_ns = now_ns
        current = -math.inf if self._speaker is None else levels.get(self._speaker, -math.inf)
        if current >= self.speech_db:
            self._spoke_ns = now_ns
        ahead = {
            who: level
            for who, level in levels.items()
            if who != self._speaker
            and level >= self.speech_db
            and level >= current + self.switch_db
        }
        if self._candidate in ahead:
            self._ahead_ns = now_ns
        elif self._candidate is None or now_ns - self._ahead_ns > self._bridge:
            if ahead:
                self._candidate = max(ahead, key=lambda who: ahead[who])  # first of equals
                self._since_ns = self._ahead_ns = now_ns
            else:
                self._candidate = None
        if (
            self._candidate is not None
            and self._ahead_ns == now_ns
            and now_ns - self._since_ns >= self._hold
            and (self._spoke_ns is None or now_ns - self._spoke_ns >= self._quiet)
        ):
            self._speaker, self._spoke_ns, self._candidate = self._candidate, now_ns, None
        return self._speaker

    def remove(self, participant: str) -> None:
        """Forget a participant who left: if they were the speaker there is none until the next
        candidate is held (the layout shows the first participant meanwhile)."""
        if self._speaker == participant:
            self._speaker, self._spoke_ns = None, None
        if self._candidate == participant:
            self._candidate = None


# --- custom layout files ---------------------------------------------------------------------

LAYOUT_SCHEMA: dict[str, Any] = json.loads(r"""
{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "skymix custom layout",
  "description": "Regions of the output frame and who is shown in each (layouts.md).",
  "type": "object",
  "required": ["regions"],
  "additionalProperties": false,
  "properties": {
    "$schema": {"type": "string"},
    "background": {"$ref": "#/$defs/color"},
    "gap": {"$ref": "#/$defs/gap"},
    "aspect": {
      "description": "The source aspect tiles are sized for, [width, height]; default [16, 9].",
      "type": "array",
      "minItems": 2,
      "maxItems": 2,
      "items": {"type": "integer", "minimum": 1}
    },
    "fit": {"$ref": "#/$defs/fit"},
    "video_only": {
      "description": "Leave out participants without video (default false: placeholder tile).",
      "type": "boolean"
    },
    "regions": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/region"}}
  },
  "$defs": {
    "length": {
      "description": "Pixels (an integer) or a fraction of the canvas (0.5, 1.0; layouts.md).",
      "anyOf": [
        {"title": "pixels", "type": "integer", "minimum": 0},
        {"title": "a fraction of the canvas", "type": "number", "minimum": 0, "maximum": 1}
      ]
    },
    "gap": {
      "description": "Pixels between tiles and between tiles and the region's edges; even.",
      "type": "integer",
      "minimum": 0,
      "multipleOf": 2
    },
    "fit": {"enum": ["contain", "cover"]},
    "color": {
      "anyOf": [
        {"type": "string", "pattern": "^#[0-9A-Fa-f]{6}$", "examples": ["#202020"]},
        {
          "type": "array",
          "minItems": 3,
          "maxItems": 3,
          "items": {"type": "integer", "minimum": 0, "maximum": 255}
        }
      ]
    },
    "region": {
      "type": "object",
      "required": ["x", "y", "width", "height", "show"],
      "additionalProperties": false,
      "properties": {
        "name": {"description": "For messages only.", "type": "string"},
        "x": {"$ref": "#/$defs/length"},
        "y": {"$ref": "#/$defs/length"},
        "width": {"$ref": "#/$defs/length"},
        "height": {"$ref": "#/$defs/length"},
        "z": {"description": "Higher regions are drawn on top; default 0.", "type": "integer"},
        "show": {
          "description": "Participant ids, or speaker, others, rest, * (layouts.md).",
          "anyOf": [
            {"enum": ["speaker", "others", "rest", "*"]},
            {
              "title": "participant ids",
              "type": "array",
              "minItems": 1,
              "uniqueItems": true,
              "items": {"type": "string", "minLength": 1}
            }
          ]
        },
        "max_rows": {"type": "integer", "minimum": 1},
        "max_cols": {"type": "integer", "minimum": 1},
        "overflow": {
          "description": "More than max_rows x max_cols: show the first, the last joined, or all.",
          "enum": ["hide", "shrink", "last"]
        },
        "fit": {"$ref": "#/$defs/fit"},
        "gap": {"$ref": "#/$defs/gap"}
      }
    }
  }
}
""")

_VALIDATED_KEYWORDS = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "minimum",
        "maximum",
        "multipleOf",
        "minLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "items",
        "required",
        "properties",
        "additionalProperties",
        "anyOf",
    }
)
_ANNOTATION_KEYWORDS = frozenset(
    {
        "$schema",
        "$defs",
        "title",
        "description",
        "examples",
    }
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_custom_layout(path: str | os.PathLike[str]) -> CustomSpec:
    """Read and validate the custom layout JSON file at ``path``."""
    name, data = read_json_file(path, "layout")
    return parse_custom_layout(data, file=name)


def parse_custom_layout(data: object, *, file: str = "<layout>") -> CustomSpec:
    """Validate already-decoded JSON against LAYOUT_SCHEMA and the rules a schema cannot say
    (fractions that add up past the canvas, sizes under 2 pixels, a selector used twice), and
    convert it. Errors are DescriptionErrors naming ``file`` and the JSON path."""
    _validate(data, LAYOUT_SCHEMA, file, "")
    assert isinstance(data, dict)
    regions = []
    used: dict[str, str] = {}
    for i, r in enumerate(data["regions"]):
        where = f"regions[{i}]"
        problem = _region_problem(r["x"], r["y"], r["width"], r["height"])
        if problem is not None:
            raise DescriptionError(problem[1], file=file, path=f"{where}.{problem[0]}")
        show = r["show"]
        if isinstance(show, str):
            if show in used:
                raise DescriptionError(
                    f"{json.dumps(show)} is already shown by {used[show]}",
                    file=file,
                    path=f"{where}.show",
                )
            used[show] = where
        regions.append(
            Region(
                x=r["x"],
                y=r["y"],
                width=r["width"],
                height=r["height"],
                show=cast(Selector, show) if isinstance(show, str) else tuple(show),
                z=r.get("z", 0),
                max_rows=r.get("max_rows"),
                max_cols=r.get("max_cols"),
                overflow=r.get("overflow", "shrink"),
                fit=r.get("fit"),
                gap=r.get("gap"),
                name=r.get("name"),
            )
        )
    return CustomSpec(
        regions=tuple(regions),
        gap=data.get("gap", 0),
        aspect=cast(tuple[int, int], tuple(data.get("aspect", (16, 9)))),
        fit=data.get("fit", "contain"),
        background=_color(data.get("background", (0, 0, 0))),
        video_only=data.get("video_only", False),
        file=file,
    )


def _color(value: str | Sequence[int]) -> RGB:
    if isinstance(value, str):
        return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    return value[0], value[1], value[2]


def _resolve(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        target: Any = LAYOUT_SCHEMA
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(schema: Mapping[str, Any]) -> str:
    """What a schema expects, in words: "an integer >= 0 (pixels)"."""
    s = _resolve(schema)
    if "anyOf" in s:
        return " or ".join(_describe(branch) for branch in s["anyOf"])
    if "enum" in s:
        text = "one of " + ", ".join(json.dumps(v) for v in s["enum"])
    else:
        kind = s.get("type")
        if kind in ("integer", "number"):
            text = "an integer" if kind == "integer" else "a number"
            lo, hi = s.get("minimum"), s.get("maximum")
            if lo is not None and hi is not None:
                text += f" {lo}..{hi}"
            elif lo is not None:
                text += f" >= {lo}"
            if s.get("multipleOf") == 2:
                text = "an even" + text.removeprefix("an")
        elif kind == "string":
            text = "a string" + (f" like {json.dumps(s['examples'][0])}" if "examples" in s else "")
        elif kind == "array":
            n = s.get("minItems")
            text = (
                f"an array of {n}"
                if n is not None and n == s.get("maxItems")
                else "a non-empty array"
                if n == 1
                else "an array"
            )
        elif kind == "boolean":
            text = "true or false"
        elif kind == "object":
            text = "an object"
        else:
            text = "a value"
    return f"{text} ({s['title']})" if "title" in s else text


def _type_ok(value: object, kind: str) -> bool:
    if kind == "integer":
        return _is_int(value)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, {"string": str, "array": list, "object": dict}[kind])


def _validate(value: object, schema: Mapping[str, Any], file: str, path: str) -> None:
    """Check ``value`` against ``schema`` (a part of LAYOUT_SCHEMA); raise DescriptionError at
    the first violation, naming its JSON path.

    Supports the keywords in _VALIDATED_KEYWORDS; a test keeps LAYOUT_SCHEMA within them.
    """
    s = _resolve(schema)
    at = path or "(top level)"

    def fail(message: str, where: str = at) -> DescriptionError:
        return DescriptionError(message, file=file, path=where)

    def expected() -> DescriptionError:
        return fail(f"expected {_describe(s)}, got {_shown(value)}")

    if "anyOf" in s:
        errors = []
        for branch in s["anyOf"]:
            try:
                _validate(value, branch, file, path)
                break
            except DescriptionError as exc:
                errors.append(exc)
        else:
            deeper = [e for e in errors if e.path != at]  # a branch of the right type
            raise deeper[0] if deeper else expected()
    if "type" in s and not _type_ok(value, s["type"]):
        raise expected()
    if "enum" in s and not any(type(value) is type(v) and value == v for v in s["enum"]):
        raise expected()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if ("minimum" in s and value < s["minimum"]) or ("maximum" in s and value > s["maximum"]):
            raise expected()
        if "multipleOf" in s and value % s["multipleOf"]:
            raise expected()
    if isinstance(value, str):
        if len(value) < s.get("minLength", 0):
            raise fail("expected a non-empty string")
        if "pattern" in s and not re.search(s["pattern"], value):
            raise expected()
    if isinstance(value, list):
        if len(value) < s.get("minItems", 0) or len(value) > s.get("maxItems", len(value)):
            if s.get("minItems") == 1 and not value:
                raise fail("expected at least one item")
            raise expected()
        for i, item in enumerate(value):
            if s.get("uniqueItems") and item in value[:i]:
                raise fail(f"repeats {path}[{value.index(item)}]", f"{path}[{i}]")
            if "items" in s:
                _validate(item, s["items"], file, f"{path}[{i}]")
    if isinstance(value, dict):
        for key in s.get("required", []):
            if key not in value:
                raise fail(f"missing required property {key!r}")
        properties = s.get("properties", {})
        for key, item in value.items():
            where = (
                f"{path}.{key}" if _NAME.fullmatch(key) else f"{path}[{json.dumps(key)}]"
            ).removeprefix(".")
            if key in properties:
                _validate(item, properties[key], file, where)
            elif s.get("additionalProperties", True) is False:
                raise fail(f"unknown property (expected one of {', '.join(properties)})", where)
