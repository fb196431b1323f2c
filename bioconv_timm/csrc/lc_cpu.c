/*
 * CPU kernels of the locally connected 2d layer (fp32), compiled on first use by bioconv_timm/native.py.
 *
 * Shapes (all row-major, i64 sizes):
 *   x    (B, H, W, C)          the input, channels-last (what the model passes between layers)
 *   P    (Hp, Wp, C, Bp)       the zero-padded input with the batch innermost, Bp a multiple of VW
 *   Wt   (OH, OW, CO, KH, KW, C)   the layer weight: one channels-last conv kernel per location
 *   O    (OH, OW, CO, Bp)      forward result, batch innermost
 *   g    (B, OH, OW, CO)       output gradient, channels-last
 *
 * Every product is a small matrix product per output location l (L = OH * OW of them):
 *   forward       out[b, l, co]  = patches_l[b] . Wt[l, co]                   vectorized along a kernel row
 *                 (inputs whose C is not a multiple of VW, like RGB: from P, vectorized over the batch)
 *   input grad    gx[pixel]      = sum over the (l, kernel offset) that see the pixel of g[:, l] @ Wt[l]
 *                                                                              vectorized over C (gather form)
 *   weight grad   gW[l] (CO x K) = g[:, l]^T (CO x B) @ patches_l^T (B x K)   vectorized over a kernel row
 * with K = KH * KW * C. The patches are never materialized: a kernel row of a patch is one contiguous run of
 * KW * C values in x (or KW * C * Bp values in P), so the micro-kernels read the activations in place.
 *
 * A micro-kernel keeps a TM x TN tile of accumulator vectors in registers; the drivers pick the tile and
 * split (location, tile) pairs over OpenMP threads so that no two threads write the same output, which
 * also makes every result independent of the thread count.
 */
#include <stdint.h>
#include <string.h>
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

typedef int64_t i64;
/* A vector of VW floats that may sit at any 4-byte aligned address and alias float storage. */
typedef float vf __attribute__((vector_size(VW * 4), aligned(4), may_alias));

#define INLINE static inline __attribute__((always_inline))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

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

/* Tiles (accumulator vectors TM x TN), chosen on a 2-core AVX-512 machine; 8 x 2 also fits 16 AVX2 registers. */
#define FWD_TM 8   /* output channels (packed forward) */
#define FWD_TN 2   /* batch vectors */
#define GIN_TM 8   /* batch rows */
#define GIN_TN 2   /* input-channel vectors */
#define GW_TM 8    /* output channels */
#define GW_TN 3    /* vectors along a kernel row */

#define ZERO_ACC(acc, TM, TN)                                                                      \
    _Pragma("GCC unroll 16") for (int i = 0; i < TM; i++)                                          \
        _Pragma("GCC unroll 16") for (int j = 0; j < TN; j++) acc[i][j] = (vf){0};

/* ------------------------------------------------------------------------------------------------------
 * Layout changes. dst[j][i] = src[i][j] for i < I, j < J; src rows are si apart, dst rows dj apart.
 * 16 x 16 blocks go through a small tile so that both sides move in contiguous runs.
 * ------------------------------------------------------------------------------------------------------ */
static void transpose_block(const float *s, i64 si, float *d, i64 dj, i64 I, i64 J)
{
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
}

/* x (B, H, W, C) -> P (H + 2 PH, W + 2 PW, C, Bp), zero padding and zero batch lanes B..Bp. */
void lc_pack_input(const float *x, float *P, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW, i64 Bp, int nthreads)
{
    const i64 Hp = H + 2 * PH, Wp = W + 2 * PW, row = Wp * C * Bp, nib = (B + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (i64 r = 0; r < Hp; r++) {
        float *dr = P + r * row;
        if (r < PH || r >= PH + H) { memset(dr, 0, row * sizeof(float)); continue; }
        memset(dr, 0, PW * C * Bp * sizeof(float));
        memset(dr + (PW + W) * C * Bp, 0, PW * C * Bp * sizeof(float));
        if (Bp > B)
            for (i64 j = 0; j < W * C; j++) memset(dr + (PW * C + j) * Bp + B, 0, (Bp - B) * sizeof(float));
    }
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 h = 0; h < H; h++)
        for (i64 ib = 0; ib < nib; ib++) {
            const i64 b0 = ib * 16;
            transpose_block(x + b0 * H * W * C + h * W * C, H * W * C,
                            P + ((h + PH) * Wp + PW) * C * Bp + b0, Bp, MIN(16, B - b0), W * C);
        }
}

