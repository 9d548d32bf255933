// The forward tile kernel, written once with vector extensions and included by one .c file per
// instruction set. The including file defines FMHA_TARGET (function attributes) and
// FMHA_NAME(name) (the exported name's suffix).
//
// Layout, for a tile of R = FMHA_TILE_QUERIES queries and up to C = FMHA_TILE_KEYS keys:
//   qt[c][i]  queries transposed (K × R), pre-multiplied by scale·log2(e)
//   st[j][i]  scores, then probabilities, of key j for query i (C × R), in log2 units
//   ot[v][i]  output accumulators transposed (Kv × R)
// Vectors run along the queries, so the softmax's row maxima and sums are plain vector ops and
// the two products broadcast one key (value) element against eight queries at a time.

#include <math.h>
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

/// st[j][i] = Σ_c key[j][c]·qt[c][i] for j < n (rows of `st` up to n rounded up to 4 are written;
/// key rows past n point at zeros).
FMHA_INLINE void scores(float *restrict st, const float *const *key, const float *restrict qt, int32_t n,
                        int32_t head_dim) {
    for (int32_t j = 0; j < n; j += 4) {
        const float *k0 = key[j], *k1 = key[j + 1], *k2 = key[j + 2], *k3 = key[j + 3];
        for (int32_t i = 0; i < R; i += 16) {
            v8f a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
            const float *q = qt + i;
            for (int32_t c = 0; c < head_dim; c++, q += R) {
                v8f q0 = load8(q), q1 = load8(q + 8);
                v8f b0 = splat(k0[c]), b1 = splat(k1[c]), b2 = splat(k2[c]), b3 = splat(k3[c]);
                a00 += b0 * q0; a01 += b0 * q1;
                a10 += b1 * q0; a11 += b1 * q1;
                a20 += b2 * q0; a21 += b2 * q1;
                a30 += b3 * q0; a31 += b3 * q1;
            }
            float *s = st + (int64_t)j * R + i;
            store8(s, a00); store8(s + 8, a01);
            store8(s + R, a10); store8(s + R + 8, a11);
            store8(s + 2 * R, a20); store8(s + 2 * R + 8, a21);
            store8(s + 3 * R, a30); store8(s + 3 * R + 8, a31);
        }
    }
}

