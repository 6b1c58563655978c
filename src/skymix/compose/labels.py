"""Name labels drawn over tiles and placeholder tiles for participants without video.

Text is rasterised once with Pillow into 8-bit coverage masks (``Overlay``) or yuv420p planes,
and cached: the same inputs give back the same objects, so the compositor, which compares
overlays and sources by identity, does not redraw a tile whose label did not change.

Glyphs come from DejaVu Sans when it is installed (wide Latin, Greek and Cyrillic coverage),
else from Pillow's built-in scalable font; ``font_path`` names another TrueType/OpenType font
(e.g. a Noto CJK one). A character the font lacks is drawn as the font's missing-glyph box.
"""

from __future__ import annotations

import threading
import unicodedata
import zlib
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from ..errors import ComposeError
from .color import Matrix, rgb_to_yuv
from .video import Overlay, Planes

__all__ = [
    "NameLabel",
    "PALETTE",
    "initials",
    "label_font_size",
    "label_text",
    "name_label",
    "placeholder",
    "placeholder_color",
]

RGB: TypeAlias = tuple[int, int, int]
Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont

_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_REGULAR = _FONT_DIR / "DejaVuSans.ttf"
_BOLD = _FONT_DIR / "DejaVuSans-Bold.ttf"
ELLIPSIS = "\u2026"

# Dark, saturated-enough colours that white initials read well on (contrast > 4.5:1).
PALETTE: tuple[RGB, ...] = (
    (0x1F, 0x4E, 0x79),  # navy
    (0x2E, 0x6B, 0x4F),  # forest green
    (0x7A, 0x2E, 0x4F),  # plum
    (0x5B, 0x3A, 0x8C),  # violet
    (0x8C, 0x3B, 0x2E),  # brick
    (0x1E, 0x6A, 0x72),  # teal
    (0x6B, 0x4E, 0x1F),  # bronze
    (0x3D, 0x4A, 0x8C),  # indigo
    (0x7A, 0x3A, 0x7A),  # magenta
    (0x35, 0x5E, 0x3B),  # moss
)

_LABEL_CACHE_SIZE = 256
_PLACEHOLDER_CACHE_SIZE = 32  # a 1080p placeholder holds 3 MB of planes
_SUPERSAMPLE = 4  # anti-aliasing factor for the box's rounded corners and the circle

# FreeType faces are not safe to use from two threads at once; compositing runs in a pool.
_render_lock = threading.Lock()


class NameLabel(NamedTuple):
    """A name label: a translucent dark box, then the text over it.

    It is a tuple of two Overlays, so it can be a tile's overlays as it is
    (``Tile(src, rect, overlays=label)``) or be joined with others (``(*label, icon)``).
    For an empty name, or a tile too small for legible text, both masks are empty (0x0)
    and nothing is drawn.
    """

    box: Overlay
    text: Overlay


def _clean(name: str) -> str:
    """The name as drawn: NFC, control characters dropped, whitespace runs as one space."""
    if not isinstance(name, str):
        raise ComposeError(f"name must be a str, got {type(name).__name__}")
    kept = (
        c
        for c in unicodedata.normalize("NFC", name)
        if c.isspace() or unicodedata.category(c) != "Cc"
    )
    return " ".join("".join(kept).split())


def _rgb(color: RGB, what: str) -> RGB:
    """`color` as a tuple of three ints 0..255 (rgb_to_yuv checks it), or ComposeError."""
    try:
        rgb_to_yuv(color)
    except ComposeError as exc:
        raise ComposeError(f"{what}: {exc}") from None
    r, g, b = color
    return r, g, b


def _check_size(width: int, height: int, what: str) -> None:
    for v in (width, height):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ComposeError(f"{what} size must be positive integers, got {width!r}x{height!r}")


@lru_cache(maxsize=32)
def _font(path: str | None, bold: bool, size: int) -> Font:
    """A font of `size` pixels: `path`, else DejaVu Sans (Bold), else Pillow's built-in font."""
    candidates = [Path(path)] if path is not None else [_BOLD, _REGULAR] if bold else [_REGULAR]
    for p in candidates:
        if p.is_file():
            try:
                return ImageFont.truetype(str(p), size)
            except OSError:
                if path is not None:
                    raise ComposeError(f"cannot load font {path!r}") from None
    if path is not None:
        raise ComposeError(f"font {path!r} does not exist")
    return ImageFont.load_default(size=size)


