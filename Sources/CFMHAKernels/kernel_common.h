// Vector types and helpers shared by the kernel bodies; included once per instruction set, after
// the including file has defined FMHA_TARGET.
#ifndef CFMHA_KERNEL_COMMON_H
#define CFMHA_KERNEL_COMMON_H

#include <stdint.h>
#if VW == 16
#include <immintrin.h>
#endif

// The helpers below are always inlined, so passing vectors between them never crosses an
// ABI boundary, even in the baseline build.
#pragma clang diagnostic ignored "-Wpsabi"

// Lanes per vector: 8 (AVX2 and the baseline build) unless the including file says 16 (AVX-512).
#ifndef VW
#define VW 8
#endif

typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
typedef float vf_unaligned __attribute__((vector_size(VW * 4), aligned(4)));
typedef int32_t vi_unaligned __attribute__((vector_size(VW * 4), aligned(4)));

#define FMHA_INLINE static inline __attribute__((always_inline)) FMHA_TARGET

FMHA_INLINE vf loadv(const float *p) { return *(const vf_unaligned *)p; }
FMHA_INLINE void storev(float *p, vf v) { *(vf_unaligned *)p = v; }
FMHA_INLINE vi loadvi(const int32_t *p) { return *(const vi_unaligned *)p; }
// Broadcasts spelled out lane by lane: `(vf){} + x` would add 0.0 first (it is not x for -0.0).
#if VW == 16
#define FMHA_LANES(x) x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x
#else
#define FMHA_LANES(x) x, x, x, x, x, x, x, x
#endif
FMHA_INLINE vf splat(float x) { return (vf){FMHA_LANES(x)}; }
FMHA_INLINE vi splat_i(int32_t x) { return (vi){FMHA_LANES(x)}; }
FMHA_INLINE vf vmax(vf a, vf b) { return __builtin_elementwise_max(a, b); }

/// Whether every lane of a comparison result is true.
FMHA_INLINE int all_true(vi mask) {
    const vi ones = splat_i(-1);
    return __builtin_reduce_and(mask == ones) != 0;
}

/// Lanes of `when_true` where `mask` is all ones, of `when_false` elsewhere.
FMHA_INLINE vf vselect(vi mask, vf when_true, vf when_false) {
    return (vf)(((vi)when_true & mask) | ((vi)when_false & ~mask));
}

/// 2^x for x ≤ 0 (x = -inf gives exactly 0): Cephes' exp2f polynomial on the fraction in
/// [-0.5, 0.5] (relative error about 2e-7), scaled by the integer part: through the exponent bits,
/// or with AVX-512's vscalefps in one instruction.
FMHA_INLINE vf exp2_v(vf x) {
    // Clamped from below by a selection, not vmax, which would turn NaN into the bound: NaN (a
    // non-finite score) propagates.
#if VW == 16
    x = vselect(x < splat(-160.0f), splat(-160.0f), x);  // 2^-160 times the polynomial rounds to exactly 0
#else
    x = vselect(x < splat(-127.0f), splat(-127.0f), x);  // exponent bits 0: exactly 0
#endif
    vf whole = __builtin_elementwise_roundeven(x);
    vf f = x - whole;
    vf p = splat(1.535336188319500e-4f);
    p = p * f + splat(1.339887440266574e-3f);
    p = p * f + splat(9.618437357674640e-3f);
    p = p * f + splat(5.550332471162809e-2f);
    p = p * f + splat(2.402264791363012e-1f);
    p = p * f + splat(6.931472028550421e-1f);
    p = p * f + splat(1.0f);
#if VW == 16
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)whole);
#else
    vi exponent = (__builtin_convertvector(whole, vi) + splat_i(127)) << 23;
    return p * (vf)exponent;
#endif
}

FMHA_INLINE float bf16_to_float(uint16_t bits) {
    union { uint32_t u; float f; } value = {(uint32_t)bits << 16};
    return value.f;
}

/// Round to nearest even; NaN stays NaN (quiet), as FMHACore's BFloat16.
FMHA_INLINE uint16_t float_to_bf16(float x) {
    union { float f; uint32_t u; } value = {x};
    if (x != x) return (uint16_t)((value.u >> 16) | 0x0040);
    return (uint16_t)((value.u + 0x7FFF + ((value.u >> 16) & 1)) >> 16);
}

/// Philox4x32-10, as FMHACore's `Philox.generate`.
FMHA_INLINE void philox(const uint32_t counter_in[4], const uint32_t key_in[2], uint32_t out[4]) {
    uint32_t c0 = counter_in[0], c1 = counter_in[1], c2 = counter_in[2], c3 = counter_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n1 = (uint32_t)p1;
        const uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1, n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

#endif
