/*
 * CPU kernels of the locally connected 2d layer (fp32), compiled on first use by bioconv_timm/native.py.
 *
 * Shapes (all row-major, i64 sizes), everything channels-last as the LC models pass it between layers:
 *   x    (B, H, W, C)              the input
 *   Wt   (OH, OW, CO, KH, KW, C)   the layer weight: one channels-last conv kernel per location
 *   out  (B, OH, OW, CO)           the output; g, its gradient, has the same shape
 *
 * Dilation (DH, DW): tap (ky, kx) of location (y, x) reads input (y SH + ky DH - PH, x SW + kx DW - PW).
 *
 * Every product is a small matrix product per output location l (L = OH * OW of them), K = KH * KW * C:
 *   forward       out[:, l] (B x CO) = patches_l (B x K) @ Wt[l]^T (K x CO)   vectorized over CO
 *   input grad    gx[:, pixel, :]    = sum over the (l, kernel offset) whose kernel covers the pixel of
 *                                      g[:, l] (B x CO) @ Wt[l, :, offset] (CO x C)  vectorized over C
 *   weight grad   gW[l] (CO x K)     = g[:, l]^T (CO x B) @ patches_l (B x K)  vectorized along a kernel row
 *                                      (over CO when C is not a multiple of the vector width, e.g. RGB)
 * The patches are never materialized: a kernel row of a patch is one contiguous run of KW * C values of x
 * (with DW > 1, KW runs of C values, DW * C apart), read in place; taps that fall in the zero padding are
 * skipped.
 *
 * A micro-kernel keeps a TM x TN tile of accumulator vectors in registers and streams one operand as vectors
 * and the other as broadcast scalars. The drivers split locations (or pixels) over OpenMP threads so that no
 * two threads write the same output, which also makes every result independent of the thread count.
 */
/*
 * Portability. The kernels are written on GCC/clang vector extensions (vector_size), not on intrinsics: the
 * compiler maps a VW-float vector onto whatever the target has. Which width is chosen at compile time from
 * the target's predefined macros (the flags: bioconv_timm/layers/native.py, BIOCONV_NATIVE_ARCH):
 *   __AVX512F__        VW 16 (zmm)
 *   __AVX__            VW 8  (ymm; with -mfma the multiply-adds fuse)
 *   anything else      VW 4  (x86-64 baseline SSE2, aarch64 NEON, or the compiler's generic lowering)
 * The one intrinsic, the broadcast in vbcast(), is guarded by the same macros and has a plain-C fallback.
 * An SVE machine gets the VW 4 path on 128-bit NEON registers (the vectors have a fixed size; SVE's scalable
 * registers are not used).
 */
#if !defined(__GNUC__) && !defined(__clang__)
#error "lc_cpu.c needs the GCC/clang vector extensions (gcc or clang; MSVC is not supported)"
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__has_include)
#if __has_include(<unistd.h>)
#include <unistd.h>   /* sysconf(_SC_LEVEL2_CACHE_SIZE), where the C library has it */
#endif
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
#define VW 16
#elif defined(__AVX__)
#include <immintrin.h>
#define VW 8
#else
#define VW 4
#endif

/* The instruction set this file was compiled for, as build_info() reports it. */
#if defined(__AVX512F__)
#define LC_ISA "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#define LC_ISA "avx2+fma"
#elif defined(__AVX2__)
#define LC_ISA "avx2"
#elif defined(__AVX__)
#define LC_ISA "avx"
#elif defined(__SSE2__)
#define LC_ISA "sse2"
#elif defined(__ARM_FEATURE_SVE)
#define LC_ISA "neon (sve target; 128-bit vectors)"
#elif defined(__ARM_NEON)
#define LC_ISA "neon"
#else
#define LC_ISA "generic"
#endif
#if defined(__FMA__) || defined(__AVX512F__) || defined(__ARM_FEATURE_FMA)
#define LC_FMA 1
#else
#define LC_FMA 0
#endif

typedef int64_t i64;
/* A vector of VW floats that may sit at any 4-byte aligned address and alias float storage. */
typedef float vf __attribute__((vector_size(VW * 4), aligned(4), may_alias));

#define INLINE static inline __attribute__((always_inline))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Taps [k0, k1) of a kernel axis that land inside [0, n) when tap k reads position start + k * d (d >= 1). */
INLINE i64 ceil_div_nonneg(i64 a, i64 d) { return a <= 0 ? 0 : (a + d - 1) / d; }
INLINE void valid_taps(i64 start, i64 d, i64 n, i64 k, i64 *k0, i64 *k1)
{
    *k0 = MIN(k, ceil_div_nonneg(-start, d));
    *k1 = MAX(*k0, MIN(k, ceil_div_nonneg(n - start, d)));
}

INLINE vf vload(const float *p) { return *(const vf *)p; }
INLINE void vstore(float *p, vf v) { *(vf *)p = v; }
#if defined(__AVX512F__)
INLINE vf vbcast(const float *p) { return (vf)_mm512_set1_ps(*p); }   /* folds into FMA {1to16} */
#elif defined(__AVX__)
INLINE vf vbcast(const float *p) { return (vf)_mm256_broadcast_ss(p); }
#else
INLINE vf vbcast(const float *p) { return (vf){0} + *p; }
#endif

int lc_vector_width(void) { return VW; }
const char *lc_isa(void) { return LC_ISA; }
int lc_fma(void) { return LC_FMA; }  /* whether the target has fused multiply-add */

/* Tiles (accumulator vectors TM x TN). A micro-kernel holds TM x TN accumulators, TN operand vectors and a
 * broadcast in registers, so the tile follows the number of vector registers the target can name: 32 with
 * AVX-512 (zmm) and on aarch64, 16 with AVX2/AVX (ymm) and SSE2 (xmm). An 8 x 2 tile needs 19 registers,
 * so on a 16-register target GCC kept it on the stack and stored accumulators inside the hot loops
 * (tests/test_native_codegen.py checks that no loop does). -D overrides are for tuning. */
