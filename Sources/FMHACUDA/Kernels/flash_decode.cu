// The decoding forward (split-KV, FlashDecoding's scheme): few queries per sequence, long K/V.
// A thread block takes one tile of 16 rows, where a row is a (query, head) pair: the `pack` query
// heads that share one K/V head (GQA, K and V of stride 0 along H) times 16 / `pack` consecutive
// queries of one mask block, so K/V is read once for the whole group. The block's keys are one
// split of the tile's keys (the work list has an entry per split); its FMHA_WARPS warps take the
// split's key tiles of FMHA_BLOCK_N keys in turn, each with its own ring of FMHA_STAGES K/V
// buffers in shared memory filled by cp.async (no block-wide barrier in the key loop, and
// FMHA_WARPS · (FMHA_STAGES - 1) tiles in flight while the warps compute), S = Q·Kᵀ and O += P·V
// by mma.sync m16n8k16 with float32 accumulation, and its own online softmax. At the end the
// warps' (maximum, sum, O) are combined through shared memory; a tile with one split writes the
// output and LSE, otherwise each split writes its normalized float32 output and LSE, and
// fmha_decode_merge combines the splits.
// Masks come from the lowering (prelude.cu): each row's visible keys from fmha::BlockBand, pages
// from fmha::page_lookup; keys outside a row's range or the split are masked per element.
// Quantized K/V caches (FMHA_KV_FORMAT 1: int4 with 1-8 scale/shift groups per row, 2: fp8 e4m3
// with a scale/shift word per row; FMHACore's KeyValueFormat): the ring holds the rows' packed
// words, copied 4 bytes at a time, and before each tile's products the warp dequantizes it
// (x·scale + shift by paired fused multiply-adds of the input type, KeyValueFormat's rule) into
// one K and one V tile of the plain layout, which the products read as for a plain cache.
// Needs prelude.cu, tensor_core.cu and FMHA_HEAD_DIM (a multiple of 16, at most 256: at least K
// and Kv; columns past them are zero), FMHA_DTYPE (1 float16, 2 bfloat16), FMHA_WARPS,
// FMHA_BLOCK_N (16 or 32), FMHA_STAGES (2 to 4) and FMHA_KV_FORMAT (0 plain, 1 int4, 2 fp8).
// Dynamic shared memory: FMHA_WARPS · FMHA_WARP_SHARED + 16 · FMHA_ROW 16-bit values.

#define FMHA_THREADS (FMHA_WARPS * 32)
#define FMHA_ROW (FMHA_HEAD_DIM + 8)
/// Rows (query, head pairs) of a tile.
#define FMHA_TILE_ROWS 16
/// Int64 words per entry of the decode work list (DecodePlan.workList).
#define FMHA_DECODE_WORDS 7
/// Int64 words per tile of the merge list (DecodePlan.mergeList).
#define FMHA_MERGE_WORDS 4

#if FMHA_KV_FORMAT == 0
/// 16-bit values of a warp's shared memory: its ring of K and V tiles.
#define FMHA_WARP_SHARED (FMHA_STAGES * 2 * FMHA_BLOCK_N * FMHA_ROW)
#else
/// int32 words of a staged K or V row, a multiple of 4 (16-byte aligned rows): int4, the row's
/// words as stored, its G scale/shift words in slots 8 - G ..< 8 (so that data word i is at slot
/// FMHA_STAGE_HEADER + i, 16-byte aligned), then FMHA_HEAD_DIM / 8 words of nibbles; fp8,
/// FMHA_HEAD_DIM / 4 words of bytes, the row's scale/shift word, and 3 unused.
#define FMHA_STAGE_HEADER (FMHA_KV_FORMAT == 1 ? 8 : 0)
#define FMHA_STAGE_DATA (FMHA_KV_FORMAT == 1 ? FMHA_HEAD_DIM / 8 : FMHA_HEAD_DIM / 4)
#define FMHA_STAGE_ROW (FMHA_STAGE_HEADER + FMHA_STAGE_DATA + (FMHA_KV_FORMAT == 2 ? 4 : 0))
/// 16-bit values of a warp's shared memory: its ring of staged K and V rows, then the dequantized
/// K and V tile.
#define FMHA_WARP_SHARED (FMHA_STAGES * 2 * FMHA_BLOCK_N * FMHA_STAGE_ROW * 2 + 2 * FMHA_BLOCK_N * FMHA_ROW)
#endif

static_assert(FMHA_HEAD_DIM % 16 == 0 && FMHA_HEAD_DIM <= 256, "FMHA_HEAD_DIM: a multiple of 16, at most 256");
static_assert(FMHA_BLOCK_N % 16 == 0 && FMHA_BLOCK_N <= 32, "FMHA_BLOCK_N: 16 or 32 (a lane holds the page lookup of one key)");
static_assert(FMHA_STAGES >= 2 && FMHA_STAGES <= 4, "FMHA_STAGES: 2 to 4");
static_assert(FMHA_KV_FORMAT >= 0 && FMHA_KV_FORMAT <= 2, "FMHA_KV_FORMAT: 0 plain, 1 int4, 2 fp8");
// The warps' float32 outputs are combined in the space of their K/V buffers.
static_assert(FMHA_TILE_ROWS * FMHA_HEAD_DIM * 4 <= FMHA_WARP_SHARED * 2, "a warp's K/V buffers hold its float32 output tile");

