// The tensor-core forward (FlashAttention-2 scheme): one thread block of four warps per (tile of
// 64 queries of one mask block, head); each warp owns 16 queries. K/V tiles of 64 keys go through
// shared memory; S = Q·Kᵀ and O += P·V are mma.sync m16n8k16 with float32 accumulation; the
// softmax is online, in registers, in base 2 with the scale folded in. Every bias without a tensor
// goes through the mask encoding (DeviceMask.swift): only the key range some query of the tile
// sees is visited, and keys outside a query's own range are masked per element.
// Needs prelude.cu and the defines FMHA_HEAD_DIM (a multiple of 16, at most 128) and FMHA_DTYPE
// (1: float16, 2: bfloat16).

#define FMHA_BLOCK_M 64
#define FMHA_BLOCK_N 64
#define FMHA_ROW (FMHA_HEAD_DIM + 8)
#define FMHA_NEG_INFINITY __int_as_float(0xff800000)

static_assert(FMHA_HEAD_DIM % 16 == 0 && FMHA_HEAD_DIM <= 128, "FMHA_HEAD_DIM: a multiple of 16, at most 128");

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

/// Two adjacent 16-bit elements of shared memory as one register.
__device__ __forceinline__ uint32_t load_pair(const uint16_t* address) {
    return *reinterpret_cast<const uint32_t*>(address);
}

/// The shared-memory address (32 bits) of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t shared_address(const void* pointer) {
    uint32_t address;
    asm("{ .reg .u64 generic; cvta.to.shared.u64 generic, %1; cvt.u32.u64 %0, generic; }" : "=r"(address) : "l"(pointer));
    return address;
}

/// Four 8×8 matrices of 16-bit values from shared memory, transposed (`ldmatrix .trans`): lane t
/// gives the address of row t % 8 of matrix t / 8 and receives one register of each matrix.
__device__ __forceinline__ void load_matrices_transposed(const uint16_t* row, uint32_t (&matrices)[4]) {
    const uint32_t address = shared_address(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(matrices[0]), "=r"(matrices[1]), "=r"(matrices[2]), "=r"(matrices[3]) : "r"(address));
}

/// Starts a 16-byte copy from global `source` to shared `destination` (cp.async, cached in L2
/// only); when `valid` is false nothing is read and the 16 bytes are zeroed.
__device__ __forceinline__ void copy_16_bytes_async(uint16_t* destination, const uint16_t* source, bool valid) {
    const uint32_t address = shared_address(destination);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(address), "l"(source), "r"(valid ? 16 : 0) : "memory");
}

/// Writes `value` as element `index` of a float32 (0), float16 (1) or bfloat16 (2) array.
__device__ __forceinline__ void store_element(void* base, int64_t index, int64_t dtype, float value) {
    if (dtype == 1) static_cast<uint16_t*>(base)[index] = fmha::float_to_half(value);
    else if (dtype == 2) static_cast<uint16_t*>(base)[index] = fmha::float_to_bfloat16(value);
    else static_cast<float*>(base)[index] = value;
}

