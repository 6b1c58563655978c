"""Name labels drawn over tiles and placeholder tiles for participants without video.

Text is rasterised once with Pillow into 8-bit coverage masks (``Overlay``) or yuv420p planes,
and cached: the same inputs give back the same objects, so the compositor, which compares
overlays and sources by identity, does not redraw a tile whose label did not change.

Display names come from anyone in the call, in any script, so no single font covers them. Each
name is drawn through a fallback chain of Noto faces (Latin/Greek/Cyrillic, Arabic, Hebrew,
Devanagari, the CJK face for the name's language, DejaVu Sans for symbols, Noto Color Emoji),
found at their Debian paths or through fontconfig once per process; a face that is missing is
left out and the rest still work, down to Pillow's built-in font when there is none at all.
Which face has a glyph is read from the faces' own ``cmap`` tables (Pillow does not say).

A name is cleaned first: bidi embeddings, overrides and isolates, other control and format
characters (ZWJ, ZWNJ and the emoji tag sequence kept) and line separators are removed, so a
display name cannot reorder itself to read as another. It is then split into grapheme clusters
(an emoji ZWJ sequence, a base with its marks, a Devanagari conjunct are one each), each cluster
given the first face that has all of its glyphs, and the implicit bidi levels of the Unicode
bidi algorithm (no explicit codes are left) put the runs in visual order. Every run of one face
and one direction is shaped by Pillow's raqm layout (HarfBuzz: Arabic joining, Indic
conjuncts, emoji ligatures). Noto Color Emoji only has bitmaps at 109 pixels: its runs are drawn
at that size in colour and scaled down. A label is one coverage mask drawn in one colour, so an
emoji's colour becomes shading in it (its silhouette at 40 %, the rest by its luma); the
placeholder tile is full colour and keeps the emoji's colours.
"""

from __future__ import annotations

import bisect
import logging
import math
import struct
import subprocess
import threading
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from ..errors import ComposeError
from .color import _KR_KB, Matrix, rgb_to_yuv
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

logger = logging.getLogger(__name__)

RGB: TypeAlias = tuple[int, int, int]
Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont
FloatArray: TypeAlias = npt.NDArray[np.floating[Any]]

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
_EMOJI_STRIKE = 109  # the one bitmap size Noto Color Emoji has
_EMOJI_FLOOR = 0.4  # in a one-colour label, an emoji's silhouette shows at least this much
# Longer names are cut whatever the tile (at 2.5 pixels a cluster, wider than 2560 pixels), so
# a pasted megabyte is not laid out for every tile size.
_MAX_CLUSTERS = 1024

# FreeType faces are not safe to use from two threads at once; compositing runs in a pool.
_render_lock = threading.Lock()

_NOTO = "/usr/share/fonts/truetype/noto/"
_NOTO_CJK = "/usr/share/fonts/opentype/noto/"
_DEJAVU = "/usr/share/fonts/truetype/dejavu/"

# role -> (fontconfig family, regular file, bold file, face index in the file): Debian's
# fonts-noto-core, fonts-noto-cjk, fonts-noto-color-emoji and fonts-dejavu-core.
_FAMILIES: dict[str, tuple[str, str, str, int]] = {
    "latin": ("Noto Sans", _NOTO + "NotoSans-Regular.ttf", _NOTO + "NotoSans-Bold.ttf", 0),
    "arabic": (
        "Noto Sans Arabic",
        _NOTO + "NotoSansArabic-Regular.ttf",
        _NOTO + "NotoSansArabic-Bold.ttf",
        0,
    ),
    "hebrew": (
        "Noto Sans Hebrew",
        _NOTO + "NotoSansHebrew-Regular.ttf",
        _NOTO + "NotoSansHebrew-Bold.ttf",
        0,
    ),
    "devanagari": (
        "Noto Sans Devanagari",
        _NOTO + "NotoSansDevanagari-Regular.ttf",
        _NOTO + "NotoSansDevanagari-Bold.ttf",
        0,
    ),
    "cjk-jp": (
        "Noto Sans CJK JP",
        _NOTO_CJK + "NotoSansCJK-Regular.ttc",
        _NOTO_CJK + "NotoSansCJK-Bold.ttc",
        0,
    ),
    "cjk-kr": (
        "Noto Sans CJK KR",
        _NOTO_CJK + "NotoSansCJK-Regular.ttc",
        _NOTO_CJK + "NotoSansCJK-Bold.ttc",
        1,
    ),
    "cjk-sc": (
        "Noto Sans CJK SC",
        _NOTO_CJK + "NotoSansCJK-Regular.ttc",
        _NOTO_CJK + "NotoSansCJK-Bold.ttc",
        2,
    ),
    "dejavu": ("DejaVu Sans", _DEJAVU + "DejaVuSans.ttf", _DEJAVU + "DejaVuSans-Bold.ttf", 0),
    "emoji": ("Noto Color Emoji", _NOTO + "NotoColorEmoji.ttf", _NOTO + "NotoColorEmoji.ttf", 0),
}
# The order faces are tried in; the first of "latin", "dejavu" found gives the line metrics.
_CHAIN = ("latin", "arabic", "hebrew", "devanagari", "cjk", "dejavu", "emoji")

