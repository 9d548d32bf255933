// Tile arithmetic shared by the forward and backward kernel bodies (one copy per instruction
// set): dtype conversion, and the three small matrix products the kernels are made of. Matrices
// of a tile keep the R queries of a tile along the fast dimension (vectors of eight queries).
#ifndef CFMHA_TILE_MATH_H
#define CFMHA_TILE_MATH_H

#include <string.h>
#include "CFMHAKernels.h"
#include "kernel_common.h"

enum { R = FMHA_TILE_QUERIES, C = FMHA_TILE_KEYS, RV = FMHA_TILE_QUERIES / 8 };

/// Reads element `index` of a q/k/v/bias array of `dtype` as float.
FMHA_INLINE float load_scalar(const void *base, int64_t index, int32_t dtype) {
    switch (dtype) {
    case FMHA_DTYPE_F16: return (float)((const _Float16 *)base)[index];
    case FMHA_DTYPE_BF16: return bf16_to_float(((const uint16_t *)base)[index]);
    default: return ((const float *)base)[index];
    }
}

/// dst[0..<n] = the n elements at base + offset, converted to float.
FMHA_INLINE void load_row(float *dst, const void *base, int64_t offset, int32_t n, int32_t dtype) {
    switch (dtype) {
    case FMHA_DTYPE_F16: {
        const _Float16 *src = (const _Float16 *)base + offset;
        for (int32_t c = 0; c < n; c++) dst[c] = (float)src[c];
        break;
    }
    case FMHA_DTYPE_BF16: {
        const uint16_t *src = (const uint16_t *)base + offset;
        for (int32_t c = 0; c < n; c++) dst[c] = bf16_to_float(src[c]);
        break;
    }
    default: memcpy(dst, (const float *)base + offset, (size_t)n * sizeof(float));
    }
}

/// Writes `value` as element `index` of an output array of `dtype`, rounded to nearest even.
FMHA_INLINE void store_scalar(void *base, int64_t index, int32_t dtype, float value) {
    switch (dtype) {
    case FMHA_DTYPE_F16: ((_Float16 *)base)[index] = (_Float16)value; break;
    case FMHA_DTYPE_BF16: ((uint16_t *)base)[index] = float_to_bf16(value); break;
    default: ((float *)base)[index] = value;
    }
}

/// Rows of key-indexed tile buffers: FMHA_TILE_KEYS plus room for the last microkernel block.
enum { CP = C + 8 };

/// st[j][i] = Σ_c key[j][c]·qt[c][i] for j < n (rows of `st` up to n rounded up to 6 are written;
/// key rows past n point at zeros). Six keys × sixteen queries per step: twelve accumulators.
FMHA_INLINE void scores(float *restrict st, const float *const *key, const float *restrict qt, int32_t n,
                        int32_t head_dim) {
    for (int32_t j = 0; j < n; j += 6) {
        const float *k0 = key[j], *k1 = key[j + 1], *k2 = key[j + 2], *k3 = key[j + 3], *k4 = key[j + 4], *k5 = key[j + 5];
        for (int32_t i = 0; i < R; i += 16) {
            v8f a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0};
            v8f a30 = {0}, a31 = {0}, a40 = {0}, a41 = {0}, a50 = {0}, a51 = {0};
            const float *q = qt + i;
            for (int32_t c = 0; c < head_dim; c++, q += R) {
                const v8f q0 = load8(q), q1 = load8(q + 8);
                v8f b = splat(k0[c]); a00 += b * q0; a01 += b * q1;
                b = splat(k1[c]); a10 += b * q0; a11 += b * q1;
                b = splat(k2[c]); a20 += b * q0; a21 += b * q1;
                b = splat(k3[c]); a30 += b * q0; a31 += b * q1;
                b = splat(k4[c]); a40 += b * q0; a41 += b * q1;
                b = splat(k5[c]); a50 += b * q0; a51 += b * q1;
            }
            float *s = st + (int64_t)j * R + i;
            store8(s, a00); store8(s + 8, a01);
            store8(s + R, a10); store8(s + R + 8, a11);
            store8(s + 2 * R, a20); store8(s + 2 * R + 8, a21);
            store8(s + 3 * R, a30); store8(s + 3 * R + 8, a31);
            store8(s + 4 * R, a40); store8(s + 4 * R + 8, a41);
            store8(s + 5 * R, a50); store8(s + 5 * R + 8, a51);
        }
    }
}

