// Tile arithmetic shared by the forward and backward kernel bodies (one copy per instruction
// set): dtype conversion, and the three small matrix products the kernels are made of. Matrices
// of a tile keep the R queries of a tile along the fast dimension (vectors of VW queries).
#ifndef CFMHA_TILE_MATH_H
#define CFMHA_TILE_MATH_H

#include <string.h>
#include "CFMHAKernels.h"
#include "kernel_common.h"

enum { R = FMHA_TILE_QUERIES, C = FMHA_TILE_KEYS };

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
/// key rows past n point at zeros). Six keys × 2·VW queries per step: twelve accumulators.
FMHA_INLINE void scores(float *restrict st, const float *const *key, const float *restrict qt, int32_t n,
                        int32_t head_dim) {
    for (int32_t j = 0; j < n; j += 6) {
        const float *k0 = key[j], *k1 = key[j + 1], *k2 = key[j + 2], *k3 = key[j + 3], *k4 = key[j + 4], *k5 = key[j + 5];
        for (int32_t i = 0; i < R; i += 2 * VW) {
            vf a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0};
            vf a30 = {0}, a31 = {0}, a40 = {0}, a41 = {0}, a50 = {0}, a51 = {0};
            const float *q = qt + i;
            for (int32_t c = 0; c < head_dim; c++, q += R) {
                const vf q0 = loadv(q), q1 = loadv(q + VW);
                vf b = splat(k0[c]); a00 += b * q0; a01 += b * q1;
                b = splat(k1[c]); a10 += b * q0; a11 += b * q1;
                b = splat(k2[c]); a20 += b * q0; a21 += b * q1;
                b = splat(k3[c]); a30 += b * q0; a31 += b * q1;
                b = splat(k4[c]); a40 += b * q0; a41 += b * q1;
                b = splat(k5[c]); a50 += b * q0; a51 += b * q1;
            }
            float *s = st + (int64_t)j * R + i;
            storev(s, a00); storev(s + VW, a01);
            storev(s + R, a10); storev(s + R + VW, a11);
            storev(s + 2 * R, a20); storev(s + 2 * R + VW, a21);
            storev(s + 3 * R, a30); storev(s + 3 * R + VW, a31);
            storev(s + 4 * R, a40); storev(s + 4 * R + VW, a41);
            storev(s + 5 * R, a50); storev(s + 5 * R + VW, a51);
        }
    }
}

