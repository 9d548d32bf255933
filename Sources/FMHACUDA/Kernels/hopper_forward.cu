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

/// Keeps the compiler from moving accesses of `x` across a wgmma issue or wait.
__device__ __forceinline__ void pin(float& x) { asm volatile("" : "+f"(x) :: "memory"); }
__device__ __forceinline__ void pin(uint32_t& x) { asm volatile("" : "+r"(x) :: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }

/// d (+)= A·B for one k16 step of S = Q·Kᵀ: A = the warpgroup's 64 query rows × 16 columns
/// (descriptor `a`), B = FMHA_BLOCK_N keys × 16 columns (descriptor `b`), both K-major; `accumulate`
/// 0 overwrites d. Accumulator layout: warp w of the warpgroup holds rows 16w + lane / 4 and + 8;
/// d[4i + e] is row + 8·(e / 2), column 8i + 2·(lane % 4) + e % 2.
#if FMHA_BLOCK_N == 128
__device__ __forceinline__ void wgmma_scores(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16" FMHA_MMA_TYPES " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(accumulate));
}
#else
__device__ __forceinline__ void wgmma_scores(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16" FMHA_MMA_TYPES " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(accumulate));
}
#endif

/// d += A·B for one k16 step of O = P·V: A = the warpgroup's 64 rows × 16 keys of P in registers
/// (mma.sync's A fragment layout per warp), B = 16 keys × FMHA_HEAD_DIM columns of V (descriptor
/// `b`, MN-major). d as for wgmma_scores, columns being V's.
#if FMHA_HEAD_DIM == 64
__device__ __forceinline__ void wgmma_values(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16" FMHA_MMA_TYPES " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
#elif FMHA_HEAD_DIM == 128
__device__ __forceinline__ void wgmma_values(float (&d)[64], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16" FMHA_MMA_TYPES " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
#elif FMHA_HEAD_DIM == 192
__device__ __forceinline__ void wgmma_values(float (&d)[96], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n192k16" FMHA_MMA_TYPES " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95}, "
        "{%96, %97, %98, %99}, %100, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
#else
__device__ __forceinline__ void wgmma_values(float (&d)[128], const uint32_t (&a)[4], uint64_t b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16" FMHA_MMA_TYPES " "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
        "{%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
#endif

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
            // A dimension of stride 0 is a map dimension of extent 1.
            auto coordinate = [](const int64_t* strides, int dimension, int index) { return strides[dimension] == 0 ? 0 : index; };
            barrier_wait(query_empty, (round & 1) ^ 1);
            barrier_arrive_expecting(query_full, FMHA_Q_BYTES);
            for (int box = 0; box < FMHA_BOXES; ++box) {
                tensor_copy(query_tile + box * FMHA_BLOCK_M * 128, q_map, 64 * box, int(tile_start), coordinate(qs, 3, h),
                            coordinate(qs, 2, g), coordinate(qs, 0, b), query_full);
            }
            for (int t = 0; t < key_tiles; ++t, ++filled) {
                const int stage = filled % FMHA_STAGES, parity = ((filled / FMHA_STAGES) & 1) ^ 1;
                const int first_key = key_lo + t * FMHA_BLOCK_N;
                barrier_wait(key_empty(stage), parity);
                barrier_arrive_expecting(key_full(stage), FMHA_KV_BYTES);
                for (int box = 0; box < FMHA_BOXES; ++box) {
                    tensor_copy(key_tile(stage) + box * FMHA_BLOCK_N * 128, k_map, 64 * box, first_key, coordinate(ks, 3, h),
                                coordinate(ks, 2, g), coordinate(ks, 0, b), key_full(stage));
                }
                barrier_wait(value_empty(stage), parity);
                barrier_arrive_expecting(value_full(stage), FMHA_KV_BYTES);
                for (int box = 0; box < FMHA_BOXES; ++box) {
                    tensor_copy(value_tile(stage) + box * FMHA_BLOCK_N * 128, v_map, 64 * box, first_key, coordinate(vs, 3, h),
                                coordinate(vs, 2, g), coordinate(vs, 0, b), value_full(stage));
                }
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
#pragma unroll
            for (int i = 0; i < FMHA_HEAD_DIM / 2; ++i) pin(output[i]);
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
