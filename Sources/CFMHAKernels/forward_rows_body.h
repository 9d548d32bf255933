// The forward for tiles of a few queries (decoding: one query against a long cache), included by
// forward_tile_body.h. The tile kernel runs its vectors along the tile's FMHA_TILE_QUERIES queries,
// so a one-row tile leaves all but one lane idle; here the vectors run along the head dimension
// instead: each row's scores are dot products (four keys at a time, one horizontal sum per key),
// its online softmax covers the key block, and O += p·V adds four value rows per pass (bfloat16
// through BF16 dot products where the build has them, K and V read in place). Same inputs, outputs
// and semantics as the tile kernel (masks, pages, tensor bias, dropout, LSE).

/// Tiles of at most this many queries take this kernel: faster than the tile kernel at 1–8 rows as
/// timed (bench/README.md).
#define FMHA_FEW_ROWS 8

/// The sum of a vector's lanes.
FMHA_INLINE float sum_lanes(vf x) {
    typedef float vf4 __attribute__((vector_size(16)));
#if VW == 16
    typedef float vf8 __attribute__((vector_size(32)));
    const vf8 half = __builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7)
                     + __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15);
#else
    const vf half = x;
#endif
    const vf4 quarter = __builtin_shufflevector(half, half, 0, 1, 2, 3) + __builtin_shufflevector(half, half, 4, 5, 6, 7);
    return (quarter[0] + quarter[1]) + (quarter[2] + quarter[3]);
}

/// s[j] = q · key[j] for lo <= j < hi (K elements each).
FMHA_INLINE void row_scores(float *restrict s, const float *restrict q, const float *const *key, int32_t lo, int32_t hi,
                            int32_t K) {
    int32_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const float *k0 = key[j], *k1 = key[j + 1], *k2 = key[j + 2], *k3 = key[j + 3];
        vf a0 = splat(0), a1 = splat(0), a2 = splat(0), a3 = splat(0);
        int32_t c = 0;
        for (; c + VW <= K; c += VW) {
            const vf x = loadv(q + c);
            a0 += x * loadv(k0 + c);
            a1 += x * loadv(k1 + c);
            a2 += x * loadv(k2 + c);
            a3 += x * loadv(k3 + c);
        }
        float s0 = sum_lanes(a0), s1 = sum_lanes(a1), s2 = sum_lanes(a2), s3 = sum_lanes(a3);
        for (; c < K; c++) {
            s0 += q[c] * k0[c];
            s1 += q[c] * k1[c];
            s2 += q[c] * k2[c];
            s3 += q[c] * k3[c];
        }
        s[j] = s0;
        s[j + 1] = s1;
        s[j + 2] = s2;
        s[j + 3] = s3;
    }
    for (; j < hi; j++) {
        const float *k0 = key[j];
        vf a0 = splat(0);
        int32_t c = 0;
        for (; c + VW <= K; c += VW) a0 += loadv(q + c) * loadv(k0 + c);
        float s0 = sum_lanes(a0);
        for (; c < K; c++) s0 += q[c] * k0[c];
        s[j] = s0;
    }
}

/// o[0..<KV] += Σ_{lo <= j < hi} p[j] · value[j].
FMHA_INLINE void row_accumulate(float *restrict o, const float *restrict p, const float *const *value, int32_t lo,
                                int32_t hi, int32_t KV) {
    int32_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const float *v0 = value[j], *v1 = value[j + 1], *v2 = value[j + 2], *v3 = value[j + 3];
        const vf p0 = splat(p[j]), p1 = splat(p[j + 1]), p2 = splat(p[j + 2]), p3 = splat(p[j + 3]);
        int32_t c = 0;
        for (; c + VW <= KV; c += VW) {
            storev(o + c, loadv(o + c) + p0 * loadv(v0 + c) + p1 * loadv(v1 + c) + p2 * loadv(v2 + c) + p3 * loadv(v3 + c));
        }
        for (; c < KV; c++) o[c] += p[j] * v0[c] + p[j + 1] * v1[c] + p[j + 2] * v2[c] + p[j + 3] * v3[c];
    }
    for (; j < hi; j++) {
        const float *v0 = value[j];
        const vf p0 = splat(p[j]);
        int32_t c = 0;
        for (; c + VW <= KV; c += VW) storev(o + c, loadv(o + c) + p0 * loadv(v0 + c));
        for (; c < KV; c++) o[c] += p[j] * v0[c];
    }
}