/// ot[v][i] += Σ_{j<n} value[j][v]·pt[j][i] for every v < value_dim: six values × 2·VW
/// queries per step, then single values for the rest.
FMHA_INLINE void accumulate_values(float *restrict ot, const float *const *value, const float *restrict pt,
                                   int32_t n, int32_t value_dim) {
    int32_t v = 0;
    for (; v + 6 <= value_dim; v += 6) {
        for (int32_t i = 0; i < R; i += 2 * VW) {
            float *o = ot + (int64_t)v * R + i;
            vf a00 = loadv(o), a01 = loadv(o + VW), a10 = loadv(o + R), a11 = loadv(o + R + VW);
            vf a20 = loadv(o + 2 * R), a21 = loadv(o + 2 * R + VW), a30 = loadv(o + 3 * R), a31 = loadv(o + 3 * R + VW);
            vf a40 = loadv(o + 4 * R), a41 = loadv(o + 4 * R + VW), a50 = loadv(o + 5 * R), a51 = loadv(o + 5 * R + VW);
            const float *p = pt + i;
            for (int32_t j = 0; j < n; j++, p += R) {
                const float *w = value[j] + v;
                const vf p0 = loadv(p), p1 = loadv(p + VW);
                vf b = splat(w[0]); a00 += b * p0; a01 += b * p1;
                b = splat(w[1]); a10 += b * p0; a11 += b * p1;
                b = splat(w[2]); a20 += b * p0; a21 += b * p1;
                b = splat(w[3]); a30 += b * p0; a31 += b * p1;
                b = splat(w[4]); a40 += b * p0; a41 += b * p1;
                b = splat(w[5]); a50 += b * p0; a51 += b * p1;
            }
            storev(o, a00); storev(o + VW, a01); storev(o + R, a10); storev(o + R + VW, a11);
            storev(o + 2 * R, a20); storev(o + 2 * R + VW, a21); storev(o + 3 * R, a30); storev(o + 3 * R + VW, a31);
            storev(o + 4 * R, a40); storev(o + 4 * R + VW, a41); storev(o + 5 * R, a50); storev(o + 5 * R + VW, a51);
        }
    }
    // The rest, two values at a time (four accumulators), then one.
    for (; v + 2 <= value_dim; v += 2) {
        for (int32_t i = 0; i < R; i += 2 * VW) {
            float *o = ot + (int64_t)v * R + i;
            vf a00 = loadv(o), a01 = loadv(o + VW), a10 = loadv(o + R), a11 = loadv(o + R + VW);
            const float *p = pt + i;
            for (int32_t j = 0; j < n; j++, p += R) {
                const vf p0 = loadv(p), p1 = loadv(p + VW);
                vf b = splat(value[j][v]); a00 += b * p0; a01 += b * p1;
                b = splat(value[j][v + 1]); a10 += b * p0; a11 += b * p1;
            }
            storev(o, a00); storev(o + VW, a01); storev(o + R, a10); storev(o + R + VW, a11);
        }
    }
    for (; v < value_dim; v++) {
        for (int32_t i = 0; i < R; i += 2 * VW) {
            float *o = ot + (int64_t)v * R + i;
            vf a0 = loadv(o), a1 = loadv(o + VW);
            const float *p = pt + i;
            for (int32_t j = 0; j < n; j++, p += R) {
                vf b = splat(value[j][v]);
                a0 += b * loadv(p);
                a1 += b * loadv(p + VW);
            }
            storev(o, a0);
            storev(o + VW, a1);
        }
    }
}