#if defined(__AVX512F__) || defined(__aarch64__)
#define LC_VREGS 32
#else
#define LC_VREGS 16
#endif
#if LC_VREGS >= 32
#define TILE32(a, b) a
#else
#define TILE32(a, b) b
#endif
#ifndef FWD_TM
#if LC_VREGS >= 32
#define FWD_TM 8   /* batch rows */
#elif LC_FMA
#define FWD_TM 6
#else
#define FWD_TM 5   /* without FMA a product needs a register of its own */
#endif
#endif
#ifndef FWD_TN
#define FWD_TN 2   /* output-channel vectors */
#endif
#ifndef GIN_TM
#define GIN_TM TILE32(8, 6)   /* batch rows */
#endif
#ifndef GIN_TN
#define GIN_TN 2   /* input-channel vectors */
#endif
#ifndef GW_TM
#define GW_TM TILE32(8, 4)    /* output channels */
#endif
#ifndef GW_TN
#define GW_TN 3    /* vectors along a kernel row */
#endif
#ifndef GWC_TM
#define GWC_TM TILE32(12, 6)  /* taps of a kernel row (the weight gradient for any C, e.g. the RGB stem) */
#endif
#ifndef GWC_TN
#define GWC_TN 2   /* output-channel vectors */
#endif
int lc_vector_registers(void) { return LC_VREGS; }

#ifndef PF_DIST
#define PF_DIST 8  /* weight gradient: prefetch the rows of batch entry b + PF_DIST */
#endif

#define ZERO_ACC(acc, TM, TN)                                                                      \
    _Pragma("GCC unroll 16") for (int i = 0; i < TM; i++)                                          \
        _Pragma("GCC unroll 16") for (int j = 0; j < TN; j++) acc[i][j] = (vf){0};

/* The step every micro-kernel is made of, a rank-1 update of the TM x TN tile:
 * acc[i][j] += broadcast(*(a + i * a_stride)) * vector(b + j * VW), for i < m, j < n. */
