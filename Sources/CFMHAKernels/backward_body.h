// The backward kernels, written once with vector extensions and included by one .c file per
// instruction set (FMHA_TARGET and FMHA_NAME as for forward_tile_body.h).
//
// Both recompute the tile's probabilities from the forward LSE (P = 2^(S·log2 e − LSE·log2 e)),
// then dP = dO·Vᵀ (times the dropout factor) and dS = P∘(dP − D) with D = rowsum(dO∘O).
// fmha_backward_dq walks the keys of one query tile and forms dQ = scale·dS·K (and writes dS as
// the bias gradient); fmha_backward_dkdv walks the query tiles that see a group of up to
// FMHA_BACKWARD_KEY_GROUP key tiles, loading each query tile once for the group, and forms
// dV = (P∘dropout)ᵀ·dO and dK = scale·dSᵀ·Q. Every output element is written by one work item in
// a fixed order, so results do not depend on threads.

#include <math.h>
#include "tile_math.h"
#ifdef FMHA_BF16_PRODUCTS
#include "bf16_products.h"
#endif

/// Workspace of one backward work item.
typedef struct backward_buffers {
    float *qt;      // K × R, scaled by scale·log2(e)
    float *qrows;   // R × K, unscaled (for dK)
    float *dot;     // Kv × R (dP = V·dOᵀ)
    float *dorows;  // R × Kv (for dV)
    float *st;      // (CP) × R: scores, then P
    float *dpt;     // (CP) × R: dP, then dS
    float *kbuf;    // G × C × K converted keys (G = FMHA_BACKWARD_KEY_GROUP key tiles)
    float *vbuf;    // G × C × Kv converted values
    float *zeros;   // max(K, Kv) zeros
    float *acc_a;   // K × R (dQᵀ) or G × (CP) × K (dK)
    float *acc_b;   // G × (CP) × Kv (dV)
    float *base;    // R: LSE·log2(e), +inf for rows without keys
    float *delta;   // R
    uint32_t *packed_rows;  // CP × R/2: P or dS rounded to bfloat16 pairs of queries (BF16 products)
    uint32_t *key_pairs;    // (C/2) × R: dS rounded to bfloat16 pairs of keys (BF16 products)
} backward_buffers;

FMHA_INLINE backward_buffers backward_layout(float *w, int32_t K, int32_t KV) {
    backward_buffers b;
    const int32_t wide = K > KV ? K : KV;
    b.qt = w; w += (int64_t)K * R;
    b.qrows = w; w += (int64_t)R * K;
    b.dot = w; w += (int64_t)KV * R;
    b.dorows = w; w += (int64_t)R * KV;
    b.st = w; w += (int64_t)(CP) * R;
    b.dpt = w; w += (int64_t)(CP) * R;
    b.kbuf = w; w += (int64_t)FMHA_BACKWARD_KEY_GROUP * C * K;
    b.vbuf = w; w += (int64_t)FMHA_BACKWARD_KEY_GROUP * C * KV;
    b.zeros = w; w += wide;
    b.acc_a = w; w += (int64_t)FMHA_BACKWARD_KEY_GROUP * (CP) * K;
    b.acc_b = w; w += (int64_t)FMHA_BACKWARD_KEY_GROUP * (CP) * KV;
    b.base = w; w += R;
    b.delta = w; w += R;
    b.packed_rows = (uint32_t *)w; w += (int64_t)CP * (R / 2);
    b.key_pairs = (uint32_t *)w;
    return b;
}