/// out[j][x] += Σ_{i<R} a[j][i]·b_rows[i][x] for j < n rounded up to 6 and x < width: rows of `a`
/// hold the R queries (as st does), `b_rows[i]` is query i's row (rows past the tile are zero).
/// Six rows × 2·VW columns per step (twelve accumulators), then one vector, then single columns.
FMHA_INLINE void accumulate_rows(float *restrict out, int64_t out_stride, const float *restrict a, const float *const *b_rows,
                                 int32_t n, int32_t width) {
    for (int32_t j = 0; j < n; j += 6) {
        const float *a0 = a + (int64_t)j * R, *a1 = a0 + R, *a2 = a1 + R, *a3 = a2 + R, *a4 = a3 + R, *a5 = a4 + R;
        float *o0 = out + j * out_stride, *o1 = o0 + out_stride, *o2 = o1 + out_stride, *o3 = o2 + out_stride;
        float *o4 = o3 + out_stride, *o5 = o4 + out_stride;
        int32_t x = 0;
        for (; x + 2 * VW <= width; x += 2 * VW) {
            vf c00 = loadv(o0 + x), c01 = loadv(o0 + x + VW), c10 = loadv(o1 + x), c11 = loadv(o1 + x + VW);
            vf c20 = loadv(o2 + x), c21 = loadv(o2 + x + VW), c30 = loadv(o3 + x), c31 = loadv(o3 + x + VW);
            vf c40 = loadv(o4 + x), c41 = loadv(o4 + x + VW), c50 = loadv(o5 + x), c51 = loadv(o5 + x + VW);
            for (int32_t i = 0; i < R; i++) {
                const vf b0 = loadv(b_rows[i] + x), b1 = loadv(b_rows[i] + x + VW);
                vf s = splat(a0[i]); c00 += s * b0; c01 += s * b1;
                s = splat(a1[i]); c10 += s * b0; c11 += s * b1;
                s = splat(a2[i]); c20 += s * b0; c21 += s * b1;
                s = splat(a3[i]); c30 += s * b0; c31 += s * b1;
                s = splat(a4[i]); c40 += s * b0; c41 += s * b1;
                s = splat(a5[i]); c50 += s * b0; c51 += s * b1;
            }
            storev(o0 + x, c00); storev(o0 + x + VW, c01); storev(o1 + x, c10); storev(o1 + x + VW, c11);
            storev(o2 + x, c20); storev(o2 + x + VW, c21); storev(o3 + x, c30); storev(o3 + x + VW, c31);
            storev(o4 + x, c40); storev(o4 + x + VW, c41); storev(o5 + x, c50); storev(o5 + x + VW, c51);
        }
        for (; x + VW <= width; x += VW) {
            vf c0 = loadv(o0 + x), c1 = loadv(o1 + x), c2 = loadv(o2 + x), c3 = loadv(o3 + x), c4 = loadv(o4 + x), c5 = loadv(o5 + x);
            for (int32_t i = 0; i < R; i++) {
                const vf b = loadv(b_rows[i] + x);
                c0 += splat(a0[i]) * b; c1 += splat(a1[i]) * b; c2 += splat(a2[i]) * b;
                c3 += splat(a3[i]) * b; c4 += splat(a4[i]) * b; c5 += splat(a5[i]) * b;
            }
            storev(o0 + x, c0); storev(o1 + x, c1); storev(o2 + x, c2); storev(o3 + x, c3); storev(o4 + x, c4); storev(o5 + x, c5);
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
    for (int32_t iv = 0; iv < R / VW; iv++) {
        vi lov = loadvi(lo + iv * VW), hiv = loadvi(hi + iv * VW);
        for (int32_t j = 0; j < n; j++) {
            vi jv = splat_i(j);
            vi hidden = (jv < lov) | (jv >= hiv);
            float *s = st + (int64_t)j * R + iv * VW;
            storev(s, vselect(hidden, splat(-INFINITY), loadv(s)));
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

/// Where a kernel's K/V rows are (the fields of the same names in fmha_forward_tile and
/// fmha_backward_common).
typedef struct {
    const void *k, *v;
    int64_t k_row_stride, v_row_stride, key_row_offset;
    const int64_t *pages;
    int64_t page_size;
    int32_t dtype;
} key_rows_source;

/// Keys first ..< last of the key block that starts at logical key k0: their K/V rows (`physical`)
/// and float32 views of those rows (`krow`, `vrow`), in place for float32 inputs, else converted
/// into kbuf/vbuf (K and KV floats per key).
FMHA_INLINE void gather_key_rows(key_rows_source s, int64_t k0, int32_t first, int32_t last, int32_t K, int32_t KV,
                                 float *kbuf, float *vbuf, const float **krow, const float **vrow, int64_t *physical) {
    for (int32_t j = first; j < last; j++) {
        const int64_t row = physical_row(k0 + j, s.key_row_offset, s.pages, s.page_size);
        physical[j] = row;
        if (s.dtype == FMHA_DTYPE_F32) {
            krow[j] = (const float *)s.k + row * s.k_row_stride;
            vrow[j] = (const float *)s.v + row * s.v_row_stride;
        } else {
            load_row(kbuf + (int64_t)j * K, s.k, row * s.k_row_stride, K, s.dtype);
            load_row(vbuf + (int64_t)j * KV, s.v, row * s.v_row_stride, KV, s.dtype);
            krow[j] = kbuf + (int64_t)j * K;
            vrow[j] = vbuf + (int64_t)j * KV;
        }
    }
}

/// The K/V rows of a forward tile.
FMHA_INLINE key_rows_source forward_key_rows(const fmha_forward_tile *t) {
    return (key_rows_source){t->k, t->v, t->k_row_stride, t->v_row_stride, t->key_row_offset, t->pages, t->page_size,
                             t->dtype};
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