#define RANK1_UPDATE(acc, TM, TN, m, n, a, a_stride, b)                                            \
    do {                                                                                           \
        vf bv_[TN];                                                                                \
        _Pragma("GCC unroll 16") for (int j = 0; j < TN; j++) if (j < (n)) bv_[j] = vload((b) + j * VW); \
        _Pragma("GCC unroll 16") for (int i = 0; i < TM; i++) {                                   \
            if (i < (m)) {                                                                         \
                const vf av_ = vbcast((a) + i * (a_stride));                                       \
                _Pragma("GCC unroll 16") for (int j = 0; j < TN; j++) if (j < (n)) acc[i][j] += av_ * bv_[j]; \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* The first ``cov`` floats of each row of the tile (cov < n * VW: a last, partial channel vector), through a
 * register-sized buffer. Every index of acc is a constant once the loops unroll: indexing acc with a run-time
 * value makes the compiler keep the whole tile in memory, and store it after every update of the hot loop. */
#define STORE_TILE_PARTIAL(acc, TM, TN, m, n, o, o_stride, cov)                                    \
    _Pragma("GCC unroll 16") for (int i = 0; i < TM; i++)                                         \
        if (i < (m))                                                                               \
            _Pragma("GCC unroll 16") for (int j = 0; j < TN; j++) if (j < (n)) {                  \
                float lanes_[VW];                                                                  \
                vstore(lanes_, acc[i][j]);                                                         \
                for (int q = 0; q < VW && j * VW + q < (cov); q++) (o)[i * (o_stride) + j * VW + q] = lanes_[q]; \
            }

/* o[i * o_stride + j * VW ...] = acc[i][j] for i < m, j < n. */
#define STORE_TILE(acc, TM, TN, m, n, o, o_stride)                                                 \
    _Pragma("GCC unroll 16") for (int i = 0; i < TM; i++)                                         \
        if (i < (m))                                                                               \
            _Pragma("GCC unroll 16") for (int j = 0; j < TN; j++) if (j < (n)) vstore((o) + i * (o_stride) + j * VW, acc[i][j]);

/* The kernel copy's transpose in 8 x 8 register blocks: on 8-lane AVX, where GCC made scalar gathers of
 * transpose_block's tile (a fifth of the RGB stem's forward). With AVX-512 the blocks were no faster
 * (0.95-1.09x the tile's time at the 0.5x ResNet18 shapes), so the tile stays there. */
#if defined(__AVX__) && !defined(__AVX512F__)
#define LC_TRANSPOSE_8X8 1
#else
#define LC_TRANSPOSE_8X8 0
#endif
#if LC_TRANSPOSE_8X8
/* dst[j][i] = src[i][j] for an 8 x 8 block, in registers: pairs of rows interleaved, then pairs of pairs,
 * then the 128-bit halves exchanged. */
INLINE void transpose_8x8(const float *s, i64 si, float *d, i64 dj)
{
    __m256 r[8], t[8], u[8];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(s + i * si);
    _Pragma("GCC unroll 4") for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    _Pragma("GCC unroll 2") for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        _mm256_storeu_ps(d + j * dj, _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
        _mm256_storeu_ps(d + (j + 4) * dj, _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
    }
}
#endif

/* dst[j][i] = src[i][j] for i < I <= 16, j < J; src rows are si apart, dst rows dj apart: 8 x 8 register
 * blocks (LC_TRANSPOSE_8X8), or 16 x 16 blocks through a small tile so that both sides move in contiguous
 * runs. */
static void transpose_block(const float *s, i64 si, float *d, i64 dj, i64 I, i64 J)
{
#if LC_TRANSPOSE_8X8
    const i64 I8 = I / 8 * 8, J8 = J / 8 * 8;
    for (i64 i0 = 0; i0 < I8; i0 += 8)
        for (i64 j0 = 0; j0 < J8; j0 += 8) transpose_8x8(s + i0 * si + j0, si, d + j0 * dj + i0, dj);
    for (i64 j = 0; j < J; j++)  /* the edges: columns past J8, rows past I8 */
        for (i64 i = j < J8 ? I8 : 0; i < I; i++) d[j * dj + i] = s[i * si + j];
#else
    float tile[16][16];
    for (i64 j0 = 0; j0 < J; j0 += 16) {
        const i64 jn = MIN(J - j0, 16);
        if (I == 16 && jn == 16) {
            for (int i = 0; i < 16; i++) memcpy(tile[i], s + i * si + j0, 64);
            for (int j = 0; j < 16; j++) {
                float col[16];
                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) col[i] = tile[i][j];
                memcpy(d + (j0 + j) * dj, col, 64);
            }
        } else {
            for (i64 j = j0; j < j0 + jn; j++)
                for (i64 i = 0; i < I; i++) d[j * dj + i] = s[i * si + j];
        }
    }
#endif
}

/* ------------------------------------------------------------------------------------------------------
 * Forward: out[b, l, co] = sum_{ky, r} x[b, y SH + ky - PH, x SW - PW + kx0 + r / C, r % C] *
 * Wt[l, co, ky, kx0 C + r], r along the run of valid taps (DH = DW = 1). Each location's kernel is first
 * copied transposed, (K, COP), COP = CO rounded up to the vector width with zero columns, into a per-thread
 * buffer; then a tile is FWD_TM batch rows x FWD_TN output-channel vectors, x broadcast. A kernel row is
 * nkx runs of ``run`` values, xcol floats apart in x and wcol in the kernel: nkx = 1 (a literal, so the
 * loop folds away) without width dilation, one run of C per valid kernel column with it.
 * ------------------------------------------------------------------------------------------------------ */
INLINE void fwd_tile(int m, int n, const float *x, i64 xstride, i64 rowstride, const float *wt, i64 COP, i64 R,
                     i64 ky0, i64 ky1, i64 nkx, i64 xcol, i64 wcol, i64 run, float *o, i64 ostride, i64 cov)
{
    vf acc[FWD_TM][FWD_TN];
    ZERO_ACC(acc, FWD_TM, FWD_TN)
    for (i64 ky = ky0; ky < ky1; ky++) {
        for (i64 kx = 0; kx < nkx; kx++) {
            const float *xr = x + ky * rowstride + kx * xcol;
            const float *wr = wt + ky * R * COP + kx * wcol;
            for (i64 r = 0; r < run; r++) RANK1_UPDATE(acc, FWD_TM, FWD_TN, m, n, xr + r, xstride, wr + r * COP);
        }
    }
    if (cov >= n * VW) {
        STORE_TILE(acc, FWD_TM, FWD_TN, m, n, o, ostride)
    } else {  /* the last, partial channel vector */
        STORE_TILE_PARTIAL(acc, FWD_TM, FWD_TN, m, n, o, ostride, cov)
    }
}

/* Batch blocking, for stride-1 layers with small kernels (the 16-channel ResNet20 stage): consecutive
 * locations are taken in groups whose transposed kernels fit a per-thread buffer of fwd_group_bytes(), and
 * within a group the batch goes in blocks of FWD_BB entries, so that the input rows a block reads stay cached
 * for the next location, whose patch shares all but C values of each row. With the whole
 * batch per location, the B rows of a patch lie H * W * C floats apart, at 32 x 32 x 16 a multiple of the L2
 * set stride: they land in the same cache sets and evict each other before the next location can reuse
 * them. Larger kernels keep one location at a time: re-reading them from L2 per block costs more than the
 * rows save (measured on the ResNet20 shapes; see docs/performance.md). */
#ifndef FWD_BB
#define FWD_BB FWD_TM
#endif
#ifndef FWD_GROUP_BYTES
#define FWD_GROUP_BYTES (384 * 1024)
#endif
#ifndef FWD_BLOCKED_MAX_KERNEL_BYTES
#define FWD_BLOCKED_MAX_KERNEL_BYTES (16 * 1024)
#endif

/* The group buffer: FWD_GROUP_BYTES, or half the L2 cache where that is smaller and the C library knows it. */
static i64 fwd_group_bytes(void)
{
    static i64 bytes = 0;  /* computed once; concurrent first calls store the same value */
    if (!bytes) {
        i64 b = FWD_GROUP_BYTES;
#ifdef _SC_LEVEL2_CACHE_SIZE
        const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
        if (l2 > 0) b = MIN(b, (i64)l2 / 2);
#endif
        bytes = b;
    }
    return bytes;
}

INLINE void fwd_location_block(const float *x, const float *wt, float *out, i64 l, i64 b0, i64 b1, i64 H, i64 W,
                               i64 C, i64 PH, i64 PW, i64 OW, i64 CO, i64 COP, i64 KH, i64 KW, i64 SH, i64 SW,
                               i64 DH, i64 DW, i64 xstride, i64 ostride)
{
    const i64 R = KW * C, ncv = COP / VW, nct = (ncv + FWD_TN - 1) / FWD_TN;
    const i64 y = l / OW, xo = l % OW, col0 = xo * SW - PW, row0 = y * SH - PH;
    i64 kx0, kx1, ky0, ky1;
    valid_taps(col0, DW, W, KW, &kx0, &kx1);
    valid_taps(row0, DH, H, KH, &ky0, &ky1);
    /* DW == 1: a kernel row's valid taps are one run; else one run of C per valid kernel column */
    const i64 nkx = kx1 - kx0, run = DW == 1 ? nkx * C : C, rowstride = DH * W * C;
    const i64 span = nkx > 0 ? (nkx - 1) * DW * C + C : 0;  /* floats from a kernel row's first valid tap to its end */
    const float *xl = x + (row0 * W + col0 + kx0 * DW) * C;
    const float *wl = wt + kx0 * C * COP;
    for (i64 b = b0; b < b1; b += FWD_TM) {
        const int m = (int)MIN(b1 - b, FWD_TM);
        if (b + FWD_TM < b1)  /* the next tile's rows: short strided runs the hardware prefetcher misses */
            for (i64 i = 0; i < MIN(FWD_TM, b1 - b - FWD_TM); i++)
                for (i64 ky = ky0; ky < ky1; ky++)
                    for (i64 r = 0; r < span; r += 16)
                        __builtin_prefetch(xl + (b + FWD_TM + i) * xstride + ky * rowstride + r);
        for (i64 ct = 0; ct < nct; ct++) {
            const int n = (int)MIN(ncv - ct * FWD_TN, FWD_TN);
            const i64 co = ct * FWD_TN * VW;
            const float *xb = xl + b * xstride;
            float *o = out + b * ostride + l * CO + co;
            if (DW == 1) {  /* nkx = 1: the same code as without dilation */
                if (m == FWD_TM && n == FWD_TN)
                    fwd_tile(FWD_TM, FWD_TN, xb, xstride, rowstride, wl + co, COP, R, ky0, ky1, 1, 0, 0, run, o,
                             ostride, CO - co);
                else if (m == FWD_TM && n == 1)
                    fwd_tile(FWD_TM, 1, xb, xstride, rowstride, wl + co, COP, R, ky0, ky1, 1, 0, 0, run, o,
                             ostride, CO - co);
                else
                    fwd_tile(m, n, xb, xstride, rowstride, wl + co, COP, R, ky0, ky1, 1, 0, 0, run, o, ostride,
                             CO - co);
            } else {
                if (m == FWD_TM && n == FWD_TN)
                    fwd_tile(FWD_TM, FWD_TN, xb, xstride, rowstride, wl + co, COP, R, ky0, ky1, nkx, DW * C, C * COP,
                             run, o, ostride, CO - co);
                else
                    fwd_tile(m, n, xb, xstride, rowstride, wl + co, COP, R, ky0, ky1, nkx, DW * C, C * COP, run, o,
                             ostride, CO - co);
            }
        }
    }
}

/* Forward, dot form (C % VW == 0, no width dilation), for all but small kernels: each location's kernel is
 * used as stored, Wt[l, co, (ky, kx, c)], with no transposed copy. The copy cost a third of the forward's
 * time: the kernel comes from memory once and the copy waits for it, and at 2.4 MB the copy no longer fits
 * L2, so every batch tile read it again. A tile is DOT_TM batch rows x DOT_TN output channels; each
 * accumulator holds VW partial sums along the patch, added across lanes at the end. */
#ifndef DOT_TM
#if LC_FMA
#define DOT_TM TILE32(6, 3)   /* batch rows */
#else
#define DOT_TM TILE32(6, 2)   /* without FMA a product needs a register of its own */
#endif
#endif
#ifndef DOT_TN
#define DOT_TN 4   /* output channels: DOT_TM x DOT_TN accumulators + DOT_TM rows + 1 kernel vector */
#endif
/* Kernels from this size take the dot form (smaller ones, with stride 1, take the batch-blocked copy). With
 * 16 lanes the lane sums cost more, and the copy stays the faster path up to about half the L2 (0.5x
 * ResNet18, dot form against copy: 1.1x at 37 KB, level at 144 KB, 0.9x at 576 KB). Kernels up to
 * DOT_BATCH_OUTER_MAX_KERNEL_BYTES stay in L2, so there the batch is the outer loop instead: a tile's rows
 * stay in L1 while the kernel streams by in order (measured: docs/performance.md). */
#ifndef DOT_MIN_KERNEL_BYTES
#if VW >= 16
#define DOT_MIN_KERNEL_BYTES (512 * 1024)
#else
#define DOT_MIN_KERNEL_BYTES (16 * 1024)
#endif
#endif
#ifndef DOT_BATCH_OUTER_MAX_KERNEL_BYTES
#define DOT_BATCH_OUTER_MAX_KERNEL_BYTES (512 * 1024)
#endif
i64 lc_forward_dot_min_kernel_bytes(void) { return DOT_MIN_KERNEL_BYTES; }

INLINE float lane_sum(vf v)
{
    float lanes[VW], s = 0.f;
    vstore(lanes, v);
    _Pragma("GCC unroll 16") for (int q = 0; q < VW; q++) s += lanes[q];
    return s;
}

#if defined(__AVX__)
/* Eight lanes with the same sum as v's: v itself, or with 16 lanes its two halves added. */
INLINE __m256 eight_lanes(vf v)
{
#if defined(__AVX512F__)
    const __m512d z = _mm512_castps_pd((__m512)v);
    return _mm256_add_ps(_mm256_castpd_ps(_mm512_castpd512_pd256(z)), _mm256_castpd_ps(_mm512_extractf64x4_pd(z, 1)));
#else
    return (__m256)v;
#endif
}
#endif

INLINE void fwd_dot_tile(int m, int n, const float *x, i64 xstride, i64 rowstride, const float *w, i64 K, i64 R,
                         i64 ky0, i64 ky1, i64 run, float *o, i64 ostride)
{
    vf acc[DOT_TM][DOT_TN];
    ZERO_ACC(acc, DOT_TM, DOT_TN)
    for (i64 ky = ky0; ky < ky1; ky++) {
        const float *xr = x + ky * rowstride, *wr = w + ky * R;
        for (i64 r = 0; r < run; r += VW) {
            vf xv[DOT_TM];
            _Pragma("GCC unroll 16") for (int i = 0; i < DOT_TM; i++) if (i < m) xv[i] = vload(xr + i * xstride + r);
            _Pragma("GCC unroll 16") for (int j = 0; j < DOT_TN; j++) if (j < n) {
                const vf wv = vload(wr + j * K + r);
                _Pragma("GCC unroll 16") for (int i = 0; i < DOT_TM; i++) if (i < m) acc[i][j] += xv[i] * wv;
            }
        }
    }
#if defined(__AVX__) && DOT_TN == 4
    if (n == DOT_TN) {  /* a row's four sums at once: pairwise adds twice, then the two halves */
        _Pragma("GCC unroll 16") for (int i = 0; i < DOT_TM; i++) if (i < m) {
            const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(eight_lanes(acc[i][0]), eight_lanes(acc[i][1])),
                                            _mm256_hadd_ps(eight_lanes(acc[i][2]), eight_lanes(acc[i][3])));
            _mm_storeu_ps(o + i * ostride, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
        }
        return;
    }
#endif
    _Pragma("GCC unroll 16") for (int i = 0; i < DOT_TM; i++) if (i < m)
        _Pragma("GCC unroll 16") for (int j = 0; j < DOT_TN; j++) if (j < n) o[i * ostride + j] = lane_sum(acc[i][j]);
}

/* Prefetch one tile's share of the weights the loop reads from memory next: the next location's kernel (batch
 * outer) or the next DOT_TN rows (output channels outer). Either way that is the next stretch of Wt, which the
 * loop reads in order, so the memory stream never waits on a cold block (the AVX2 bench forward: 1.2-1.4x). */
INLINE void prefetch_share(const float *from, const float *end, i64 unit, i64 t, i64 ntiles)
{
    const i64 per = (unit + ntiles * 16 - 1) / (ntiles * 16) * 16;  /* whole 64-byte lines */
    const float *p = from + t * per, *stop = from + MIN((t + 1) * per, unit);
    for (; p < stop && p < end; p += 16) __builtin_prefetch(p);
}

static void fwd_dot_location(const float *x, const float *Wt, float *out, i64 l, i64 L, i64 B, i64 H, i64 W,
                             i64 C, i64 PH, i64 PW, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH,
                             i64 xstride, i64 ostride)
{
    const i64 K = KH * KW * C, R = KW * C;
    const i64 y = l / OW, xo = l % OW, col0 = xo * SW - PW, row0 = y * SH - PH;
    i64 kx0, kx1, ky0, ky1, nkx0 = 0, nkx1 = 0;
    valid_taps(col0, 1, W, KW, &kx0, &kx1);
    valid_taps(row0, DH, H, KH, &ky0, &ky1);
    const i64 run = (kx1 - kx0) * C, rowstride = DH * W * C;  /* a kernel row's valid taps: one run */
    const float *xl = x + (row0 * W + col0 + kx0) * C, *wl = Wt + l * CO * K + kx0 * C;
    /* the next location along the row reads the same rows SW pixels further: their new end is prefetched
     * for each batch tile (runs H * W * C apart, too many for the hardware prefetcher to follow) */
    const int next_in_row = xo + 1 < OW;
    if (next_in_row) valid_taps(col0 + SW, 1, W, KW, &nkx0, &nkx1);
    const i64 new_end = (row0 * W + col0 + SW + nkx1) * C, new_len = MIN(SW * C, (nkx1 - nkx0) * C);
    const float *wend = Wt + L * CO * K;
    const i64 nbt = (B + DOT_TM - 1) / DOT_TM, nct = (CO + DOT_TN - 1) / DOT_TN;
    /* a kernel that fits L2 streams by for each batch tile; a larger one is read once, DOT_TN rows at a time
     * that stay in L1 while the batch goes by */
    const int co_outer = CO * K * (i64)sizeof(float) > DOT_BATCH_OUTER_MAX_KERNEL_BYTES;
    for (i64 outer = 0; outer < (co_outer ? nct : nbt); outer++)
        for (i64 inner = 0; inner < (co_outer ? nbt : nct); inner++) {
            const i64 b = (co_outer ? inner : outer) * DOT_TM, co = (co_outer ? outer : inner) * DOT_TN;
            const int m = (int)MIN(B - b, DOT_TM), n = (int)MIN(CO - co, DOT_TN);
            const float *xb = xl + b * xstride, *wc = wl + co * K;
            float *o = out + b * ostride + l * CO + co;
            if (co_outer)
                prefetch_share(Wt + l * CO * K + (co + DOT_TN) * K, wend, DOT_TN * K, inner, nbt);
            else
                prefetch_share(Wt + (l + 1) * CO * K, wend, CO * K, outer * nct + inner, nbt * nct);
            if (next_in_row && (co_outer ? outer : inner) == 0)  /* first visit of this batch tile */
                for (int i = 0; i < m; i++)
                    for (i64 ky = ky0; ky < ky1; ky++)
                        for (i64 q = new_end - new_len; q < new_end; q += 16)
                            __builtin_prefetch(x + (b + i) * xstride + ky * rowstride + q);
            if (m == DOT_TM && n == DOT_TN)
                fwd_dot_tile(DOT_TM, DOT_TN, xb, xstride, rowstride, wc, K, R, ky0, ky1, run, o, ostride);
            else
                fwd_dot_tile(m, n, xb, xstride, rowstride, wc, K, R, ky0, ky1, run, o, ostride);
        }
}

int lc_forward(const float *x, const float *Wt, float *out, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
               i64 OH, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW, int nthreads)
{
    const i64 K = KH * KW * C, L = OH * OW, xstride = H * W * C, ostride = L * CO;
    if (C % VW == 0 && DW == 1 && CO * K * (i64)sizeof(float) >= DOT_MIN_KERNEL_BYTES) {  /* the kernel as stored */
#pragma omp parallel for schedule(static) num_threads(nthreads)
        for (i64 l = 0; l < L; l++)
            fwd_dot_location(x, Wt, out, l, L, B, H, W, C, PH, PW, OW, CO, KH, KW, SH, SW, DH, xstride, ostride);
        return 0;
    }
    /* else each location's kernel copied transposed, for a batch block or the whole batch */
    const i64 COP = (CO + VW - 1) / VW * VW, kernel_bytes = K * COP * (i64)sizeof(float);
    const int blocked = SH == 1 && SW == 1 && kernel_bytes <= FWD_BLOCKED_MAX_KERNEL_BYTES;
    const i64 G = blocked ? MAX(1, MIN(OW, fwd_group_bytes() / kernel_bytes)) : 1, ngroups = (L + G - 1) / G;
    const i64 bb = blocked ? FWD_BB : B;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        float *wt = (float *)malloc(G * K * COP * sizeof(float));
        if (!wt) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (i64 grp = 0; grp < ngroups; grp++) {
            if (!wt) continue;
            const i64 l0 = grp * G, nl = MIN(L - l0, G);
            for (i64 j = 0; j < nl; j++) {
                float *wtj = wt + j * K * COP;
                for (i64 c0 = 0; c0 < CO; c0 += 16)
                    transpose_block(Wt + ((l0 + j) * CO + c0) * K, K, wtj + c0, COP, MIN(16, CO - c0), K);
                if (COP > CO)
                    for (i64 k = 0; k < K; k++) memset(wtj + k * COP + CO, 0, (COP - CO) * sizeof(float));
            }
            if (grp + 1 < ngroups)  /* the next group's kernels, read once from far away */
                for (i64 q = 0; q < MIN(G, L - l0 - G) * CO * K; q += 16) __builtin_prefetch(Wt + (l0 + G) * CO * K + q);
            for (i64 b0 = 0; b0 < B; b0 += bb)
                for (i64 j = 0; j < nl; j++)
                    fwd_location_block(x, wt + j * K * COP, out, l0 + j, b0, MIN(B, b0 + bb), H, W, C, PH, PW, OW,
                                       CO, COP, KH, KW, SH, SW, DH, DW, xstride, ostride);
        }
        free(wt);
    }
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------------------
 * Input gradient, gather form (C % VW == 0): gx[b, h, w, :] = sum over the (l, ky, kx) with
 * (y SH + ky DH, x SW + kx DW) = (h + PH, w + PW) of sum_co g[b, l, co] * Wt[l, co, ky, kx, :].
 * ------------------------------------------------------------------------------------------------------ */
#define MAX_TAPS 256   /* KH * KW; the Python side checks it */

/* The (location, weight offset) pairs whose kernels cover input pixel (h, w); returns how many. */
static int pixel_taps(i64 h, i64 w, i64 PH, i64 PW, i64 OH, i64 OW, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH,
                      i64 DW, i64 C, i64 *loc, i64 *off)
{
    int n = 0;
    const i64 p = h + PH, q = w + PW;
    for (i64 ky = 0; ky < KH; ky++) {
        const i64 ty = p - ky * DH;
        if (ty < 0 || ty % SH || ty / SH >= OH) continue;
        for (i64 kx = 0; kx < KW; kx++) {
            const i64 tx = q - kx * DW;
            if (tx < 0 || tx % SW || tx / SW >= OW) continue;
            loc[n] = (ty / SH) * OW + tx / SW;
            off[n] = (ky * KW + kx) * C;
            n++;
        }
    }
    return n;
}

INLINE void gin_tile(int m, int n, int ntaps, const i64 *loc, const i64 *off, const float *Wt, const float *g,
                     float *o, i64 xstride, i64 K, i64 L, i64 CO)
{
    vf acc[GIN_TM][GIN_TN];
    ZERO_ACC(acc, GIN_TM, GIN_TN)
    for (int t = 0; t < ntaps; t++) {
        const float *w = Wt + loc[t] * CO * K + off[t];
        const float *gl = g + loc[t] * CO;
        for (i64 co = 0; co < CO; co++) RANK1_UPDATE(acc, GIN_TM, GIN_TN, m, n, gl + co, L * CO, w + co * K);
    }
    STORE_TILE(acc, GIN_TM, GIN_TN, m, n, o, xstride)
}

void lc_backward_input(const float *g, const float *Wt, float *gx, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                       i64 OH, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW, int nthreads)
{
    const i64 K = KH * KW * C, L = OH * OW, xstride = H * W * C;
    const i64 nbt = (B + GIN_TM - 1) / GIN_TM, ncv = C / VW, nct = (ncv + GIN_TN - 1) / GIN_TN;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 pix = 0; pix < H * W; pix++)
        for (i64 ct = 0; ct < nct; ct++) {
            i64 loc[MAX_TAPS], off[MAX_TAPS];
            const int ntaps = pixel_taps(pix / W, pix % W, PH, PW, OH, OW, KH, KW, SH, SW, DH, DW, C, loc, off);
            const int n = (int)MIN(ncv - ct * GIN_TN, GIN_TN);
            const i64 c0 = ct * GIN_TN * VW;
            for (i64 bt = 0; bt < nbt; bt++) {
                const int m = (int)MIN(B - bt * GIN_TM, GIN_TM);
                const float *gb = g + bt * GIN_TM * L * CO;
                if (bt + 1 < nbt)  /* the next tile's output-gradient rows */
                    for (int t = 0; t < ntaps; t++)
                        for (i64 i = 0; i < MIN(GIN_TM, B - (bt + 1) * GIN_TM); i++)
                            for (i64 co = 0; co < CO; co += 16)
                                __builtin_prefetch(gb + (GIN_TM + i) * L * CO + loc[t] * CO + co);
                float *o = gx + bt * GIN_TM * xstride + pix * C + c0;
                if (m == GIN_TM && n == GIN_TN) gin_tile(GIN_TM, GIN_TN, ntaps, loc, off, Wt + c0, gb, o, xstride, K, L, CO);
                else if (m == GIN_TM && n == 1) gin_tile(GIN_TM, 1, ntaps, loc, off, Wt + c0, gb, o, xstride, K, L, CO);
                else gin_tile(m, n, ntaps, loc, off, Wt + c0, gb, o, xstride, K, L, CO);
            }
        }
}

/* ------------------------------------------------------------------------------------------------------
 * Weight gradient from channels-last x (C % VW == 0): gW[l, co, ky, kx, c] = sum_b g[b, l, co] *
 * x[b, y SH + ky DH - PH, x SW + kx DW - PW, c]. The taps that fall in the zero padding get zero gradient;
 * the others form one run of (kx1 - kx0) * C values per kernel row (DW = 1), or one run of C per valid
 * kernel column (DW > 1).
 * ------------------------------------------------------------------------------------------------------ */
INLINE void gw_tile(int m, int n, const float *x, i64 xstride, const float *g, i64 gstride, i64 B, float *gw, i64 K)
{
    vf acc[GW_TM][GW_TN];
    ZERO_ACC(acc, GW_TM, GW_TN)
    for (i64 b = 0; b < B; b++) {
        if (b + PF_DIST < B) {  /* rows H * W * C apart: too far apart for the hardware prefetcher */
            __builtin_prefetch(x + (b + PF_DIST) * xstride);
            if (n > 1) __builtin_prefetch(x + (b + PF_DIST) * xstride + 16);
            if (n > 2) __builtin_prefetch(x + (b + PF_DIST) * xstride + 32);
            __builtin_prefetch(g + (b + PF_DIST) * gstride);
        }
        RANK1_UPDATE(acc, GW_TM, GW_TN, m, n, g + b * gstride, 1, x + b * xstride);
    }
    STORE_TILE(acc, GW_TM, GW_TN, m, n, gw, K)
}

/* ------------------------------------------------------------------------------------------------------
 * Input gradient, scatter form (any C, e.g. the RGB stem, where the gather form's channel vectors do not
 * fit): per location and batch tile, the patch gradient pg[b, k] = sum_co g[b, l, co] Wt[l, co, k] with the
 * kernel as stored (k contiguous, the vector axis), then added into gx at the patch's taps. Each thread owns
 * a contiguous share of the batch, so no two threads write one gx row, and a row's sums come in the same
 * order whatever the thread count. A last partial vector of k is taken as the vector that ends at K: its
 * overlap with the one before is computed twice, the same way, so nothing is read past a kernel row.
 * ------------------------------------------------------------------------------------------------------ */
#define GINA_TM FWD_TM   /* batch rows */
#define GINA_TN FWD_TN   /* vectors along the patch */

INLINE void gina_tile(int m, int n, const float *g, i64 gstride, const float *w, i64 K, i64 CO, float *pg)
{
    vf acc[GINA_TM][GINA_TN];
    ZERO_ACC(acc, GINA_TM, GINA_TN)
    for (i64 co = 0; co < CO; co++) RANK1_UPDATE(acc, GINA_TM, GINA_TN, m, n, g + co, gstride, w + co * K);
    STORE_TILE(acc, GINA_TM, GINA_TN, m, n, pg, K)
}

int lc_backward_input_any(const float *g, const float *Wt, float *gx, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                           i64 OH, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW, int nthreads)
{
    const i64 K = KH * KW * C, L = OH * OW, xstride = H * W * C, gstride = L * CO;
    const i64 nfull = K / VW, ntiles = (nfull + GINA_TN - 1) / GINA_TN;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        const i64 b_begin = B * tid / nt, b_end = B * (tid + 1) / nt;
        float *pg = (float *)malloc(GINA_TM * K * sizeof(float));
        if (!pg) {
#pragma omp atomic write
            failed = 1;
        } else {
            memset(gx + b_begin * xstride, 0, (b_end - b_begin) * xstride * sizeof(float));
            for (i64 l = 0; l < L; l++) {
                const i64 y = l / OW, xo = l % OW, row0 = y * SH - PH, col0 = xo * SW - PW;
                i64 kx0, kx1, ky0, ky1;
                valid_taps(col0, DW, W, KW, &kx0, &kx1);
                valid_taps(row0, DH, H, KH, &ky0, &ky1);
                const float *wl = Wt + l * CO * K;
                for (i64 b = b_begin; b < b_end; b += GINA_TM) {
                    const int m = (int)MIN(b_end - b, GINA_TM);
                    const float *gb = g + b * gstride + l * CO;
                    if (K < VW) {  /* shorter than a vector: plain sums */
                        for (int i = 0; i < m; i++)
                            for (i64 k = 0; k < K; k++) {
                                float sum = 0.f;
                                for (i64 co = 0; co < CO; co++) sum += gb[i * gstride + co] * wl[co * K + k];
                                pg[i * K + k] = sum;
                            }
                    } else {
                        for (i64 t = 0; t < ntiles; t++) {
                            const int n = (int)MIN(nfull - t * GINA_TN, GINA_TN);
                            const i64 k0 = t * GINA_TN * VW;
                            if (m == GINA_TM && n == GINA_TN)
                                gina_tile(GINA_TM, GINA_TN, gb, gstride, wl + k0, K, CO, pg + k0);
                            else
                                gina_tile(m, n, gb, gstride, wl + k0, K, CO, pg + k0);
                        }
                        if (K % VW)  /* the vector that ends at K */
                            gina_tile(m, 1, gb, gstride, wl + K - VW, K, CO, pg + K - VW);
                    }
                    /* add the patch gradients at their taps: a kernel row's valid taps are one run when DW == 1 */
                    for (int i = 0; i < m; i++) {
                        float *gxb = gx + (b + i) * xstride;
                        const float *pgi = pg + i * K;
                        for (i64 ky = ky0; ky < ky1; ky++) {
                            float *dst = gxb + ((row0 + ky * DH) * W + col0) * C;
                            const float *src = pgi + ky * KW * C;
                            if (DW == 1) {
                                for (i64 q = kx0 * C; q < kx1 * C; q++) dst[q] += src[q];
                            } else {
                                for (i64 kx = kx0; kx < kx1; kx++)
                                    for (i64 c = 0; c < C; c++) dst[kx * DW * C + c] += src[kx * C + c];
                            }
                        }
                    }
                }
            }
            free(pg);
        }
    }
    return failed ? -1 : 0;
}

void lc_backward_weight(const float *x, const float *g, float *gW, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                        i64 OH, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW, int nthreads)
{
    const i64 R = KW * C, K = KH * R, L = OH * OW, xstride = H * W * C, gstride = L * CO;
    const i64 nct = (CO + GW_TM - 1) / GW_TM;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 l = 0; l < L; l++)
        for (i64 ct = 0; ct < nct; ct++) {
            const i64 y = l / OW, xo = l % OW, co = ct * GW_TM, col0 = xo * SW - PW;
            const int m = (int)MIN(CO - co, GW_TM);
            i64 kx0, kx1;
            valid_taps(col0, DW, W, KW, &kx0, &kx1);
            const i64 nv = (kx1 - kx0) * C / VW;
            const i64 seg = DW == 1 ? MAX(1, kx1 - kx0) : 1;  /* kernel columns per contiguous run of x */
            float *gwl = gW + (l * CO + co) * K;
            for (i64 ky = 0; ky < KH; ky++) {
                const i64 row = y * SH + ky * DH - PH;
                float *gwk = gwl + ky * R;
                const int inside = row >= 0 && row < H && nv > 0;
                for (int i = 0; i < m; i++) {
                    if (!inside) { memset(gwk + i * K, 0, R * sizeof(float)); continue; }
                    memset(gwk + i * K, 0, kx0 * C * sizeof(float));
                    memset(gwk + i * K + kx1 * C, 0, (KW - kx1) * C * sizeof(float));
                }
                if (!inside) continue;
                for (i64 kx = kx0; kx < kx1; kx += seg) {
                    const float *xr = x + (row * W + col0 + kx * DW) * C;
                    const i64 nvs = seg * C / VW;
                    for (i64 v = 0; v < nvs; v += GW_TN) {
                        const int n = (int)MIN(nvs - v, GW_TN);
                        float *o = gwk + kx * C + v * VW;
                        const float *gl = g + l * CO + co;
                        if (m == GW_TM && n == GW_TN) gw_tile(GW_TM, GW_TN, xr + v * VW, xstride, gl, gstride, B, o, K);
                        else if (m == GW_TM && n == 1) gw_tile(GW_TM, 1, xr + v * VW, xstride, gl, gstride, B, o, K);
                        else gw_tile(m, n, xr + v * VW, xstride, gl, gstride, B, o, K);
                    }
                }
            }
        }
}

