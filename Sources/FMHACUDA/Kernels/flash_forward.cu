// The tensor-core forward (FlashAttention-2 scheme): one thread block per (tile of FMHA_BLOCK_M
// queries of one mask block, head); each warp owns FMHA_WARP_TILES tiles of 16 queries, whose Q
// fragments stay in registers (FMHA_Q_SHARED 0) or are read from a Q tile in shared memory by
// ldmatrix for each product (FMHA_Q_SHARED 1: fewer registers for more rows per warp). K/V tiles
// of FMHA_BLOCK_N keys go through shared memory by cp.async with one buffer each: V of tile t
// lands while S = Q·Kᵀ of tile t is computed, K of tile t + 1 while O += P·V of tile t is. Both
// products are mma.sync m16n8k16 with float32 accumulation, B fragments by ldmatrix; the softmax
// is online, in registers, in base 2 with the scale folded in.
// Every bias without a tensor goes through the mask lowering (prelude.cu, DeviceLowering.swift):
// only the key range some query of the tile sees is visited (the work list gives it per tile), and
// keys outside a query's own range are masked per element (key tiles inside every row's range skip
// the masking).
// Needs prelude.cu and the defines FMHA_HEAD_DIM (a multiple of 16, at most 256: the width of the
// Q/K and V tiles, at least K and Kv; columns past them are zero), FMHA_DTYPE (1: float16,
// 2: bfloat16), FMHA_WARPS, FMHA_WARP_TILES, FMHA_BLOCK_N (a multiple of 16), FMHA_Q_SHARED and
// FMHA_MIN_BLOCKS (blocks per SM promised to ptxas): the tile shape (CUDAFlashForward.TileShape);
// and FMHA_EXTRAS: 1 for the variant that also adds a tensor bias and applies dropout (runtime
// switches; the plain variant, 0, ignores both arguments and keeps their registers free).
// FMHA_STAGES 2 (optional, default 1; Q in shared memory, no extras): two buffers each for K and V
// whose fills and reads are tracked by mbarriers instead of block-wide barriers, so the copies of
// the next tiles go while the warps still work on the current ones (see the loop below;
// scripts/two_stage_protocol.py simulates its barriers).
// Shared memory is dynamic: (2·FMHA_STAGES·FMHA_BLOCK_N + FMHA_Q_SHARED·FMHA_BLOCK_M)·FMHA_ROW 16-bit
// values.

#ifndef FMHA_STAGES
#define FMHA_STAGES 1
#endif
#define FMHA_THREADS (FMHA_WARPS * 32)
#define FMHA_BLOCK_M (FMHA_WARPS * FMHA_WARP_TILES * 16)
/// Int64 words per tile of the work list (DeviceLowering.workList).
#define FMHA_WORK_WORDS 7
#define FMHA_ROW (FMHA_HEAD_DIM + 8)
#define FMHA_ROWS (2 * FMHA_WARP_TILES)

static_assert(FMHA_HEAD_DIM % 16 == 0 && FMHA_HEAD_DIM <= 256, "FMHA_HEAD_DIM: a multiple of 16, at most 256");
static_assert(FMHA_BLOCK_N % 16 == 0, "FMHA_BLOCK_N: a multiple of 16");
#if FMHA_STAGES != 1 && (FMHA_STAGES != 2 || !FMHA_Q_SHARED || FMHA_EXTRAS)
#error "FMHA_STAGES: 1, or 2 with Q in shared memory and no extras"
#endif

