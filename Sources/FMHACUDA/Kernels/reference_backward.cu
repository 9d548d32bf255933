// The CUDA reference backward: dQ (and the bias gradient) with one thread per query row of one
// head, then dK and dV with one thread per key of one K/V head, every query head that shares it
// and every query of its block looped over in a fixed order, so results are deterministic. Float32
// accumulation; probabilities recomputed from the forward LSE. Needs prelude.cu. Shapes and mask
// lowerings as in reference_forward.cu; `shape` continues with the K/V head grid (B', G', H': 1 where both
// K and V have stride 0) and the sharing counts (B, G, H over the grid or 1).

/// The score of query i on K/V row j in head (b, g, h), or -inf.
__device__ __forceinline__ float score(const void* q, const void* k, const void* bias, const int64_t* shape, float scale,
                                       int64_t b, int64_t g, int64_t h, int64_t i, int64_t j) {
    const int64_t head_dim = shape[5], dtype = shape[7];
    const int64_t* qs = shape + 9;
    const int64_t* ks = shape + 13;
    const int64_t* bs = shape + 21;
    const int64_t q_base = b * qs[0] + i * qs[1] + g * qs[2] + h * qs[3], k_base = b * ks[0] + j * ks[1] + g * ks[2] + h * ks[3];
    float dot = 0.0f;
    for (int64_t c = 0; c < head_dim; ++c) dot += fmha::load_element(q, q_base + c, dtype) * fmha::load_element(k, k_base + c, dtype);
    float s = scale * dot;
    if (shape[8]) s += fmha::load_element(bias, b * bs[0] + g * bs[1] + h * bs[2] + i * bs[3] + j * bs[4], dtype);
    return s;
}

/// dO_i · v_j in head (b, g, h); `grad_out` is contiguous [B, Mq, G, H, Kv] in the input dtype.
__device__ __forceinline__ float output_dot(const void* grad_out, const void* v, const int64_t* shape, int64_t b, int64_t g,
                                            int64_t h, int64_t i, int64_t j) {
    const int64_t queries = shape[1], groups = shape[3], heads = shape[4], value_dim = shape[6], dtype = shape[7];
    const int64_t* vs = shape + 17;
    const int64_t o_base = (((b * queries + i) * groups + g) * heads + h) * value_dim, v_base = b * vs[0] + j * vs[1] + g * vs[2] + h * vs[3];
    float dot = 0.0f;
    for (int64_t c = 0; c < value_dim; ++c) dot += fmha::load_element(grad_out, o_base + c, dtype) * fmha::load_element(v, v_base + c, dtype);
    return dot;
}

extern "C" __global__ void fmha_reference_backward_dq(const void* q, const void* k, const void* v, const void* bias,
                                                      const void* grad_out, const float* lse, float* delta, float* grad_q,
                                                      float* grad_bias, const int64_t* shape, const int64_t* mask, float scale,
                                                      uint64_t seed, uint32_t offset, uint32_t threshold, float keep_scale,
                                                      int32_t dropout) {
    const int64_t queries = shape[1], keys = shape[2], groups = shape[3], heads = shape[4], head_dim = shape[5];
    const int64_t dtype = shape[7];
    const int64_t* ks = shape + 13;
    const fmha::DropoutMask keep{seed, offset, threshold};
    const int64_t rows = shape[0] * groups * heads * queries;
    for (int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; row < rows; row += int64_t(gridDim.x) * blockDim.x) {
        const int64_t i = row % queries, h = (row / queries) % heads;
        const int64_t g = (row / (queries * heads)) % groups, b = row / (queries * heads * groups);
        const int64_t head_index = (b * groups + g) * heads + h;
        const float row_lse = lse[head_index * queries + i];
        const fmha::Lowering lowering{mask};
        const int64_t block = lowering.block_of(i);
        const fmha::KeyRange visible = lowering.row_keys(block, i);
        float d = 0.0f;
        if (row_lse != -FMHA_INFINITY) {
            for (int64_t p = visible.lo; p < visible.hi; ++p) {
                const int64_t j = lowering.physical_key(block, p);
                const float s = score(q, k, bias, shape, scale, b, g, h, i, j);
                if (s == -FMHA_INFINITY) continue;
                const float factor = dropout ? (keep.is_kept(uint32_t(head_index), uint32_t(i), uint32_t(j)) ? keep_scale : 0.0f) : 1.0f;
                d += expf(s - row_lse) * factor * output_dot(grad_out, v, shape, b, g, h, i, j);
            }
        }
        delta[head_index * queries + i] = d;
        float* dq = grad_q + (((b * queries + i) * groups + g) * heads + h) * head_dim;
        if (row_lse == -FMHA_INFINITY) continue;
        for (int64_t p = visible.lo; p < visible.hi; ++p) {
            const int64_t j = lowering.physical_key(block, p);
            const float s = score(q, k, bias, shape, scale, b, g, h, i, j);
            if (s == -FMHA_INFINITY) continue;
            const float factor = dropout ? (keep.is_kept(uint32_t(head_index), uint32_t(i), uint32_t(j)) ? keep_scale : 0.0f) : 1.0f;
            const float probability = expf(s - row_lse);
            const float ds = probability * (factor * output_dot(grad_out, v, shape, b, g, h, i, j) - d);
            const int64_t k_base = b * ks[0] + j * ks[1] + g * ks[2] + h * ks[3];
            for (int64_t c = 0; c < head_dim; ++c) dq[c] += scale * ds * fmha::load_element(k, k_base + c, dtype);
            if (grad_bias) grad_bias[(head_index * queries + i) * keys + j] = ds;
        }
    }
}

