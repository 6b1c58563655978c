"""skymix.compose.labels: name labels drawn through the compositor, and placeholder tiles."""

from __future__ import annotations

import unicodedata
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    # full ink on the box; on the text too, but for an 11-pixel font's thin antialiased stems
    assert box.mask.max() == 255 and text.mask.max() >= 250
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
    solid = ink >= 250
    assert solid.any() and abs(y[solid].astype(int) - white[0]).max() <= 4
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
    scripts = list(SCRIPTS.values())
    names = [f"thread name {i} {scripts[i % len(scripts)]}" for i in range(40)]
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


# scripts, emoji, bidi: every name in its own script's font, shaped

TOFU = "\U000f0000"  # plane-15 private use: no face has it, so it is the primary's .notdef box
SCRIPTS = {
    "latin": "Zoë Ångström-Ñúñez",
    "cyrillic": "Ольга Петрова",
    "greek": "Νίκος Παπαδόπουλος",
    "arabic": "عمر خالد",
    "hebrew": "דוד לוי",
    "devanagari": "अमित शाह",
    "chinese": "李小龙",
    "japanese": "山田 やまだ",
    "korean": "김민준",
    "emoji": "👩\u200d👩\u200d👧 🎉",
}


def glyph_shapes(mask, threshold=64):
    """The mask's ink split at blank columns, each part cropped to its ink: the glyphs (a word
    of a joining script is one)."""
    inked = (mask >= threshold).any(axis=0)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], inked.view(np.int8), [0]))))
    shapes = []
    for a, b in edges.reshape(-1, 2):
        part = mask[:, a:b]
        rows = np.flatnonzero((part >= threshold).any(axis=1))
        shapes.append(part[rows[0] : rows[-1] + 1])
    return shapes


def is_tofu(shape, tofu):
    return shape.shape == tofu.shape and np.abs(shape.astype(int) - tofu).mean() < 20


@pytest.mark.parametrize("w,h", [(320, 180), (1280, 720)])
@pytest.mark.parametrize("script", SCRIPTS)
def test_names_in_every_script_draw_glyphs_not_missing_glyph_boxes(script, w, h):
    name = SCRIPTS[script]
    (tofu,) = glyph_shapes(name_label(TOFU, w, h).text.mask)
    mask = name_label(name, w, h).text.mask
    shapes = glyph_shapes(mask)
    assert shapes and not any(is_tofu(s, tofu) for s in shapes)
    # several distinct glyph shapes, and a plausible share of ink
    assert len({(s.shape, s.tobytes()) for s in shapes}) >= 2
    assert 0.08 < mask.mean() / 255 < 0.6
    assert mask.shape[0] > 0.5 * label_font_size(h)
    assert_array_equal(name_label(name, w, h).text.mask, mask)  # cached


def test_the_missing_glyph_check_sees_boxes_when_a_font_is_missing(fonts_missing):
    fonts_missing("cjk-jp", "cjk-kr", "cjk-sc")
    (tofu,) = glyph_shapes(name_label(TOFU, 320, 180).text.mask)
    shapes = glyph_shapes(name_label(SCRIPTS["chinese"], 320, 180).text.mask)
    assert len(shapes) == 3 and all(is_tofu(s, tofu) for s in shapes)
    assert not any(is_tofu(s, tofu) for s in glyph_shapes(name_label("Ada", 320, 180).text.mask))


def test_arabic_letters_join_and_devanagari_forms_conjuncts():
    # one connected word, as three separate letters when ZWNJs keep them apart
    assert len(glyph_shapes(name_label("عمر", 640, 360).text.mask)) == 1
    assert len(glyph_shapes(name_label("ع\u200cم\u200cر", 640, 360).text.mask)) >= 2
    # क + virama + ष is the single conjunct क्ष, not two letters and a visible virama
    conjunct = name_label("क्ष", 640, 360).text.mask
    apart = name_label("क ष", 640, 360).text.mask
    assert len(glyph_shapes(conjunct)) == 1 and conjunct.shape[1] < 0.6 * apart.shape[1]


