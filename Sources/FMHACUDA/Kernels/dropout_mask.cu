// The dropout keep decisions of one head as bytes: the GPU side of the test that the CUDA Philox
// mask equals FMHACore's `DropoutMask` bit for bit. Needs prelude.cu.

/// Writes `keep[query * keys + key]` = 1 if the weight of `query` on `key` in `head` survives
/// dropout and 0 if it is dropped, for a row-major [queries x keys] grid. Each thread draws one
/// Philox call, which decides four neighbouring keys; the grid strides over all of them, so any
/// launch size covers the grid.
extern "C" __global__ void fmha_dropout_keep(uint8_t* keep, uint32_t queries, uint32_t keys, uint32_t head,
                                             uint64_t seed, uint32_t offset, uint32_t threshold) {
    const fmha::DropoutMask mask{seed, offset, threshold};
    const uint64_t quads_per_row = (uint64_t(keys) + 3) / 4;
    const uint64_t quads = uint64_t(queries) * quads_per_row;
    const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
    for (uint64_t quad = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; quad < quads; quad += stride) {
        const uint32_t query = uint32_t(quad / quads_per_row);
        const uint32_t key_quad = uint32_t(quad % quads_per_row);
        const fmha::Words4 random = mask.words(head, query, key_quad);
        const uint32_t words[4] = {random.x, random.y, random.z, random.w};
        uint8_t* row = keep + uint64_t(query) * keys;
#pragma unroll
        for (uint32_t lane = 0; lane < 4; ++lane) {
            const uint32_t key = key_quad * 4 + lane;
            if (key < keys) {
                row[key] = mask.keeps(words[lane]) ? 1 : 0;
            }
        }
    }
}
