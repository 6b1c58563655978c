"""Layouts: exact rectangles worked out by hand, geometric properties over many participant
counts, the active-speaker hysteresis, and custom layout files with their error paths.

Hand calculations for the grid use the rule in docs/layouts.md: for c columns and r rows a cell is
floor_even((W - (c+1) gap) / c) x floor_even((H - (r+1) gap) / r); a contain tile is the
source-aspect rectangle in the cell, the limited side full and the other rounded to even.
"""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skymix.compose.video import Rect
from skymix.errors import ComposeError, DescriptionError
from skymix.layout import (
    CustomSpec,
    GridSpec,
    Layout,
    LayoutSpec,
    Participant,
    PipSpec,
    Region,
    SpeakerSpec,
    compute_layout,
    layout_json_schema,
    load_custom_layout,
    parse_custom_layout,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
HD = (1280, 720)
MS = 1_000_000


def people(n: int) -> list[tuple[str, bool]]:
    return [(f"p{i}", True) for i in range(n)]


def rects(layout: Layout) -> list[tuple[int, int, int, int]]:
    return [(p.rect.x, p.rect.y, p.rect.w, p.rect.h) for p in layout.placements]


def row(y: int, w: int, h: int, *xs: int) -> list[tuple[int, int, int, int]]:
    return [(x, y, w, h) for x in xs]


# --- grid: by hand ---------------------------------------------------------------------------

GRID_GAP0 = {
    1: [(0, 0, 1280, 720)],
    # 1x2 and 2x1 both give 640x360; a landscape canvas prefers columns.
    2: row(180, 640, 360, 0, 640),
    3: row(0, 640, 360, 0, 640) + row(360, 640, 360, 320),
    4: row(0, 640, 360, 0, 640) + row(360, 640, 360, 0, 640),
    # 3 columns: cell 426x360 -> 426x240 (239.6 rounded to even); 2 columns x 3 rows ties at
    # 426x240 with as many empty cells, and columns win. The block is 1278 wide: x from 0.
    5: row(120, 426, 240, 0, 426, 852) + row(360, 426, 240, 214, 640),
    7: (row(0, 426, 240, 0, 426, 852) + row(240, 426, 240, 0, 426, 852) + row(480, 426, 240, 426)),
    9: (
        row(0, 426, 240, 0, 426, 852)
        + row(240, 426, 240, 0, 426, 852)
        + row(480, 426, 240, 0, 426, 852)
    ),
    16: [r for y in (0, 180, 360, 540) for r in row(y, 320, 180, 0, 320, 640, 960)],
}

GRID_GAP8 = {
    # cell 1264x704: height limits, 704 * 16/9 = 1251.6 -> 1252; x = (1280 - 1252) / 2 = 14.
    1: [(14, 8, 1252, 704)],
    # 2 columns: cell 628x704 -> 628x354 (353.25); 2 rows: cell 1264x348 -> 618x348: smaller.
    2: row(182, 628, 354, 8, 644),
    # 2x2: cell 628x348 -> 618x348 (618.7); rows 1244 wide from 18; last row from 331 -> 330.
    3: row(8, 618, 348, 18, 644) + row(364, 618, 348, 330),
    4: row(8, 618, 348, 18, 644) + row(364, 618, 348, 18, 644),
    # 3x2: cell 416x348 -> 416x234; 2x3: cell 628x228 -> 406x228: smaller.
    5: row(122, 416, 234, 8, 432, 856) + row(364, 416, 234, 220, 644),
    # 3x3: cell 416x228 -> 406x228 (405.3); block 1234 x 700 from (23 -> 22, 10).
    7: (
        row(10, 406, 228, 22, 436, 850) + row(246, 406, 228, 22, 436, 850) + row(482, 406, 228, 436)
    ),
    9: (
        row(10, 406, 228, 22, 436, 850)
        + row(246, 406, 228, 22, 436, 850)
        + row(482, 406, 228, 22, 436, 850)
    ),
    # 4x4: cell 310x170 -> 302x170 (302.2); block 1232 x 704 from (24, 8).
    16: [r for y in (8, 186, 364, 542) for r in row(y, 302, 170, 24, 334, 644, 954)],
}


@pytest.mark.parametrize(("gap", "n"), [(0, n) for n in GRID_GAP0] + [(8, n) for n in GRID_GAP8])
def test_grid_by_hand(gap: int, n: int) -> None:
    want = (GRID_GAP0 if gap == 0 else GRID_GAP8)[n]
    layout = compute_layout(HD, people(n), None, GridSpec(gap=gap))
    assert rects(layout) == want
    assert [p.id for p in layout.placements] == [f"p{i}" for i in range(n)]
    assert layout.hidden == ()


def test_grid_no_participants() -> None:
    assert compute_layout(HD, [], None, GridSpec()) == Layout((), ())


def test_grid_cover_fills_cells() -> None:
    one = compute_layout(HD, people(1), None, GridSpec(gap=8, fit="cover"))
    assert rects(one) == [(8, 8, 1264, 704)]  # the full canvas minus the gap
    five = compute_layout(HD, people(5), None, GridSpec(fit="cover"))
    assert rects(five) == row(0, 426, 360, 0, 426, 852) + row(360, 426, 360, 214, 640)
    assert {p.fit for p in five.placements} == {"cover"}


def test_grid_ties_follow_the_canvas_orientation() -> None:
    # Portrait sources on a portrait canvas: 1 column x 2 rows and 2 x 1 both give 360x640.
    spec = GridSpec(aspect=(9, 16))
    assert rects(compute_layout((720, 1280), people(2), None, spec)) == [
        (180, 0, 360, 640),
        (180, 640, 360, 640),
    ]
    # The same on a landscape canvas: side by side.
    assert rects(compute_layout((1280, 720), people(2), None, GridSpec(aspect=(4, 3)))) == [
        (0, 120, 640, 480),
        (640, 120, 640, 480),
    ]


def test_grid_ties_prefer_fewer_empty_cells() -> None:
    # 2560x720, 5 tiles: 3 and 4 columns (2 rows) both give 640x360 (the height limits); 3
    # columns leave one cell empty, 4 three: 3 + 2 it is, though the canvas is landscape.
    layout = compute_layout((2560, 720), people(5), None, GridSpec())
    assert rects(layout) == row(0, 640, 360, 320, 960, 1600) + row(360, 640, 360, 640, 1280)


def test_grid_without_video_keeps_a_tile_unless_video_only() -> None:
    present: list[Participant | tuple[str, bool]] = [("a", True), ("b", False), Participant("c")]
    layout = compute_layout(HD, present, None, GridSpec())
    assert [(p.id, p.has_video) for p in layout.placements] == [
        ("a", True),
        ("b", False),
        ("c", True),
    ]
    only = compute_layout(HD, present, None, GridSpec(video_only=True))
    assert [p.id for p in only.placements] == ["a", "c"]
    assert only.hidden == ("b",)
    assert rects(only) == GRID_GAP0[2]


def test_grid_highlights_the_active_speaker_only() -> None:
    layout = compute_layout(HD, people(3), "p1", GridSpec())
    assert [p.speaker for p in layout.placements] == [False, True, False]
    absent = compute_layout(HD, people(3), "gone", GridSpec())
    assert not any(p.speaker for p in absent.placements)


@pytest.mark.parametrize("canvas", [(1281, 720), (1280, 0), (0, 0), (1280.0, 720), (1280,)])
def test_bad_canvas(canvas: Any) -> None:
    with pytest.raises(ComposeError, match="canvas"):
        compute_layout(canvas, people(1), None, GridSpec())


def test_bad_arguments() -> None:
    with pytest.raises(ComposeError, match="participant must be"):
        compute_layout(HD, [("a", True, 3)], None, GridSpec())  # type: ignore[list-item]
    with pytest.raises(ComposeError, match="participant must be"):
        compute_layout(HD, [("a", 1)], None, GridSpec())  # type: ignore[list-item]
    with pytest.raises(ComposeError, match="listed twice"):
        compute_layout(HD, [("a", True), ("a", False)], None, GridSpec())
    with pytest.raises(ComposeError, match="gap must be an even number"):
        GridSpec(gap=5)
    with pytest.raises(ComposeError, match="aspect"):
        GridSpec(aspect=(16, 0))
    with pytest.raises(ComposeError, match="fit"):
        GridSpec(fit="stretch")  # type: ignore[arg-type]
    with pytest.raises(ComposeError, match="background"):
        GridSpec(background=(0, 0, 256))
    with pytest.raises(ComposeError, match="strip_size"):
        SpeakerSpec(strip_size=0.6)
    with pytest.raises(ComposeError, match="corner"):
        PipSpec(corner="middle")  # type: ignore[arg-type]
    with pytest.raises(ComposeError, match="margin"):
        PipSpec(margin=3)


# --- grid: properties ------------------------------------------------------------------------


def cell_tile(
    n: int, rows: int, cols: int, w: int, h: int, gap: int, aspect: tuple[int, int]
) -> tuple[int, int]:
    """The contain tile of a rows x cols grid, written from the rule in docs/layouts.md."""
    cw = max(0, (w - (cols + 1) * gap) // cols // 2 * 2)
    ch = max(0, (h - (rows + 1) * gap) // rows // 2 * 2)
    if cw == 0 or ch == 0:
        return 0, 0
    aw, ah = aspect
    exact_h = Fraction(cw * ah, aw)
    if exact_h <= ch:  # the width limits; the height is rounded to even, halves up
        return cw, min(ch, 2 * math.floor(exact_h / 2 + Fraction(1, 2)))
    exact_w = Fraction(ch * aw, ah)
    return min(cw, 2 * math.floor(exact_w / 2 + Fraction(1, 2))), ch


def ideal_area(n: int, w: int, h: int, gap: int, aspect: tuple[int, int]) -> Fraction:
    """The largest contain tile area over all grids, in real (unrounded) pixels."""
    a = Fraction(*aspect)
    best = Fraction(0)
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        cw, ch = Fraction(w - (cols + 1) * gap, cols), Fraction(h - (rows + 1) * gap, rows)
        tw = max(Fraction(0), min(cw, ch * a))
        best = max(best, tw * tw / a)
    return best


def overlap(a: Rect, b: Rect) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def check_tiles(layout: Layout, width: int, height: int) -> None:
    """Inside the canvas, even, and (within one z) not overlapping."""
    for p in layout.placements:
        r = p.rect
        assert r.x % 2 == r.y % 2 == r.w % 2 == r.h % 2 == 0, r
        assert 0 <= r.x and 0 <= r.y and r.x + r.w <= width and r.y + r.h <= height, r
    for p, q in itertools.combinations(layout.placements, 2):
        if p.z == q.z:
            assert not overlap(p.rect, q.rect), (p, q)


canvases = st.tuples(st.integers(160, 960), st.integers(120, 540)).map(
    lambda s: (2 * s[0], 2 * s[1])
)
aspects = st.sampled_from([(16, 9), (4, 3), (1, 1), (9, 16), (21, 9)])


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 49),
    canvas=canvases,
    gap=st.integers(0, 8).map(lambda g: 2 * g),
    aspect=aspects,
    fit=st.sampled_from(["contain", "cover"]),
)
def test_grid_properties(
    n: int, canvas: tuple[int, int], gap: int, aspect: tuple[int, int], fit: Any
) -> None:
    width, height = canvas
    layout = compute_layout(canvas, people(n), None, GridSpec(gap=gap, aspect=aspect, fit=fit))
    assert len(layout.placements) == n and layout.hidden == ()
    check_tiles(layout, width, height)
    sizes = {(p.rect.w, p.rect.h) for p in layout.placements}
    assert len(sizes) == 1
    tw, th = sizes.pop()
    rows: dict[int, list[Rect]] = {}
    for p in layout.placements:
        rows.setdefault(p.rect.y, []).append(p.rect)
    ys = sorted(rows)
    cols = len(rows[ys[0]])
    # Full rows then one possibly shorter last row; rows and the block centred (floor to even).
    assert [len(rows[y]) for y in ys] == [cols] * (len(ys) - 1) + [n - cols * (len(ys) - 1)]
    for y in ys:
        line = sorted(rows[y], key=lambda r: r.x)
        assert all(b.x - (a.x + a.w) == gap for a, b in zip(line, line[1:]))
        left, right = line[0].x, width - (line[-1].x + line[-1].w)
        assert left >= gap and 0 <= right - left <= 2
    top, bottom = ys[0], height - (ys[-1] + th)
    assert top >= gap and 0 <= bottom - top <= 2
    assert all(b - a == th + gap for a, b in zip(ys, ys[1:]))
    if fit == "contain":
        # As large as any other choice of rows and columns, by the same rounding...
        area = tw * th
        for c in range(1, n + 1):
            for r in range(-(-n // c), n + 1):
                ow, oh = cell_tile(n, r, c, width, height, gap, aspect)
                assert area >= ow * oh, (r, c)
        # ... and, within rounding, as large as the unrounded best.
        if area:
            assert (tw + 8) * (th + 8) >= ideal_area(n, width, height, gap, aspect)
        # The tile keeps the source aspect, within the rounding of a side to even pixels.
        aw, ah = aspect
        assert abs(tw * ah - th * aw) <= 2 * max(aw, ah)


# --- speaker ---------------------------------------------------------------------------------


def test_speaker_bottom_strip_by_hand() -> None:
    # Strip 144 high (0.2 x 720): tiles 256x144, 3 of them centred from 256. Main area
    # 1280x576: the contain tile is 1024x576 from x 128.
    layout = compute_layout(HD, people(4), "p2", SpeakerSpec())
    assert [(p.id, p.speaker) for p in layout.placements] == [
        ("p2", True),
        ("p0", False),
        ("p1", False),
        ("p3", False),
    ]
    assert rects(layout) == [(128, 0, 1024, 576)] + row(576, 256, 144, 256, 512, 768)


def test_speaker_right_strip_by_hand() -> None:
    # Strip 256 wide: tiles 256x144 stacked from y 144; main area 1024x720 -> 1024x576 at y 72.
    layout = compute_layout(HD, people(4), "p2", SpeakerSpec(strip="right"))
    assert rects(layout) == [
        (0, 72, 1024, 576),
        (1024, 144, 256, 144),
        (1024, 288, 256, 144),
        (1024, 432, 256, 144),
    ]


def test_speaker_gap_and_cover() -> None:
    # gap 8: strip band 568..712, main area (8, 8, 1264, 552); cover fills the main area.
    layout = compute_layout(HD, people(2), "p1", SpeakerSpec(gap=8, fit="cover"))
    assert rects(layout) == [(8, 8, 1264, 552), (512, 568, 256, 144)]


def test_speaker_strip_tiles_shrink_then_hide_the_last_joined() -> None:
    # 8 others in 1264 px with gaps: (1264 - 7*8) / 8 = 151 -> 150x84 (84.4), centred in the band.
    nine = compute_layout(HD, people(9), None, SpeakerSpec(gap=8))
    assert rects(nine)[1:] == row(598, 150, 84, *range(12, 1119, 158))
    assert nine.hidden == ()
    # 13 others would be 88 wide, under half of 256: 128x72 tiles, (1264 + 8) // 136 = 9 fit.
    fourteen = compute_layout(HD, people(14), None, SpeakerSpec(gap=8))
    assert rects(fourteen)[1:] == row(604, 128, 72, *range(32, 1121, 136))
    assert fourteen.hidden == ("p10", "p11", "p12", "p13")
    # min_scale 1: never smaller than 256x144, so 5 of 8 others fit.
    rigid = compute_layout(HD, people(9), "p8", SpeakerSpec(min_scale=1.0))
    assert [p.id for p in rigid.placements] == ["p8", "p0", "p1", "p2", "p3", "p4"]
    assert rigid.hidden == ("p5", "p6", "p7")


def test_speaker_defaults_to_the_first_and_alone_fills_the_canvas() -> None:
    layout = compute_layout(HD, people(3), None, SpeakerSpec())
    assert layout.placements[0].id == "p0" and not layout.placements[0].speaker
    alone = compute_layout(HD, people(1), "p0", SpeakerSpec(gap=8))
    assert rects(alone) == GRID_GAP8[1]
    assert compute_layout(HD, [], None, SpeakerSpec()) == Layout((), ())


def test_speaker_video_only_skips_a_speaker_without_video() -> None:
    present = [("a", True), ("b", False), ("c", True)]
    layout = compute_layout(HD, present, "b", SpeakerSpec(video_only=True))
    assert [p.id for p in layout.placements] == ["a", "c"]
    assert layout.hidden == ("b",)
    kept = compute_layout(HD, present, "b", SpeakerSpec())
    assert kept.placements[0].id == "b" and not kept.placements[0].has_video


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 49),
    canvas=canvases,
    gap=st.integers(0, 8).map(lambda g: 2 * g),
    strip=st.sampled_from(["bottom", "right"]),
    size=st.sampled_from([0.15, 0.2, 0.3]),
)
def test_speaker_properties(
    n: int, canvas: tuple[int, int], gap: int, strip: Any, size: float
) -> None:
    layout = compute_layout(
        canvas, people(n), "p0", SpeakerSpec(strip=strip, strip_size=size, gap=gap)
    )
    check_tiles(layout, *canvas)
    assert len(layout.placements) + len(layout.hidden) == n
    assert layout.placements[0].id == "p0"
    # The hidden are the last joined.
    shown = [p.id for p in layout.placements]
    assert shown + list(layout.hidden) == [f"p{i}" for i in range(n)]


# --- picture in picture ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("corner", "x", "y"),
    [
        ("top-left", 16, 16),
        ("top-right", 944, 16),
        ("bottom-left", 16, 524),
        ("bottom-right", 944, 524),
    ],
)
def test_pip_corners(corner: Any, x: int, y: int) -> None:
    # Inset 0.25 x 1280 = 320 wide, 180 high, 16 from the edges.
    layout = compute_layout(HD, people(3), "p2", PipSpec(corner=corner))
    assert [(p.id, p.z, p.speaker) for p in layout.placements] == [
        ("p2", 0, True),
        ("p0", 1, False),
    ]
    assert rects(layout) == [(0, 0, 1280, 720), (x, y, 320, 180)]
    assert layout.hidden == ("p1",)


