/// What a dropout call needs to be replayed: the probability and the generator's seed and offset.
/// The forward result carries it so that the backward drops exactly the same elements.
public struct DropoutState: Sendable, Hashable {
    /// Probability of dropping an attention weight, in [0, 1).
    public let p: Double
    /// Philox key.
    public let seed: UInt64
    /// Philox counter word 3: distinct offsets give independent masks under one seed.
    public let offset: UInt32

    /// A dropout state; `Inputs.validate()` checks `p`.
    public init(p: Double, seed: UInt64, offset: UInt32 = 0) {
        self.p = p
        self.seed = seed
        self.offset = offset
    }
}

/// The dropout keep decision of every attention weight, a pure function of the state and the
/// element's indices, so that forward and backward, CPU and CUDA, and any tiling or thread count
/// agree bit for bit.
///
/// Counter layout: the weight of query `i` on key `j` in head `n` (the linear index
/// `n = (b·G + g)·H + h` over batch, group and head) uses Philox4x32-10 with
/// key `(seed mod 2³², seed / 2³²)` and counter `(j / 4, i, n, offset)` (each mod 2³²); output
/// word `j mod 4` is the random number `r`. The weight is kept iff `r ≥ threshold`, where
/// `threshold = ⌈p·2³²⌉` (capped at 2³² − 1): kept with probability `1 − threshold/2³² ≈ 1 − p`,
/// and kept weights are scaled by `1/(1 − p)`. One Philox call serves four neighbouring keys.
public struct DropoutMask: Sendable, Hashable {
    /// The state it replays.
    public let state: DropoutState
    /// Random words at or above this keep their weight.
    public let threshold: UInt32
    /// Factor on kept weights: `1/(1 − p)`.
    public let keptScale: Double

    /// The mask of `state`.
    public init(_ state: DropoutState) {
        self.state = state
        let scaled = (state.p * 0x1p32).rounded(.up)
        threshold = scaled >= 0x1p32 - 1 ? .max : UInt32(max(scaled, 0))
        keptScale = 1 / (1 - state.p)
    }

    /// The four random words for keys `4·keyQuad ..< 4·keyQuad + 4` of query `query` in head `head`.
    @inline(__always)
    public func words(head: Int, query: Int, keyQuad: Int) -> SIMD4<UInt32> {
        let key = SIMD2(UInt32(truncatingIfNeeded: state.seed), UInt32(truncatingIfNeeded: state.seed >> 32))
        let counter = SIMD4(UInt32(truncatingIfNeeded: keyQuad), UInt32(truncatingIfNeeded: query),
                            UInt32(truncatingIfNeeded: head), state.offset)
        return Philox.generate(counter: counter, key: key)
    }

    /// Whether the weight of `query` on `key` in head `head` survives.
    @inline(__always)
    public func isKept(head: Int, query: Int, key: Int) -> Bool {
        words(head: head, query: query, keyQuad: key >> 2)[key & 3] >= threshold
    }
}
