/// An attention bias, as in `xformers.ops.fmha.attn_bias`: an additive term on the attention
/// scores before the softmax.
///
/// A bias is a mask (0 where a query may see a key, −inf elsewhere), described compactly by
/// `maskLayout`, an additive tensor (`tensorBias`), or both (`LowerTriangularMaskWithTensorBias`).
/// Each xFormers class is its own Swift type with the same name; operators list the exact types
/// they support. A plain `Tensor` is a bias too, as in xFormers.
public protocol AttentionBias: Sendable {
    /// The mask part, `nil` when the bias has none (a plain tensor).
    var maskLayout: MaskLayout? { get }
    /// The additive tensor part, `nil` for pure masks. Its shape is the scores' shape
    /// (`[B, Mq, Mkv]`, `[B, H, Mq, Mkv]` or `[B, G, H, Mq, Mkv]`), stride 0 allowed.
    var tensorBias: Tensor? { get }
    /// The same bias with its tensor part (if any) in `dtype` on `device`, as attention with
    /// inputs of that dtype and device needs it; a pure mask is returned as it is.
    func converted(to dtype: DType, device: Device) throws -> Self
}

extension AttentionBias {
    /// The xFormers class name of this bias type.
    public static var name: String { String(describing: Self.self) }

    /// True for the block-diagonal (variable-length) biases, which pack every sequence along M
    /// of a batch of one.
    public var isVariableLength: Bool { maskLayout?.blocks != nil }

    /// The dense additive bias of `shape` (`[..., Mq, Mkv]`): 0 where attention is allowed, −inf
    /// where it is masked, plus any tensor bias; leading dimensions broadcast. Paged masks come out
    /// in the physical key layout (a column per K/V row). Slow: for tests and debugging.
    public func materialize(shape: [Int], dtype: DType = .float32, device: Device = .cpu) throws -> Tensor {
        guard shape.count >= 2 else {
            throw FMHAError.invalidArgument("shape", expected: "at least 2 dimensions [..., Mq, Mkv]", got: "\(shape)")
        }
        guard dtype.isFloatingPoint else {
            throw FMHAError.invalidArgument("dtype", expected: "a floating-point dtype for a bias", got: "\(dtype)")
        }
        _ = try Tensor.checkedCount(shape, argument: "shape")
        let queryCount = shape[shape.count - 2], keyCount = shape[shape.count - 1]
        _ = try Tensor.checkedCount([queryCount, keyCount], argument: "shape")
        var result: Tensor
        if let layout = maskLayout {
            let mask = try layout.materialize(queryCount: queryCount, keyCount: keyCount)
            result = try Tensor(shape: [queryCount, keyCount], scalars: mask).expanded(to: shape)
            if let tensor = tensorBias {
                // Added in float64, so that a float64 bias keeps its precision.
                let plane = queryCount * keyCount
                let biasValues = try tensor.expanded(to: shape).toDoubleArray()
                let sum = biasValues.indices.map { biasValues[$0] + Double(mask[$0 % plane]) }
                result = try Tensor(shape: shape, scalars: sum, dtype: dtype)
            }
        } else if let tensor = tensorBias {
            result = try tensor.expanded(to: shape)
        } else {
            result = try Tensor.zeros([1]).expanded(to: shape)
        }
        return try result.converted(to: dtype).to(device)
    }
}

extension MaskLayout {
    /// The row-major `[queryCount, keyCount]` plane of 0 and −inf this layout describes.
    func materialize(queryCount: Int, keyCount: Int) throws -> [Float] {
        try blocks?.checkShape(queryCount: queryCount, keyCount: keyCount, argument: "shape")
        try HostMemory.checkFits(shape: [queryCount, keyCount], elementSize: MemoryLayout<Float>.size, argument: "shape",
                                 what: "a float32 mask plane of shape")
        var plane = [Float](repeating: -.infinity, count: queryCount * keyCount)
        let lowering = MaskLowering(self, queryLength: queryCount, keyLength: keyCount)
        for query in 0..<queryCount {
            lowering.forEachVisibleKey(query: query) { plane[query * keyCount + $0] = 0 }
        }
        return plane
    }
}

extension BlockLayout {
    /// Throws unless the packed query and key dimensions are what this layout describes.
    func checkShape(queryCount: Int, keyCount: Int, argument: String) throws {
        guard queryCount == self.queryCount else {
            throw FMHAError.invalidArgument(argument, expected: "\(self.queryCount) queries (the sum of the bias's query lengths)",
                                            got: "\(queryCount)")
        }
        if pages == nil {
            guard keyCount == self.keyCount else {
                throw FMHAError.invalidArgument(argument, expected: "\(self.keyCount) keys (the key total of the bias)",
                                                got: "\(keyCount)")
            }
        } else {
            guard keyCount >= self.keyCount else {
                throw FMHAError.invalidArgument(argument, expected: "at least \(self.keyCount) keys (every page the block tables name)",
                                                got: "\(keyCount)")
            }
        }
    }
}

/// A pure mask: a `KeyBand`, applied per block when the bias is variable-length.
public protocol AttentionMask: AttentionBias {
    /// The visible keys of each query, relative to its block.
    var band: KeyBand { get }
    /// The blocks of a variable-length mask; `nil` for a mask over the whole `Mq × Mkv` plane.
    var blockLayout: BlockLayout? { get }
}

extension AttentionMask {
    public var maskLayout: MaskLayout? { MaskLayout(band: band, blocks: blockLayout) }
    public var tensorBias: Tensor? { nil }
    public var blockLayout: BlockLayout? { nil }
    public func converted(to dtype: DType, device: Device) throws -> Self { self }
}

extension Tensor: AttentionBias {
    /// A tensor is a dense additive bias, with no mask part.
    public var maskLayout: MaskLayout? { nil }
    /// The tensor itself.
    public var tensorBias: Tensor? { self }

    /// The tensor in `dtype` on `device` (itself when it is already there).
    public func converted(to dtype: DType, device: Device) throws -> Tensor {
        try converted(to: dtype).to(device)
    }
}
