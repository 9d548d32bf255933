// CPU attention kernels for FMHA's fast CPU operators, written in C so that they can be compiled
// for AVX2/FMA and AVX-512 with function attributes (SwiftPM refuses unsafeFlags in dependencies)
// and chosen at run time. Every kernel exists three times: `_avx512` (x86-64 with AVX-512 F/VL/BW/DQ),
// `_avx2` (x86-64 with AVX2, FMA and F16C) and `_generic` (the build's baseline); off x86-64 the
// first two forward to the generic one.
#ifndef CFMHA_KERNELS_H
#define CFMHA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Element types of inputs and outputs.
enum {
    FMHA_DTYPE_F32 = 0,
    FMHA_DTYPE_F16 = 1,
    FMHA_DTYPE_BF16 = 2,
};

/// Queries per tile: the kernels work on this many query rows at once.
#define FMHA_TILE_QUERIES 32
/// Keys per tile.
#define FMHA_TILE_KEYS 64
/// Key tiles fmha_backward_dkdv takes at once: each query tile it visits is loaded (converted and
/// transposed) once for all of them rather than once per key tile.
#define FMHA_BACKWARD_KEY_GROUP 4

/// One forward tile: up to FMHA_TILE_QUERIES query rows of one head against the logical keys
/// [key_begin, key_end) of their block, with an online softmax. Strides are in elements.
typedef struct fmha_forward_tile {
    int32_t rows;        ///< query rows in this tile (1 ... FMHA_TILE_QUERIES)
    int32_t head_dim;    ///< K
    int32_t value_dim;   ///< Kv
    int32_t dtype;       ///< dtype of q, k, v and bias
    int32_t out_dtype;   ///< dtype of out
    const void *q;       ///< first query row; row r at q + r * q_row_stride
    int64_t q_row_stride;
    const void *k;       ///< K/V row j at k + j * k_row_stride
    int64_t k_row_stride;
    const void *v;
    int64_t v_row_stride;
    int64_t key_begin;   ///< logical keys to visit: [key_begin, key_end)
    int64_t key_end;
    int64_t key_row_offset;  ///< K/V row of logical key p is key_row_offset + p without pages
    const int64_t *pages;    ///< or pages[p / page_size] * page_size + p % page_size
    int64_t page_size;
    const int64_t *row_lo;   ///< row r sees logical keys [row_lo[r], row_hi[r])
    const int64_t *row_hi;
    const void *bias;        ///< optional tensor bias: bias + r * bias_row_stride + j * bias_col_stride
    int64_t bias_row_stride;
    int64_t bias_col_stride;
    float scale;             ///< factor on q·k
    int32_t dropout;         ///< nonzero: apply the Philox dropout mask below
    uint32_t dropout_threshold;  ///< keep iff the random word >= threshold
    float dropout_keep_scale;    ///< 1 / (1 - p)
    uint64_t dropout_seed;
    uint32_t dropout_offset;
    uint32_t dropout_head;       ///< (b * G + g) * H + h
    int64_t dropout_query0;      ///< packed query index of row 0
    void *out;               ///< output row r at out + r * out_row_stride
    int64_t out_row_stride;
    float *lse;              ///< rows natural-log LSE values (-inf for a row that sees no key)
    float *workspace;        ///< fmha_forward_workspace_floats(head_dim, value_dim) floats, 64-byte aligned
} fmha_forward_tile;

/// Floats of workspace one forward tile needs.
size_t fmha_forward_workspace_floats(int32_t head_dim, int32_t value_dim);

void fmha_forward_tile_avx512(const fmha_forward_tile *tile);
/// bfloat16 q/k/v with an even head_dim only: both products with AVX-512 BF16 dot products.
void fmha_forward_tile_avx512bf16(const fmha_forward_tile *tile);
void fmha_forward_tile_avx2(const fmha_forward_tile *tile);
void fmha_forward_tile_generic(const fmha_forward_tile *tile);

/// What the backward kernels share for one call and one K/V head.
typedef struct fmha_backward_common {
    int32_t head_dim;
    int32_t value_dim;
    int32_t dtype;           ///< dtype of q, k, v, bias and the output gradient
    const void *k;           ///< K/V row j at k + j * k_row_stride
    int64_t k_row_stride;
    const void *v;
    int64_t v_row_stride;
    int64_t key_row_offset;  ///< as in fmha_forward_tile
    const int64_t *pages;
    int64_t page_size;
    float scale;
    int32_t dropout;
    uint32_t dropout_threshold;
    float dropout_keep_scale;
    uint64_t dropout_seed;
    uint32_t dropout_offset;
    float *workspace;        ///< fmha_backward_workspace_floats(head_dim, value_dim) floats
} fmha_backward_common;

