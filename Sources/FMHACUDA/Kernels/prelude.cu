// Shared by every FMHA kernel: compiled in front of each kernel file (after the descriptor's
// #defines). It includes no header, so that NVRTC needs nothing but itself: fixed-width integers,
// float16/bfloat16 conversions in inline PTX and bit manipulation, element loads of any input
// dtype, the Philox4x32-10 dropout mask of FMHACore's `Philox` and `DropoutMask`, bit for bit, and
// the mask lowering (DeviceLowering.swift): the band and page formulas, written once for every kernel.

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;

static_assert(sizeof(uint16_t) == 2 && sizeof(uint32_t) == 4 && sizeof(uint64_t) == 8,
              "fixed-width integer typedefs");

namespace fmha {

// ---- float16 (IEEE binary16), stored as its 16 bits -------------------------------------------

/// The exact value of a float16.
__device__ __forceinline__ float half_to_float(uint16_t bits) {
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(bits));
    return value;
}

/// `value` rounded to the nearest float16, ties to even (IEEE; overflow gives infinity).
__device__ __forceinline__ uint16_t float_to_half(float value) {
    uint16_t bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));
    return bits;
}

// ---- bfloat16: the upper 16 bits of a float -----------------------------------------------------

/// The exact value of a bfloat16.
__device__ __forceinline__ float bfloat16_to_float(uint16_t bits) {
    return __uint_as_float(uint32_t(bits) << 16);
}

/// `value` rounded to the nearest bfloat16, ties to even, as FMHACore's `BFloat16(Float)`: NaN
/// keeps its sign and top payload bits and is made quiet; overflow rounds to infinity.
__device__ __forceinline__ uint16_t float_to_bfloat16(float value) {
    const uint32_t bits = __float_as_uint(value);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
        return uint16_t((bits >> 16) | 0x0040u);
    }
    const uint32_t lowest_kept_bit = (bits >> 16) & 1u;
    return uint16_t((bits + 0x7FFFu + lowest_kept_bit) >> 16);
}

// ---- Philox4x32-10 and the dropout mask -------------------------------------------------------

/// Four 32-bit words: a Philox counter or its output.
struct Words4 {
    uint32_t x, y, z, w;
};

/// Ten rounds of Philox4x32 (Salmon et al., SC 2011) on `counter` with key (`key0`, `key1`), as
/// Random123 and FMHACore's `Philox.generate`.
__device__ __forceinline__ Words4 philox4x32_10(Words4 counter, uint32_t key0, uint32_t key1) {
    const uint32_t multiplier0 = 0xD2511F53u, multiplier1 = 0xCD9E8D57u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key0 += 0x9E3779B9u;
            key1 += 0xBB67AE85u;
        }
        const uint32_t high0 = __umulhi(multiplier0, counter.x), low0 = multiplier0 * counter.x;
        const uint32_t high1 = __umulhi(multiplier1, counter.z), low1 = multiplier1 * counter.z;
        counter = Words4{high1 ^ counter.y ^ key0, low1, high0 ^ counter.w ^ key1, low0};
    }
    return counter;
}

/// The dropout mask of one call (FMHACore's `DropoutMask`): the weight of query `i` on key `j` in
/// head `n` (linear over batch, group and head) draws word `j % 4` of Philox4x32-10 with counter
/// (j / 4, i, n, offset) and key (seed mod 2^32, seed / 2^32), and is kept iff that word is at least
/// `threshold` = ceil(p * 2^32) (capped at 2^32 - 1).
struct DropoutMask {
    uint64_t seed;
    uint32_t offset;
    uint32_t threshold;

    /// The random words of keys 4 * key_quad ..< 4 * key_quad + 4.
    __device__ __forceinline__ Words4 words(uint32_t head, uint32_t query, uint32_t key_quad) const {
        return philox4x32_10(Words4{key_quad, query, head, offset}, uint32_t(seed), uint32_t(seed >> 32));
    }