/// Waits until at most FMHA_STAGES - 1 of this thread's cp.async groups are pending.
__device__ __forceinline__ void wait_for_all_but_newest_stages() {
    asm volatile("cp.async.wait_group %0;" :: "n"(FMHA_STAGES - 1) : "memory");
}

#if FMHA_KV_FORMAT != 0
/// Starts a 4-byte copy from global `source` to the shared address `destination` (cp.async); when
/// `valid` is false nothing is read and the 4 bytes are zeroed.
__device__ __forceinline__ void copy_4_bytes_async(uint32_t destination, const uint32_t* source, bool valid) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(destination), "l"(source), "r"(valid ? 4 : 0) : "memory");
}

/// a·b + c on two pairs of the input type at once, rounded once (fma.rn: subnormals kept).
__device__ __forceinline__ uint32_t fma_pairs(uint32_t a, uint32_t b, uint32_t c) {
    uint32_t result;
#if FMHA_DTYPE == 1
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(result) : "r"(a), "r"(b), "r"(c));
#else
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(result) : "r"(a), "r"(b), "r"(c));
#endif
    return result;
}

/// A scale/shift word (float16 scale in the low, shift in the high half) as two registers of the
/// input type holding the scale twice and the shift twice (bfloat16: each rounded to nearest).
struct PairedScaleShift {
    uint32_t scale, shift;
    __device__ __forceinline__ explicit PairedScaleShift(uint32_t word) {
#if FMHA_DTYPE == 1
        scale = __byte_perm(word, 0, 0x1010);
        shift = __byte_perm(word, 0, 0x3232);
#else
        const float s = fmha::half_to_float(uint16_t(word & 0xFFFFu)), t = fmha::half_to_float(uint16_t(word >> 16));
        scale = pack_pair(s, s);
        shift = pack_pair(t, t);
#endif
    }
    /// x·scale + shift for both values of the pair `x`, rounded once.
    __device__ __forceinline__ uint32_t operator()(uint32_t x) const { return fma_pairs(x, scale, shift); }
};

#if FMHA_KV_FORMAT == 1
/// Elements 2e and 2e + 1 of an int4 word, e = 0 ..< 4, as a pair of the input type (exact small
/// integers): nibbles j and j + 4 lie at bits 4j and 4j + 16 of the word shifted right by 4j, so
/// OR-ing them into the mantissa of 2^10 (float16) or 2^7 (bfloat16) and subtracting that gives
/// the pairs (j, j + 4), which two byte permutations put in order.
__device__ __forceinline__ void int4_word_pairs(uint32_t data, uint32_t pairs[4]) {
#if FMHA_DTYPE == 1
    constexpr uint32_t magic = 0x64006400u, one = 0x3C003C00u, minus_magic = 0xE400E400u;
#else
    constexpr uint32_t magic = 0x43004300u, one = 0x3F803F80u, minus_magic = 0xC300C300u;
#endif
    uint32_t spread[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) spread[j] = fma_pairs(((data >> (4 * j)) & 0x000F000Fu) | magic, one, minus_magic);
    pairs[0] = __byte_perm(spread[0], spread[1], 0x5410);
    pairs[1] = __byte_perm(spread[2], spread[3], 0x5410);
    pairs[2] = __byte_perm(spread[0], spread[1], 0x7632);
    pairs[3] = __byte_perm(spread[2], spread[3], 0x7632);
}
#else
/// The fp8 e4m3 bytes 0 and 1 of `bytes` (NaN at S.1111.111, no infinities) as a pair of the
/// input type, exactly (every e4m3 value is a float16 and a bfloat16).
__device__ __forceinline__ uint32_t e4m3_pair(uint32_t bytes) {
#if __CUDA_ARCH__ >= 890
    uint32_t halves;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(halves) : "h"(uint16_t(bytes)));
#if FMHA_DTYPE == 1
    return halves;
#else
    return pack_pair(fmha::half_to_float(uint16_t(halves)), fmha::half_to_float(uint16_t(halves >> 16)));
#endif
#else
    // Each byte at the top of a half, its exponent and mantissa moved under the input type's: a
    // value of 2^-8 (float16) or 2^-120 (bfloat16) times the byte's, normal or subnormal alike,
    // which a paired multiply by the power makes exact; then S.1111.111 as NaN.
    const uint32_t top = __byte_perm(bytes, 0, 0x1404);
    const uint32_t nan = __vcmpeq2(top & 0x7F007F00u, 0x7F007F00u);
    uint32_t pair;
#if FMHA_DTYPE == 1
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(pair) : "r"(((top >> 1) & 0x3F803F80u) | (top & 0x80008000u)), "r"(0x5C005C00u));
    return pair | (nan & 0x7E007E00u);
#else
    pair = fma_pairs(((top >> 4) & 0x07F007F0u) | (top & 0x80008000u), 0x7B807B80u, 0x80008000u);
    return pair | (nan & 0x7FC07FC0u);
#endif
#endif
}
#endif

