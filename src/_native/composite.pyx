# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compositing kernels: resample tiles into one yuv420p frame, and alpha-blend masks onto it.

Validation happens in skymix.compose.video; these functions trust shapes and loop without the GIL.
Both kernels are matched against numpy references in tests/test_composite.py.

Resampling is separable, vertical pass first so that every output row is independent (rows run
in parallel, each with its own scratch row): a destination sample of width r source samples
takes the area average of the source samples it covers when r > 1 (shrinking) and the bilinear
interpolation of its two neighbours when r <= 1 (enlarging); both meet at r == 1. Taps that fall
outside the source plane are dropped and the rest renormalised.

Sample positions, in luma pixel units with pixel i centred at i + 0.5: chroma sample j sits at
2j + 0.5 horizontally (co-sited with even luma columns) and 2j + 1 vertically (between two luma
rows): the MPEG-2 / H.264 "left" siting that WebRTC's codecs use.
"""

from libc.math cimport ceil, fabs, floor
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from cython.parallel cimport parallel, prange

ctypedef unsigned char u8

cdef enum:
    FIT_CONTAIN = 0
    FIT_COVER = 1
    # columns of the geometry array, one row per tile
    G_X = 0
    G_Y = 1
    G_W = 2
    G_H = 3
    G_SRC_W = 4
    G_SRC_H = 5
    G_FIT = 6
    G_BORDER = 7
    G_DRAW = 8
    G_COLS = 9


cdef struct Axis:
    # one axis of one tile on one plane; ranges are plane sample indices clipped to the plane
    int r0, r1          # the tile rectangle
    int i0, i1          # inside the border
    int c0, c1          # the scaled content (empty when the tile has no source)
    double a, b         # destination sample i is centred at source sample a * i + b
    double scale        # source samples per destination sample
    int taps            # most taps any destination sample needs
    int n_src           # source samples on this axis


cdef struct PlaneTile:
    const u8* src
    Py_ssize_t stride
    Axis h, v
    int draw
    u8 border_val
    int hx0, hx1        # source columns the horizontal pass reads
    int* hstart         # per content column: first source column
    float* hw           # per content column: `h.taps` weights, zero-padded
    int hcopy           # horizontal pass is a plain copy from column c + hoff
    int hoff


cdef inline int _ceil_int(double value) noexcept nogil:
    return <int>ceil(value)


cdef inline int _clip(int value, int lo, int hi) noexcept nogil:
    if value < lo:
        return lo
    if value > hi:
        return hi
    return value


cdef int compute_taps(double c, double r, int n, int* start, float* w) noexcept nogil:
    """Weights of the source samples for a destination sample centred at c, r samples wide.

    Writes the first source index to start and the weights to w; returns how many there are.
    """
    cdef int k0, k1, k, m = 0, first = -1, last = -1
    cdef double lo = 0.0, hi = 0.0, weight, total = 0.0
    cdef double buf[2]
    if r > 1.0:
        lo = c - 0.5 * r
        hi = c + 0.5 * r
        k0 = <int>floor(lo + 0.5)
        k1 = <int>ceil(hi - 0.5)
    else:
        k0 = <int>floor(c)
        k1 = k0 + 1
    if k0 < 0:
        k0 = 0
    if k1 > n - 1:
        k1 = n - 1
    for k in range(k0, k1 + 1):
        if r > 1.0:
            weight = (hi if hi < k + 0.5 else k + 0.5) - (lo if lo > k - 0.5 else k - 0.5)
        else:
            weight = 1.0 - fabs(k - c)
        if weight > 1e-12:
            if first < 0:
                first = k
            last = k
            total += weight
    if total <= 1e-12:
        k = <int>floor(c + 0.5)
        start[0] = _clip(k, 0, n - 1)
        w[0] = 1.0
        return 1
    for k in range(first, last + 1):
        if r > 1.0:
            weight = (hi if hi < k + 0.5 else k + 0.5) - (lo if lo > k - 0.5 else k - 0.5)
        else:
            weight = 1.0 - fabs(k - c)
        if weight < 0.0:
            weight = 0.0
        w[m] = <float>(weight / total)
        m += 1
    start[0] = first
    return m


cdef void setup_axis(Axis* ax, int rect0, int rect_n, int border, int content0, int content_n,
                     double src0, double src_n, int has_content, int n_src, int factor,
                     double offset, int plane_n) noexcept nogil:
    """Map one axis of a tile (luma units) onto one plane (sample indices)."""
    # destination sample i of this plane sits at luma position factor * i + offset
    ax.r0 = _clip(_ceil_int((rect0 - offset) / factor), 0, plane_n)
    ax.r1 = _clip(_ceil_int((rect0 + rect_n - offset) / factor), 0, plane_n)
    ax.i0 = _clip(_ceil_int((rect0 + border - offset) / factor), ax.r0, ax.r1)
    ax.i1 = _clip(_ceil_int((rect0 + rect_n - border - offset) / factor), ax.i0, ax.r1)
    ax.n_src = n_src
    if has_content:
        ax.c0 = _clip(_ceil_int((content0 - offset) / factor), ax.i0, ax.i1)
        ax.c1 = _clip(_ceil_int((content0 + content_n - offset) / factor), ax.c0, ax.i1)
        ax.scale = src_n / content_n
        ax.a = ax.scale
        ax.b = ((offset - content0) * ax.scale + src0 - offset) / factor
        ax.taps = <int>ceil(ax.scale) + 2 if ax.scale > 1.0 else 2
    else:
        ax.c0 = ax.i0
        ax.c1 = ax.i0
        ax.scale = 1.0
        ax.a = 1.0
        ax.b = 0.0
        ax.taps = 1


cdef void fit_tile(const long long* g, int* content, double* crop) noexcept nogil:
    """Content rectangle (x, y, w, h) in the frame and source crop (x, y, w, h) for a tile."""
    cdef long long bw = g[G_BORDER]
    cdef double iw = g[G_W] - 2 * bw, ih = g[G_H] - 2 * bw
    cdef double sw = g[G_SRC_W], sh = g[G_SRC_H], scale
    cdef int cw, ch
    if g[G_FIT] == FIT_COVER:
        scale = iw / sw if iw / sw > ih / sh else ih / sh
        content[0] = <int>(g[G_X] + bw)
        content[1] = <int>(g[G_Y] + bw)
        content[2] = <int>iw
        content[3] = <int>ih
        crop[2] = iw / scale
        crop[3] = ih / scale
        crop[0] = (sw - crop[2]) / 2.0
        crop[1] = (sh - crop[3]) / 2.0
    else:
        scale = iw / sw if iw / sw < ih / sh else ih / sh
        cw = <int>floor(sw * scale + 0.5)
        ch = <int>floor(sh * scale + 0.5)
        cw = _clip(cw, 1, <int>iw)
        ch = _clip(ch, 1, <int>ih)
        content[0] = <int>(g[G_X] + bw + (<int>iw - cw) // 2)
        content[1] = <int>(g[G_Y] + bw + (<int>ih - ch) // 2)
        content[2] = cw
        content[3] = ch
        crop[0] = 0.0
        crop[1] = 0.0
        crop[2] = sw
        crop[3] = sh


def fit_geometry(const long long[::1] g):
    """The content rectangle and source crop fit_tile computes; for tests and reports."""
    cdef int content[4]
    cdef double crop[4]
    fit_tile(&g[0], content, crop)
    return (content[0], content[1], content[2], content[3]), (crop[0], crop[1], crop[2], crop[3])


cdef int build_htable(PlaneTile* t) noexcept nogil:
    """Horizontal weights of every content column; 0 on success, -1 when out of memory."""
    cdef int n = t.h.c1 - t.h.c0, j, m, k, start
    cdef float* w
    t.hstart = NULL
    t.hw = NULL
    t.hcopy = 0
    t.hx0 = 0
    t.hx1 = 0
    if n <= 0:
        return 0
    t.hstart = <int*>malloc(n * sizeof(int))
    t.hw = <float*>calloc(n * t.h.taps, sizeof(float))
    if t.hstart == NULL or t.hw == NULL:
        return -1
    t.hcopy = 1
    t.hx0 = t.h.n_src
    for j in range(n):
        w = t.hw + j * t.h.taps
        m = compute_taps(t.h.a * (t.h.c0 + j) + t.h.b, t.h.scale, t.h.n_src, &start, w)
        t.hstart[j] = start
        if start < t.hx0:
            t.hx0 = start
        if start + m > t.hx1:
            t.hx1 = start + m
        if m != 1 or w[0] != 1.0 or start - (t.h.c0 + j) != t.hstart[0] - t.h.c0:
            t.hcopy = 0
    t.hoff = t.hstart[0] - t.h.c0
    return 0


cdef void draw_row(PlaneTile* t, int y, u8* row, u8 bg, float* tmp, float* vw) noexcept nogil:
    """Draw row y of one tile (border, letterbox bars and scaled content) into row."""
    cdef int x, j, k, n, start, width, st
    cdef const u8* s
    cdef float wk, acc
    cdef const float* wj
    if y < t.v.r0 or y >= t.v.r1 or t.h.r0 >= t.h.r1:
        return
    if y < t.v.i0 or y >= t.v.i1:
        memset(row + t.h.r0, t.border_val, t.h.r1 - t.h.r0)
        return
    if t.h.i0 > t.h.r0:
        memset(row + t.h.r0, t.border_val, t.h.i0 - t.h.r0)
    if t.h.r1 > t.h.i1:
        memset(row + t.h.i1, t.border_val, t.h.r1 - t.h.i1)
    if y < t.v.c0 or y >= t.v.c1 or t.h.c0 >= t.h.c1:
        memset(row + t.h.i0, bg, t.h.i1 - t.h.i0)
        return
    if t.h.c0 > t.h.i0:
        memset(row + t.h.i0, bg, t.h.c0 - t.h.i0)
    if t.h.i1 > t.h.c1:
        memset(row + t.h.c1, bg, t.h.i1 - t.h.c1)

    n = compute_taps(t.v.a * y + t.v.b, t.v.scale, t.v.n_src, &start, vw)
    if n == 1 and t.hcopy:
        memcpy(row + t.h.c0, t.src + start * t.stride + t.h.c0 + t.hoff, t.h.c1 - t.h.c0)
        return
    width = t.hx1 - t.hx0
    s = t.src + start * t.stride + t.hx0
    wk = vw[0]
    for x in range(width):
        tmp[x] = wk * s[x]
    for k in range(1, n):
        s = s + t.stride
        wk = vw[k]
        for x in range(width):
            tmp[x] += wk * s[x]
    if t.hcopy:
        st = t.hoff - t.hx0
        for x in range(t.h.c0, t.h.c1):
            acc = tmp[x + st] + 0.5
            row[x] = <u8>(acc if acc < 255.0 else 255.0)
        return
    for j in range(t.h.c1 - t.h.c0):
        st = t.hstart[j] - t.hx0
        wj = t.hw + j * t.h.taps
        acc = 0.5
        for k in range(t.h.taps):
            acc += wj[k] * tmp[st + k]
        row[t.h.c0 + j] = <u8>(acc if acc < 255.0 else 255.0)


def composite_planes(list sources, const long long[:, ::1] geom, tuple out_planes,
                     const u8[::1] background, const u8[:, ::1] border_colors,
                     bint fill_background, int num_threads):
    """Draw every tile whose draw flag is set, in order, into the three output planes.

    sources: per tile None or (Y, U, V) uint8 arrays (rows may be padded, samples contiguous).
    geom: (tiles, 9) int64: x, y, w, h, source w, source h, fit (0 contain, 1 cover), border, draw.
    out_planes: (Y, U, V) writable uint8 arrays. background: Y, U, V values. border_colors:
    (tiles, 3). fill_background: paint every row with the background first (a full redraw).
    Raises MemoryError when scratch memory cannot be had; the frame is then untouched.
    """
    cdef Py_ssize_t ntiles = geom.shape[0]
    cdef int p, t, y, factor, plane_w, plane_h, maxw, maxv, err = 0, has
    cdef int* errp = &err
    cdef double hoff_o, voff_o
    cdef int content[4]
    cdef double crop[4]
    cdef u8[:, :] out
    cdef const u8[:, :] src
    cdef PlaneTile* tiles = <PlaneTile*>calloc(ntiles if ntiles > 0 else 1, sizeof(PlaneTile))
    cdef float* tmp
    cdef float* vw
    cdef u8* row
    cdef u8 bg
    if tiles == NULL:
        raise MemoryError()
    keep = []
    try:
        for p in range(3):
            out = out_planes[p]
            plane_h = out.shape[0]
            plane_w = out.shape[1]
            factor = 1 if p == 0 else 2
            hoff_o = 0.5
            voff_o = 0.5 if p == 0 else 1.0
            bg = background[p]
            maxw = 1
            maxv = 1
            for t in range(ntiles):
                tiles[t].draw = geom[t, G_DRAW] != 0
                if not tiles[t].draw:
                    continue
                has = sources[t] is not None
                tiles[t].border_val = border_colors[t, p]
                if has:
                    src = sources[t][p]
                    keep.append(src)
                    tiles[t].src = &src[0, 0]
                    tiles[t].stride = src.strides[0]
                    fit_tile(&geom[t, 0], content, crop)
                else:
                    tiles[t].src = NULL
                    content[0] = content[1] = content[2] = content[3] = 0
                    crop[0] = crop[1] = crop[2] = crop[3] = 0.0
                has = has and geom[t, G_W] - 2 * geom[t, G_BORDER] > 0 \
                    and geom[t, G_H] - 2 * geom[t, G_BORDER] > 0
                setup_axis(&tiles[t].h, <int>geom[t, G_X], <int>geom[t, G_W], <int>geom[t, G_BORDER],
                           content[0], content[2], crop[0], crop[2], has,
                           src.shape[1] if has else 0, factor, hoff_o, plane_w)
                setup_axis(&tiles[t].v, <int>geom[t, G_Y], <int>geom[t, G_H], <int>geom[t, G_BORDER],
                           content[1], content[3], crop[1], crop[3], has,
                           src.shape[0] if has else 0, factor, voff_o, plane_h)
                if build_htable(&tiles[t]) != 0:
                    raise MemoryError()
                if tiles[t].hx1 - tiles[t].hx0 + tiles[t].h.taps > maxw:
                    maxw = tiles[t].hx1 - tiles[t].hx0 + tiles[t].h.taps
                if tiles[t].v.taps > maxv:
                    maxv = tiles[t].v.taps
            with nogil, parallel(num_threads=num_threads):
                # calloc: the columns past a tile's window stay finite, so zero-padded taps add 0
                tmp = <float*>calloc(maxw, sizeof(float))
                vw = <float*>malloc(maxv * sizeof(float))
                if tmp == NULL or vw == NULL:
                    errp[0] = 1
                else:
                    for y in prange(plane_h, schedule="dynamic", chunksize=8):
                        row = &out[y, 0]
                        if fill_background:
                            memset(row, bg, plane_w)
                        for t in range(ntiles):
                            if tiles[t].draw:
                                draw_row(&tiles[t], y, row, bg, tmp, vw)
                free(tmp)
                free(vw)
            for t in range(ntiles):
                free(tiles[t].hstart)
                free(tiles[t].hw)
                tiles[t].hstart = NULL
                tiles[t].hw = NULL
            if err:
                raise MemoryError()
    finally:
        for t in range(ntiles):
            free(tiles[t].hstart)
            free(tiles[t].hw)
        free(tiles)


def blend_mask(tuple out_planes, const u8[:, ::1] mask, int x, int y, const u8[::1] color,
               int opacity):
    """Blend colour (Y, U, V) through an 8-bit coverage mask placed at luma (x, y).

    Luma: out = (out * (255 - a) + c * a + 127) // 255 with a = (mask * opacity + 127) // 255.
    Chroma sample (i, j) takes a = the rounded mean of the four luma mask values it covers
    (rows 2i, 2i+1, columns 2j, 2j+1; values outside the mask count as 0), scaled the same way.
    The mask is clipped to the frame.
    """
    cdef u8[:, :] Y = out_planes[0]
    cdef u8[:, :] U = out_planes[1]
    cdef u8[:, :] V = out_planes[2]
    cdef int mh = mask.shape[0], mw = mask.shape[1]
    cdef int H = Y.shape[0], W = Y.shape[1], CH = U.shape[0], CW = U.shape[1]
    cdef int r, c, r0, r1, c0, c1, ci, cj, dr, dc, mr, mc, s, a
    cdef int cy = color[0], cu = color[1], cv = color[2]
    r0 = y if y > 0 else 0
    r1 = y + mh if y + mh < H else H
    c0 = x if x > 0 else 0
    c1 = x + mw if x + mw < W else W
    if r0 >= r1 or c0 >= c1:
        return
    with nogil:
        for r in prange(r0, r1, schedule="static"):
            for c in range(c0, c1):
                a = (mask[r - y, c - x] * opacity + 127) // 255
                if a:
                    Y[r, c] = <u8>((Y[r, c] * (255 - a) + cy * a + 127) // 255)
        for ci in prange(r0 // 2, (r1 + 1) // 2 if (r1 + 1) // 2 < CH else CH, schedule="static"):
            for cj in range(c0 // 2, (c1 + 1) // 2 if (c1 + 1) // 2 < CW else CW):
                s = 0
                for dr in range(2):
                    mr = 2 * ci + dr - y
                    if mr < 0 or mr >= mh:
                        continue
                    for dc in range(2):
                        mc = 2 * cj + dc - x
                        if 0 <= mc < mw:
                            s = s + mask[mr, mc]
                a = (((s + 2) // 4) * opacity + 127) // 255
                if a:
                    U[ci, cj] = <u8>((U[ci, cj] * (255 - a) + cu * a + 127) // 255)
                    V[ci, cj] = <u8>((V[ci, cj] * (255 - a) + cv * a + 127) // 255)
