/* Inner loops of the compositor's separable resampler (skymix._native.composite).
 *
 * resample_vpass: the weighted sum of n uint8 source rows, `stride` bytes apart, into a float row.
 * resample_hpass: output sample j is the weighted sum of `taps` consecutive floats of that row
 * from row[start[j]] with weights w[j * taps:(j + 1) * taps], rounded and clamped to uint8. taps
 * is 2, 4 or a multiple of 8 (zero weights pad), and row must be readable (and finite) up to
 * start[j] + taps: the AVX2 path loads whole registers, one dot product per output, and sums 8
 * outputs at once with a horizontal-add tree (gathers are slow, and the outputs' windows are
 * too irregular for fixed shuffles).
 *
 * The AVX2+FMA versions are compiled with a target attribute, not with -mavx2, and chosen at run
 * time by resample_init(), so the module runs on any x86_64; elsewhere, or without AVX2, the plain
 * C versions run. Both give the same results up to float rounding (FMA rounds once).
 */
#ifndef SKYMIX_RESAMPLE_H
#define SKYMIX_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SKYMIX_X86 1
#include <immintrin.h>
#else
#define SKYMIX_X86 0
#endif

#if SKYMIX_X86
static int resample_avx2 = 0;    /* the AVX2+FMA loops are in use */
static int resample_avx512 = 0;  /* and the AVX-512 ones where they exist (resample_hpass16) */
#endif

static void vpass_c(const uint8_t *restrict src, ptrdiff_t stride, const float *restrict w, int n,
                    float *restrict out, int width)
{
    const uint8_t *s;
    float wk;
    int x, k;
    wk = w[0];
    for (x = 0; x < width; x++)
        out[x] = wk * src[x];
    for (k = 1; k < n; k++) {
        s = src + k * stride;
        wk = w[k];
        for (x = 0; x < width; x++)
            out[x] += wk * s[x];
    }
}

static void hpass_c(const float *restrict row, const int32_t *restrict start,
                    const float *restrict w, int taps, int n, uint8_t *restrict out)
{
    const float *wj, *s;
    float acc;
    int j, k;
    for (j = 0; j < n; j++) {
        wj = w + (ptrdiff_t)j * taps;
        s = row + start[j];
        acc = 0.5f;
        for (k = 0; k < taps; k++)
            acc += wj[k] * s[k];
        out[j] = (uint8_t)(acc < 255.0f ? acc : 255.0f);
    }
}

static void hhalf_c(const float *restrict row, int n, uint8_t *restrict out)
{
    float acc;
    int j;
    for (j = 0; j < n; j++) {
        acc = 0.5f * (row[2 * j] + row[2 * j + 1]) + 0.5f;
        out[j] = (uint8_t)(acc < 255.0f ? acc : 255.0f);
    }
}

static void box2_c(const uint8_t *restrict src, ptrdiff_t stride, int n, uint8_t *restrict out)
{
    const uint8_t *b = src + stride;
    int j;
    for (j = 0; j < n; j++)
        out[j] = (uint8_t)((src[2 * j] + src[2 * j + 1] + b[2 * j] + b[2 * j + 1] + 2) >> 2);
}

#if SKYMIX_X86
__attribute__((target("avx2,fma")))
static void vpass_avx2(const uint8_t *restrict src, ptrdiff_t stride, const float *restrict w,
                       int n, float *restrict out, int width)
{
    const uint8_t *s;
    __m256 a0, a1, a2, a3, wk;
    __m128i lo, hi;
    int x = 0, k;
    for (; x + 32 <= width; x += 32) {
        a0 = a1 = a2 = a3 = _mm256_setzero_ps();
        s = src + x;
        /* The rows after these are the next output row's: fetch them while these are summed
           (a tile's rows are short runs the hardware prefetcher does not follow far enough). */
        if ((x & 63) == 0)
            for (k = n; k < 2 * n; k++)
                _mm_prefetch((const char *)(s + k * stride), _MM_HINT_T0);
        for (k = 0; k < n; k++, s += stride) {
            wk = _mm256_broadcast_ss(w + k);
            lo = _mm_loadu_si128((const __m128i *)s);
            hi = _mm_loadu_si128((const __m128i *)(s + 16));
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), wk, a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))),
                                 wk, a1);
            a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), wk, a2);
            a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))),
                                 wk, a3);
        }
        _mm256_storeu_ps(out + x, a0);
        _mm256_storeu_ps(out + x + 8, a1);
        _mm256_storeu_ps(out + x + 16, a2);
        _mm256_storeu_ps(out + x + 24, a3);
    }
    for (; x + 8 <= width; x += 8) {
        a0 = _mm256_setzero_ps();
        s = src + x;
        for (k = 0; k < n; k++, s += stride) {
            lo = _mm_loadl_epi64((const __m128i *)s);
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)),
                                 _mm256_broadcast_ss(w + k), a0);
        }
        _mm256_storeu_ps(out + x, a0);
    }
    if (x < width)
        vpass_c(src + x, stride, w, n, out + x, width - x);
}