/* ------------------------------------------------------------------------------------------------------
 * Weight gradient for any C (the RGB stem's C = 3), vectorized over output channels: gW[l, co, k] =
 * sum_b x[b, tap k] * g[b, l, co]; a tile is GWC_TM consecutive taps of a kernel row x GWC_TN channel
 * vectors, x broadcast. g has COP >= CO channels per location (COP a multiple of VW; the caller pads).
 * ------------------------------------------------------------------------------------------------------ */
INLINE void gwc_tile(int m, int n, const float *x, i64 xstride, const float *g, i64 gstride, i64 B, float *gw,
                     i64 K, i64 cov)
{
    vf acc[GWC_TM][GWC_TN];
    ZERO_ACC(acc, GWC_TM, GWC_TN)
    for (i64 b = 0; b < B; b++) {
        RANK1_UPDATE(acc, GWC_TM, GWC_TN, m, n, x + b * xstride, 1, g + b * gstride);
    }
    /* transposed: channel (j VW + lane) of tap i goes to gw[(j VW + lane) K + i]; constant indices of acc, as in
     * STORE_TILE_PARTIAL */
    _Pragma("GCC unroll 16") for (int i = 0; i < GWC_TM; i++)
        if (i < m)
            _Pragma("GCC unroll 16") for (int j = 0; j < GWC_TN; j++) if (j < n) {
                float lanes[VW];
                vstore(lanes, acc[i][j]);
                for (int lane = 0; lane < VW && j * VW + lane < cov; lane++) gw[(j * VW + lane) * K + i] = lanes[lane];
            }
}

