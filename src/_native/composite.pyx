# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compositing kernels: resample tiles into one yuv420p frame, and alpha-blend masks onto it.

Validation happens in skymix.compose.video; these functions trust shapes and loop without the GIL.
Both kernels are matched against numpy references in tests/test_composite.py.

Resampling is separable, vertical pass first so that every output row is independent (the rows
of all three planes run in parallel, each thread with its own float scratch row; the passes are
the SIMD loops of resample.h): a destination sample of width r source samples takes the area
average of the source samples it covers when r > 1 (shrinking) and the bilinear interpolation of
its two neighbours when r <= 1 (enlarging); both meet at r == 1. Taps that fall outside the
source plane are dropped and the rest renormalised.

Sample positions, in luma pixel units with pixel i centred at i + 0.5: chroma sample j sits at
2j + 0.5 horizontally (co-sited with even luma columns) and 2j + 1 vertically (between two luma
rows): the MPEG-2 / H.264 "left" siting that WebRTC's codecs use.

Per tile and plane the source window, taps and weights of every content column and row depend
only on the geometry; they are built once (TileTables) and cached by geometry across calls.
Two shortcuts give the same values as the general passes: a plain copy (one tap of weight 1
each way) is a memcpy, and an exact 2:1 shrink (every weight 1/2, columns 2j and 2j + 1) sums
bytes in integers.
"""

from libc.math cimport ceil, fabs, floor
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from libc.stdint cimport int32_t, uint8_t
from cython.parallel cimport parallel, prange

cdef extern from "resample.h" nogil:
    void resample_init()
    void resample_vpass(const uint8_t* src, Py_ssize_t stride, const float* w, int n, float* out,
                        int width)
    void resample_hpass(const float* row, const int32_t* start, const float* w, int taps, int n,
                        uint8_t* out)
    void resample_hhalf(const float* row, int n, uint8_t* out)
    void resample_box2(const uint8_t* src, Py_ssize_t stride, int n, uint8_t* out)

resample_init()

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
    int32_t* hstart     # per content column: first source column, relative to hx0
    float* hw           # `htaps` weights per content column, laid out for resample_hpass
    int htaps
    int hcopy           # horizontal pass is a plain copy from column c + hoff
    int hhalf           # horizontal pass is an exact 2:1 shrink: column j from hx0 + 2j, 2j + 1
    int hoff
    int* vstart         # per content row: first source row
    int* vcount         # per content row: number of taps
    float* vw           # `v.taps` weights per content row


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
    """Start and weights of every content column in resample_hpass's layout (see resample.h).

    Every column gets the taps the widest column needs, rounded up to 2, 4 or a multiple of 8 (zero
    weights pad the rest), not the bound h.taps. Returns 0 on success, -1 when out of memory.
    """
    cdef int n = t.h.c1 - t.h.c0, nb, j, m, start, bound = t.h.taps
    cdef int* count
    cdef float* scratch
    cdef float* w
    t.hstart = NULL
    t.hw = NULL
    t.hcopy = 0
    t.hhalf = 0
    t.hx0 = 0
    t.hx1 = 0
    t.htaps = 0
    if n <= 0:
        return 0
    nb = (n + 7) // 8
    t.hstart = <int32_t*>malloc(nb * 8 * sizeof(int32_t))
    scratch = <float*>malloc(n * bound * sizeof(float))
    count = <int*>malloc(n * sizeof(int))
    if t.hstart == NULL or scratch == NULL or count == NULL:
        free(scratch)
        free(count)
        return -1
    t.hcopy = 1
    t.hhalf = 1
    t.hx0 = t.h.n_src
    t.htaps = 1
    for j in range(n):
        w = scratch + j * bound
        m = compute_taps(t.h.a * (t.h.c0 + j) + t.h.b, t.h.scale, t.h.n_src, &start, w)
        count[j] = m
        t.hstart[j] = start
        if start < t.hx0:
            t.hx0 = start
        if start + m > t.hx1:
            t.hx1 = start + m
        if m > t.htaps:
            t.htaps = m
        if m != 1 or w[0] != 1.0 or start - (t.h.c0 + j) != t.hstart[0] - t.h.c0:
            t.hcopy = 0
        if m != 2 or w[0] != 0.5 or w[1] != 0.5 or start != t.hstart[0] + 2 * j:
            t.hhalf = 0
    t.hoff = t.hstart[0] - t.h.c0
    t.htaps = 2 if t.htaps <= 2 else (4 if t.htaps <= 4 else (t.htaps + 7) // 8 * 8)
    t.hw = <float*>calloc(nb * 8 * t.htaps, sizeof(float))
    if t.hw != NULL:
        for j in range(n):
            t.hstart[j] -= t.hx0
            memcpy(t.hw + j * t.htaps, scratch + j * bound, count[j] * sizeof(float))
        for j in range(n, nb * 8):
            t.hstart[j] = t.hstart[n - 1]
    free(scratch)
    free(count)
    return 0 if t.hw != NULL else -1


cdef int build_vtable(PlaneTile* t) noexcept nogil:
    """Start, tap count and weights of every content row; 0 on success, -1 when out of memory."""
    cdef int n = t.v.c1 - t.v.c0, i
    t.vstart = NULL
    t.vcount = NULL
    t.vw = NULL
    if n <= 0:
        return 0
    t.vstart = <int*>malloc(n * sizeof(int))
    t.vcount = <int*>malloc(n * sizeof(int))
    t.vw = <float*>malloc(n * t.v.taps * sizeof(float))
    if t.vstart == NULL or t.vcount == NULL or t.vw == NULL:
        return -1
    for i in range(n):
        t.vcount[i] = compute_taps(t.v.a * (t.v.c0 + i) + t.v.b, t.v.scale, t.v.n_src,
                                   &t.vstart[i], t.vw + i * t.v.taps)
    return 0


cdef void draw_row(PlaneTile* t, int y, u8* row, u8 bg, float* tmp) noexcept nogil:
    """Draw row y of one tile (border, letterbox bars and scaled content) into row."""
    cdef int n, start
    cdef const float* vw
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

    n = t.vcount[y - t.v.c0]
    start = t.vstart[y - t.v.c0]
    vw = t.vw + (y - t.v.c0) * t.v.taps
    if n == 1 and t.hcopy:
        memcpy(row + t.h.c0, t.src + start * t.stride + t.h.c0 + t.hoff, t.h.c1 - t.h.c0)
        return
    if n == 2 and t.hhalf and vw[0] == 0.5 and vw[1] == 0.5:
        resample_box2(t.src + start * t.stride + t.hx0, t.stride, t.h.c1 - t.h.c0, row + t.h.c0)
        return
    resample_vpass(t.src + start * t.stride + t.hx0, t.stride, vw, n, tmp, t.hx1 - t.hx0)
    if t.hhalf:
        resample_hhalf(tmp, t.h.c1 - t.h.c0, row + t.h.c0)
    else:
        resample_hpass(tmp, t.hstart, t.hw, t.htaps, t.h.c1 - t.h.c0, row + t.h.c0)


cdef class TileTables:
    """The geometry and resampling tables of one tile on the three planes of one output size.

    They depend only on the tile's rectangle, fit, border and source size, so composite_planes
    keeps them in a small cache and a layout that stays put does not recompute them every frame.
    """
    cdef PlaneTile planes[3]

    def __dealloc__(self):
        cdef int p
        for p in range(3):
            free(self.planes[p].hstart)
            free(self.planes[p].hw)
            free(self.planes[p].vstart)
            free(self.planes[p].vcount)
            free(self.planes[p].vw)


cdef dict _tables = {}
cdef enum:
    MAX_CACHED_TABLES = 64


cdef TileTables tile_tables(const long long* g, int out_w, int out_h):
    """The cached tables of a tile with geometry row g (see composite_planes), built if new."""
    key = (g[G_X], g[G_Y], g[G_W], g[G_H], g[G_SRC_W], g[G_SRC_H], g[G_FIT], g[G_BORDER],
           out_w, out_h)
    cdef TileTables tab = _tables.get(key)
    cdef int p, factor, has, n_w, n_h
    cdef int content[4]
    cdef double crop[4]
    cdef PlaneTile* t
    if tab is not None:
        return tab
    tab = TileTables()
    has = g[G_SRC_W] > 0 and g[G_W] - 2 * g[G_BORDER] > 0 and g[G_H] - 2 * g[G_BORDER] > 0
    if has:
        fit_tile(g, content, crop)
    else:
        content[0] = content[1] = content[2] = content[3] = 0
        crop[0] = crop[1] = crop[2] = crop[3] = 0.0
    for p in range(3):
        t = &tab.planes[p]
        factor = 1 if p == 0 else 2
        n_w = <int>g[G_SRC_W] if p == 0 else (<int>g[G_SRC_W] + 1) // 2
        n_h = <int>g[G_SRC_H] if p == 0 else (<int>g[G_SRC_H] + 1) // 2
        setup_axis(&t.h, <int>g[G_X], <int>g[G_W], <int>g[G_BORDER], content[0], content[2],
                   crop[0], crop[2], has, n_w, factor, 0.5,
                   out_w if p == 0 else (out_w + 1) // 2)
        setup_axis(&t.v, <int>g[G_Y], <int>g[G_H], <int>g[G_BORDER], content[1], content[3],
                   crop[1], crop[3], has, n_h, factor, 0.5 if p == 0 else 1.0,
                   out_h if p == 0 else (out_h + 1) // 2)
        if build_htable(t) != 0 or build_vtable(t) != 0:
            raise MemoryError()
    if len(_tables) >= MAX_CACHED_TABLES:
        _tables.clear()
    _tables[key] = tab
    return tab


def composite_planes(list sources, const long long[:, ::1] geom, tuple out_planes,
                     const u8[::1] background, const u8[:, ::1] border_colors,
                     bint fill_background, int num_threads):
    """Draw every tile whose draw flag is set, in order, into the three output planes.

    sources: per tile None, (Y, U, V) uint8 arrays (rows may be padded, samples contiguous) or a
    yuv420p av.VideoFrame of the size geom gives (read through its planes' buffers).
    geom: (tiles, 9) int64: x, y, w, h, source w, source h, fit (0 contain, 1 cover), border, draw.
    out_planes: (Y, U, V) writable uint8 arrays. background: Y, U, V values. border_colors:
    (tiles, 3). fill_background: paint every row with the background first (a full redraw).
    Raises MemoryError when scratch memory cannot be had; the frame is then untouched.
    """
    cdef Py_ssize_t ntiles = geom.shape[0]
    cdef int p, t, y, r, maxw = 1, total, err = 0
    cdef bint is_frame
    cdef int* errp = &err
    cdef u8[:, :] out
    cdef const u8[:, :] src
    cdef const u8[::1] flat
    cdef TileTables tab
    cdef PlaneTile* tiles = <PlaneTile*>calloc(3 * ntiles if ntiles > 0 else 1, sizeof(PlaneTile))
    cdef PlaneTile* pt
    cdef float* tmp
    cdef u8* row
    cdef u8* out_ptr[3]
    cdef Py_ssize_t out_stride[3]
    cdef int plane_w[3]
    cdef int plane_h[3]
    cdef u8 bg[3]
    cdef int out_h = out_planes[0].shape[0], out_w = out_planes[0].shape[1]
    if tiles == NULL:
        raise MemoryError()
    keep = []
    try:
        tables = [tile_tables(&geom[t, 0], out_w, out_h) if geom[t, G_DRAW] else None
                  for t in range(ntiles)]
        if not fill_background and tables.count(None) == ntiles:
            return
        for p in range(3):
            out = out_planes[p]
            out_ptr[p] = &out[0, 0]
            out_stride[p] = out.strides[0]
            plane_h[p] = out.shape[0]
            plane_w[p] = out.shape[1]
            bg[p] = background[p]
        for t in range(ntiles):
            if tables[t] is None:
                continue
            tab = tables[t]
            source = sources[t]
            is_frame = source is not None and type(source) is not tuple
            if is_frame:
                source = source.planes
            for p in range(3):
                pt = &tiles[p * ntiles + t]
                pt[0] = tab.planes[p]
                pt.draw = 1
                pt.border_val = border_colors[t, p]
                if is_frame:
                    flat = source[p]
                    keep.append(flat)
                    pt.src = &flat[0]
                    pt.stride = source[p].line_size
                elif source is not None:
                    src = source[p]
                    keep.append(src)
                    pt.src = &src[0, 0]
                    pt.stride = src.strides[0]
                if pt.hx1 - pt.hx0 + pt.htaps > maxw:
                    maxw = pt.hx1 - pt.hx0 + pt.htaps
        total = plane_h[0] + plane_h[1] + plane_h[2]
        with nogil, parallel(num_threads=num_threads):
            # calloc: the columns past a tile's window stay finite, so zero-padded taps add 0
            tmp = <float*>calloc(maxw, sizeof(float))
            if tmp == NULL:
                errp[0] = 1
            else:
                # the rows of the three planes, one after the other
                for y in prange(total, schedule="dynamic", chunksize=8):
                    p = 0 if y < plane_h[0] else (1 if y < plane_h[0] + plane_h[1] else 2)
                    r = y - (0 if p == 0 else (plane_h[0] if p == 1 else plane_h[0] + plane_h[1]))
                    row = out_ptr[p] + r * out_stride[p]
                    if fill_background:
                        memset(row, bg[p], plane_w[p])
                    for t in range(ntiles):
                        if tiles[p * ntiles + t].draw:
                            draw_row(&tiles[p * ntiles + t], r, row, bg[p], tmp)
            free(tmp)
        if err:
            raise MemoryError()
    finally:
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