/* Round, clamp and store 8 sums as uint8. */
__attribute__((target("avx2,fma")))
static inline void store8_avx2(__m256 acc, uint8_t *out)
{
    __m256i v = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_add_ps(acc, _mm256_set1_ps(0.5f)),
                                                  _mm256_set1_ps(255.0f)));
    __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64((__m128i *)out, _mm_packus_epi16(p, p));
}

/* Exact 2:1 horizontally: the mean of each pair of floats. */
__attribute__((target("avx2,fma")))
static void hhalf_avx2(const float *restrict row, int n, uint8_t *restrict out)
{
    const __m256 half = _mm256_set1_ps(0.5f);
    __m256 p;
    int j;
    for (j = 0; j + 8 <= n; j += 8) {
        /* lanes: outputs 0 1 4 5 | 2 3 6 7 */
        p = _mm256_hadd_ps(_mm256_loadu_ps(row + 2 * j), _mm256_loadu_ps(row + 2 * j + 8));
        p = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(p), 0xd8));
        store8_avx2(_mm256_mul_ps(p, half), out + j);
    }
    if (j < n)
        hhalf_c(row + 2 * j, n - j, out + j);
}

/* Exact 2:1 both ways: the rounded mean of 2x2 blocks of bytes, 32 outputs at a time. */
__attribute__((target("avx2,fma")))
static void box2_avx2(const uint8_t *restrict src, ptrdiff_t stride, int n,
                      uint8_t *restrict out)
{
    const __m256i ones = _mm256_set1_epi8(1), two = _mm256_set1_epi16(2);
    const uint8_t *b = src + stride;
    __m256i s0, s1;
    int j;
    for (j = 0; j + 32 <= n; j += 32) {
        s0 = _mm256_add_epi16(
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(src + 2 * j)), ones),
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(b + 2 * j)), ones));
        s1 = _mm256_add_epi16(
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(src + 2 * j + 32)), ones),
            _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(b + 2 * j + 32)), ones));
        s0 = _mm256_srli_epi16(_mm256_add_epi16(s0, two), 2);
        s1 = _mm256_srli_epi16(_mm256_add_epi16(s1, two), 2);
        /* packus interleaves the lanes: outputs 0-7 16-23 8-15 24-31 */
        _mm256_storeu_si256((__m256i *)(out + j),
                            _mm256_permute4x64_epi64(_mm256_packus_epi16(s0, s1), 0xd8));
    }
    if (j < n)
        box2_c(src + 2 * j, stride, n - j, out + j);
}

/* Up to 2 taps (enlarging, or an exact 2:1 shrink): four outputs per register. */
__attribute__((target("avx2,fma")))
static void hpass2_avx2(const float *restrict row, const int32_t *restrict start,
                        const float *restrict w, int n, uint8_t *restrict out)
{
    const int32_t *s;
    __m256 p0, p1;
    __m128 lo, hi;
    int j;
    for (j = 0; j + 8 <= n; j += 8) {
        s = start + j;
        lo = _mm_loadh_pi(_mm_castpd_ps(_mm_load_sd((const double *)(row + s[0]))),
                          (const __m64 *)(row + s[1]));
        hi = _mm_loadh_pi(_mm_castpd_ps(_mm_load_sd((const double *)(row + s[2]))),
                          (const __m64 *)(row + s[3]));
        p0 = _mm256_mul_ps(_mm256_set_m128(hi, lo), _mm256_loadu_ps(w + (ptrdiff_t)j * 2));
        lo = _mm_loadh_pi(_mm_castpd_ps(_mm_load_sd((const double *)(row + s[4]))),
                          (const __m64 *)(row + s[5]));
        hi = _mm_loadh_pi(_mm_castpd_ps(_mm_load_sd((const double *)(row + s[6]))),
                          (const __m64 *)(row + s[7]));
        p1 = _mm256_mul_ps(_mm256_set_m128(hi, lo), _mm256_loadu_ps(w + (ptrdiff_t)j * 2 + 8));
        /* lanes: outputs 0 1 4 5 | 2 3 6 7 */
        p0 = _mm256_hadd_ps(p0, p1);
        store8_avx2(_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(p0), 0xd8)), out + j);
    }
    if (j < n)
        hpass_c(row, start + j, w + (ptrdiff_t)j * 2, 2, n - j, out + j);
}