/// `shape` and `mask` as for fmha_reference_forward (K = Kv = FMHA_HEAD_DIM, no tensor bias).
/// `vector_loads`: every row of q, k and v starts 16-byte aligned (rows move 8 elements at a time).
/// `work`: per blockIdx.x, the mask block and the first query of its tile. Heads (b, g, h) are
/// blockIdx.y, then every gridDim.y-th. Writes out[((b·Mq + i)·G + g)·H + h][0 ..< K] in
/// `out_dtype` and the natural-log LSE at [((b·G + g)·H + h)·Mq + i] (-inf for a row that sees no
/// key; its output is 0).
extern "C" __global__ void __launch_bounds__(128, 2) fmha_flash_forward(
    const uint16_t* q, const uint16_t* k, const uint16_t* v, void* out, float* lse, const int64_t* shape,
    const int64_t* mask, const int64_t* work, float scale_log2, int64_t out_dtype, int32_t vector_loads) {
    __shared__ __align__(16) uint16_t key_tile[FMHA_BLOCK_N * FMHA_ROW];
    __shared__ __align__(16) uint16_t value_tile[FMHA_BLOCK_N * FMHA_ROW];

    const int64_t batch = shape[0], queries = shape[1], groups = shape[3], heads = shape[4];
    const int64_t* qs = shape + 9;
    const int64_t* ks = shape + 13;
    const int64_t* vs = shape + 17;
    const int64_t anchor = mask[0], left = mask[1], right = mask[2], blocks = mask[3];
    const int64_t page_size = mask[4], pages_per_row = mask[5];
    const int64_t* query_starts = mask + 6;
    const int64_t* key_starts = query_starts + blocks + 1;
    const int64_t* key_lengths = key_starts + blocks;
    const int64_t* pages = key_lengths + blocks;

    const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32;
    const int64_t block = work[2 * blockIdx.x], tile_start = work[2 * blockIdx.x + 1];
    int64_t first_query = 0, nq = queries, nk = shape[2], key_start = 0;
    if (blocks > 0) {
        first_query = query_starts[block];
        nq = query_starts[block + 1] - first_query;
        nk = key_lengths[block];
        key_start = key_starts[block];
    }
    const int64_t tile_end = min(tile_start + FMHA_BLOCK_M, first_query + nq);
    const int64_t reach = nq + nk;

    // The visible logical keys [lo, hi) of query i (empty when lo >= hi).
    auto range_of = [&](int64_t i, int& lo, int& hi) {
        const int64_t diagonal = (i - first_query) + (anchor == 1 ? nk - nq : 0);
        int64_t low = 0, high = nk;
        if (left >= 0) low = max(int64_t(0), diagonal - min(left, reach));
        if (right >= 0) high = min(nk, diagonal + min(right, reach) + 1);
        if (i >= tile_end) high = low;
        lo = int(low);
        hi = int(high);
    };
    // This thread's two rows of the accumulator tiles.
    const int64_t row0 = tile_start + warp * 16 + lane / 4, row1 = row0 + 8;
    int lo0, hi0, lo1, hi1;
    range_of(row0, lo0, hi0);
    range_of(row1, lo1, hi1);
    // The tile's key range: the union of its rows' ranges (contiguous: consecutive rows' ranges
    // move by at most one key).
    int first_lo, first_hi, last_lo, last_hi, tile_lo = 0, tile_hi = 0;
    for (int64_t i = tile_start; i < tile_end; ++i) {
        range_of(i, first_lo, first_hi);
        if (first_lo < first_hi) { tile_lo = first_lo; break; }
    }
    for (int64_t i = tile_end - 1; i >= tile_start; --i) {
        range_of(i, last_lo, last_hi);
        if (last_lo < last_hi) { tile_hi = last_hi; break; }
    }

    const int64_t head_count = batch * groups * heads;
    for (int64_t head_index = blockIdx.y; head_index < head_count; head_index += gridDim.y) {
        const int64_t h = head_index % heads, g = (head_index / heads) % groups, b = head_index / (heads * groups);

        // Q tile → shared memory (through the key buffer) → A fragments of this warp's 16 rows.
        const int64_t q_head = b * qs[0] + g * qs[2] + h * qs[3];
        if (vector_loads) {
            for (int index = thread; index < FMHA_BLOCK_M * FMHA_HEAD_DIM / 8; index += 128) {
                const int r = index / (FMHA_HEAD_DIM / 8), c = (index % (FMHA_HEAD_DIM / 8)) * 8;
                const int64_t i = tile_start + r;
                *reinterpret_cast<uint4*>(key_tile + r * FMHA_ROW + c) =
                    i < tile_end ? *reinterpret_cast<const uint4*>(q + q_head + i * qs[1] + c) : make_uint4(0, 0, 0, 0);
            }
        } else {
            for (int index = thread; index < FMHA_BLOCK_M * FMHA_HEAD_DIM; index += 128) {
                const int r = index / FMHA_HEAD_DIM, c = index % FMHA_HEAD_DIM;
                const int64_t i = tile_start + r;
                key_tile[r * FMHA_ROW + c] = i < tile_end ? q[q_head + i * qs[1] + c] : uint16_t(0);
            }
        }
        __syncthreads();
        uint32_t query_fragment[FMHA_HEAD_DIM / 16][4];
        {
            const uint16_t* base = key_tile + (warp * 16 + lane / 4) * FMHA_ROW + (lane % 4) * 2;
#pragma unroll
            for (int chunk = 0; chunk < FMHA_HEAD_DIM / 16; ++chunk) {
                query_fragment[chunk][0] = load_pair(base + chunk * 16);
                query_fragment[chunk][1] = load_pair(base + 8 * FMHA_ROW + chunk * 16);
                query_fragment[chunk][2] = load_pair(base + chunk * 16 + 8);
                query_fragment[chunk][3] = load_pair(base + 8 * FMHA_ROW + chunk * 16 + 8);
            }
        }
        __syncthreads();

        float accumulator[FMHA_HEAD_DIM / 8][4];
#pragma unroll
        for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) accumulator[n][0] = accumulator[n][1] = accumulator[n][2] = accumulator[n][3] = 0.0f;
        const int64_t k_head = b * ks[0] + g * ks[2] + h * ks[3], v_head = b * vs[0] + g * vs[2] + h * vs[3];
        float maximum0 = FMHA_NEG_INFINITY, maximum1 = FMHA_NEG_INFINITY, sum0 = 0.0f, sum1 = 0.0f;

        for (int key_tile_start = tile_lo; key_tile_start < tile_hi; key_tile_start += FMHA_BLOCK_N) {
            // K and V rows of logical keys key_tile_start + r; rows outside the tile's range are 0,
            // so that NaN in keys no query sees cannot reach the products.
            // Rows of logical keys key_tile_start + r of `source` into `tile`, as cp.async copies of
            // 16 bytes (zero-filled outside the range) when rows are aligned, else element by element.
            auto load_rows = [&](uint16_t* tile, const uint16_t* source, int64_t head_offset, int64_t row_stride) {
                const int width = vector_loads ? 8 : 1;
                for (int index = thread; index < FMHA_BLOCK_N * FMHA_HEAD_DIM / width; index += 128) {
                    const int r = index / (FMHA_HEAD_DIM / width), c = (index % (FMHA_HEAD_DIM / width)) * width;
                    const int64_t p = key_tile_start + r;
                    int64_t offset = -1;
                    if (p < tile_hi) {
                        const int64_t logical = key_start + p;
                        const int64_t j = page_size > 0
                            ? pages[block * pages_per_row + logical / page_size] * page_size + logical % page_size : logical;
                        offset = head_offset + j * row_stride + c;
                    }
                    if (vector_loads) {
                        copy_16_bytes_async(tile + r * FMHA_ROW + c, source + (offset >= 0 ? offset : 0), offset >= 0);
                    } else {
                        tile[r * FMHA_ROW + c] = offset >= 0 ? source[offset] : uint16_t(0);
                    }
                }
                asm volatile("cp.async.commit_group;");
            };
            // K, then V: the V copies land while this tile's scores are computed.
            load_rows(key_tile, k, k_head, ks[1]);
            load_rows(value_tile, v, v_head, vs[1]);
            asm volatile("cp.async.wait_group 1;" ::: "memory");
            __syncthreads();

            // S = Q·Kᵀ: eight 16×8 tiles of this warp's rows.
            float score[FMHA_BLOCK_N / 8][4];
#pragma unroll
            for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
                score[n][0] = score[n][1] = score[n][2] = score[n][3] = 0.0f;
                const uint16_t* base = key_tile + (n * 8 + lane / 4) * FMHA_ROW + (lane % 4) * 2;
#pragma unroll
                for (int chunk = 0; chunk < FMHA_HEAD_DIM / 16; ++chunk) {
                    mma_16x8x16(score[n], query_fragment[chunk], load_pair(base + chunk * 16), load_pair(base + chunk * 16 + 8));
                }
            }
            // Mask, scale to base 2, row maxima (a row's values sit in the four lanes of a quad).
            float tile_maximum0 = FMHA_NEG_INFINITY, tile_maximum1 = FMHA_NEG_INFINITY;
#pragma unroll
            for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int p = key_tile_start + n * 8 + (lane % 4) * 2 + e;
                    score[n][e] = (p >= lo0 && p < hi0) ? score[n][e] * scale_log2 : FMHA_NEG_INFINITY;
                    score[n][e + 2] = (p >= lo1 && p < hi1) ? score[n][e + 2] * scale_log2 : FMHA_NEG_INFINITY;
                    tile_maximum0 = fmaxf(tile_maximum0, score[n][e]);
                    tile_maximum1 = fmaxf(tile_maximum1, score[n][e + 2]);
                }
            }
