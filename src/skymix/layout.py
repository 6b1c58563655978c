"""Where each participant's video goes in the output frame, and who is the active speaker.

compute_layout() is pure geometry: given the canvas size, the participants present (in join
order), the active speaker and a layout spec (grid, speaker, picture-in-picture, or custom regions
from a JSON file), it returns a Layout: one Placement (rectangle, z, fit, highlight) per tile and
the participants that are not shown. The pipeline calls it only when the participants, their video
state or the active speaker change, and turns the placements into skymix.compose Tiles.

Every rectangle has even coordinates and an even size, so a tile covers whole yuv420p chroma
samples. Rules, rounding and tie-breaks are in docs/layouts.md.

The active speaker a layout enlarges is chosen by skymix.timeline.SpeakerTracker (who speaks at
an instant belongs with who is present: the timeline stage).

A custom layout file is validated by pydantic models (LayoutDocument) whose JSON Schema is
generated from them (layout_json_schema(), published as docs/layout.schema.json by
skymix.schemas). Errors name the file and the JSON path of the bad value, e.g. ``layout.json,
regions[1].show: expected ...``. check_on_canvas() refuses, before any work, a layout that can
show nobody on the recording's canvas (every region off it, or too small once clipped).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeAlias, cast, get_args

from pydantic import (
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictStr,
    ValidationError,
)

from .compose.video import Fit, Rect
from .errors import ComposeError, DescriptionError, OptionsError
from .jsondoc import (
    JsonDocument,
    is_int,
    json_enum,
    json_int,
    problem,
    read_json_file,
    shown,
    validation_problems,
)

__all__ = [
    "GAP_ROOM_TILES",
    "MIN_TILE",
    "Color",
    "Corner",
    "CustomSpec",
    "GridSpec",
    "JsonLength",
    "Layout",
    "LayoutDocument",
    "LayoutDocumentError",
    "LayoutSpec",
    "Length",
    "Overflow",
    "Participant",
    "PipSpec",
    "Placement",
    "Region",
    "RegionDocument",
    "Selector",
    "Show",
    "SpeakerSpec",
    "StripSide",
    "check_on_canvas",
    "compute_layout",
    "custom_document",
    "custom_spec",
    "layout_json_schema",
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
_FRACTION_SLACK = 1e-9
_log = logging.getLogger(__name__)


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
        or not all(is_int(a) and a >= 1 for a in aspect)
    ):
        raise ComposeError(f"aspect must be two positive integers (w, h), got {aspect!r}")
    if fit not in _FITS:
        raise ComposeError(f"fit must be 'contain' or 'cover', got {fit!r}")
    if (
        not isinstance(background, tuple)
        or len(background) != 3
        or not all(is_int(c) and 0 <= c <= 255 for c in background)
    ):
        raise ComposeError(f"background must be three integers 0..255 (RGB), got {background!r}")


def _check_even(name: str, value: int) -> None:
    if not is_int(value) or value < 0 or value % 2:
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
        if not is_int(self.z):
            raise ComposeError(f"z must be an integer, got {self.z!r}")
        for name, value in (("max_rows", self.max_rows), ("max_cols", self.max_cols)):
            if value is not None and (not is_int(value) or value < 1):
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
    file: str | None = field(default=None, compare=False)

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
        is_int(width)
        and is_int(height)
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


# --- JSON documents ----------------------------------------------------------------------------
#
# Layout files (and the layouts inside skymix.options documents) are skymix.jsondoc documents: the
# fields below check themselves and say what is expected and what was found.


def _check_color(value: object) -> RGB:
    if isinstance(value, str) and re.fullmatch(r"#[0-9A-Fa-f]{6}", value):
        return int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16)
    if isinstance(value, (list, tuple)) and len(value) == 3:
        for i, c in enumerate(value):
            if not is_int(c) or not 0 <= c <= 255:
                raise problem(f"expected an integer 0..255, got {shown(c)}", f"[{i}]")
        return value[0], value[1], value[2]
    raise problem(f'expected a string like "#202020" or an array of 3, got {shown(value)}')


_ColorSchema = (
    Annotated[str, Field(pattern=r"^#[0-9A-Fa-f]{6}$", examples=["#202020"])]
    | Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]
)
Color = Annotated[
    RGB, PlainValidator(_check_color, json_schema_input_type=_ColorSchema), PlainSerializer(list)
]


def _check_aspect(value: object) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise problem(f"expected an array of 2, got {shown(value)}")
    for i, a in enumerate(value):
        if not is_int(a) or a < 1:
            raise problem(f"expected an integer >= 1, got {shown(a)}", f"[{i}]")
    return value[0], value[1]


Aspect = Annotated[
    tuple[int, int],
    PlainValidator(
        _check_aspect,
        json_schema_input_type=Annotated[
            list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)
        ],
    ),
    PlainSerializer(list),
]

_LENGTH = "an integer >= 0 (pixels) or a number 0..1 (a fraction of the canvas)"


def _check_length(value: object) -> Length:
    if (is_int(value) and value >= 0) or (  # type: ignore[operator]
        isinstance(value, float) and 0.0 <= value <= 1.0
    ):
        return cast(Length, value)
    raise problem(f"expected {_LENGTH}, got {shown(value)}")


JsonLength = Annotated[
    Length,
    PlainValidator(
        _check_length,
        json_schema_input_type=Annotated[int, Field(ge=0, title="pixels")]
        | Annotated[float, Field(ge=0, le=1, title="a fraction of the canvas")],
    ),
]


def _check_show(value: object) -> Selector | tuple[str, ...]:
    if isinstance(value, str) and value in _SELECTORS:
        return cast(Selector, value)
    if not isinstance(value, list) or not value:
        raise problem(
            "expected one of "
            + ", ".join(json.dumps(v) for v in _SELECTORS)
            + f" or a non-empty array (participant ids), got {shown(value)}"
        )
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise problem(f"expected a string, got {shown(item)}", f"[{i}]")
        if not item:
            raise problem("expected a non-empty string", f"[{i}]")
        if item in value[:i]:
            raise problem(f"repeats {shown(item)} (item {value.index(item)})", f"[{i}]")
    return tuple(value)


Show = Annotated[
    Selector | tuple[str, ...],
    PlainValidator(
        _check_show,
        json_schema_input_type=Literal["speaker", "others", "rest", "*"]
        | Annotated[
            list[Annotated[str, Field(min_length=1)]],
            Field(min_length=1, json_schema_extra={"uniqueItems": True}, title="participant ids"),
        ],
    ),
]
_Fit = json_enum(*_FITS)
_Gap = json_int(0, even=True)


class RegionDocument(JsonDocument):
    """A region of a custom layout file (see Region)."""

    name: StrictStr | None = Field(None, description="For messages only.")
    x: JsonLength
    y: JsonLength
    width: JsonLength
    height: JsonLength
    z: json_int() = Field(0, description="Higher regions are drawn on top; default 0.")  # type: ignore[valid-type]
    show: Show = Field(description="Participant ids, or speaker, others, rest, * (layouts.md).")
    max_rows: json_int(1) | None = None  # type: ignore[valid-type]
    max_cols: json_int(1) | None = None  # type: ignore[valid-type]
    overflow: json_enum(*_OVERFLOWS) = Field(  # type: ignore[valid-type]
        "shrink",
        description="More than max_rows x max_cols: show the first, the last joined, or all.",
    )
    fit: _Fit | None = None  # type: ignore[valid-type]
    gap: _Gap | None = Field(  # type: ignore[valid-type]
        None, description="Pixels between tiles and between tiles and the region's edges; even."
    )


class LayoutDocument(JsonDocument):
    """A custom layout file: regions of the output frame and who is shown in each
    (docs/layouts.md)."""

    model_config = ConfigDict(title="skymix custom layout")

    schema_: StrictStr = Field("", alias="$schema", description="The schema, for editors.")
    background: Color = (0, 0, 0)
    gap: _Gap = Field(  # type: ignore[valid-type]
        0, description="Pixels between tiles and between tiles and the region's edges; even."
    )
    aspect: Aspect = Field(
        (16, 9), description="The source aspect tiles are sized for, [width, height]."
    )
    fit: _Fit = "contain"  # type: ignore[valid-type]
    video_only: StrictBool = Field(
        False, description="Leave out participants without video (default: placeholder tile)."
    )
    regions: list[RegionDocument] = Field(min_length=1)


def layout_json_schema() -> dict[str, Any]:
    """The JSON Schema of custom layout files (docs/layout.schema.json), from LayoutDocument."""
    schema = LayoutDocument.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def load_custom_layout(path: str | os.PathLike[str]) -> CustomSpec:
    """Read and validate the custom layout JSON file at ``path``."""
    name, data = read_json_file(path, "layout")
    return parse_custom_layout(data, file=name)


def parse_custom_layout(data: object, *, file: str = "<layout>") -> CustomSpec:
    """Validate already-decoded JSON (LayoutDocument and the rules a schema cannot say:
    fractions that add up past the canvas, sizes under 2 pixels, a selector used twice) and
    convert it. Errors are DescriptionErrors naming ``file`` and the JSON path."""
    try:
        return custom_spec(data, file)
    except LayoutDocumentError as exc:
        raise DescriptionError(exc.message, file=file, path=exc.path or "(top level)") from None


class LayoutDocumentError(ValueError):
    """What is wrong with a layout document and where (JSON path, "" for the document); the
    caller says which document (a file: DescriptionError; an options field: OptionsError)."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.message = message
        self.path = path


