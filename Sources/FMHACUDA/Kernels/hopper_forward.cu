// The Hopper forward (sm_90a): FlashAttention-3's layout with warp specialization. A thread block
// of three warpgroups takes one tile of FMHA_BLOCK_M = 128 queries of one mask block and one head
// (then every gridDim.y-th head): warpgroup 0 is the producer, one thread of which issues the
// tensor memory accelerator's copies (cp.async.bulk.tensor, tensor maps made on the host by
// cuTensorMapEncodeTiled) of the Q tile and of the K and V tiles of FMHA_BLOCK_N keys into a ring
// of FMHA_STAGES buffers, each tracked by a "full" mbarrier (bytes landed) and an "empty" one (the
// consumers are done with it); warpgroups 1 and 2 are consumers of 64 query rows each: S = Q·Kᵀ by
// wgmma.mma_async with both operands in shared memory, the online softmax in registers (base 2,
// scale folded in), then O += P·V by wgmma with P from registers (the S accumulators' layout is the
// A operand's) and V in shared memory. Registers are moved from the producer to the consumers by
// setmaxnreg.
// Tiles are stored as TMA writes them with 128-byte swizzling: per 64 columns (128 bytes) of a
// row, a box of rows × 128 bytes whose 16-byte chunks are XOR-ed with the row modulo 8; the
// wgmma descriptors read the same layout (K-major for Q and K, MN-major for V).
// Every bias without a tensor and without pages goes through the mask lowering (prelude.cu): the
// work list gives each tile's key range and the range every row sees; keys outside a row's own
// range are masked per element. Columns past K and Kv, and rows past the tensors' ends, arrive
// as zeros (the tensor maps' out-of-bounds fill).
// Needs prelude.cu, tensor_core.cu and FMHA_HEAD_DIM (64, 128, 192 or 256: the padded width of Q, K
// and V), FMHA_DTYPE (1 float16, 2 bfloat16), FMHA_BLOCK_N (128, or 64 past 128 columns) and
// FMHA_STAGES (2 to 4). Dynamic shared memory: FMHA_SHARED_BYTES.

#define FMHA_BLOCK_M 128
#define FMHA_THREADS 384
/// Int64 words per tile of the work list (DeviceLowering.workList).
#define FMHA_WORK_WORDS 7
/// 64-column boxes of a row (128 bytes each, the 128-byte swizzle's span).
#define FMHA_BOXES (FMHA_HEAD_DIM / 64)
#define FMHA_Q_BYTES (FMHA_BOXES * FMHA_BLOCK_M * 128)
#define FMHA_KV_BYTES (FMHA_BOXES * FMHA_BLOCK_N * 128)
/// Registers a thread of the producer and of a consumer warpgroup keeps after setmaxnreg. The
/// consumers' increase comes out of what the producer gives back: the block's pool is what it
/// was launched with, 168 registers a thread (65536 / 384, `__launch_bounds__(384, 1)`), so
/// 128 · producer + 256 · consumer must stay within 384 · 168, or the increase waits forever.
#define FMHA_PRODUCER_REGISTERS 24
#define FMHA_CONSUMER_REGISTERS 240
static_assert(128 * FMHA_PRODUCER_REGISTERS + 256 * FMHA_CONSUMER_REGISTERS <= FMHA_THREADS * 168, "setmaxnreg within the block's registers");
/// The tiles, and 1 KiB to align them to the swizzle pattern's 1024 bytes.
#define FMHA_SHARED_BYTES (FMHA_Q_BYTES + 2 * FMHA_STAGES * FMHA_KV_BYTES + 1024)

static_assert(FMHA_HEAD_DIM % 64 == 0 && FMHA_HEAD_DIM <= 256, "FMHA_HEAD_DIM: 64, 128, 192 or 256");
static_assert(FMHA_BLOCK_N == 64 || FMHA_BLOCK_N == 128, "FMHA_BLOCK_N: 64 or 128");
static_assert(FMHA_STAGES >= 2 && FMHA_STAGES <= 4, "FMHA_STAGES: 2 to 4");