void lc_backward_weight_any(const float *x, const float *g, float *gW, i64 B, i64 H, i64 W, i64 C, i64 PH,
                            i64 PW, i64 OH, i64 OW, i64 CO, i64 COP, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW,
                            int nthreads)
{
    const i64 R = KW * C, K = KH * R, L = OH * OW, xstride = H * W * C, gstride = L * COP;
    const i64 ncv = COP / VW, nct = (ncv + GWC_TN - 1) / GWC_TN;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 l = 0; l < L; l++)
        for (i64 ct = 0; ct < nct; ct++) {
            const i64 y = l / OW, xo = l % OW, col0 = xo * SW - PW;
            const int n = (int)MIN(ncv - ct * GWC_TN, GWC_TN);
            const i64 co = ct * GWC_TN * VW, cov = CO - co;
            i64 kx0, kx1;
            valid_taps(col0, DW, W, KW, &kx0, &kx1);
            const i64 seg = DW == 1 ? MAX(1, kx1 - kx0) : 1, run = seg * C;  /* kernel columns, values per run */
            float *gwl = gW + (l * CO + co) * K;
            for (i64 c = 0; c < MIN(cov, n * VW); c++) memset(gwl + c * K, 0, K * sizeof(float));
            for (i64 ky = 0; ky < KH; ky++) {
                const i64 row = y * SH + ky * DH - PH;
                if (row < 0 || row >= H) continue;
                for (i64 kx = kx0; kx < kx1; kx += seg) {
                    const float *xr = x + (row * W + col0 + kx * DW) * C;
                    for (i64 r = 0; r < run; r += GWC_TM) {
                        const int m = (int)MIN(run - r, GWC_TM);
                        float *o = gwl + ky * R + kx * C + r;
                        const float *gl = g + l * COP + co;
                        if (m == GWC_TM && n == GWC_TN) gwc_tile(GWC_TM, GWC_TN, xr + r, xstride, gl, gstride, B, o, K, cov);
                        else if (m == GWC_TM && n == 1) gwc_tile(GWC_TM, 1, xr + r, xstride, gl, gstride, B, o, K, cov);
                        else gwc_tile(m, n, xr + r, xstride, gl, gstride, B, o, K, cov);
                    }
                }
            }
        }
}