/// Dequantizes a warp's staged rows (FMHA_BLOCK_N rows of FMHA_STAGE_ROW words, laid out as
/// FMHA_STAGE_ROW says) into `tile` (FMHA_BLOCK_N rows of FMHA_ROW values of the input type,
/// columns at or past `head_dim` zero): x·scale + shift by fma_pairs. An item is 8 elements (an
/// int4 word; two fp8 words); each lane converts `span` consecutive items of a row a pass (two
/// where the tile's items divide evenly, so that they share a scale/shift conversion), passes
/// unrolled so that their chains overlap. int4: `scale_slot(i)` is the staged slot of item i's
/// scale/shift word (its group's), and `span_shares_scale` says that a lane's items share it.
template <typename ScaleSlot>
__device__ __forceinline__ void dequantize_rows(const uint32_t* staged, uint16_t* tile, int head_dim, ScaleSlot scale_slot,
                                                bool span_shares_scale, int lane) {
    constexpr int items = FMHA_HEAD_DIM / 8;
    constexpr int span = FMHA_BLOCK_N * items / 2 % 32 == 0 ? 2 : 1;
    constexpr int spans = items / span;
    static_assert(FMHA_BLOCK_N * spans % 32 == 0, "whole spans per lane");
    // (With spans dividing 32, a lane's span is the same in every row it takes.)
    constexpr bool fixed_span = 32 % spans == 0;
    const int lane_first_item = (lane % spans) * span;
    const int lane_slot = scale_slot(lane_first_item);
// (32 elements a lane unrolled, 16 past 128 columns or where the span moves from row to row:
// more, and those spill.)
#pragma unroll (FMHA_HEAD_DIM > 128 || !fixed_span ? 2 : 4)
    for (int pass = 0; pass < FMHA_BLOCK_N * spans / 32; ++pass) {
        const int index = lane + 32 * pass;
        const int r = index / spans, first_item = fixed_span ? lane_first_item : (index % spans) * span;
        const uint32_t* row = staged + r * FMHA_STAGE_ROW;
        uint32_t pairs[span][4];
#if FMHA_KV_FORMAT == 1
        const PairedScaleShift first(row[fixed_span ? lane_slot : scale_slot(first_item)]);
        uint32_t data[span];
        if constexpr (span == 2) {
            const uint2 words = *reinterpret_cast<const uint2*>(row + FMHA_STAGE_HEADER + first_item);
            data[0] = words.x;
            data[1] = words.y;
        } else {
            data[0] = row[FMHA_STAGE_HEADER + first_item];
        }
#pragma unroll
        for (int i = 0; i < span; ++i) {
            const PairedScaleShift dequantize = i == 0 || span_shares_scale ? first : PairedScaleShift(row[scale_slot(first_item + i)]);
            int4_word_pairs(data[i], pairs[i]);
#pragma unroll
            for (int e = 0; e < 4; ++e) pairs[i][e] = dequantize(pairs[i][e]);
        }
#else
        const PairedScaleShift dequantize(row[FMHA_STAGE_DATA]);
        uint32_t data[2 * span];
        if constexpr (span == 2) {
            const uint4 words = *reinterpret_cast<const uint4*>(row + 2 * first_item);
            data[0] = words.x;
            data[1] = words.y;
            data[2] = words.z;
            data[3] = words.w;
        } else {
            const uint2 words = *reinterpret_cast<const uint2*>(row + 2 * first_item);
            data[0] = words.x;
            data[1] = words.y;
        }
#pragma unroll
        for (int i = 0; i < span; ++i) {
#pragma unroll
            for (int e = 0; e < 4; ++e) pairs[i][e] = dequantize(e4m3_pair(data[2 * i + e / 2] >> (16 * (e % 2))));
        }
#endif
#pragma unroll
        for (int i = 0; i < span; ++i) {
            const bool used = (first_item + i) * 8 < head_dim;
            *reinterpret_cast<uint4*>(tile + r * FMHA_ROW + (first_item + i) * 8) =
                used ? make_uint4(pairs[i][0], pairs[i][1], pairs[i][2], pairs[i][3]) : make_uint4(0, 0, 0, 0);
        }
    }
}
#endif

/// The rows of a tile: row r is head `first_head + r % pack` of query `first_query + r / pack`.
struct TileRows {
    int64_t first_query, query_end, first_head, heads;
    int pack;

    __device__ __forceinline__ int64_t query(int r) const { return first_query + r / pack; }
    __device__ __forceinline__ int64_t head(int r) const { return first_head + r % pack; }
    /// Whether row r is a real (query, head) pair of the tile.
    __device__ __forceinline__ bool valid(int r) const {
        return r < (FMHA_TILE_ROWS / pack) * pack && query(r) < query_end && head(r) < heads;
    }
};

