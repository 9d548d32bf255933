/// One validated attention call: what `Inputs.validate()` returns and what every operator runs.
///
/// It holds the call's sizes, query, key and value as BMGHK views (no copies; strides, stride 0
/// included, kept), the tensor bias as a `[B, G, H, Mq, Mkv]` view, the mask's `MaskLowering`,
/// the dropout to apply, the scale and the output dtype, each resolved once. Only validation
/// makes one, so an operator that is handed a problem never checks the inputs again.
public struct AttentionProblem: Sendable {
    /// What the caller passed, as given (original ranks: output and gradients take their shapes).
    public let inputs: Inputs
    /// Sizes and layout.
    public let dimensions: AttentionDimensions
    /// `[B, Mq, G, H, K]` view of the query.
    public let query: Tensor
    /// `[B, Mkv, G, H, K]` view of the key.
    public let key: Tensor
    /// `[B, Mkv, G, H, Kv]` view of the value.
    public let value: Tensor
    /// The additive tensor part of the bias as a `[B, G, H, Mq, Mkv]` view; `nil` without one.
    public let tensorBias: Tensor?
    /// The mask part of the bias lowered to blocks, rows and tiles (every key visible without a mask).
    public let lowering: MaskLowering
    /// The dropout to apply; `nil` when `p` is 0. The only place operators read `p` from.
    public let dropout: DropoutState?
    /// The factor on `Q·Kᵀ`: the caller's `scale`, or `1/sqrt(K)`.
    public let scale: Double
    /// The dtype the output is written in: the caller's, else float32 for partial attention
    /// (float64 for float64 inputs), else the query's.
    public let outputDType: DType
    /// How K and V are quantized (their views then hold int32 words); nil for a plain cache.
    public let keyValueFormat: KeyValueFormat?
    /// For fp8 K/V: the `[B, Mkv, G, H]` view of each key row's scale/shift word.
    public let keyScaleShift: Tensor?
    /// For fp8 K/V: the `[B, Mkv, G, H]` view of each value row's scale/shift word.
    public let valueScaleShift: Tensor?

    /// A problem from inputs that `validate()` has checked.
    init(_ inputs: Inputs, dimensions: AttentionDimensions, keyValueFormat: KeyValueFormat?) throws {
        try self.init(inputs, dimensions: dimensions, key: Inputs.bmghkView(inputs.key), value: Inputs.bmghkView(inputs.value),
                      keyValueFormat: keyValueFormat)
    }

    /// A problem with `key` and `value` (BMGHK views) in place of the inputs' own.
    private init(_ inputs: Inputs, dimensions: AttentionDimensions, key: Tensor, value: Tensor, keyValueFormat: KeyValueFormat?) throws {
        self.inputs = inputs
        self.dimensions = dimensions
        query = try Inputs.bmghkView(inputs.query)
        self.key = key
        self.value = value
        self.keyValueFormat = keyValueFormat
        keyScaleShift = keyValueFormat == .fp8 ? try inputs.keyScaleShift.map(Self.scaleShiftView) : nil
        valueScaleShift = keyValueFormat == .fp8 ? try inputs.valueScaleShift.map(Self.scaleShiftView) : nil
        tensorBias = try inputs.bias?.tensorBias.map(Inputs.bmghkBiasView)
        lowering = MaskLowering(inputs.bias?.maskLayout, queryLength: dimensions.queryLength,
                                keyLength: dimensions.keyLength)
        dropout = inputs.dropout
        scale = inputs.scale ?? 1 / Double(dimensions.headDimension).squareRoot()
        outputDType = inputs.outputDType
            ?? (inputs.isPartial ? (inputs.query.dtype == .float64 ? .float64 : .float32) : inputs.query.dtype)
    }

    /// Scale/shift words `[B, Mkv]`, `[B, Mkv, H]` or `[B, Mkv, G, H]` as a `[B, Mkv, G, H]` view.
    private static func scaleShiftView(_ words: Tensor) throws -> Tensor {
        switch words.rank {
        case 2: try words.unsqueezed(at: 2).unsqueezed(at: 2)
        case 3: try words.unsqueezed(at: 2)
        default: words
        }
    }

    /// The dtype of the query (and of key and value unless they are quantized).
    public var dtype: DType { query.dtype }