_ZWNJ, _ZWJ = "\u200c", "\u200d"
_VS16, _VS15, _KEYCAP = "\ufe0f", "\ufe0e", "\u20e3"
# Default-ignorable letters that draw nothing: Hangul fillers, Khmer inherent vowels.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u17b4\u17b5\u034f")
# Emoji_Presentation=Yes below U+1F000 (Unicode 15): drawn as emoji without a VS16.
_BMP_EMOJI = frozenset(
    chr(c)
    for lo, hi in (
        (0x231A, 0x231B),
        (0x23E9, 0x23EC),
        (0x23F0, 0x23F0),
        (0x23F3, 0x23F3),
        (0x25FD, 0x25FE),
        (0x2614, 0x2615),
        (0x2648, 0x2653),
        (0x267F, 0x267F),
        (0x2693, 0x2693),
        (0x26A1, 0x26A1),
        (0x26AA, 0x26AB),
        (0x26BD, 0x26BE),
        (0x26C4, 0x26C5),
        (0x26CE, 0x26CE),
        (0x26D4, 0x26D4),
        (0x26EA, 0x26EA),
        (0x26F2, 0x26F3),
        (0x26F5, 0x26F5),
        (0x26FA, 0x26FA),
        (0x26FD, 0x26FD),
        (0x2705, 0x2705),
        (0x270A, 0x270B),
        (0x2728, 0x2728),
        (0x274C, 0x274C),
        (0x274E, 0x274E),
        (0x2753, 0x2755),
        (0x2757, 0x2757),
        (0x2795, 0x2797),
        (0x27B0, 0x27B0),
        (0x27BF, 0x27BF),
        (0x2B1B, 0x2B1C),
        (0x2B50, 0x2B50),
        (0x2B55, 0x2B55),
    )  # fmt: skip
    for c in range(lo, hi + 1)
)
# Above U+1F000 the emoji blocks; a few text-default symbols in them are drawn as emoji too.
_SMP_EMOJI = (
    (0x1F004, 0x1F004), (0x1F0CF, 0x1F0CF), (0x1F18E, 0x1F18E), (0x1F191, 0x1F19A),
    (0x1F1E6, 0x1F1FF), (0x1F201, 0x1F251), (0x1F300, 0x1F64F), (0x1F680, 0x1F6FF),
    (0x1F7E0, 0x1F7FF), (0x1F900, 0x1F9FF), (0x1FA70, 0x1FAFF),
)  # fmt: skip


class NameLabel(NamedTuple):
    """A name label: a translucent dark box, then the text over it.

    It is a tuple of two Overlays, so it can be a tile's overlays as it is
    (``Tile(src, rect, overlays=label)``) or be joined with others (``(*label, icon)``).
    For an empty name, or a tile too small for legible text, both masks are empty (0x0)
    and nothing is drawn.
    """

    box: Overlay
    text: Overlay


# Cleaning and segmenting


def _clean(name: str) -> str:
    """The name as drawn: NFC; bidi controls, other control and format characters (but ZWJ,
    ZWNJ and an emoji flag's tags), surrogates, noncharacters and invisible fillers dropped;
    whitespace and line/paragraph separators as single spaces; "" when nothing visible is
    left."""
    if not isinstance(name, str):
        raise ComposeError(f"name must be a str, got {type(name).__name__}")
    kept: list[str] = []
    for c in unicodedata.normalize("NFC", name):
        cp, cat = ord(c), unicodedata.category(c)
        if c.isspace() or cat[0] == "Z":
            kept.append(" ")
        elif c in (_ZWJ, _ZWNJ):
            kept.append(c)
        elif 0xE0020 <= cp <= 0xE007F:  # tags: only in an emoji flag sequence (🏴 + tags)
            if kept and (kept[-1] == "\U0001f3f4" or 0xE0020 <= ord(kept[-1]) <= 0xE007F):
                kept.append(c)
        elif cat in ("Cc", "Cf", "Cs") or c in _INVISIBLE:
            continue
        elif 0xFDD0 <= cp <= 0xFDEF or cp & 0xFFFE == 0xFFFE:
            continue
        else:
            kept.append(c)
    text = " ".join("".join(kept).split())
    if all(c in (" ", _ZWJ, _ZWNJ) or _is_variation_selector(c) for c in text):
        return ""
    return text