/* Up to 4 taps: two outputs per register, then a horizontal-add tree over 8 outputs. */
__attribute__((target("avx2,fma")))
static void hpass4_avx2(const float *restrict row, const int32_t *restrict start,
                        const float *restrict w, int n, uint8_t *restrict out)
{
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const int32_t *s;
    const float *wj;
    __m256 p0, p1, p2, p3;
    int j;
    for (j = 0; j + 8 <= n; j += 8) {
        s = start + j;
        wj = w + (ptrdiff_t)j * 4;
        p0 = _mm256_mul_ps(_mm256_loadu2_m128(row + s[1], row + s[0]), _mm256_loadu_ps(wj));
        p1 = _mm256_mul_ps(_mm256_loadu2_m128(row + s[3], row + s[2]), _mm256_loadu_ps(wj + 8));
        p2 = _mm256_mul_ps(_mm256_loadu2_m128(row + s[5], row + s[4]), _mm256_loadu_ps(wj + 16));
        p3 = _mm256_mul_ps(_mm256_loadu2_m128(row + s[7], row + s[6]), _mm256_loadu_ps(wj + 24));
        /* lanes: outputs 0 2 4 6 | 1 3 5 7 */
        p0 = _mm256_hadd_ps(_mm256_hadd_ps(p0, p1), _mm256_hadd_ps(p2, p3));
        store8_avx2(_mm256_permutevar8x32_ps(p0, order), out + j);
    }
    if (j < n)
        hpass_c(row, start + j, w + (ptrdiff_t)j * 4, 4, n - j, out + j);
}

/* A multiple of 8 taps: 8 outputs at a time, each a register-wide dot product, then a
   horizontal-add tree. */
__attribute__((target("avx2,fma")))
static void hpass8_avx2(const float *restrict row, const int32_t *restrict start,
                        const float *restrict w, int taps, int n, uint8_t *restrict out)
{
    const int32_t *s;
    const float *wj;
    __m256 p[8], h0, h1;
    int j, i, k;
    for (j = 0; j + 8 <= n; j += 8) {
        s = start + j;
        wj = w + (ptrdiff_t)j * taps;
        for (i = 0; i < 8; i++) {
            p[i] = _mm256_mul_ps(_mm256_loadu_ps(row + s[i]), _mm256_loadu_ps(wj + i * taps));
            for (k = 8; k < taps; k += 8)
                p[i] = _mm256_fmadd_ps(_mm256_loadu_ps(row + s[i] + k),
                                       _mm256_loadu_ps(wj + i * taps + k), p[i]);
        }
        /* lanes: outputs 0 1 2 3 | 0 1 2 3 and 4 5 6 7 | 4 5 6 7, half sums each */
        h0 = _mm256_hadd_ps(_mm256_hadd_ps(p[0], p[1]), _mm256_hadd_ps(p[2], p[3]));
        h1 = _mm256_hadd_ps(_mm256_hadd_ps(p[4], p[5]), _mm256_hadd_ps(p[6], p[7]));
        store8_avx2(_mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20),
                                  _mm256_permute2f128_ps(h0, h1, 0x31)), out + j);
    }
    if (j < n)
        hpass_c(row, start + j, w + (ptrdiff_t)j * taps, taps, n - j, out + j);
}

#define SKYMIX_AVX512 "avx512f,avx512bw,avx512vl,avx2,fma"