/// `shape` as for fmha_reference_forward (K, Kv ≤ FMHA_HEAD_DIM, multiples of 8), `mask` the mask
/// lowering (prelude.cu). `vector_loads`: every row of q, k and v starts 16-byte aligned. `work`:
/// per blockIdx.x, FMHA_DECODE_WORDS words: mask block, first and end query of the tile, the
/// split's logical keys [lo, hi), the tile's first entry and its number of splits. Heads: the
/// (b, g, chunk of `pack` heads) triples, blockIdx.y and then every gridDim.y-th; all `pack` heads
/// of a chunk read the K/V head of its first (pack > 1 only when K and V have stride 0 along H).
/// A tile of one split writes out[((b·Mq + i)·G + g)·H + h][0 ..< Kv] in `out_dtype` and the
/// natural-log LSE at [((b·G + g)·H + h)·Mq + i] (-inf for a row that sees no key; its output is
/// 0); a tile of several writes, for each split, row r's normalized output at
/// partial_out[((head index · entries + entry) · 16 + r) · FMHA_HEAD_DIM] and its LSE at
/// partial_lse[(head index · entries + entry) · 16 + r], for fmha_decode_merge.
/// Quantized caches: k and v hold int32 words (the strides in `shape` count words); `quantized`
/// holds the int4 group count, then the fp8 scale/shift words' strides (b, m, g, h) for k and for
/// v, whose words are at k_scale_shift and v_scale_shift.
extern "C" __global__ void __launch_bounds__(FMHA_THREADS, 1) fmha_flash_decode(
    const uint16_t* q, const uint16_t* k, const uint16_t* v, void* out, float* lse, const int64_t* shape,
    const int64_t* mask, const int64_t* work, float scale_log2, int64_t out_dtype, int32_t vector_loads,
    float* partial_out, float* partial_lse, int32_t pack, int64_t entries, const int64_t* quantized,
    const uint32_t* k_scale_shift, const uint32_t* v_scale_shift) {
    extern __shared__ __align__(16) uint16_t shared_tiles[];
    constexpr int tile_elements = FMHA_BLOCK_N * FMHA_ROW;
    const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32;
    uint16_t* const warp_tiles = shared_tiles + warp * FMHA_WARP_SHARED;
    uint16_t* const query_tile = shared_tiles + FMHA_WARPS * FMHA_WARP_SHARED;
    // After the key loop: warp w's output tile, FMHA_TILE_ROWS × FMHA_HEAD_DIM floats, where its
    // K/V buffers were.
    float* const combined = reinterpret_cast<float*>(shared_tiles);
    __shared__ float warp_maximum[FMHA_WARPS][FMHA_TILE_ROWS], warp_sum[FMHA_WARPS][FMHA_TILE_ROWS];
    __shared__ int row_lo[FMHA_TILE_ROWS], row_hi[FMHA_TILE_ROWS];

    const int64_t batch = shape[0], queries = shape[1], groups = shape[3], heads = shape[4];
    const int head_dim = int(shape[5]), value_dim = int(shape[6]);
    const int64_t* qs = shape + 9;
    const int64_t* ks = shape + 13;
    const int64_t* vs = shape + 17;
    const fmha::Lowering lowering{mask};
    const int page_size = int(lowering.page_size());

    const int64_t* entry = work + FMHA_DECODE_WORDS * int64_t(blockIdx.x);
    const int64_t block = entry[0];
    const int split_lo = int(entry[3]), split_hi = int(entry[4]);
    const int64_t entry_index = blockIdx.x;
    const bool single_split = entry[6] == 1;
    const int64_t* block_pages = lowering.pages(block);
    const fmha::BlockBand band = lowering.band(block);

    const int64_t chunks = (heads + pack - 1) / pack, head_count = batch * groups * chunks;
    for (int64_t head_index = blockIdx.y; head_index < head_count; head_index += gridDim.y) {
        const int64_t chunk = head_index % chunks, g = (head_index / chunks) % groups, b = head_index / (chunks * groups);
        const TileRows rows{entry[1], entry[2], chunk * pack, heads, pack};
        // (Every warp is done with the previous head's combined outputs and row ranges.)
        __syncthreads();
        // Each row's visible keys inside this split; the Q tile (zero past K and in rows that are
        // no (query, head) pair).
        if (thread < FMHA_TILE_ROWS) {
            fmha::KeyRange keys{0, 0};
            if (rows.valid(thread)) keys = band.row_keys(rows.query(thread));
            row_lo[thread] = int(max(keys.lo, int64_t(split_lo)));
            row_hi[thread] = int(min(keys.hi, int64_t(split_hi)));
        }
        const uint16_t* q_batch = q + b * qs[0] + g * qs[2];
        for (int index = thread; index < FMHA_TILE_ROWS * FMHA_HEAD_DIM / 8; index += FMHA_THREADS) {
            const int r = index / (FMHA_HEAD_DIM / 8), c = (index % (FMHA_HEAD_DIM / 8)) * 8;
            uint16_t* destination = query_tile + r * FMHA_ROW + c;
            const bool valid = rows.valid(r);
            const uint16_t* source = q_batch + (valid ? rows.query(r) * qs[1] + rows.head(r) * qs[3] : 0) + c;
            if (vector_loads) {
                uint4 chunk_values = make_uint4(0, 0, 0, 0);
                if (valid && c < head_dim) chunk_values = *reinterpret_cast<const uint4*>(source);
                *reinterpret_cast<uint4*>(destination) = chunk_values;
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) destination[e] = valid && c + e < head_dim ? source[e] : uint16_t(0);
            }
        }
        __syncthreads();

        const int64_t k_row_stride = ks[1], v_row_stride = vs[1];
#if FMHA_KV_FORMAT == 0
        const uint16_t* k_head = k + (b * ks[0] + g * ks[2] + rows.first_head * ks[3]);
        const uint16_t* v_head = v + (b * vs[0] + g * vs[2] + rows.first_head * vs[3]);

        // The K and V rows of logical keys start + r (r < FMHA_BLOCK_N) into `keys` and `values`,
        // columns below K and Kv (the rest, and rows at or past the split's end, zero); with pages,
        // lane r holds the K/V row of key start + r in `lane_row` (looked up a tile ahead, so that
        // the copies do not wait for the page table) and the copies take it by a shuffle. Aligned
        // rows: 16-byte cp.async copies, lanes_per_row lanes a row (8 columns each; lanes past the
        // width idle), rows_per_pass rows a pass, so that a lane's copies sit rows_per_pass rows
        // apart at one column. Otherwise element by element.
        auto load_rows = [&](uint16_t* keys, uint16_t* values, int start, int lane_row) {
            const int count = min(FMHA_BLOCK_N, split_hi - start);
            auto row_of = [&](int r) { return page_size == 0 ? int64_t(start + r) : int64_t(__shfl_sync(0xffffffffu, lane_row, r)); };
            if (vector_loads) {
                constexpr int chunks = FMHA_HEAD_DIM / 8;
                constexpr int lanes_per_row = chunks <= 2 ? 2 : chunks <= 4 ? 4 : chunks <= 8 ? 8 : chunks <= 16 ? 16 : 32;
                constexpr int rows_per_pass = 32 / lanes_per_row;
                const int r0 = lane / lanes_per_row, c = (lane % lanes_per_row) * 8;
                const bool column_used = lanes_per_row == chunks || c < FMHA_HEAD_DIM;
                const uint32_t key_address = shared_address(keys + r0 * FMHA_ROW + c);
                const uint32_t value_address = shared_address(values + r0 * FMHA_ROW + c);
// (Unrolled by 4 up to 128 columns; past that it spills at 256.)
#pragma unroll (FMHA_HEAD_DIM > 128 ? 1 : 4)
                for (int pass = 0; pass < FMHA_BLOCK_N / rows_per_pass; ++pass) {
                    const int r = r0 + pass * rows_per_pass;
                    // (Every lane takes part in the shuffle.)
                    const int64_t row = row_of(r);
                    const uint32_t offset = 2 * pass * rows_per_pass * FMHA_ROW;
                    const bool key_valid = r < count && c < head_dim, value_valid = r < count && c < value_dim;
                    if (column_used) {
                        copy_16_bytes_async(key_address + offset, key_valid ? k_head + row * k_row_stride + c : k_head, key_valid);
                        copy_16_bytes_async(value_address + offset, value_valid ? v_head + row * v_row_stride + c : v_head, value_valid);
                    }
                }
            } else {
                for (int index = lane; index < FMHA_BLOCK_N * FMHA_HEAD_DIM; index += 32) {
                    const int r = index / FMHA_HEAD_DIM, c = index % FMHA_HEAD_DIM;
                    const int64_t row = row_of(r);
                    keys[r * FMHA_ROW + c] = r < count && c < head_dim ? k_head[row * k_row_stride + c] : uint16_t(0);
                    values[r * FMHA_ROW + c] = r < count && c < value_dim ? v_head[row * v_row_stride + c] : uint16_t(0);
                }
            }
        };
        auto key_buffer = [&](int j) { return warp_tiles + (j % FMHA_STAGES) * 2 * tile_elements; };
        // The tiles the products read: the ring's.
        auto key_tile = [&](int j) { return key_buffer(j); };
#else
        const uint32_t* k_head = reinterpret_cast<const uint32_t*>(k) + (b * ks[0] + g * ks[2] + rows.first_head * ks[3]);
        const uint32_t* v_head = reinterpret_cast<const uint32_t*>(v) + (b * vs[0] + g * vs[2] + rows.first_head * vs[3]);
        const int groups_per_row = int(quantized[0]);
#if FMHA_KV_FORMAT == 2
        const uint32_t* k_pairs = k_scale_shift + (b * quantized[1] + g * quantized[3] + rows.first_head * quantized[4]);
        const uint32_t* v_pairs = v_scale_shift + (b * quantized[5] + g * quantized[7] + rows.first_head * quantized[8]);
        const int64_t k_pair_stride = quantized[2], v_pair_stride = quantized[6];
#endif
        // A row's words: int4, its groups' scale/shift words then K/8 words of nibbles; fp8, K/4
        // words of bytes (its scale/shift word is in k_pairs / v_pairs). Word w of a row goes to
        // staged slot first_slot + w.
        const int row_words = FMHA_KV_FORMAT == 1 ? groups_per_row + head_dim / 8 : head_dim / 4;
        const int first_slot = FMHA_KV_FORMAT == 1 ? FMHA_STAGE_HEADER - groups_per_row : 0;
        // The packed K and V rows of logical keys start + r into `keys` and `values` (rows at or
        // past the split's end zero), 4-byte copies: lanes_per_row lanes take a row, lane l of
        // them its words l, l + lanes_per_row, ... (consecutive lanes, consecutive words), so that
        // a lane computes one K and one V row address a row and its copies differ by constant
        // offsets; fp8, lane 0 of a row also copies its K and lane 1 its V scale/shift word. Pages
        // as for a plain cache.
        constexpr int most_row_words = FMHA_KV_FORMAT == 1 ? FMHA_STAGE_HEADER + FMHA_HEAD_DIM / 8 : FMHA_HEAD_DIM / 4;
        constexpr int lanes_per_row = most_row_words >= 16 ? 8 : 4, rows_per_pass = 32 / lanes_per_row;
        const int column = lane % lanes_per_row;
        auto load_rows = [&](uint32_t* keys, uint32_t* values, int start, int lane_row) {
            const int count = min(FMHA_BLOCK_N, split_hi - start);
            // (Every lane takes part in the shuffles; a row past the end reads nothing, from the
            // tile's first row.)
            const int first_row = page_size == 0 ? start : __shfl_sync(0xffffffffu, lane_row, 0);
// (Fully unrolled up to 128 columns; by 2 past that, where sm_80 would spill.)
#pragma unroll (FMHA_HEAD_DIM > 128 ? 2 : FMHA_BLOCK_N / rows_per_pass)
            for (int pass = 0; pass < FMHA_BLOCK_N / rows_per_pass; ++pass) {
                const int r = lane / lanes_per_row + rows_per_pass * pass;
                const int looked_up = page_size == 0 ? start + r : __shfl_sync(0xffffffffu, lane_row, r);
                const bool valid = r < count;
                const uint32_t row = uint32_t(valid ? looked_up : first_row);
                const uint32_t* k_row = k_head + row * k_row_stride + column;
                const uint32_t* v_row = v_head + row * v_row_stride + column;
                const uint32_t offset = 4 * (r * FMHA_STAGE_ROW + first_slot + column);
                const uint32_t key_address = shared_address(keys) + offset, value_address = shared_address(values) + offset;
#pragma unroll
                for (int i = 0; i < (most_row_words + lanes_per_row - 1) / lanes_per_row; ++i) {
                    if (lanes_per_row * i + column < row_words) {
                        copy_4_bytes_async(key_address + 4 * lanes_per_row * i, k_row + lanes_per_row * i, valid);
                        copy_4_bytes_async(value_address + 4 * lanes_per_row * i, v_row + lanes_per_row * i, valid);
                    }
                }
#if FMHA_KV_FORMAT == 2
                if (column < 2) {
                    const uint32_t* pair = column == 0 ? k_pairs + row * k_pair_stride : v_pairs + row * v_pair_stride;
                    copy_4_bytes_async((column == 0 ? shared_address(keys) : shared_address(values)) + 4 * (r * FMHA_STAGE_ROW + FMHA_STAGE_DATA),
                                       pair, valid);
                }
#endif
            }
        };
        // int4: the staged slot of data word w's scale/shift word, group w·G / (K/8) (by a float
        // reciprocal: exact for w < 2^20).
        const float group_factor = FMHA_KV_FORMAT == 1 ? float(groups_per_row) / float(head_dim / 8) : 0.0f;
        auto scale_slot = [=](int w) { return first_slot + int((float(w) + 0.5f) * group_factor); };
        // Whether a group's words come in pairs (dequantize_rows' spans of two items).
        const bool span_shares_scale = FMHA_KV_FORMAT == 2 || head_dim / 8 / groups_per_row % 2 == 0;
        // Ring stage s: the staged K rows, then the staged V rows.
        uint32_t* const staged_rows = reinterpret_cast<uint32_t*>(warp_tiles);
        auto key_buffer = [&](int j) { return staged_rows + (j % FMHA_STAGES) * 2 * FMHA_BLOCK_N * FMHA_STAGE_ROW; };
        // The tiles the products read: one dequantized K and V tile after the ring.
        uint16_t* const dequantized = warp_tiles + FMHA_STAGES * 2 * FMHA_BLOCK_N * FMHA_STAGE_ROW * 2;
        auto key_tile = [&](int) { return dequantized; };
#endif

        // This warp's key tiles: tile t of the split (keys split_lo + t·FMHA_BLOCK_N ...) for
        // t = warp, warp + FMHA_WARPS, ...; its j-th goes into stage j % FMHA_STAGES.
        const int split_tiles = split_hi > split_lo ? (split_hi - split_lo + FMHA_BLOCK_N - 1) / FMHA_BLOCK_N : 0;
        const int warp_tile_count = split_tiles > warp ? (split_tiles - warp + FMHA_WARPS - 1) / FMHA_WARPS : 0;
        auto tile_start = [&](int j) { return split_lo + (warp + j * FMHA_WARPS) * FMHA_BLOCK_N; };
        // With pages, the K/V row of key tile_start(j) + lane of the warp's next tile to fill (j
        // counts up by one per fill; keys past the split's end repeat its last).
        auto look_up = [&](int j) {
            return page_size == 0 || j >= warp_tile_count ? 0 : int(fmha::page_lookup(block_pages, page_size, min(tile_start(j) + lane, split_hi - 1)));
        };
        int next_row = look_up(0);
        // One cp.async group per call (empty past the warp's last tile, so that the waits count right).
        auto fill = [&](int j) {
            if (j < warp_tile_count) {
#if FMHA_KV_FORMAT == 0
                load_rows(key_buffer(j), key_buffer(j) + tile_elements, tile_start(j), next_row);
#else
                load_rows(key_buffer(j), key_buffer(j) + FMHA_BLOCK_N * FMHA_STAGE_ROW, tile_start(j), next_row);
#endif
                next_row = look_up(j + 1);
            }
            asm volatile("cp.async.commit_group;");
        };
#pragma unroll
        for (int j = 0; j < FMHA_STAGES - 1; ++j) fill(j);

        float accumulator[FMHA_HEAD_DIM / 8][4];
#pragma unroll
        for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) accumulator[n][0] = accumulator[n][1] = accumulator[n][2] = accumulator[n][3] = 0.0f;
        // This lane's rows lane / 4 and lane / 4 + 8: running maximum (base 2, scaled) and sum.
        float maximum[2] = {-FMHA_INFINITY, -FMHA_INFINITY}, sum[2] = {0.0f, 0.0f};
        const int lo[2] = {row_lo[lane / 4], row_lo[lane / 4 + 8]}, hi[2] = {row_hi[lane / 4], row_hi[lane / 4 + 8]};

        const uint32_t query_rows = shared_address(query_tile + (lane % 16) * FMHA_ROW + (lane / 16) * 8);
        for (int j = 0; j < warp_tile_count; ++j) {
            // Every lane is done with tile j - 1, whose buffer the fill of tile j + STAGES - 1 takes;
            // then tile j has landed (this lane's copies) and is visible to the warp.
            __syncwarp();
            fill(j + FMHA_STAGES - 1);
            wait_for_all_but_newest_stages();
            __syncwarp();
#if FMHA_KV_FORMAT != 0
            dequantize_rows(key_buffer(j), key_tile(j), head_dim, scale_slot, span_shares_scale, lane);
            dequantize_rows(key_buffer(j) + FMHA_BLOCK_N * FMHA_STAGE_ROW, key_tile(j) + tile_elements, head_dim, scale_slot,
                            span_shares_scale, lane);
            __syncwarp();
#endif
            uint16_t* const keys = key_tile(j);
            const uint32_t key_rows = shared_address(keys + ((lane / 16) * 8 + lane % 8) * FMHA_ROW + ((lane / 8) % 2) * 8);
            const uint32_t value_rows = shared_address(keys + tile_elements + (lane % 16) * FMHA_ROW + (lane / 16) * 8);

            float score[FMHA_BLOCK_N / 8][4];
#pragma unroll
            for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) score[n][0] = score[n][1] = score[n][2] = score[n][3] = 0.0f;