def test_pip_main_choice_size_and_margin() -> None:
    first = compute_layout(HD, people(3), "p2", PipSpec(main="first", size=0.2, margin=0))
    assert [p.id for p in first.placements] == ["p0", "p1"]
    assert rects(first) == [(0, 0, 1280, 720), (1024, 576, 256, 144)]
    waiting = compute_layout(HD, people(2), None, PipSpec())
    assert [p.id for p in waiting.placements] == ["p0", "p1"]
    # A 4:3 canvas: the 16:9 main picture is letterboxed by its rectangle (contain).
    square = compute_layout((960, 720), people(1), None, PipSpec())
    assert rects(square) == [(0, 90, 960, 540)]
    cover = compute_layout((960, 720), people(1), None, PipSpec(fit="cover"))
    assert rects(cover) == [(0, 0, 960, 720)]


# --- change detection ------------------------------------------------------------------------


def test_layout_changes() -> None:
    spec = GridSpec()
    a = compute_layout(HD, people(3), "p0", spec)
    assert not a.changed(compute_layout(HD, people(3), "p0", spec))
    assert a.changed_ids(compute_layout(HD, people(3), "p0", spec)) == frozenset()
    assert a.changed(None) and a.changed_ids(None) == {"p0", "p1", "p2"}
    # The highlight moves: only the two concerned tiles change.
    b = compute_layout(HD, people(3), "p1", spec)
    assert b.changed(a) and b.changed_ids(a) == {"p0", "p1"}
    # Someone joins: the grid is rearranged.
    c = compute_layout(HD, people(4), "p1", spec)
    assert c.changed_ids(b) == {"p2", "p3"}  # p0 and p1 keep their 640x360 places
    # Video goes away: the tile stays but becomes a placeholder.
    d = compute_layout(HD, [("p0", True), ("p1", True), ("p2", False), ("p3", True)], "p1", spec)
    assert d.changed_ids(c) == {"p2"}
    # Only the background differs: a change, but of no tile.
    e = compute_layout(HD, people(3), "p0", GridSpec(background=(9, 9, 9)))
    assert e.changed(a) and e.changed_ids(a) == frozenset()


