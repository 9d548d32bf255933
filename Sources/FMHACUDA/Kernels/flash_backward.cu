// The tensor-core backward (FlashAttention-2's scheme). Kernels, launched in order:
//  1. fmha_flash_backward_delta: D = rowsum(dO∘O) per query row, one warp per row.
//  2. fmha_flash_backward_dq (deterministic dQ: nothing is added by atomics, so the bits never
//     depend on scheduling): one block per (tile of FMHA_DQ_ROWS queries of one mask block, head),
//     walking the keys the tile sees (the forward's work list): S = Q·Kᵀ and dP = dO·Vᵀ again,
//     P from the forward's LSE, dS = P∘(dP∘Z - D), dQ += dS·K; with a tensor bias dS is also its
//     gradient (written in the input dtype, or to a float32 [B, G, H, Mq, Mkv] buffer for kernel 4
//     when the bias is broadcast).
//  3. fmha_flash_backward_dkdv: one block per (tile of FMHA_DKDV_KEYS keys of one mask block, K/V
//     head, column part), walking every query head that shares the K/V head and every query that
//     sees the tile (its work list): Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, dV += (Pᵀ∘Z)·dO, dK += dSᵀ·Q, so
//     grouped-query gradients are summed in registers, in a fixed order, without expanded copies.
//     Past 128 columns each block accumulates FMHA_HEAD_DIM / FMHA_COLUMN_PARTS of them (its
//     registers would not hold more), and the parts recompute Sᵀ and dPᵀ. Extras builds can
//     instead of kernel 2 add dS·K to float32 dQ sums by atomic additions (`grad_q_sum`: each
//     step's dSᵀ through shared memory), then kernel 5 converts them.
//  4. fmha_flash_backward_bias_sum: the bias gradient summed over the bias's broadcast dimensions.
//  5. fmha_flash_backward_dq_from_sum: the atomic dQ sums, scaled, in the input dtype.
// Warps own 16 rows of the products (queries in 2, keys in 3); every operand tile goes through
// shared memory by cp.async (rows of FMHA_ROW 16-bit values) and reaches the tensor cores by
// ldmatrix; P and dS become A fragments straight from the accumulators. Z is the dropout factor
// (0 or keep_scale, the forward's Philox mask); masked elements get dS = 0 by selection, so NaN
// in keys or values a query cannot see never reaches its gradients.
// Needs prelude.cu, tensor_core.cu and the defines FMHA_HEAD_DIM (a multiple of 16, at most 256,
// at least K and Kv), FMHA_DTYPE (1: float16, 2: bfloat16), FMHA_DQ_KEYS (keys per tile of the dQ
// pass, a multiple of 16), FMHA_DKDV_QUERIES (queries per step of the dK/dV pass, a multiple of 16),
// FMHA_COLUMN_PARTS (1 or 2), FMHA_EXTRAS (1: takes a tensor bias and dropout) and FMHA_STAGES (1,
// or 2: the tiles a pass walks are double-buffered, the next one's copies overlapping the work on
// the current one). Blocks have FMHA_WARPS (4) warps. Dynamic shared memory:
// 2·(FMHA_DQ_ROWS + FMHA_STAGES·FMHA_DQ_KEYS)·FMHA_ROW 16-bit values for the dQ pass and
// 2·(FMHA_DKDV_KEYS + FMHA_STAGES·FMHA_DKDV_QUERIES)·FMHA_ROW for the dK/dV pass, plus
// FMHA_DKDV_KEYS·FMHA_DS_ROW in extras builds (the atomic dQ's dSᵀ).
// Shapes: `shape` as for the reference kernels (sizes, dtype, bias flag, q/k/v/bias strides) and
// then the K/V head grid and sharing counts (as reference_backward.cu), then the strides of dO and
// O over (b, m, g, h), O's dtype, and whether the bias gradient is written in the input dtype (1:
// no broadcast dimension to sum) or as float32 for fmha_flash_backward_bias_sum (0). Gradients are
// written in the input dtype: dQ as [B, Mq, G, H, K], dK and dV as [B', Mkv, G', H', K or Kv] over
// the K/V head grid.

#define FMHA_WARPS 4
#define FMHA_THREADS (FMHA_WARPS * 32)
#define FMHA_ROW (FMHA_HEAD_DIM + 8)
#define FMHA_DQ_ROWS (FMHA_WARPS * 16)
#define FMHA_DKDV_KEYS (FMHA_WARPS * 16)
#define FMHA_PART (FMHA_HEAD_DIM / FMHA_COLUMN_PARTS)
#define FMHA_DS_ROW (FMHA_DKDV_QUERIES + 8)
/// Int64 words per tile of the forward's work list (DeviceLowering.workList) and per key tile of
/// the dK/dV pass's (DeviceLowering.keyWorkList).
#define FMHA_WORK_WORDS 7
#define FMHA_KEY_WORK_WORDS 5

static_assert(FMHA_HEAD_DIM % 16 == 0 && FMHA_HEAD_DIM <= 256, "FMHA_HEAD_DIM: a multiple of 16, at most 256");
static_assert(FMHA_DQ_KEYS % 16 == 0 && FMHA_DKDV_QUERIES % 16 == 0, "tile sizes: multiples of 16");
static_assert(FMHA_STAGES == 1 || FMHA_STAGES == 2, "FMHA_STAGES: 1 or 2");
static_assert(FMHA_COLUMN_PARTS == 1 || (FMHA_COLUMN_PARTS == 2 && FMHA_HEAD_DIM % 32 == 0), "FMHA_COLUMN_PARTS: 1 or 2");

// Without FMHA_EXTRAS (0) a build ignores the tensor bias and dropout arguments, and their code
// and registers are gone; with 1 both are run-time switches.
#if FMHA_EXTRAS
#define FMHA_EXTRAS_SWITCHES const bool has_bias = bias != nullptr, has_dropout = dropout != 0;
#else
#define FMHA_EXTRAS_SWITCHES constexpr bool has_bias = false, has_dropout = false;
#endif

/// Int64 words of `shape` (see above).
#define FMHA_SHAPE_WORDS 42

