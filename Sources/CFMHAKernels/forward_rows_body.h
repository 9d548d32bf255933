// The forward for tiles of a few queries (decoding: one query against a long cache), included by
// forward_tile_body.h. The tile kernel runs its vectors along the tile's FMHA_TILE_QUERIES queries,
// so a one-row tile leaves all but one lane idle; here the vectors run along the head dimension
// instead: each row's scores are dot products (four keys at a time, one horizontal sum per key),
// its online softmax covers the key block, and O += p·V adds four value rows per pass (bfloat16
// through BF16 dot products where the build has them, K and V read in place, as float16 K and V
// are). Same inputs, outputs and semantics as the tile kernel (masks, pages, tensor bias, dropout,
// LSE). The kinds' shared code is forward_rows_kind.h.

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

// The kinds of rows, per build. With BF16 products (bfloat16 inputs only): query lanes of two
// bfloat16 values against bfloat16 K/V rows read in place, two multiply-adds per lane (vdpbf16ps),
// V widened to float32. Otherwise float32 query lanes against float32 K/V rows (float32 inputs in
// place, bfloat16 converted row by row) or, for float16 inputs, against float16 rows read in place
// and widened a vector at a time (vcvtph2ps where the build has F16C).
#ifdef FMHA_BF16_PRODUCTS
/// acc + the products of VW query lanes with the matching 2·VW key elements.
FMHA_INLINE vf dot_step_bf16(vf acc, const uint32_t *q, const uint16_t *key) {
    vu pairs;
    memcpy(&pairs, key, sizeof pairs);
    return dot_pairs(acc, loadu(q), pairs);
}

/// One query lane times its two key elements, in float32.
FMHA_INLINE float dot_lane_bf16(uint32_t q, const uint16_t *key) {
    const uint32_t k = load_pair(key);
    return bf16_to_float((uint16_t)q) * bf16_to_float((uint16_t)k)
           + bf16_to_float((uint16_t)(q >> 16)) * bf16_to_float((uint16_t)(k >> 16));
}

/// VW elements of a value row as float32 lanes (any alignment).
FMHA_INLINE vf widen_values_bf16(const uint16_t *p) {
    typedef uint16_t vh __attribute__((vector_size(VW * 2)));
    vh halves;
    memcpy(&halves, p, sizeof halves);
    return (vf)(__builtin_convertvector(halves, vu) << 16);
}

FMHA_INLINE float widen_value_bf16(uint16_t x) { return bf16_to_float(x); }

#define ROWS(name) name##_bf16
#define ROW_LANE uint32_t
#define ROW_ELEMENT uint16_t
#define ROW_PER_LANE 2
#define ROW_IN_PLACE 1
#include "forward_rows_kind.h"
#undef ROWS
#undef ROW_LANE
#undef ROW_ELEMENT
#undef ROW_PER_LANE
#undef ROW_IN_PLACE

/// The tile `t` (at most FMHA_FEW_ROWS queries), with fmha_forward_tile's inputs and outputs.
static FMHA_TARGET void forward_rows(const fmha_forward_tile *t) { forward_rows_bf16(t); }
#else
FMHA_INLINE vf dot_step_f32(vf acc, const float *q, const float *key) { return acc + loadv(q) * loadv(key); }
FMHA_INLINE float dot_lane_f32(float q, const float *key) { return q * key[0]; }
FMHA_INLINE vf widen_values_f32(const float *p) { return loadv(p); }
FMHA_INLINE float widen_value_f32(float x) { return x; }

/// VW float16 elements (any alignment) as float32 lanes.
FMHA_INLINE vf widen_values_f16(const _Float16 *p) {
    typedef _Float16 vh __attribute__((vector_size(VW * 2)));
    vh halves;
    memcpy(&halves, p, sizeof halves);
    return __builtin_convertvector(halves, vf);
}

FMHA_INLINE vf dot_step_f16(vf acc, const float *q, const _Float16 *key) { return acc + loadv(q) * widen_values_f16(key); }
FMHA_INLINE float dot_lane_f16(float q, const _Float16 *key) { return q * (float)key[0]; }
FMHA_INLINE float widen_value_f16(_Float16 x) { return (float)x; }

#define ROW_LANE float
#define ROW_PER_LANE 1
#define ROWS(name) name##_f32
#define ROW_ELEMENT float
#define ROW_IN_PLACE 0
#include "forward_rows_kind.h"
#undef ROWS
#undef ROW_ELEMENT
#undef ROW_IN_PLACE
#define ROWS(name) name##_f16
#define ROW_ELEMENT _Float16
#define ROW_IN_PLACE 1
#include "forward_rows_kind.h"
#undef ROWS
#undef ROW_ELEMENT
#undef ROW_IN_PLACE
#undef ROW_LANE
#undef ROW_PER_LANE

/// The tile `t` (at most FMHA_FEW_ROWS queries), with fmha_forward_tile's inputs and outputs.
static FMHA_TARGET void forward_rows(const fmha_forward_tile *t) {
    if (t->dtype == FMHA_DTYPE_F16) {
        forward_rows_f16(t);
    } else {
        forward_rows_f32(t);
    }
}
#endif