    /// This problem with quantized K/V replaced by their values in the query's dtype (contiguous
    /// host tensors; a dimension of stride 0 keeps it, so GQA's shared heads are dequantized once);
    /// `self` for a plain cache. For operators that have no quantized path of their own.
    public func dequantized() throws -> AttentionProblem {
        guard let format = keyValueFormat else { return self }
        func values(_ cache: Tensor, _ scaleShift: Tensor?) throws -> Tensor {
            // The distinct rows: dimensions along which the words and their scale/shift words
            // have stride 0 cut to one, expanded back afterwards.
            var rows = cache, words = scaleShift
            for axis in 0..<4 where cache.strides[axis] == 0 && cache.shape[axis] > 1 && (scaleShift?.strides[axis] ?? 0) == 0 {
                rows = try rows.slice(dimension: axis, range: 0..<1)
                words = try words?.slice(dimension: axis, range: 0..<1)
            }
            let dense = try format.dequantize(rows.to(.cpu), scaleShift: words?.to(.cpu), headDimension: dimensions.headDimension,
                                              dtype: dtype)
            return try dense.expanded(to: Array(cache.shape.dropLast()) + [dimensions.headDimension]).to(device)
        }
        return try AttentionProblem(inputs, dimensions: dimensions, key: values(key, keyScaleShift), value: values(value, valueScaleShift),
                                    keyValueFormat: nil)
    }
    /// The device query, key and value are on.
    public var device: Device { query.device }
    /// Partial attention over one chunk of keys (for `mergeAttentions`).
    public var isPartial: Bool { inputs.isPartial }
    /// Only operators that give the same bits every run qualify.
    public var requiresDeterminism: Bool { inputs.requiresDeterminism }
    /// The dropout mask to apply, `nil` without dropout.
    public var dropoutMask: DropoutMask? { dropout.map(DropoutMask.init) }

    /// The K/V heads a backward sums dK and dV over, and that the decode kernel reads once for all
    /// the query heads sharing them, per dimension (batch, group, head): `grid` is the dimension's
    /// size, or 1 where both K and V (and an fp8 cache's scale/shift words) have stride 0 (a size above 1), and
    /// `sharing` how many query heads share each grid head along it (the size there, else 1).
    public var keyValueHeads: (grid: [Int], sharing: [Int]) {
        let d = dimensions, sizes = [d.batch, d.groups, d.heads]
        // (An fp8 cache's rows are shared only where their scale/shift words are too.)
        let words = [keyScaleShift, valueScaleShift].compactMap { $0 }
        let shared = [0, 2, 3].map { axis in
            key.strides[axis] == 0 && value.strides[axis] == 0 && key.shape[axis] > 1 && words.allSatisfy { $0.strides[axis] == 0 }
        }
        return (zip(shared, sizes).map { $0 ? 1 : $1 }, zip(shared, sizes).map { $0 ? $1 : 1 })
    }

    /// The backward problem of this call: the forward's `output` and `lse` and the output's
    /// gradient, checked against this call's sizes and device.
    public func backward(output: Tensor, lse: Tensor, gradOutput: Tensor) throws -> BackwardProblem {
        let d = dimensions
        for (name, tensor) in [("output", output), ("gradOutput", gradOutput)] {
            guard tensor.shape == d.outputShape else {
                throw FMHAError.invalidArgument(name, expected: "shape \(d.outputShape) (the attention output's)",
                                                got: "\(tensor.shape)")
            }
            guard tensor.device == device else {
                throw FMHAError.invalidArgument(name, expected: "a tensor on \(device)", got: "\(tensor.device)")
            }
        }
        guard lse.shape == d.lseShape else {
            throw FMHAError.invalidArgument("lse", expected: "shape \(d.lseShape) (as the forward returns it)",
                                            got: "\(lse.shape)")
        }
        guard lse.device == device else {
            throw FMHAError.invalidArgument("lse", expected: "a tensor on \(device)", got: "\(lse.device)")
        }
        return BackwardProblem(attention: self, output: output, lse: lse, gradOutput: gradOutput)
    }
}

/// One validated backward call: the forward's problem, its output and LSE, and the gradient of
/// the output, as `AttentionProblem.backward(output:lse:gradOutput:)` checked them.
public struct BackwardProblem: Sendable {
    /// The forward call whose gradients are wanted (its dropout is replayed).
    public let attention: AttentionProblem
    /// The forward's output, `[B, Mq, ..., Kv]` in the inputs' layout.
    public let output: Tensor
    /// The forward's LSE, in `AttentionDimensions.lseShape`.
    public let lse: Tensor
    /// ∂L/∂output, shaped like `output`.
    public let gradOutput: Tensor
}