/// Loads a query tile: q and dO transposed, LSE in log2 units and D; and `qrows`/`dorows` (R
/// each) pointed at the rows for dK = dSᵀ·Q and dV = Pᵀ·dO: the inputs' own rows for float32,
/// converted copies in the row buffers otherwise, zeros past the tile (with BF16 products the
/// pointers are not used: fmha_backward_dkdv packs bfloat16 pairs of rows into the row buffers).
FMHA_INLINE void load_query_tile(const fmha_backward_common *c, const fmha_backward_query_tile *tile, backward_buffers *b,
                                 const float **qrows, const float **dorows) {
    const int32_t K = c->head_dim, KV = c->value_dim;
    const float qscale = c->scale * (float)M_LOG2E;
    memset(b->qt, 0, sizeof(float) * (size_t)K * R);
    memset(b->dot, 0, sizeof(float) * (size_t)KV * R);
    for (int32_t r = 0; r < R; r++) {
        b->base[r] = INFINITY;
        b->delta[r] = 0;
        qrows[r] = b->zeros;
        dorows[r] = b->zeros;
    }
    for (int32_t r = 0; r < tile->rows; r++) {
#ifdef FMHA_BF16_PRODUCTS
        // bfloat16 pairs along K/Kv for the two score-like products (dot products).
        const uint16_t *q = (const uint16_t *)tile->q + r * tile->q_row_stride;
        const uint16_t *grad = (const uint16_t *)tile->grad_out + r * tile->grad_out_row_stride;
        for (int32_t x = 0; x < K / 2; x++) ((uint32_t *)b->qt)[(int64_t)x * R + r] = bf16_pair(q[2 * x], q[2 * x + 1]);
        for (int32_t x = 0; x < KV / 2; x++) {
            ((uint32_t *)b->dot)[(int64_t)x * R + r] = bf16_pair(grad[2 * x], grad[2 * x + 1]);
        }
        (void)qscale;
#else
        const float *qrow, *dorow;
        if (c->dtype == FMHA_DTYPE_F32) {
            qrow = (const float *)tile->q + r * tile->q_row_stride;
            dorow = (const float *)tile->grad_out + r * tile->grad_out_row_stride;
        } else {
            float *qcopy = b->qrows + (int64_t)r * K, *docopy = b->dorows + (int64_t)r * KV;
            load_row(qcopy, tile->q, r * tile->q_row_stride, K, c->dtype);
            load_row(docopy, tile->grad_out, r * tile->grad_out_row_stride, KV, c->dtype);
            qrow = qcopy;
            dorow = docopy;
        }
        qrows[r] = qrow;
        dorows[r] = dorow;
        for (int32_t x = 0; x < K; x++) b->qt[(int64_t)x * R + r] = qrow[x] * qscale;
        for (int32_t x = 0; x < KV; x++) b->dot[(int64_t)x * R + r] = dorow[x];
#endif
        b->base[r] = tile->lse[r] == -INFINITY ? INFINITY : tile->lse[r] * (float)M_LOG2E;
        b->delta[r] = tile->delta[r];
    }
}

/// Points key/value rows [k0, k0 + n) at the inputs (float32) or at converted copies in slot
/// `slot` (< FMHA_BACKWARD_KEY_GROUP) of the key buffers.
FMHA_INLINE void load_key_tile(const fmha_backward_common *c, int64_t k0, int32_t n, backward_buffers *b, int32_t slot,
                               const float **krow, const float **vrow, int64_t *physical) {
    const int32_t K = c->head_dim, KV = c->value_dim;
    float *kbuf = b->kbuf + (int64_t)slot * C * K, *vbuf = b->vbuf + (int64_t)slot * C * KV;
#ifdef FMHA_BF16_PRODUCTS
    // Every product reads bfloat16 rows or pairs: no float copies.
    for (int32_t j = 0; j < n; j++) physical[j] = physical_row(k0 + j, c->key_row_offset, c->pages, c->page_size);
    for (int32_t j = 0; j < CP; j++) krow[j] = vrow[j] = b->zeros;
    (void)KV;
#else
    const key_rows_source source = {c->k, c->v, c->k_row_stride, c->v_row_stride, c->key_row_offset, c->pages,
                                     c->page_size, c->dtype};
    gather_key_rows(source, k0, 0, n, K, KV, kbuf, vbuf, krow, vrow, physical);
    for (int32_t j = n; j < CP; j++) {
        krow[j] = b->zeros;
        vrow[j] = b->zeros;
    }
#endif
#ifdef FMHA_BF16_PRODUCTS
    // Pairs of key rows (for dQ = dS·K), in the key buffer's slot.
    for (int32_t j = 0; j < n; j += 2) {
        const uint16_t *low = (const uint16_t *)c->k + physical[j] * c->k_row_stride;
        const uint16_t *high = j + 1 < n ? (const uint16_t *)c->k + physical[j + 1] * c->k_row_stride : (const uint16_t *)b->zeros;
        uint32_t *pair = (uint32_t *)kbuf + (int64_t)(j / 2) * K;
        for (int32_t x = 0; x < K; x++) pair[x] = bf16_pair(low[x], high[x]);
    }
#endif
}