def _metrics(font: Font) -> tuple[int, int]:
    """(ascent, descent) of the font's lines, the same for every text."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return font.getmetrics()
    bbox = font.getbbox("Ag")
    return int(bbox[3]), 0


def _width(font: Font, text: str) -> float:
    return float(font.getlength(text))


def _ellipsize(font: Font, text: str, limit: float) -> str:
    """`text`, or its longest prefix followed by "…" that is at most `limit` pixels wide
    ("" if not even "…" fits). A cut never separates a character from its combining marks."""
    if _width(font, text) <= limit:
        return text
    if _width(font, ELLIPSIS) > limit:
        return ""
    lo, hi = 0, len(text)  # text[:lo] + "…" fits; text[:hi] + "…" does not (or hi = len)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _width(font, text[:mid].rstrip() + ELLIPSIS) <= limit:
            lo = mid
        else:
            hi = mid
    while lo > 0 and unicodedata.combining(text[lo]):
        lo -= 1
    return text[:lo].rstrip() + ELLIPSIS


def _readonly(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    a.flags.writeable = False
    return a


def _text_mask(
    font: Font, text: str, width: int, height: int, x: int, y: int
) -> npt.NDArray[np.uint8]:
    """Coverage of `text` drawn with its ascender line at (x, y) on a width x height canvas."""
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).text((x, y), text, fill=255, font=font)
    return np.asarray(image, dtype=np.uint8).copy()


def label_font_size(tile_height: int) -> int:
    """The label's font size in pixels for a tile `tile_height` pixels high: 11 px on a 90-pixel
    strip tile, 17 on 360, 25 on 720, 33 on 1080, at most 48."""
    return min(48, round(9 + tile_height / 45))


class _Layout(NamedTuple):
    font: Font
    text: str  # the name as drawn, "" for no label
    margin: int  # from the tile's left and bottom edges to the box
    pad_x: int  # inside the box, left and right of the text
    pad_y: int  # inside the box, above the ascender and below the descender
    box_w: int
    box_h: int


def _layout(name: str, tile_width: int, tile_height: int, font_path: str | None) -> _Layout:
    """Where a label goes; the caller holds _render_lock."""
    size = label_font_size(tile_height)
    margin = max(2, round(size * 0.4))
    pad_x, pad_y = max(3, round(size * 0.45)), max(1, round(size * 0.15))
    font = _font(font_path, False, size)
    ascent, descent = _metrics(font)
    box_h = ascent + descent + 2 * pad_y
    text = ""
    if name and box_h <= tile_height:  # else no room for legible text
        text = _ellipsize(font, name, tile_width - 2 * margin - 2 * pad_x)
    box_w = min(round(_width(font, text)) + 2 * pad_x, tile_width - 2 * margin)
    return _Layout(font, text, margin, pad_x, pad_y, box_w, box_h)


def label_text(
    name: str, tile_width: int, tile_height: int, *, font_path: str | None = None
) -> str:
    """The text name_label() draws for `name` on such a tile: the name with control characters
    dropped and whitespace runs as one space, cut to fit and ending with "…" when it is too wide;
    "" when nothing is drawn (an empty name, or a tile too small for a legible label)."""
    _check_size(tile_width, tile_height, "tile")
    name = _clean(name)
    with _render_lock:
        return _layout(name, tile_width, tile_height, font_path).text


def name_label(
    name: str,
    tile_width: int,
    tile_height: int,
    *,
    text_color: RGB = (255, 255, 255),
    box_color: RGB = (0, 0, 0),
    box_opacity: float = 0.55,
    font_path: str | None = None,
) -> NameLabel:
    """The participant's name at the bottom-left of a tile: text on a rounded translucent box.

    The font size follows the tile height (``label_font_size``); a name wider than the tile is
    cut and ends with "…" (``label_text`` tells what is drawn). Overlay positions are relative
    to the tile and the masks are read-only. The same arguments give back the same NameLabel
    and Overlay objects (an LRU cache of 256 labels).
    """
    _check_size(tile_width, tile_height, "tile")
    if not 0.0 <= box_opacity <= 1.0:
        raise ComposeError(f"box_opacity must be within 0..1, got {box_opacity}")
    return _name_label(
        _clean(name),
        tile_width,
        tile_height,
        _rgb(text_color, "text_color"),
        _rgb(box_color, "box_color"),
        float(box_opacity),
        font_path,
    )


@lru_cache(maxsize=_LABEL_CACHE_SIZE)
def _name_label(
    name: str,
    tile_width: int,
    tile_height: int,
    text_color: RGB,
    box_color: RGB,
    box_opacity: float,
    font_path: str | None,
) -> NameLabel:
    with _render_lock:
        lay = _layout(name, tile_width, tile_height, font_path)
        if not lay.text:
            empty = _readonly(np.zeros((0, 0), np.uint8))
            return NameLabel(
                Overlay(empty, 0, 0, box_color, box_opacity), Overlay(empty, 0, 0, text_color, 1.0)
            )
        text_mask = _text_mask(lay.font, lay.text, lay.box_w, lay.box_h, lay.pad_x, lay.pad_y)
    box_w, box_h = lay.box_w, lay.box_h
    box_x, box_y = lay.margin, max(0, tile_height - lay.margin - box_h)

    s = _SUPERSAMPLE
    big = Image.new("L", (box_w * s, box_h * s), 0)
    ImageDraw.Draw(big).rounded_rectangle(
        (0, 0, box_w * s - 1, box_h * s - 1), radius=max(1, box_h * s // 4), fill=255
    )
    box_mask = np.asarray(big.resize((box_w, box_h), Image.Resampling.BOX), dtype=np.uint8).copy()

    # The text overlay keeps only its inked part: less to blend every time the tile is drawn.
    rows = np.flatnonzero(text_mask.any(axis=1))
    cols = np.flatnonzero(text_mask.any(axis=0))
    if rows.size:
        text_mask = text_mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy()
        tx, ty = box_x + int(cols[0]), box_y + int(rows[0])
    else:
        text_mask, tx, ty = np.zeros((0, 0), np.uint8), box_x, box_y
    return NameLabel(
        Overlay(_readonly(box_mask), box_x, box_y, box_color, box_opacity),
        Overlay(_readonly(text_mask), tx, ty, text_color, 1.0),
    )


def initials(name: str) -> str:
    """Up to two initials, uppercase: the first letter or digit of each of the first two words
    that have one ("Ada Lovelace" → "AL", "linus" → "L", "  jean-luc  picard " → "JP");
    "?" when there is none."""
    letters = []
    for word in _clean(name).split(" "):
        for i, c in enumerate(word):
            if c.isalnum():
                j = i + 1
                while j < len(word) and unicodedata.combining(word[j]):
                    j += 1
                letters.append(unicodedata.normalize("NFC", word[i:j].upper()))
                break
        if len(letters) == 2:
            break
    return "".join(letters) or "?"


def placeholder_color(name: str) -> RGB:
    """The colour of the name's placeholder circle: a PALETTE entry chosen by the CRC-32 of the
    cleaned name, so it is the same in every run and on every machine."""
    return PALETTE[zlib.crc32(_clean(name).encode("utf-8")) % len(PALETTE)]


def placeholder(
    name: str,
    width: int,
    height: int,
    *,
    matrix: Matrix = "bt709",
    font_path: str | None = None,
) -> Planes:
    """A width x height yuv420p picture for a participant without video: their initials in
    white, centred on a circle of ``placeholder_color(name)`` over a darker shade of it.

    Returns read-only (Y, U, V) planes, usable as a Tile source; the same arguments give back
    the same arrays (an LRU cache of 32 pictures). Width and height must be even.
    """
    _check_size(width, height, "placeholder")
    if width % 2 or height % 2:
        raise ComposeError(f"placeholder size {width}x{height} must be even (yuv420p)")
    rgb_to_yuv((0, 0, 0), matrix)  # rejects an unknown matrix
    return _placeholder(_clean(name), width, height, matrix, font_path)


@lru_cache(maxsize=_PLACEHOLDER_CACHE_SIZE)
def _placeholder(
    name: str, width: int, height: int, matrix: Matrix, font_path: str | None
) -> Planes:
    circle_rgb = placeholder_color(name)
    background_rgb: RGB = (circle_rgb[0] * 3 // 5, circle_rgb[1] * 3 // 5, circle_rgb[2] * 3 // 5)
    diameter = max(2, round(min(width, height) * 0.6))
    cx, cy = width / 2, height / 2

    s = _SUPERSAMPLE
    big = Image.new("L", (width * s, height * s), 0)
    x0, y0 = (cx - diameter / 2) * s, (cy - diameter / 2) * s
    ImageDraw.Draw(big).ellipse((x0, y0, x0 + diameter * s - 1, y0 + diameter * s - 1), fill=255)
    circle = np.asarray(big.resize((width, height), Image.Resampling.BOX), dtype=np.float32) / 255

    text = initials(name)
    with _render_lock:
        font = _font(font_path, True, max(6, round(diameter * (0.36 if len(text) > 1 else 0.42))))
        image = Image.new("L", (width, height), 0)
        # "mm": the text's middle, both ways, at the centre (from its ink box for a bitmap font)
        if isinstance(font, ImageFont.FreeTypeFont):
            ImageDraw.Draw(image).text((cx, cy), text, fill=255, font=font, anchor="mm")
        else:
            left, top, right, bottom = font.getbbox(text)
            ImageDraw.Draw(image).text(
                (cx - (left + right) / 2, cy - (top + bottom) / 2), text, fill=255, font=font
            )
    glyphs = np.asarray(image, dtype=np.float32) / 255

    background = rgb_to_yuv(background_rgb, matrix)
    disc = rgb_to_yuv(circle_rgb, matrix)
    ink = rgb_to_yuv((255, 255, 255), matrix)
    planes = []
    for k in range(3):
        p = background[k] + circle * (disc[k] - background[k])
        p += glyphs * (ink[k] - p)
        if k:  # chroma: the mean of each 2x2 block
            p = p.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        planes.append(_readonly(np.clip(np.rint(p), 0, 255).astype(np.uint8)))
    return planes[0], planes[1], planes[2]
