// The kernels compiled for x86-64 with AVX-512 (F, VL, BW, DQ), FMA and F16C: 16-lane vectors
// and 32 registers (chosen at run time by fmha_cpu_has_avx512); elsewhere the _avx512 names
// forward to the AVX2 ones, which forward to the generic ones off x86-64.
#include "CFMHAKernels.h"

#if defined(__x86_64__)
#define FMHA_TARGET __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma,f16c")))
#define FMHA_NAME(name) name##_avx512
#define VW 16
#include "forward_tile_body.h"
#include "backward_body.h"
#include "conversion_body.h"
#include "fma_loop_body.h"

int fmha_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return fmha_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
}
#else
int fmha_cpu_has_avx512(void) { return 0; }

float fmha_fma_loop_avx512(int64_t iterations) { (void)iterations; return 0; }

void fmha_forward_tile_avx512(const fmha_forward_tile *tile) { fmha_forward_tile_avx2(tile); }

void fmha_backward_dq_avx512(const fmha_backward_common *common, const fmha_backward_query_tile *tile,
                             int64_t key_begin, int64_t key_end) {
    fmha_backward_dq_avx2(common, tile, key_begin, key_end);
}

void fmha_backward_dkdv_avx512(const fmha_backward_common *common, const fmha_backward_query_tile *tiles,
                               int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                               int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride) {
    fmha_backward_dkdv_avx2(common, tiles, tile_count, key_begin, key_end, grad_k, grad_k_row_stride, grad_v,
                            grad_v_row_stride);
}

void fmha_row_dots_avx512(const void *a, int64_t a_row_stride, int32_t a_dtype, const void *b, int64_t b_row_stride,
                          int32_t b_dtype, int32_t rows, int32_t width, float *out) {
    fmha_row_dots_avx2(a, a_row_stride, a_dtype, b, b_row_stride, b_dtype, rows, width, out);
}

void fmha_store_floats_avx512(const float *values, void *out, int64_t count, int32_t dtype) {
    fmha_store_floats_avx2(values, out, count, dtype);
}
#endif
