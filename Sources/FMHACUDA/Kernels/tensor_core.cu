// Tensor-core building blocks shared by the flash forward, backward, decode and Hopper kernels
// (compiled after prelude.cu and before the kernel file; needs FMHA_DTYPE: 1 float16, 2 bfloat16):
// 16-bit pairs of the input type, exp2, mma.sync m16n8k16 with float32 accumulation, ldmatrix,
// cp.async and mbarriers.
// Fragment layouts (PTX ISA, mma.m16n8k16): with g = lane / 4 and t = lane % 4, an A fragment
// (16×16, row-major) holds rows g and g + 8 at columns 2t, 2t + 1 and 2t + 8, 2t + 9; a B fragment
// (16×8, column-major) holds column g at rows 2t, 2t + 1 and 2t + 8, 2t + 9; an accumulator
// (16×8) holds rows g and g + 8 at columns 2t and 2t + 1.

/// Two floats as one register of two 16-bit values of the input type (`low` in the low half).
__device__ __forceinline__ uint32_t pack_pair(float low, float high) {
    uint32_t packed;
#if FMHA_DTYPE == 1
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(high), "f"(low));
#else
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(high), "f"(low));
#endif
    return packed;
}

/// The value of a 16-bit element of the input type.
__device__ __forceinline__ float input_to_float(uint16_t bits) {
#if FMHA_DTYPE == 1
    return fmha::half_to_float(bits);
#else
    return fmha::bfloat16_to_float(bits);
#endif
}

/// `value` rounded to the nearest element of the input type.
__device__ __forceinline__ uint16_t float_to_input(float value) {
#if FMHA_DTYPE == 1
    return fmha::float_to_half(value);
#else
    return fmha::float_to_bfloat16(value);
#endif
}

/// The dropout keep decisions of a warp's 16 × 8·N accumulator tiles (the layout above; N 2, 4 or
/// 8) whose rows are queries and columns keys (`keys_are_columns`), or the reverse: bit 4n + e is
/// element e of this lane's tile n (row g + 8·(e / 2), column n·8 + 2t + e % 2). Row or column 0 is
/// query `first_query` and logical key `first_key` of a block whose keys end at `key_end` (keys
/// past it get any bit: callers mask them) and sit in K/V row page_lookup(pages, page_size, key).
/// One Philox call decides four keys, so lanes share calls: for each 16 × 32 chunk whose keys are
/// consecutive K/V rows (no pages, or within one page), lane L draws the calls L, L + 32, ... of the
/// chunk's (query, group of four keys) pairs (4 a lane, 5 when the keys start off a multiple of 4;
/// one each would be 16), keeps their decisions as nibbles of one word, and every lane gathers its
/// elements' bits from those words by shuffles. Other chunks draw one call per element.
template <int N, bool keys_are_columns>
__device__ __forceinline__ uint32_t dropout_keep_bits(const fmha::DropoutMask& mask, uint32_t head, int64_t first_query,
                                                      int first_key, int key_end, const int64_t* pages, int page_size) {
    static_assert(N == 2 || N == 4 || N == 8, "N: 2, 4 or 8 tiles of 8 columns");
    constexpr int chunk_tiles = N < 4 ? N : 4, chunk_columns = 8 * chunk_tiles;
    constexpr int chunk_keys = keys_are_columns ? chunk_columns : 16, chunk_queries = keys_are_columns ? 16 : chunk_columns;
    // Draws a lane makes: the pairs of a chunk whose keys start at 3 mod 4, over the warp.
    constexpr int rounds = (chunk_queries * (chunk_keys / 4 + 1) + 31) / 32;
    static_assert(rounds <= 8, "a nibble of one word per draw");
    const int lane = threadIdx.x % 32;
    uint32_t bits = 0;
#pragma unroll
    for (int chunk = 0; chunk < N / chunk_tiles; ++chunk) {
        const int chunk_key = first_key + (keys_are_columns ? chunk * chunk_columns : 0);
        const int64_t chunk_query = first_query + (keys_are_columns ? 0 : chunk * chunk_columns);
        const int last_key = min(chunk_key + chunk_keys, key_end) - 1;
        if (last_key < chunk_key) continue;  // (every key of the chunk is masked)
        // This lane's element e of tile n: its key and query relative to the chunk's.
        auto element_key = [&](int n, int e) { return keys_are_columns ? n * 8 + (lane % 4) * 2 + e % 2 : lane / 4 + 8 * (e / 2); };
        auto element_query = [&](int n, int e) { return keys_are_columns ? lane / 4 + 8 * (e / 2) : n * 8 + (lane % 4) * 2 + e % 2; };
        if (page_size == 0 || chunk_key / page_size == last_key / page_size) {
            const int64_t first_row = fmha::page_lookup(pages, page_size, chunk_key);
            const int skew = int(first_row & 3);
            const int pairs = (skew + chunk_keys + 3) / 4 * chunk_queries;
            uint32_t nibbles = 0;
#pragma unroll
            for (int round = 0; round < rounds; ++round) {
                if (32 * round >= pairs) break;
                const int pair = lane + 32 * round;
                const fmha::Words4 words = mask.words(head, uint32_t(chunk_query + pair % chunk_queries),
                                                      uint32_t(first_row >> 2) + uint32_t(pair / chunk_queries));
                const uint32_t decided = uint32_t(mask.keeps(words.x)) | uint32_t(mask.keeps(words.y)) << 1 |
                                         uint32_t(mask.keeps(words.z)) << 2 | uint32_t(mask.keeps(words.w)) << 3;
                nibbles |= decided << (4 * round);
            }
#pragma unroll
            for (int n = 0; n < chunk_tiles; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int key = skew + element_key(n, e), pair = key / 4 * chunk_queries + element_query(n, e);
                    const uint32_t drawn = __shfl_sync(0xffffffffu, nibbles, pair % 32);
                    bits |= ((drawn >> (4 * (pair / 32) + key % 4)) & 1u) << (4 * (chunk * chunk_tiles + n) + e);
                }
            }
        } else {
#pragma unroll
            for (int n = 0; n < chunk_tiles; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int64_t row = fmha::page_lookup(pages, page_size, min(chunk_key + element_key(n, e), last_key));
                    const bool kept = mask.is_kept(head, uint32_t(chunk_query + element_query(n, e)), uint32_t(row));
                    bits |= uint32_t(kept) << (4 * (chunk * chunk_tiles + n) + e);
                }
            }
        }
    }
    return bits;
}