/* O (N, Bp) -> out (B, N): the forward result back to channels-last, N = OH * OW * CO. */
void lc_unpack_output(const float *O, float *out, i64 B, i64 N, i64 Bp, int nthreads)
{
    const i64 nib = (N + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (i64 ib = 0; ib < nib; ib++) {
        const i64 n0 = ib * 16;
        transpose_block(O + n0 * Bp, Bp, out + n0, N, MIN(16, N - n0), B);
    }
}

/* ------------------------------------------------------------------------------------------------------
 * Forward from the packed input, for any C (the stem's C = 3): O[l, co, b] = sum_{ky, r} Wt[l, co, ky, r] *
 * P[y SH + ky, x SW, r, b], r = kx * C + c running over KW * C consecutive rows of Bp values.
 * ------------------------------------------------------------------------------------------------------ */
INLINE void fwdp_tile(int m, int n, const float *w, i64 K, i64 R, i64 KH, const float *p, i64 prow, i64 Bp, float *o)
{
    vf acc[FWD_TM][FWD_TN];
    ZERO_ACC(acc, FWD_TM, FWD_TN)
    for (i64 ky = 0; ky < KH; ky++) {
        const float *pr = p + ky * prow;
        const float *wr = w + ky * R;
        for (i64 r = 0; r < R; r++) {
            vf xv[FWD_TN];
#pragma GCC unroll 16
            for (int j = 0; j < FWD_TN; j++) if (j < n) xv[j] = vload(pr + r * Bp + j * VW);
#pragma GCC unroll 16
            for (int i = 0; i < FWD_TM; i++) {
                if (i < m) {
                    const vf wv = vbcast(wr + i * K + r);
#pragma GCC unroll 16
                    for (int j = 0; j < FWD_TN; j++) if (j < n) acc[i][j] += wv * xv[j];
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < FWD_TM; i++)
        if (i < m)
#pragma GCC unroll 16
            for (int j = 0; j < FWD_TN; j++) if (j < n) vstore(o + i * Bp + j * VW, acc[i][j]);
}

void lc_forward_packed(const float *P, const float *Wt, float *O, i64 Bp, i64 Wp, i64 C, i64 OH, i64 OW, i64 CO,
                i64 KH, i64 KW, i64 SH, i64 SW, int nthreads)
{
    const i64 R = KW * C, K = KH * R, L = OH * OW, prow = Wp * C * Bp;
    const i64 nbv = Bp / VW, nbt = (nbv + FWD_TN - 1) / FWD_TN;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 l = 0; l < L; l++)
        for (i64 bt = 0; bt < nbt; bt++) {
            const i64 y = l / OW, x = l % OW;
            const float *p = P + (y * SH * Wp + x * SW) * C * Bp + bt * FWD_TN * VW;
            const float *wl = Wt + l * CO * K;
            float *ol = O + l * CO * Bp + bt * FWD_TN * VW;
            const int n = (int)MIN(nbv - bt * FWD_TN, FWD_TN);
            for (i64 co = 0; co < CO; co += FWD_TM) {
                const int m = (int)MIN(CO - co, FWD_TM);
                if (m == FWD_TM && n == FWD_TN) fwdp_tile(FWD_TM, FWD_TN, wl + co * K, K, R, KH, p, prow, Bp, ol + co * Bp);
                else fwdp_tile(m, n, wl + co * K, K, R, KH, p, prow, Bp, ol + co * Bp);
            }
        }
}

/* ------------------------------------------------------------------------------------------------------
 * Forward from channels-last x (C % VW == 0), no packing: out[b, l, co] = sum_ky x[b, row, run] . Wt[l, co,
 * ky, run], a dot product along each kernel row's run of (kx1 - kx0) * C values (taps in the zero padding
 * are skipped). A tile holds FD_TM batch rows x FD_TN output channels, each accumulator a vector of partial
 * sums that is reduced at the end (with VW == 16 and 16 accumulators: four shuffle-add steps).
 * ------------------------------------------------------------------------------------------------------ */
#define FD_TM 4   /* batch rows */
#define FD_TN 4   /* output channels */

#if VW == 16
typedef int32_t vi __attribute__((vector_size(64)));
/* Adds the lanes of a and b selected by lo to those selected by hi (two-source permutes). */
INLINE vf pair_add(vf a, vf b, vi lo, vi hi) { return __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi); }

/* 16 vectors -> one vector whose lane k is the sum of acc[k]. */
INLINE vf reduce16(const vf *acc)
{
    const vi lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const vi hi8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const vi lo4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27};
    const vi hi4 = {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31};
    const vi lo2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
    const vi hi2 = {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31};
    const vi lo1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30};
    const vi hi1 = {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31};
    vf s8[8], s4[4], s2[2];
    for (int k = 0; k < 8; k++) s8[k] = pair_add(acc[k], acc[k + 8], lo8, hi8);   /* lanes 0-7: acc k, 8-15: acc k+8 */
    for (int k = 0; k < 4; k++) s4[k] = pair_add(s8[k], s8[k + 4], lo4, hi4);     /* 4-lane groups: k, k+4, k+8, k+12 */
    for (int k = 0; k < 2; k++) s2[k] = pair_add(s4[k], s4[k + 2], lo2, hi2);     /* 2-lane groups: k, k+2, ... */
    return pair_add(s2[0], s2[1], lo1, hi1);                                      /* lane k: acc k */
}
#endif

