# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compositing kernels: resample tiles into one yuv420p frame, and alpha-blend masks onto it.

Validation happens in skymix.compose.video; these functions trust shapes and loop without the GIL.
Both kernels are matched against numpy references in tests/test_composite.py.

Resampling is separable, vertical pass first so that every output row is independent (the rows
of all three planes are shared out in chunks to the calling thread and the workers of workpool.h,
each with its own float scratch row; the passes are the SIMD loops of resample.h, chosen at import
for the CPU, or by set_simd): a destination sample of width r source samples takes the area
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
bytes in integers. A full redraw paints the background only where no tile is.
"""

from libc.math cimport ceil, fabs, floor
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from libc.stdint cimport int32_t, uint8_t
from cpython.buffer cimport (PyBUF_STRIDED, PyBUF_STRIDED_RO, PyBUF_WRITABLE, PyBuffer_Release,
                            PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_FromStringAndSize

cdef extern from "resample.h" nogil:
    void resample_init()
    int resample_simd_max()
    int resample_simd()
    void resample_set_simd(int level)
    void resample_vpass(const uint8_t* src, Py_ssize_t stride, const float* w, int n, float* out,
                        int width)
    void resample_hpass(const float* row, const int32_t* start, const float* w, int taps, int n,
                        uint8_t* out)
    void resample_hhalf(const float* row, int n, uint8_t* out)
    void resample_box2(const uint8_t* src, Py_ssize_t stride, int n, uint8_t* out)
    int resample_has_hpass16()
    void resample_hpass16(const float* row, const int32_t* base, const int32_t* idx,
                          const float* w, int taps, int block, int n, uint8_t* out)

ctypedef void (*pool_fn)(void* ctx, int chunk, int slot) noexcept nogil

cdef extern from "workpool.h" nogil:
    int SKYMIX_POOL_THREADS
    void pool_init()
    int pool_slots(int threads)
    void pool_run(pool_fn fn, void* ctx, int n, int threads)

resample_init()
pool_init()

_SIMD_PATHS = ("c", "avx2", "avx512")


def simd_paths():
    """The inner-loop implementations this CPU can run, the portable C loops first."""
    return _SIMD_PATHS[:resample_simd_max() + 1]


def simd_path():
    """The implementation in use: the best of simd_paths() unless set_simd chose another."""
    return _SIMD_PATHS[resample_simd()]


def set_simd(str path):
    """Use the inner loops `path` (one of simd_paths()) from now on; returns the previous one.

    For tests and comparisons: both give the same results up to float rounding. Not to be called
    while another thread composites.
    """
    if path not in simd_paths():
        raise ValueError(f"SIMD path {path!r} is not one of {simd_paths()} on this CPU")
    previous = simd_path()
    resample_set_simd(_SIMD_PATHS.index(path))
    return previous


def threaded():
    """True when the module was built with its worker threads (C11 atomics and POSIX threads)."""
    return bool(SKYMIX_POOL_THREADS)


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
    int hblock          # resample_hpass16's outputs per block (16 or 8); 0 where it cannot run
    int htaps16
    int32_t* hbase      # per block: first source column, relative to hx0
    int32_t* hidx       # per block, 16 lanes: first source column relative to the block's base
    float* hw16         # per block, per tap, 16 lanes of weights
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


cdef int build_h16(PlaneTile* t, const float* weights, const int* count, int bound) noexcept nogil:
    """resample_hpass16's tables (see resample.h), from the relative starts in t.hstart and the
    `bound`-strided weights; sets t.hblock to 0 when some block's taps span more than 32 floats.
    Returns 0 on success, -1 when out of memory.
    """
    cdef int n = t.h.c1 - t.h.c0, block, nb, b, i, j, k, base, m = 1, fits
    for j in range(n):
        if count[j] > m:
            m = count[j]
    block = 32
    while True:
        block //= 2
        if block < 8:
            return 0
        fits = 1
        j = 0
        while j < n and fits:
            base = t.hstart[j]
            for i in range(j, min(j + block, n)):
                if t.hstart[i] < base:
                    base = t.hstart[i]
            for i in range(j, min(j + block, n)):
                if t.hstart[i] - base + count[i] > 32:
                    fits = 0
            j += block
        if fits:
            break
    nb = (n + block - 1) // block
    t.hbase = <int32_t*>malloc(nb * sizeof(int32_t))
    t.hidx = <int32_t*>calloc(nb * 16, sizeof(int32_t))
    t.hw16 = <float*>calloc(nb * 16 * m, sizeof(float))
    if t.hbase == NULL or t.hidx == NULL or t.hw16 == NULL:
        return -1
    for b in range(nb):
        base = t.hstart[b * block]
        for i in range(b * block, min(b * block + block, n)):
            if t.hstart[i] < base:
                base = t.hstart[i]
        t.hbase[b] = base
        for i in range(b * block, min(b * block + block, n)):
            t.hidx[16 * b + i - b * block] = t.hstart[i] - base
            for k in range(count[i]):
                t.hw16[16 * (m * b + k) + i - b * block] = weights[i * bound + k]
    t.hblock = block
    t.htaps16 = m
    return 0


cdef int build_htable(PlaneTile* t) noexcept nogil:
    """Start and weights of every content column in resample_hpass's layout (see resample.h).

    Every column gets the taps the widest column needs, rounded up to 2, 4 or a multiple of 8 (zero
    weights pad the rest), not the bound h.taps. Returns 0 on success, -1 when out of memory.
    """
    cdef int n = t.h.c1 - t.h.c0, nb, j, m, start, bound = t.h.taps
    cdef int* count
    cdef float* scratch
    cdef float* w
    cdef bint ok
    t.hstart = NULL
    t.hw = NULL
    t.hcopy = 0
    t.hhalf = 0
    t.hx0 = 0
    t.hx1 = 0
    t.htaps = 0
    t.hblock = 0
    t.hbase = NULL
    t.hidx = NULL
    t.hw16 = NULL
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
    ok = t.hw != NULL
    if ok and resample_simd_max() >= 2 and not t.hcopy and not t.hhalf:
        ok = build_h16(t, scratch, count, bound) == 0
    free(scratch)
    free(count)
    return 0 if ok else -1


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
    if t.hblock and resample_has_hpass16():
        resample_hpass16(tmp, t.hbase, t.hidx, t.hw16, t.htaps16, t.hblock, t.h.c1 - t.h.c0,
                         row + t.h.c0)
    elif t.hhalf:
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
            free(self.planes[p].hbase)
            free(self.planes[p].hidx)
            free(self.planes[p].hw16)


cdef dict _tables = {}
cdef enum:
    MAX_CACHED_TABLES = 64


cdef TileTables tile_tables(const long long* g, int out_w, int out_h):
    """The cached tables of a tile with geometry row g (see composite_planes), built if new."""
    cdef long long k[10]
    memcpy(k, g, G_DRAW * sizeof(long long))   # x .. border
    k[8] = out_w
    k[9] = out_h
    key = PyBytes_FromStringAndSize(<char*>k, sizeof(k))
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


cdef enum:
    CHUNK_ROWS = 8      # output rows per chunk of work


cdef struct Job:
    # one composite_planes call: the rows of Y, U and V one after the other, in chunks
    PlaneTile* tiles    # per plane, per tile (only those with draw set are drawn)
    int ntiles
    u8* out_ptr[3]
    Py_ssize_t out_stride[3]
    int plane_w[3]
    int plane_h[3]
    u8 bg[3]
    int fill_background
    int* row_gaps[3]    # with fill_background: per row r, its gaps are row_gaps[p][2 r] up to
    int* gaps[3]        # row_gaps[p][2 r + 1] of gaps[p], (x0, x1) spans no tile covers
    int total
    float** tmp         # per pool slot, a zeroed float row (the columns past a tile's window
                        # stay finite, so zero-padded taps add 0)


cdef void draw_chunk(void* ctx, int chunk, int slot) noexcept nogil:
    cdef Job* job = <Job*>ctx
    cdef int y, p, r, t, g, y1 = (chunk + 1) * CHUNK_ROWS
    cdef u8* row
    cdef PlaneTile* tiles
    if y1 > job.total:
        y1 = job.total
    for y in range(chunk * CHUNK_ROWS, y1):
        p = 0 if y < job.plane_h[0] else (1 if y < job.plane_h[0] + job.plane_h[1] else 2)
        r = y - (0 if p == 0 else (job.plane_h[0] if p == 1 else job.plane_h[0] + job.plane_h[1]))
        row = job.out_ptr[p] + r * job.out_stride[p]
        if job.fill_background:
            # the background only where no tile is: tiles paint every sample of their rectangles
            for g in range(job.row_gaps[p][2 * r], job.row_gaps[p][2 * r + 1]):
                memset(row + job.gaps[p][2 * g], job.bg[p],
                       job.gaps[p][2 * g + 1] - job.gaps[p][2 * g])
        tiles = job.tiles + p * job.ntiles
        for t in range(job.ntiles):
            if tiles[t].draw:
                draw_row(&tiles[t], r, row, job.bg[p], job.tmp[slot])


cdef int find_gaps(Job* job, int p) noexcept nogil:
    """Fill job.row_gaps[p] and job.gaps[p]: per row of plane p, the spans no drawn tile covers.

    Rows are grouped in bands between the tiles' top and bottom edges, where the set of tiles a
    row crosses stays the same. Returns 0 on success, -1 when out of memory.
    """
    cdef int n = job.ntiles, h = job.plane_h[p], w = job.plane_w[p]
    cdef int i, j, k, r, nc = 0, nspan, ng = 0, first, x, cut
    cdef PlaneTile* tiles = job.tiles + p * n
    cdef int* cuts = <int*>malloc((2 * n + 2) * sizeof(int))
    cdef int* spans = <int*>malloc((2 * n + 2) * sizeof(int))
    job.row_gaps[p] = <int*>malloc(2 * h * sizeof(int))
    # at most n + 1 gaps per band and 2 n + 1 bands
    job.gaps[p] = <int*>malloc(2 * (n + 1) * (2 * n + 1) * sizeof(int))
    if cuts == NULL or spans == NULL or job.row_gaps[p] == NULL or job.gaps[p] == NULL:
        free(cuts)
        free(spans)
        return -1
    cuts[nc] = h
    nc += 1
    for i in range(n):
        if tiles[i].draw and tiles[i].h.r0 < tiles[i].h.r1 and tiles[i].v.r0 < tiles[i].v.r1:
            cuts[nc] = tiles[i].v.r0
            cuts[nc + 1] = tiles[i].v.r1
            nc += 2
    # sort the band edges (a few dozen: insertion sort)
    for i in range(1, nc):
        cut = cuts[i]
        j = i - 1
        while j >= 0 and cuts[j] > cut:
            cuts[j + 1] = cuts[j]
            j -= 1
        cuts[j + 1] = cut
    r = 0
    for k in range(nc):
        if cuts[k] <= r:
            continue
        # the band of rows r .. cuts[k] - 1: the spans of the tiles it crosses, sorted by start
        nspan = 0
        for i in range(n):
            if (tiles[i].draw and tiles[i].h.r0 < tiles[i].h.r1 and tiles[i].v.r0 <= r
                    and r < tiles[i].v.r1):
                j = nspan
                while j > 0 and spans[2 * (j - 1)] > tiles[i].h.r0:
                    spans[2 * j] = spans[2 * (j - 1)]
                    spans[2 * j + 1] = spans[2 * (j - 1) + 1]
                    j -= 1
                spans[2 * j] = tiles[i].h.r0
                spans[2 * j + 1] = tiles[i].h.r1
                nspan += 1
        # the gaps between them, shared by the band's rows
        first = ng
        x = 0
        for j in range(nspan):
            if spans[2 * j] > x:
                job.gaps[p][2 * ng] = x
                job.gaps[p][2 * ng + 1] = spans[2 * j]
                ng += 1
            if spans[2 * j + 1] > x:
                x = spans[2 * j + 1]
        if x < w:
            job.gaps[p][2 * ng] = x
            job.gaps[p][2 * ng + 1] = w
            ng += 1
        while r < cuts[k]:
            job.row_gaps[p][2 * r] = first
            job.row_gaps[p][2 * r + 1] = ng
            r += 1
    free(cuts)
    free(spans)
    return 0


cdef struct Buffers:
    # the buffers composite_planes holds while it draws
    Py_buffer* views
    int n


cdef int get_plane(Buffers* held, object plane, int writable, u8** ptr,
                   Py_ssize_t* stride) except -1:
    """Point at a plane (a numpy array or an av VideoPlane) and hold its buffer until released."""
    cdef Py_buffer* view = &held.views[held.n]
    PyObject_GetBuffer(plane, view, PyBUF_STRIDED if writable else PyBUF_STRIDED_RO)
    held.n += 1
    ptr[0] = <u8*>view.buf
    # a VideoPlane's buffer is one flat run of rows line_size bytes apart
    stride[0] = view.strides[0] if view.ndim == 2 else plane.line_size
    return 0


def composite_planes(list sources, const long long[:, ::1] geom, out,
                     const u8[::1] background, const u8[:, ::1] border_colors,
                     bint fill_background, int num_threads):
    """Draw every tile whose draw flag is set, in order, into the three output planes.

    sources: per tile None, (Y, U, V) uint8 arrays (rows may be padded, samples contiguous) or a
    yuv420p av.VideoFrame of the size geom gives (read through its planes' buffers).
    geom: (tiles, 9) int64: x, y, w, h, source w, source h, fit (0 contain, 1 cover), border, draw.
    out: a writable yuv420p av.VideoFrame or (Y, U, V) writable uint8 arrays of the same kind.
    background: Y, U, V values. border_colors: (tiles, 3). fill_background: paint every row with
    the background first (a full redraw). num_threads: threads to use, the calling one included
    (see workpool.h).
    Raises MemoryError when scratch memory cannot be had; the frame is then untouched.
    """
    cdef Py_ssize_t ntiles = geom.shape[0]
    cdef int p, t, maxw = 1, slots = pool_slots(num_threads), nchunks, out_w, out_h
    cdef bint is_frame
    cdef TileTables tab
    cdef Job job
    cdef Buffers held
    cdef PlaneTile* pt
    cdef const u8* src
    job.tiles = <PlaneTile*>calloc(3 * ntiles if ntiles > 0 else 1, sizeof(PlaneTile))
    job.tmp = <float**>calloc(slots, sizeof(float*))
    job.ntiles = <int>ntiles
    held.views = <Py_buffer*>calloc(3 * ntiles + 3, sizeof(Py_buffer))
    held.n = 0
    for p in range(3):
        job.row_gaps[p] = NULL
        job.gaps[p] = NULL
    try:
        if job.tiles == NULL or job.tmp == NULL or held.views == NULL:
            raise MemoryError()
        if type(out) is tuple:
            out_planes = out
            out_h = out_planes[0].shape[0]
            out_w = out_planes[0].shape[1]
        else:
            out_planes = out.planes
            out_h = out.height
            out_w = out.width
        tables = [tile_tables(&geom[t, 0], out_w, out_h) if geom[t, G_DRAW] else None
                  for t in range(ntiles)]
        if not fill_background and tables.count(None) == ntiles:
            return
        for p in range(3):
            get_plane(&held, out_planes[p], 1, &job.out_ptr[p], &job.out_stride[p])
            job.plane_h[p] = out_h if p == 0 else (out_h + 1) // 2
            job.plane_w[p] = out_w if p == 0 else (out_w + 1) // 2
            job.bg[p] = background[p]
        for t in range(ntiles):
            if tables[t] is None:
                continue
            tab = tables[t]
            source = sources[t]
            if source is not None and type(source) is not tuple:
                source = source.planes
            for p in range(3):
                pt = &job.tiles[p * ntiles + t]
                pt[0] = tab.planes[p]
                pt.draw = 1
                pt.border_val = border_colors[t, p]
                if source is not None:
                    get_plane(&held, source[p], 0, <u8**>&pt.src, &pt.stride)
                # resample_hpass16 reads 32 floats from a block's base
                if pt.hx1 - pt.hx0 + pt.htaps + 32 > maxw:
                    maxw = pt.hx1 - pt.hx0 + pt.htaps + 32
        for p in range(slots):
            job.tmp[p] = <float*>calloc(maxw, sizeof(float))
            if job.tmp[p] == NULL:
                raise MemoryError()
        job.fill_background = fill_background
        if fill_background:
            for p in range(3):
                if find_gaps(&job, p) != 0:
                    raise MemoryError()
        job.total = job.plane_h[0] + job.plane_h[1] + job.plane_h[2]
        nchunks = (job.total + CHUNK_ROWS - 1) // CHUNK_ROWS
        with nogil:
            pool_run(draw_chunk, &job, nchunks, num_threads)
    finally:
        for p in range(held.n):
            PyBuffer_Release(&held.views[p])
        free(held.views)
        for p in range(3):
            free(job.row_gaps[p])
            free(job.gaps[p])
        if job.tmp != NULL:
            for p in range(slots):
                free(job.tmp[p])
        free(job.tmp)
        free(job.tiles)


cdef struct BlendJob:
    u8* plane[3]
    Py_ssize_t stride[3]
    const u8* mask
    Py_ssize_t mask_stride
    int mh, mw, x, y
    int r0, r1, c0, c1     # luma rows and columns the clipped mask covers
    int ci0, ci1, cj0, cj1 # chroma rows and columns it touches
    int color[3]
    int opacity


cdef enum:
    BLEND_CHUNK = 16    # chroma rows (and their luma rows) per chunk


cdef inline unsigned int pair_cover(const u8* m, int mc, int mw) noexcept nogil:
    """Mask values at columns mc and mc + 1 of one mask row; 0 outside the mask or row."""
    cdef unsigned int s = 0
    if m != NULL:
        if 0 <= mc < mw:
            s = m[mc]
        if 0 <= mc + 1 < mw:
            s = s + m[mc + 1]
    return s


cdef void blend_chunk(void* ctx, int chunk, int slot) noexcept nogil:
    cdef BlendJob* j = <BlendJob*>ctx
    cdef int ci_lo = j.ci0 + chunk * BLEND_CHUNK, ci_hi = ci_lo + BLEND_CHUNK
    cdef int r, c, lo, hi, ci, cj, mr, mc
    cdef unsigned int a, s, op = <unsigned int>j.opacity
    cdef unsigned int cy = <unsigned int>j.color[0], cu = <unsigned int>j.color[1]
    cdef unsigned int cv = <unsigned int>j.color[2]
    cdef u8* row
    cdef u8* urow
    cdef u8* vrow
    cdef const u8* m
    cdef const u8* m0
    cdef const u8* m1
    if ci_hi > j.ci1:
        ci_hi = j.ci1
    lo = 2 * ci_lo if 2 * ci_lo > j.r0 else j.r0
    hi = 2 * ci_hi if 2 * ci_hi < j.r1 else j.r1
    # no test for a == 0: (v * 255 + 127) // 255 == v, and a loop without branches vectorises
    for r in range(lo, hi):
        row = j.plane[0] + r * j.stride[0]
        m = j.mask + (r - j.y) * j.mask_stride - j.x
        for c in range(j.c0, j.c1):
            a = (m[c] * op + 127) // 255
            row[c] = <u8>((row[c] * (255 - a) + cy * a + 127) // 255)
    for ci in range(ci_lo, ci_hi):
        urow = j.plane[1] + ci * j.stride[1]
        vrow = j.plane[2] + ci * j.stride[2]
        mr = 2 * ci - j.y  # the chroma sample's two luma rows in the mask (either may be outside)
        m0 = j.mask + mr * j.mask_stride if 0 <= mr < j.mh else NULL
        m1 = j.mask + (mr + 1) * j.mask_stride if 0 <= mr + 1 < j.mh else NULL
        for cj in range(j.cj0, j.cj1):
            mc = 2 * cj - j.x
            if m0 != NULL and m1 != NULL and 0 <= mc and mc + 1 < j.mw:
                s = m0[mc] + m0[mc + 1] + m1[mc] + m1[mc + 1]
            else:
                s = pair_cover(m0, mc, j.mw) + pair_cover(m1, mc, j.mw)
            a = (((s + 2) // 4) * op + 127) // 255
            urow[cj] = <u8>((urow[cj] * (255 - a) + cu * a + 127) // 255)
            vrow[cj] = <u8>((vrow[cj] * (255 - a) + cv * a + 127) // 255)


def blend_masks(tuple out_planes, list masks, const int32_t[:, ::1] params):
    """Blend, in order, each mask's colour through it: masks[i] (8-bit coverage, C-contiguous)
    placed at luma (x, y) with colour (Y, U, V) and opacity 0..255 from params[i] = (x, y, Y, U,
    V, opacity). One call for all of a frame's overlays: the planes are taken once.

    Luma: out = (out * (255 - a) + c * a + 127) // 255 with a = (mask * opacity + 127) // 255.
    Chroma sample (i, j) takes a = the rounded mean of the four luma mask values it covers
    (rows 2i, 2i+1, columns 2j, 2j+1; values outside the mask count as 0), scaled the same way.
    Masks are clipped to the frame. Large masks are blended by the worker threads.
    """
    cdef u8[:, :] Y = out_planes[0]
    cdef u8[:, :] U = out_planes[1]
    cdef u8[:, :] V = out_planes[2]
    cdef int H = Y.shape[0], W = Y.shape[1], CH = U.shape[0], CW = U.shape[1], n, x, y
    cdef Py_ssize_t i
    cdef const u8[:, ::1] mask
    cdef BlendJob job
    if params.shape[0] != len(masks) or params.shape[1] != 6:
        raise ValueError(f"params must be ({len(masks)}, 6), got ({params.shape[0]}, "
                         f"{params.shape[1]})")
    job.plane[0] = &Y[0, 0]
    job.plane[1] = &U[0, 0]
    job.plane[2] = &V[0, 0]
    job.stride[0] = Y.strides[0]
    job.stride[1] = U.strides[0]
    job.stride[2] = V.strides[0]
    for i in range(params.shape[0]):
        mask = masks[i]
        x = params[i, 0]
        y = params[i, 1]
        job.mh = mask.shape[0]
        job.mw = mask.shape[1]
        job.x = x
        job.y = y
        job.r0 = y if y > 0 else 0
        job.r1 = y + job.mh if y + job.mh < H else H
        job.c0 = x if x > 0 else 0
        job.c1 = x + job.mw if x + job.mw < W else W
        if job.r0 >= job.r1 or job.c0 >= job.c1:
            continue
        job.ci0 = job.r0 // 2
        job.ci1 = (job.r1 + 1) // 2 if (job.r1 + 1) // 2 < CH else CH
        job.cj0 = job.c0 // 2
        job.cj1 = (job.c1 + 1) // 2 if (job.c1 + 1) // 2 < CW else CW
        job.mask = &mask[0, 0]
        job.mask_stride = mask.strides[0]
        job.color[0] = params[i, 2]
        job.color[1] = params[i, 3]
        job.color[2] = params[i, 4]
        job.opacity = params[i, 5]
        n = (job.ci1 - job.ci0 + BLEND_CHUNK - 1) // BLEND_CHUNK
        with nogil:
            # a label's few thousand pixels cost less than waking a thread
            pool_run(blend_chunk, &job, n,
                     2 if (job.r1 - job.r0) * (job.c1 - job.c0) >= 65536 else 1)

