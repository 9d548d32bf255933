// The forward tile kernel, written once with vector extensions and included by one .c file per
// instruction set. The including file defines FMHA_TARGET (function attributes) and
// FMHA_NAME(name) (the exported name's suffix).
//
// Layout, for a tile of R = FMHA_TILE_QUERIES queries and up to C = FMHA_TILE_KEYS keys:
//   qt[c][i]  queries transposed (K × R), pre-multiplied by scale·log2(e)
//   st[j][i]  scores, then probabilities, of key j for query i (C × R), in log2 units
//   ot[v][i]  output accumulators transposed (Kv × R)
// Vectors (VW lanes) run along the queries, so the softmax's row maxima and sums are plain vector ops and
// the two products broadcast one key (value) element against VW queries at a time.

#include <math.h>
#include "tile_math.h"
#ifdef FMHA_BF16_PRODUCTS
#include "bf16_products.h"
#endif
#include "forward_rows_body.h"

FMHA_TARGET void FMHA_NAME(fmha_forward_tile)(const fmha_forward_tile *t) {
    if (t->rows <= FMHA_FEW_ROWS) {
        forward_rows(t);
        return;
    }
    const int32_t K = t->head_dim, KV = t->value_dim, rows = t->rows, dtype = t->dtype;
    float *qt = t->workspace;                   // K × R
    float *st = qt + (int64_t)K * R;            // (CP) × R
    float *ot = st + (int64_t)(CP) * R;      // KV × R
    float *kbuf = ot + (int64_t)KV * R;         // C × K
    float *vbuf = kbuf + (int64_t)C * K;        // C × KV
    float *zeros = vbuf + (int64_t)C * KV;      // max(K, Kv) zeros, for rows past the tile
    float *m = zeros + (K > KV ? K : KV);       // R running maxima (log2 units)
    float *l = m + R;                           // R running sums
    const float *krow[CP], *vrow[C];
    int64_t physical[C];
    int32_t lo[R], hi[R];
#ifdef FMHA_BF16_PRODUCTS
    // bfloat16 inputs with bf16 dot products: query pairs in qt, value pairs in vbuf, probability
    // pairs after l; key rows are read in place.
    uint32_t *qt2 = (uint32_t *)qt, *vp = (uint32_t *)vbuf, *pp = (uint32_t *)(l + R);
    const uint16_t *krow16[CP];
    const int32_t pairs = K / 2;
#endif

    const float qscale = t->scale * (float)M_LOG2E;
    memset(qt, 0, sizeof(float) * (size_t)K * R);
    memset(zeros, 0, sizeof(float) * (size_t)(K > KV ? K : KV));
    memset(ot, 0, sizeof(float) * (size_t)KV * R);
#ifdef FMHA_BF16_PRODUCTS
    for (int32_t r = 0; r < rows; r++) {
        const uint16_t *q = (const uint16_t *)t->q + r * t->q_row_stride;
        for (int32_t c = 0; c < pairs; c++) qt2[(int64_t)c * R + r] = bf16_pair(q[2 * c], q[2 * c + 1]);
    }
#else
    for (int32_t r = 0; r < rows; r++) {
        for (int32_t c = 0; c < K; c++) qt[(int64_t)c * R + r] = load_scalar(t->q, r * t->q_row_stride + c, dtype) * qscale;
    }
#endif
    for (int32_t r = 0; r < R; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }

    for (int64_t k0 = t->key_begin; k0 < t->key_end; k0 += C) {
        const int32_t n = (int32_t)(t->key_end - k0 < C ? t->key_end - k0 : C);
        int any;
        const int full = tile_ranges(t->row_lo, t->row_hi, rows, k0, n, lo, hi, &any);
        if (!any) continue;
#ifdef FMHA_BF16_PRODUCTS
        for (int32_t j = 0; j < n; j++) {
            physical[j] = physical_row(k0 + j, t->key_row_offset, t->pages, t->page_size);
            krow16[j] = (const uint16_t *)t->k + physical[j] * t->k_row_stride;
        }
        for (int32_t j = n; j < CP; j++) krow16[j] = (const uint16_t *)zeros;
        for (int32_t j = 0; j < n; j += 2) {
            const uint16_t *low = (const uint16_t *)t->v + physical[j] * t->v_row_stride;
            const uint16_t *high = j + 1 < n ? (const uint16_t *)t->v + physical[j + 1] * t->v_row_stride : (const uint16_t *)zeros;
            uint32_t *pair = vp + (int64_t)(j / 2) * KV;
            for (int32_t v = 0; v < KV; v++) pair[v] = bf16_pair(low[v], high[v]);
        }
        scores_bf16(st, krow16, qt2, n, pairs, qscale);
#else
        gather_key_rows(forward_key_rows(t), k0, 0, n, K, KV, kbuf, vbuf, krow, vrow, physical);
        for (int32_t j = n; j < CP; j++) krow[j] = zeros;

        scores(st, krow, qt, n, K);
#endif

        if (t->bias) {
            for (int32_t j = 0; j < n; j++) {
                for (int32_t r = 0; r < rows; r++) {
                    st[(int64_t)j * R + r] += load_scalar(t->bias, r * t->bias_row_stride + physical[j] * t->bias_col_stride,
                                                          dtype) * (float)M_LOG2E;
                }
            }
        }
        if (!full) mask_scores(st, lo, hi, n);
        // A key that −inf bias entries (and the mask) hide from every row of the tile contributes
        // nothing; its value row becomes zeros, so that NaN there cannot reach the output as 0·NaN.
        if (t->bias) {
            for (int32_t j = 0; j < n; j++) {
                int hidden = 1;
                for (int32_t r = 0; r < rows && hidden; r++) hidden = st[(int64_t)j * R + r] == -INFINITY;
                if (!hidden) continue;
#ifdef FMHA_BF16_PRODUCTS
                uint32_t *pair = vp + (int64_t)(j / 2) * KV;
                const uint32_t kept_half = j % 2 ? 0x0000FFFFu : 0xFFFF0000u;
                for (int32_t v = 0; v < KV; v++) pair[v] &= kept_half;
#else
                vrow[j] = zeros;
#endif
            }
        }
        // Online softmax, VW queries at a time.
        for (int32_t iv = 0; iv < R / VW; iv++) {
            vf tile_max = splat(-INFINITY);
            for (int32_t j = 0; j < n; j++) tile_max = vmax(tile_max, loadv(st + (int64_t)j * R + iv * VW));
            vf old_max = loadv(m + iv * VW), new_max = vmax(old_max, tile_max);
            // A row that has seen only -inf keeps exponent base 0, so exp2(-inf - 0) = 0, never NaN.
            vf base = vselect(new_max == splat(-INFINITY), splat(0), new_max);
            vf alpha = exp2_v(old_max - base), sum = {0};
            for (int32_t j = 0; j < n; j++) {
                float *s = st + (int64_t)j * R + iv * VW;
                vf p = exp2_v(loadv(s) - base);
                sum += p;
                storev(s, p);
            }
            storev(l + iv * VW, loadv(l + iv * VW) * alpha + sum);
            storev(m + iv * VW, new_max);
            // Once the running maxima settle, most tiles leave them unchanged: skip the rescale.
            if (!all_true(new_max == old_max)) {
                for (int32_t v = 0; v < KV; v++) {
                    float *o = ot + (int64_t)v * R + iv * VW;
                    storev(o, loadv(o) * alpha);
                }
            }
        }
        if (t->dropout) {
            for (int32_t j = 0; j < n; j++) {
                for (int32_t r = 0; r < rows; r++) {
                    st[(int64_t)j * R + r] *= dropout_factor(t->dropout_seed, t->dropout_offset, t->dropout_head,
                                                             t->dropout_query0 + r, physical[j], t->dropout_threshold,
                                                             t->dropout_keep_scale);
                }
            }
        }
#ifdef FMHA_BF16_PRODUCTS
        pack_probabilities(pp, st, n);
        accumulate_values_bf16(ot, vp, pp, (n + 1) / 2, KV);
#else
        accumulate_values(ot, vrow, st, n, KV);
#endif
    }

    for (int32_t r = 0; r < rows; r++) {
        // l = 0: no visible key (output 0, LSE -inf); NaN (a non-finite score) propagates.
        const float inverse = l[r] != 0 ? 1.0f / l[r] : 0.0f;
        t->lse[r] = l[r] != 0 ? (m[r] + log2f(l[r])) * (float)M_LN2 : -INFINITY;
        for (int32_t v = 0; v < KV; v++) {
            store_scalar(t->out, r * t->out_row_stride + v, t->out_dtype, ot[(int64_t)v * R + r] * inverse);
        }
    }
}