/// `shape` as for fmha_reference_forward (K, Kv ≤ FMHA_HEAD_DIM, multiples of 8 when
/// `vector_loads`, even otherwise), `mask` the mask lowering (prelude.cu). `vector_loads`: every row
/// of q, k and v starts 16-byte aligned (rows move 8 elements at a time). `work`: per blockIdx.x,
/// FMHA_WORK_WORDS words describing its tile (block, first and end query, key range, inner range). Heads (b, g, h) are blockIdx.y, then every gridDim.y-th. Writes
/// out[((b·Mq + i)·G + g)·H + h][0 ..< Kv] in `out_dtype` and the natural-log LSE at
/// [((b·G + g)·H + h)·Mq + i] (-inf for a row that sees no key; its output is 0).
/// With FMHA_EXTRAS: `bias` (input dtype, strides in `shape`; null for none) is added to the scaled
/// scores of the keys the mask lets through, and with `dropout` each probability is kept (times
/// `keep_scale`) or zeroed by the Philox mask of (`seed`, `offset`, `threshold`) on (head, query,
/// K/V row); the row sums and the LSE stay those before dropout.
extern "C" __global__ void __launch_bounds__(FMHA_THREADS, FMHA_MIN_BLOCKS) fmha_flash_forward(
    const uint16_t* q, const uint16_t* k, const uint16_t* v, void* out, float* lse, const int64_t* shape,
    const int64_t* mask, const int64_t* work, float scale_log2, int64_t out_dtype, int32_t vector_loads,
    const uint16_t* bias, uint64_t seed, uint32_t offset, uint32_t threshold, float keep_scale, int32_t dropout) {
    extern __shared__ __align__(16) uint16_t shared_tiles[];
    uint16_t* const key_tile = shared_tiles;
    uint16_t* const value_tile = shared_tiles + FMHA_STAGES * FMHA_BLOCK_N * FMHA_ROW;

    const int64_t batch = shape[0], groups = shape[3], heads = shape[4];
    const int head_dim = int(shape[5]), value_dim = int(shape[6]);
    const int64_t* qs = shape + 9;
    const int64_t* ks = shape + 13;
    const int64_t* vs = shape + 17;
    const fmha::Lowering lowering{mask};
    const int page_size = int(lowering.page_size());

    const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32;
    // This block's tile (FMHACore's MaskLowering.Tile): its mask block, queries [tile_start,
    // tile[2]), the logical keys some row sees [tile_lo, tile[4]) and those every row sees
    // [tile[5], tile[6]) (key tiles inside skip the per-element mask). The query end, the key end
    // and the inner range are read from this shared copy where they are used: held in registers
    // through the key loop, they made the 4-warp shapes at K = 112 and 128 spill (ptxas is at its
    // 255-register limit there).
    __shared__ int64_t tile[FMHA_WORK_WORDS];
    if (thread < FMHA_WORK_WORDS) tile[thread] = work[FMHA_WORK_WORDS * blockIdx.x + thread];
    __syncthreads();
    const int64_t block = tile[0], tile_start = tile[1];
    const int tile_lo = int(tile[3]);
    auto tile_hi = [&] { return int(tile[4]); };

    // This thread's rows of the accumulator tiles: row r is query row_of(r) (tile r / 2, upper or
    // lower 8 rows by r % 2), its values are elements 2·(r % 2) and 2·(r % 2) + 1 of each 16×8 tile.
    auto row_of = [&](int r) { return tile_start + (warp * FMHA_WARP_TILES + r / 2) * 16 + lane / 4 + (r % 2) * 8; };
    // Every row's visible logical keys, for the key tiles that need masking (visible after the key
    // loop's first barrier); rows past the tile's end see none.
    __shared__ int row_ranges[2 * FMHA_BLOCK_M];
    for (int r = thread; r < FMHA_BLOCK_M; r += FMHA_THREADS) {
        const fmha::KeyRange keys = tile_start + r < tile[2] ? lowering.row_keys(block, tile_start + r) : fmha::KeyRange{0, 0};
        row_ranges[2 * r] = int(keys.lo);
        row_ranges[2 * r + 1] = int(keys.hi);
    }

    // Per head only pointers, row strides and 32-bit key positions stay live through the key loop;
    // the epilogue re-reads the shape.
    const int64_t* block_pages = lowering.pages(block);
    const int64_t head_count = batch * groups * heads;
    for (int64_t head_index = blockIdx.y; head_index < head_count; head_index += gridDim.y) {
        const int64_t h = head_index % heads, g = (head_index / heads) % groups, b = head_index / (heads * groups);
#if FMHA_STAGES == 2
        // mbarriers: Q landed; per stage, K and V landed (full) and read by every thread (empty).
        // Set up afresh per head, once every thread is done with the previous head's tiles.
        __shared__ __align__(8) uint64_t pipeline_barriers[9];
        const uint32_t query_full = shared_address(&pipeline_barriers[0]);
        auto key_full = [&](int stage) { return query_full + 8 * (1 + stage); };
        auto value_full = [&](int stage) { return query_full + 8 * (3 + stage); };
        auto key_empty = [&](int stage) { return query_full + 8 * (5 + stage); };
        auto value_empty = [&](int stage) { return query_full + 8 * (7 + stage); };
        __syncthreads();
        if (thread == 0) {
            for (int i = 0; i < 9; ++i) barrier_init(query_full + 8 * i, FMHA_THREADS);
        }
        __syncthreads();
#endif
        const uint16_t* k_head = k + (b * ks[0] + g * ks[2] + h * ks[3]);
        const uint16_t* v_head = v + (b * vs[0] + g * vs[2] + h * vs[3]);
        const int64_t k_row_stride = ks[1], v_row_stride = vs[1];
#if FMHA_EXTRAS
        const int64_t* bs = shape + 21;
        const uint16_t* bias_head = bias == nullptr ? bias : bias + (b * bs[0] + g * bs[1] + h * bs[2]);
        const int64_t bias_row_stride = bs[3], bias_column_stride = bs[4];
        const fmha::DropoutMask keep{seed, offset, threshold};
#endif
        // The K/V row of logical key p of the block (p < tile[4]): consecutive unless paged.
        auto key_row = [&](int p) { return fmha::page_lookup(block_pages, page_size, p); };

        // Rows of logical keys start + r of `source` into `tile`, columns < `width` (the rest and
        // rows at or past tile[4] are zero: NaN in keys no query sees cannot reach the products),
        // as 16-byte cp.async copies when rows are aligned, else element by element; one group.
        auto load_rows = [&](uint16_t* tile, const uint16_t* source, int64_t row_stride, int width, int start) {
            const int rows = min(FMHA_BLOCK_N, tile_hi() - start);
            const uint32_t tile_address = shared_address(tile);
            // Row r's first element (r < rows).
            auto row_address = [&](int r) { return source + key_row(start + r) * row_stride; };
            constexpr int chunks = FMHA_HEAD_DIM / 8, copies = FMHA_BLOCK_N * chunks;
            if (vector_loads && page_size == 0) {
                // Consecutive rows, each copied by lanes_per_row threads (8 columns each; those
                // past the width idle): a thread's copies sit rows_per_pass rows apart at one
                // column, so one pointer walks them.
                constexpr int lanes_per_row = chunks <= 2 ? 2 : chunks <= 4 ? 4 : chunks <= 8 ? 8 : chunks <= 16 ? 16 : 32;
                constexpr int rows_per_pass = FMHA_THREADS / lanes_per_row;
                const int r0 = thread / lanes_per_row, c = (thread % lanes_per_row) * 8;
                if (lanes_per_row == chunks || c < FMHA_HEAD_DIM) {
                    const uint16_t* element = source + int64_t(start + r0) * row_stride + c;
                    // (By 4 with two stages: by 8 it spills at K = 224.)
#pragma unroll (FMHA_STAGES == 2 ? 4 : 8)
                    for (int pass = 0; pass < (FMHA_BLOCK_N + rows_per_pass - 1) / rows_per_pass; ++pass) {
                        const int r = r0 + pass * rows_per_pass;
                        if (r < FMHA_BLOCK_N) {
                            const bool valid = r < rows && c < width;
                            copy_16_bytes_async(tile_address + 2 * (r * FMHA_ROW + c), valid ? element : source, valid);
                        }
                        element += rows_per_pass * row_stride;
                    }
                }
                asm volatile("cp.async.commit_group;");
                return;
            }
            if (vector_loads) {
// (Not unrolled: hoisting every copy's address spills.)
#pragma unroll 1
                for (int pass = 0; pass < (copies + FMHA_THREADS - 1) / FMHA_THREADS; ++pass) {
                    const int index = thread + pass * FMHA_THREADS;
                    if (copies % FMHA_THREADS != 0 && index >= copies) break;
                    const int r = index / chunks, c = (index % chunks) * 8;
                    const bool valid = r < rows && c < width;
                    copy_16_bytes_async(tile_address + 2 * (r * FMHA_ROW + c), valid ? row_address(r) + c : source, valid);
                }
            } else {
                for (int index = thread; index < FMHA_BLOCK_N * FMHA_HEAD_DIM; index += FMHA_THREADS) {
                    const int r = index / FMHA_HEAD_DIM, c = index % FMHA_HEAD_DIM;
                    tile[r * FMHA_ROW + c] = r < rows && c < width ? row_address(r)[c] : uint16_t(0);
                }
            }
            asm volatile("cp.async.commit_group;");
        };
#if FMHA_STAGES == 2
        // This thread's arrival on `barrier` once the tile rows it just wrote are in place (cp.async
        // copies when rows are aligned, plain stores otherwise).
        auto signal_copies = [&](uint32_t barrier) {
            if (vector_loads) {
                barrier_arrive_on_copies(barrier);
            } else {
                barrier_arrive(barrier);
            }
        };
#endif
        const uint16_t* q_head = q + (b * qs[0] + g * qs[2] + h * qs[3]);
#if FMHA_Q_SHARED
        // Q tile → shared memory (zero past the tile's rows and past K), in the first K's group.
        uint16_t* const query_tile = value_tile + FMHA_STAGES * FMHA_BLOCK_N * FMHA_ROW;
        if (tile_lo < tile_hi()) {
            const int step = vector_loads ? 8 : 1;
            for (int index = thread; index < FMHA_BLOCK_M * FMHA_HEAD_DIM / step; index += FMHA_THREADS) {
                const int r = index / (FMHA_HEAD_DIM / step), c = (index % (FMHA_HEAD_DIM / step)) * step;
                const bool valid = tile_start + r < tile[2] && c < head_dim;
                const uint16_t* element = valid ? q_head + (tile_start + r) * qs[1] + c : q_head;
                if (vector_loads) {
                    copy_16_bytes_async(shared_address(query_tile + r * FMHA_ROW + c), element, valid);
                } else {
                    query_tile[r * FMHA_ROW + c] = valid ? *element : uint16_t(0);
                }
            }
#if FMHA_STAGES == 2
            signal_copies(query_full);
#endif
        }
        // The A fragments of 16-column chunk `chunk` of this warp's tile m (ldmatrix: matrices of
        // rows 0-7 and 8-15 at columns 0-7, then at 8-15).
        const uint32_t query_rows = shared_address(query_tile + (warp * FMHA_WARP_TILES * 16 + lane % 16) * FMHA_ROW + (lane / 16) * 8);
        auto query_fragment_of = [&](int m, int chunk, uint32_t (&fragment)[4]) {
            load_matrices(query_rows + 2 * (m * 16 * FMHA_ROW + chunk * 16), fragment);
        };
#else
        // Q → A fragments of this warp's rows, straight from global memory (zero past the tile's
        // rows and past K).
        uint32_t query_fragment[FMHA_WARP_TILES][FMHA_HEAD_DIM / 16][4];
#pragma unroll
        for (int r = 0; r < FMHA_ROWS; ++r) {
            const int64_t i = row_of(r);
#pragma unroll
            for (int chunk = 0; chunk < FMHA_HEAD_DIM / 16; ++chunk) {
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    const int c = chunk * 16 + half * 8 + (lane % 4) * 2;
                    uint32_t pair = 0;
                    if (i < tile[2] && c < head_dim) {
                        const uint16_t* element = q_head + i * qs[1] + c;
                        pair = vector_loads ? *reinterpret_cast<const uint32_t*>(element)
                                            : uint32_t(element[0]) | (uint32_t(element[1]) << 16);
                    }
                    query_fragment[r / 2][chunk][half * 2 + r % 2] = pair;
                }
            }
        }
        auto query_fragment_of = [&](int m, int chunk, uint32_t (&fragment)[4]) {
#pragma unroll
            for (int e = 0; e < 4; ++e) fragment[e] = query_fragment[m][chunk][e];
        };
#endif
#if FMHA_STAGES == 1
        if (tile_lo < tile_hi()) load_rows(key_tile, k_head, k_row_stride, head_dim, tile_lo);
#endif

        float accumulator[FMHA_WARP_TILES][FMHA_HEAD_DIM / 8][4];
#pragma unroll
        for (int m = 0; m < FMHA_WARP_TILES; ++m) {
#pragma unroll
            for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) accumulator[m][n][0] = accumulator[m][n][1] = accumulator[m][n][2] = accumulator[m][n][3] = 0.0f;
        }
        float maximum[FMHA_ROWS], sum[FMHA_ROWS];
