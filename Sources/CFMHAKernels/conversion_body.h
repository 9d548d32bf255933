// Whole-array helpers of the backward pass, compiled once per instruction set (FMHA_TARGET and
// FMHA_NAME as for forward_tile_body.h): with F16C the float16 conversions are instructions,
// not library calls, and the loops vectorize.

#include "tile_math.h"

FMHA_TARGET void FMHA_NAME(fmha_row_dots)(const void *a, int64_t a_row_stride, int32_t a_dtype, const void *b,
                                          int64_t b_row_stride, int32_t b_dtype, int32_t rows, int32_t width,
                                          float *out) {
    for (int32_t r = 0; r < rows; r++) {
        float sum = 0;
        for (int32_t x = 0; x < width; x++) {
            sum += load_scalar(a, r * a_row_stride + x, a_dtype) * load_scalar(b, r * b_row_stride + x, b_dtype);
        }
        out[r] = sum;
    }
}

FMHA_TARGET void FMHA_NAME(fmha_store_floats)(const float *values, void *out, int64_t count, int32_t dtype) {
    switch (dtype) {
    case FMHA_DTYPE_F16:
        for (int64_t i = 0; i < count; i++) ((_Float16 *)out)[i] = (_Float16)values[i];
        break;
    case FMHA_DTYPE_BF16:
        for (int64_t i = 0; i < count; i++) ((uint16_t *)out)[i] = float_to_bf16(values[i]);
        break;
    default: memcpy(out, values, (size_t)count * sizeof(float));
    }
}