def test_right_to_left_names_are_drawn_right_to_left():
    w, h = 640, 360
    full = name_label("דוד לוי", w, h).text
    first, last = name_label("דוד", w, h).text, name_label("לוי", w, h).text
    # the second word in reading order is on the left, where the line starts
    n = last.mask.shape[1]
    assert_array_equal(placed(full, w, h)[:, : last.x + n], placed(last, w, h)[:, : last.x + n])
    n = first.mask.shape[1]
    assert not np.array_equal(placed(full, w, h)[:, : n + 15], placed(first, w, h)[:, : n + 15])
    # a left-to-right name with an Arabic word keeps its Latin start on the left
    mixed = name_label("Ali عمر", w, h).text
    ali = name_label("Ali", w, h).text
    n = ali.mask.shape[1]
    assert_array_equal(placed(mixed, w, h)[:, : ali.x + n], placed(ali, w, h)[:, : ali.x + n])


def test_an_emoji_zwj_sequence_is_one_glyph_shaded_in_the_mask():
    family = name_label("👩\u200d👩\u200d👧", 640, 360).text.mask
    woman = name_label("👩", 640, 360).text.mask
    (shape,) = glyph_shapes(family)
    assert family.shape[1] < 1.5 * woman.shape[1]
    # the colours become shading: many levels, not a flat silhouette nor a box
    assert len(np.unique(family)) > 30 and 0.3 < family.mean() / 255 < 0.95
    (tofu,) = glyph_shapes(name_label(TOFU, 640, 360).text.mask)
    assert not is_tofu(shape, tofu)


def test_a_flag_and_a_keycap_are_single_emoji():
    for name in ("🇫🇷", "1\ufe0f\u20e3", "👍🏽"):
        assert len(glyph_shapes(name_label(name, 640, 360).text.mask)) == 1, name


# control and format characters


def test_a_right_to_left_override_is_not_obeyed():
    w, h = 640, 360
    spoofed = name_label("\u202eevil\u202c", w, h)
    assert label_text("\u202eevil\u202c", w, h) == "evil"
    assert spoofed is name_label("evil", w, h)
    assert not np.array_equal(spoofed.text.mask, name_label("live", w, h).text.mask)
    # an override inside a right-to-left name does not reverse it either
    assert_array_equal(
        name_label("\u202dדוד\u202c", w, h).text.mask, name_label("דוד", w, h).text.mask
    )


@pytest.mark.parametrize(
    "name,drawn",
    [
        ("\u202bab\u202c", "ab"),  # RLE … PDF
        ("\u202aab\u202c", "ab"),  # LRE … PDF
        ("\u2067ab\u2069", "ab"),  # RLI … PDI
        ("\u2066a\u2068b\u2069\u2069", "ab"),  # LRI, FSI
        ("\u200fab\u200e\u061c", "ab"),  # RLM, LRM, ALM
        ("a\u2028b\u2029c", "a b c"),  # line and paragraph separators
        ("a\x00b\x7f\x85c", "ab c"),  # C0, DEL; NEL is a line break
        ("\ufeffa\u00adb\u200bc\u2060", "abc"),  # BOM, soft hyphen, zero-width space, joiner
        ("a\ud800b", "ab"),  # a lone surrogate
        ("a\ufffeb\ufdd0", "ab"),  # noncharacters
        ("\u3164Ada", "Ada"),  # Hangul filler
        ("👩\u200d💻", "👩\u200d💻"),  # ZWJ kept
        ("ن\u200cم", "ن\u200cم"),  # ZWNJ kept
        ("❤\ufe0f", "❤\ufe0f"),  # variation selector kept
        ("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", None),  # tag flag
        ("a\U000e0067b", "ab"),  # stray tags
    ],
)
def test_control_and_format_characters_are_neutralised(name, drawn):
    assert label_text(name, 1920, 1080) == (name if drawn is None else drawn)


def test_a_name_of_control_characters_only_gets_no_label_and_a_question_mark():
    name = "\u202e\u202c\u2066\u200b\x07\u2069\u200f"
    label = name_label(name, 640, 360)
    assert label_text(name, 640, 360) == ""
    assert label is name_label("", 640, 360) and all(o.mask.shape == (0, 0) for o in label)
    assert initials(name) == "?"
    assert_array_equal(placeholder(name, 320, 180)[0], placeholder("", 320, 180)[0])