INLINE void fwd_tile(int m, int n, const float *x, i64 xstride, i64 rowstride, const float *w, i64 K, i64 R,
                     i64 ky0, i64 ky1, i64 nv, float *o, i64 ostride)
{
    vf acc[FD_TM][FD_TN];
    ZERO_ACC(acc, FD_TM, FD_TN)
    for (i64 ky = ky0; ky < ky1; ky++) {
        const float *xr = x + ky * rowstride;
        const float *wr = w + ky * R;
        for (i64 v = 0; v < nv; v++) {
            vf xv[FD_TM];
#pragma GCC unroll 16
            for (int i = 0; i < FD_TM; i++) if (i < m) xv[i] = vload(xr + i * xstride + v * VW);
#pragma GCC unroll 16
            for (int j = 0; j < FD_TN; j++) {
                if (j < n) {
                    const vf wv = vload(wr + j * K + v * VW);
#pragma GCC unroll 16
                    for (int i = 0; i < FD_TM; i++) if (i < m) acc[i][j] += xv[i] * wv;
                }
            }
        }
    }
#if VW == 16
    if (FD_TM * FD_TN == 16 && m == FD_TM && n == FD_TN) {
        float sums[16];
        vstore(sums, reduce16(&acc[0][0]));
        for (int k = 0; k < 16; k++) o[(k / FD_TN) * ostride + k % FD_TN] = sums[k];
        return;
    }
#endif
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float sum = 0;
            for (int q = 0; q < VW; q++) sum += acc[i][j][q];
            o[i * ostride + j] = sum;
        }
}

