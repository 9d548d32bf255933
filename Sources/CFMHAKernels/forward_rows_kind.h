// One kind of few-row forward (see forward_rows_body.h), included once per kind. The including
// file defines ROWS(name) (the kind's suffix), ROW_LANE (a query lane), ROW_ELEMENT (a K/V row
// element), ROW_PER_LANE (elements per query lane: 1, or 2 for bfloat16 pairs), ROW_IN_PLACE (1: K/V
// rows are read where they are, as ROW_ELEMENT; 0: float32 rows, converted by gather_key_rows unless
// the input is float32) and the kind's ROWS(dot_step), ROWS(dot_lane), ROWS(widen_values) and
// ROWS(widen_value).

/// s[j] = scale · q · key[j] for lo <= j < hi, over `lanes` query lanes (ROW_PER_LANE key
/// elements each): four keys at a time, one horizontal sum per key.
FMHA_INLINE void ROWS(row_scores)(float *restrict s, const ROW_LANE *restrict q, const ROW_ELEMENT *const *key, int32_t lo,
                            int32_t hi, int32_t lanes, float scale) {
    int32_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const ROW_ELEMENT *k0 = key[j], *k1 = key[j + 1], *k2 = key[j + 2], *k3 = key[j + 3];
        vf a0 = splat(0), a1 = splat(0), a2 = splat(0), a3 = splat(0);
        int32_t c = 0;
        for (; c + VW <= lanes; c += VW) {
            const int64_t e = (int64_t)c * ROW_PER_LANE;
            a0 = ROWS(dot_step)(a0, q + c, k0 + e);
            a1 = ROWS(dot_step)(a1, q + c, k1 + e);
            a2 = ROWS(dot_step)(a2, q + c, k2 + e);
            a3 = ROWS(dot_step)(a3, q + c, k3 + e);
        }
        float s0 = sum_lanes(a0), s1 = sum_lanes(a1), s2 = sum_lanes(a2), s3 = sum_lanes(a3);
        for (; c < lanes; c++) {
            const int64_t e = (int64_t)c * ROW_PER_LANE;
            s0 += ROWS(dot_lane)(q[c], k0 + e);
            s1 += ROWS(dot_lane)(q[c], k1 + e);
            s2 += ROWS(dot_lane)(q[c], k2 + e);
            s3 += ROWS(dot_lane)(q[c], k3 + e);
        }
        s[j] = s0 * scale;
        s[j + 1] = s1 * scale;
        s[j + 2] = s2 * scale;
        s[j + 3] = s3 * scale;
    }
    for (; j < hi; j++) {
        vf a0 = splat(0);
        int32_t c = 0;
        for (; c + VW <= lanes; c += VW) a0 = ROWS(dot_step)(a0, q + c, key[j] + (int64_t)c * ROW_PER_LANE);
        float s0 = sum_lanes(a0);
        for (; c < lanes; c++) s0 += ROWS(dot_lane)(q[c], key[j] + (int64_t)c * ROW_PER_LANE);
        s[j] = s0 * scale;
    }
}

/// o[0..<KV] += Σ_{lo <= j < hi} p[j] · value[j]: four value rows per pass over o.
FMHA_INLINE void ROWS(row_accumulate)(float *restrict o, const float *restrict p, const ROW_ELEMENT *const *value, int32_t lo,
                                int32_t hi, int32_t KV) {
    int32_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const ROW_ELEMENT *v0 = value[j], *v1 = value[j + 1], *v2 = value[j + 2], *v3 = value[j + 3];
        const vf p0 = splat(p[j]), p1 = splat(p[j + 1]), p2 = splat(p[j + 2]), p3 = splat(p[j + 3]);
        int32_t c = 0;
        for (; c + VW <= KV; c += VW) {
            storev(o + c, loadv(o + c) + p0 * ROWS(widen_values)(v0 + c) + p1 * ROWS(widen_values)(v1 + c)
                              + p2 * ROWS(widen_values)(v2 + c) + p3 * ROWS(widen_values)(v3 + c));
        }
        for (; c < KV; c++) {
            o[c] += p[j] * ROWS(widen_value)(v0[c]) + p[j + 1] * ROWS(widen_value)(v1[c]) + p[j + 2] * ROWS(widen_value)(v2[c])
                    + p[j + 3] * ROWS(widen_value)(v3[c]);
        }
    }
    for (; j < hi; j++) {
        const vf p0 = splat(p[j]);
        int32_t c = 0;
        for (; c + VW <= KV; c += VW) storev(o + c, loadv(o + c) + p0 * ROWS(widen_values)(value[j] + c));
        for (; c < KV; c++) o[c] += p[j] * ROWS(widen_value)(value[j][c]);
    }
}

