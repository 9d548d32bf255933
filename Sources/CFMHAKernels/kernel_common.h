// Vector types and helpers shared by the kernel bodies; included once per instruction set, after
// the including file has defined FMHA_TARGET.
#ifndef CFMHA_KERNEL_COMMON_H
#define CFMHA_KERNEL_COMMON_H

#include <stdint.h>

// The helpers below are always inlined, so passing 32-byte vectors between them never crosses an
// ABI boundary, even in the baseline build.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8f_unaligned __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i_unaligned __attribute__((vector_size(32), aligned(4)));

#define FMHA_INLINE static inline __attribute__((always_inline)) FMHA_TARGET

FMHA_INLINE v8f load8(const float *p) { return *(const v8f_unaligned *)p; }
FMHA_INLINE void store8(float *p, v8f v) { *(v8f_unaligned *)p = v; }
FMHA_INLINE v8i load8i(const int32_t *p) { return *(const v8i_unaligned *)p; }
FMHA_INLINE v8f splat(float x) { return (v8f){x, x, x, x, x, x, x, x}; }
FMHA_INLINE v8i splat_i(int32_t x) { return (v8i){x, x, x, x, x, x, x, x}; }
FMHA_INLINE v8f vmax(v8f a, v8f b) { return __builtin_elementwise_max(a, b); }

/// Whether every lane of a comparison result is true.
FMHA_INLINE int all_true(v8i mask) {
    const v8i ones = splat_i(-1);
    return __builtin_reduce_and(mask == ones) != 0;
}

/// Lanes of `when_true` where `mask` is all ones, of `when_false` elsewhere.
FMHA_INLINE v8f select(v8i mask, v8f when_true, v8f when_false) {
    return (v8f)(((v8i)when_true & mask) | ((v8i)when_false & ~mask));
}

/// 2^x for x ≤ 0 (x = -inf gives exactly 0): Cephes' exp2f polynomial on the fraction in
/// [-0.5, 0.5] (relative error about 2e-7), scaled by the integer part through the exponent bits.
FMHA_INLINE v8f exp2_v8(v8f x) {
    x = vmax(x, splat(-127.0f));
    v8f whole = __builtin_elementwise_roundeven(x);
    v8f f = x - whole;
    v8f p = splat(1.535336188319500e-4f);
    p = p * f + splat(1.339887440266574e-3f);
    p = p * f + splat(9.618437357674640e-3f);
    p = p * f + splat(5.550332471162809e-2f);
    p = p * f + splat(2.402264791363012e-1f);
    p = p * f + splat(6.931472028550421e-1f);
    p = p * f + splat(1.0f);
    v8i exponent = (__builtin_convertvector(whole, v8i) + splat_i(127)) << 23;
    return p * (v8f)exponent;
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