#if FMHA_DTYPE == 1
#define FMHA_MMA_TYPES ".f32.f16.f16"
#else
#define FMHA_MMA_TYPES ".f32.bf16.bf16"
#endif

/// A CUtensorMap, as the driver encodes it (opaque, 128 bytes, 64-byte aligned).
struct __align__(64) TensorMap {
    uint64_t words[16];
};

/// The box of `map` at coordinates (c0 ... c4) into shared memory at `destination`; its bytes
/// complete a transaction of `barrier`.
__device__ __forceinline__ void tensor_copy(uint32_t destination, const TensorMap& map, int c0, int c1, int c2, int c3, int c4,
                                            uint32_t barrier) {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5, %6}], [%7];"
        :: "r"(destination), "l"(reinterpret_cast<uint64_t>(&map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(barrier)
        : "memory");
}

/// The producer's arrival on `barrier`, which then also waits for `bytes` of copies.
__device__ __forceinline__ void barrier_arrive_expecting(uint32_t barrier, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(barrier), "r"(bytes) : "memory");
}

/// A wgmma shared-memory matrix descriptor with 128-byte swizzling: start `address`, leading and
/// stride byte offsets (PTX ISA, "Matrix Descriptor Format").
__device__ __forceinline__ uint64_t matrix_descriptor(uint32_t address, uint32_t leading, uint32_t stride) {
    return uint64_t((address & 0x3FFFF) >> 4) | (uint64_t(leading >> 4) << 16) | (uint64_t(stride >> 4) << 32) | (uint64_t(1) << 62);
}