#pragma unroll
        for (int r = 0; r < FMHA_ROWS; ++r) {
            maximum[r] = -FMHA_INFINITY;
            sum[r] = 0.0f;
        }

        // This lane's ldmatrix rows: of K (keys 0-7 at columns 0-7 and 8-15, then keys 8-15) and of
        // V (keys 0-15 at columns 0-7, then at 8-15).
        const uint32_t key_rows = shared_address(key_tile + ((lane / 16) * 8 + lane % 8) * FMHA_ROW + ((lane / 8) % 2) * 8);
        const uint32_t value_rows = shared_address(value_tile + (lane % 16) * FMHA_ROW + (lane / 16) * 8);
        // S = Q·Kᵀ for the K tile whose ldmatrix rows (this lane's) start at `key_rows`.
        auto compute_scores = [&](uint32_t key_rows, float (&score)[FMHA_WARP_TILES][FMHA_BLOCK_N / 8][4]) {
#pragma unroll
            for (int m = 0; m < FMHA_WARP_TILES; ++m) {
#pragma unroll
                for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) score[m][n][0] = score[m][n][1] = score[m][n][2] = score[m][n][3] = 0.0f;
            }
            // Per 16 columns: this warp's A fragments, then per 16 keys the B fragments of two
            // 8-key tiles in one ldmatrix (keys 0-7 at columns 0-7 and 8-15, then keys 8-15).