# --- custom layouts --------------------------------------------------------------------------

SIDEBAR: dict[str, Any] = {
    "$schema": "layout.schema.json",
    "background": "#102030",
    "gap": 8,
    "regions": [
        {
            "name": "main",
            "x": 0,
            "y": 0,
            "width": 0.75,
            "height": 1.0,
            "show": "speaker",
            "fit": "cover",
        },
        {
            "name": "side",
            "x": 0.75,
            "y": 0,
            "width": 0.25,
            "height": 1.0,
            "show": "others",
            "max_rows": 3,
            "max_cols": 1,
            "overflow": "hide",
        },
    ],
}


def with_region(**changes: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(SIDEBAR))
    data["regions"][1].update(changes)
    return data


def test_custom_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "sidebar.json"
    path.write_text(json.dumps(SIDEBAR, indent=2))
    spec = load_custom_layout(path)
    assert spec.file == str(path) and spec.gap == 8 and spec.background == (16, 32, 48)
    assert spec.regions[1] == Region(
        x=0.75,
        y=0,
        width=0.25,
        height=1.0,
        show="others",
        max_rows=3,
        max_cols=1,
        overflow="hide",
        name="side",
    )
    layout = compute_layout(HD, people(6), "p2", spec)
    # main: 0..960 less the gap, cover. side: 960..1280, 3 rows of 304x172 (171 -> 172) from
    # y (720 - 532) / 2 = 94.
    assert [(p.id, p.speaker, p.fit) for p in layout.placements] == [
        ("p2", True, "cover"),
        ("p0", False, "contain"),
        ("p1", False, "contain"),
        ("p3", False, "contain"),
    ]
    assert rects(layout) == [
        (8, 8, 944, 704),
        (968, 94, 304, 172),
        (968, 274, 304, 172),
        (968, 454, 304, 172),
    ]
    assert layout.hidden == ("p4", "p5")
    assert layout.background == (16, 32, 48)