/// `shape`, passed by value: kernel parameters stay readable without memory loads (a pointer's
/// words would be loaded again after every cp.async or barrier, which clobber memory).
struct ShapeWords {
    int64_t words[FMHA_SHAPE_WORDS];
};

namespace {

/// The scores' base-2 factor of a natural-log value.
constexpr float log2e = 1.4426950408889634f;

/// Copies `rows` rows of a tile into shared memory at `tile` (FMHA_ROW values a row): row r from
/// `row_pointer(r)` (null: a row of zeros), columns < `width` (the rest zero), by 16-byte cp.async
/// copies when every row is 16-byte aligned (`vector_loads`), else element by element; one group.
template <int rows, typename RowPointer>
__device__ __forceinline__ void load_tile(uint16_t* tile, RowPointer row_pointer, int width, bool vector_loads,
                                          const uint16_t* any_address) {
    constexpr int chunks = FMHA_HEAD_DIM / 8;
    if (vector_loads) {
        const uint32_t base = shared_address(tile);
#pragma unroll 2
        for (int index = threadIdx.x; index < rows * chunks; index += FMHA_THREADS) {
            const int r = index / chunks, c = (index % chunks) * 8;
            const uint16_t* row = row_pointer(r);
            const bool valid = row != nullptr && c < width;
            copy_16_bytes_async(base + 2 * (r * FMHA_ROW + c), valid ? row + c : any_address, valid);
        }
    } else {
        for (int index = threadIdx.x; index < rows * FMHA_HEAD_DIM; index += FMHA_THREADS) {
            const int r = index / FMHA_HEAD_DIM, c = index % FMHA_HEAD_DIM;
            const uint16_t* row = row_pointer(r);
            tile[r * FMHA_ROW + c] = row != nullptr && c < width ? row[c] : uint16_t(0);
        }
    }
    asm volatile("cp.async.commit_group;");
}

/// `load_tile` for consecutive rows: row r < `valid_rows` at `first` + r·`row_stride`, the rest
/// zero. With aligned rows each thread copies one 8-column chunk of rows a pass apart, walking one
/// pointer (a few instructions a copy, where the general form recomputes every row's address).
template <int rows>
__device__ __forceinline__ void load_consecutive_rows(uint16_t* tile, const uint16_t* first, int64_t row_stride, int valid_rows,
                                                      int width, bool vector_loads) {
    if (!vector_loads) {
        load_tile<rows>(tile, [&](int r) { return r < valid_rows ? first + r * row_stride : nullptr; }, width, false, first);
        return;
    }
    constexpr int chunks = FMHA_HEAD_DIM / 8;
    constexpr int lanes_per_row = chunks <= 2 ? 2 : chunks <= 4 ? 4 : chunks <= 8 ? 8 : chunks <= 16 ? 16 : 32;
    constexpr int rows_per_pass = FMHA_THREADS / lanes_per_row;
    const int r0 = threadIdx.x / lanes_per_row, c = (threadIdx.x % lanes_per_row) * 8;
    if (lanes_per_row == chunks || c < FMHA_HEAD_DIM) {
        const uint32_t address = shared_address(tile + r0 * FMHA_ROW + c);
        const uint16_t* element = first + r0 * row_stride + c;
#pragma unroll
        for (int pass = 0; pass < (rows + rows_per_pass - 1) / rows_per_pass; ++pass) {
            const int r = r0 + pass * rows_per_pass;
            if (rows % rows_per_pass == 0 || r < rows) {
                const bool valid = r < valid_rows && c < width;
                copy_16_bytes_async(address + 2 * pass * rows_per_pass * FMHA_ROW, valid ? element : first, valid);
            }
            element += rows_per_pass * row_stride;
        }
    }
    asm volatile("cp.async.commit_group;");
}

/// Starts a 4-byte copy from global `source` to the shared address `destination` (cp.async);
/// when `valid` is false nothing is read and the 4 bytes are zeroed.
__device__ __forceinline__ void copy_4_bytes_async(uint32_t destination, const float* source, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(destination), "l"(source), "r"(valid ? 4 : 0) : "memory");
}

/// Waits for this thread's copies, then for every thread's.
__device__ __forceinline__ void wait_for_tiles() {
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    __syncthreads();
}

/// Two independent products of a warp in one pass over the FMHA_HEAD_DIM columns:
/// first[16 × 8·N] = A·Bᵀ and second = C·Dᵀ, A and C rows from row-major tiles whose ldmatrix rows
/// (this lane's) start at `a_rows` and `c_rows`, B and D rows (the N dimension) from tiles whose
/// ldmatrix rows start at `b_rows` and `d_rows`. Interleaved, twice as many accumulators are in
/// flight between dependent mma (alone, S = K·Qᵀ of 32 queries chains each of its 4 eight times).
template <int N>
__device__ __forceinline__ void multiply_transposed_pair(float (&first)[N][4], uint32_t a_rows, uint32_t b_rows,
                                                         float (&second)[N][4], uint32_t c_rows, uint32_t d_rows) {
#pragma unroll
    for (int n = 0; n < N; ++n) {
        first[n][0] = first[n][1] = first[n][2] = first[n][3] = 0.0f;
        second[n][0] = second[n][1] = second[n][2] = second[n][3] = 0.0f;
    }
#pragma unroll
    for (int chunk = 0; chunk < FMHA_HEAD_DIM / 16; ++chunk) {
        uint32_t a[4], c[4];
        load_matrices(a_rows + 2 * chunk * 16, a);
        load_matrices(c_rows + 2 * chunk * 16, c);
#pragma unroll
        for (int n = 0; n < N; n += 2) {
            uint32_t b[4], d[4];
            load_matrices(b_rows + 2 * (n * 8 * FMHA_ROW + chunk * 16), b);
            load_matrices(d_rows + 2 * (n * 8 * FMHA_ROW + chunk * 16), d);
            mma_16x16x16(first[n], first[n + 1], a, b);
            mma_16x16x16(second[n], second[n + 1], c, d);
        }
    }
}