#pragma unroll
            for (int chunk = 0; chunk < FMHA_HEAD_DIM / 16; ++chunk) {
                uint32_t a[FMHA_WARP_TILES][4];
#pragma unroll
                for (int m = 0; m < FMHA_WARP_TILES; ++m) query_fragment_of(m, chunk, a[m]);
#pragma unroll
                for (int n = 0; n < FMHA_BLOCK_N / 8; n += 2) {
                    uint32_t fragments[4];
                    load_matrices(key_rows + 2 * (n * 8 * FMHA_ROW + chunk * 16), fragments);
#pragma unroll
                    for (int m = 0; m < FMHA_WARP_TILES; ++m) {
                        mma_16x16x16(score[m][n], score[m][n + 1], a[m], fragments);
                    }
                }
            }
        };
        // The online softmax of the tile of keys from key_tile_start: scale, mask, new maxima (the
        // accumulators and sums rescaled), P = exp2(S - max) into `probability`.
        auto take_softmax = [&](int key_tile_start, float (&score)[FMHA_WARP_TILES][FMHA_BLOCK_N / 8][4],
                                uint32_t (&probability)[FMHA_WARP_TILES][FMHA_BLOCK_N / 16][4]) {
            // Scale to base 2 (folded into the exponent's FFMA below when the scale is positive and
            // nothing is added to the scores), mask (only when some row's range ends inside the
            // tile), row maxima (a row's values sit in the four lanes of a quad).
#if FMHA_EXTRAS
            const float factor = 1.0f;
#else
            const float factor = scale_log2 > 0.0f ? scale_log2 : 1.0f;
#endif
            if (factor == 1.0f) {
#pragma unroll
                for (int m = 0; m < FMHA_WARP_TILES; ++m) {
#pragma unroll
                    for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
#pragma unroll
                        for (int e = 0; e < 4; ++e) score[m][n][e] *= scale_log2;
                    }
                }
            }
            bool per_element = key_tile_start < int(tile[5]) || key_tile_start + FMHA_BLOCK_N > int(tile[6]);
