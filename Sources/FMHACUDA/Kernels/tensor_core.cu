// Tensor-core building blocks shared by the flash forward and backward kernels (compiled after
// prelude.cu and before the kernel file; needs FMHA_DTYPE: 1 float16, 2 bfloat16): 16-bit pairs
// of the input type, exp2, mma.sync m16n8k16 with float32 accumulation, ldmatrix and cp.async.
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

/// Word `index` (0 ..< 4) of `words`.
__device__ __forceinline__ uint32_t word_at(const fmha::Words4& words, int index) {
    return index == 0 ? words.x : index == 1 ? words.y : index == 2 ? words.z : words.w;
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