/* ------------------------------------------------------------------------------------------------------
 * Depthwise layers (groups == C == CO: each output channel sees its own input channel only). The weight is
 * passed tap-major, wd (OH, OW, KH, KW, C), so that every product is an elementwise one over a contiguous
 * run of C channels (vectorized over channels, any C):
 *   forward       out[b, l, :]   = sum_t wd[l, t, :] * x[b, pixel(l, t), :]
 *   input grad    gx[b, p, :]    = sum over the (l, t) whose tap t reads pixel p of wd[l, t, :] * g[b, l, :]
 *   weight grad   gwd[l, t, :]   = sum_b g[b, l, :] * x[b, pixel(l, t), :]      (0 where t is in the padding)
 * Locations (or pixels) are split over the threads, so no two threads write the same value and the results
 * do not depend on the thread count.
 * ------------------------------------------------------------------------------------------------------ */
/* Output location l's window: the input row and column its tap (0, 0) reads, and its kernel taps
 * [ky0, ky1) x [kx0, kx1) that land inside the input (the others read zero padding). */
typedef struct { i64 row0, col0, ky0, ky1, kx0, kx1; } window;
INLINE window location_window(i64 l, i64 OW, i64 H, i64 W, i64 KH, i64 KW, i64 SH, i64 SW, i64 PH, i64 PW,
                              i64 DH, i64 DW)
{
    window win = {(l / OW) * SH - PH, (l % OW) * SW - PW, 0, 0, 0, 0};
    valid_taps(win.row0, DH, H, KH, &win.ky0, &win.ky1);
    valid_taps(win.col0, DW, W, KW, &win.kx0, &win.kx1);
    return win;
}