    /// Whether `word` (one of `words(...)`) keeps its weight.
    __device__ __forceinline__ bool keeps(uint32_t word) const {
        return word >= threshold;
    }

    /// Whether the weight of `query` on `key` in `head` survives.
    __device__ __forceinline__ bool is_kept(uint32_t head, uint32_t query, uint32_t key) const {
        const Words4 random = words(head, query, key >> 2);
        const uint32_t lane = key & 3u;
        return keeps(lane == 0 ? random.x : lane == 1 ? random.y : lane == 2 ? random.z : random.w);
    }
};

// ---- Elements of any input dtype ---------------------------------------------------------------

/// Element `index` of a float32 (dtype 0), float16 (1) or bfloat16 (2) array.
__device__ __forceinline__ float load_element(const void* base, int64_t index, int64_t dtype) {
    if (dtype == 1) return half_to_float(static_cast<const uint16_t*>(base)[index]);
    if (dtype == 2) return bfloat16_to_float(static_cast<const uint16_t*>(base)[index]);
    return static_cast<const float*>(base)[index];
}

/// Writes `value` as element `index` of a float32 (0), float16 (1) or bfloat16 (2) array.
__device__ __forceinline__ void store_element(void* base, int64_t index, int64_t dtype, float value) {
    if (dtype == 1) {
        static_cast<uint16_t*>(base)[index] = float_to_half(value);
    } else if (dtype == 2) {
        static_cast<uint16_t*>(base)[index] = float_to_bfloat16(value);
    } else {
        static_cast<float*>(base)[index] = value;
    }
}

/// Writes `low` and `high` as elements `index` and `index + 1` (even) of a float32 (0), float16 (1)
/// or bfloat16 (2) array.
__device__ __forceinline__ void store_pair(void* base, int64_t index, int64_t dtype, float low, float high) {
    if (dtype == 1) {
        reinterpret_cast<uint32_t*>(base)[index / 2] = uint32_t(float_to_half(low)) | (uint32_t(float_to_half(high)) << 16);
    } else if (dtype == 2) {
        reinterpret_cast<uint32_t*>(base)[index / 2] =
            uint32_t(float_to_bfloat16(low)) | (uint32_t(float_to_bfloat16(high)) << 16);
    } else {
        reinterpret_cast<float2*>(base)[index / 2] = make_float2(low, high);
    }
}

// ---- The mask lowering (DeviceLowering.swift) -----------------------------------------------
// The device's one copy of the mask rules: the band formula (FMHACore's KeyBand) and the page
// lookup. Which keys a tile of queries visits, and which block a query row is in, come from the
// host (FMHACore's MaskLowering); kernels test elements against the ranges these functions give.
// `words`: anchor (1: bottom-right), left and right window (-1: unbounded), block count (at least
// 1), page size (0: unpaged), pages per row; per block its first query, query count, key start and
// key count; the page tables, row by row; then, when the lowering was made for row kernels and
// has several blocks, the block of every packed query.

/// The logical keys [lo, hi) a query sees (empty when lo >= hi).
struct KeyRange {
    int64_t lo, hi;
};

/// The K/V row of logical key `logical` through a block's page-table row `pages` (`page_size` keys
/// a page), or the logical key itself when unpaged (`page_size` 0).
template <typename Int>
__device__ __forceinline__ int64_t page_lookup(const int64_t* pages, Int page_size, Int logical) {
    return page_size > 0 ? pages[logical / page_size] * page_size + logical % page_size : int64_t(logical);
}

/// The band of one block, held in registers: which logical keys each of its queries sees.
struct BlockBand {
    int64_t anchor, left, right, first_query, query_count, key_start, key_count;

