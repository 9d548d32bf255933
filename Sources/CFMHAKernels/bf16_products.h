// The two products of the forward tile with AVX-512 BF16 dot products (vdpbf16ps: two
// bfloat16 multiply-adds per float32 lane), for bfloat16 inputs. Included by the forward body
// when FMHA_BF16_PRODUCTS is defined, in a function compiled with avx512bf16.
//
// Pairs along the reduction dimension share one 32-bit lane: qt2[c][i] holds query i's elements
// 2c and 2c+1, vp[j][v] holds values 2j and 2j+1 of column v, pp[j][i] the probabilities of keys
// 2j and 2j+1 for query i (rounded to bfloat16, as GPU kernels round P before P·V).
#ifndef CFMHA_BF16_PRODUCTS_H
#define CFMHA_BF16_PRODUCTS_H

#include <immintrin.h>

typedef uint32_t vu __attribute__((vector_size(VW * 4)));
typedef uint32_t vu_unaligned __attribute__((vector_size(VW * 4), aligned(4)));

/// Two bfloat16 bit patterns in one lane: `low` in bits 0–15, `high` in bits 16–31.
FMHA_INLINE uint32_t bf16_pair(uint16_t low, uint16_t high) { return (uint32_t)low | ((uint32_t)high << 16); }

/// The two bfloat16 values at `p` as one lane (any alignment).
FMHA_INLINE uint32_t load_pair(const uint16_t *p) {
    uint32_t pair;
    memcpy(&pair, p, sizeof pair);
    return pair;
}

/// acc + Σ over the lane's two pairs of a·b.
FMHA_INLINE vf dot_pairs(vf acc, vu a, vu b) { return (vf)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b); }

FMHA_INLINE vu loadu(const uint32_t *p) { return *(const vu_unaligned *)p; }
FMHA_INLINE void storeu(uint32_t *p, vu v) { *(vu_unaligned *)p = v; }
FMHA_INLINE vu splat_u(uint32_t x) { return (vu){FMHA_LANES(x)}; }

/// Float lanes rounded to bfloat16 (nearest even), as the low 16 bits of each lane.
FMHA_INLINE vu round_to_bf16_bits(vf x) {
    const vu bits = (vu)x;
    return (bits + splat_u(0x7FFF) + ((bits >> 16) & splat_u(1))) >> 16;
}

/// st[j][i] = scale·Σ_c key[j][c]·q[i][c] for j < n rounded up to 6 (key rows past n are zeros),
/// from bfloat16 key rows and query pairs qt2 (pairs × R).
FMHA_INLINE void scores_bf16(float *restrict st, const uint16_t *const *key, const uint32_t *restrict qt2, int32_t n,
                             int32_t pairs, float scale) {
    const vf s = splat(scale);
    for (int32_t j = 0; j < n; j += 6) {
        const uint16_t *k0 = key[j], *k1 = key[j + 1], *k2 = key[j + 2], *k3 = key[j + 3], *k4 = key[j + 4], *k5 = key[j + 5];
        for (int32_t i = 0; i < R; i += 2 * VW) {
            vf a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0};
            vf a30 = {0}, a31 = {0}, a40 = {0}, a41 = {0}, a50 = {0}, a51 = {0};
            const uint32_t *q = qt2 + i;
            for (int32_t c = 0; c < pairs; c++, q += R) {
                const vu q0 = loadu(q), q1 = loadu(q + VW);
                vu b = splat_u(load_pair(k0 + 2 * c)); a00 = dot_pairs(a00, q0, b); a01 = dot_pairs(a01, q1, b);
                b = splat_u(load_pair(k1 + 2 * c)); a10 = dot_pairs(a10, q0, b); a11 = dot_pairs(a11, q1, b);
                b = splat_u(load_pair(k2 + 2 * c)); a20 = dot_pairs(a20, q0, b); a21 = dot_pairs(a21, q1, b);
                b = splat_u(load_pair(k3 + 2 * c)); a30 = dot_pairs(a30, q0, b); a31 = dot_pairs(a31, q1, b);
                b = splat_u(load_pair(k4 + 2 * c)); a40 = dot_pairs(a40, q0, b); a41 = dot_pairs(a41, q1, b);
                b = splat_u(load_pair(k5 + 2 * c)); a50 = dot_pairs(a50, q0, b); a51 = dot_pairs(a51, q1, b);
            }
            float *o = st + (int64_t)j * R + i;
            storev(o, a00 * s); storev(o + VW, a01 * s);
            storev(o + R, a10 * s); storev(o + R + VW, a11 * s);
            storev(o + 2 * R, a20 * s); storev(o + 2 * R + VW, a21 * s);
            storev(o + 3 * R, a30 * s); storev(o + 3 * R + VW, a31 * s);
            storev(o + 4 * R, a40 * s); storev(o + 4 * R + VW, a41 * s);
            storev(o + 5 * R, a50 * s); storev(o + 5 * R + VW, a51 * s);
        }
    }
}