def custom_spec(data: object, file: str | None = None) -> CustomSpec:
    """The CustomSpec of a layout document; LayoutDocumentError at the first problem."""
    try:
        doc = LayoutDocument.model_validate(data)
    except ValidationError as exc:
        path, message = validation_problems(exc)[0]
        raise LayoutDocumentError(message, path) from None
    regions = []
    used: dict[str, str] = {}
    for i, r in enumerate(doc.regions):
        where = f"regions[{i}]"
        bad = _region_problem(r.x, r.y, r.width, r.height)
        if bad is not None:
            raise LayoutDocumentError(bad[1], f"{where}.{bad[0]}")
        if isinstance(r.show, str):
            if r.show in used:
                raise LayoutDocumentError(
                    f"{json.dumps(r.show)} is already shown by {used[r.show]}", f"{where}.show"
                )
            used[r.show] = where
        regions.append(
            Region(
                x=r.x,
                y=r.y,
                width=r.width,
                height=r.height,
                show=r.show,
                z=r.z,
                max_rows=r.max_rows,
                max_cols=r.max_cols,
                overflow=cast(Overflow, r.overflow),
                fit=cast(Fit | None, r.fit),
                gap=r.gap,
                name=r.name,
            )
        )
    return CustomSpec(
        regions=tuple(regions),
        gap=doc.gap,
        aspect=doc.aspect,
        fit=cast(Fit, doc.fit),
        background=doc.background,
        video_only=doc.video_only,
        file=file,
    )