    /// The logical keys packed query `i` of the block sees: inside the block of nq queries and
    /// nk keys, local query r sees local keys j with 0 <= j < nk and
    /// r + s - left <= j <= r + s + right (s = nk - nq when bottom-right anchored, else 0;
    /// bounds wider than the block act as unbounded).
    __device__ __forceinline__ KeyRange row_keys(int64_t i) const {
        const int64_t nq = query_count, nk = key_count;
        const int64_t diagonal = (i - first_query) + (anchor == 1 ? nk - nq : 0), reach = nq + nk;
        int64_t lo = 0, hi = nk;
        if (left >= 0) lo = max(int64_t(0), diagonal - min(left, reach));
        if (right >= 0) hi = min(nk, diagonal + min(right, reach) + 1);
        return KeyRange{key_start + lo, key_start + hi};
    }
};

/// One call's mask lowering, as DeviceLowering.swift uploads it.
struct Lowering {
    const int64_t* words;

    __device__ __forceinline__ int64_t block_count() const { return words[3]; }
    __device__ __forceinline__ int64_t page_size() const { return words[4]; }
    __device__ __forceinline__ int64_t first_query(int64_t block) const { return words[6 + 4 * block]; }
    __device__ __forceinline__ int64_t query_count(int64_t block) const { return words[7 + 4 * block]; }
    __device__ __forceinline__ int64_t key_start(int64_t block) const { return words[8 + 4 * block]; }
    __device__ __forceinline__ int64_t key_count(int64_t block) const { return words[9 + 4 * block]; }

    /// The page-table row of `block` (meaningful when paged).
    __device__ __forceinline__ const int64_t* pages(int64_t block) const {
        return words + 6 + 4 * block_count() + block * words[5];
    }

    /// The block of packed query `i` (row kernels' lowerings only).
    __device__ __forceinline__ int64_t block_of(int64_t i) const {
        const int64_t blocks = block_count();
        return blocks > 1 ? words[6 + 4 * blocks + blocks * words[5] + i] : 0;
    }

    /// The band of `block` (BlockBand: read once, then evaluated per query without memory reads).
    __device__ __forceinline__ BlockBand band(int64_t block) const {
        return BlockBand{words[0], words[1], words[2], first_query(block), query_count(block), key_start(block), key_count(block)};
    }

    /// The logical keys packed query `i` of `block` sees (BlockBand::row_keys).
    __device__ __forceinline__ KeyRange row_keys(int64_t block, int64_t i) const {
        return band(block).row_keys(i);
    }

    /// The K/V row of logical key `logical` of `block`.
    __device__ __forceinline__ int64_t physical_key(int64_t block, int64_t logical) const {
        return page_lookup(pages(block), page_size(), logical);
    }
};

/// +infinity without math.h.
#define FMHA_INFINITY __int_as_float(0x7f800000)

// ---- Merging partial results by their LSEs --------------------------------------------------

/// How `count` partial results of one row (attention over disjoint key sets, natural-log LSEs
/// lse_of(s)) combine, for the decode splits' merge and mergeAttentions': partial s weighs
/// exp(lse_s - max) / Σ exp(lse_t - max), and the merged LSE is max + log Σ exp(lse_t - max). A row
/// whose partials are all -inf gets weights 0 (output 0) and LSE -inf; a NaN LSE makes every
/// weight and the LSE NaN.
struct MergeWeights {
    float shift, inverse, lse;

    template <typename Lse>
    __device__ __forceinline__ MergeWeights(int64_t count, Lse lse_of) {
        float top = -FMHA_INFINITY;
        for (int64_t s = 0; s < count; ++s) top = fmaxf(top, lse_of(s));
        shift = top == -FMHA_INFINITY ? 0.0f : top;
        float total = 0.0f;
        for (int64_t s = 0; s < count; ++s) total += expf(lse_of(s) - shift);
        inverse = total != 0.0f ? 1.0f / total : 0.0f;
        lse = total != 0.0f ? shift + logf(total) : -FMHA_INFINITY;
    }

    /// The weight of the partial whose LSE is `partial_lse`.
    __device__ __forceinline__ float weight(float partial_lse) const { return expf(partial_lse - shift) * inverse; }
};

} // namespace fmha