/// accumulator[16 × 8·N] += A·B for a warp: A (16 × 16·K) as fragments in registers, B (16·K rows
/// of the K dimension, row-major) from the tile whose transposed ldmatrix rows start at `b_rows`.
template <int N, int K>
__device__ __forceinline__ void multiply(float (&accumulator)[N][4], const uint32_t (&a)[K][4], uint32_t b_rows) {
#pragma unroll
    for (int chunk = 0; chunk < K; ++chunk) {
#pragma unroll
        for (int n = 0; n < N; n += 2) {
            uint32_t b[4];
            load_matrices_transposed(b_rows + 2 * (chunk * 16 * FMHA_ROW + n * 8), b);
            mma_16x16x16(accumulator[n], accumulator[n + 1], a[chunk], b);
        }
    }
}

/// This lane's ldmatrix row address for an A operand (rows `first_row` ..< + 16 of a row-major
/// tile: matrices of rows 0-7 and 8-15 at columns 0-7, then 8-15).
__device__ __forceinline__ uint32_t a_rows_of(const uint16_t* tile, int first_row) {
    const int lane = threadIdx.x % 32;
    return shared_address(tile + (first_row + lane % 16) * FMHA_ROW + (lane / 16) * 8);
}

/// This lane's ldmatrix row address for B operands whose N dimension is the tile's rows (rows 0-7
/// at columns 0-7 and 8-15, then rows 8-15).
__device__ __forceinline__ uint32_t b_rows_of(const uint16_t* tile) {
    const int lane = threadIdx.x % 32;
    return shared_address(tile + ((lane / 16) * 8 + lane % 8) * FMHA_ROW + ((lane / 8) % 2) * 8);
}

/// This lane's transposed-ldmatrix row address for B operands whose K dimension is the tile's rows
/// (rows 0-15 at columns 0-7, then 8-15).
__device__ __forceinline__ uint32_t b_rows_transposed_of(const uint16_t* tile, int first_column) {
    const int lane = threadIdx.x % 32;
    return shared_address(tile + (lane % 16) * FMHA_ROW + first_column + (lane / 16) * 8);
}

/// Stores a warp's 16 rows × 8·N accumulator, times `factor`, as rows of the input type: row r
/// (0 ..< 16) at `row_pointer(r)` (null: skipped), columns `first_column` + c for c < `width`.
template <int N, typename RowPointer>
__device__ __forceinline__ void store_rows(const float (&accumulator)[N][4], float factor, RowPointer row_pointer,
                                           int first_column, int width) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        uint16_t* row = row_pointer(lane / 4 + 8 * half);
        if (row == nullptr) continue;
#pragma unroll
        for (int n = 0; n < N; ++n) {
            const int c = n * 8 + (lane % 4) * 2;
            if (first_column + c < width) {
                *reinterpret_cast<uint32_t*>(row + first_column + c) =
                    pack_pair(accumulator[n][2 * half] * factor, accumulator[n][2 * half + 1] * factor);
            }
        }
    }
}

#if FMHA_EXTRAS
/// The atomic dQ of a dK/dV step: the warps' dSᵀ fragments (`grad_score`: 16 keys × the step's
/// queries each, A fragments) go to `tile` (keys × queries), and the block adds dS·K of its key
/// tile (`key_tile`: rows of FMHA_ROW) to float32 rows of dQ: query r < `valid_queries` of the step
/// at `first_row` + r·`row_stride`, columns `first_column` ..< + FMHA_PART below `width`, by
/// atomic additions (unscaled: dQ is scaled when it is converted). Each warp takes one 16-query
/// tile and every (FMHA_WARPS / tiles)-th pair of 8-column tiles. Ends with every warp done with
/// `tile` only after the caller's next barrier.
__device__ __forceinline__ void add_query_gradient(const uint32_t (&grad_score)[FMHA_DKDV_QUERIES / 16][4],
                                                   uint16_t* tile, const uint16_t* key_tile, int first_column, float* first_row,
                                                   int64_t row_stride, int valid_queries, int width) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int n = 0; n < FMHA_DKDV_QUERIES / 8; ++n) {
        const int column = n * 8 + (lane % 4) * 2;
        uint16_t* row = tile + (warp * 16 + lane / 4) * FMHA_DS_ROW + column;
        *reinterpret_cast<uint32_t*>(row) = grad_score[n / 2][(n % 2) * 2];
        *reinterpret_cast<uint32_t*>(row + 8 * FMHA_DS_ROW) = grad_score[n / 2][(n % 2) * 2 + 1];
    }
    __syncthreads();
    constexpr int query_tiles = FMHA_DKDV_QUERIES / 16, groups = FMHA_WARPS / query_tiles;
    const int m = warp % query_tiles;
    // dS (16 queries × FMHA_DKDV_KEYS keys) as A fragments: transposed 8×8 matrices of the tile
    // (keys 0-7 at queries 0-7, then queries 8-15, then keys 8-15 at both), loaded per product
    // (held across them, their registers make the dK/dV pass spill on sm_80).
    const uint32_t a_rows = shared_address(tile + ((lane / 16) * 8 + lane % 8) * FMHA_DS_ROW + m * 16 + ((lane / 8) % 2) * 8);
    const int r0 = m * 16 + lane / 4;
    for (int pair = warp / query_tiles; pair < FMHA_PART / 16; pair += groups) {
        float sum[2][4] = {};
        const uint32_t b_rows = b_rows_transposed_of(key_tile, first_column + pair * 16);
#pragma unroll
        for (int chunk = 0; chunk < FMHA_DKDV_KEYS / 16; ++chunk) {
            uint32_t a[4], b[4];
            load_matrices_transposed(a_rows + 2 * chunk * 16 * FMHA_DS_ROW, a);
            load_matrices_transposed(b_rows + 2 * chunk * 16 * FMHA_ROW, b);
            mma_16x16x16(sum[0], sum[1], a, b);
        }
#pragma unroll
        for (int n = 0; n < 2; ++n) {
            const int c = first_column + pair * 16 + n * 8 + (lane % 4) * 2;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                if (r0 + 8 * half < valid_queries && c < width) {
                    float* element = first_row + (r0 + 8 * half) * row_stride + c;
#if __CUDA_ARCH__ >= 900
                    atomicAdd(reinterpret_cast<float2*>(element), make_float2(sum[n][2 * half], sum[n][2 * half + 1]));
#else
                    atomicAdd(element, sum[n][2 * half]);
                    atomicAdd(element + 1, sum[n][2 * half + 1]);
#endif
                }
            }
        }
    }
}
#endif

} // namespace