def test_custom_overflow_policies() -> None:
    last = compute_layout(HD, people(6), "p2", parse_custom_layout(with_region(overflow="last")))
    assert [p.id for p in last.placements] == ["p2", "p3", "p4", "p5"]
    assert last.hidden == ("p0", "p1")
    shrink = compute_layout(
        HD, people(6), "p2", parse_custom_layout(with_region(overflow="shrink"))
    )
    assert [p.id for p in shrink.placements] == ["p2", "p0", "p1", "p3", "p4", "p5"]
    assert shrink.hidden == ()
    check_tiles(shrink, *HD)
    side = [p.rect for p in shrink.placements[1:]]
    assert all(960 <= r.x and r.x + r.w <= 1280 for r in side)
    # Within the limits nothing overflows: two others in a 3x1 region get larger tiles.
    few = compute_layout(HD, people(3), "p2", parse_custom_layout(SIDEBAR))
    assert few.hidden == ()
    # Only max_cols: a column as long as needed.
    data = with_region(overflow="hide")
    del data["regions"][1]["max_rows"]
    column = compute_layout(HD, people(6), "p2", parse_custom_layout(data))
    assert column.hidden == ()
    # 5 rows: cell 304x134 -> 238x134 (238.2), from x 960 + (320 - 238) / 2 = 1001 -> 1000.
    assert {(p.rect.x, p.rect.w, p.rect.h) for p in column.placements[1:]} == {(1000, 238, 134)}