/// For keys [k0, k0 + n) of a loaded query tile: st = P (before dropout) and dpt = dS, with
/// dropout applied to st when `dropped` (for dV) — dS always uses the undropped P.
FMHA_INLINE void probabilities_and_gradients(const fmha_backward_common *c, const fmha_backward_query_tile *tile,
                                             backward_buffers *b, const float *const *krow, const float *const *vrow,
                                             const int64_t *physical, int64_t k0, int32_t n, int dropped) {
    int32_t lo[R], hi[R];
    int any;
    const int full = tile_ranges(tile->row_lo, tile->row_hi, tile->rows, k0, n, lo, hi, &any);
#ifdef FMHA_BF16_PRODUCTS
    const uint16_t *krow16[CP], *vrow16[CP];
    for (int32_t j = 0; j < CP; j++) {
        krow16[j] = j < n ? (const uint16_t *)c->k + physical[j] * c->k_row_stride : (const uint16_t *)b->zeros;
        vrow16[j] = j < n ? (const uint16_t *)c->v + physical[j] * c->v_row_stride : (const uint16_t *)b->zeros;
    }
    scores_bf16(b->st, krow16, (const uint32_t *)b->qt, n, c->head_dim / 2, c->scale * (float)M_LOG2E);
#else
    scores(b->st, krow, b->qt, n, c->head_dim);
#endif
    if (tile->bias) {
        for (int32_t j = 0; j < n; j++) {
            for (int32_t r = 0; r < tile->rows; r++) {
                b->st[(int64_t)j * R + r] += load_scalar(tile->bias, r * tile->bias_row_stride + physical[j] * tile->bias_col_stride,
                                                         c->dtype) * (float)M_LOG2E;
            }
        }
    }
    if (!full) mask_scores(b->st, lo, hi, n);
#ifdef FMHA_BF16_PRODUCTS
    scores_bf16(b->dpt, vrow16, (const uint32_t *)b->dot, n, c->value_dim / 2, 1.0f);
    (void)vrow;
#else
    scores(b->dpt, vrow, b->dot, n, c->value_dim);
#endif
    for (int32_t iv = 0; iv < R / VW; iv++) {
        const vf base = loadv(b->base + iv * VW), delta = loadv(b->delta + iv * VW);
        for (int32_t j = 0; j < n; j++) {
            float *s = b->st + (int64_t)j * R + iv * VW, *d = b->dpt + (int64_t)j * R + iv * VW;
            const vf p = exp2_v(loadv(s) - base);
            storev(s, p);
            if (!c->dropout) storev(d, p * (loadv(d) - delta));
        }
    }
    if (!c->dropout) return;
    for (int32_t j = 0; j < n; j++) {
        for (int32_t r = 0; r < tile->rows; r++) {
            const int64_t index = (int64_t)j * R + r;
            const float factor = dropout_factor(c->dropout_seed, c->dropout_offset, tile->dropout_head,
                                                tile->dropout_query0 + r, physical[j], c->dropout_threshold,
                                                c->dropout_keep_scale);
            const float p = b->st[index];
            b->dpt[index] = p * (b->dpt[index] * factor - b->delta[r]);
            if (dropped) b->st[index] = p * factor;
        }
    }
}

/// Writes dS of keys [0, n) of the tile as the bias gradient (each element is written once). A
/// masked entry is P·(…) with P = 0, whose sign would depend on which key tiles a scheme visits:
/// adding +0 makes every zero +0, so the bits do not depend on the thread count.
FMHA_INLINE void store_bias_gradient(const fmha_backward_query_tile *tile, const backward_buffers *b,
                                     const int64_t *physical, int32_t n) {
    for (int32_t j = 0; j < n; j++) {
        for (int32_t r = 0; r < tile->rows; r++) {
            tile->grad_bias[r * tile->grad_bias_row_stride + physical[j]] = b->dpt[(int64_t)j * R + r] + 0.0f;
        }
    }
}

FMHA_TARGET void FMHA_NAME(fmha_backward_dq)(const fmha_backward_common *c, const fmha_backward_query_tile *tile,
                                             int64_t key_begin, int64_t key_end) {
    const int32_t K = c->head_dim;
    backward_buffers b = backward_layout(c->workspace, K, c->value_dim);
    const float *krow[CP], *vrow[CP];
    int64_t physical[C];
    memset(b.zeros, 0, sizeof(float) * (size_t)(K > c->value_dim ? K : c->value_dim));
    const float *qrows[R], *dorows[R];
    load_query_tile(c, tile, &b, qrows, dorows);
    float *dqt = b.acc_a;  // K × R
    memset(dqt, 0, sizeof(float) * (size_t)K * R);
    for (int64_t k0 = key_begin; k0 < key_end; k0 += C) {
        const int32_t n = (int32_t)(key_end - k0 < C ? key_end - k0 : C);
        int32_t lo[R], hi[R];
        int any;
        tile_ranges(tile->row_lo, tile->row_hi, tile->rows, k0, n, lo, hi, &any);
        if (!any) continue;
        load_key_tile(c, k0, n, &b, 0, krow, vrow, physical);
        probabilities_and_gradients(c, tile, &b, krow, vrow, physical, k0, n, 0);
        if (tile->grad_bias) store_bias_gradient(tile, &b, physical, n);
#ifdef FMHA_BF16_PRODUCTS
        pack_probabilities(b.key_pairs, b.dpt, n);
        accumulate_values_bf16(dqt, (const uint32_t *)b.kbuf, b.key_pairs, (n + 1) / 2, K);
#else
        accumulate_values(dqt, krow, b.dpt, n, K);
#endif
    }
    for (int32_t r = 0; r < tile->rows; r++) {
        float *out = tile->grad_q + r * tile->grad_q_row_stride;
        for (int32_t x = 0; x < K; x++) out[x] = dqt[(int64_t)x * R + r] * c->scale;
    }
}

