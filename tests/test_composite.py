"""skymix.composite and skymix.draw_mask against the numpy reference in composite_reference."""

from __future__ import annotations

import contextlib
import threading

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import skymix
from composite_reference import blend_reference, composite_reference
from skymix import ComposeError, Rect, Tile
from skymix._native import composite as kernel
from skymix.compose import frame_planes

RNG = np.random.default_rng(7)

# every inner-loop implementation this CPU runs: the portable C loops and the SIMD ones
PATHS = kernel.simd_paths()


@contextlib.contextmanager
def simd(path):
    """Run the block with the kernel's `path` loops, then restore the default."""
    previous = kernel.set_simd(path)
    try:
        yield
    finally:
        kernel.set_simd(previous)


def planes_of(w, h, pad=0, rng=RNG, smooth=False):
    """Random Y, U, V planes of a w x h yuv420p image, rows padded by `pad` bytes."""
    out = []
    for pw, ph in ((w, h), ((w + 1) // 2, (h + 1) // 2), ((w + 1) // 2, (h + 1) // 2)):
        if smooth:
            yy, xx = np.mgrid[0:ph, 0:pw]
            base = 128 + 100 * np.sin(xx / 5.0 + rng.uniform(0, 6)) * np.cos(yy / 7.0)
            data = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
        else:
            data = rng.integers(0, 256, (ph, pw), dtype=np.uint8)
        buf = np.zeros((ph, pw + pad), np.uint8)
        buf[:, :pw] = data
        out.append(buf[:, :pw])
    return tuple(out)


def blank(w, h, pad=0):
    return tuple(
        np.zeros((ph, pw + pad), np.uint8)[:, :pw]
        for pw, ph in ((w, h), ((w + 1) // 2, (h + 1) // 2), ((w + 1) // 2, (h + 1) // 2))
    )


def psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def check_against_reference(specs, size, **kw):
    """Composite specs = [(planes | None, (x, y, w, h), fit, color)]; compare to the reference."""
    out = blank(*size, pad=5)
    tiles = [Tile(src, Rect(*rect), fit, color) for src, rect, fit, color in specs]
    skymix.composite(tiles, out, **kw)
    ref, content = composite_reference(specs, size, **kw)
    for p in range(3):
        got = out[p]
        assert_array_equal(got[~content[p]], ref[p][~content[p]].astype(np.uint8))
        if content[p].any():
            diff = np.abs(got[content[p]].astype(np.float64) - ref[p][content[p]])
            assert diff.max() <= 0.5 + 1e-3, f"plane {p}: max error {diff.max()}"
            assert psnr(got[content[p]], ref[p][content[p]]) >= 45.0
    return out


def test_full_frame_tile_of_same_size_is_an_exact_copy():
    src = av.VideoFrame(322, 182, "yuv420p")  # odd chroma widths, padded rows
    data = planes_of(322, 182)
    for plane, values in zip(frame_planes(src, "src"), data):
        plane[:] = values
    out = av.VideoFrame(322, 182, "yuv420p")
    for fit in ("contain", "cover"):
        skymix.composite([Tile(src, Rect(0, 0, 322, 182), fit)], out)
        for got, want in zip(frame_planes(out, "out"), data):
            assert_array_equal(got, want)


def test_even_offset_same_size_copies_and_odd_offset_interpolates_chroma():
    src = planes_of(40, 30)
    out = skymix_out = blank(100, 80)
    skymix.composite([Tile(src, Rect(10, 20, 40, 30))], skymix_out)
    assert_array_equal(out[0][20:50, 10:50], src[0])
    assert_array_equal(out[1][10:25, 5:25], src[1])
    check_against_reference([(src, (11, 21, 40, 30), "contain", None)], (100, 80))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "src_size, rect, fit",
    [
        ((1280, 720), (0, 0, 320, 180), "contain"),  # 4x shrink
        ((1280, 720), (3, 5, 256, 144), "cover"),  # 5x shrink at odd position
        ((320, 240), (0, 0, 1280, 720), "contain"),  # enlarge, pillarbox
        ((320, 240), (10, 7, 641, 359), "cover"),  # enlarge, crop, odd sizes
        ((480, 640), (640, 0, 640, 360), "contain"),  # portrait into landscape
        ((480, 640), (0, 360, 640, 360), "cover"),
        ((641, 479), (-100, -50, 500, 400), "contain"),  # partly outside the frame
        ((641, 479), (1200, 700, 300, 300), "cover"),  # mostly outside
        ((33, 17), (1, 1, 3, 2), "contain"),  # tiny
        ((1920, 1080), (0, 0, 17, 11), "cover"),  # extreme shrink
    ],
)
def test_matches_reference(src_size, rect, fit, path):
    src = planes_of(*src_size, smooth=True)
    with simd(path):
        check_against_reference([(src, rect, fit, None)], (1280, 720), background=(20, 40, 60))


@pytest.mark.parametrize("path", PATHS)
def test_grid_with_border_overlap_and_highlight_matches_reference(path):
    a, b, c = planes_of(640, 480, smooth=True), planes_of(1280, 720), planes_of(480, 640)
    specs = [
        (a, (0, 0, 640, 360), "contain", None),
        (b, (640, 0, 640, 360), "cover", (255, 200, 0)),
        (c, (0, 360, 640, 360), "contain", None),
        (None, (640, 360, 640, 360), "contain", None),
        (a, (1000, 500, 321, 181), "cover", None),  # picture-in-picture over two tiles
    ]
    with simd(path):
        check_against_reference(
            specs, (1280, 720), background=(30, 30, 30), border=3, border_color=(250, 250, 250)
        )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("offset", [(0, 0), (1, 1), (2, 3), (3, 2)])
def test_exact_half_size_matches_reference(offset, path):
    """The 2:1 shortcuts (an integer 2x2 box, a pairwise horizontal mean), even and odd offsets."""
    src = planes_of(1280, 720)
    with simd(path):
        check_against_reference(
            [
                (src, (*offset, 640, 360), "contain", None),
                (src, (641, 360, 640, 360), "cover", None),
            ],
            (1282, 722),
        )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("src_w", [500, 660, 900, 1150, 1440, 2600])
def test_horizontal_ratios_match_reference(src_w, path):
    """Shrinks from 1.7x to 9x across 293 columns: the AVX-512 pass takes blocks of 16 outputs,
    then of 8, then hands over to the AVX2 one as the taps of a block spread past 32 floats."""
    src = planes_of(src_w, 60, smooth=True)
    with simd(path):
        check_against_reference([(src, (3, 1, 293, 40), "contain", None)], (300, 44))


def test_simd_paths_can_be_chosen():
    assert PATHS[0] == "c" and kernel.simd_path() == PATHS[-1]
    with simd("c"):
        assert kernel.simd_path() == "c"
    assert kernel.simd_path() == PATHS[-1]
    with pytest.raises(ValueError, match="SIMD path 'neon' is not one of"):
        kernel.set_simd("neon")


def test_no_tiles_gives_a_background_frame():
    out = av.VideoFrame(1280, 720, "yuv420p")
    state = skymix.composite([], out, background=(255, 0, 0))
    y, u, v = frame_planes(out, "out")
    assert (y == 63).all() and (u == 102).all() and (v == 240).all()  # BT.709 limited red
    assert state.drawn == 0


def test_empty_and_outside_tiles_are_fine():
    src = planes_of(64, 48)
    specs = [
        (src, (10, 10, 0, 0), "contain", None),
        (src, (10, 10, 0, 30), "cover", None),
        (src, (5000, 5000, 100, 100), "contain", None),
        (src, (-500, -500, 100, 100), "contain", None),
        (None, (4, 4, 20, 20), "contain", None),
        (src, (30, 30, 6, 6), "contain", None),  # border eats the whole inside
    ]
    check_against_reference(
        specs, (64, 48), background=(0, 0, 255), border=3, border_color=(0, 255, 0)
    )


def test_shrinking_averages_instead_of_aliasing():
    """A 1-pixel checkerboard shrunk 4x is flat grey, not a moire pattern."""
    y = (np.indices((720, 1280)).sum(axis=0) % 2 * 255).astype(np.uint8)
    src = (y, np.full((360, 640), 128, np.uint8), np.full((360, 640), 128, np.uint8))
    out = blank(320, 180)
    skymix.composite([Tile(src, Rect(0, 0, 320, 180))], out)
    assert abs(int(out[0].min()) - 128) <= 1 and abs(int(out[0].max()) - 128) <= 1


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=60, deadline=None)
@given(
    sw=st.integers(1, 70),
    sh=st.integers(1, 70),
    ow=st.integers(1, 90),
    oh=st.integers(1, 90),
    rects=st.lists(
        st.tuples(
            st.integers(-40, 90),
            st.integers(-40, 90),
            st.integers(0, 120),
            st.integers(0, 120),
            st.sampled_from(["contain", "cover"]),
            st.booleans(),
        ),
        min_size=0,
        max_size=4,
    ),
    border=st.integers(0, 4),
    pad=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_reference(path, sw, sh, ow, oh, rects, border, pad, seed):
    rng = np.random.default_rng(seed)
    src = planes_of(sw, sh, pad=pad, rng=rng)
    specs = [(src if has else None, (x, y, w, h), fit, None) for x, y, w, h, fit, has in rects]
    with simd(path):
        check_against_reference(specs, (ow, oh), background=(12, 200, 99), border=border)


def test_redraw_skips_unchanged_tiles_and_matches_a_full_redraw():
    a, b, c = planes_of(64, 48), planes_of(48, 64), planes_of(32, 32)
    out = blank(128, 96)
    tiles = [
        Tile(a, Rect(0, 0, 64, 48)),
        Tile(b, Rect(64, 0, 64, 48)),
        Tile(c, Rect(0, 48, 64, 48)),
        Tile(a, Rect(40, 30, 40, 30)),
    ]  # last: inset over 3
    state = skymix.composite(tiles, out, background=(9, 9, 9))
    assert (state.drawn, state.skipped) == (4, 0)

    # Same source objects, changed pixels: skipped tiles keep their old pixels (not re-read).
    before = [p.copy() for p in out]
    c[0][:] = 0
    state = skymix.composite(tiles, out, background=(9, 9, 9), previous=state)
    assert (state.drawn, state.skipped) == (0, 4)
    for got, want in zip(out, before):
        assert_array_equal(got, want)

    # A new frame for tile 2 redraws it and the inset that overlaps it, nothing else.
    c2 = planes_of(32, 32)
    tiles[2] = Tile(c2, Rect(0, 48, 64, 48))
    state = skymix.composite(tiles, out, background=(9, 9, 9), previous=state)
    assert (state.drawn, state.skipped) == (2, 2)
    full = blank(128, 96)
    skymix.composite(tiles, full, background=(9, 9, 9))
    for got, want in zip(out, full):
        assert_array_equal(got, want)

    # A moved rectangle or another background redraws everything.
    tiles[1] = Tile(b, Rect(66, 0, 62, 48))
    state = skymix.composite(tiles, out, background=(9, 9, 9), previous=state)
    assert state.drawn == 4
    state = skymix.composite(tiles, out, background=(1, 2, 3), previous=state)
    assert state.drawn == 4
    # Another output frame with the old state also redraws everything.
    other = blank(128, 96)
    assert skymix.composite(tiles, other, background=(1, 2, 3), previous=state).drawn == 4
    for got, want in zip(other, out):
        assert_array_equal(got, want)


def test_threads_give_identical_results():
    srcs = [planes_of(640, 480), planes_of(1280, 720), planes_of(320, 240), planes_of(480, 640)]
    tiles = [
        Tile(s, Rect(640 * (i % 2), 360 * (i // 2), 640, 360), "cover") for i, s in enumerate(srcs)
    ]
    serial = blank(1280, 720)
    skymix.composite(tiles, serial, threads=1)
    results = [blank(1280, 720) for _ in range(4)]
    workers = [
        threading.Thread(target=skymix.composite, args=(tiles, r), kwargs={"threads": 2})
        for r in results
    ]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    for r in results:
        for got, want in zip(r, serial):
            assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [2, 3, 8])
def test_any_thread_count_gives_identical_results(threads):
    srcs = [planes_of(640, 480), planes_of(1280, 720), planes_of(320, 240)]
    tiles = [
        Tile(s, Rect(67 * i, 41 * i, 700 - 60 * i, 400 - 30 * i), "cover")
        for i, s in enumerate(srcs * 3)
    ]
    serial, parallel = blank(1280, 720), blank(1280, 720)
    skymix.composite(tiles, serial, threads=1)
    for _ in range(5):
        skymix.composite(tiles, parallel, threads=threads)
        for got, want in zip(parallel, serial):
            assert_array_equal(got, want)


def _composite_in_child(queue):
    out = blank(320, 240)
    skymix.composite([Tile(planes_of(640, 480), Rect(0, 0, 320, 240))], out, threads=2)
    queue.put(int(out[0].sum()))


def test_worker_threads_survive_fork():
    """A forked child has no worker threads; its calls must not wait for them."""
    import multiprocessing

    skymix.composite([Tile(planes_of(64, 48), Rect(0, 0, 128, 96))], blank(128, 96), threads=2)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_composite_in_child, args=(queue,))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        pytest.fail("composite() hung in a forked child")
    assert child.exitcode == 0 and queue.get(timeout=5) > 0


def test_draw_mask_matches_integer_reference():
    rng = np.random.default_rng(3)
    cases = [(0, 0, 1.0), (7, 3, 0.5), (-5, -4, 1.0), (60, 40, 0.8), (200, 5, 1.0)]
    for x, y, opacity in cases:
        out = planes_of(67, 45, pad=3, rng=rng)
        mask = rng.integers(0, 256, (13, 21), dtype=np.uint8)
        want = blend_reference(
            out, mask, x, y, skymix.rgb_to_yuv((250, 10, 100)), round(opacity * 255)
        )
        skymix.draw_mask(out, mask, x, y, (250, 10, 100), opacity=opacity)
        for got, w in zip(out, want):
            assert_array_equal(got, w)
    # masks of one row or column, at odd and negative positions (chroma samples half covered)
    for shape, x, y in [
        ((1, 1), 5, 7),
        ((1, 9), -1, 4),
        ((6, 1), 8, -1),
        ((2, 3), -1, -1),
        ((3, 2), 66, 44),
    ]:
        out = planes_of(67, 45, pad=3, rng=rng)
        mask = rng.integers(0, 256, shape, dtype=np.uint8)
        want = blend_reference(out, mask, x, y, skymix.rgb_to_yuv((250, 10, 100)), 255)
        skymix.draw_mask(out, mask, x, y, (250, 10, 100))
        for got, w in zip(out, want):
            assert_array_equal(got, w)
    # masks this large are blended by the worker threads, in chunks of rows
    for x, y in [(0, 0), (-3, 5), (101, -7)]:
        out = planes_of(641, 481, pad=3, rng=rng)
        mask = rng.integers(0, 256, (401, 333), dtype=np.uint8)
        want = blend_reference(out, mask, x, y, skymix.rgb_to_yuv((9, 200, 30)), 200)
        skymix.draw_mask(out, mask, x, y, (9, 200, 30), opacity=200 / 255)
        for got, w in zip(out, want):
            assert_array_equal(got, w)


def test_rgb_to_yuv_known_values():
    assert skymix.rgb_to_yuv((255, 255, 255)) == (235, 128, 128)
    assert skymix.rgb_to_yuv((0, 0, 0)) == (16, 128, 128)
    assert skymix.rgb_to_yuv((255, 0, 0)) == (63, 102, 240)
    assert skymix.rgb_to_yuv((255, 0, 0), "bt601") == (81, 90, 240)


def test_errors_name_the_tile():
    out = blank(64, 48)
    good = planes_of(16, 16)
    rgb = av.VideoFrame(16, 16, "rgb24")
    y, u, v = planes_of(16, 16)
    cases = [
        (
            [Tile(good, Rect(0, 0, 8, 8)), Tile(rgb, Rect(0, 0, 8, 8))],
            "tile 1: pixel format 'rgb24' is not yuv420p",
        ),
        ([Tile((y, u[:4], v), Rect(0, 0, 8, 8))], "tile 0: chroma planes (4, 8) and (8, 8)"),
        ([Tile(good, Rect(0, 0, -1, 8))], "tile 0: negative size -1x8"),
        (
            [Tile((y, np.zeros((8, 16), np.uint8)[:, ::2], v), Rect(0, 0, 8, 8))],
            "tile 0: plane U samples are not contiguous",
        ),
        ([Tile((y.astype(np.int16), u, v), Rect(0, 0, 8, 8))], "tile 0: plane Y must be 2-D uint8"),
        ([Tile(good, Rect(0, 0, 8, 8), "stretch")], "tile 0: fit must be 'contain' or 'cover'"),
        ([Tile(good, Rect(0, 0, 8, 8), border_color=(300, 0, 0))], "tile 0 border_color: colour"),
        (["not a tile"], "tile 0: expected a skymix.Tile"),
    ]
    for tiles, message in cases:
        with pytest.raises(ComposeError) as info:
            skymix.composite(tiles, out)
        assert message in str(info.value)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ComposeError, match="output frame: pixel format 'rgb24'"):
        skymix.composite([], rgb)
    with pytest.raises(ComposeError, match="output frame: planes are read-only"):
        ro = blank(16, 16)
        ro[0].flags.writeable = False
        skymix.composite([], ro)
    with pytest.raises(ComposeError, match="draw_mask: mask must be a 2-D uint8 array"):
        skymix.draw_mask(out, np.zeros((4, 4), np.float32), 0, 0, (1, 2, 3))


def test_overlays_are_clipped_to_their_tile_and_hidden_under_later_tiles():
    rng = np.random.default_rng(11)
    a, b = planes_of(64, 48, rng=rng), planes_of(64, 48, rng=rng)
    mask = rng.integers(1, 256, (20, 30), dtype=np.uint8)
    label = skymix.Overlay(mask, 50, 40, (255, 255, 0), 0.75)  # runs past the tile's corner
    tiles = [Tile(a, Rect(0, 0, 64, 48), overlays=(label,)), Tile(b, Rect(60, 44, 30, 30))]
    out = blank(100, 80)
    state = skymix.composite(tiles, out)

    plain = blank(100, 80)
    skymix.composite([Tile(a, Rect(0, 0, 64, 48)), Tile(b, Rect(60, 44, 30, 30))], plain)
    visible = mask[:8, :14].copy()  # inside tile 0 (64x48) from (50, 40)
    visible[4:, 10:] = 0  # under tile 1 from (60, 44): zero there, so blending leaves it alone
    want = blend_reference(plain, visible, 50, 40, skymix.rgb_to_yuv((255, 255, 0)), 191)
    for got, w, p in zip(out, want, range(3)):
        assert_array_equal(got, w, err_msg=f"plane {p}")

    # the same overlay object again: nothing redrawn; a new one: tile 0 and tile 1 above it
    assert skymix.composite(tiles, out, previous=state).drawn == 0
    moved = (Tile(a, Rect(0, 0, 64, 48), overlays=(skymix.Overlay(mask, 0, 0),)), tiles[1])
    assert skymix.composite(list(moved), out, previous=state).drawn == 2