/// One query tile of one head, as the backward kernels see it.
typedef struct fmha_backward_query_tile {
    int32_t rows;
    const void *q;           ///< query row r at q + r * q_row_stride
    int64_t q_row_stride;
    const void *grad_out;    ///< output-gradient row r at grad_out + r * grad_out_row_stride
    int64_t grad_out_row_stride;
    const float *lse;        ///< rows natural-log LSE values from the forward pass
    const float *delta;      ///< rows values of rowsum(grad_out * out)
    const int64_t *row_lo;   ///< logical key ranges, as in fmha_forward_tile
    const int64_t *row_hi;
    const void *bias;        ///< optional tensor bias, as in fmha_forward_tile
    int64_t bias_row_stride;
    int64_t bias_col_stride;
    float *grad_bias;        ///< optional float32 gradient of the bias: row r, K/V row j at grad_bias + r * grad_bias_row_stride + j
    int64_t grad_bias_row_stride;
    uint32_t dropout_head;
    int64_t dropout_query0;
    float *grad_q;           ///< float32 dQ row r at grad_q + r * grad_q_row_stride (written by fmha_backward_dq)
    int64_t grad_q_row_stride;
    /// Optional, for fmha_backward_dkdv run by the one work item that owns every key of the
    /// tile's head: dQ accumulated transposed (head_dim × FMHA_TILE_QUERIES floats, unscaled) as
    /// the key tiles go by; the bias gradient is then written there too.
    float *grad_q_transposed;
} fmha_backward_query_tile;

/// Floats of workspace one backward work item needs.
size_t fmha_backward_workspace_floats(int32_t head_dim, int32_t value_dim);

/// dQ (and the bias gradient) of one query tile over logical keys [key_begin, key_end).
/// bfloat16 inputs with even head_dim and value_dim only: the score-like products (Q·Kᵀ, dO·Vᵀ)
/// with AVX-512 BF16 dot products.
void fmha_backward_dq_avx512bf16(const fmha_backward_common *common, const fmha_backward_query_tile *tile,
                                 int64_t key_begin, int64_t key_end);
void fmha_backward_dkdv_avx512bf16(const fmha_backward_common *common, const fmha_backward_query_tile *tiles,
                                   int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                                   int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride);
void fmha_backward_dq_avx512(const fmha_backward_common *common, const fmha_backward_query_tile *tile,
                             int64_t key_begin, int64_t key_end);
void fmha_backward_dq_avx2(const fmha_backward_common *common, const fmha_backward_query_tile *tile,
                           int64_t key_begin, int64_t key_end);
void fmha_backward_dq_generic(const fmha_backward_common *common, const fmha_backward_query_tile *tile,
                              int64_t key_begin, int64_t key_end);

/// dK and dV of the logical keys [key_begin, key_end) (at most FMHA_BACKWARD_KEY_GROUP ·
/// FMHA_TILE_KEYS, taken FMHA_TILE_KEYS at a time) from `tile_count`
/// query tiles (of every head that shares this K/V head), added into float32 rows
/// grad_k + j * grad_k_row_stride and grad_v + j * grad_v_row_stride for K/V row j; and, for
/// tiles with grad_q_transposed, their dQ and bias-gradient contributions.
void fmha_backward_dkdv_avx512(const fmha_backward_common *common, const fmha_backward_query_tile *tiles,
                               int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                               int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride);
void fmha_backward_dkdv_avx2(const fmha_backward_common *common, const fmha_backward_query_tile *tiles,
                             int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                             int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride);
void fmha_backward_dkdv_generic(const fmha_backward_common *common, const fmha_backward_query_tile *tiles,
                                int32_t tile_count, int64_t key_begin, int64_t key_end, float *grad_k,
                                int64_t grad_k_row_stride, float *grad_v, int64_t grad_v_row_stride);

/// out[r] = Σ_x a[r][x]·b[r][x] for r < rows, x < width (rows of a and b at the given strides,
/// each of its own dtype): D = rowsum(dO∘O) for the backward pass. One per build.
void fmha_row_dots_avx512(const void *a, int64_t a_row_stride, int32_t a_dtype, const void *b, int64_t b_row_stride,
                          int32_t b_dtype, int32_t rows, int32_t width, float *out);
void fmha_row_dots_avx2(const void *a, int64_t a_row_stride, int32_t a_dtype, const void *b, int64_t b_row_stride,
                        int32_t b_dtype, int32_t rows, int32_t width, float *out);
void fmha_row_dots_generic(const void *a, int64_t a_row_stride, int32_t a_dtype, const void *b, int64_t b_row_stride,
                           int32_t b_dtype, int32_t rows, int32_t width, float *out);

/// out[0 ..< count] = values rounded to `dtype` (to nearest even; NaN stays NaN): the backward's
/// float32 gradients in the inputs' dtype. One per build.
void fmha_store_floats_avx512(const float *values, void *out, int64_t count, int32_t dtype);
void fmha_store_floats_avx2(const float *values, void *out, int64_t count, int32_t dtype);
void fmha_store_floats_generic(const float *values, void *out, int64_t count, int32_t dtype);

/// Philox4x32-10 of (counter, key): four words into out (for tests of the C copy).
void fmha_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/// 1 when this CPU runs the _avx2 kernels (x86-64 with AVX2, FMA and F16C), else 0.
int fmha_cpu_has_avx2_fma(void);

/// 1 when this CPU runs the _avx512 kernels, else 0.
int fmha_cpu_has_avx512(void);

/// 1 when this CPU runs fmha_forward_tile_avx512bf16, else 0.
int fmha_cpu_has_avx512_bf16(void);

/// Independent vector FMAs one iteration of the fmha_fma_loop_* functions performs.
enum { FMHA_FMA_LOOP_FMAS_PER_ITERATION = 12 };

/// `iterations` rounds of 12 independent FMAs held in registers, 8 lanes wide (AVX2) or 16
/// (AVX-512): time it to measure the machine's FMA peak. Returns a value that depends on every
/// FMA, so that none is optimized away.
float fmha_fma_loop_avx2(int64_t iterations);
float fmha_fma_loop_avx512(int64_t iterations);

#ifdef __cplusplus
}
#endif

#endif