// (By 4: unrolled fully, ptxas hoists every fragment load and spills past 128 columns.)
#pragma unroll 4
            for (int chunk = 0; chunk < FMHA_HEAD_DIM / 16; ++chunk) {
                uint32_t a[4];
                load_matrices(query_rows + 2 * chunk * 16, a);
#pragma unroll
                for (int n = 0; n < FMHA_BLOCK_N / 8; n += 2) {
                    uint32_t fragments[4];
                    load_matrices(key_rows + 2 * (n * 8 * FMHA_ROW + chunk * 16), fragments);
                    mma_16x16x16(score[n], score[n + 1], a, fragments);
                }
            }
            // Scale (base 2), mask, online softmax.
            const int first_key = tile_start(j);
            float tile_maximum[2] = {-FMHA_INFINITY, -FMHA_INFINITY};
#pragma unroll
            for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int p = first_key + n * 8 + (lane % 4) * 2 + e % 2, row = e / 2;
                    score[n][e] = p < lo[row] || p >= hi[row] ? -FMHA_INFINITY : score[n][e] * scale_log2;
                    tile_maximum[row] = fmaxf(tile_maximum[row], score[n][e]);
                }
            }
            float base[2], rescale[2];
            bool grew = false;
#pragma unroll
            for (int row = 0; row < 2; ++row) {
                tile_maximum[row] = fmaxf(tile_maximum[row], __shfl_xor_sync(0xffffffffu, tile_maximum[row], 1));
                tile_maximum[row] = fmaxf(tile_maximum[row], __shfl_xor_sync(0xffffffffu, tile_maximum[row], 2));
                const float new_maximum = fmaxf(maximum[row], tile_maximum[row]);
                // A row that has seen no key yet keeps maximum -inf; subtract 0 so that exp2 gives 0.
                base[row] = new_maximum == -FMHA_INFINITY ? 0.0f : new_maximum;
                rescale[row] = exp2_approx(maximum[row] - base[row]);
                grew |= new_maximum != maximum[row];
                maximum[row] = new_maximum;
            }
            // Only when some row's maximum grew (long splits: rarely, once the first keys are in);
            // otherwise every rescale is exp2(0) = 1, or 0 of a sum and output still 0.
            if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
                for (int row = 0; row < 2; ++row) {
                    sum[row] *= rescale[row];
#pragma unroll
                    for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) {
                        accumulator[n][2 * row] *= rescale[row];
                        accumulator[n][2 * row + 1] *= rescale[row];
                    }
                }
            }
            uint32_t probability[FMHA_BLOCK_N / 16][4];
