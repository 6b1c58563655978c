# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Audio mixing kernel: sum offset, gained PCM sources into one block, then soft-limit it.

Validation happens in skymix.compose.audio; this kernel trusts shapes and loops without the GIL.
It is matched against the numpy float64 reference mixer in tests/test_mix_audio.py.

Two passes over chunks of CHUNK output frames. The first sums every source into a float32
scratch the size of the block, one source at a time over a chunk (long sequential reads), and
checks that every sum is finite; only when all are does the second limit the sums and convert
them into ``out``. So a NaN or infinite sample leaves ``out`` untouched, and ``out`` may be (or
overlap) one of the sources: everything is read before anything is written. With more than one
thread the chunks of each pass are split statically, so a chunk is normally summed and written by
the same core.

Per sample, in float32 (what FFmpeg's amix sums in too; the error is a few units in the last place
of sum(|g * x|), far below an int16 step): int16 x -> x / 32768 (exact); mono into stereo adds
g * x to both channels; stereo into mono adds g * (0.5 * (L + R)). The limiter is stateless and
computed in float64: |y| <= T passes, above it |y| -> T + (1 - T) * tanh((|y| - T) / (1 - T)),
capped at 1.0. int16 out is rint(y * 32768) (ties to even) clipped to [-32768, 32767].