/// Keeps the compiler from moving accesses of `x` across a wgmma issue or wait (accumulators, and
/// A operands in registers, which wgmma reads until it completes).
__device__ __forceinline__ void pin(float& x) { asm volatile("" : "+f"(x) :: "memory"); }
__device__ __forceinline__ void pin(uint32_t& x) { asm volatile("" : "+r"(x) :: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }

// The wgmma wrappers' operand lists: the accumulators d[0 ..< n] are operands %0 ..< %n ("+f"), the
// inputs follow. FMHA_ACCUMULATORS_<n> lists them for the constraint list and FMHA_PLACES_<n>
// writes "{%0, ..., %(n-1)}" for the instruction.
#define FMHA_ACCUMULATORS_8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define FMHA_ACCUMULATORS_32(i) FMHA_ACCUMULATORS_8(i), FMHA_ACCUMULATORS_8(i + 8), FMHA_ACCUMULATORS_8(i + 16), FMHA_ACCUMULATORS_8(i + 24)
#define FMHA_ACCUMULATORS_64 FMHA_ACCUMULATORS_32(0), FMHA_ACCUMULATORS_32(32)
#define FMHA_ACCUMULATORS_96 FMHA_ACCUMULATORS_64, FMHA_ACCUMULATORS_32(64)
#define FMHA_ACCUMULATORS_128 FMHA_ACCUMULATORS_96, FMHA_ACCUMULATORS_32(96)
#define FMHA_OPERANDS_0 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
#define FMHA_OPERANDS_16 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define FMHA_OPERANDS_32 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
#define FMHA_OPERANDS_48 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define FMHA_OPERANDS_64 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79"
#define FMHA_OPERANDS_80 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95"
#define FMHA_OPERANDS_96 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111"
#define FMHA_OPERANDS_112 "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define FMHA_PLACES_32 "{" FMHA_OPERANDS_0 ", " FMHA_OPERANDS_16 "}"
#define FMHA_PLACES_64 "{" FMHA_OPERANDS_0 ", " FMHA_OPERANDS_16 ", " FMHA_OPERANDS_32 ", " FMHA_OPERANDS_48 "}"
#define FMHA_PLACES_96 "{" FMHA_OPERANDS_0 ", " FMHA_OPERANDS_16 ", " FMHA_OPERANDS_32 ", " FMHA_OPERANDS_48 ", " FMHA_OPERANDS_64 ", " FMHA_OPERANDS_80 "}"
#define FMHA_PLACES_128 "{" FMHA_OPERANDS_0 ", " FMHA_OPERANDS_16 ", " FMHA_OPERANDS_32 ", " FMHA_OPERANDS_48 ", " FMHA_OPERANDS_64 ", " FMHA_OPERANDS_80 ", " FMHA_OPERANDS_96 ", " FMHA_OPERANDS_112 "}"
#define FMHA_TEXT(x) #x
#define FMHA_STRING(x) FMHA_TEXT(x)

/// d (+)= A·B for one k16 step of S = Q·Kᵀ: A = the warpgroup's 64 query rows × 16 columns
/// (descriptor `a`), B = FMHA_BLOCK_N keys × 16 columns (descriptor `b`), both K-major; `accumulate`
/// 0 overwrites d. Accumulator layout: warp w of the warpgroup holds rows 16w + lane / 4 and + 8;
/// d[4i + e] is row + 8·(e / 2), column 8i + 2·(lane % 4) + e % 2.
#if FMHA_BLOCK_N == 128
#define FMHA_SCORE_ACCUMULATORS FMHA_ACCUMULATORS_64
#define FMHA_SCORE_PLACES FMHA_PLACES_64 ", %64, %65"
#define FMHA_SCORE_FLAG "%66"
#else
#define FMHA_SCORE_ACCUMULATORS FMHA_ACCUMULATORS_32(0)
#define FMHA_SCORE_PLACES FMHA_PLACES_32 ", %32, %33"
#define FMHA_SCORE_FLAG "%34"
#endif
__device__ __forceinline__ void wgmma_scores(float (&d)[FMHA_BLOCK_N / 2], uint64_t a, uint64_t b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " FMHA_SCORE_FLAG ", 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n" FMHA_STRING(FMHA_BLOCK_N) "k16" FMHA_MMA_TYPES " " FMHA_SCORE_PLACES
                 ", p, 1, 1, 0, 0;\n}\n"
                 : FMHA_SCORE_ACCUMULATORS : "l"(a), "l"(b), "r"(accumulate));
}

/// d += A·B for one k16 step of O = P·V: A = the warpgroup's 64 rows × 16 keys of P in registers
/// (mma.sync's A fragment layout per warp), B = 16 keys × FMHA_HEAD_DIM columns of V (descriptor
/// `b`, MN-major). d as for wgmma_scores, columns being V's.
#if FMHA_HEAD_DIM == 64
#define FMHA_VALUE_ACCUMULATORS FMHA_ACCUMULATORS_32(0)
#define FMHA_VALUE_PLACES FMHA_PLACES_32 ", {%32, %33, %34, %35}, %36"
#elif FMHA_HEAD_DIM == 128
#define FMHA_VALUE_ACCUMULATORS FMHA_ACCUMULATORS_64
#define FMHA_VALUE_PLACES FMHA_PLACES_64 ", {%64, %65, %66, %67}, %68"
#elif FMHA_HEAD_DIM == 192
#define FMHA_VALUE_ACCUMULATORS FMHA_ACCUMULATORS_96
#define FMHA_VALUE_PLACES FMHA_PLACES_96 ", {%96, %97, %98, %99}, %100"
#else
#define FMHA_VALUE_ACCUMULATORS FMHA_ACCUMULATORS_128
#define FMHA_VALUE_PLACES FMHA_PLACES_128 ", {%128, %129, %130, %131}, %132"
#endif
__device__ __forceinline__ void wgmma_values(float (&d)[FMHA_HEAD_DIM / 2], const uint32_t (&a)[4], uint64_t b) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n" FMHA_STRING(FMHA_HEAD_DIM) "k16" FMHA_MMA_TYPES " " FMHA_VALUE_PLACES
                 ", p, 1, 1, 1;\n}\n"
                 : FMHA_VALUE_ACCUMULATORS : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