def test_custom_selectors() -> None:
    spec = CustomSpec(
        regions=(
            Region(0, 0, 0.5, 0.5, show=("host", "nobody")),
            Region(0.5, 0, 0.5, 0.5, show="speaker"),
            Region(0, 0.5, 1.0, 0.5, show="rest"),
        )
    )
    present = [("a", True), ("host", True), ("b", True), ("c", True)]
    layout = compute_layout(HD, present, "b", spec)
    assert [p.id for p in layout.placements] == ["host", "b", "a", "c"]
    assert layout.hidden == ()
    # Without a "rest" region, whoever is named nowhere is hidden.
    fixed = CustomSpec(regions=spec.regions[:2])
    assert compute_layout(HD, present, "b", fixed).hidden == ("a", "c")
    # "others" leaves out the speaker and those named by id; "*" shows everyone again, on top.
    spec = CustomSpec(
        regions=(
            Region(0, 0, 1.0, 1.0, show="*", z=2, max_rows=1, max_cols=1, overflow="hide"),
            Region(0, 0, 0.5, 1.0, show="others"),
            Region(0.5, 0, 0.5, 1.0, show=("host",)),
        )
    )
    layout = compute_layout(HD, present, "b", spec)
    assert [(p.id, p.z) for p in layout.placements] == [("a", 0), ("c", 0), ("host", 0), ("a", 2)]
    assert layout.hidden == ("b",)
    assert len(layout.placements_of("a")) == 2
    # "rest" gets who no other region selects, whatever "*" shows.
    spec = CustomSpec(
        regions=(
            Region(0, 0, 1.0, 0.5, show="*"),
            Region(0, 0.5, 1.0, 0.5, show="rest"),
            Region(0.5, 0, 0.5, 0.5, show="speaker", z=1),
        )
    )
    layout = compute_layout(HD, present, "host", spec)
    assert [(p.id, p.speaker) for p in layout.placements if p.rect.y >= 360] == [
        ("a", False),
        ("b", False),
        ("c", False),
    ]
    assert [p.id for p in layout.placements_of("host")] == ["host", "host"]


