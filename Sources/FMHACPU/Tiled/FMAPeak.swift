import CFMHAKernels

/// The machine's measured float32 FMA peak: every thread runs a register-resident loop of
/// independent FMAs of the widest vectors the CPU has at once: 16 lanes with AVX-512 (CPUs with
/// two 512-bit FMA units do twice the 8-lane rate; those that split them, as Zen 4, the same),
/// else 8 with AVX2; CPUs without either report nil.
public enum FMAPeak {
    /// GFLOP/s of `threads` threads running the loop together for about `seconds`.
    public static func measure(threads: Int = CPUThreads.count, seconds: Double = 0.3) -> Double? {
        guard CPUKernels.cpuHasAVX2 else { return nil }
        let (loop, lanes) = CPUKernels.cpuHasAVX512 ? (fmha_fma_loop_avx512, 16) : (fmha_fma_loop_avx2, 8)
        let clock = ContinuousClock()
        // Calibrate the iteration count on one thread, then run every thread at once.
        var iterations: Int64 = 1 << 20
        while true {
            let elapsed = clock.measure { _ = loop(iterations) }
            if elapsed.seconds >= seconds / 4 || iterations > 1 << 34 {
                iterations = Int64(Double(iterations) * seconds / max(elapsed.seconds, 1e-6))
                break
            }
            iterations *= 4
        }
        // Best of three runs of every thread at once (the first may still be starting threads).
        let count = iterations
        let flops = Double(threads) * Double(count) * Double(Int(FMHA_FMA_LOOP_FMAS_PER_ITERATION) * lanes * 2)
        let fastest = (0..<3).map { _ in
            clock.measure {
                CPUThreads.run(items: threads, threads: threads) { assigned in
                    for _ in assigned { _ = loop(count) }
                }
            }.seconds
        }.min() ?? 1
        return flops / fastest / 1e9
    }
}

extension Duration {
    /// The duration in seconds.
    public var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) * 1e-18
    }
}