/// D[((b·G + g)·H + h)·Mq + i] = Σ_c dO[b, i, g, h, c]·O[b, i, g, h, c] in float32, one warp per
/// row (dO in the input dtype, O in its own; strides in `shape`).
extern "C" __global__ void __launch_bounds__(FMHA_THREADS) fmha_flash_backward_delta(
    const void* out, const void* grad_out, float* delta, const int64_t* shape) {
    const int64_t queries = shape[1], groups = shape[3], heads = shape[4], value_dim = shape[6], dtype = shape[7];
    const int64_t* ds = shape + 32;
    const int64_t* os = shape + 36;
    const int64_t out_dtype = shape[40];
    const int64_t rows = shape[0] * groups * heads * queries;
    const int lane = threadIdx.x % 32;
    for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
         row += int64_t(gridDim.x) * blockDim.x / 32) {
        const int64_t i = row % queries, h = (row / queries) % heads;
        const int64_t g = (row / (queries * heads)) % groups, b = row / (queries * heads * groups);
        const int64_t d_base = b * ds[0] + i * ds[1] + g * ds[2] + h * ds[3], o_base = b * os[0] + i * os[1] + g * os[2] + h * os[3];
        float sum = 0.0f;
        for (int64_t c = lane; c < value_dim; c += 32) {
            sum += fmha::load_element(grad_out, d_base + c, dtype) * fmha::load_element(out, o_base + c, out_dtype);
        }
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
        if (lane == 0) delta[row] = sum;
    }
}