FMHA_TARGET void FMHA_NAME(fmha_backward_dkdv)(const fmha_backward_common *c, const fmha_backward_query_tile *tiles,
                                               int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                                               int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride) {
    enum { G = FMHA_BACKWARD_KEY_GROUP };
    const int32_t K = c->head_dim, KV = c->value_dim;
    const int32_t total = (int32_t)(key_end - key_begin), slots = (total + C - 1) / C;
    backward_buffers b = backward_layout(c->workspace, K, KV);
    const float *krow[G][CP], *vrow[G][CP], *qrows[R], *dorows[R];
    int64_t physical[G][C];
    int32_t count[G];
    memset(b.zeros, 0, sizeof(float) * (size_t)(K > KV ? K : KV));
    float *dk = b.acc_a, *dv = b.acc_b;  // G × (CP) × K and G × (CP) × Kv
    memset(dk, 0, sizeof(float) * (size_t)G * (CP) * K);
    memset(dv, 0, sizeof(float) * (size_t)G * (CP) * KV);
    for (int32_t s = 0; s < slots; s++) {
        count[s] = total - s * C < C ? total - s * C : C;
        load_key_tile(c, key_begin + (int64_t)s * C, count[s], &b, s, krow[s], vrow[s], physical[s]);
    }
    for (int32_t t = 0; t < tile_count; t++) {
        const fmha_backward_query_tile *tile = tiles + t;
        int loaded = 0;
        for (int32_t s = 0; s < slots; s++) {
            const int64_t k0 = key_begin + (int64_t)s * C;
            const int32_t n = count[s];
            int32_t lo[R], hi[R];
            int any;
            tile_ranges(tile->row_lo, tile->row_hi, tile->rows, k0, n, lo, hi, &any);
            if (!any) continue;
            if (!loaded) {
                load_query_tile(c, tile, &b, qrows, dorows);
#ifdef FMHA_BF16_PRODUCTS
                // Pairs of query rows (for dK = dSᵀ·Q and dV = Pᵀ·dO), in the row buffers.
                pack_row_pairs((uint32_t *)b.qrows, (const uint16_t *)tile->q, tile->q_row_stride, tile->rows, K);
                pack_row_pairs((uint32_t *)b.dorows, (const uint16_t *)tile->grad_out, tile->grad_out_row_stride, tile->rows, KV);
#endif
                loaded = 1;
            }
            probabilities_and_gradients(c, tile, &b, krow[s], vrow[s], physical[s], k0, n, 1);
            float *dk_slot = dk + (int64_t)s * (CP) * K, *dv_slot = dv + (int64_t)s * (CP) * KV;
#ifdef FMHA_BF16_PRODUCTS
            pack_query_pairs(b.packed_rows, b.st, n);
            accumulate_rows_bf16(dv_slot, KV, b.packed_rows, (const uint32_t *)b.dorows, n, KV);
            pack_query_pairs(b.packed_rows, b.dpt, n);
            accumulate_rows_bf16(dk_slot, K, b.packed_rows, (const uint32_t *)b.qrows, n, K);
            (void)qrows;
            (void)dorows;
#else
            accumulate_rows(dv_slot, KV, b.st, dorows, n, KV);
            accumulate_rows(dk_slot, K, b.dpt, qrows, n, K);
#endif
            if (tile->grad_q_transposed) {
#ifdef FMHA_BF16_PRODUCTS
                pack_probabilities(b.key_pairs, b.dpt, n);
                accumulate_values_bf16(tile->grad_q_transposed, (const uint32_t *)(b.kbuf + (int64_t)s * C * K), b.key_pairs,
                                       (n + 1) / 2, K);
#else
                accumulate_values(tile->grad_q_transposed, krow[s], b.dpt, n, K);
#endif
                if (tile->grad_bias) store_bias_gradient(tile, &b, physical[s], n);
            }
        }
    }
    for (int32_t s = 0; s < slots; s++) {
        const float *dk_slot = dk + (int64_t)s * (CP) * K, *dv_slot = dv + (int64_t)s * (CP) * KV;
        for (int32_t j = 0; j < count[s]; j++) {
            float *gk = grad_k + physical[s][j] * grad_k_row_stride, *gv = grad_v + physical[s][j] * grad_v_row_stride;
            for (int32_t x = 0; x < K; x++) gk[x] += dk_slot[(int64_t)j * K + x] * c->scale;
            for (int32_t x = 0; x < KV; x++) gv[x] += dv_slot[(int64_t)j * KV + x];
        }
    }
}