# elision


@pytest.mark.parametrize(
    "name",
    [
        "李小龙" * 30,
        "👩\u200d👩\u200d👧🇫🇷" * 30,
        "अमित शाह क्षत्रिय " * 10,
        "عمر خالد " * 20,
        "Zoë " * 40 + "李小龙" * 10,
    ],
)
def test_long_names_in_any_script_are_cut_between_graphemes_and_fit(name):
    from skymix.compose.labels import _graphemes

    w, h = 320, 180
    drawn = label_text(name, w, h)
    assert drawn.endswith("…") and len(drawn) < len(name)
    clusters = _graphemes(name)
    prefix = drawn[:-1]
    assert prefix in {"".join(clusters[:k]).rstrip() for k in range(len(clusters))}
    label = name_label(name, w, h)
    for overlay in label:
        assert overlay.x >= 0 and overlay.x + overlay.mask.shape[1] <= w
    assert label.text.x + label.text.mask.shape[1] <= label.box.x + label.box.mask.shape[1]


def test_a_cut_right_to_left_name_ends_with_the_ellipsis_on_the_left():
    mask = name_label("عمر خالد " * 20, 320, 180).text.mask
    shapes = glyph_shapes(mask)
    dots = glyph_shapes(name_label("…", 320, 180).text.mask)
    assert len(dots) == 3
    assert [s.shape for s in shapes[:3]] == [d.shape for d in dots]
    assert shapes[-1].shape[0] > 2 * dots[-1].shape[0]


# initials


@pytest.mark.parametrize(
    "name,expected",
    [
        ("李小龙", "李"),
        ("山田 太郎", "山"),
        ("김 민준", "김"),
        ("Ada 李", "A"),
        ("🦊", "🦊"),
        ("👩\u200d💻", "👩\u200d💻"),
        ("🎉 🦊", "🎉"),
        ("عمر خالد", "ع\u200cخ"),
        ("דוד לוי", "דל"),
        ("अमित शाह", "अशा"),
        ("क्षमा", "क्ष"),
        ("1\ufe0f\u20e3 keycap", "K"),
        ("\u202eevil\u202c twin", "ET"),
    ],
)
def test_initials_of_names_in_other_scripts(name, expected):
    assert initials(name) == expected