/// ot[v][i] += Σ_{j<n} value[j][v]·pt[j][i] for every v < value_dim: six values × sixteen
/// queries per step, then single values for the rest.
FMHA_INLINE void accumulate_values(float *restrict ot, const float *const *value, const float *restrict pt,
                                   int32_t n, int32_t value_dim) {
    int32_t v = 0;
    for (; v + 6 <= value_dim; v += 6) {
        for (int32_t i = 0; i < R; i += 16) {
            float *o = ot + (int64_t)v * R + i;
            v8f a00 = load8(o), a01 = load8(o + 8), a10 = load8(o + R), a11 = load8(o + R + 8);
            v8f a20 = load8(o + 2 * R), a21 = load8(o + 2 * R + 8), a30 = load8(o + 3 * R), a31 = load8(o + 3 * R + 8);
            v8f a40 = load8(o + 4 * R), a41 = load8(o + 4 * R + 8), a50 = load8(o + 5 * R), a51 = load8(o + 5 * R + 8);
            const float *p = pt + i;
            for (int32_t j = 0; j < n; j++, p += R) {
                const float *w = value[j] + v;
                const v8f p0 = load8(p), p1 = load8(p + 8);
                v8f b = splat(w[0]); a00 += b * p0; a01 += b * p1;
                b = splat(w[1]); a10 += b * p0; a11 += b * p1;
                b = splat(w[2]); a20 += b * p0; a21 += b * p1;
                b = splat(w[3]); a30 += b * p0; a31 += b * p1;
                b = splat(w[4]); a40 += b * p0; a41 += b * p1;
                b = splat(w[5]); a50 += b * p0; a51 += b * p1;
            }
            store8(o, a00); store8(o + 8, a01); store8(o + R, a10); store8(o + R + 8, a11);
            store8(o + 2 * R, a20); store8(o + 2 * R + 8, a21); store8(o + 3 * R, a30); store8(o + 3 * R + 8, a31);
            store8(o + 4 * R, a40); store8(o + 4 * R + 8, a41); store8(o + 5 * R, a50); store8(o + 5 * R + 8, a51);
        }
    }
    // The rest, two values at a time (four accumulators), then one.
    for (; v + 2 <= value_dim; v += 2) {
        for (int32_t i = 0; i < R; i += 16) {
            float *o = ot + (int64_t)v * R + i;
            v8f a00 = load8(o), a01 = load8(o + 8), a10 = load8(o + R), a11 = load8(o + R + 8);
            const float *p = pt + i;
            for (int32_t j = 0; j < n; j++, p += R) {
                const v8f p0 = load8(p), p1 = load8(p + 8);
                v8f b = splat(value[j][v]); a00 += b * p0; a01 += b * p1;
                b = splat(value[j][v + 1]); a10 += b * p0; a11 += b * p1;
            }
            store8(o, a00); store8(o + 8, a01); store8(o + R, a10); store8(o + R + 8, a11);
        }
    }
    for (; v < value_dim; v++) {
        for (int32_t i = 0; i < R; i += 16) {
            float *o = ot + (int64_t)v * R + i;
            v8f a0 = load8(o), a1 = load8(o + 8);
            const float *p = pt + i;
            for (int32_t j = 0; j < n; j++, p += R) {
                v8f b = splat(value[j][v]);
                a0 += b * load8(p);
                a1 += b * load8(p + 8);
            }
            store8(o, a0);
            store8(o + 8, a1);
        }
    }
}