/// `shape` as for fmha_reference_forward (K, Kv ≤ FMHA_HEAD_DIM, multiples of 8); `q_map`, `k_map`
/// and `v_map` the tensors' maps over (column, row, h, g, b) with boxes of 64 columns × 128 rows (Q) or FMHA_BLOCK_N rows (K, V)
/// (a dimension of stride 0 has extent 1: its coordinate is 0). `work`: per blockIdx.x,
/// FMHA_WORK_WORDS words (block, first and end query, key range, the range every row sees). Heads
/// (b, g, h) are blockIdx.y, then every gridDim.y-th. Writes out[((b·Mq + i)·G + g)·H + h][0 ..< Kv]
/// in `out_dtype` and the natural-log LSE at [((b·G + g)·H + h)·Mq + i] (-inf for a row that sees no
/// key; its output is 0).
extern "C" __global__ void __launch_bounds__(FMHA_THREADS, 1) fmha_hopper_forward(
    const __grid_constant__ TensorMap q_map, const __grid_constant__ TensorMap k_map, const __grid_constant__ TensorMap v_map,
    void* out, float* lse, const int64_t* shape, const int64_t* mask, const int64_t* work, float scale_log2, int64_t out_dtype) {
    extern __shared__ __align__(1024) uint8_t shared_bytes[];
    // Barriers: Q full and empty, then per stage K full, V full, K empty, V empty.
    __shared__ __align__(8) uint64_t barriers[2 + 4 * FMHA_STAGES];
    const uint32_t tiles = (shared_address(shared_bytes) + 1023) & ~1023u;
    const uint32_t query_tile = tiles;
    auto key_tile = [&](int stage) { return tiles + FMHA_Q_BYTES + 2 * stage * FMHA_KV_BYTES; };
    auto value_tile = [&](int stage) { return key_tile(stage) + FMHA_KV_BYTES; };
    const uint32_t query_full = shared_address(&barriers[0]), query_empty = query_full + 8;
    auto key_full = [&](int stage) { return query_full + 8 * (2 + 4 * stage); };
    auto value_full = [&](int stage) { return key_full(stage) + 8; };
    auto key_empty = [&](int stage) { return key_full(stage) + 16; };
    auto value_empty = [&](int stage) { return key_full(stage) + 24; };
    // The consumers' warps, each of which arrives once on an empty barrier.
    constexpr uint32_t consumer_warps = 8;

    const int thread = threadIdx.x, warpgroup = thread / 128, lane = thread % 32;
    if (thread == 0) {
        barrier_init(query_full, 1);
        barrier_init(query_empty, consumer_warps);
        for (int stage = 0; stage < FMHA_STAGES; ++stage) {
            barrier_init(key_full(stage), 1);
            barrier_init(value_full(stage), 1);
            barrier_init(key_empty(stage), consumer_warps);
            barrier_init(value_empty(stage), consumer_warps);
        }
        // (The copy engine, another proxy, sees the initialized barriers.)
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    }
    __syncthreads();

    // What both roles read of the call and the tile (read after setmaxnreg: values live across it
    // count against the 168 registers every thread has before it, and spilled there).
    auto tile = [&](int word) { return work[FMHA_WORK_WORDS * int64_t(blockIdx.x) + word]; };
    auto key_tile_count = [&] {
        const int lo = int(tile(3)), hi = int(tile(4));
        return hi > lo ? (hi - lo + FMHA_BLOCK_N - 1) / FMHA_BLOCK_N : 0;
    };
    // (Fewer than 2^32: the operator checks.)
    auto total_heads = [&] { return shape[0] * shape[3] * shape[4]; };

    if (warpgroup == 0) {
        // The producer: one thread issues every copy; the other warps have nothing to do.
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" :: "n"(FMHA_PRODUCER_REGISTERS));
        if (thread != 0) return;
        const uint32_t groups = uint32_t(shape[3]), heads = uint32_t(shape[4]), head_count = uint32_t(total_heads());
        const int64_t tile_start = tile(1);
        const int64_t* qs = shape + 9;
        const int64_t* ks = shape + 13;
        const int64_t* vs = shape + 17;
        const int key_lo = int(tile(3)), key_tiles = key_tile_count();
        int round = 0, filled = 0;
        for (uint32_t head_index = blockIdx.y; head_index < head_count; head_index += gridDim.y, ++round) {
            if (key_tiles == 0) continue;
            const int h = int(head_index % heads), g = int((head_index / heads) % groups), b = int(head_index / (heads * groups));
            // The boxes of one tile of `rows` rows from `first_row` into `destination`, on `barrier`
            // (a dimension of stride 0, `strides` over (b, m, g, h), is a map dimension of extent 1).
            auto copy_tile = [&](uint32_t destination, int rows, const TensorMap& map, const int64_t* strides, int first_row,
                                 uint32_t barrier) {
                for (int box = 0; box < FMHA_BOXES; ++box) {
                    tensor_copy(destination + box * rows * 128, map, 64 * box, first_row, strides[3] == 0 ? 0 : h,
                                strides[2] == 0 ? 0 : g, strides[0] == 0 ? 0 : b, barrier);
                }
            };
            barrier_wait(query_empty, (round & 1) ^ 1);
            barrier_arrive_expecting(query_full, FMHA_Q_BYTES);
            copy_tile(query_tile, FMHA_BLOCK_M, q_map, qs, int(tile_start), query_full);
            for (int t = 0; t < key_tiles; ++t, ++filled) {
                const int stage = filled % FMHA_STAGES, parity = ((filled / FMHA_STAGES) & 1) ^ 1;
                const int first_key = key_lo + t * FMHA_BLOCK_N;
                barrier_wait(key_empty(stage), parity);
                barrier_arrive_expecting(key_full(stage), FMHA_KV_BYTES);
                copy_tile(key_tile(stage), FMHA_BLOCK_N, k_map, ks, first_key, key_full(stage));
                barrier_wait(value_empty(stage), parity);
                barrier_arrive_expecting(value_full(stage), FMHA_KV_BYTES);
                copy_tile(value_tile(stage), FMHA_BLOCK_N, v_map, vs, first_key, value_full(stage));
            }
        }
        return;
    }

    // A consumer warpgroup: rows 64·(warpgroup - 1) ..< + 64 of the tile; this thread's rows
    // row[0] and row[1] = row[0] + 8.
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" :: "n"(FMHA_CONSUMER_REGISTERS));
    const int64_t queries = shape[1];
    const uint32_t groups = uint32_t(shape[3]), heads = uint32_t(shape[4]), head_count = uint32_t(total_heads());
    const int value_dim = int(shape[6]);
    const int64_t block = tile(0), tile_start = tile(1), tile_end = tile(2);
    const int key_lo = int(tile(3)), key_hi = int(tile(4)), inner_lo = int(tile(5)), inner_hi = int(tile(6));
    const int key_tiles = key_tile_count();
    const int group_row = 64 * (warpgroup - 1), warp_in_group = (thread / 32) % 4;
    const int64_t row[2] = {tile_start + group_row + 16 * warp_in_group + lane / 4, tile_start + group_row + 16 * warp_in_group + lane / 4 + 8};
    const fmha::Lowering lowering{mask};
    int lo[2], hi[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const fmha::KeyRange keys = row[r] < tile_end ? lowering.row_keys(block, row[r]) : fmha::KeyRange{0, 0};
        lo[r] = int(keys.lo);
        hi[r] = int(keys.hi);
    }
    const int column = 2 * (lane % 4);
    // K-major descriptors step 32 bytes per 16 columns inside a box; 8-row groups are 1024 bytes
    // apart. V (MN-major): 16 keys are 2048 bytes, 64-column boxes FMHA_BLOCK_N · 128 apart.
    auto query_descriptor = [&](int chunk) {
        return matrix_descriptor(query_tile + (chunk / 4) * FMHA_BLOCK_M * 128 + group_row * 128 + (chunk % 4) * 32, 16, 1024);
    };
    auto key_descriptor = [&](int stage, int chunk) {
        return matrix_descriptor(key_tile(stage) + (chunk / 4) * FMHA_BLOCK_N * 128 + (chunk % 4) * 32, 16, 1024);
    };
    auto value_descriptor = [&](int stage, int chunk) {
        return matrix_descriptor(value_tile(stage) + chunk * 2048, FMHA_BLOCK_N * 128, 1024);
    };

    // The two consumers take turns issuing their products (named barriers 1 and 2: consumer c
    // waits on 1 + c, then lets the other go), so that one's softmax overlaps the other's matrix
    // work (FlashAttention-3's ping-pong). A turn issues O += P·V of the previous key tile and
    // S = Q·Kᵀ of the next; consumer 0 takes the first turn without waiting, and absorbs the
    // other's last hand-over at the end.
    // (Read from threadIdx where used: kept in a register through the loop, it spilled.)
    auto consumer = [] { return int(threadIdx.x / 128) - 1; };
    // (Consumer 0's first turn is turn 0 of its first head; a block's heads all have key tiles or none.)
    auto take_turn = [&](bool first) {
        if (consumer() == 1 || !first) asm volatile("bar.sync %0, 256;" :: "r"(1 + consumer()) : "memory");
    };
    auto hand_over = [&] { asm volatile("bar.arrive %0, 256;" :: "r"(2 - consumer()) : "memory"); };

    int round = 0, consumed = 0;
    for (uint32_t head_index = blockIdx.y; head_index < head_count; head_index += gridDim.y, ++round) {
        const int64_t h = head_index % heads, g = (head_index / heads) % groups, b = head_index / (heads * groups);
        float output[FMHA_HEAD_DIM / 2];
#pragma unroll
        for (int i = 0; i < FMHA_HEAD_DIM / 2; ++i) output[i] = 0.0f;
        // Running maximum (base 2, scaled) and this thread's part of the row sums.
        float maximum[2] = {-FMHA_INFINITY, -FMHA_INFINITY}, sum[2] = {0.0f, 0.0f};
        uint32_t probability[FMHA_BLOCK_N / 16][4];
        if (key_tiles > 0) barrier_wait(query_full, round & 1);
        // Turn t (t ≤ key_tiles): O += P·V of key tile t - 1 (t > 0), S = Q·Kᵀ of tile t (t < key_tiles).
        for (int t = 0; t <= key_tiles && key_tiles > 0; ++t) {
            const int stage = (consumed + t) % FMHA_STAGES, parity = ((consumed + t) / FMHA_STAGES) & 1;
            const int previous = (consumed + t - 1) % FMHA_STAGES, previous_parity = ((consumed + t - 1) / FMHA_STAGES) & 1;
            const int first_key = key_lo + t * FMHA_BLOCK_N;
            float score[FMHA_BLOCK_N / 2];
            if (t > 0) barrier_wait(value_full(previous), previous_parity);
            if (t < key_tiles) barrier_wait(key_full(stage), parity);
            take_turn(round == 0 && t == 0);
#pragma unroll
            for (int i = 0; i < FMHA_HEAD_DIM / 2; ++i) pin(output[i]);
            wgmma_fence();
            if (t > 0) {
#pragma unroll
                for (int chunk = 0; chunk < FMHA_BLOCK_N / 16; ++chunk) wgmma_values(output, probability[chunk], value_descriptor(previous, chunk));
            }
            if (t < key_tiles) {
#pragma unroll
                for (int chunk = 0; chunk < FMHA_HEAD_DIM / 16; ++chunk) {
                    wgmma_scores(score, query_descriptor(chunk), key_descriptor(stage, chunk), chunk > 0);
                }
            }
            wgmma_commit();
            hand_over();
            wgmma_wait_all();
            // (P's registers, which O += P·V reads while it runs, stay untouched until here too.)
#pragma unroll
            for (int i = 0; i < FMHA_HEAD_DIM / 2; ++i) pin(output[i]);
#pragma unroll
            for (int i = 0; i < FMHA_BLOCK_N / 16; ++i) pin(probability[i][0]), pin(probability[i][1]), pin(probability[i][2]), pin(probability[i][3]);
            if (t == key_tiles) break;
#pragma unroll
            for (int i = 0; i < FMHA_BLOCK_N / 2; ++i) pin(score[i]);
            if (lane == 0) {
                if (t > 0) barrier_arrive(value_empty(previous));
                barrier_arrive(key_empty(stage));
                if (t == key_tiles - 1) barrier_arrive(query_empty);
            }
            // The last tile's V rows past the keys some row sees (another block's keys, padding)
            // are zeroed before any product reads them: P is 0 there, and 0·NaN would leak.
            const int kept_rows = key_hi - first_key;
            if (t == key_tiles - 1 && kept_rows < FMHA_BLOCK_N) {
                barrier_wait(value_full(stage), parity);
                // (Consumer thread i zeroes 16 bytes of rows kept_rows + i / 8, + 32, ... in every box.)
                const int piece = (thread % 8) * 16;
                for (int r = kept_rows + (thread - 128) / 8; r < FMHA_BLOCK_N; r += 32) {
#pragma unroll
                    for (int box = 0; box < FMHA_BOXES; ++box) {
                        asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};"
                                     :: "r"(value_tile(stage) + box * FMHA_BLOCK_N * 128 + r * 128 + piece), "r"(0) : "memory");
                    }
                }
                asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
                asm volatile("bar.sync 3, 256;" ::: "memory");
            }
            // Mask (only tiles that reach past some row's keys), then the online softmax in base 2
            // on the unscaled scores: the maximum is taken before scaling (by factor > 0) and each
            // probability is exp2(score · factor - base), one fused multiply-add. (A scale ≤ 0 is
            // applied to the scores first.)
            if (scale_log2 <= 0.0f) {
#pragma unroll
                for (int i = 0; i < FMHA_BLOCK_N / 2; ++i) score[i] *= scale_log2;
            }
            const float factor = scale_log2 > 0.0f ? scale_log2 : 1.0f;
            if (!(first_key >= inner_lo && first_key + FMHA_BLOCK_N <= inner_hi)) {
#pragma unroll
                for (int i = 0; i < FMHA_BLOCK_N / 8; ++i) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int key = first_key + 8 * i + column + e % 2, r = e / 2;
                        const bool visible = key >= lo[r] && key < hi[r];
                        score[4 * i + e] = visible ? score[4 * i + e] : -FMHA_INFINITY;
                    }
                }
            }
            float tile_maximum[2] = {-FMHA_INFINITY, -FMHA_INFINITY};