The per-sample loops are the small C functions below, each built twice where GCC can do so on
x86-64 (target_clones): with AVX2 and for the baseline, picked once at load time by the CPU. AVX2
without FMA: both clones do the same IEEE operations, so the results are identical. Build with
CFLAGS=-DSKYMIX_NO_SIMD_CLONES for the baseline alone (to test it on an AVX2 machine).
"""

from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBuffer_Release, PyObject_GetBuffer
from libc.math cimport copysign, fabs, nextafterf, rint, tanh
from libc.stdint cimport int16_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from cython.parallel cimport prange

cdef extern from *:
    """
    #include <float.h>
    #include <math.h>
    #include <stddef.h>
    #include <stdint.h>

    #if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8 && defined(__x86_64__) \\
        && defined(__linux__) && !defined(SKYMIX_NO_SIMD_CLONES)
    #  define SKYMIX_SIMD __attribute__((target_clones("avx2", "default")))
    #else
    #  define SKYMIX_SIMD
    #endif
    #define SKYMIX_S16 (1.0f / 32768.0f)  /* a power of two: x * SKYMIX_S16 == x / 32768 */

    /* dst[k] += g * x over n samples of the same channel count, or n frames of mono into
       stereo, or n frames of stereo into mono (g * (0.5 * (L + R))); x is float32 or
       int16 / 32768. */
    SKYMIX_SIMD static void skymix_add_f32(float *restrict dst, const float *restrict src,
                                           ptrdiff_t n, float g) {
        for (ptrdiff_t k = 0; k < n; k++) dst[k] += g * src[k];
    }
    SKYMIX_SIMD static void skymix_add_f32_up(float *restrict dst, const float *restrict src,
                                              ptrdiff_t n, float g) {
        for (ptrdiff_t k = 0; k < n; k++) {
            float v = g * src[k];
            dst[2 * k] += v;
            dst[2 * k + 1] += v;
        }
    }
    SKYMIX_SIMD static void skymix_add_f32_down(float *restrict dst, const float *restrict src,
                                                ptrdiff_t n, float g) {
        for (ptrdiff_t k = 0; k < n; k++) dst[k] += g * (0.5f * (src[2 * k] + src[2 * k + 1]));
    }
    SKYMIX_SIMD static void skymix_add_s16(float *restrict dst, const int16_t *restrict src,
                                           ptrdiff_t n, float g) {
        for (ptrdiff_t k = 0; k < n; k++) dst[k] += g * (src[k] * SKYMIX_S16);
    }
    SKYMIX_SIMD static void skymix_add_s16_up(float *restrict dst, const int16_t *restrict src,
                                              ptrdiff_t n, float g) {
        for (ptrdiff_t k = 0; k < n; k++) {
            float v = g * (src[k] * SKYMIX_S16);
            dst[2 * k] += v;
            dst[2 * k + 1] += v;
        }
    }
    SKYMIX_SIMD static void skymix_add_s16_down(float *restrict dst, const int16_t *restrict src,
                                                ptrdiff_t n, float g) {
        for (ptrdiff_t k = 0; k < n; k++)
            dst[k] += g * (0.5f * (src[2 * k] * SKYMIX_S16 + src[2 * k + 1] * SKYMIX_S16));
    }
    /* 1 when a sum is not finite, else 2 when one is above t, else 0 (no early exit, so it
       vectorises). */
    SKYMIX_SIMD static int skymix_scan(const float *restrict acc, ptrdiff_t n, float t) {
        int bad = 0, hot = 0;
        for (ptrdiff_t k = 0; k < n; k++) {
            float m = fabsf(acc[k]);
            bad |= !(m <= FLT_MAX);
            hot |= m > t;
        }
        return bad ? 1 : hot ? 2 : 0;
    }
    /* Sums that need no limiting into samples: float32 as they are, int16 rint(y * 32768)
       clipped (clipping first keeps the conversion in range). */
    SKYMIX_SIMD static void skymix_store_f32(const float *restrict acc, float *restrict out,
                                             ptrdiff_t n) {
        for (ptrdiff_t k = 0; k < n; k++) out[k] = acc[k];
    }
    SKYMIX_SIMD static void skymix_store_s16(const float *restrict acc, int16_t *restrict out,
                                             ptrdiff_t n) {
        for (ptrdiff_t k = 0; k < n; k++) {
            float y = acc[k] * 32768.0f;
            y = y < 32767.0f ? y : 32767.0f;
            y = y > -32768.0f ? y : -32768.0f;
            out[k] = (int16_t)rintf(y);
        }
    }
    """
    void add_f32 "skymix_add_f32"(float* dst, const float* src, Py_ssize_t n,
                                  float g) noexcept nogil
    void add_f32_up "skymix_add_f32_up"(float* dst, const float* src, Py_ssize_t n,
                                        float g) noexcept nogil
    void add_f32_down "skymix_add_f32_down"(float* dst, const float* src, Py_ssize_t n,
                                            float g) noexcept nogil
    void add_s16 "skymix_add_s16"(float* dst, const int16_t* src, Py_ssize_t n,
                                  float g) noexcept nogil
    void add_s16_up "skymix_add_s16_up"(float* dst, const int16_t* src, Py_ssize_t n,
                                        float g) noexcept nogil
    void add_s16_down "skymix_add_s16_down"(float* dst, const int16_t* src, Py_ssize_t n,
                                            float g) noexcept nogil
    int scan "skymix_scan"(const float* acc, Py_ssize_t n, float t) noexcept nogil
    void store_f32 "skymix_store_f32"(const float* acc, float* out, Py_ssize_t n) noexcept nogil
    void store_s16 "skymix_store_s16"(const float* acc, int16_t* out, Py_ssize_t n) noexcept nogil

ctypedef fused sample_t:
    float
    int16_t

cdef enum:
    # output frames per unit of work: 64 KiB of stereo sums, in L2 next to the source streams;
    # long enough runs per source for the prefetcher (16 sources from DRAM: 1.6x faster than
    # 1024), short enough to stay in cache (4 sources from L3: within 10% of 1024)
    CHUNK = 8192
    KIND_F32 = 0
    KIND_S16 = 1
    SCAN_BAD = 1        # what scan() returns
    SCAN_HOT = 2


cdef struct Source:
    const void* data    # the source's frame 0
    int kind
    int channels
    Py_ssize_t offset   # out frame of the source's frame 0
    Py_ssize_t first    # out frames [first, last) are drawn from this source
    Py_ssize_t last
    float gain


cdef int accumulate(const Source* srcs, Py_ssize_t nsrc, float* acc, Py_ssize_t f0,
                    Py_ssize_t f1, Py_ssize_t C, float hot_above) noexcept nogil:
    """Sum out frames [f0, f1) of every source, in order, into acc (C sums a frame, whole block).

    Returns scan() of the sums: SCAN_BAD when one is not finite (a NaN or infinite sample, or
    an overflow), else SCAN_HOT when one is above hot_above, else 0.
    """
    cdef Py_ssize_t s, a, b, j
    cdef const Source* src
    memset(&acc[f0 * C], 0, <size_t>((f1 - f0) * C) * sizeof(float))
    for s in range(nsrc):
        src = &srcs[s]
        a = src.first if src.first > f0 else f0
        b = src.last if src.last < f1 else f1
        if a >= b:
            continue
        j = (a - src.offset) * src.channels     # first source sample read
        if src.kind == KIND_F32:
            if src.channels == C:
                add_f32(&acc[a * C], <const float*>src.data + j, (b - a) * C, src.gain)
            elif C == 2:
                add_f32_up(&acc[a * C], <const float*>src.data + j, b - a, src.gain)
            else:
                add_f32_down(&acc[a * C], <const float*>src.data + j, b - a, src.gain)
        else:
            if src.channels == C:
                add_s16(&acc[a * C], <const int16_t*>src.data + j, (b - a) * C, src.gain)
            elif C == 2:
                add_s16_up(&acc[a * C], <const int16_t*>src.data + j, b - a, src.gain)
            else:
                add_s16_down(&acc[a * C], <const int16_t*>src.data + j, b - a, src.gain)
    return scan(&acc[f0 * C], (f1 - f0) * C, hot_above)


cdef void limit_into(const float* acc, sample_t* out, Py_ssize_t n,
                     double threshold) noexcept nogil:
    """Limit the sums acc[:n] (in float64) and convert them into out[:n]."""
    cdef Py_ssize_t k
    cdef double y, m, knee = 1.0 - threshold
    for k in range(n):
        y = acc[k]
        m = fabs(y)
        if m > threshold:
            m = threshold + knee * tanh((m - threshold) / knee)
            if m > 1.0:
                m = 1.0
            y = copysign(m, y)
        if sample_t is float:
            out[k] = <float>y
        else:
            y = rint(y * 32768.0)
            if y > 32767.0:
                y = 32767.0
            elif y < -32768.0:
                y = -32768.0
            out[k] = <int16_t>y


cdef void write_chunk(const float* acc, sample_t* out, Py_ssize_t k0, Py_ssize_t k1,
                      bint limit, double threshold) noexcept nogil:
    """Samples [k0, k1) of out from the sums: through the limiter when `limit`, else stored."""
    if limit:
        limit_into(&acc[k0], &out[k0], k1 - k0, threshold)
    elif sample_t is float:
        store_f32(&acc[k0], &out[k0], k1 - k0)
    else:
        store_s16(&acc[k0], &out[k0], k1 - k0)


def mix_into(list sources, list offsets, list gains, sample_t[:, ::1] out, bint limiter,
             double threshold, int num_threads):
    """Mix sources into out; returns 0, or 1 when a sum is not finite (out untouched).

    sources: C-contiguous (frames,) or (frames, 1 or 2) float32 or int16 arrays. offsets: ints,
    the out frame of each source's frame 0, within +-2**62. gains: finite floats.
    out: C-contiguous writable (frames, 1 or 2) float32 or int16. threshold: in (0, 1).
    num_threads > 1 splits the chunks over OpenMP threads.
    Raises MemoryError when scratch memory cannot be had; out is then untouched.
    """
    cdef Py_ssize_t nsrc = len(sources), F = out.shape[0], C = out.shape[1]
    cdef Py_ssize_t i, c, nchunks = (F + CHUNK - 1) // CHUNK, held = 0
    cdef int64_t offset
    cdef int err = 0, r
    cdef int* errp = &err
    # the float32 at or below the threshold: a sum above the threshold is always flagged
    cdef float hot_above = <float>threshold
    cdef Source* srcs
    cdef Py_buffer* views
    cdef float* acc
    cdef char* hot
    cdef sample_t* dst
    if F == 0 or C == 0:
        return 0
    if hot_above > threshold:
        hot_above = nextafterf(hot_above, 0.0)
    srcs = <Source*>malloc((nsrc if nsrc > 0 else 1) * sizeof(Source))
    views = <Py_buffer*>malloc((nsrc if nsrc > 0 else 1) * sizeof(Py_buffer))
    acc = <float*>malloc(<size_t>(F * C) * sizeof(float))
    hot = <char*>malloc(nchunks)
    try:
        if srcs == NULL or views == NULL or acc == NULL or hot == NULL:
            raise MemoryError()
        for i in range(nsrc):
            PyObject_GetBuffer(sources[i], &views[i], PyBUF_C_CONTIGUOUS)
            held += 1
            offset = offsets[i]
            srcs[i].data = views[i].buf
            srcs[i].kind = KIND_F32 if views[i].itemsize == 4 else KIND_S16
            srcs[i].channels = <int>views[i].shape[1] if views[i].ndim == 2 else 1
            srcs[i].offset = offset
            srcs[i].first = offset if offset > 0 else 0
            srcs[i].last = offset + views[i].shape[0] if offset + views[i].shape[0] < F else F
            srcs[i].gain = <float>(<double>gains[i])
        dst = &out[0, 0]
        if num_threads > nchunks:
            num_threads = <int>nchunks
        with nogil:
            if num_threads <= 1:
                for c in range(nchunks):
                    r = accumulate(srcs, nsrc, acc, c * CHUNK,
                                   (c + 1) * CHUNK if (c + 1) * CHUNK < F else F, C, hot_above)
                    if r == SCAN_BAD:
                        err = 1
                        break
                    hot[c] = limiter and r == SCAN_HOT
                if not err:
                    for c in range(nchunks):
                        write_chunk(acc, dst, c * CHUNK * C,
                                    ((c + 1) * CHUNK if (c + 1) * CHUNK < F else F) * C,
                                    hot[c], threshold)
            else:
                for c in prange(nchunks, schedule="static", num_threads=num_threads):
                    r = accumulate(srcs, nsrc, acc, c * CHUNK,
                                   (c + 1) * CHUNK if (c + 1) * CHUNK < F else F, C, hot_above)
                    if r == SCAN_BAD:
                        errp[0] = 1
                    hot[c] = limiter and r == SCAN_HOT
                if not err:
                    for c in prange(nchunks, schedule="static", num_threads=num_threads):
                        write_chunk(acc, dst, c * CHUNK * C,
                                    ((c + 1) * CHUNK if (c + 1) * CHUNK < F else F) * C,
                                    hot[c], threshold)
        return err
    finally:
        for i in range(held):
            PyBuffer_Release(&views[i])
        free(srcs)
        free(views)
        free(acc)
        free(hot)