#pragma unroll
            for (int offset = 1; offset < 4; offset *= 2) {
                tile_maximum0 = fmaxf(tile_maximum0, __shfl_xor_sync(0xffffffffu, tile_maximum0, offset));
                tile_maximum1 = fmaxf(tile_maximum1, __shfl_xor_sync(0xffffffffu, tile_maximum1, offset));
            }
            const float new_maximum0 = fmaxf(maximum0, tile_maximum0), new_maximum1 = fmaxf(maximum1, tile_maximum1);
            // A row that has seen no key yet keeps maximum -inf; subtract 0 instead so exp2 gives 0, not NaN.
            const float base0 = new_maximum0 == FMHA_NEG_INFINITY ? 0.0f : new_maximum0;
            const float base1 = new_maximum1 == FMHA_NEG_INFINITY ? 0.0f : new_maximum1;
            const float rescale0 = exp2f(maximum0 - base0), rescale1 = exp2f(maximum1 - base1);
            maximum0 = new_maximum0;
            maximum1 = new_maximum1;
            sum0 *= rescale0;
            sum1 *= rescale1;
#pragma unroll
            for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) {
                accumulator[n][0] *= rescale0;
                accumulator[n][1] *= rescale0;
                accumulator[n][2] *= rescale1;
                accumulator[n][3] *= rescale1;
            }
            // P = exp2(S - max), summed as rounded to the input type (what the product uses).
            uint32_t probability[FMHA_BLOCK_N / 16][4];