def test_custom_edges_round_to_even_and_meet() -> None:
    third = 1 / 3
    spec = CustomSpec(
        fit="cover",
        regions=(
            Region(0.0, 0, third, 1.0, show=("a",)),
            Region(third, 0, third, 1.0, show=("b",)),
            Region(2 * third, 0, third, 1.0, show=("c",)),
            Region(101, 31, 201, 2000, show=("d",)),  # pixels: odd edges rounded, clipped below
        ),
    )
    layout = compute_layout(HD, [(i, True) for i in "abcd"], None, spec)
    assert rects(layout) == [
        (0, 0, 426, 720),
        (426, 0, 428, 720),
        (854, 0, 426, 720),
        (102, 32, 200, 688),
    ]


def test_schema_is_generated_from_the_models() -> None:
    """The published schema is the models' (tests/test_schemas.py keeps docs/ current) and
    describes what the models accept: ranges, enums, the two kinds of lengths."""
    schema = layout_json_schema()
    region = schema["$defs"]["RegionDocument"]
    assert schema["required"] == ["regions"] and schema["additionalProperties"] is False
    assert (
        schema["properties"]["gap"] | {"minimum": 0, "multipleOf": 2} == schema["properties"]["gap"]
    )
    assert [b["type"] for b in region["properties"]["x"]["anyOf"]] == ["integer", "number"]
    assert region["properties"]["overflow"]["enum"] == ["hide", "shrink", "last"]
    assert set(region["required"]) == {"x", "y", "width", "height", "show"}
    assert (DOCS / "layout.schema.json").exists()