#ifdef FMHA_BF16_PRODUCTS
/// The two bfloat16 values at `p` as one lane, and VW such lanes (any alignment).
FMHA_INLINE vu load_pairs(const uint16_t *p) {
    vu pairs;
    memcpy(&pairs, p, sizeof pairs);
    return pairs;
}

/// The dot product of two lanes of bfloat16 pairs, in float32.
FMHA_INLINE float pair_dot(uint32_t a, uint32_t b) {
    return bf16_to_float((uint16_t)a) * bf16_to_float((uint16_t)b)
           + bf16_to_float((uint16_t)(a >> 16)) * bf16_to_float((uint16_t)(b >> 16));
}

/// s[j] = scale · q · key[j] for lo <= j < hi, from query pairs and bfloat16 key rows read in place
/// (`pairs` pairs each), by BF16 dot products.
FMHA_INLINE void row_scores_bf16(float *restrict s, const uint32_t *restrict q, const uint16_t *const *key, int32_t lo,
                                 int32_t hi, int32_t pairs, float scale) {
    int32_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const uint16_t *k0 = key[j], *k1 = key[j + 1], *k2 = key[j + 2], *k3 = key[j + 3];
        vf a0 = splat(0), a1 = splat(0), a2 = splat(0), a3 = splat(0);
        int32_t c = 0;
        for (; c + VW <= pairs; c += VW) {
            const vu x = loadu(q + c);
            a0 = dot_pairs(a0, x, load_pairs(k0 + 2 * c));
            a1 = dot_pairs(a1, x, load_pairs(k1 + 2 * c));
            a2 = dot_pairs(a2, x, load_pairs(k2 + 2 * c));
            a3 = dot_pairs(a3, x, load_pairs(k3 + 2 * c));
        }
        float s0 = sum_lanes(a0), s1 = sum_lanes(a1), s2 = sum_lanes(a2), s3 = sum_lanes(a3);
        for (; c < pairs; c++) {
            s0 += pair_dot(q[c], load_pair(k0 + 2 * c));
            s1 += pair_dot(q[c], load_pair(k1 + 2 * c));
            s2 += pair_dot(q[c], load_pair(k2 + 2 * c));
            s3 += pair_dot(q[c], load_pair(k3 + 2 * c));
        }
        s[j] = s0 * scale;
        s[j + 1] = s1 * scale;
        s[j + 2] = s2 * scale;
        s[j + 3] = s3 * scale;
    }
    for (; j < hi; j++) {
        const uint16_t *k0 = key[j];
        vf a0 = splat(0);
        int32_t c = 0;
        for (; c + VW <= pairs; c += VW) a0 = dot_pairs(a0, loadu(q + c), load_pairs(k0 + 2 * c));
        float s0 = sum_lanes(a0);
        for (; c < pairs; c++) s0 += pair_dot(q[c], load_pair(k0 + 2 * c));
        s[j] = s0 * scale;
    }
}

/// VW bfloat16 values at `p` (any alignment) as float32 lanes.
FMHA_INLINE vf widen_bf16(const uint16_t *p) {
    typedef uint16_t vh __attribute__((vector_size(VW * 2)));
    vh halves;
    memcpy(&halves, p, sizeof halves);
    return (vf)(__builtin_convertvector(halves, vu) << 16);
}

/// o[0..<KV] += Σ_{lo <= j < hi} p[j] · value[j], from bfloat16 value rows read in place.
FMHA_INLINE void row_accumulate_bf16(float *restrict o, const float *restrict p, const uint16_t *const *value, int32_t lo,
                                     int32_t hi, int32_t KV) {
    int32_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        const uint16_t *v0 = value[j], *v1 = value[j + 1], *v2 = value[j + 2], *v3 = value[j + 3];
        const vf p0 = splat(p[j]), p1 = splat(p[j + 1]), p2 = splat(p[j + 2]), p3 = splat(p[j + 3]);
        int32_t c = 0;
        for (; c + VW <= KV; c += VW) {
            storev(o + c, loadv(o + c) + p0 * widen_bf16(v0 + c) + p1 * widen_bf16(v1 + c) + p2 * widen_bf16(v2 + c)
                              + p3 * widen_bf16(v3 + c));
        }
        for (; c < KV; c++) {
            o[c] += p[j] * bf16_to_float(v0[c]) + p[j + 1] * bf16_to_float(v1[c]) + p[j + 2] * bf16_to_float(v2[c])
                    + p[j + 3] * bf16_to_float(v3[c]);
        }
    }
    for (; j < hi; j++) {
        const uint16_t *v0 = value[j];
        const vf p0 = splat(p[j]);
        int32_t c = 0;
        for (; c + VW <= KV; c += VW) storev(o + c, loadv(o + c) + p0 * widen_bf16(v0 + c));
        for (; c < KV; c++) o[c] += p[j] * bf16_to_float(v0[c]);
    }
}
#endif

