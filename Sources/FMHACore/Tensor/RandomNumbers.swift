#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// SplitMix64 (Steele, Lea and Flood, 2014): a small, fast, seeded generator for reproducible
/// test and benchmark data.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    static let increment: UInt64 = 0x9E37_79B9_7F4A_7C15
    private var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= Self.increment
        return Self.mix(state)
    }

    /// SplitMix64's output function.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Counter-based standard normal numbers: SplitMix64 hashes of (seed, index) through Box–Muller.
enum StandardNormal {
    /// A uniform number in (0, 1]: the `counter`-th output of `SplitMix64(seed:)`, less one.
    static func uniform(seed: UInt64, counter: UInt64) -> Double {
        Double((SplitMix64.mix(seed &+ counter &* SplitMix64.increment) >> 11) + 1) * 0x1p-53
    }

    /// Sample `index`: elements 2n and 2n+1 are the cosine and sine halves of one Box–Muller pair.
    static func sample(seed: UInt64, index: Int) -> Double {
        let pair = UInt64(index / 2) &* 2
        let radius = (-2 * log(uniform(seed: seed, counter: pair))).squareRoot()
        let angle = 2 * Double.pi * uniform(seed: seed, counter: pair &+ 1)
        return radius * (index % 2 == 0 ? cos(angle) : sin(angle))
    }
}