/// dQ of one tile of queries (the forward's work list: FMHA_WORK_WORDS words per blockIdx.x) for
/// heads blockIdx.y, then every gridDim.y-th. `lse`, `delta`: [B, G, H, Mq] float32. With `bias`
/// (input dtype, strides in `shape`) dS of every visible pair is written to `grad_bias`
/// ([B, G, H, Mq, Mkv], zero elsewhere: float32, or the input dtype when shape[41] is 1). `scale`: of the scores; `vector_loads`: every row
/// of q, k, v and dO starts 16-byte aligned.
extern "C" __global__ void __launch_bounds__(FMHA_THREADS, 2) fmha_flash_backward_dq(
    const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* grad_out, const float* lse, const float* delta,
    uint16_t* grad_q, void* grad_bias, const __grid_constant__ ShapeWords shape_words, const int64_t* mask, const int64_t* work, float scale,
    int32_t vector_loads, const uint16_t* bias, uint64_t seed, uint32_t offset, uint32_t threshold, float keep_scale,
    int32_t dropout) {
    extern __shared__ __align__(16) uint16_t shared_tiles[];
    // Q and dO once; K and V in FMHA_STAGES buffers each (tile t in buffer t % FMHA_STAGES).
    uint16_t* const query_tile = shared_tiles;
    uint16_t* const grad_tile = query_tile + FMHA_DQ_ROWS * FMHA_ROW;
    uint16_t* const key_tiles = grad_tile + FMHA_DQ_ROWS * FMHA_ROW;
    uint16_t* const value_tiles = key_tiles + FMHA_STAGES * FMHA_DQ_KEYS * FMHA_ROW;
    __shared__ float row_lse[FMHA_DQ_ROWS], row_delta[FMHA_DQ_ROWS];
    __shared__ int row_lo[FMHA_DQ_ROWS], row_hi[FMHA_DQ_ROWS];
    __shared__ int64_t tile[FMHA_WORK_WORDS];

    const int64_t* const shape = shape_words.words;
    const int64_t queries = shape[1], keys = shape[2], groups = shape[3], heads = shape[4];
    const int head_dim = int(shape[5]), value_dim = int(shape[6]);
    const int64_t *qs = shape + 9, *ks = shape + 13, *vs = shape + 17, *bs = shape + 21, *ds = shape + 32;
    const fmha::Lowering lowering{mask};
    const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32;
    if (thread < FMHA_WORK_WORDS) tile[thread] = work[FMHA_WORK_WORDS * blockIdx.x + thread];
    __syncthreads();
    const int64_t block = tile[0], tile_start = tile[1], tile_end = tile[2];
    const int key_lo = int(tile[3]), key_hi = int(tile[4]), inner_lo = int(tile[5]), inner_hi = int(tile[6]);
    for (int r = thread; r < FMHA_DQ_ROWS; r += FMHA_THREADS) {
        const fmha::KeyRange range = tile_start + r < tile_end ? lowering.row_keys(block, tile_start + r) : fmha::KeyRange{0, 0};
        row_lo[r] = int(range.lo);
        row_hi[r] = int(range.hi);
    }
    const int64_t* block_pages = lowering.pages(block);
    const int page_size = int(lowering.page_size());
    const float scale_log2 = scale * log2e;
    const fmha::DropoutMask keep{seed, offset, threshold};
    FMHA_EXTRAS_SWITCHES

    for (int64_t head_index = blockIdx.y; head_index < shape[0] * groups * heads; head_index += gridDim.y) {
        const int64_t h = head_index % heads, g = (head_index / heads) % groups, b = head_index / (heads * groups);
        const uint16_t* q_head = q + (b * qs[0] + g * qs[2] + h * qs[3]);
        const uint16_t* k_head = k + (b * ks[0] + g * ks[2] + h * ks[3]);
        const uint16_t* v_head = v + (b * vs[0] + g * vs[2] + h * vs[3]);
        const uint16_t* grad_head = grad_out + (b * ds[0] + g * ds[2] + h * ds[3]);
        const uint16_t* bias_head = has_bias ? bias + (b * bs[0] + g * bs[1] + h * bs[2]) : nullptr;
        __syncthreads();  // the previous head is done with every tile
        load_consecutive_rows<FMHA_DQ_ROWS>(query_tile, q_head + tile_start * qs[1], qs[1], int(tile_end - tile_start), head_dim, vector_loads);
        load_consecutive_rows<FMHA_DQ_ROWS>(grad_tile, grad_head + tile_start * ds[1], ds[1], int(tile_end - tile_start), value_dim,
                                            vector_loads);
        for (int r = thread; r < FMHA_DQ_ROWS; r += FMHA_THREADS) {
            const float value = tile_start + r < tile_end ? lse[head_index * queries + tile_start + r] : -FMHA_INFINITY;
            // A row that sees no key (LSE -inf) gets P = 0 from an LSE of +inf.
            row_lse[r] = value == -FMHA_INFINITY ? FMHA_INFINITY : value * log2e;
            row_delta[r] = tile_start + r < tile_end ? delta[head_index * queries + tile_start + r] : 0.0f;
        }
        auto key_pointer = [&](const uint16_t* head, int64_t row_stride, int start) {
            return [=](int r) -> const uint16_t* {
                return start + r < key_hi ? head + fmha::page_lookup(block_pages, page_size, start + r) * row_stride : nullptr;
            };
        };
        float grad_query[FMHA_HEAD_DIM / 8][4];
#pragma unroll
        for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) grad_query[n][0] = grad_query[n][1] = grad_query[n][2] = grad_query[n][3] = 0.0f;
        // K and V of the tile at `start` into buffer `stage` (two cp.async groups).
        auto load_keys = [&](int start, int stage) {
            uint16_t* const key_tile = key_tiles + stage * FMHA_DQ_KEYS * FMHA_ROW;
            uint16_t* const value_tile = value_tiles + stage * FMHA_DQ_KEYS * FMHA_ROW;
            if (page_size == 0) {
                load_consecutive_rows<FMHA_DQ_KEYS>(key_tile, k_head + start * ks[1], ks[1], key_hi - start, head_dim, vector_loads);
                load_consecutive_rows<FMHA_DQ_KEYS>(value_tile, v_head + start * vs[1], vs[1], key_hi - start, value_dim, vector_loads);
            } else {
                load_tile<FMHA_DQ_KEYS>(key_tile, key_pointer(k_head, ks[1], start), head_dim, vector_loads, q);
                load_tile<FMHA_DQ_KEYS>(value_tile, key_pointer(v_head, vs[1], start), value_dim, vector_loads, q);
            }
        };
        if (key_lo < key_hi) load_keys(key_lo, 0);
        const uint32_t query_rows = a_rows_of(query_tile, warp * 16), grad_rows = a_rows_of(grad_tile, warp * 16);
        constexpr uint32_t stage_bytes = 2 * FMHA_DQ_KEYS * FMHA_ROW;
        for (int key_start = key_lo, t = 0; key_start < key_hi; key_start += FMHA_DQ_KEYS, ++t) {
            const int stage = t % FMHA_STAGES;
            const bool next = key_start + FMHA_DQ_KEYS < key_hi;
#if FMHA_STAGES == 2
            // The next tile's copies go into the other buffer (every warp finished with it at the
            // end of the previous step) while this one is worked on.
            if (next) load_keys(key_start + FMHA_DQ_KEYS, 1 - stage);
            if (next) {
                asm volatile("cp.async.wait_group 2;" ::: "memory");
            } else {
                asm volatile("cp.async.wait_group 0;" ::: "memory");
            }
            __syncthreads();
#else
            wait_for_tiles();
#endif
            const uint32_t key_rows = b_rows_of(key_tiles) + stage * stage_bytes, value_rows = b_rows_of(value_tiles) + stage * stage_bytes;
            const uint32_t key_rows_transposed = b_rows_transposed_of(key_tiles, 0) + stage * stage_bytes;
            // The dropout decisions of this lane's elements (bit 4n + 2·half + e), drawn before the
            // products so that their registers are free while the scores are live.
            static_assert(FMHA_DQ_KEYS <= 64, "one bit per element of a lane");
            const uint32_t kept = has_dropout ? dropout_keep_bits<FMHA_DQ_KEYS / 8, true>(keep, uint32_t(head_index), tile_start + warp * 16,
                                                                                          key_start, key_hi, block_pages, page_size)
                                              : 0u;
            float score[FMHA_DQ_KEYS / 8][4], grad_probability[FMHA_DQ_KEYS / 8][4];
            multiply_transposed_pair(score, query_rows, key_rows, grad_probability, grad_rows, value_rows);
            // Key tiles inside every row's range (the tile's inner range) need no per-element mask.
            const bool per_element = key_start < inner_lo || key_start + FMHA_DQ_KEYS > inner_hi || has_bias || has_dropout;
            uint32_t grad_score[FMHA_DQ_KEYS / 16][4];
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int r = warp * 16 + lane / 4 + 8 * half;
                const int64_t i = tile_start + r;
                const float lse2 = row_lse[r], d = row_delta[r];
                const int lo = row_lo[r], hi = row_hi[r];
#pragma unroll
                for (int n = 0; n < FMHA_DQ_KEYS / 8; ++n) {
                    float values[2];
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int p = key_start + n * 8 + (lane % 4) * 2 + e;
                        float s2 = score[n][2 * half + e] * scale_log2;
                        float factor = 1.0f;
                        // (Selections, not branches: the masked and unmasked paths are both short.)
                        const bool visible = !per_element | ((p >= lo) & (p < hi));
                        if (has_bias && per_element && visible) s2 += log2e * input_to_float(bias_head[i * bs[3] + p * bs[4]]);
                        if (has_dropout) factor = (kept >> (4 * n + 2 * half + e)) & 1u ? keep_scale : 0.0f;
                        const float probability = exp2_approx(s2 - lse2);
                        const float ds = visible ? probability * (grad_probability[n][2 * half + e] * factor - d) : 0.0f;
                        if (has_bias && visible) {
                            const int64_t index = (head_index * queries + i) * keys + p;
                            if (shape[41]) {
                                static_cast<uint16_t*>(grad_bias)[index] = float_to_input(ds);
                            } else {
                                static_cast<float*>(grad_bias)[index] = ds;
                            }
                        }
                        values[e] = ds;
                    }
                    grad_score[n / 2][(n % 2) * 2 + half] = pack_pair(values[0], values[1]);
                }
            }
            multiply(grad_query, grad_score, key_rows_transposed);
            __syncthreads();  // every warp is done with this K and V