void lc_forward(const float *x, const float *Wt, float *out, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                i64 OH, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, int nthreads)
{
    const i64 R = KW * C, K = KH * R, L = OH * OW, xstride = H * W * C, ostride = L * CO;
    const i64 nbt = (B + FD_TM - 1) / FD_TM;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 l = 0; l < L; l++)
        for (i64 bt = 0; bt < nbt; bt++) {
            const i64 y = l / OW, xo = l % OW, col0 = xo * SW - PW, row0 = y * SH - PH;
            const i64 kx0 = MIN(KW, MAX(0, -col0)), kx1 = MAX(kx0, MIN(KW, W - col0));
            const i64 ky0 = MIN(KH, MAX(0, -row0)), ky1 = MAX(ky0, MIN(KH, H - row0));
            const i64 nv = (kx1 - kx0) * C / VW, b0 = bt * FD_TM;
            const int m = (int)MIN(B - b0, FD_TM);
            const float *xb = x + b0 * xstride + (row0 * W + col0 + kx0) * C;
            for (i64 co = 0; co < CO; co += FD_TN) {
                const int n = (int)MIN(CO - co, FD_TN);
                const float *w = Wt + (l * CO + co) * K + kx0 * C;
                float *o = out + b0 * ostride + l * CO + co;
                if (m == FD_TM && n == FD_TN) fwd_tile(FD_TM, FD_TN, xb, xstride, W * C, w, K, R, ky0, ky1, nv, o, ostride);
                else fwd_tile(m, n, xb, xstride, W * C, w, K, R, ky0, ky1, nv, o, ostride);
            }
        }
}

/* ------------------------------------------------------------------------------------------------------
 * Input gradient, gather form (C % VW == 0): gx[b, h, w, :] = sum over the (l, ky, kx) with
 * (y SH + ky, x SW + kx) = (h + PH, w + PW) of sum_co g[b, l, co] * Wt[l, co, ky, kx, :].
 * ------------------------------------------------------------------------------------------------------ */
#define MAX_TAPS 256   /* KH * KW; the Python side checks it */