#if FMHA_EXTRAS
            per_element = per_element || bias_head != nullptr;
#endif
            if (per_element) {
#pragma unroll
                for (int r = 0; r < FMHA_ROWS; ++r) {
                    const int local = int(row_of(r) - tile_start), lo = row_ranges[2 * local], hi = row_ranges[2 * local + 1];
#if FMHA_EXTRAS
                    const uint16_t* bias_row = bias_head + (bias_head == nullptr ? 0 : row_of(r) * bias_row_stride);
#endif
#pragma unroll
                    for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int p = key_tile_start + n * 8 + (lane % 4) * 2 + e;
                            float& value = score[r / 2][n][(r % 2) * 2 + e];
                            if (p < lo || p >= hi) {
                                value = -FMHA_INFINITY;
                            }
#if FMHA_EXTRAS
                            else if (bias_head != nullptr) {
                                value += 1.4426950408889634f * input_to_float(bias_row[p * bias_column_stride]);
                            }
#endif
                        }
                    }
                }
            }
            float tile_maximum[FMHA_ROWS];
#pragma unroll
            for (int r = 0; r < FMHA_ROWS; ++r) {
                tile_maximum[r] = -FMHA_INFINITY;
#pragma unroll
                for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
                    tile_maximum[r] = fmaxf(tile_maximum[r], fmaxf(score[r / 2][n][(r % 2) * 2], score[r / 2][n][(r % 2) * 2 + 1]));
                }
            }
            float base[FMHA_ROWS], rescale[FMHA_ROWS];
            bool raised = false;