#pragma unroll
            for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
                const float p0 = exp2_approx(score[n][0] - base[0]), p1 = exp2_approx(score[n][1] - base[0]);
                const float p2 = exp2_approx(score[n][2] - base[1]), p3 = exp2_approx(score[n][3] - base[1]);
                sum[0] += p0 + p1;
                sum[1] += p2 + p3;
                probability[n / 2][(n % 2) * 2] = pack_pair(p0, p1);
                probability[n / 2][(n % 2) * 2 + 1] = pack_pair(p2, p3);
            }
#pragma unroll
            for (int chunk = 0; chunk < FMHA_BLOCK_N / 16; ++chunk) {
#pragma unroll
                for (int n = 0; n < FMHA_HEAD_DIM / 8; n += 2) {
                    uint32_t fragments[4];
                    load_matrices_transposed(value_rows + 2 * (chunk * 16 * FMHA_ROW + n * 8), fragments);
                    mma_16x16x16(accumulator[n], accumulator[n + 1], probability[chunk], fragments);
                }
            }
        }

        // Combine the warps: each publishes its maxima, sums and output tile.
        asm volatile("cp.async.wait_group 0;" ::: "memory");
#pragma unroll
        for (int row = 0; row < 2; ++row) {
            sum[row] += __shfl_xor_sync(0xffffffffu, sum[row], 1);
            sum[row] += __shfl_xor_sync(0xffffffffu, sum[row], 2);
        }
        __syncthreads();
        if (lane % 4 == 0) {
#pragma unroll
            for (int row = 0; row < 2; ++row) {
                warp_maximum[warp][lane / 4 + 8 * row] = maximum[row];
                warp_sum[warp][lane / 4 + 8 * row] = sum[row];
            }
        }
        float* const warp_output = combined + warp * FMHA_TILE_ROWS * FMHA_HEAD_DIM;