#if FMHA_STAGES == 1
            if (next) load_keys(key_start + FMHA_DQ_KEYS, 0);
#endif
        }
        asm volatile("cp.async.wait_group 0;" ::: "memory");  // (copies of a tile that saw no key)
        const int64_t row_step = groups * heads * head_dim;
        uint16_t* grad_head_out = grad_q + ((b * queries * groups + g) * heads + h) * head_dim;
        store_rows(grad_query, scale, [&](int r) -> uint16_t* {
            const int64_t i = tile_start + warp * 16 + r;
            return i < tile_end ? grad_head_out + i * row_step : nullptr;
        }, 0, head_dim);
    }
}

/// dK and dV of one tile of keys (the key work list: FMHA_KEY_WORK_WORDS words per blockIdx.x:
/// block, logical key start and end, and the queries that see them) for K/V grid heads
/// blockIdx.y, then every gridDim.y-th, and columns blockIdx.z·FMHA_PART ..< + FMHA_PART.
/// Arguments as for fmha_flash_backward_dq.
extern "C" __global__ void __launch_bounds__(FMHA_THREADS, 2) fmha_flash_backward_dkdv(
    const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* grad_out, const float* lse, const float* delta,
    uint16_t* grad_k, uint16_t* grad_v, float* grad_q_sum, const __grid_constant__ ShapeWords shape_words, const int64_t* mask,
    const int64_t* work, float scale,
    int32_t vector_loads, const uint16_t* bias, uint64_t seed, uint32_t offset, uint32_t threshold, float keep_scale,
    int32_t dropout) {
    extern __shared__ __align__(16) uint16_t shared_tiles[];
    // K and V once per head; Q and dO, and the queries' LSE, D and visible keys, in FMHA_STAGES
    // buffers each (step t in buffer t % FMHA_STAGES).
    uint16_t* const key_tile = shared_tiles;
    uint16_t* const value_tile = key_tile + FMHA_DKDV_KEYS * FMHA_ROW;
    uint16_t* const query_tiles = value_tile + FMHA_DKDV_KEYS * FMHA_ROW;
    uint16_t* const grad_tiles = query_tiles + FMHA_STAGES * FMHA_DKDV_QUERIES * FMHA_ROW;
    __shared__ __align__(8) float column_lse[FMHA_STAGES][FMHA_DKDV_QUERIES], column_delta[FMHA_STAGES][FMHA_DKDV_QUERIES];
    __shared__ __align__(8) int column_lo[FMHA_STAGES][FMHA_DKDV_QUERIES], column_hi[FMHA_STAGES][FMHA_DKDV_QUERIES];
    __shared__ int64_t tile[FMHA_KEY_WORK_WORDS];

    const int64_t* const shape = shape_words.words;
    const int64_t queries = shape[1], keys = shape[2], groups = shape[3], heads = shape[4];
    const int head_dim = int(shape[5]), value_dim = int(shape[6]);
    const int64_t *qs = shape + 9, *ks = shape + 13, *vs = shape + 17, *bs = shape + 21, *ds = shape + 32;
    const int64_t grid_b = shape[26], grid_g = shape[27], grid_h = shape[28];
    const int64_t share_b = shape[29], share_g = shape[30], share_h = shape[31];
    const fmha::Lowering lowering{mask};
    const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32;
    if (thread < FMHA_KEY_WORK_WORDS) tile[thread] = work[FMHA_KEY_WORK_WORDS * blockIdx.x + thread];
    __syncthreads();
    const int64_t block = tile[0];
    const int key_start = int(tile[1]), key_end = int(tile[2]);
    const int64_t query_start = tile[3], query_end = tile[4];
    const int64_t* block_pages = lowering.pages(block);
    const int page_size = int(lowering.page_size());
    const fmha::BlockBand band = lowering.band(block);
    const float scale_log2 = scale * log2e;
    const fmha::DropoutMask keep{seed, offset, threshold};
    FMHA_EXTRAS_SWITCHES
    const int first_column = int(blockIdx.z) * FMHA_PART;
    // The warp's keys (rows of its products): this lane's two rows.
    const int key_row[2] = {key_start + warp * 16 + lane / 4, key_start + warp * 16 + lane / 4 + 8};

    for (int64_t grid_head = blockIdx.y; grid_head < grid_b * grid_g * grid_h; grid_head += gridDim.y) {
        const int64_t gh = grid_head % grid_h, gg = (grid_head / grid_h) % grid_g, gb = grid_head / (grid_h * grid_g);
        const uint16_t* k_head = k + (gb * ks[0] + gg * ks[2] + gh * ks[3]);
        const uint16_t* v_head = v + (gb * vs[0] + gg * vs[2] + gh * vs[3]);
        __syncthreads();  // the previous head is done with every tile
        auto key_pointer = [&](const uint16_t* head, int64_t row_stride) {
            return [=](int r) -> const uint16_t* {
                return key_start + r < key_end ? head + fmha::page_lookup(block_pages, page_size, key_start + r) * row_stride : nullptr;
            };
        };
        load_tile<FMHA_DKDV_KEYS>(key_tile, key_pointer(k_head, ks[1]), head_dim, vector_loads, q);
        load_tile<FMHA_DKDV_KEYS>(value_tile, key_pointer(v_head, vs[1]), value_dim, vector_loads, q);
        float grad_key[FMHA_PART / 8][4], grad_value[FMHA_PART / 8][4];
#pragma unroll
        for (int n = 0; n < FMHA_PART / 8; ++n) {
            grad_key[n][0] = grad_key[n][1] = grad_key[n][2] = grad_key[n][3] = 0.0f;
            grad_value[n][0] = grad_value[n][1] = grad_value[n][2] = grad_value[n][3] = 0.0f;
        }
        const uint32_t key_rows = a_rows_of(key_tile, warp * 16), value_rows = a_rows_of(value_tile, warp * 16);
        // Steps: every query head sharing this K/V head (share), then the queries that see the
        // key tile, FMHA_DKDV_QUERIES at a time.
        // (32-bit counters: 64-bit divisions cost dozens of instructions each, per step.)
        const int steps_per_share = int((query_end - query_start + FMHA_DKDV_QUERIES - 1) / FMHA_DKDV_QUERIES);
        const int steps = int(share_b * share_g * share_h) * steps_per_share;
        // A step: its query head (b, g, h: the sharing heads in order) and first query, advanced
        // one step at a time (no divisions).
        struct Step {
            int b, g, h, first_query;  // (queries < 2^31: CUDAFlashBackward refuses more)
        };
        auto advance = [&](Step& step) {
            step.first_query += FMHA_DKDV_QUERIES;
            if (step.first_query < query_end) return;
            step.first_query = int(query_start);
            if (++step.h < gh + share_h) return;
            step.h = int(gh);
            if (++step.g < gg + share_g) return;
            step.g = int(gg);
            ++step.b;
        };
        // Step t's Q and dO rows into buffer `stage` (two cp.async groups).
        auto copy_step = [&](const Step& current, int stage) {
            const int64_t b = current.b, g = current.g, h = current.h, step = current.first_query;
            const int valid = int(min(int64_t(FMHA_DKDV_QUERIES), query_end - step));
            load_consecutive_rows<FMHA_DKDV_QUERIES>(query_tiles + stage * FMHA_DKDV_QUERIES * FMHA_ROW,
                                                     q + (b * qs[0] + step * qs[1] + g * qs[2] + h * qs[3]), qs[1], valid, head_dim, vector_loads);
            load_consecutive_rows<FMHA_DKDV_QUERIES>(grad_tiles + stage * FMHA_DKDV_QUERIES * FMHA_ROW,
                                                     grad_out + (b * ds[0] + step * ds[1] + g * ds[2] + h * ds[3]), ds[1], valid, value_dim,
                                                     vector_loads);
        };
        // Step `current`'s queries into buffer `stage` (thread r < FMHA_DKDV_QUERIES: query r):
        // its LSE and D by cp.async (in the step's last group; zero past the queries), its
        // visible keys (computed); returns whether every query this thread holds sees every key
        // of a full key tile.
        auto load_columns = [&](const Step& current, int stage) {
            bool sees_all = key_end - key_start == FMHA_DKDV_KEYS;
            const int r = thread;
            if (r < FMHA_DKDV_QUERIES) {
                const int64_t i = current.first_query + r;
                const bool valid = i < query_end;
                const int64_t row = ((current.b * groups + current.g) * heads + current.h) * queries + (valid ? i : 0);
                copy_4_bytes_async(shared_address(&column_lse[stage][r]), lse + row, valid);
                copy_4_bytes_async(shared_address(&column_delta[stage][r]), delta + row, valid);
                const fmha::KeyRange range = valid ? band.row_keys(i) : fmha::KeyRange{0, 0};
                column_lo[stage][r] = int(range.lo);
                column_hi[stage][r] = int(range.hi);
                sees_all = sees_all && range.lo <= key_start && range.hi >= key_end;
            }
            asm volatile("cp.async.commit_group;");
            return sees_all;
        };
        static_assert(FMHA_DKDV_QUERIES <= FMHA_THREADS, "one thread per query of a step");
        // Whether every query of the step (then of the next) sees every key: known once every
        // thread's are in (the barrier before the step's products).
        bool sees_all = true;
        Step current{int(gb), int(gg), int(gh), int(query_start)};
        if (steps > 0) {
            copy_step(current, 0);
            sees_all = load_columns(current, 0);
        }
        for (int t = 0; t < steps; ++t) {
            if (t > 0) __syncthreads();  // every warp is done with the previous step's buffers
            const int stage = t % FMHA_STAGES;
            Step following = current;
            advance(following);
            const int64_t b = current.b, g = current.g, h = current.h, step = current.first_query;
            const int64_t head_index = (b * groups + g) * heads + h;
            const uint16_t* bias_head = has_bias ? bias + (b * bs[0] + g * bs[1] + h * bs[2]) : nullptr;
            bool step_sees_all = sees_all;
#if FMHA_STAGES == 2
            // The next step's copies go into the other buffers (every warp is done with them: the
            // barrier above) while this one is worked on.
            if (t + 1 < steps) {
                copy_step(following, 1 - stage);
                sees_all = load_columns(following, 1 - stage);
                asm volatile("cp.async.wait_group 3;" ::: "memory");
            } else {
                asm volatile("cp.async.wait_group 0;" ::: "memory");
            }
#else
            if (t > 0) {
                step_sees_all = load_columns(current, 0);
                copy_step(current, 0);
            }
            asm volatile("cp.async.wait_group 0;" ::: "memory");
#endif
            const bool per_element = !__syncthreads_and(step_sees_all) || has_bias || has_dropout;
            const uint32_t stage_offset = stage * 2 * FMHA_DKDV_QUERIES * FMHA_ROW;
            const uint32_t query_rows = b_rows_of(query_tiles) + stage_offset, grad_rows = b_rows_of(grad_tiles) + stage_offset;
            const uint32_t query_rows_transposed = b_rows_transposed_of(query_tiles, first_column) + stage_offset;
            const uint32_t grad_rows_transposed = b_rows_transposed_of(grad_tiles, first_column) + stage_offset;
            const float* step_lse = column_lse[stage];
            const float* step_delta = column_delta[stage];
            const int* step_lo = column_lo[stage];
            const int* step_hi = column_hi[stage];
            // The dropout decisions of this lane's elements (bit 4n + e), drawn before the
            // products so that their registers are free while the scores are live.
            static_assert(FMHA_DKDV_QUERIES <= 64, "one bit per element of a lane");
            const uint32_t kept = has_dropout ? dropout_keep_bits<FMHA_DKDV_QUERIES / 8, false>(keep, uint32_t(head_index), step,
                                                                                                key_start + warp * 16, key_end, block_pages, page_size)
                                              : 0u;
            float score[FMHA_DKDV_QUERIES / 8][4], grad_probability[FMHA_DKDV_QUERIES / 8][4];
            multiply_transposed_pair(score, key_rows, query_rows, grad_probability, value_rows, grad_rows);
            uint32_t probability[FMHA_DKDV_QUERIES / 16][4], grad_score[FMHA_DKDV_QUERIES / 16][4];
#pragma unroll
            for (int n = 0; n < FMHA_DKDV_QUERIES / 8; ++n) {
                // This lane's two queries (columns c0, c0 + 1) of the 8-query tile n, by pairs.
                const int c0 = n * 8 + (lane % 4) * 2;
                // (LSE -inf: a query that sees no key; +inf gives it P = 0.)
                float2 lse_pair = *reinterpret_cast<const float2*>(step_lse + c0);
                lse_pair.x = lse_pair.x == -FMHA_INFINITY ? FMHA_INFINITY : lse_pair.x * log2e;
                lse_pair.y = lse_pair.y == -FMHA_INFINITY ? FMHA_INFINITY : lse_pair.y * log2e;
                const float2 delta_pair = *reinterpret_cast<const float2*>(step_delta + c0);
                const int2 lo_pair = *reinterpret_cast<const int2*>(step_lo + c0), hi_pair = *reinterpret_cast<const int2*>(step_hi + c0);
                float p_values[4], ds_values[4];
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int c = c0 + e % 2, p = key_row[e / 2];
                    const int64_t i = step + c;
                    float s2 = score[n][e] * scale_log2;
                    float factor = 1.0f;
                    // (Selections, not branches: the masked and unmasked paths are both short.)
                    const bool visible = !per_element || (p < key_end && p >= (e % 2 ? lo_pair.y : lo_pair.x) && p < (e % 2 ? hi_pair.y : hi_pair.x));
                    // (`per_element` is true whenever there is a bias; it stays in the test because
                    // ptxas generates other code without it, which has not been timed.)
                    if (has_bias && per_element && visible) s2 += log2e * input_to_float(bias_head[i * bs[3] + p * bs[4]]);
                    if (has_dropout) factor = (kept >> (4 * n + e)) & 1u ? keep_scale : 0.0f;
                    const float probability_value = visible ? exp2_approx(s2 - (e % 2 ? lse_pair.y : lse_pair.x)) : 0.0f;
                    p_values[e] = probability_value * factor;
                    ds_values[e] = visible ? probability_value * (grad_probability[n][e] * factor - (e % 2 ? delta_pair.y : delta_pair.x)) : 0.0f;
                }
                probability[n / 2][(n % 2) * 2] = pack_pair(p_values[0], p_values[1]);
                probability[n / 2][(n % 2) * 2 + 1] = pack_pair(p_values[2], p_values[3]);
                grad_score[n / 2][(n % 2) * 2] = pack_pair(ds_values[0], ds_values[1]);
                grad_score[n / 2][(n % 2) * 2 + 1] = pack_pair(ds_values[2], ds_values[3]);
            }
            multiply(grad_value, probability, grad_rows_transposed);
            multiply(grad_key, grad_score, query_rows_transposed);
#if FMHA_EXTRAS
            if (grad_q_sum != nullptr) {
                // (The step's dSᵀ goes after the dO tiles: keys × queries, FMHA_DS_ROW values a row.)
                add_query_gradient(grad_score, grad_tiles + FMHA_STAGES * FMHA_DKDV_QUERIES * FMHA_ROW, key_tile, first_column,
                                   grad_q_sum + ((b * queries + step) * groups + g) * heads * head_dim + h * head_dim,
                                   groups * heads * head_dim, int(min(int64_t(FMHA_DKDV_QUERIES), query_end - step)), head_dim);
            }
#endif
            current = following;
        }
        asm volatile("cp.async.wait_group 0;" ::: "memory");  // (copies of a tile no query sees)
        auto gradient_row = [&](uint16_t* base, int width) {
            return [=](int r) -> uint16_t* {
                const int p = key_start + warp * 16 + r;
                if (p >= key_end) return nullptr;
                const int64_t j = fmha::page_lookup(block_pages, page_size, p);
                return base + (((gb * keys + j) * grid_g + gg) * grid_h + gh) * width;
            };
        };
        store_rows(grad_key, scale, gradient_row(grad_k, head_dim), first_column, head_dim);
        store_rows(grad_value, 1.0f, gradient_row(grad_v, value_dim), first_column, value_dim);
    }
}