def _is_variation_selector(c: str) -> bool:
    cp = ord(c)
    return 0xFE00 <= cp <= 0xFE0F or 0xE0100 <= cp <= 0xE01EF


def _is_emoji_base(c: str) -> bool:
    """Drawn as an emoji by default (Emoji_Presentation), give or take a few symbols."""
    if c in _BMP_EMOJI:
        return True
    cp = ord(c)
    return cp >= 0x1F000 and any(lo <= cp <= hi for lo, hi in _SMP_EMOJI)


def _is_pictographic(c: str) -> bool:
    """Can be joined into an emoji ZWJ sequence (Extended_Pictographic, approximately)."""
    return _is_emoji_base(c) or unicodedata.category(c) in ("So", "Cn") or ord(c) >= 0x1F000


def _extends(c: str) -> bool:
    """Belongs to the grapheme cluster before it (UAX #29 Extend and SpacingMark)."""
    cp = ord(c)
    return (
        unicodedata.category(c) in ("Mn", "Mc", "Me")
        or c in (_ZWJ, _ZWNJ)
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tones
        or 0xE0020 <= cp <= 0xE007F  # tags
    )


def _graphemes(text: str) -> list[str]:
    """`text` as grapheme clusters, close to UAX #29's extended clusters: a base with its marks,
    an emoji ZWJ sequence, a flag (two regional indicators), an Indic conjunct (consonant,
    virama, consonant), a Hangul syllable from conjoining jamo."""
    clusters: list[str] = []
    for c in text:
        if clusters:
            last = clusters[-1]
            prev, cp = last[-1], ord(c)
            if (
                _extends(c)
                or (prev == _ZWJ and _is_pictographic(c) and _is_pictographic(last[0]))
                or (0x1F1E6 <= cp <= 0x1F1FF and len(last) == 1 and 0x1F1E6 <= ord(last) <= 0x1F1FF)
                or (
                    unicodedata.combining(prev) == 9  # virama
                    and unicodedata.category(c) == "Lo"
                    and unicodedata.category(last[0]) == "Lo"
                )
                or (0x1160 <= cp <= 0x11FF and 0x1100 <= ord(prev) <= 0x11FF)
            ):
                clusters[-1] = last + c
                continue
        clusters.append(c)
    return clusters


def _is_emoji_cluster(cluster: str) -> bool:
    if _VS15 in cluster:
        return False
    return (
        _is_emoji_base(cluster[0])
        or _VS16 in cluster
        or _KEYCAP in cluster
        or any(0x1F3FB <= ord(c) <= 0x1F3FF for c in cluster)
        or (_ZWJ in cluster and _is_pictographic(cluster[0]))
    )


def _bidi_levels(text: str) -> list[int]:
    """Embedding levels of `text` as one paragraph by the Unicode bidi algorithm (UAX #9),
    rules P2-P3, W1-W7, N1-N2, I1-I2: the implicit part, as _clean() leaves no explicit
    embeddings, overrides or isolates. The paragraph direction is its first strong character's."""
    types = [unicodedata.bidirectional(c) or "ON" for c in text]
    para = 0
    for t in types:
        if t in ("L", "R", "AL"):
            para = 0 if t == "L" else 1
            break
    sos = "R" if para else "L"
    n = len(types)
    for i, t in enumerate(types):  # W1 (and X9: BN, i.e. ZWJ, goes with what it follows)
        if t in ("NSM", "BN"):
            types[i] = types[i - 1] if i else sos
    strong = sos
    for i, t in enumerate(types):  # W2, W3
        if t in ("L", "R", "AL"):
            strong = t
            if t == "AL":
                types[i] = "R"
        elif t == "EN" and strong == "AL":
            types[i] = "AN"
    for i in range(1, n - 1):  # W4
        a, t, b = types[i - 1], types[i], types[i + 1]
        if (t == "ES" and a == b == "EN") or (t == "CS" and a == b and a in ("EN", "AN")):
            types[i] = a
    i = 0
    while i < n:  # W5
        if types[i] == "ET":
            j = i
            while j < n and types[j] == "ET":
                j += 1
            if (i and types[i - 1] == "EN") or (j < n and types[j] == "EN"):
                types[i:j] = ["EN"] * (j - i)
            i = j
        else:
            i += 1
    types = ["ON" if t in ("ES", "ET", "CS") else t for t in types]  # W6
    strong = sos
    for i, t in enumerate(types):  # W7
        if t in ("L", "R"):
            strong = t
        elif t == "EN" and strong == "L":
            types[i] = "L"
    i = 0
    while i < n:  # N1, N2
        if types[i] in ("L", "R", "EN", "AN"):
            i += 1
            continue
        j = i
        while j < n and types[j] not in ("L", "R", "EN", "AN"):
            j += 1
        before = sos if i == 0 else ("L" if types[i - 1] == "L" else "R")
        after = sos if j == n else ("L" if types[j] == "L" else "R")
        types[i:j] = [before if before == after else sos] * (j - i)
        i = j
    if para == 0:  # I1
        return [0 if t == "L" else 2 if t in ("EN", "AN") else 1 for t in types]
    return [1 if t == "R" else 2 for t in types]  # I2