def custom_document(spec: CustomSpec) -> dict[str, Any]:
    """The layout document of a CustomSpec (what custom_spec() turns back into an equal spec);
    properties at their defaults are left out."""
    regions = []
    for r in spec.regions:
        region: dict[str, Any] = {"x": r.x, "y": r.y, "width": r.width, "height": r.height}
        region["show"] = r.show if isinstance(r.show, str) else list(r.show)
        for key, value, default in (
            ("name", r.name, None),
            ("z", r.z, 0),
            ("max_rows", r.max_rows, None),
            ("max_cols", r.max_cols, None),
            ("overflow", r.overflow, "shrink"),
            ("fit", r.fit, None),
            ("gap", r.gap, None),
        ):
            if value != default:
                region[key] = value
        regions.append(region)
    doc: dict[str, Any] = {}
    settings: tuple[tuple[str, object, object], ...] = (
        ("background", spec.background, (0, 0, 0)),
        ("gap", spec.gap, 0),
        ("aspect", spec.aspect, (16, 9)),
        ("fit", spec.fit, "contain"),
        ("video_only", spec.video_only, False),
    )
    for name, setting, unset in settings:
        if setting != unset:
            doc[name] = list(setting) if isinstance(setting, tuple) else setting
    return doc | {"regions": regions}