def region(**fields: Any) -> dict[str, Any]:
    return {"regions": [{"x": 0, "y": 0, "width": 1.0, "height": 1.0, "show": "*"} | fields]}


BAD_FILES: list[tuple[Any, str, str]] = [
    ([], "(top level)", "expected an object"),
    ({}, "(top level)", "missing required property 'regions'"),
    ({"regions": []}, "regions", "expected at least one item"),
    ({"regions": [{"x": 0}]}, "regions[0]", "missing required property 'y'"),
    (region(colour=1), "regions[0].colour", "unknown property"),
    ({"regions": region()["regions"], "gap": 3}, "gap", "expected an even integer >= 0, got 3"),
    (region(gap=-2), "regions[0].gap", "got -2"),
    (
        region(width=1.5),
        "regions[0].width",
        "expected an integer >= 0 (pixels) or a number 0..1 (a fraction of the canvas), got 1.5",
    ),
    (region(x=-4), "regions[0].x", "got -4"),
    (region(y=True), "regions[0].y", "got true"),
    (region(height="50%"), "regions[0].height", 'got "50%"'),
    (region(width=1), "regions[0].width", "1 pixel is too small for a tile; write 1.0"),
    (region(x=0.5, width=0.6), "regions[0].width", "x + width = 1.1 reaches past the canvas"),
    (region(y=0.5), "regions[0].height", "y + height = 1.5 reaches past the canvas"),
    (
        region(show="all"),
        "regions[0].show",
        'expected one of "speaker", "others", "rest", "*" or a non-empty array',
    ),
    (region(show=[]), "regions[0].show", "got []"),
    (region(show=["a", 3]), "regions[0].show[1]", "expected a string, got 3"),
    (region(show=["a", ""]), "regions[0].show[1]", "expected a non-empty string"),
    (region(show=["a", "b", "a"]), "regions[0].show[2]", 'repeats "a" (item 0)'),
    ({"regions": region()["regions"] * 2}, "regions[1].show", '"*" is already shown by regions[0]'),
    (region(z=1.5), "regions[0].z", "expected an integer, got 1.5"),
    (region(max_rows=0), "regions[0].max_rows", "expected an integer >= 1, got 0"),
    (
        region(overflow="drop"),
        "regions[0].overflow",
        'expected one of "hide", "shrink", "last", got "drop"',
    ),
    (region(fit="fill"), "regions[0].fit", 'expected one of "contain", "cover"'),
    (region(name=7), "regions[0].name", "expected a string"),
    (
        region() | {"background": "red"},
        "background",
        'expected a string like "#202020" or an array of 3, got "red"',
    ),
    (region() | {"background": [0, 0, 256]}, "background[2]", "expected an integer 0..255"),
    (region() | {"aspect": [16]}, "aspect", "expected an array of 2, got [16]"),
    (region() | {"aspect": [16, 0]}, "aspect[1]", "expected an integer >= 1, got 0"),
    (region() | {"video_only": 1}, "video_only", "expected true or false, got 1"),
    (region() | {"fit": None}, "fit", "got null"),
]