/// pp[j][i] = (P[2j][i], P[2j+1][i]) in bfloat16 for the n probability rows of st (a missing odd
/// row counts as zero).
FMHA_INLINE void pack_probabilities(uint32_t *restrict pp, const float *restrict st, int32_t n) {
    for (int32_t j = 0; j < n; j += 2) {
        for (int32_t i = 0; i < R; i += VW) {
            const vu low = round_to_bf16_bits(loadv(st + (int64_t)j * R + i));
            const vu high = j + 1 < n ? round_to_bf16_bits(loadv(st + (int64_t)(j + 1) * R + i)) : splat_u(0);
            storeu(pp + (int64_t)(j / 2) * R + i, low | (high << 16));
        }
    }
}

/// ot[v][i] += Σ_j value[j][v]·P[j][i] over pairs of keys: vp (pairs × value_dim), pp (pairs × R).
FMHA_INLINE void accumulate_values_bf16(float *restrict ot, const uint32_t *restrict vp, const uint32_t *restrict pp,
                                        int32_t pairs, int32_t value_dim) {
    int32_t v = 0;
    for (; v + 6 <= value_dim; v += 6) {
        for (int32_t i = 0; i < R; i += 2 * VW) {
            float *o = ot + (int64_t)v * R + i;
            vf a00 = loadv(o), a01 = loadv(o + VW), a10 = loadv(o + R), a11 = loadv(o + R + VW);
            vf a20 = loadv(o + 2 * R), a21 = loadv(o + 2 * R + VW), a30 = loadv(o + 3 * R), a31 = loadv(o + 3 * R + VW);
            vf a40 = loadv(o + 4 * R), a41 = loadv(o + 4 * R + VW), a50 = loadv(o + 5 * R), a51 = loadv(o + 5 * R + VW);
            const uint32_t *p = pp + i, *w = vp + v;
            for (int32_t j = 0; j < pairs; j++, p += R, w += value_dim) {
                const vu p0 = loadu(p), p1 = loadu(p + VW);
                vu b = splat_u(w[0]); a00 = dot_pairs(a00, p0, b); a01 = dot_pairs(a01, p1, b);
                b = splat_u(w[1]); a10 = dot_pairs(a10, p0, b); a11 = dot_pairs(a11, p1, b);
                b = splat_u(w[2]); a20 = dot_pairs(a20, p0, b); a21 = dot_pairs(a21, p1, b);
                b = splat_u(w[3]); a30 = dot_pairs(a30, p0, b); a31 = dot_pairs(a31, p1, b);
                b = splat_u(w[4]); a40 = dot_pairs(a40, p0, b); a41 = dot_pairs(a41, p1, b);
                b = splat_u(w[5]); a50 = dot_pairs(a50, p0, b); a51 = dot_pairs(a51, p1, b);
            }
            storev(o, a00); storev(o + VW, a01); storev(o + R, a10); storev(o + R + VW, a11);
            storev(o + 2 * R, a20); storev(o + 2 * R + VW, a21); storev(o + 3 * R, a30); storev(o + 3 * R + VW, a31);
            storev(o + 4 * R, a40); storev(o + 4 * R + VW, a41); storev(o + 5 * R, a50); storev(o + 5 * R + VW, a51);
        }
    }
    for (; v < value_dim; v++) {
        for (int32_t i = 0; i < R; i += VW) {
            float *o = ot + (int64_t)v * R + i;
            vf a = loadv(o);
            const uint32_t *p = pp + i;
            for (int32_t j = 0; j < pairs; j++, p += R) a = dot_pairs(a, loadu(p), splat_u(vp[(int64_t)j * value_dim + v]));
            storev(o, a);
        }
    }
}

/// Rounds rows [0, n) of `rows` (each R floats, as st and dpt hold them) to bfloat16 pairs of
/// neighbouring queries: packed[j][i] holds queries 2i and 2i+1 of row j (R/2 lanes per row).
FMHA_INLINE void pack_query_pairs(uint32_t *restrict packed, const float *restrict rows, int32_t n) {
    for (int32_t j = 0; j < n; j++) {
        for (int32_t i = 0; i < R; i += 2 * VW) {
            const float *row = rows + (int64_t)j * R + i;
            const __m512bh pairs = _mm512_cvtne2ps_pbh((__m512)loadv(row + VW), (__m512)loadv(row));
            storeu(packed + (int64_t)j * (R / 2) + i / 2, (vu)pairs);
        }
    }
}

