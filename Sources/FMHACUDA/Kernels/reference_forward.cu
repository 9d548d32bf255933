// The CUDA reference forward: one thread per query row of one head, float32 accumulation, every
// bias through the mask lowering (prelude.cu, DeviceLowering.swift), every layout through strides, float32,
// float16 and bfloat16 inputs. Straightforward, not tuned: the oracle for large GPU tests.
// Needs prelude.cu.

/// `shape`: B, Mq, Mkv, G, H, K, Kv, dtype, has_bias, then the strides (in elements) of q, k and
/// v over (b, m, g, h), then of the bias over (b, g, h, i, j). `mask`: the mask lowering with each
/// row's block (prelude.cu).
/// Writes out[((b·Mq + i)·G + g)·H + h][0 ..< Kv] (zeroed by the caller) and the natural-log LSE
/// at [((b·G + g)·H + h)·Mq + i] (-inf for a row that sees no key).
extern "C" __global__ void fmha_reference_forward(const void* q, const void* k, const void* v, const void* bias,
                                                  float* out, float* lse, const int64_t* shape, const int64_t* mask,
                                                  float scale, uint64_t seed, uint32_t offset, uint32_t threshold,
                                                  float keep_scale, int32_t dropout) {
    const int64_t batch = shape[0], queries = shape[1], groups = shape[3], heads = shape[4];
    const int64_t head_dim = shape[5], value_dim = shape[6], dtype = shape[7], has_bias = shape[8];
    const int64_t* qs = shape + 9;
    const int64_t* ks = shape + 13;
    const int64_t* vs = shape + 17;
    const int64_t* bs = shape + 21;
    const fmha::DropoutMask keep{seed, offset, threshold};
    const int64_t rows = batch * groups * heads * queries;
    for (int64_t row = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; row < rows;
         row += int64_t(gridDim.x) * blockDim.x) {
        const int64_t i = row % queries, h = (row / queries) % heads;
        const int64_t g = (row / (queries * heads)) % groups, b = row / (queries * heads * groups);
        const fmha::Lowering lowering{mask};
        const int64_t block = lowering.block_of(i);
        const fmha::KeyRange visible = lowering.row_keys(block, i);
        const int64_t q_base = b * qs[0] + i * qs[1] + g * qs[2] + h * qs[3];
        const int64_t head_index = (b * groups + g) * heads + h;
        float* out_row = out + (((b * queries + i) * groups + g) * heads + h) * value_dim;
        float maximum = -FMHA_INFINITY, sum = 0.0f;
        for (int pass = 0; pass < 2; ++pass) {
            for (int64_t p = visible.lo; p < visible.hi; ++p) {
                const int64_t j = lowering.physical_key(block, p);
                const int64_t k_base = b * ks[0] + j * ks[1] + g * ks[2] + h * ks[3];
                float dot = 0.0f;
                for (int64_t c = 0; c < head_dim; ++c) dot += fmha::load_element(q, q_base + c, dtype) * fmha::load_element(k, k_base + c, dtype);
                float score = scale * dot;
                if (has_bias) score += fmha::load_element(bias, b * bs[0] + g * bs[1] + h * bs[2] + i * bs[3] + j * bs[4], dtype);
                if (score == -FMHA_INFINITY) continue;
                if (pass == 0) {
                    const float updated = fmaxf(maximum, score);
                    sum = sum * expf(maximum - updated) + expf(score - updated);
                    maximum = updated;
                    continue;
                }
                float weight = expf(score - maximum) / sum;
                if (dropout) weight *= keep.is_kept(uint32_t(head_index), uint32_t(i), uint32_t(j)) ? keep_scale : 0.0f;
                if (weight == 0.0f) continue;
                const int64_t v_base = b * vs[0] + j * vs[1] + g * vs[2] + h * vs[3];
                for (int64_t c = 0; c < value_dim; ++c) out_row[c] += weight * fmha::load_element(v, v_base + c, dtype);
            }
            if (pass == 0 && sum == 0.0f) break;
        }
        lse[head_index * queries + i] = sum != 0.0f ? maximum + logf(sum) : -FMHA_INFINITY;  // (NaN propagates)
    }
}
