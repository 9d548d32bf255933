// The FMA peak loop, compiled once per instruction set by the kernels_*.c file that includes it
// (after kernel_common.h, with FMHA_TARGET, FMHA_NAME and VW defined).

/// `iterations` rounds of FMHA_FMA_LOOP_FMAS_PER_ITERATION independent VW-lane FMAs held in
/// registers: time it to measure the machine's FMA peak. Returns a value that depends on every
/// FMA, so that none is optimized away.
FMHA_TARGET float FMHA_NAME(fmha_fma_loop)(int64_t iterations) {
    vf a0 = splat(1), a1 = splat(2), a2 = splat(3), a3 = splat(4), a4 = splat(5), a5 = splat(6);
    vf a6 = splat(7), a7 = splat(8), a8 = splat(9), a9 = splat(10), a10 = splat(11), a11 = splat(12);
    const vf b = splat(0.999999f), c = splat(1e-7f);
    for (int64_t i = 0; i < iterations; i++) {
        a0 = a0 * b + c; a1 = a1 * b + c; a2 = a2 * b + c; a3 = a3 * b + c; a4 = a4 * b + c; a5 = a5 * b + c;
        a6 = a6 * b + c; a7 = a7 * b + c; a8 = a8 * b + c; a9 = a9 * b + c; a10 = a10 * b + c; a11 = a11 * b + c;
        __asm__ volatile("" : "+x"(a0), "+x"(a1), "+x"(a2), "+x"(a3), "+x"(a4), "+x"(a5),
                              "+x"(a6), "+x"(a7), "+x"(a8), "+x"(a9), "+x"(a10), "+x"(a11));
    }
    vf sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    return sum[0] + sum[VW - 1];
}