/// dK, dV of the keys of `block` of the lowering, one thread per (K/V grid head, logical key of the
/// block). Launched once per block, in order, so that blocks naming the same K/V rows never run at once.
extern "C" __global__ void fmha_reference_backward_dkdv(const void* q, const void* k, const void* v, const void* bias,
                                                        const void* grad_out, const float* lse, const float* delta,
                                                        float* grad_k, float* grad_v, const int64_t* shape,
                                                        const int64_t* mask, int64_t block, float scale, uint64_t seed,
                                                        uint32_t offset, uint32_t threshold, float keep_scale, int32_t dropout) {
    const int64_t queries = shape[1], keys = shape[2], groups = shape[3], heads = shape[4];
    const int64_t head_dim = shape[5], value_dim = shape[6], dtype = shape[7];
    const int64_t grid_b = shape[26], grid_g = shape[27], grid_h = shape[28];
    const int64_t share_b = shape[29], share_g = shape[30], share_h = shape[31];
    const int64_t* qs = shape + 9;
    const fmha::Lowering lowering{mask};
    const int64_t first_query = lowering.first_query(block), last_query = first_query + lowering.query_count(block);
    const int64_t key_start = lowering.key_start(block), key_count = lowering.key_count(block);
    const fmha::DropoutMask keep{seed, offset, threshold};
    const int64_t items = grid_b * grid_g * grid_h * key_count;
    for (int64_t item = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; item < items; item += int64_t(gridDim.x) * blockDim.x) {
        const int64_t p = key_count > 0 ? item % key_count : 0, grid_head = item / key_count;
        const int64_t gh = grid_head % grid_h, gg = (grid_head / grid_h) % grid_g, gb = grid_head / (grid_h * grid_g);
        const int64_t j = lowering.physical_key(block, key_start + p);
        float* dk = grad_k + (((gb * keys + j) * grid_g + gg) * grid_h + gh) * head_dim;
        float* dv = grad_v + (((gb * keys + j) * grid_g + gg) * grid_h + gh) * value_dim;
        for (int64_t sb = 0; sb < share_b; ++sb) for (int64_t sg = 0; sg < share_g; ++sg) for (int64_t sh = 0; sh < share_h; ++sh) {
            const int64_t b = gb + sb, g = gg + sg, h = gh + sh;
            const int64_t head_index = (b * groups + g) * heads + h;
            for (int64_t i = first_query; i < last_query; ++i) {
                const fmha::KeyRange visible = lowering.row_keys(block, i);
                if (key_start + p < visible.lo || key_start + p >= visible.hi) continue;
                const float row_lse = lse[head_index * queries + i];
                if (row_lse == -FMHA_INFINITY) continue;
                const float s = score(q, k, bias, shape, scale, b, g, h, i, j);
                if (s == -FMHA_INFINITY) continue;
                const float factor = dropout ? (keep.is_kept(uint32_t(head_index), uint32_t(i), uint32_t(j)) ? keep_scale : 0.0f) : 1.0f;
                const float probability = expf(s - row_lse);
                const float ds = probability * (factor * output_dot(grad_out, v, shape, b, g, h, i, j) - delta[head_index * queries + i]);
                const int64_t q_base = b * qs[0] + i * qs[1] + g * qs[2] + h * qs[3];
                const int64_t o_base = (((b * queries + i) * groups + g) * heads + h) * value_dim;
                for (int64_t c = 0; c < head_dim; ++c) dk[c] += scale * ds * fmha::load_element(q, q_base + c, dtype);
                for (int64_t c = 0; c < value_dim; ++c) dv[c] += probability * factor * fmha::load_element(grad_out, o_base + c, dtype);
            }
        }
    }
}
