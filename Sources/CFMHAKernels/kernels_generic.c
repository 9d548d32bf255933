// The kernels compiled for the build's baseline instruction set: correct everywhere, and the
// path for CPUs without AVX2/FMA.
#include "CFMHAKernels.h"

#define FMHA_TARGET
#define FMHA_NAME(name) name##_generic
#include "forward_tile_body.h"
#include "backward_body.h"
#include "conversion_body.h"

size_t fmha_forward_workspace_floats(int32_t head_dim, int32_t value_dim) {
    const size_t r = FMHA_TILE_QUERIES, c = FMHA_TILE_KEYS;
    return (size_t)head_dim * r + (c + 8) * r + (size_t)value_dim * r + c * (size_t)head_dim + c * (size_t)value_dim
           + (size_t)(head_dim > value_dim ? head_dim : value_dim) + 2 * r + (c / 2) * r;
}

size_t fmha_backward_workspace_floats(int32_t head_dim, int32_t value_dim) {
    const size_t r = FMHA_TILE_QUERIES, c = FMHA_TILE_KEYS, k = (size_t)head_dim, kv = (size_t)value_dim;
    const size_t g = FMHA_BACKWARD_KEY_GROUP;
    return 2 * k * r + 2 * kv * r + 2 * (c + 8) * r + g * c * k + g * c * kv + (k > kv ? k : kv) + g * (c + 8) * k
           + g * (c + 8) * kv + 2 * r + (c + 8) * (r / 2) + (c / 2) * r;
}

void fmha_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    philox(counter, key, out);
}