#pragma unroll
            for (int i = 0; i < FMHA_BLOCK_N / 8; ++i) {
                tile_maximum[0] = fmaxf(tile_maximum[0], fmaxf(score[4 * i], score[4 * i + 1]));
                tile_maximum[1] = fmaxf(tile_maximum[1], fmaxf(score[4 * i + 2], score[4 * i + 3]));
            }
            float base[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                tile_maximum[r] = fmaxf(tile_maximum[r], __shfl_xor_sync(0xffffffffu, tile_maximum[r], 1));
                tile_maximum[r] = fmaxf(tile_maximum[r], __shfl_xor_sync(0xffffffffu, tile_maximum[r], 2));
                const float new_maximum = fmaxf(maximum[r], tile_maximum[r] * factor);
                // A row that has seen no key yet keeps maximum -inf; subtract 0 so that exp2 gives 0.
                base[r] = new_maximum == -FMHA_INFINITY ? 0.0f : new_maximum;
                const float rescale = exp2_approx(maximum[r] - base[r]);
                maximum[r] = new_maximum;
                sum[r] *= rescale;
#pragma unroll
                for (int i = 0; i < FMHA_HEAD_DIM / 8; ++i) {
                    output[4 * i + 2 * r] *= rescale;
                    output[4 * i + 2 * r + 1] *= rescale;
                }
            }