#pragma unroll
        for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) {
#pragma unroll
            for (int row = 0; row < 2; ++row) {
                *reinterpret_cast<float2*>(warp_output + (lane / 4 + 8 * row) * FMHA_HEAD_DIM + n * 8 + (lane % 4) * 2) =
                    make_float2(accumulator[n][2 * row], accumulator[n][2 * row + 1]);
            }
        }
        __syncthreads();
        const float ln2 = 0.6931471805599453f;
        for (int item = thread; item < FMHA_TILE_ROWS * FMHA_HEAD_DIM / 2; item += FMHA_THREADS) {
            const int r = item / (FMHA_HEAD_DIM / 2), c = (item % (FMHA_HEAD_DIM / 2)) * 2;
            if (!rows.valid(r) || c >= value_dim) continue;
            float top = -FMHA_INFINITY;
#pragma unroll
            for (int w = 0; w < FMHA_WARPS; ++w) top = fmaxf(top, warp_maximum[w][r]);
            const float shift = top == -FMHA_INFINITY ? 0.0f : top;
            float total = 0.0f, low = 0.0f, high = 0.0f;
#pragma unroll
            for (int w = 0; w < FMHA_WARPS; ++w) {
                const float weight = exp2_approx(warp_maximum[w][r] - shift);
                const float2 values = *reinterpret_cast<const float2*>(combined + (w * FMHA_TILE_ROWS + r) * FMHA_HEAD_DIM + c);
                total += weight * warp_sum[w][r];
                low += weight * values.x;
                high += weight * values.y;
            }
            // (0 for a row that sees no key in the split; NaN stays NaN.)
            const float inverse = total != 0.0f ? 1.0f / total : 0.0f;
            const float row_lse = total != 0.0f ? shift * ln2 + logf(total) : -FMHA_INFINITY;
            const int64_t i = rows.query(r), h = rows.head(r);
            if (single_split) {
                const int64_t out_row = (((b * queries + i) * groups + g) * heads + h) * value_dim;
                fmha::store_pair(out, out_row + c, out_dtype, low * inverse, high * inverse);
                if (c == 0) lse[((b * groups + g) * heads + h) * queries + i] = row_lse;
            } else {
                const int64_t slot = (head_index * entries + entry_index) * FMHA_TILE_ROWS + r;
                *reinterpret_cast<float2*>(partial_out + slot * FMHA_HEAD_DIM + c) = make_float2(low * inverse, high * inverse);
                if (c == 0) partial_lse[slot] = row_lse;
            }
        }
    }
}