/// ot[v][i] += Σ_{j<n} value[j][v]·pt[j][i] for every v < value_dim.
FMHA_INLINE void accumulate_values(float *restrict ot, const float *const *value, const float *restrict pt,
                                   int32_t n, int32_t value_dim) {
    int32_t v = 0;
    for (; v + 4 <= value_dim; v += 4) {
        for (int32_t i = 0; i < R; i += 16) {
            float *o = ot + (int64_t)v * R + i;
            v8f a00 = load8(o), a01 = load8(o + 8), a10 = load8(o + R), a11 = load8(o + R + 8);
            v8f a20 = load8(o + 2 * R), a21 = load8(o + 2 * R + 8), a30 = load8(o + 3 * R), a31 = load8(o + 3 * R + 8);
            const float *p = pt + i;
            for (int32_t j = 0; j < n; j++, p += R) {
                const float *w = value[j] + v;
                v8f p0 = load8(p), p1 = load8(p + 8);
                v8f b0 = splat(w[0]), b1 = splat(w[1]), b2 = splat(w[2]), b3 = splat(w[3]);
                a00 += b0 * p0; a01 += b0 * p1;
                a10 += b1 * p0; a11 += b1 * p1;
                a20 += b2 * p0; a21 += b2 * p1;
                a30 += b3 * p0; a31 += b3 * p1;
            }
            store8(o, a00); store8(o + 8, a01); store8(o + R, a10); store8(o + R + 8, a11);
            store8(o + 2 * R, a20); store8(o + 2 * R + 8, a21); store8(o + 3 * R, a30); store8(o + 3 * R + 8, a31);
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

FMHA_TARGET void FMHA_NAME(fmha_forward_tile)(const fmha_forward_tile *t) {
    const int32_t K = t->head_dim, KV = t->value_dim, rows = t->rows, dtype = t->dtype;
    float *qt = t->workspace;                   // K × R
    float *st = qt + (int64_t)K * R;            // (C + 4) × R
    float *ot = st + (int64_t)(C + 4) * R;      // KV × R
    float *kbuf = ot + (int64_t)KV * R;         // C × K
    float *vbuf = kbuf + (int64_t)C * K;        // C × KV
    float *zeros = vbuf + (int64_t)C * KV;      // K zeros, for key rows past the tile
    float *m = zeros + K;                       // R running maxima (log2 units)
    float *l = m + R;                           // R running sums
    const float *krow[C + 4], *vrow[C];
    int64_t physical[C];
    int32_t lo[R], hi[R];

    const float qscale = t->scale * (float)M_LOG2E;
    memset(qt, 0, sizeof(float) * (size_t)K * R);
    memset(zeros, 0, sizeof(float) * (size_t)K);
    memset(ot, 0, sizeof(float) * (size_t)KV * R);
    for (int32_t r = 0; r < rows; r++) {
        for (int32_t c = 0; c < K; c++) qt[(int64_t)c * R + r] = load_scalar(t->q, r * t->q_row_stride + c, dtype) * qscale;
    }
    for (int32_t r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }

    for (int64_t k0 = t->key_begin; k0 < t->key_end; k0 += C) {
        const int32_t n = (int32_t)(t->key_end - k0 < C ? t->key_end - k0 : C);
        // Visible keys of each row, relative to the tile; padding rows see nothing.
        int full = 1, any = 0;
        for (int32_t r = 0; r < R; r++) {
            int64_t a = 0, b = 0;
            if (r < rows) {
                a = t->row_lo[r] - k0;
                b = t->row_hi[r] - k0;
                a = a < 0 ? 0 : (a > n ? n : a);
                b = b < 0 ? 0 : (b > n ? n : b);
                if (a > 0 || b < n) full = 0;
                if (a < b) any = 1;
            }
            lo[r] = (int32_t)a;
            hi[r] = (int32_t)(b < a ? a : b);
        }
        if (!any) continue;
        for (int32_t j = 0; j < n; j++) {
            const int64_t p = k0 + j;
            const int64_t row = t->pages ? t->pages[p / t->page_size] * t->page_size + p % t->page_size
                                         : t->key_row_offset + p;
            physical[j] = row;
            if (dtype == FMHA_DTYPE_F32) {
                krow[j] = (const float *)t->k + row * t->k_row_stride;
                vrow[j] = (const float *)t->v + row * t->v_row_stride;
            } else {
                load_row(kbuf + (int64_t)j * K, t->k, row * t->k_row_stride, K, dtype);
                load_row(vbuf + (int64_t)j * KV, t->v, row * t->v_row_stride, KV, dtype);
                krow[j] = kbuf + (int64_t)j * K;
                vrow[j] = vbuf + (int64_t)j * KV;
            }
        }
        for (int32_t j = n; j < C + 4; j++) krow[j] = zeros;

        scores(st, krow, qt, n, K);

        if (t->bias) {
            for (int32_t j = 0; j < n; j++) {
                for (int32_t r = 0; r < rows; r++) {
                    st[(int64_t)j * R + r] += load_scalar(t->bias, r * t->bias_row_stride + physical[j] * t->bias_col_stride,
                                                          dtype) * (float)M_LOG2E;
                }
            }
        }
        if (!full) {
            for (int32_t iv = 0; iv < RV; iv++) {
                v8i lov = load8i(lo + iv * 8), hiv = load8i(hi + iv * 8);
                for (int32_t j = 0; j < n; j++) {
                    v8i jv = splat_i(j);
                    v8i hidden = (jv < lov) | (jv >= hiv);
                    float *s = st + (int64_t)j * R + iv * 8;
                    store8(s, select(hidden, splat(-INFINITY), load8(s)));
                }
            }
        }
        // Online softmax, eight queries at a time.
        for (int32_t iv = 0; iv < RV; iv++) {
            v8f tile_max = splat(-INFINITY);
            for (int32_t j = 0; j < n; j++) tile_max = vmax(tile_max, load8(st + (int64_t)j * R + iv * 8));
            v8f old_max = load8(m + iv * 8), new_max = vmax(old_max, tile_max);
            // A row that has seen only -inf keeps exponent base 0, so exp2(-inf - 0) = 0, never NaN.
            v8f base = select(new_max == splat(-INFINITY), splat(0), new_max);
            v8f alpha = exp2_v8(old_max - base), sum = {0};
            for (int32_t j = 0; j < n; j++) {
                float *s = st + (int64_t)j * R + iv * 8;
                v8f p = exp2_v8(load8(s) - base);
                sum += p;
                store8(s, p);
            }
            store8(l + iv * 8, load8(l + iv * 8) * alpha + sum);
            store8(m + iv * 8, new_max);
            for (int32_t v = 0; v < KV; v++) {
                float *o = ot + (int64_t)v * R + iv * 8;
                store8(o, load8(o) * alpha);
            }
        }
        if (t->dropout) {
            const uint32_t key[2] = {(uint32_t)t->dropout_seed, (uint32_t)(t->dropout_seed >> 32)};
            for (int32_t j = 0; j < n; j++) {
                for (int32_t r = 0; r < rows; r++) {
                    const uint32_t counter[4] = {(uint32_t)(physical[j] >> 2), (uint32_t)(t->dropout_query0 + r),
                                                 t->dropout_head, t->dropout_offset};
                    uint32_t words[4];
                    philox(counter, key, words);
                    st[(int64_t)j * R + r] *= words[physical[j] & 3] >= t->dropout_threshold ? t->dropout_keep_scale : 0.0f;
                }
            }
        }
        accumulate_values(ot, vrow, st, n, KV);
    }

    for (int32_t r = 0; r < rows; r++) {
        const float inverse = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        t->lse[r] = l[r] > 0 ? (m[r] + log2f(l[r])) * (float)M_LN2 : -INFINITY;
        for (int32_t v = 0; v < KV; v++) {
            store_scalar(t->out, r * t->out_row_stride + v, t->out_dtype, ot[(int64_t)v * R + r] * inverse);
        }
    }
}