@pytest.mark.parametrize("name", ["李小龙", "🦊", "عمر خالد", "अमित शाह", "김민준"])
def test_placeholders_draw_these_initials(name):
    w, h = 320, 180
    y = placeholder(name, w, h)[0]
    centre = y[h // 2 - 30 : h // 2 + 30, w // 2 - 30 : w // 2 + 30]
    disc = rgb_to_yuv(placeholder_color(name))[0]
    assert (np.abs(centre.astype(int) - disc) > 40).mean() > 0.08  # glyphs, not a bare disc


def test_an_emoji_placeholder_keeps_the_emojis_colours():
    w, h = 320, 180
    _, u, v = placeholder("🦊", w, h)
    disc = rgb_to_yuv(placeholder_color("🦊"))
    centre_v = v[h // 4 - 15 : h // 4 + 15, w // 4 - 15 : w // 4 + 15].astype(int)
    # an orange fox: red-difference chroma far above the blue-violet disc's, and white bits
    assert centre_v.max() > disc[2] + 40
    text = placeholder("Ada Lovelace", w, h)[2]
    disc = rgb_to_yuv(placeholder_color("Ada Lovelace"))
    assert np.abs(text.astype(int) - disc[2]).max() <= 40  # white text adds no colour


# fonts


@pytest.fixture
def fonts_missing(monkeypatch):
    """fonts_missing(role, ...): render as on a machine without those fonts (at the Debian
    path or through fontconfig); all of them without arguments."""
    from skymix.compose import labels

    caches = (
        labels._find,
        labels._chain,
        labels._load,
        labels._coverage,
        labels._name_label,
        labels._placeholder,
    )

    def clear():
        for cache in caches:
            cache.cache_clear()

    def missing(*roles):
        for role in roles or tuple(labels._FAMILIES):
            monkeypatch.setitem(
                labels._FAMILIES, role, ("skymix no such font", "/nonexistent.ttf", "/no.ttf", 0)
            )
        clear()

    yield missing
    clear()


def test_without_any_font_the_built_in_one_draws_every_name(fonts_missing):
    fonts_missing()
    small = name_label(LONG, 160, 90)
    large = name_label("Ada Lovelace", 1920, 1080)
    assert small.text.mask.any() and label_text(LONG, 160, 90).endswith("…")
    assert small.text.x + small.text.mask.shape[1] <= 160
    assert large.text.mask.shape[0] > 2 * name_label("Ada Lovelace", 160, 90).text.mask.shape[0]
    for name in SCRIPTS.values():
        assert name_label(name, 320, 180).text.mask.any()
        placeholder(name, 320, 180)
    y = placeholder("Ada Lovelace", 160, 90)[0]
    assert y.max() >= rgb_to_yuv((255, 255, 255))[0] - 2


def test_without_the_emoji_font_emoji_names_still_draw(fonts_missing):
    fonts_missing("emoji")
    label = name_label("Ana 🎉 👩\u200d👩\u200d👧", 320, 180)
    assert label.text.mask.any() and label.text.x + label.text.mask.shape[1] <= 320
    placeholder("🦊", 320, 180)
    assert initials("🦊") == "🦊"


def test_a_given_font_comes_first_and_the_chain_fills_in():
    dejavu = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    ada = name_label("Ada", 640, 360, font_path=dejavu).text.mask
    assert not np.array_equal(ada, name_label("Ada", 640, 360).text.mask)
    (tofu,) = glyph_shapes(name_label(TOFU, 640, 360, font_path=dejavu).text.mask)
    mixed = name_label("Ada 李小龙", 640, 360, font_path=dejavu).text.mask
    assert not any(is_tofu(s, tofu) for s in glyph_shapes(mixed))


@pytest.mark.parametrize("role", ["latin", "arabic", "devanagari", "cjk-kr", "emoji"])
def test_glyph_coverage_read_from_the_font_matches_fontconfig(role):
    import subprocess

    from skymix.compose import labels

    face = labels._find(role, False)
    assert face is not None, f"the Debian Noto fonts are installed ({role})"
    out = subprocess.run(
        ["fc-query", "-i", str(face.number), "--format", "%{charset}", face.path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = set()
    for part in out.split():
        lo, _, hi = part.partition("-")
        expected.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    coverage = labels._coverage(face)
    top = max(expected) + 2
    got = {cp for cp in range(top) if chr(cp) in coverage}
    assert got - expected <= set(range(0x20))  # fontconfig leaves out C0 controls
    assert expected <= got


def test_a_huge_name_is_cut_before_it_is_measured():
    drawn = label_text("ab" * 200_000, 3840, 2160)
    assert drawn.endswith("…") and len(drawn) <= 1025
    assert label_text("i" * 1024, 8000, 90) == "i" * 1024
    assert label_text("i" * 1025, 8000, 90) == "i" * 1024 + "…"


@settings(max_examples=150, deadline=None)
@given(
    name=st.text(st.characters(codec="utf-8"), max_size=40)
    | st.text(
        st.sampled_from(list("aيא李😀\u200d\u202e\u0301\u094d\ufe0f\U0001f1eb ")), max_size=30
    ),
    w=st.integers(1, 700),
    h=st.integers(1, 200),
)
def test_any_name_gives_a_label_inside_the_tile_and_a_placeholder(name, w, h):
    label = name_label(name, w, h)
    for overlay in label:
        mh, mw = overlay.mask.shape
        assert overlay.x >= 0 and overlay.y >= 0 and overlay.x + mw <= w and overlay.y + mh <= h
    drawn = label_text(name, w, h)
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in drawn)
    assert not any("\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069" for c in drawn)
    placeholder(name, 2 * (w // 4 + 1), 2 * (h // 4 + 1))
