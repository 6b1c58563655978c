"""Composite tiles into a yuv420p frame in place, and draw masks (labels, icons) onto it.

The per-pixel work runs in skymix._native.composite without the GIL, rows split across threads;
this module validates what the caller passes and decides which tiles need drawing at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import av
import numpy as np
import numpy.typing as npt

from .._native import composite as _kernel
from ..errors import ComposeError
from .color import Matrix, rgb_to_yuv

__all__ = [
    "Rect",
    "Overlay",
    "Tile",
    "Fit",
    "Planes",
    "CompositeState",
    "composite",
    "draw_mask",
    "frame_planes",
]

Fit = Literal["contain", "cover"]
Planes: TypeAlias = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
RGB: TypeAlias = tuple[int, int, int]

_FIT_CODES = {"contain": 0, "cover": 1}
_MAX_COORD = 1 << 24


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in output pixels; it may lie partly or wholly outside the frame."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, slots=True, eq=False)
class Overlay:
    """An 8-bit coverage mask (a name label, an icon) blended in one colour onto a tile.

    (x, y) is the mask's top-left relative to the tile rectangle; the mask is clipped to the
    rectangle and hidden where a later tile covers it. Reuse the same object from frame to frame:
    a tile whose overlays are the same objects is not redrawn.
    """

    mask: npt.NDArray[np.uint8]
    x: int
    y: int
    color: RGB = (255, 255, 255)
    opacity: float = 1.0


@dataclass(frozen=True, slots=True, eq=False)
class Tile:
    """One source frame drawn into a rectangle of the output.

    source: a yuv420p ``av.VideoFrame``, a (Y, U, V) tuple of uint8 planes (rows may be padded,
    samples must be contiguous), or None for an empty tile (background, and border if any).
    fit: ``contain`` letterboxes the whole source inside the rectangle keeping its aspect;
    ``cover`` fills the rectangle and crops the source around its centre.
    border_color: overrides the composite's border colour for this tile (an active speaker).
    overlays: masks drawn over the tile after its picture, in order.
    """

    source: av.VideoFrame | Planes | None
    rect: Rect
    fit: Fit = "contain"
    border_color: RGB | None = None
    overlays: tuple[Overlay, ...] = ()


@dataclass(frozen=True, slots=True)
class CompositeState:
    """What one composite() call drew; pass it back as ``previous`` with the same output frame
    and unchanged tiles are not drawn again.

    It holds references to the sources and overlays it drew, so that an object seen again is
    known to be the same frame (a source must not be modified in place between calls).
    """

    out_id: int
    out_address: int
    settings: tuple[object, ...]
    keys: tuple[tuple[object, ...], ...]
    sources: tuple[tuple[object, tuple[Overlay, ...]], ...]
    drawn: int
    skipped: int


def _check_format(frame: av.VideoFrame, what: str) -> None:
    if frame.format.name != "yuv420p":
        raise ComposeError(
            f"{what}: pixel format {frame.format.name!r} is not yuv420p "
            "(convert with frame.reformat(format='yuv420p'))"
        )


def frame_planes(frame: av.VideoFrame | Planes, what: str) -> Planes:
    """Y, U, V of a yuv420p frame or plane tuple as uint8 arrays that share its memory."""
    if isinstance(frame, av.VideoFrame):
        _check_format(frame, what)
        planes = []
        for plane in frame.planes:
            flat = np.frombuffer(memoryview(plane), np.uint8)
            planes.append(flat.reshape(plane.height, plane.line_size)[:, : plane.width])
        return planes[0], planes[1], planes[2]
    if not isinstance(frame, tuple) or len(frame) != 3:
        raise ComposeError(f"{what}: expected an av.VideoFrame or a (Y, U, V) tuple of planes")
    y, u, v = (np.asarray(p) for p in frame)
    for name, p in (("Y", y), ("U", u), ("V", v)):
        if p.dtype != np.uint8 or p.ndim != 2:
            raise ComposeError(f"{what}: plane {name} must be 2-D uint8, got {p.ndim}-D {p.dtype}")
        if p.strides[1] != 1 or p.strides[0] < p.shape[1]:
            raise ComposeError(
                f"{what}: plane {name} samples are not contiguous within rows "
                f"(strides {p.strides}); pass np.ascontiguousarray(plane)"
            )
    h, w = y.shape
    if h < 1 or w < 1:
        raise ComposeError(f"{what}: empty luma plane {y.shape}")
    want = ((h + 1) // 2, (w + 1) // 2)
    if u.shape != want or v.shape != want:
        raise ComposeError(
            f"{what}: chroma planes {u.shape} and {v.shape} do not match luma {y.shape} "
            f"(yuv420p needs {want})"
        )
    return y, u, v


def _source(source: av.VideoFrame | Planes, index: int) -> tuple[av.VideoFrame | Planes, int, int]:
    """Tile `index`'s source as the kernel takes it (a yuv420p frame, or checked planes) and its
    luma size.

    A frame's planes are read by the kernel itself: numpy views of them cost more than the
    drawing of a small tile.
    """
    if isinstance(source, av.VideoFrame):
        if source.format.name != "yuv420p":
            _check_format(source, f"tile {index}")
        return source, source.width, source.height
    planes = frame_planes(source, f"tile {index}")
    return planes, planes[0].shape[1], planes[0].shape[0]


def _writable_out(
    out: av.VideoFrame | Planes,
) -> tuple[av.VideoFrame | Planes, int, tuple[int, int]]:
    """The output as the kernel takes it (a writable yuv420p frame, or checked writable planes),
    the address of its luma samples and its luma shape (h, w).

    A frame's planes are read by the kernel itself (numpy views of them cost as much as drawing a
    small tile); frame_planes() makes them only for overlays.
    """
    if isinstance(out, av.VideoFrame):
        _check_format(out, "output frame")
        out.make_writable()
        return out, out.planes[0].buffer_ptr, (out.height, out.width)
    planes = _writable_planes(out)
    return planes, planes[0].__array_interface__["data"][0], planes[0].shape


def _writable_planes(out: av.VideoFrame | Planes) -> Planes:
    if isinstance(out, av.VideoFrame):
        out.make_writable()
    planes = frame_planes(out, "output frame")
    for p in planes:
        if not p.flags.writeable:
            raise ComposeError("output frame: planes are read-only")
    return planes


_YUV_CACHE: dict[tuple[tuple[int, int, int], str], tuple[int, int, int]] = {}


def _color(rgb: RGB, matrix: Matrix, what: str) -> tuple[int, int, int]:
    """rgb_to_yuv, remembered for tuples of ints (the same few colours come every frame)."""
    key = (rgb, matrix)
    cacheable = type(matrix) is str and type(rgb) is tuple and all(type(c) is int for c in rgb)
    if cacheable and key in _YUV_CACHE:
        return _YUV_CACHE[key]
    try:
        yuv = rgb_to_yuv(rgb, matrix)
    except ComposeError as exc:
        raise ComposeError(f"{what}: {exc}") from None
    if cacheable and len(_YUV_CACHE) < 1024:
        _YUV_CACHE[key] = yuv
    return yuv


def _overlap(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def composite(
    tiles: Sequence[Tile],
    out: av.VideoFrame | Planes,
    *,
    background: RGB = (0, 0, 0),
    border: int = 0,
    border_color: RGB = (0, 0, 0),
    matrix: Matrix = "bt709",
    previous: CompositeState | None = None,
    threads: int | None = None,
) -> CompositeState:
    """Draw tiles, in order (later tiles on top), into ``out`` (a yuv420p frame) in place.

    Every pixel of ``out`` is written: background where no tile is, letterbox bars in the
    background colour, ``border`` pixels of border colour inside each tile's rectangle.
    Sources are scaled with area averaging when shrinking and bilinear interpolation when
    enlarging. Colours are RGB, stored as limited-range BT.709 (or ``matrix="bt601"``).

    With ``previous`` (the state returned for the same ``out`` last time), tiles whose source
    object, rectangle, fit and colours are unchanged are not drawn again; a tile is redrawn when it
    or a tile below it that overlaps it changed. Any change of the tile count, rectangles or
    settings redraws the whole frame.
    """
    target, out_address, shape = _writable_out(out)
    if not isinstance(border, int) or border < 0:
        raise ComposeError(f"border must be a non-negative integer, got {border!r}")
    bg = _color(background, matrix, "background")
    default_border = _color(border_color, matrix, "border_color")
    n = len(tiles)
    colors = []
    overlay_colors: dict[tuple[int, int], tuple[int, int, int]] = {}
    keys = []
    for i, tile in enumerate(tiles):
        if not isinstance(tile, Tile):
            raise ComposeError(f"tile {i}: expected a skymix.Tile, got {type(tile).__name__}")
        r = tile.rect
        x, y, w, h = r.x, r.y, r.w, r.h
        if w < 0 or h < 0:
            raise ComposeError(f"tile {i}: negative size {w}x{h}")
        if not (
            -_MAX_COORD <= x <= _MAX_COORD
            and -_MAX_COORD <= y <= _MAX_COORD
            and w <= _MAX_COORD
            and h <= _MAX_COORD
        ):
            raise ComposeError(f"tile {i}: rectangle {r} is out of range")
        fit = _FIT_CODES.get(tile.fit)
        if fit is None:
            raise ComposeError(f"tile {i}: fit must be 'contain' or 'cover', got {tile.fit!r}")
        color = (
            default_border
            if tile.border_color is None
            else _color(tile.border_color, matrix, f"tile {i} border_color")
        )
        colors.append(color)
        if tile.overlays:
            for j, overlay in enumerate(tile.overlays):
                _check_mask(overlay.mask, overlay.opacity, f"tile {i} overlay {j}")
                overlay_colors[i, j] = _color(overlay.color, matrix, f"tile {i} overlay {j} color")
        keys.append((x, y, w, h, fit, color))

    settings = (bg, border, shape)
    full = (
        previous is None
        or previous.out_id != id(out)
        or previous.out_address != out_address
        or previous.settings != settings
        or previous.keys != tuple(keys)
    )
    draw = [True] * n
    if not full:
        assert previous is not None
        dirty: list[Rect] = []
        for i, tile in enumerate(tiles):
            old_source, old_overlays = previous.sources[i]
            changed = old_source is not tile.source or old_overlays != tile.overlays
            if changed or any(_overlap(tile.rect, d) for d in dirty):
                dirty.append(tile.rect)
            else:
                draw[i] = False
    # Sources are checked when drawn: a skipped tile shows the object checked when it was drawn.
    sources: list[av.VideoFrame | Planes | None] = []
    geom = []
    for i, (tile, key) in enumerate(zip(tiles, keys)):
        source, sw, sh = None, 0, 0
        if draw[i] and tile.source is not None:
            source, sw, sh = _source(tile.source, i)
        sources.append(source)
        geom.append((*key[:4], sw, sh, key[4], border, draw[i]))
    drawn = sum(draw)
    if full or drawn:
        _kernel.composite_planes(
            sources,
            np.array(geom, np.int64).reshape(n, 9),
            target,
            np.array(bg, np.uint8),
            np.array(colors, np.uint8).reshape(n, 3),
            full,
            threads or len(os.sched_getaffinity(0)),
        )
    masks: list[npt.NDArray[np.uint8]] = []
    params: list[tuple[int, ...]] = []
    for i, tile in enumerate(tiles):
        if draw[i] and tile.overlays:
            yuv = [overlay_colors[i, j] for j in range(len(tile.overlays))]
            _overlay_blends(tile, yuv, tiles[i + 1 :], masks, params)
    if masks:
        _kernel.blend_masks(frame_planes(target, "output frame"), masks, np.array(params, np.int32))
    return CompositeState(
        out_id=id(out),
        out_address=out_address,
        settings=settings,
        keys=tuple(keys),
        sources=tuple((t.source, t.overlays) for t in tiles),
        drawn=drawn,
        skipped=n - drawn,
    )


def _check_mask(mask: npt.NDArray[np.uint8], opacity: float, what: str) -> None:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
        got = f"{mask.ndim}-D {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise ComposeError(f"{what}: mask must be a 2-D uint8 array, got {got}")
    if not 0.0 <= opacity <= 1.0:
        raise ComposeError(f"{what}: opacity must be within 0..1, got {opacity}")


def _overlay_blends(
    tile: Tile,
    colors: list[tuple[int, int, int]],
    above: Sequence[Tile],
    masks: list[npt.NDArray[np.uint8]],
    params: list[tuple[int, ...]],
) -> None:
    """The blends of a tile's overlays (appended to masks and params, as blend_masks takes
    them), clipped to its rectangle and to what later tiles leave visible."""
    r = tile.rect
    covering = [t.rect for t in above if _overlap(t.rect, r)]
    for overlay, color in zip(tile.overlays, colors):
        mask = overlay.mask
        x, y = r.x + overlay.x, r.y + overlay.y
        x0, y0 = max(x, r.x), max(y, r.y)
        x1, y1 = min(x + mask.shape[1], r.x + r.w), min(y + mask.shape[0], r.y + r.h)
        if x0 >= x1 or y0 >= y1:
            continue
        visible = mask[y0 - y : y1 - y, x0 - x : x1 - x]
        for o in covering:
            ox0, oy0 = max(o.x, x0), max(o.y, y0)
            ox1, oy1 = min(o.x + o.w, x1), min(o.y + o.h, y1)
            if ox0 < ox1 and oy0 < oy1:
                if visible.base is not None:
                    visible = visible.copy()
                visible[oy0 - y0 : oy1 - y0, ox0 - x0 : ox1 - x0] = 0
        masks.append(np.ascontiguousarray(visible))
        params.append((x0, y0, *color, round(overlay.opacity * 255)))


def draw_mask(
    out: av.VideoFrame | Planes,
    mask: npt.NDArray[np.uint8],
    x: int,
    y: int,
    color: RGB,
    *,
    opacity: float = 1.0,
    matrix: Matrix = "bt709",
) -> None:
    """Blend ``color`` into ``out`` through an 8-bit coverage mask whose top-left is at (x, y).

    The mask (255 = fully covered) is typically a label or icon rendered once (e.g. with Pillow)
    and drawn every frame; it is clipped to the frame and may start at odd positions.
    """
    planes = _writable_planes(out)
    m = np.asarray(mask)
    _check_mask(m, opacity, "draw_mask")
    yuv = _color(color, matrix, "mask color")
    _kernel.blend_masks(
        planes,
        [np.ascontiguousarray(m)],
        np.array([[int(x), int(y), *yuv, round(opacity * 255)]], np.int32),
    )
