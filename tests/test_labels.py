"""skymix.compose.labels: name labels drawn through the compositor, and placeholder tiles."""

from __future__ import annotations

import unicodedata
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from skymix.compose import Rect, Tile, composite, rgb_to_yuv
from skymix.compose.labels import (
    PALETTE,
    NameLabel,
    initials,
    label_font_size,
    label_text,
    name_label,
    placeholder,
    placeholder_color,
)
from skymix.errors import ComposeError

GREY = (128, 128, 128)
LONG = "Maximilian Alexander Ferdinand von Hohenzollern-Sigmaringen"
TILE_SIZES = [(160, 90), (320, 180), (640, 360), (1280, 720), (1920, 1080)]


def grey_planes(w, h, rgb=GREY):
    y, u, v = rgb_to_yuv(rgb)
    return (
        np.full((h, w), y, np.uint8),
        np.full((h // 2, w // 2), u, np.uint8),
        np.full((h // 2, w // 2), v, np.uint8),
    )


def labelled(name, w, h, **kw):
    """A grey w x h frame with `name`'s label composited on it, and the label."""
    label = name_label(name, w, h, **kw)
    out = grey_planes(w, h, (0, 0, 0))
    composite([Tile(grey_planes(w, h), Rect(0, 0, w, h), overlays=label)], out)
    return out, label


def placed(overlay, w, h):
    """The overlay's mask at its place on a w x h canvas."""
    canvas = np.zeros((h, w), np.uint8)
    mh, mw = overlay.mask.shape
    canvas[overlay.y : overlay.y + mh, overlay.x : overlay.x + mw] = overlay.mask
    return canvas


# name_label


@pytest.mark.parametrize("w,h", TILE_SIZES)
def test_label_is_non_empty_inside_the_tile_at_the_bottom_left(w, h):
    label = name_label("Ada Lovelace", w, h)
    assert isinstance(label, NameLabel) and label == (label.box, label.text)
    for overlay in label:
        mh, mw = overlay.mask.shape
        assert overlay.mask.dtype == np.uint8 and overlay.mask.any()
        assert overlay.x >= 0 and overlay.y >= 0
        assert overlay.x + mw <= w and overlay.y + mh <= h
    box, text = label
    assert box.x < w // 4 and box.y + box.mask.shape[0] > h * 3 // 4
    # the text lies inside its box
    assert box.x <= text.x and text.x + text.mask.shape[1] <= box.x + box.mask.shape[1]
    assert box.y <= text.y and text.y + text.mask.shape[0] <= box.y + box.mask.shape[0]
    assert box.mask.max() == 255 and text.mask.max() == 255
    assert text.color == (255, 255, 255) and 0 < box.opacity < 1


def test_font_grows_with_the_tile_and_stays_readable_on_strip_tiles():
    sizes = [label_font_size(h) for _, h in TILE_SIZES]
    assert sizes == sorted(sizes) and sizes[0] >= 11 and sizes[-1] <= 48
    heights = [name_label("Ada Lovelace", w, h).text.mask.shape[0] for w, h in TILE_SIZES]
    assert heights == sorted(heights) and heights[0] >= 8 and heights[-1] > 2 * heights[0]


@pytest.mark.parametrize("w,h", [(160, 90), (1280, 720)])
def test_composited_text_is_white_on_a_darkened_box(w, h):
    (y, u, v), (box, text) = labelled("Ada Lovelace", w, h)
    grey, white = rgb_to_yuv(GREY), rgb_to_yuv((255, 255, 255))
    ink = placed(text, w, h)
    boxed = placed(box, w, h)
    assert abs(y[ink == 255].astype(int) - white[0]).max() <= 1
    # chroma under the text stays neutral (white and grey both are)
    assert abs(u.astype(int) - 128).max() <= 1 and abs(v.astype(int) - 128).max() <= 1
    # inside the box, away from the text, the grey is darkened by the box's opacity
    bare = (boxed == 255) & (ink == 0)
    black = rgb_to_yuv((0, 0, 0))[0]
    expect = grey[0] + box.opacity * (black - grey[0])
    assert bare.any() and abs(y[bare].astype(float) - expect).max() <= 1.5
    # outside the box the tile is untouched
    assert (y[boxed == 0] == grey[0]).all()


def test_long_name_is_ellipsised_within_the_tile():
    w, h = 320, 180
    full = name_label(LONG, 1920, h)
    cut = name_label(LONG, w, h)
    drawn = label_text(LONG, w, h)
    assert label_text(LONG, 1920, h) == LONG
    assert drawn.endswith("…") and LONG.startswith(drawn[:-1]) and len(drawn) < len(LONG)
    assert not drawn[:-1].endswith(" ")
    for overlay in cut:
        assert overlay.x + overlay.mask.shape[1] <= w
    assert cut.text.mask.shape[1] < full.text.mask.shape[1]
    # the start is drawn at the same place, the end differs (the "…")
    a, b = placed(cut.text, w, h), placed(full.text, 1920, h)[:, :w]
    n = cut.text.x + cut.text.mask.shape[1] // 3
    assert_array_equal(a[:, :n], b[:, :n])
    assert not np.array_equal(a, b)


def test_short_name_is_not_cut_and_whitespace_is_tidied():
    assert label_text("  Ada \n Lovelace\t", 640, 360) == "Ada Lovelace"
    assert name_label("  Ada \n Lovelace\t", 640, 360) is name_label("Ada Lovelace", 640, 360)


def test_tiny_tiles_and_empty_names_draw_nothing():
    for name, w, h in (("", 640, 360), ("   ", 640, 360), ("Ada", 10, 360), ("Ada", 640, 8)):
        label = name_label(name, w, h)
        assert label_text(name, w, h) == ""
        assert all(o.mask.shape == (0, 0) for o in label)
        (y, _, _), _ = labelled(name, w, h)
        assert (y == rgb_to_yuv(GREY)[0]).all()


def test_same_arguments_give_the_same_objects():
    a = name_label("Grace Hopper", 640, 360)
    b = name_label("Grace Hopper", 640, 360)
    assert a is b and a.box is b.box and a.text is b.text
    assert name_label("Grace Hopper", 640, 180) is not a
    assert name_label("Grace Hopper", 640, 360, box_opacity=0.8) is not a


def test_the_cache_is_bounded():
    first = name_label("cache probe", 200, 100)
    for i in range(300):
        name_label(f"participant {i}", 200, 100)
    assert name_label("cache probe", 200, 100) is not first


def test_cached_masks_are_read_only():
    for overlay in name_label("Grace Hopper", 640, 360):
        with pytest.raises(ValueError):
            overlay.mask[0, 0] = 1


def test_different_names_give_different_masks():
    a = name_label("Ada Lovelace", 640, 360).text.mask
    b = name_label("Alan Turing", 640, 360).text.mask
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_a_label_reused_across_frames_lets_the_compositor_skip_the_tile():
    w, h = 320, 180
    out = grey_planes(w, h, (0, 0, 0))
    src = grey_planes(w, h)
    state = composite([Tile(src, Rect(0, 0, w, h), overlays=name_label("Ada", w, h))], out)
    state = composite(
        [Tile(src, Rect(0, 0, w, h), overlays=name_label("Ada", w, h))], out, previous=state
    )
    assert state.skipped == 1


@pytest.mark.parametrize(
    "name", ["Zoë Ångström-Ñúñez", "李小龙", "Ольга 🎉", "عمر", "e\u0301\u0301"]
)
def test_unicode_names_render_without_crashing(name):
    label = name_label(name, 320, 180)
    assert label.text.mask.any()
    assert label.text.x + label.text.mask.shape[1] <= 320
    labelled(name, 320, 180)
    placeholder(name, 320, 180)


def test_ellipsis_does_not_split_a_character_from_its_accents():
    # q with dot above and dot below has no precomposed form; NFC puts the marks in canonical order
    cluster = unicodedata.normalize("NFC", "q\u0307\u0323")
    assert len(cluster) == 3
    for w in range(100, 200, 3):  # cuts that land on each position within a cluster
        drawn = label_text("q\u0307\u0323" * 100, w, 90)
        assert drawn.endswith("…") and drawn[:-1] == cluster * ((len(drawn) - 1) // 3)


def test_bad_arguments_are_rejected():
    with pytest.raises(ComposeError, match="0x90"):
        name_label("Ada", 0, 90)
    with pytest.raises(ComposeError, match="box_opacity"):
        name_label("Ada", 160, 90, box_opacity=1.5)
    with pytest.raises(ComposeError, match="text_color"):
        name_label("Ada", 160, 90, text_color=(300, 0, 0))
    with pytest.raises(ComposeError, match="name must be a str"):
        name_label(None, 160, 90)  # type: ignore[arg-type]
    with pytest.raises(ComposeError, match="nope.ttf"):
        name_label("Ada", 160, 90, font_path="/nonexistent/nope.ttf")


def test_labels_render_the_same_from_several_threads():
    names = [f"thread name {i}" for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        masks = list(pool.map(lambda n: name_label(n, 321, 181).text.mask, names))
    for n, m in zip(names, masks):
        assert_array_equal(m, name_label(n, 321, 181).text.mask)


# placeholder


@pytest.mark.parametrize(
    "name,expected",
    [
        ("Ada Lovelace", "AL"),
        ("linus", "L"),
        ("", "?"),
        ("   ", "?"),
        ("  jean-luc  picard ", "JP"),
        ("Åsa Öberg", "ÅÖ"),
        ("A\u030asa O\u0308berg", "ÅÖ"),  # decomposed input
        ("Jean Paul Sartre", "JP"),
        ("(Ada) Lovelace", "AL"),
        ("🎉 party", "P"),
        ("李小龙", "李"),
    ],
)
def test_initials(name, expected):
    assert initials(name) == expected


def test_colour_is_deterministic_and_depends_on_the_name():
    a, b = "Ada Lovelace", "linus"
    ia = zlib.crc32(a.encode()) % len(PALETTE)
    ib = zlib.crc32(b.encode()) % len(PALETTE)
    assert ia != ib  # the two names hash to different palette entries
    assert placeholder_color(a) == PALETTE[ia] == placeholder_color(a)
    assert placeholder_color(b) == PALETTE[ib] != placeholder_color(a)
    assert_array_equal(placeholder(a, 64, 64)[0], placeholder(a, 64, 64, font_path=None)[0])


def test_placeholder_planes_show_initials_on_a_circle_over_a_darker_background():
    w, h = 320, 180
    y, u, v = placeholder("Ada Lovelace", w, h)
    assert y.shape == (h, w) and u.shape == v.shape == (h // 2, w // 2)
    assert y.dtype == u.dtype == v.dtype == np.uint8
    circle = placeholder_color("Ada Lovelace")
    background = rgb_to_yuv(tuple(c * 3 // 5 for c in circle))
    disc = rgb_to_yuv(circle)
    assert (y[0, 0], u[0, 0], v[0, 0]) == background
    assert (y[-1, -1], u[-1, -1], v[-1, -1]) == background
    assert disc[0] > background[0]  # the circle is lighter than the background
    # inside the circle, off the glyphs: the circle's colour
    assert (y[h // 2 - 45, w // 2], u[(h // 2 - 45) // 2, w // 4]) == (disc[0], disc[1])
    # the glyphs: near-white pixels around the centre, none in the corners
    centre = y[h // 2 - 20 : h // 2 + 20, w // 2 - 40 : w // 2 + 40]
    assert centre.max() >= rgb_to_yuv((255, 255, 255))[0] - 2
    assert not np.array_equal(centre, np.full_like(centre, y[0, 0]))


def test_different_names_give_different_placeholders():
    a = placeholder("Ada Lovelace", 160, 90)[0]
    b = placeholder("Alan Turing", 160, 90)[0]
    assert not np.array_equal(a, b)


def test_placeholder_is_cached_read_only_and_usable_as_a_tile_source():
    p = placeholder("Grace Hopper", 320, 180)
    assert p is placeholder("Grace Hopper", 320, 180)
    assert all(a is b for a, b in zip(p, placeholder("Grace Hopper", 320, 180)))
    for plane in p:
        assert not plane.flags.writeable
        with pytest.raises(ValueError):
            plane[0, 0] = 0
    out = grey_planes(320, 180, (0, 0, 0))
    composite([Tile(p, Rect(0, 0, 320, 180))], out)
    for got, want in zip(out, p):
        assert_array_equal(got, want)


@pytest.mark.parametrize("w,h", [(161, 90), (160, 91), (3, 3)])
def test_odd_sizes_are_rejected(w, h):
    with pytest.raises(ComposeError, match=f"{w}x{h}"):
        placeholder("Ada", w, h)


def test_bad_placeholder_arguments_are_rejected():
    with pytest.raises(ComposeError, match="0x90"):
        placeholder("Ada", 0, 90)
    with pytest.raises(ComposeError, match="matrix"):
        placeholder("Ada", 160, 90, matrix="bt2020")  # type: ignore[arg-type]


def test_bt601_placeholder_differs_in_chroma():
    a = placeholder("Ada Lovelace", 64, 64)
    b = placeholder("Ada Lovelace", 64, 64, matrix="bt601")
    assert (a[1][0, 0], a[2][0, 0]) != (b[1][0, 0], b[2][0, 0])


@pytest.fixture
def without_dejavu(monkeypatch):
    """Labels and placeholders rendered as on a machine without DejaVu fonts."""
    from skymix.compose import labels

    caches = (labels._font, labels._name_label, labels._placeholder)
    for cache in caches:
        cache.cache_clear()
    monkeypatch.setattr(labels, "_REGULAR", labels._FONT_DIR / "missing.ttf")
    monkeypatch.setattr(labels, "_BOLD", labels._FONT_DIR / "missing-bold.ttf")
    yield
    for cache in caches:
        cache.cache_clear()


def test_the_built_in_font_is_used_without_dejavu(without_dejavu):
    small = name_label(LONG, 160, 90)
    large = name_label("Ada Lovelace", 1920, 1080)
    assert small.text.mask.any() and label_text(LONG, 160, 90).endswith("…")
    assert small.text.x + small.text.mask.shape[1] <= 160
    assert large.text.mask.shape[0] > 2 * name_label("Ada Lovelace", 160, 90).text.mask.shape[0]
    name_label("李小龙", 320, 180)
    y = placeholder("Ada Lovelace", 160, 90)[0]
    assert y.max() >= rgb_to_yuv((255, 255, 255))[0] - 2