# --- a layout on a canvas -----------------------------------------------------------------------

#: Tiles smaller than this (pixels, either side) show nobody recognisably.
MIN_TILE = 16
#: A grid or speaker gap must leave room for this many tiles of MIN_TILE across the shorter
#: side (gaps between and around them): a 4x4 grid of the smallest tiles.
GAP_ROOM_TILES = 4


def _region_area(region: Region, spec: CustomSpec, width: int, height: int) -> Rect:
    """The rectangle a region covers on the canvas, clipped and rounded as compute_layout does,
    less its gap around the tiles."""
    left, top = _pixels(region.x, width), _pixels(region.y, height)
    x0, y0 = _even_edge(left, width), _even_edge(top, height)
    x1 = _even_edge(left + _pixels(region.width, width), width)
    y1 = _even_edge(top + _pixels(region.height, height), height)
    gap = spec.gap if region.gap is None else region.gap
    return Rect(x0 + gap, y0 + gap, max(0, x1 - x0 - 2 * gap), max(0, y1 - y0 - 2 * gap))


def check_on_canvas(spec: LayoutSpec, canvas: tuple[int, int]) -> None:
    """Refuse a layout that can show nobody on a canvas of (width, height), before any work.

    A custom layout needs a region that, clipped to the canvas and less its gap, leaves room for
    a tile of MIN_TILE pixels (regions that do not are named; if only some do, a warning names
    the others); a grid or speaker gap must leave room for GAP_ROOM_TILES tiles across the
    shorter side, a picture-in-picture margin for the inset. Raises DescriptionError naming the
    layout file and "regions" for a layout read from a file, else OptionsError (field
    "layout.regions", "layout.gap", "layout.margin").
    """
    width, height = _check_canvas(canvas)
    short = min(width, height)
    if isinstance(spec, (GridSpec, SpeakerSpec)):
        most = _floor_even(max(0, short - GAP_ROOM_TILES * MIN_TILE) // (GAP_ROOM_TILES + 1))
        if spec.gap > most:
            raise OptionsError(
                f"gap must be at most {most} on a {width}x{height} canvas (room for "
                f"{GAP_ROOM_TILES} tiles of {MIN_TILE} pixels across), got {spec.gap}",
                field="layout.gap",
            )
    elif isinstance(spec, PipSpec):
        most = _floor_even(max(0, short - MIN_TILE) // 2)
        if spec.margin > most:
            raise OptionsError(
                f"margin must be at most {most} on a {width}x{height} canvas (room for the "
                f"inset), got {spec.margin}",
                field="layout.margin",
            )
    elif isinstance(spec, CustomSpec):
        off = []
        for i, region in enumerate(spec.regions):
            area = _region_area(region, spec, width, height)
            if area.w < MIN_TILE or area.h < MIN_TILE:
                label = f"regions[{i}]" + (f" ({region.name})" if region.name else "")
                off.append(f"{label} has {area.w}x{area.h} pixels")
        if len(off) == len(spec.regions):
            message = (
                f"no region shows anyone on the {width}x{height} canvas: once clipped to it and "
                f"less their gaps, {'; '.join(off)} (a tile needs at least {MIN_TILE}x{MIN_TILE})"
            )
            if spec.file is None:
                raise OptionsError(message, field="layout.regions")
            raise DescriptionError(message, file=spec.file, path="regions")
        if off:
            _log.warning(
                "%s: regions too small on the %dx%d canvas, they show nobody: %s",
                spec.file or "custom layout",
                width,
                height,
                "; ".join(off),
            )
