// mergeAttentions on the device: partial attentions over disjoint key chunks (each an output and
// an LSE tensor of any strides) combined per row by fmha::MergeWeights, the rule the decode
// splits' merge uses too.

/// Words per partial in `table`: output address, output strides (b, m, g, h, channel), output
/// dtype (0 float32, 1 float16, 2 bfloat16), LSE address, LSE strides (b, g, h, m), LSE dtype.
#define FMHA_PARTIAL_WORDS 13

/// `sizes`: B, M, G, H, Kv; `table`: `count` partials of FMHA_PARTIAL_WORDS words. Row
/// n = ((b·M + m)·G + g)·H + h, blockIdx.x and then every gridDim.x-th, writes
/// out[n·Kv + c] in `out_dtype` (contiguous) and, when `lse` is not null, lse[((b·G + g)·H + h)·M + m].
extern "C" __global__ void __launch_bounds__(128) fmha_merge_attentions(
    void* out, float* lse, const int64_t* sizes, const int64_t* table, int64_t count, int64_t out_dtype) {
    const int64_t batch = sizes[0], length = sizes[1], groups = sizes[2], heads = sizes[3], channels = sizes[4];
    const int64_t rows = batch * length * groups * heads;
    for (int64_t n = blockIdx.x; n < rows; n += gridDim.x) {
        const int64_t h = n % heads, g = (n / heads) % groups, m = (n / (heads * groups)) % length, b = n / (heads * groups * length);
        auto partial_lse = [&](int64_t s) {
            const int64_t* p = table + s * FMHA_PARTIAL_WORDS;
            const int64_t index = b * p[8] + g * p[9] + h * p[10] + m * p[11];
            return fmha::load_element(reinterpret_cast<const void*>(p[7]), index, p[12]);
        };
        const fmha::MergeWeights weights(count, partial_lse);
        for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
            float sum = 0.0f;
            for (int64_t s = 0; s < count; ++s) {
                const int64_t* p = table + s * FMHA_PARTIAL_WORDS;
                const int64_t index = b * p[1] + m * p[2] + g * p[3] + h * p[4] + c * p[5];
                // (A partial of weight 0 adds nothing, whatever its output holds.)
                const float weight = weights.weight(partial_lse(s));
                if (weight != 0.0f) sum += weight * fmha::load_element(reinterpret_cast<const void*>(p[0]), index, p[6]);
            }
            fmha::store_element(out, n * channels + c, out_dtype, sum);
        }
        if (lse != nullptr && threadIdx.x == 0) lse[((b * groups + g) * heads + h) * length + m] = weights.lse;
    }
}
