/// Causal mask anchored top-left: query `i` sees keys `j ≤ i`. With `Mq > Mkv` the last queries
/// see every key. Accepted with BMK inputs.
public struct LowerTriangularMask: AttentionMask, Hashable {
    /// The mask.
    public init() {}

    public var band: KeyBand { .causal(.topLeft) }

    /// This mask plus a dense additive tensor.
    public func addBias(_ bias: Tensor) -> LowerTriangularMaskWithTensorBias {
        LowerTriangularMaskWithTensorBias(bias)
    }
}

/// `LowerTriangularMask` plus an additive tensor of the scores' shape (`[B, H, Mq, Mkv]` for
/// BMHK inputs). Not accepted with BMK inputs, as upstream.
public struct LowerTriangularMaskWithTensorBias: AttentionMask {
    /// The additive part.
    public let bias: Tensor

    /// Causal mask plus `bias`.
    public init(_ bias: Tensor) {
        self.bias = bias
    }

    public var band: KeyBand { .causal(.topLeft) }
    public var tensorBias: Tensor? { bias }

    /// The causal mask with its tensor in `dtype` on `device`.
    public func converted(to dtype: DType, device: Device) throws -> LowerTriangularMaskWithTensorBias {
        LowerTriangularMaskWithTensorBias(try bias.converted(to: dtype, device: device))
    }
}

/// Causal mask anchored bottom-right: query `i` sees keys `j ≤ i + Mkv − Mq`, so the last query
/// sees every key (the KV-cache convention). Equal to `LowerTriangularMask` when `Mq == Mkv`.
public struct LowerTriangularFromBottomRightMask: AttentionMask, Hashable {
    /// The mask.
    public init() {}

    public var band: KeyBand { .causal(.bottomRight) }

    /// The sliding-window version: each query sees at most `windowSize` keys, its own included.
    public func makeLocalAttention(windowSize: Int) throws -> LowerTriangularFromBottomRightLocalAttentionMask {
        try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: windowSize)
    }
}

/// Bottom-right causal sliding window: query `i` sees keys `i + s − w + 1 ≤ j ≤ i + s`, with
/// `s = Mkv − Mq` and `w` the window size.
public struct LowerTriangularFromBottomRightLocalAttentionMask: AttentionMask, Hashable {
    /// Keys each query may see, its own included (> 0).
    public let windowSize: Int

    /// Throws unless `windowSize > 0`.
    public init(windowSize: Int) throws {
        try Windows.checkSize(windowSize)
        self.windowSize = windowSize
    }

    public var band: KeyBand { .causalWindow(.bottomRight, windowSize: windowSize) }
}

/// Two-sided window around the bottom-right diagonal: query `i` sees keys
/// `i + s − windowLeft ≤ j ≤ i + s + windowRight`, `s = Mkv − Mq`.
public struct LocalAttentionFromBottomRightMask: AttentionMask, Hashable {
    /// Keys visible before the diagonal (≥ 0).
    public let windowLeft: Int
    /// Keys visible after the diagonal (≥ 0).
    public let windowRight: Int

    /// Throws unless both windows are ≥ 0.
    public init(windowLeft: Int, windowRight: Int) throws {
        try Windows.checkSides(left: windowLeft, right: windowRight)
        self.windowLeft = windowLeft
        self.windowRight = windowRight
    }

    public var band: KeyBand { KeyBand(anchor: .bottomRight, left: windowLeft, right: windowRight) }
}