INLINE void dw_axpy(float *restrict o, const float *restrict a, const float *restrict b, i64 C)
{
#pragma omp simd
    for (i64 c = 0; c < C; c++) o[c] += a[c] * b[c];
}

void lc_dw_forward(const float *x, const float *wd, float *out, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                   i64 OH, i64 OW, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW, int nthreads)
{
    const i64 L = OH * OW, T = KH * KW;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (i64 l = 0; l < L; l++) {
        const window win = location_window(l, OW, H, W, KH, KW, SH, SW, PH, PW, DH, DW);
        const float *wl = wd + l * T * C;
        for (i64 b = 0; b < B; b++) {
            float *o = out + (b * L + l) * C;
            memset(o, 0, C * sizeof(float));
            for (i64 ky = win.ky0; ky < win.ky1; ky++)
                for (i64 kx = win.kx0; kx < win.kx1; kx++)
                    dw_axpy(o, wl + (ky * KW + kx) * C,
                            x + ((b * H + win.row0 + ky * DH) * W + win.col0 + kx * DW) * C, C);
        }
    }
}

void lc_dw_backward_input(const float *g, const float *wd, float *gx, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                          i64 OH, i64 OW, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW, int nthreads)
{
    const i64 L = OH * OW, T = KH * KW;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (i64 pix = 0; pix < H * W; pix++) {
        i64 loc[MAX_TAPS], off[MAX_TAPS];  /* off = t * C: the tap's offset in a location's (T, C) block */
        const int ntaps = pixel_taps(pix / W, pix % W, PH, PW, OH, OW, KH, KW, SH, SW, DH, DW, C, loc, off);
        for (i64 b = 0; b < B; b++) {
            float *o = gx + (b * H * W + pix) * C;
            memset(o, 0, C * sizeof(float));
            for (int t = 0; t < ntaps; t++)
                dw_axpy(o, wd + loc[t] * T * C + off[t], g + (b * L + loc[t]) * C, C);
        }
    }
}

void lc_dw_backward_weight(const float *x, const float *g, float *gwd, i64 B, i64 H, i64 W, i64 C, i64 PH,
                           i64 PW, i64 OH, i64 OW, i64 KH, i64 KW, i64 SH, i64 SW, i64 DH, i64 DW, int nthreads)
{
    const i64 L = OH * OW, T = KH * KW;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (i64 l = 0; l < L; l++) {
        const window win = location_window(l, OW, H, W, KH, KW, SH, SW, PH, PW, DH, DW);
        float *gl = gwd + l * T * C;
        memset(gl, 0, T * C * sizeof(float));
        for (i64 b = 0; b < B; b++) {
            const float *gb = g + (b * L + l) * C;
            for (i64 ky = win.ky0; ky < win.ky1; ky++)
                for (i64 kx = win.kx0; kx < win.kx1; kx++)
                    dw_axpy(gl + (ky * KW + kx) * C, gb,
                            x + ((b * H + win.row0 + ky * DH) * W + win.col0 + kx * DW) * C, C);
        }
    }
}