/// The tile `t` (at most FMHA_FEW_ROWS queries), with fmha_forward_tile's inputs and outputs.
static FMHA_TARGET void forward_rows(const fmha_forward_tile *t) {
    const int32_t K = t->head_dim, KV = t->value_dim, rows = t->rows, dtype = t->dtype;
    // Inside the tile kernel's workspace (which is larger): the query rows pre-multiplied by
    // scale·log2(e), one row's scores (one vector of slack past the block), the output
    // accumulators, and converted K/V rows when the inputs are not float32.
    float *q = t->workspace;                        // FMHA_FEW_ROWS × K
    float *s = q + (int64_t)FMHA_FEW_ROWS * K;      // C + VW
    float *o = s + C + VW;                          // FMHA_FEW_ROWS × KV
    int64_t physical[C];
    int32_t lo[R], hi[R];
    float m[FMHA_FEW_ROWS], l[FMHA_FEW_ROWS];
#ifdef FMHA_BF16_PRODUCTS
    // bfloat16 with BF16 dot products: query pairs in q's space (rounded, as the tile kernel's), K and
    // V rows read in place.
    uint32_t *qp = (uint32_t *)q;
    const uint16_t *krow16[C], *vrow16[C];
    const int32_t pairs = K / 2;
#else
    float *kbuf = o + (int64_t)FMHA_FEW_ROWS * KV;  // C × K
    float *vbuf = kbuf + (int64_t)C * K;            // C × KV
    const float *krow[C], *vrow[C];
#endif

    const float qscale = t->scale * (float)M_LOG2E;
    for (int32_t r = 0; r < rows; r++) {
#ifdef FMHA_BF16_PRODUCTS
        const uint16_t *query = (const uint16_t *)t->q + r * t->q_row_stride;
        for (int32_t c = 0; c < pairs; c++) qp[(int64_t)r * pairs + c] = bf16_pair(query[2 * c], query[2 * c + 1]);
#else
        for (int32_t c = 0; c < K; c++) q[(int64_t)r * K + c] = load_scalar(t->q, r * t->q_row_stride + c, dtype) * qscale;
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
#ifdef FMHA_BF16_PRODUCTS
        for (int32_t j = first; j < last; j++) {
            physical[j] = physical_row(k0 + j, t->key_row_offset, t->pages, t->page_size);
            krow16[j] = (const uint16_t *)t->k + physical[j] * t->k_row_stride;
            vrow16[j] = (const uint16_t *)t->v + physical[j] * t->v_row_stride;
        }
#else
        gather_key_rows(t, k0, first, last, K, KV, kbuf, vbuf, krow, vrow, physical);
#endif
        for (int32_t r = 0; r < rows; r++) {
            const int32_t a = lo[r], b = hi[r];
            if (a >= b) continue;
            float *orow = o + (int64_t)r * KV;
#ifdef FMHA_BF16_PRODUCTS
            row_scores_bf16(s, qp + (int64_t)r * pairs, krow16, a, b, pairs, qscale);
#else
            row_scores(s, q + (int64_t)r * K, krow, a, b, K);
#endif
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
#ifdef FMHA_BF16_PRODUCTS
            row_accumulate_bf16(orow, s, vrow16, a, b, KV);
#else
            row_accumulate(orow, s, vrow, a, b, KV);
#endif
        }
    }

    for (int32_t r = 0; r < rows; r++) {
        const float inverse = l[r] > 0 ? 1.0f / l[r] : 0.0f;
        t->lse[r] = l[r] > 0 ? (m[r] + log2f(l[r])) * (float)M_LN2 : -INFINITY;
        for (int32_t v = 0; v < KV; v++) {
            store_scalar(t->out, r * t->out_row_stride + v, t->out_dtype, o[(int64_t)r * KV + v] * inverse);
        }
    }
}