#pragma unroll
            for (int r = 0; r < FMHA_ROWS; ++r) {
                tile_maximum[r] = fmaxf(tile_maximum[r], __shfl_xor_sync(0xffffffffu, tile_maximum[r], 1));
                tile_maximum[r] = fmaxf(tile_maximum[r], __shfl_xor_sync(0xffffffffu, tile_maximum[r], 2));
                const float new_maximum = fmaxf(maximum[r], tile_maximum[r] * factor);
                // A row that has seen no key yet keeps maximum -inf; subtract 0 instead so that
                // exp2 gives 0, not NaN.
                base[r] = new_maximum == -FMHA_INFINITY ? 0.0f : new_maximum;
                rescale[r] = exp2_approx(maximum[r] - base[r]);
                raised = raised || new_maximum != maximum[r];
                maximum[r] = new_maximum;
                sum[r] *= rescale[r];
            }
            // The accumulators rescaled, unless no maximum of the warp's rows rose (then every
            // factor is 1: most tiles once the maxima settle).
            if (__any_sync(0xffffffffu, raised)) {
#pragma unroll
                for (int m = 0; m < FMHA_WARP_TILES; ++m) {
#pragma unroll
                    for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) {
                        accumulator[m][n][0] *= rescale[2 * m];
                        accumulator[m][n][1] *= rescale[2 * m];
                        accumulator[m][n][2] *= rescale[2 * m + 1];
                        accumulator[m][n][3] *= rescale[2 * m + 1];
                    }
                }
            }
#if FMHA_EXTRAS
            // The dropout decisions of this lane's elements of tile m: 8-column tile n's element e
            // is bit 4·(n % keep_tiles) + e of kept[m][n / keep_tiles] (64 keys a word).
            constexpr int keep_tiles = FMHA_BLOCK_N / 8 < 8 ? FMHA_BLOCK_N / 8 : 8;
            uint32_t kept[FMHA_WARP_TILES][FMHA_BLOCK_N / 8 / keep_tiles];
#pragma unroll
            for (int m = 0; m < FMHA_WARP_TILES; ++m) {
#pragma unroll
                for (int w = 0; w < FMHA_BLOCK_N / 8 / keep_tiles; ++w) {
                    kept[m][w] = dropout ? dropout_keep_bits<keep_tiles, true>(keep, uint32_t(head_index), row_of(2 * m) - lane / 4,
                                                                               key_tile_start + w * 8 * keep_tiles, tile_hi(), block_pages, page_size)
                                         : 0u;
                }
            }
#endif
            // P = exp2(S - max), summed in float32 and rounded to the input type for the product.