/// The tile `t` (at most FMHA_FEW_ROWS queries), with fmha_forward_tile's inputs and outputs.
static FMHA_TARGET void ROWS(forward_rows)(const fmha_forward_tile *t) {
    const int32_t K = t->head_dim, KV = t->value_dim, rows = t->rows, dtype = t->dtype;
    // Inside the tile kernel's workspace (which is larger): the query rows (lanes as above), one
    // row's scores (one vector of slack past the block), the output accumulators, and converted K/V
    // rows when this kind reads float32 rows of 16-bit inputs.
    ROW_LANE *q = (ROW_LANE *)t->workspace;                 // FMHA_FEW_ROWS × K lanes at most
    float *s = (float *)t->workspace + (int64_t)FMHA_FEW_ROWS * K;  // C + VW
    float *o = s + C + VW;                                      // FMHA_FEW_ROWS × KV
    const int32_t lanes = K / ROW_PER_LANE;  // (K is even with two elements per lane)
    const ROW_ELEMENT *krow[C], *vrow[C];
    int64_t physical[C];
    int32_t lo[R], hi[R];
    float m[FMHA_FEW_ROWS], l[FMHA_FEW_ROWS];

    const float qscale = t->scale * (float)M_LOG2E;
    for (int32_t r = 0; r < rows; r++) {
        ROW_LANE *row = q + (int64_t)r * lanes;
#if ROW_PER_LANE == 2
        const uint16_t *query = (const uint16_t *)t->q + r * t->q_row_stride;
        for (int32_t c = 0; c < lanes; c++) row[c] = bf16_pair(query[2 * c], query[2 * c + 1]);
#else
        for (int32_t c = 0; c < K; c++) row[c] = load_scalar(t->q, r * t->q_row_stride + c, dtype);
#endif
        memset(o + (int64_t)r * KV, 0, sizeof(float) * (size_t)KV);
        m[r] = -INFINITY;
        l[r] = 0;
    }

    for (int64_t k0 = t->key_begin; k0 < t->key_end; k0 += C) {
        const int32_t n = (int32_t)(t->key_end - k0 < C ? t->key_end - k0 : C);
        int any;
        tile_ranges(t->row_lo, t->row_hi, rows, k0, n, lo, hi, &any);
        if (!any) continue;
        // The keys some row sees: only those are read (and converted).
        int32_t first = n, last = 0;
        for (int32_t r = 0; r < rows; r++) {
            if (lo[r] < hi[r]) {
                first = lo[r] < first ? lo[r] : first;
                last = hi[r] > last ? hi[r] : last;
            }
        }
#if ROW_IN_PLACE
        for (int32_t j = first; j < last; j++) {
            physical[j] = physical_row(k0 + j, t->key_row_offset, t->pages, t->page_size);
            krow[j] = (const ROW_ELEMENT *)t->k + physical[j] * t->k_row_stride;
            vrow[j] = (const ROW_ELEMENT *)t->v + physical[j] * t->v_row_stride;
        }
#else
        float *kbuf = o + (int64_t)FMHA_FEW_ROWS * KV, *vbuf = kbuf + (int64_t)C * K;  // C × K, C × KV
        gather_key_rows(forward_key_rows(t), k0, first, last, K, KV, kbuf, vbuf, krow, vrow, physical);
#endif
        for (int32_t r = 0; r < rows; r++) {
            const int32_t a = lo[r], b = hi[r];
            if (a >= b) continue;
            float *orow = o + (int64_t)r * KV;
            ROWS(row_scores)(s, q + (int64_t)r * lanes, krow, a, b, lanes, qscale);
            if (t->bias) {
                for (int32_t j = a; j < b; j++) {
                    s[j] += load_scalar(t->bias, r * t->bias_row_stride + physical[j] * t->bias_col_stride, dtype)
                            * (float)M_LOG2E;
                }
            }
            // Online softmax over the block's visible keys (as the tile kernel: a row that has seen
            // only -inf keeps exponent base 0, so its weights are exactly 0, never NaN).
            float block_max = -INFINITY;
            for (int32_t j = a; j < b; j++) block_max = s[j] > block_max ? s[j] : block_max;
            const float new_max = m[r] > block_max ? m[r] : block_max;
            const float base = new_max == -INFINITY ? 0.0f : new_max;
            for (int32_t j = b; j < b + VW; j++) s[j] = -INFINITY;
            vf sum = splat(0);
            for (int32_t j = a; j < b; j += VW) {
                const vf p = exp2_v(loadv(s + j) - splat(base));
                sum += p;
                storev(s + j, p);
            }
            const float alpha = exp2_v(splat(m[r] - base))[0];
            l[r] = l[r] * alpha + sum_lanes(sum);
            if (new_max != m[r]) {
                for (int32_t c = 0; c < KV; c++) orow[c] *= alpha;
            }
            m[r] = new_max;
            if (t->dropout) {
                for (int32_t j = a; j < b; j++) {
                    s[j] *= dropout_factor(t->dropout_seed, t->dropout_offset, t->dropout_head, t->dropout_query0 + r,
                                           physical[j], t->dropout_threshold, t->dropout_keep_scale);
                }
            }
            if (t->bias) {
                // Keys of weight 0 (−inf bias entries hide them) left out: 0·NaN in their value
                // rows would be NaN.
                float weights[C];
                const ROW_ELEMENT *values[C];
                int32_t count = 0;
                for (int32_t j = a; j < b; j++) {
                    if (s[j] == 0) continue;
                    weights[count] = s[j];
                    values[count++] = vrow[j];
                }
                ROWS(row_accumulate)(orow, weights, values, 0, count, KV);
            } else {
                ROWS(row_accumulate)(orow, s, vrow, a, b, KV);
            }
        }
    }

    for (int32_t r = 0; r < rows; r++) {
        // l = 0: no visible key (output 0, LSE -inf); NaN (a non-finite score) propagates.
        const float inverse = l[r] != 0 ? 1.0f / l[r] : 0.0f;
        t->lse[r] = l[r] != 0 ? (m[r] + log2f(l[r])) * (float)M_LN2 : -INFINITY;
        for (int32_t v = 0; v < KV; v++) {
            store_scalar(t->out, r * t->out_row_stride + v, t->out_dtype, o[(int64_t)r * KV + v] * inverse);
        }
    }
}