/// out[j][x] += Σ_{i<R} a[j][i]·b_rows[i][x] for j < n rounded up to 6 and x < width: rows of `a`
/// hold the R queries (as st does), `b_rows[i]` is query i's row (rows past the tile are zero).
/// Six rows × sixteen columns per step (twelve accumulators), then single columns.
FMHA_INLINE void accumulate_rows(float *restrict out, int64_t out_stride, const float *restrict a, const float *const *b_rows,
                                 int32_t n, int32_t width) {
    for (int32_t j = 0; j < n; j += 6) {
        const float *a0 = a + (int64_t)j * R, *a1 = a0 + R, *a2 = a1 + R, *a3 = a2 + R, *a4 = a3 + R, *a5 = a4 + R;
        float *o0 = out + j * out_stride, *o1 = o0 + out_stride, *o2 = o1 + out_stride, *o3 = o2 + out_stride;
        float *o4 = o3 + out_stride, *o5 = o4 + out_stride;
        int32_t x = 0;
        for (; x + 16 <= width; x += 16) {
            v8f c00 = load8(o0 + x), c01 = load8(o0 + x + 8), c10 = load8(o1 + x), c11 = load8(o1 + x + 8);
            v8f c20 = load8(o2 + x), c21 = load8(o2 + x + 8), c30 = load8(o3 + x), c31 = load8(o3 + x + 8);
            v8f c40 = load8(o4 + x), c41 = load8(o4 + x + 8), c50 = load8(o5 + x), c51 = load8(o5 + x + 8);
            for (int32_t i = 0; i < R; i++) {
                const v8f b0 = load8(b_rows[i] + x), b1 = load8(b_rows[i] + x + 8);
                v8f s = splat(a0[i]); c00 += s * b0; c01 += s * b1;
                s = splat(a1[i]); c10 += s * b0; c11 += s * b1;
                s = splat(a2[i]); c20 += s * b0; c21 += s * b1;
                s = splat(a3[i]); c30 += s * b0; c31 += s * b1;
                s = splat(a4[i]); c40 += s * b0; c41 += s * b1;
                s = splat(a5[i]); c50 += s * b0; c51 += s * b1;
            }
            store8(o0 + x, c00); store8(o0 + x + 8, c01); store8(o1 + x, c10); store8(o1 + x + 8, c11);
            store8(o2 + x, c20); store8(o2 + x + 8, c21); store8(o3 + x, c30); store8(o3 + x + 8, c31);
            store8(o4 + x, c40); store8(o4 + x + 8, c41); store8(o5 + x, c50); store8(o5 + x + 8, c51);
        }
        for (; x < width; x++) {
            float c0 = o0[x], c1 = o1[x], c2 = o2[x], c3 = o3[x], c4 = o4[x], c5 = o5[x];
            for (int32_t i = 0; i < R; i++) {
                const float b = b_rows[i][x];
                c0 += a0[i] * b; c1 += a1[i] * b; c2 += a2[i] * b; c3 += a3[i] * b; c4 += a4[i] * b; c5 += a5[i] * b;
            }
            o0[x] = c0; o1[x] = c1; o2[x] = c2; o3[x] = c3; o4[x] = c4; o5[x] = c5;
        }
    }
}

/// Sets the scores of hidden keys to -inf: key j is visible to query i iff lo[i] <= j < hi[i]
/// (tile-relative).
FMHA_INLINE void mask_scores(float *st, const int32_t *lo, const int32_t *hi, int32_t n) {
    for (int32_t iv = 0; iv < R / 8; iv++) {
        v8i lov = load8i(lo + iv * 8), hiv = load8i(hi + iv * 8);
        for (int32_t j = 0; j < n; j++) {
            v8i jv = splat_i(j);
            v8i hidden = (jv < lov) | (jv >= hiv);
            float *s = st + (int64_t)j * R + iv * 8;
            store8(s, select(hidden, splat(-INFINITY), load8(s)));
        }
    }
}

/// Tile-relative visible ranges of each row for keys [k0, k0 + n); padding rows see nothing.
/// Returns 1 when every real row sees the whole tile; *any is set when some row sees a key.
FMHA_INLINE int tile_ranges(const int64_t *row_lo, const int64_t *row_hi, int32_t rows, int64_t k0, int32_t n,
                            int32_t *lo, int32_t *hi, int *any) {
    int full = 1;
    *any = 0;
    for (int32_t r = 0; r < R; r++) {
        int64_t a = 0, b = 0;
        if (r < rows) {
            a = row_lo[r] - k0;
            b = row_hi[r] - k0;
            a = a < 0 ? 0 : (a > n ? n : a);
            b = b < 0 ? 0 : (b > n ? n : b);
            if (a > 0 || b < n) full = 0;
            if (a < b) *any = 1;
        }
        lo[r] = (int32_t)a;
        hi[r] = (int32_t)(b < a ? a : b);
    }
    return full;
}

/// The K/V row of logical key p.
FMHA_INLINE int64_t physical_row(int64_t p, int64_t offset, const int64_t *pages, int64_t page_size) {
    return pages ? pages[p / page_size] * page_size + p % page_size : offset + p;
}

/// Keep factor of the dropout mask for query `query` (packed index) and K/V row `row`.
FMHA_INLINE float dropout_factor(uint64_t seed, uint32_t offset, uint32_t head, int64_t query, int64_t row,
                                 uint32_t threshold, float keep_scale) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t counter[4] = {(uint32_t)(row >> 2), (uint32_t)query, head, offset};
    uint32_t words[4];
    philox(counter, key, words);
    return words[row & 3] >= threshold ? keep_scale : 0.0f;
}

#endif