#pragma unroll
            for (int m = 0; m < FMHA_WARP_TILES; ++m) {
#pragma unroll
                for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
                    float p0 = exp2_approx(fmaf(score[m][n][0], factor, -base[2 * m]));
                    float p1 = exp2_approx(fmaf(score[m][n][1], factor, -base[2 * m]));
                    float p2 = exp2_approx(fmaf(score[m][n][2], factor, -base[2 * m + 1]));
                    float p3 = exp2_approx(fmaf(score[m][n][3], factor, -base[2 * m + 1]));
                    sum[2 * m] += p0 + p1;
                    sum[2 * m + 1] += p2 + p3;
#if FMHA_EXTRAS
                    if (dropout) {
                        const uint32_t bits = kept[m][n / keep_tiles] >> (4 * (n % keep_tiles));
                        p0 *= bits & 1u ? keep_scale : 0.0f;
                        p1 *= bits & 2u ? keep_scale : 0.0f;
                        p2 *= bits & 4u ? keep_scale : 0.0f;
                        p3 *= bits & 8u ? keep_scale : 0.0f;
                    }
#endif
                    probability[m][n / 2][(n % 2) * 2] = pack_pair(p0, p1);
                    probability[m][n / 2][(n % 2) * 2 + 1] = pack_pair(p2, p3);
                }
            }
        };
        // O += P·V for the V tile whose ldmatrix rows (this lane's) start at `value_rows`.
        auto accumulate_values = [&](uint32_t value_rows, const uint32_t (&probability)[FMHA_WARP_TILES][FMHA_BLOCK_N / 16][4]) {
            // The B fragments of two 8-column tiles of 16 keys in one transposed ldmatrix
            // (keys 0-7 and 8-15 of columns n·8 ..< n·8 + 8, then of the next 8 columns).
#pragma unroll
            for (int chunk = 0; chunk < FMHA_BLOCK_N / 16; ++chunk) {
#pragma unroll
                for (int n = 0; n < FMHA_HEAD_DIM / 8; n += 2) {
                    uint32_t fragments[4];
                    load_matrices_transposed(value_rows + 2 * (chunk * 16 * FMHA_ROW + n * 8), fragments);
#pragma unroll
                    for (int m = 0; m < FMHA_WARP_TILES; ++m) {
                        mma_16x16x16(accumulator[m][n], accumulator[m][n + 1], probability[m][chunk], fragments);
                    }
                }
            }
        };
#if FMHA_STAGES == 2
        // Two stages: tile t lives in buffer t % 2 of K and of V. mbarriers say when a buffer has
        // landed (full) and when every thread is done with it (empty), so that the tile after next
        // may be copied in; no block-wide barrier inside the loop.
        {
            const int tiles = tile_lo < tile_hi() ? (tile_hi() - tile_lo + FMHA_BLOCK_N - 1) / FMHA_BLOCK_N : 0;
            constexpr uint32_t stage_bytes = 2 * FMHA_BLOCK_N * FMHA_ROW;
            auto fill_keys = [&](int t) {
                load_rows(key_tile + (t % 2) * FMHA_BLOCK_N * FMHA_ROW, k_head, k_row_stride, head_dim, tile_lo + t * FMHA_BLOCK_N);
                signal_copies(key_full(t % 2));
            };
            auto fill_values = [&](int t) {
                load_rows(value_tile + (t % 2) * FMHA_BLOCK_N * FMHA_ROW, v_head, v_row_stride, value_dim, tile_lo + t * FMHA_BLOCK_N);
                signal_copies(value_full(t % 2));
            };
            if (tiles > 0) {
                fill_keys(0);
                fill_values(0);
                if (tiles > 1) {
                    fill_keys(1);
                    fill_values(1);
                }
                barrier_wait(query_full, 0);
                float score[FMHA_WARP_TILES][FMHA_BLOCK_N / 8][4];
                uint32_t probability[FMHA_WARP_TILES][FMHA_BLOCK_N / 16][4];
                // Step t: P·V of tile t (none in step -1), then S and the softmax of tile t + 1.
                for (int t = -1; t < tiles; ++t) {
                    if (t >= 0) {
                        barrier_wait(value_full(t % 2), (t / 2) & 1);
                        accumulate_values(value_rows + (t % 2) * stage_bytes, probability);
                        barrier_arrive(value_empty(t % 2));
                    }
                    if (t + 1 < tiles) {
                        barrier_wait(key_full((t + 1) % 2), ((t + 1) / 2) & 1);
                        compute_scores(key_rows + ((t + 1) % 2) * stage_bytes, score);
                        barrier_arrive(key_empty((t + 1) % 2));
                        take_softmax(tile_lo + (t + 1) * FMHA_BLOCK_N, score, probability);
                    }
                    // Refills: V of tile t + 2 into tile t's buffer, K of tile t + 3 into tile t + 1's,
                    // once every thread is done with them (tiles 0 and 1 were filled before the loop).
                    if (t >= 0 && t + 2 < tiles) {
                        barrier_wait(value_empty(t % 2), (t / 2) & 1);
                        fill_values(t + 2);
                    }
                    if (t + 3 < tiles) {
                        barrier_wait(key_empty((t + 1) % 2), ((t + 1) / 2) & 1);
                        fill_keys(t + 3);
                    }
                }
            }
        }