#pragma unroll
            for (int i = 0; i < FMHA_BLOCK_N / 8; ++i) {
                const float p0 = exp2_approx(fmaf(score[4 * i], factor, -base[0])), p1 = exp2_approx(fmaf(score[4 * i + 1], factor, -base[0]));
                const float p2 = exp2_approx(fmaf(score[4 * i + 2], factor, -base[1])), p3 = exp2_approx(fmaf(score[4 * i + 3], factor, -base[1]));
                sum[0] += p0 + p1;
                sum[1] += p2 + p3;
                probability[i / 2][(i % 2) * 2] = pack_pair(p0, p1);
                probability[i / 2][(i % 2) * 2 + 1] = pack_pair(p2, p3);
            }
        }
        if (key_tiles > 0) {
            if (lane == 0) barrier_arrive(value_empty((consumed + key_tiles - 1) % FMHA_STAGES));
            consumed += key_tiles;
        }

        // Normalize and write this thread's rows.
        const float ln2 = 0.6931471805599453f;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
            sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
            if (row[r] >= tile_end) continue;
            // (0 for a row that sees no key; NaN stays NaN.)
            const float inverse = sum[r] != 0.0f ? __frcp_rn(sum[r]) : 0.0f;
            const int64_t out_row = (((b * queries + row[r]) * groups + g) * heads + h) * value_dim;
            // Pairs of columns 8i + column, + 1, stored at constant offsets from the row: float32, or
            // both rounded to nearest by one cvt (float16, bfloat16).
            if (out_dtype == 0) {
                float* const destination = static_cast<float*>(out) + out_row + column;
#pragma unroll
                for (int i = 0; i < FMHA_HEAD_DIM / 8; ++i) {
                    if (8 * i + column < value_dim) {
                        *reinterpret_cast<float2*>(destination + 8 * i) = make_float2(output[4 * i + 2 * r] * inverse, output[4 * i + 2 * r + 1] * inverse);
                    }
                }
            } else {
                uint32_t* const destination = reinterpret_cast<uint32_t*>(static_cast<uint16_t*>(out) + out_row + column);
                const bool half = out_dtype == 1;
#pragma unroll
                for (int i = 0; i < FMHA_HEAD_DIM / 8; ++i) {
                    if (8 * i + column < value_dim) {
                        const float low = output[4 * i + 2 * r] * inverse, high = output[4 * i + 2 * r + 1] * inverse;
                        uint32_t pair;
                        if (half) {
                            asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(pair) : "f"(high), "f"(low));
                        } else {
                            asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(pair) : "f"(high), "f"(low));
                        }
                        destination[4 * i] = pair;
                    }
                }
            }
            if (lane % 4 == 0) {
                lse[((b * groups + g) * heads + h) * queries + row[r]] = sum[r] != 0.0f ? maximum[r] * ln2 + logf(sum[r]) : -FMHA_INFINITY;
            }
        }
    }
    if (consumer() == 0 && key_tiles > 0) asm volatile("bar.sync 1, 256;" ::: "memory");
}
