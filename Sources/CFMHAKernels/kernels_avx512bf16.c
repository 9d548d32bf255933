// bfloat16 inputs with AVX-512 BF16 dot products (Zen 4, Sapphire Rapids and newer): the forward
// tile and the backward kernels with their score-like products as vdpbf16ps, chosen at run time
// (fmha_cpu_has_avx512_bf16) for bfloat16 inputs with even head dimensions; elsewhere the names
// forward to the generic kernels.
#include "CFMHAKernels.h"

#if defined(__x86_64__)
#define FMHA_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,fma,f16c")))
#define FMHA_NAME(name) name##_avx512bf16
#define VW 16
#define FMHA_BF16_PRODUCTS 1
#include "forward_tile_body.h"
#include "backward_body.h"

int fmha_cpu_has_avx512_bf16(void) {
    return fmha_cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
}
#else
int fmha_cpu_has_avx512_bf16(void) { return 0; }

void fmha_forward_tile_avx512bf16(const fmha_forward_tile *tile) { fmha_forward_tile_generic(tile); }

void fmha_backward_dq_avx512bf16(const fmha_backward_common *common, const fmha_backward_query_tile *tile,
                                 int64_t key_begin, int64_t key_end) {
    fmha_backward_dq_generic(common, tile, key_begin, key_end);
}

void fmha_backward_dkdv_avx512bf16(const fmha_backward_common *common, const fmha_backward_query_tile *tiles,
                                   int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                                   int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride) {
    fmha_backward_dkdv_generic(common, tiles, tile_count, key_begin, key_end, grad_k, grad_k_row_stride, grad_v,
                               grad_v_row_stride);
}
#endif