# Fonts


class _Face(NamedTuple):
    """One font face: a file and the face's number in it (None: Pillow's built-in font)."""

    path: str | None
    number: int
    emoji: bool


class _Coverage:
    """The code points a face has glyphs for, as sorted disjoint ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = [r[0] for r in merged]
        self._ends = [r[1] for r in merged]

    def __contains__(self, c: str) -> bool:
        cp = ord(c)
        i = bisect.bisect_right(self._starts, cp) - 1
        return i >= 0 and cp <= self._ends[i]


def _cmap_ranges(data: bytes) -> list[tuple[int, int]]:
    """The mapped code points of a ``cmap`` table: its Unicode format 12 subtable if it has one,
    else its format 4 one (OpenType spec, cmap). Glyph 0 (.notdef) is not a glyph."""

    def u16(off: int) -> int:
        return int(struct.unpack_from(">H", data, off)[0])

    subtables: dict[tuple[int, int, int], int] = {}
    for i in range(u16(2)):
        pid, eid, off = struct.unpack_from(">HHI", data, 4 + 8 * i)
        subtables[pid, eid, u16(off)] = off
    for key in ((3, 10, 12), (0, 6, 12), (0, 4, 12)):
        if key in subtables:
            off = subtables[key]
            (count,) = struct.unpack_from(">I", data, off + 12)
            groups = np.frombuffer(data, ">u4", 3 * count, off + 16).reshape(count, 3)
            return [
                (int(lo) + (g == 0), int(hi))
                for lo, hi, g in groups.tolist()
                if hi >= lo + (g == 0)
            ]
    for key in ((3, 1, 4), (0, 3, 4), (0, 4, 4), (0, 1, 4), (0, 0, 4), (3, 0, 4)):
        if key in subtables:
            return _format4_ranges(data, subtables[key])
    raise ValueError("no Unicode cmap subtable of format 4 or 12")


def _format4_ranges(data: bytes, off: int) -> list[tuple[int, int]]:
    segs = struct.unpack_from(">H", data, off + 6)[0] // 2
    arrays = off + 14
    end = np.frombuffer(data, ">u2", segs, arrays).astype(np.int64)
    start = np.frombuffer(data, ">u2", segs, arrays + 2 * segs + 2).astype(np.int64)
    delta = np.frombuffer(data, ">u2", segs, arrays + 4 * segs + 2).astype(np.int64)
    range_at = arrays + 6 * segs + 2
    range_off = np.frombuffer(data, ">u2", segs, range_at).astype(np.int64)
    words = np.frombuffer(data, ">u2", (len(data) - off) // 2, off).astype(np.int64)
    mapped = np.zeros(0x10000, bool)
    for k in range(segs):
        lo, hi = int(start[k]), int(end[k])
        if hi < lo:
            continue
        cps = np.arange(lo, hi + 1)
        if range_off[k] == 0:
            glyphs = (cps + delta[k]) & 0xFFFF
        else:  # glyphIdArray, addressed from the idRangeOffset word itself
            at = (range_at + 2 * k + int(range_off[k]) + 2 * (cps - lo) - off) // 2
            glyphs = np.where(at < words.size, words[np.minimum(at, words.size - 1)], 0)
            glyphs = np.where(glyphs != 0, (glyphs + delta[k]) & 0xFFFF, 0)
        mapped[lo : hi + 1] |= glyphs != 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mapped.view(np.int8), [0]))))
    return [(int(a), int(b) - 1) for a, b in edges.reshape(-1, 2).tolist()]


@cache
def _coverage(face: _Face) -> _Coverage | None:
    """The face's coverage from its cmap table; None if it cannot be read (then the face is
    taken to have every glyph: it is the caller's own font or the built-in one)."""
    if face.path is None:
        return None
    try:
        with open(face.path, "rb") as f:
            head = f.read(12)
            if head[:4] == b"ttcf":
                f.seek(12 + 4 * face.number)
                f.seek(struct.unpack(">I", f.read(4))[0])
                head = f.read(12)
            (count,) = struct.unpack_from(">H", head, 4)
            records = f.read(16 * count)
            for i in range(count):
                tag, _, table, length = struct.unpack_from(">4sIII", records, 16 * i)
                if tag == b"cmap":
                    f.seek(table)
                    return _Coverage(_cmap_ranges(f.read(length)))
        raise ValueError("no cmap table")
    except (OSError, ValueError, struct.error) as exc:
        logger.warning("cannot read which glyphs %s has (%s); using it for every character",
                       face.path, exc)  # fmt: skip
        return None


