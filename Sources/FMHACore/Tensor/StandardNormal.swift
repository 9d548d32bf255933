#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Counter-based standard normal numbers: SplitMix64 hashes of (seed, index) through Box–Muller.
enum StandardNormal {
    /// SplitMix64's output function applied to `seed ⊕ index·φ`.
    static func hash(seed: UInt64, counter: UInt64) -> UInt64 {
        var z = seed &+ counter &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform number in (0, 1].
    static func uniform(seed: UInt64, counter: UInt64) -> Double {
        Double((hash(seed: seed, counter: counter) >> 11) + 1) * 0x1p-53
    }

    /// Sample `index`: elements 2n and 2n+1 are the cosine and sine halves of one Box–Muller pair.
    static func sample(seed: UInt64, index: Int) -> Double {
        let pair = UInt64(index / 2) &* 2
        let radius = (-2 * log(uniform(seed: seed, counter: pair))).squareRoot()
        let angle = 2 * Double.pi * uniform(seed: seed, counter: pair &+ 1)
        return radius * (index % 2 == 0 ? cos(angle) : sin(angle))
    }
}