/// Combines the splits of the decode tiles that have several: `merges` holds, per blockIdx.x,
/// FMHA_MERGE_WORDS words (the tile's first entry, its number of splits, its first and end query);
/// blockIdx.z is the row of the tile, heads as in fmha_flash_decode. Writes the output and LSE
/// where fmha_flash_decode writes those of a single split, by fmha::MergeWeights.
extern "C" __global__ void __launch_bounds__(128) fmha_decode_merge(
    void* out, float* lse, const int64_t* shape, const int64_t* merges, const float* partial_out,
    const float* partial_lse, int64_t out_dtype, int32_t pack, int64_t entries) {
    const int64_t batch = shape[0], queries = shape[1], groups = shape[3], heads = shape[4];
    const int value_dim = int(shape[6]);
    const int64_t* tile = merges + FMHA_MERGE_WORDS * int64_t(blockIdx.x);
    const int64_t first_entry = tile[0], splits = tile[1];
    const int r = blockIdx.z;
    const int64_t chunks = (heads + pack - 1) / pack, head_count = batch * groups * chunks;
    for (int64_t head_index = blockIdx.y; head_index < head_count; head_index += gridDim.y) {
        const int64_t chunk = head_index % chunks, g = (head_index / chunks) % groups, b = head_index / (chunks * groups);
        const TileRows rows{tile[2], tile[3], chunk * pack, heads, pack};
        if (!rows.valid(r)) continue;
        const int64_t first_slot = (head_index * entries + first_entry) * FMHA_TILE_ROWS + r;
        const fmha::MergeWeights weights(splits, [&](int64_t s) { return partial_lse[first_slot + s * FMHA_TILE_ROWS]; });
        const int64_t i = rows.query(r), h = rows.head(r);
        const int64_t out_row = (((b * queries + i) * groups + g) * heads + h) * value_dim;
        for (int c = 2 * threadIdx.x; c < value_dim; c += 2 * blockDim.x) {
            float low = 0.0f, high = 0.0f;
            for (int64_t s = 0; s < splits; ++s) {
                const float weight = weights.weight(partial_lse[first_slot + s * FMHA_TILE_ROWS]);
                const float2 values = *reinterpret_cast<const float2*>(partial_out + (first_slot + s * FMHA_TILE_ROWS) * FMHA_HEAD_DIM + c);
                low += weight * values.x;
                high += weight * values.y;
            }
            fmha::store_pair(out, out_row + c, out_dtype, low, high);
        }
        if (threadIdx.x == 0) lse[((b * groups + g) * heads + h) * queries + i] = weights.lse;
    }
}