/* The vertical pass, 64 samples at a time (a masked load for the last few). */
__attribute__((target(SKYMIX_AVX512)))
static void vpass_avx512(const uint8_t *restrict src, ptrdiff_t stride, const float *restrict w,
                         int n, float *restrict out, int width)
{
    const uint8_t *s;
    __m512 a0, a1, a2, a3, wk;
    __mmask16 m;
    int x = 0, k;
    for (; x + 64 <= width; x += 64) {
        a0 = a1 = a2 = a3 = _mm512_setzero_ps();
        s = src + x;
        /* the rows after these are the next output row's (see vpass_avx2) */
        for (k = n; k < 2 * n; k++)
            _mm_prefetch((const char *)(s + k * stride), _MM_HINT_T0);
        for (k = 0; k < n; k++, s += stride) {
            wk = _mm512_set1_ps(w[k]);
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                     _mm_loadu_si128((const __m128i *)s))), wk, a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                     _mm_loadu_si128((const __m128i *)(s + 16)))), wk, a1);
            a2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                     _mm_loadu_si128((const __m128i *)(s + 32)))), wk, a2);
            a3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                     _mm_loadu_si128((const __m128i *)(s + 48)))), wk, a3);
        }
        _mm512_storeu_ps(out + x, a0);
        _mm512_storeu_ps(out + x + 16, a1);
        _mm512_storeu_ps(out + x + 32, a2);
        _mm512_storeu_ps(out + x + 48, a3);
    }
    for (; x < width; x += 16) {
        m = width - x >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (width - x)) - 1);
        a0 = _mm512_setzero_ps();
        s = src + x;
        for (k = 0; k < n; k++, s += stride)
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                                     _mm_maskz_loadu_epi8(m, s))), _mm512_set1_ps(w[k]), a0);
        _mm512_mask_storeu_ps(out + x, m, a0);
    }
}

/* The horizontal pass on blocks of `block` (16 or 8) outputs whose taps all lie within 32 floats
   from the block's base: two loads, then one two-register permute and one FMA per tap give the
   tap of all 16 lanes at once (see resample_hpass16). Inlined per tap count, so that the tap loop
   of the common counts unrolls. */
__attribute__((target(SKYMIX_AVX512), always_inline))
static inline void hpass16_body(const float *restrict row, const int32_t *restrict base,
                                const int32_t *restrict idx, const float *restrict w,
                                const int taps, int block, int n, uint8_t *restrict out)
{
    const __m512 half = _mm512_set1_ps(0.5f), top = _mm512_set1_ps(255.0f);
    const __m512i one = _mm512_set1_epi32(1);
    __m512 lo, hi, acc;
    __m512i ix;
    __m128i v;
    int b, j, k;
    for (b = 0, j = 0; j < n; b++, j += block, w += 16 * taps) {
        lo = _mm512_loadu_ps(row + base[b]);
        hi = _mm512_loadu_ps(row + base[b] + 16);
        ix = _mm512_loadu_si512((const void *)(idx + 16 * b));
        acc = half;
        for (k = 0; k < taps; k++) {
            acc = _mm512_fmadd_ps(_mm512_permutex2var_ps(lo, ix, hi), _mm512_loadu_ps(w + 16 * k),
                                  acc);
            ix = _mm512_add_epi32(ix, one);
        }
        v = _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(_mm512_min_ps(acc, top)));
        if (n - j >= 16)
            _mm_storeu_si128((__m128i *)(out + j), v);
        else if (n - j >= block)
            _mm_storel_epi64((__m128i *)(out + j), v);
        else
            _mm_mask_storeu_epi8(out + j, (__mmask16)((1u << (n - j)) - 1), v);
    }
}

__attribute__((target(SKYMIX_AVX512)))
static void hpass16_avx512(const float *restrict row, const int32_t *restrict base,
                           const int32_t *restrict idx, const float *restrict w, int taps,
                           int block, int n, uint8_t *restrict out)
{
    switch (taps) {
    case 1:
        hpass16_body(row, base, idx, w, 1, block, n, out);
        break;
    case 2:
        hpass16_body(row, base, idx, w, 2, block, n, out);
        break;
    case 3:
        hpass16_body(row, base, idx, w, 3, block, n, out);
        break;
    case 4:
        hpass16_body(row, base, idx, w, 4, block, n, out);
        break;
    default:
        hpass16_body(row, base, idx, w, taps, block, n, out);
    }
}
#endif