def _fc_list(family: str, style: str) -> tuple[str, int] | None:
    """The file and face index fontconfig has for `family` in `style`, if any."""
    try:
        out = subprocess.run(
            ["fc-list", "--format", "%{file}\t%{index}\n", f"{family}:style={style}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in sorted(out.splitlines()):
        path, _, index = line.partition("\t")
        if path and index.isdigit():
            return path, int(index)
    return None


@cache
def _find(role: str, bold: bool) -> _Face | None:
    """The face for `role`: its Debian path, else what fontconfig finds; None when missing."""
    family, regular, bold_path, index = _FAMILIES[role]
    path = bold_path if bold else regular
    if Path(path).is_file():
        return _Face(path, index, role == "emoji")
    found = _fc_list(family, "Bold" if bold and role != "emoji" else "Regular")
    if found is None and bold:
        return _find(role, False)
    if found is None:
        logger.warning("no %s font (%s): such names may draw as boxes", role, family)
        return None
    return _Face(found[0], found[1], role == "emoji")


def _cjk_role(text: str) -> str:
    """The CJK face for the name's language: Japanese with kana, Korean with Hangul, else
    Simplified Chinese (the shapes of shared ideographs differ between them)."""
    for c in text:
        cp = ord(c)
        if 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
            return "cjk-jp"
        if 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
            return "cjk-kr"
    return "cjk-sc"


@lru_cache(maxsize=64)
def _chain(font_path: str | None, bold: bool, cjk: str) -> tuple[_Face, ...]:
    """The faces tried in order, the first of them the primary (its metrics size the line, and
    a character no face has is drawn as its missing-glyph box)."""
    faces: list[_Face] = []
    if font_path is not None:
        if not Path(font_path).is_file():
            raise ComposeError(f"font {font_path!r} does not exist")
        faces.append(_Face(font_path, 0, False))
    primary = _find("latin", bold) or _find("dejavu", bold)
    if primary is not None and not faces:
        faces.append(primary)
    for role in _CHAIN:
        face = _find(cjk if role == "cjk" else role, bold)
        if face is not None and face not in faces:
            faces.append(face)
    return tuple(faces) or (_Face(None, 0, False),)


def _freetype(face: _Face, size: int) -> Font:
    """The face at `size` pixels (an emoji face at its bitmap size); the caller holds
    _render_lock."""
    return _load(face, _EMOJI_STRIKE if face.emoji else size)


@lru_cache(maxsize=64)
def _load(face: _Face, size: int) -> Font:
    if face.path is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(face.path, size, face.number)
    except OSError:
        raise ComposeError(f"cannot load font {face.path!r}") from None


# Lines


class _Run(NamedTuple):
    text: str
    face: _Face
    rtl: bool


class _Line(NamedTuple):
    """A line of text ready to draw: runs in visual order, at one size."""

    text: str
    runs: tuple[_Run, ...]
    size: int
    primary: Font

    def run_width(self, run: _Run) -> float:
        font = _freetype(run.face, self.size)
        text, direction = _shaping(font, run)
        scale = self.size / _EMOJI_STRIKE if run.face.emoji else 1.0
        return float(font.getlength(text, direction=direction)) * scale

    @property
    def width(self) -> float:
        return sum(self.run_width(r) for r in self.runs)


def _shaping(font: Font, run: _Run) -> tuple[str, str | None]:
    """The run's text and direction for Pillow: raqm shapes it in its direction; without raqm
    (Pillow's built-in font) its clusters are put in visual order by hand, unshaped."""
    if isinstance(font, ImageFont.FreeTypeFont) and font.layout_engine == ImageFont.Layout.RAQM:
        return run.text, "rtl" if run.rtl else "ltr"
    return ("".join(reversed(_graphemes(run.text))) if run.rtl else run.text), None


def _metrics(font: Font) -> tuple[int, int]:
    """(ascent, descent) of the font's lines, the same for every text."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return font.getmetrics()
    bbox = font.getbbox("Ag")
    return int(bbox[3]), 0


def _face_for(cluster: str, chain: Sequence[_Face], previous: _Face | None) -> _Face:
    """The face to draw `cluster` with: an emoji in the emoji face; punctuation, digits and
    spaces in the face before them when it has them (no font switch inside a word); else the
    first face with all of the cluster's glyphs, the first with its base character, the
    primary one."""
    needed = [c for c in cluster if c not in (_ZWJ, _ZWNJ) and not _is_variation_selector(c)]
    needed = [c for c in needed if not 0xE0020 <= ord(c) <= 0xE007F] or [cluster[0]]

    def has(face: _Face, chars: Sequence[str]) -> bool:
        coverage = _coverage(face)
        return coverage is None or all(c in coverage for c in chars)

    if _is_emoji_cluster(cluster):
        for face in chain:
            if face.emoji and has(face, needed[:1]):
                return face
    text_faces = [f for f in chain if not f.emoji] or list(chain)
    if previous is not None and not unicodedata.category(needed[0]).startswith("L"):
        if has(previous, needed) and not previous.emoji:
            return previous
    for chars in (needed, needed[:1]):
        for face in text_faces:
            if has(face, chars):
                return face
    return chain[0]


def _line(text: str, size: int, font_path: str | None, bold: bool = False) -> _Line:
    """`text` (cleaned) laid out at `size` pixels; the caller holds _render_lock."""
    chain = _chain(font_path, bold, _cjk_role(text))
    primary = _freetype(chain[0], size)
    if not text:
        return _Line(text, (), size, primary)
    levels = _bidi_levels(text)
    items: list[tuple[int, _Face, list[str]]] = []  # (level, face, clusters) in logical order
    at = 0
    previous: _Face | None = None
    for cluster in _graphemes(text):
        face, level = _face_for(cluster, chain, previous), levels[at]
        at += len(cluster)
        previous = face
        if items and items[-1][0] == level and items[-1][1] == face:
            items[-1][2].append(cluster)
        else:
            items.append((level, face, [cluster]))
    # L2: from the highest level down to the lowest odd one, reverse every run at or above it
    order = list(range(len(items)))
    top = max(item[0] for item in items)
    lowest_odd = min((item[0] for item in items if item[0] % 2), default=top + 1)
    for level in range(top, lowest_odd - 1, -1):
        i = 0
        while i < len(order):
            if items[order[i]][0] >= level:
                j = i
                while j < len(order) and items[order[j]][0] >= level:
                    j += 1
                order[i:j] = order[i:j][::-1]
                i = j
            else:
                i += 1
    runs = tuple(_Run("".join(items[k][2]), items[k][1], items[k][0] % 2 == 1) for k in order)
    return _Line(text, runs, size, primary)


class _Raster(NamedTuple):
    """A drawn line: text coverage, and the emoji layer (alpha, premultiplied RGB 0..255)."""

    text: FloatArray
    emoji_alpha: FloatArray | None
    emoji_rgb: FloatArray | None


def _raster(line: _Line, width: int, height: int, x: float, baseline: float) -> _Raster:
    """`line` drawn from pen position (x, baseline) on a width x height canvas (what falls
    outside is cut off); the caller holds _render_lock."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    alpha: FloatArray | None = None
    rgb: FloatArray | None = None
    for run in line.runs:
        advance = line.run_width(run)
        font = _freetype(run.face, line.size)
        text, direction = _shaping(font, run)
        if not run.face.emoji:
            if isinstance(font, ImageFont.FreeTypeFont):
                draw.text((x, baseline), text, 255, font, "ls", direction=direction)
            else:
                draw.text((x, baseline - _metrics(font)[0]), text, 255, font)
        else:
            layer = _emoji_layer(font, text, direction, line.size / _EMOJI_STRIKE)
            ascent = _metrics(font)[0] * line.size / _EMOJI_STRIKE
            if alpha is None or rgb is None:
                alpha = np.zeros((height, width), np.float32)
                rgb = np.zeros((height, width, 3), np.float32)
            _paste_over(layer, round(x), round(baseline - ascent), alpha, rgb)
        x += advance
    return _Raster(np.asarray(image, dtype=np.float32) / 255, alpha, rgb)


def _emoji_layer(font: Font, text: str, direction: str | None, scale: float) -> FloatArray:
    """Colour emoji drawn at the font's bitmap size and scaled by `scale`: (h, w, 4) RGBA,
    colour premultiplied by alpha, all 0..255."""
    ascent, descent = _metrics(font)
    w = max(1, math.ceil(font.getlength(text, direction=direction)))
    big = Image.new("RGBA", (w, ascent + descent), (0, 0, 0, 0))
    ImageDraw.Draw(big).text(
        (0, ascent), text, font=font, anchor="ls", direction=direction, embedded_color=True
    )
    size = (max(1, round(big.width * scale)), max(1, round(big.height * scale)))
    small = np.asarray(big.resize(size, Image.Resampling.BOX), dtype=np.float32)
    small[..., :3] *= small[..., 3:] / 255
    return small


def _paste_over(layer: FloatArray, x: int, y: int, alpha: FloatArray, rgb: FloatArray) -> None:
    """Composite a premultiplied RGBA `layer` over (alpha, rgb) with its top-left at (x, y)."""
    h, w = alpha.shape
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + layer.shape[1]), min(h, y + layer.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    part = layer[y0 - y : y1 - y, x0 - x : x1 - x]
    a = part[..., 3] / 255
    alpha[y0:y1, x0:x1] = a + alpha[y0:y1, x0:x1] * (1 - a)
    rgb[y0:y1, x0:x1] = part[..., :3] + rgb[y0:y1, x0:x1] * (1 - a[..., None])


def _coverage_mask(raster: _Raster) -> npt.NDArray[np.uint8]:
    """The raster as one 8-bit coverage mask: text as drawn, emoji as shading (at least
    _EMOJI_FLOOR of their alpha, the rest by their BT.709 luma) over it."""
    cover = raster.text * 255
    if raster.emoji_alpha is not None and raster.emoji_rgb is not None:
        a = raster.emoji_alpha
        luma = raster.emoji_rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
        cover = cover * (1 - a) + _EMOJI_FLOOR * 255 * a + (1 - _EMOJI_FLOOR) * luma
    return np.clip(np.rint(cover), 0, 255).astype(np.uint8)


# Labels


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


def _ellipsize(text: str, size: int, font_path: str | None, limit: float) -> _Line:
    """`text` laid out, or its longest prefix of whole grapheme clusters followed by "…" that is
    at most `limit` pixels wide (an empty line if not even "…" fits). A name of more than
    _MAX_CLUSTERS clusters is cut at the last of them at least, however wide the tile."""
    clusters = _graphemes(text)
    cut = len(clusters) > _MAX_CLUSTERS
    if not cut:
        line = _line(text, size, font_path)
        if line.width <= limit:
            return line
    del clusters[_MAX_CLUSTERS:]
    # clusters[:lo] + "…" fits; clusters[:hi] + "…" does not, or hi is past the cut
    lo, hi = 0, len(clusters) + cut
    best = _line(ELLIPSIS, size, font_path)
    if best.width > limit:
        return _line("", size, font_path)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = _line("".join(clusters[:mid]).rstrip() + ELLIPSIS, size, font_path)
        if candidate.width <= limit:
            lo, best = mid, candidate
        else:
            hi = mid
    return best


def _readonly(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    a.flags.writeable = False
    return a


def label_font_size(tile_height: int) -> int:
    """The label's font size in pixels for a tile `tile_height` pixels high: 11 px on a 90-pixel
    strip tile, 17 on 360, 25 on 720, 33 on 1080, at most 48."""
    return min(48, round(9 + tile_height / 45))


class _Layout(NamedTuple):
    line: _Line  # the name as drawn, empty for no label
    margin: int  # from the tile's left and bottom edges to the box
    pad_x: int  # inside the box, left and right of the text
    pad_y: int  # inside the box, above the ascender and below the descender
    ascent: int
    box_w: int
    box_h: int


def _layout(name: str, tile_width: int, tile_height: int, font_path: str | None) -> _Layout:
    """Where a label goes; the caller holds _render_lock."""
    size = label_font_size(tile_height)
    margin = max(2, round(size * 0.4))
    pad_x, pad_y = max(3, round(size * 0.45)), max(1, round(size * 0.15))
    line = _line("", size, font_path)
    ascent, descent = _metrics(line.primary)
    box_h = ascent + descent + 2 * pad_y
    if name and box_h <= tile_height:  # else no room for legible text
        line = _ellipsize(name, size, font_path, tile_width - 2 * margin - 2 * pad_x)
    box_w = min(round(line.width) + 2 * pad_x, tile_width - 2 * margin)
    return _Layout(line, margin, pad_x, pad_y, ascent, box_w, box_h)


def label_text(
    name: str, tile_width: int, tile_height: int, *, font_path: str | None = None
) -> str:
    """The text name_label() draws for `name` on such a tile, in logical order: the name cleaned
    (no control or bidi formatting characters, whitespace runs as one space), cut at a grapheme
    boundary to fit and ending with "…" when it is too wide; "" when nothing is drawn (an empty
    name, one of control characters only, or a tile too small for a legible label)."""
    _check_size(tile_width, tile_height, "tile")
    name = _clean(name)
    with _render_lock:
        return _layout(name, tile_width, tile_height, font_path).line.text


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
    cut and ends with "…" (``label_text`` tells what is drawn). A name with nothing drawable in
    it (only control characters) gets no label, as an empty name does. `font_path` names a font
    tried before the built-in chain. Overlay positions are relative to the tile and the masks
    are read-only. The same arguments give back the same NameLabel and Overlay objects (an LRU
    cache of 256 labels).
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
        if not lay.line.text:
            empty = _readonly(np.zeros((0, 0), np.uint8))
            return NameLabel(
                Overlay(empty, 0, 0, box_color, box_opacity), Overlay(empty, 0, 0, text_color, 1.0)
            )
        raster = _raster(lay.line, lay.box_w, lay.box_h, lay.pad_x, lay.pad_y + lay.ascent)
    text_mask = _coverage_mask(raster)
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


# Placeholders


def initials(name: str) -> str:
    """What a placeholder shows for `name`: the first grapheme with a letter or digit of each of
    the first two words, uppercase ("Ada Lovelace" → "AL", "linus" → "L", "  jean-luc  picard "
    → "JP"); one only when it is a wide (CJK) character ("李小龙" → "李", "김 민준" → "김");
    two Arabic initials kept apart by a ZWNJ, so each is drawn on its own, not joined; the
    first emoji of a name without letters ("🦊" → "🦊"); "?" when there is none of these."""
    clusters: list[str] = []
    words = _clean(name).split(" ")
    for word in words:
        for cluster in _graphemes(word):
            if cluster[0].isalnum() and not _is_emoji_cluster(cluster):
                clusters.append(unicodedata.normalize("NFC", cluster.upper()))
                break
        if len(clusters) == 2 or (
            clusters and unicodedata.east_asian_width(clusters[0][0]) in "WF"
        ):
            break
    if not clusters:
        emoji = [g for w in words for g in _graphemes(w) if _is_emoji_cluster(g)]
        return emoji[0] if emoji else "?"
    if len(clusters) == 2 and unicodedata.east_asian_width(clusters[1][0]) in "WF":
        clusters.pop()
    joiner = _ZWNJ if any(unicodedata.bidirectional(g[0]) == "AL" for g in clusters) else ""
    return joiner.join(clusters)


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
    white (an emoji in its colours), centred on a circle of ``placeholder_color(name)`` over a
    darker shade of it.

    Returns read-only (Y, U, V) planes, usable as a Tile source; the same arguments give back
    the same arrays (an LRU cache of 32 pictures). Width and height must be even.
    """
    _check_size(width, height, "placeholder")
    if width % 2 or height % 2:
        raise ComposeError(f"placeholder size {width}x{height} must be even (yuv420p)")
    rgb_to_yuv((0, 0, 0), matrix)  # rejects an unknown matrix
    return _placeholder(_clean(name), width, height, matrix, font_path)


def _premultiplied_yuv(rgb: FloatArray, alpha: FloatArray, matrix: Matrix) -> list[FloatArray]:
    """Limited-range Y, Cb, Cr of premultiplied RGB (0..255), premultiplied by `alpha`: the
    formula of color.rgb_to_yuv per pixel, unrounded."""
    kr, kb = _KR_KB[matrix]
    r, g, b = (rgb[..., k] / 255 for k in range(3))
    ey = kr * r + (1.0 - kr - kb) * g + kb * b
    cb = (b - ey) / (2.0 * (1.0 - kb))
    cr = (r - ey) / (2.0 * (1.0 - kr))
    return [16 * alpha + 219 * ey, 128 * alpha + 224 * cb, 128 * alpha + 224 * cr]


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
    size = max(6, round(diameter * (0.36 if len(_graphemes(text)) > 1 else 0.42)))
    with _render_lock:
        line = _line(text, size, font_path, bold=True)
        ascent, descent = _metrics(line.primary)
        # the line's middle, both ways, at the centre
        raster = _raster(line, width, height, cx - line.width / 2, cy + (ascent - descent) / 2)

    background = rgb_to_yuv(background_rgb, matrix)
    disc = rgb_to_yuv(circle_rgb, matrix)
    ink = rgb_to_yuv((255, 255, 255), matrix)
    emoji = None
    if raster.emoji_alpha is not None and raster.emoji_rgb is not None:
        emoji = raster.emoji_alpha, _premultiplied_yuv(raster.emoji_rgb, raster.emoji_alpha, matrix)
    planes = []
    for k in range(3):
        p = background[k] + circle * (disc[k] - background[k])
        p += raster.text * (ink[k] - p)
        if emoji is not None:
            p = p * (1 - emoji[0]) + emoji[1][k]
        if k:  # chroma: the mean of each 2x2 block
            p = p.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
        planes.append(_readonly(np.clip(np.rint(p), 0, 255).astype(np.uint8)))
    return planes[0], planes[1], planes[2]