/// 2^x (ex2.approx: 2 ulp, -inf gives 0).
__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/// accumulator += a·b for one 16×8 tile (a: 16×16 row-major fragment, b: 16×8 column-major).
__device__ __forceinline__ void mma_16x8x16(float (&accumulator)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if FMHA_DTYPE == 1
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
#endif
                 : "+f"(accumulator[0]), "+f"(accumulator[1]), "+f"(accumulator[2]), "+f"(accumulator[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/// The two 16×8 products of one x4 ldmatrix of B fragments: first += a·(b[0], b[1]) and
/// second += a·(b[2], b[3]).
__device__ __forceinline__ void mma_16x16x16(float (&first)[4], float (&second)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[4]) {
    mma_16x8x16(first, a, b[0], b[1]);
    mma_16x8x16(second, a, b[2], b[3]);
}

/// The shared-memory address (32 bits) of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
    uint32_t address;
    asm("{ .reg .u64 generic; cvta.to.shared.u64 generic, %1; cvt.u32.u64 %0, generic; }" : "=r"(address) : "l"(pointer));
    return address;
}

/// Four 8×8 matrices of 16-bit values from shared memory (`ldmatrix`): lane t gives the shared
/// address (bytes) of row t % 8 of matrix t / 8 and receives, of each matrix, the pair at row t / 4,
/// columns 2·(t % 4). Addresses are 32-bit base + compile-time offset, so that ptxas folds the
/// offset into the instruction (generic pointers cost three integer instructions per load).
__device__ __forceinline__ void load_matrices(uint32_t address, uint32_t (&matrices)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(matrices[0]), "=r"(matrices[1]), "=r"(matrices[2]), "=r"(matrices[3]) : "r"(address));
}

/// Four 8×8 matrices, transposed (`ldmatrix .trans`): lane t receives, of each matrix, the pair at
/// column t / 4, rows 2·(t % 4) and 2·(t % 4) + 1.
__device__ __forceinline__ void load_matrices_transposed(uint32_t address, uint32_t (&matrices)[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(matrices[0]), "=r"(matrices[1]), "=r"(matrices[2]), "=r"(matrices[3]) : "r"(address));
}

/// Starts a 16-byte copy from global `source` to the shared address `destination` (cp.async,
/// cached in L2 only); when `valid` is false nothing is read and the 16 bytes are zeroed.
__device__ __forceinline__ void copy_16_bytes_async(uint32_t destination, const uint16_t* source, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(destination), "l"(source), "r"(valid ? 16 : 0) : "memory");
}

/// mbarrier (shared address `barrier`): set up for `count` arrivals per phase.
__device__ __forceinline__ void barrier_init(uint32_t barrier, uint32_t count) {
    asm volatile("mbarrier.init.shared.b64 [%0], %1;" :: "r"(barrier), "r"(count) : "memory");
}

/// One arrival on `barrier` (release: this thread's earlier shared-memory accesses are ordered before it).
__device__ __forceinline__ void barrier_arrive(uint32_t barrier) {
    asm volatile("{ .reg .b64 state; mbarrier.arrive.shared.b64 state, [%0]; }" :: "r"(barrier) : "memory");
}

/// One arrival on `barrier` once every cp.async this thread has started so far has landed.
__device__ __forceinline__ void barrier_arrive_on_copies(uint32_t barrier) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];" :: "r"(barrier) : "memory");
}

/// Waits until the phase of `barrier` with parity `parity` has completed (on sm_90 and newer with
/// try_wait, which suspends the thread for a while instead of spinning on issue slots).
__device__ __forceinline__ void barrier_wait(uint32_t barrier, uint32_t parity) {
    uint32_t done;
    do {
#if __CUDA_ARCH__ >= 900
        asm volatile("{ .reg .pred complete; mbarrier.try_wait.parity.shared::cta.b64 complete, [%1], %2; selp.u32 %0, 1, 0, complete; }"
                     : "=r"(done) : "r"(barrier), "r"(parity) : "memory");
#else
        asm volatile("{ .reg .pred complete; mbarrier.test_wait.parity.shared.b64 complete, [%1], %2; selp.u32 %0, 1, 0, complete; }"
                     : "=r"(done) : "r"(barrier), "r"(parity) : "memory");
#endif
    } while (!done);
}
