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

#endif
