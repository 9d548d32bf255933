// The kernels compiled for x86-64 with AVX2, FMA and F16C (chosen at run time by
// fmha_cpu_has_avx2_fma); elsewhere the _avx2 names forward to the generic kernels.
#include "CFMHAKernels.h"

#if defined(__x86_64__)
#define FMHA_TARGET __attribute__((target("avx2,fma,f16c")))
#define FMHA_NAME(name) name##_avx2
#include "forward_tile_body.h"
#include "backward_body.h"
#include "conversion_body.h"

int fmha_cpu_has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

#include "fma_loop_body.h"
#else
int fmha_cpu_has_avx2_fma(void) { return 0; }

void fmha_forward_tile_avx2(const fmha_forward_tile *tile) { fmha_forward_tile_generic(tile); }

void fmha_backward_dq_avx2(const fmha_backward_common *common, const fmha_backward_query_tile *tile,
                           int64_t key_begin, int64_t key_end) {
    fmha_backward_dq_generic(common, tile, key_begin, key_end);
}

void fmha_backward_dkdv_avx2(const fmha_backward_common *common, const fmha_backward_query_tile *tiles,
                             int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                             int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride) {
    fmha_backward_dkdv_generic(common, tiles, tile_count, key_begin, key_end, grad_k, grad_k_row_stride, grad_v,
                               grad_v_row_stride);
}

float fmha_fma_loop_avx2(int64_t iterations) { (void)iterations; return 0; }

void fmha_row_dots_avx2(const void *a, int64_t a_row_stride, int32_t a_dtype, const void *b, int64_t b_row_stride,
                        int32_t b_dtype, int32_t rows, int32_t width, float *out) {
    fmha_row_dots_generic(a, a_row_stride, a_dtype, b, b_row_stride, b_dtype, rows, width, out);
}

void fmha_store_floats_avx2(const float *values, void *out, int64_t count, int32_t dtype) {
    fmha_store_floats_generic(values, out, count, dtype);
}
#endif