#else
        for (int key_tile_start = tile_lo; key_tile_start < tile_hi(); key_tile_start += FMHA_BLOCK_N) {
            // K of this tile has landed and every warp is done with the previous V: V's copies go
            // while the scores are computed.
            asm volatile("cp.async.wait_group 0;" ::: "memory");
            __syncthreads();
            load_rows(value_tile, v_head, v_row_stride, value_dim, key_tile_start);

            float score[FMHA_WARP_TILES][FMHA_BLOCK_N / 8][4];
            compute_scores(key_rows, score);
            uint32_t probability[FMHA_WARP_TILES][FMHA_BLOCK_N / 16][4];
            take_softmax(key_tile_start, score, probability);

            // V has landed and every warp is done with K: the next K's copies go during P·V.
            asm volatile("cp.async.wait_group 0;" ::: "memory");
            __syncthreads();
            if (key_tile_start + FMHA_BLOCK_N < tile_hi()) {
                load_rows(key_tile, k_head, k_row_stride, head_dim, key_tile_start + FMHA_BLOCK_N);
            }
            accumulate_values(value_rows, probability);
        }
#endif

        // Finish the sums across the quad, normalise, write O and the LSE.
        const int64_t out_row_step = shape[3] * shape[4] * value_dim;
        const int64_t out_head = (head_index / (shape[3] * shape[4]) * shape[1] * shape[3] * shape[4] + head_index % (shape[3] * shape[4])) * value_dim;
        float* lse_head = lse + head_index * shape[1];
#pragma unroll
        for (int r = 0; r < FMHA_ROWS; ++r) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            const int64_t i = row_of(r);
            if (i >= tile[2]) continue;
            const float inverse = sum[r] != 0.0f ? 1.0f / sum[r] : 0.0f;
            const int64_t out_row = out_head + i * out_row_step;
            const int lane_column = (lane % 4) * 2;
            if (out_dtype == FMHA_DTYPE) {
                // The input's type (the usual case): a pair per 32-bit store at constant offsets
                // from one row address, rounded by the same instruction as P.
                uint32_t* const row_pairs = reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(out) + out_row + lane_column);
#pragma unroll
                for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) {
                    if (n * 8 + lane_column < value_dim) {
                        row_pairs[n * 4] = pack_pair(accumulator[r / 2][n][(r % 2) * 2] * inverse,
                                                     accumulator[r / 2][n][(r % 2) * 2 + 1] * inverse);
                    }
                }
            } else {
#pragma unroll
                for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) {
                    const int column = n * 8 + lane_column;
                    if (column < value_dim) {
                        fmha::store_pair(out, out_row + column, out_dtype, accumulator[r / 2][n][(r % 2) * 2] * inverse,
                                   accumulator[r / 2][n][(r % 2) * 2 + 1] * inverse);
                    }
                }
            }
            if (lane % 4 == 0) {
                const float ln2 = 0.6931471805599453f;
                lse_head[i] = sum[r] != 0.0f ? maximum[r] * ln2 + logf(sum[r]) : -FMHA_INFINITY;
            }
        }
    }
}