/// dQ in the input dtype from the float32 sums of the dK/dV pass: out[i] = sum[i]·scale, i < count.
extern "C" __global__ void __launch_bounds__(FMHA_THREADS) fmha_flash_backward_dq_from_sum(const float* sum, uint16_t* out, int64_t count,
                                                                                           float scale) {
    for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < count; index += int64_t(gridDim.x) * blockDim.x) {
        out[index] = float_to_input(sum[index] * scale);
    }
}

/// The bias gradient in the input dtype: out (contiguous over `dims` with the summed dimensions of
/// size 1) = the sum of `full` (contiguous [dims[0], ..., dims[4]] float32) over every dimension d
/// with summed[d] != 0, in a fixed order. `dims` holds the five sizes, then the five flags.
extern "C" __global__ void __launch_bounds__(FMHA_THREADS) fmha_flash_backward_bias_sum(
    const float* full, uint16_t* out, const int64_t* dims) {
    int64_t out_count = 1, sum_count = 1;
    for (int d = 0; d < 5; ++d) {
        if (dims[5 + d]) sum_count *= dims[d]; else out_count *= dims[d];
    }
    for (int64_t index = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; index < out_count; index += int64_t(gridDim.x) * blockDim.x) {
        float total = 0.0f;
        for (int64_t s = 0; s < sum_count; ++s) {
            // The coordinates: kept dimensions from `index`, summed ones from `s`, both row-major.
            int64_t kept = index, summed = s, offset = 0, stride = 1;
            for (int d = 4; d >= 0; --d) {
                int64_t coordinate;
                if (dims[5 + d]) { coordinate = summed % dims[d]; summed /= dims[d]; }
                else { coordinate = kept % dims[d]; kept /= dims[d]; }
                offset += coordinate * stride;
                stride *= dims[d];
            }
            total += full[offset];
        }
        out[index] = float_to_input(total);
    }
}