/* The (location, weight offset) pairs whose kernels cover input pixel (h, w); returns how many. */
static int pixel_taps(i64 h, i64 w, i64 PH, i64 PW, i64 OH, i64 OW, i64 KH, i64 KW, i64 SH, i64 SW, i64 C,
                      i64 *loc, i64 *off)
{
    int n = 0;
    const i64 p = h + PH, q = w + PW;
    for (i64 ky = 0; ky < KH; ky++) {
        const i64 ty = p - ky;
        if (ty < 0 || ty % SH || ty / SH >= OH) continue;
        for (i64 kx = 0; kx < KW; kx++) {
            const i64 tx = q - kx;
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
        for (i64 co = 0; co < CO; co++) {
            vf wv[GIN_TN];
#pragma GCC unroll 16
            for (int j = 0; j < GIN_TN; j++) if (j < n) wv[j] = vload(w + co * K + j * VW);
#pragma GCC unroll 16
            for (int i = 0; i < GIN_TM; i++) {
                if (i < m) {
                    const vf gv = vbcast(gl + i * L * CO + co);
#pragma GCC unroll 16
                    for (int j = 0; j < GIN_TN; j++) if (j < n) acc[i][j] += gv * wv[j];
                }
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < GIN_TM; i++)
        if (i < m)
#pragma GCC unroll 16
            for (int j = 0; j < GIN_TN; j++) if (j < n) vstore(o + i * xstride + j * VW, acc[i][j]);
}

void lc_backward_input(const float *g, const float *Wt, float *gx, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                       i64 OH, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, int nthreads)
{
    const i64 K = KH * KW * C, L = OH * OW, xstride = H * W * C;
    const i64 nbt = (B + GIN_TM - 1) / GIN_TM, ncv = C / VW, nct = (ncv + GIN_TN - 1) / GIN_TN;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 pix = 0; pix < H * W; pix++)
        for (i64 ct = 0; ct < nct; ct++) {
            i64 loc[MAX_TAPS], off[MAX_TAPS];
            const int ntaps = pixel_taps(pix / W, pix % W, PH, PW, OH, OW, KH, KW, SH, SW, C, loc, off);
            const int n = (int)MIN(ncv - ct * GIN_TN, GIN_TN);
            const i64 c0 = ct * GIN_TN * VW;
            for (i64 bt = 0; bt < nbt; bt++) {
                const int m = (int)MIN(B - bt * GIN_TM, GIN_TM);
                const float *gb = g + bt * GIN_TM * L * CO;
                float *o = gx + bt * GIN_TM * xstride + pix * C + c0;
                if (m == GIN_TM && n == GIN_TN) gin_tile(GIN_TM, GIN_TN, ntaps, loc, off, Wt + c0, gb, o, xstride, K, L, CO);
                else if (m == GIN_TM && n == 1) gin_tile(GIN_TM, 1, ntaps, loc, off, Wt + c0, gb, o, xstride, K, L, CO);
                else gin_tile(m, n, ntaps, loc, off, Wt + c0, gb, o, xstride, K, L, CO);
            }
        }
}

/* ------------------------------------------------------------------------------------------------------
 * Weight gradient from channels-last x (C % VW == 0): gW[l, co, ky, kx, c] = sum_b g[b, l, co] *
 * x[b, y SH + ky - PH, x SW + kx - PW, c]. The taps that fall in the zero padding get zero gradient; the
 * others form one run of (kx1 - kx0) * C values per kernel row.
 * ------------------------------------------------------------------------------------------------------ */
INLINE void gw_tile(int m, int n, const float *x, i64 xstride, const float *g, i64 gstride, i64 B, float *gw, i64 K)
{
    vf acc[GW_TM][GW_TN];
    ZERO_ACC(acc, GW_TM, GW_TN)
    for (i64 b = 0; b < B; b++) {
        vf xv[GW_TN];
#pragma GCC unroll 16
        for (int j = 0; j < GW_TN; j++) if (j < n) xv[j] = vload(x + b * xstride + j * VW);
#pragma GCC unroll 16
        for (int i = 0; i < GW_TM; i++) {
            if (i < m) {
                const vf gv = vbcast(g + b * gstride + i);
#pragma GCC unroll 16
                for (int j = 0; j < GW_TN; j++) if (j < n) acc[i][j] += gv * xv[j];
            }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < GW_TM; i++)
        if (i < m)
#pragma GCC unroll 16
            for (int j = 0; j < GW_TN; j++) if (j < n) vstore(gw + i * K + j * VW, acc[i][j]);
}

void lc_backward_weight(const float *x, const float *g, float *gW, i64 B, i64 H, i64 W, i64 C, i64 PH, i64 PW,
                        i64 OH, i64 OW, i64 CO, i64 KH, i64 KW, i64 SH, i64 SW, int nthreads)
{
    const i64 R = KW * C, K = KH * R, L = OH * OW, xstride = H * W * C, gstride = L * CO;
    const i64 nct = (CO + GW_TM - 1) / GW_TM;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 l = 0; l < L; l++)
        for (i64 ct = 0; ct < nct; ct++) {
            const i64 y = l / OW, xo = l % OW, co = ct * GW_TM, col0 = xo * SW - PW;
            const int m = (int)MIN(CO - co, GW_TM);
            const i64 kx0 = MIN(KW, MAX(0, -col0)), kx1 = MAX(kx0, MIN(KW, W - col0));
            const i64 nv = (kx1 - kx0) * C / VW;
            float *gwl = gW + (l * CO + co) * K;
            for (i64 ky = 0; ky < KH; ky++) {
                const i64 row = y * SH + ky - PH;
                float *gwk = gwl + ky * R;
                const int inside = row >= 0 && row < H && nv > 0;
                for (int i = 0; i < m; i++) {
                    if (!inside) { memset(gwk + i * K, 0, R * sizeof(float)); continue; }
                    memset(gwk + i * K, 0, kx0 * C * sizeof(float));
                    memset(gwk + i * K + kx1 * C, 0, (KW - kx1) * C * sizeof(float));
                }
                if (!inside) continue;
                const float *xr = x + (row * W + col0 + kx0) * C;
                for (i64 v = 0; v < nv; v += GW_TN) {
                    const int n = (int)MIN(nv - v, GW_TN);
                    float *o = gwk + kx0 * C + v * VW;
                    if (m == GW_TM && n == GW_TN) gw_tile(GW_TM, GW_TN, xr + v * VW, xstride, g + l * CO + co, gstride, B, o, K);
                    else gw_tile(m, n, xr + v * VW, xstride, g + l * CO + co, gstride, B, o, K);
                }
            }
        }
}

/* ------------------------------------------------------------------------------------------------------
 * Weight gradient from the packed input, for any C (the stem's C = 3): gW[l, co, k] = sum_b g[b, l, co] *
 * P[.., k, b], vectorized over output channels. g has COP >= CO channels (COP a multiple of VW, the extra
 * ones zero); a tile is TM consecutive k times one or two channel vectors.
 * ------------------------------------------------------------------------------------------------------ */
#define GWP_TM 12
#define GWP_TN 2
INLINE void gwp_tile(int m, int n, const float *p, i64 Bp, const float *g, i64 gstride, i64 B, float *gw, i64 K,
                     i64 cov)
{
    vf acc[GWP_TM][GWP_TN];
    ZERO_ACC(acc, GWP_TM, GWP_TN)
    for (i64 b = 0; b < B; b++) {
        vf gv[GWP_TN];
#pragma GCC unroll 16
        for (int j = 0; j < GWP_TN; j++) if (j < n) gv[j] = vload(g + b * gstride + j * VW);
#pragma GCC unroll 16
        for (int i = 0; i < GWP_TM; i++) {
            if (i < m) {
                const vf pv = vbcast(p + i * Bp + b);
#pragma GCC unroll 16
                for (int j = 0; j < GWP_TN; j++) if (j < n) acc[i][j] += pv * gv[j];
            }
        }
    }
    for (int j = 0; j < n; j++)
        for (int lane = 0; lane < VW && j * VW + lane < cov; lane++)
            for (int i = 0; i < m; i++) gw[(j * VW + lane) * K + i] = acc[i][j][lane];
}

void lc_backward_weight_packed(const float *P, const float *g, float *gW, i64 B, i64 Bp, i64 Wp, i64 C,
                               i64 OH, i64 OW, i64 CO, i64 COP, i64 KH, i64 KW, i64 SH, i64 SW, int nthreads)
{
    const i64 R = KW * C, K = KH * R, L = OH * OW, ncv = COP / VW, nct = (ncv + GWP_TN - 1) / GWP_TN;
#pragma omp parallel for schedule(static) collapse(2) num_threads(nthreads)
    for (i64 l = 0; l < L; l++)
        for (i64 ct = 0; ct < nct; ct++) {
            const i64 y = l / OW, xo = l % OW;
            const int n = (int)MIN(ncv - ct * GWP_TN, GWP_TN);
            const float *gl = g + l * COP + ct * GWP_TN * VW;
            float *gwl = gW + (l * CO + ct * GWP_TN * VW) * K;
            const i64 cov = CO - ct * GWP_TN * VW;
            for (i64 ky = 0; ky < KH; ky++) {
                const float *pr = P + ((y * SH + ky) * Wp + xo * SW) * C * Bp;
                for (i64 r = 0; r < R; r += GWP_TM) {
                    const int m = (int)MIN(R - r, GWP_TM);
                    if (m == GWP_TM && n == GWP_TN) gwp_tile(GWP_TM, GWP_TN, pr + r * Bp, Bp, gl, L * COP, B, gwl + ky * R + r, K, cov);
                    else if (m == GWP_TM && n == 1) gwp_tile(GWP_TM, 1, pr + r * Bp, Bp, gl, L * COP, B, gwl + ky * R + r, K, cov);
                    else gwp_tile(m, n, pr + r * Bp, Bp, gl, L * COP, B, gwl + ky * R + r, K, cov);
                }
            }
        }
}