#if SKYMIX_X86
static int resample_cpu_level = 0;
#endif

/* Use the loops of `level` (0 plain C, 1 AVX2+FMA, 2 AVX-512), at most resample_simd_max(). */
static void resample_set_simd(int level)
{
#if SKYMIX_X86
    if (level > resample_cpu_level)
        level = resample_cpu_level;
    resample_avx2 = level >= 1;
    resample_avx512 = level >= 2;
#else
    (void)level;
#endif
}

/* Pick the best loops the CPU runs; call once before the others. */
static void resample_init(void)
{
#if SKYMIX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        resample_cpu_level = 1;
    if (resample_cpu_level == 1 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        resample_cpu_level = 2;
    resample_set_simd(resample_cpu_level);
#endif
}

/* The best loops this CPU runs: 0 plain C, 1 AVX2+FMA, 2 AVX-512 (F, BW, VL). */
static int resample_simd_max(void)
{
#if SKYMIX_X86
    return resample_cpu_level;
#else
    return 0;
#endif
}

/* The loops in use (see resample_simd_max). */
static int resample_simd(void)
{
#if SKYMIX_X86
    return resample_avx2 + resample_avx512;
#else
    return 0;
#endif
}

static inline void resample_vpass(const uint8_t *src, ptrdiff_t stride, const float *w, int n,
                                  float *out, int width)
{
#if SKYMIX_X86
    if (resample_avx512) {
        vpass_avx512(src, stride, w, n, out, width);
        return;
    }
    if (resample_avx2) {
        vpass_avx2(src, stride, w, n, out, width);
        return;
    }
#endif
    vpass_c(src, stride, w, n, out, width);
}

static inline void resample_hpass(const float *row, const int32_t *start, const float *w,
                                  int taps, int n, uint8_t *out)
{
#if SKYMIX_X86
    if (resample_avx2) {
        if (taps == 2)
            hpass2_avx2(row, start, w, n, out);
        else if (taps == 4)
            hpass4_avx2(row, start, w, n, out);
        else
            hpass8_avx2(row, start, w, taps, n, out);
        return;
    }
#endif
    hpass_c(row, start, w, taps, n, out);
}

/* True when resample_hpass16 runs (the AVX-512 loops are in use); else use resample_hpass. */
static inline int resample_has_hpass16(void)
{
#if SKYMIX_X86
    return resample_avx512;
#else
    return 0;
#endif
}

/* The horizontal pass on blocks: block b of `block` outputs (16 or 8; the last may be short) reads
   the 32 floats from row + base[b]; output i of it is the sum over k < taps of
   row[base[b] + idx[16 b + i] + k] * w[16 (taps b + k) + i] (lanes past `block` have weight 0).
   row must be readable up to base[b] + 32. Only when resample_has_hpass16(). */
static inline void resample_hpass16(const float *row, const int32_t *base, const int32_t *idx,
                                    const float *w, int taps, int block, int n, uint8_t *out)
{
#if SKYMIX_X86
    hpass16_avx512(row, base, idx, w, taps, block, n, out);
#else
    (void)row; (void)base; (void)idx; (void)w; (void)taps; (void)block; (void)n; (void)out;
#endif
}

/* The horizontal pass of an exact 2:1 shrink: out[j] is the mean of row[2j] and row[2j + 1]. */
static inline void resample_hhalf(const float *row, int n, uint8_t *out)
{
#if SKYMIX_X86
    if (resample_avx2) {
        hhalf_avx2(row, n, out);
        return;
    }
#endif
    hhalf_c(row, n, out);
}

/* An exact 2:1 shrink both ways: out[j] is the rounded mean of src[2j], src[2j + 1] and the two
   bytes below them (the float passes give the same value: the sum is exact). */
static inline void resample_box2(const uint8_t *src, ptrdiff_t stride, int n, uint8_t *out)
{
#if SKYMIX_X86
    if (resample_avx2) {
        box2_avx2(src, stride, n, out);
        return;
    }
#endif
    box2_c(src, stride, n, out);
}

#endif