#pragma unroll
            for (int n = 0; n < FMHA_BLOCK_N / 8; ++n) {
                const uint32_t top = pack_pair(exp2f(score[n][0] - base0), exp2f(score[n][1] - base0));
                const uint32_t bottom = pack_pair(exp2f(score[n][2] - base1), exp2f(score[n][3] - base1));
                probability[n / 2][(n % 2) * 2] = top;
                probability[n / 2][(n % 2) * 2 + 1] = bottom;
#if FMHA_DTYPE == 1
                sum0 += fmha::half_to_float(uint16_t(top)) + fmha::half_to_float(uint16_t(top >> 16));
                sum1 += fmha::half_to_float(uint16_t(bottom)) + fmha::half_to_float(uint16_t(bottom >> 16));
#else
                sum0 += fmha::bfloat16_to_float(uint16_t(top)) + fmha::bfloat16_to_float(uint16_t(top >> 16));
                sum1 += fmha::bfloat16_to_float(uint16_t(bottom)) + fmha::bfloat16_to_float(uint16_t(bottom >> 16));
#endif
            }
            asm volatile("cp.async.wait_group 0;" ::: "memory");
            __syncthreads();
            // O += P·V: the B fragments of two 8-column tiles of 16 keys in one transposed ldmatrix
            // (keys 0-7 and 8-15 of columns n·8 ..< n·8 + 8, then of the next 8 columns).
#pragma unroll
            for (int chunk = 0; chunk < FMHA_BLOCK_N / 16; ++chunk) {
                const uint16_t* rows = value_tile + (chunk * 16 + lane % 16) * FMHA_ROW + (lane / 16) * 8;
#pragma unroll
                for (int n = 0; n < FMHA_HEAD_DIM / 8; n += 2) {
                    uint32_t fragments[4];
                    load_matrices_transposed(rows + n * 8, fragments);
                    mma_16x8x16(accumulator[n], probability[chunk], fragments[0], fragments[1]);
                    mma_16x8x16(accumulator[n + 1], probability[chunk], fragments[2], fragments[3]);
                }
            }
            __syncthreads();
        }

        // Finish the sums across the quad, normalise, write O and the LSE.
#pragma unroll
        for (int offset = 1; offset < 4; offset *= 2) {
            sum0 += __shfl_xor_sync(0xffffffffu, sum0, offset);
            sum1 += __shfl_xor_sync(0xffffffffu, sum1, offset);
        }
        const float inverse0 = sum0 > 0.0f ? 1.0f / sum0 : 0.0f, inverse1 = sum1 > 0.0f ? 1.0f / sum1 : 0.0f;
        const int64_t out_row0 = (((b * queries + row0) * groups + g) * heads + h) * FMHA_HEAD_DIM;
        const int64_t out_row1 = (((b * queries + row1) * groups + g) * heads + h) * FMHA_HEAD_DIM;
#pragma unroll
        for (int n = 0; n < FMHA_HEAD_DIM / 8; ++n) {
            const int column = n * 8 + (lane % 4) * 2;
            if (row0 < tile_end) {
                store_element(out, out_row0 + column, out_dtype, accumulator[n][0] * inverse0);
                store_element(out, out_row0 + column + 1, out_dtype, accumulator[n][1] * inverse0);
            }
            if (row1 < tile_end) {
                store_element(out, out_row1 + column, out_dtype, accumulator[n][2] * inverse1);
                store_element(out, out_row1 + column + 1, out_dtype, accumulator[n][3] * inverse1);
            }
        }
        if (lane % 4 == 0) {
            const float ln2 = 0.6931471805599453f;
            if (row0 < tile_end) lse[head_index * queries + row0] = sum0 > 0.0f ? maximum0 * ln2 + logf(sum0) : FMHA_NEG_INFINITY;
            if (row1 < tile_end) lse[head_index * queries + row1] = sum1 > 0.0f ? maximum1 * ln2 + logf(sum1) : FMHA_NEG_INFINITY;
        }
    }
}