@pytest.mark.parametrize(
    ("data", "path", "message"), BAD_FILES, ids=[f"{p}:{m[:25]}" for _, p, m in BAD_FILES]
)
def test_custom_errors_name_the_json_path(data: Any, path: str, message: str) -> None:
    with pytest.raises(DescriptionError) as info:
        parse_custom_layout(data, file="room.json")
    assert info.value.file == "room.json" and info.value.path == path
    assert str(info.value).startswith(f"room.json, {path}: ")
    assert message in str(info.value)


def test_custom_file_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "regions": [\n    {"x": 0,}\n  ]\n}\n')
    with pytest.raises(DescriptionError) as info:
        load_custom_layout(broken)
    assert info.value.file == str(broken) and info.value.line == 3
    assert "not JSON" in str(info.value)
    with pytest.raises(DescriptionError, match="cannot read layout"):
        load_custom_layout(tmp_path / "missing.json")


def test_regions_in_code_are_checked_the_same_way() -> None:
    with pytest.raises(ComposeError, match="width: 1 pixel is too small"):
        Region(0, 0, 1, 1.0, show="*")
    with pytest.raises(ComposeError, match="fraction of the canvas must be within"):
        Region(0, 0, 2.0, 1.0, show="*")
    with pytest.raises(ComposeError, match="show"):
        Region(0, 0, 1.0, 1.0, show="everyone")  # type: ignore[arg-type]
    with pytest.raises(ComposeError, match="already shown by regions"):
        CustomSpec(regions=(Region(0, 0, 1.0, 1.0, show="rest"),) * 2)
    with pytest.raises(ComposeError, match="non-empty tuple of regions"):
        CustomSpec(regions=())


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 49),
    speaker=st.integers(0, 60),
    canvas=canvases,
    spec=st.sampled_from(
        [
            GridSpec(gap=4),
            SpeakerSpec(gap=6),
            SpeakerSpec(strip="right"),
            PipSpec(),
            parse_custom_layout(SIDEBAR),
            parse_custom_layout(with_region(overflow="shrink")),
        ]
    ),
)
def test_every_layout_accounts_for_everyone(
    n: int, speaker: int, canvas: tuple[int, int], spec: LayoutSpec
) -> None:
    present = [(f"p{i}", i % 3 != 0) for i in range(n)]
    layout = compute_layout(canvas, present, f"p{speaker}", spec)
    check_tiles(layout, *canvas)
    shown = {p.id for p in layout.placements}
    assert shown.isdisjoint(layout.hidden)
    assert shown | set(layout.hidden) == {f"p{i}" for i in range(n)}
    assert [p.z for p in layout.placements] == sorted(p.z for p in layout.placements)
    assert sum(p.speaker for p in layout.placements) == (1 if f"p{speaker}" in shown else 0)