/// out[j][x] += Σ_i a[j][i]·b[i][x] for j < n rounded up to 6, over pairs of queries: `a` packed
/// by pack_query_pairs (R/2 lanes per row), `b_pairs[i][x]` holding rows 2i and 2i+1 of b.
FMHA_INLINE void accumulate_rows_bf16(float *restrict out, int64_t out_stride, const uint32_t *restrict a,
                                      const uint32_t *restrict b_pairs, int32_t n, int32_t width) {
    const int32_t half = R / 2;
    for (int32_t j = 0; j < n; j += 6) {
        const uint32_t *a0 = a + (int64_t)j * half, *a1 = a0 + half, *a2 = a1 + half, *a3 = a2 + half, *a4 = a3 + half;
        const uint32_t *a5 = a4 + half;
        float *o0 = out + j * out_stride, *o1 = o0 + out_stride, *o2 = o1 + out_stride, *o3 = o2 + out_stride;
        float *o4 = o3 + out_stride, *o5 = o4 + out_stride;
        int32_t x = 0;
        for (; x + 2 * VW <= width; x += 2 * VW) {
            vf c00 = loadv(o0 + x), c01 = loadv(o0 + x + VW), c10 = loadv(o1 + x), c11 = loadv(o1 + x + VW);
            vf c20 = loadv(o2 + x), c21 = loadv(o2 + x + VW), c30 = loadv(o3 + x), c31 = loadv(o3 + x + VW);
            vf c40 = loadv(o4 + x), c41 = loadv(o4 + x + VW), c50 = loadv(o5 + x), c51 = loadv(o5 + x + VW);
            for (int32_t i = 0; i < half; i++) {
                const vu b0 = loadu(b_pairs + (int64_t)i * width + x), b1 = loadu(b_pairs + (int64_t)i * width + x + VW);
                vu s = splat_u(a0[i]); c00 = dot_pairs(c00, b0, s); c01 = dot_pairs(c01, b1, s);
                s = splat_u(a1[i]); c10 = dot_pairs(c10, b0, s); c11 = dot_pairs(c11, b1, s);
                s = splat_u(a2[i]); c20 = dot_pairs(c20, b0, s); c21 = dot_pairs(c21, b1, s);
                s = splat_u(a3[i]); c30 = dot_pairs(c30, b0, s); c31 = dot_pairs(c31, b1, s);
                s = splat_u(a4[i]); c40 = dot_pairs(c40, b0, s); c41 = dot_pairs(c41, b1, s);
                s = splat_u(a5[i]); c50 = dot_pairs(c50, b0, s); c51 = dot_pairs(c51, b1, s);
            }
            storev(o0 + x, c00); storev(o0 + x + VW, c01); storev(o1 + x, c10); storev(o1 + x + VW, c11);
            storev(o2 + x, c20); storev(o2 + x + VW, c21); storev(o3 + x, c30); storev(o3 + x + VW, c31);
            storev(o4 + x, c40); storev(o4 + x + VW, c41); storev(o5 + x, c50); storev(o5 + x + VW, c51);
        }
        // The rest of the columns one at a time, in float32 from the same pairs.
        for (; x < width; x++) {
            float *outs[6] = {o0, o1, o2, o3, o4, o5};
            const uint32_t *as[6] = {a0, a1, a2, a3, a4, a5};
            for (int32_t r = 0; r < 6; r++) {
                float c = outs[r][x];
                for (int32_t i = 0; i < half; i++) {
                    const uint32_t pa = as[r][i], pb = b_pairs[(int64_t)i * width + x];
                    c += bf16_to_float((uint16_t)pa) * bf16_to_float((uint16_t)pb)
                         + bf16_to_float((uint16_t)(pa >> 16)) * bf16_to_float((uint16_t)(pb >> 16));
                }
                outs[r][x] = c;
            }
        }
    }
}

/// pairs[i][x] = (rows[2i][x], rows[2i+1][x]) for the `count` bfloat16 rows at `base` (row r at
/// base + r·stride; a missing odd row counts as zero): R/2 pairs of rows, `width` columns.
FMHA_INLINE void pack_row_pairs(uint32_t *restrict pairs, const uint16_t *base, int64_t stride, int32_t count,
                                int32_t width) {
    for (int32_t i = 0; i < R / 2; i++) {
        uint32_t *out = pairs + (int64_t)i * width;
        if (2 * i >= count) {
            memset(out, 0, sizeof(uint32_t) * (size_t)width);
            continue;
        }
        const uint16_t *low = base + 2 * i * stride;
        const uint16_t *high = 2 * i + 1 < count ? base + (2 * i + 1) * stride : 0;
        for (int32_t x = 0; x < width; x++) out[x] = bf16_pair(low[x], high ? high[x] : 0);
    }
}

#endif
