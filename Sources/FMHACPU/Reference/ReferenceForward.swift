import FMHACore

/// The forward oracle: every bias, layout, dtype, K ≠ Kv, custom scale, dropout, partial output
/// and quantized K/V (dequantized to the query's dtype), accumulated in float64 one query row at a
/// time.
public struct ReferenceForward: ForwardOperator {
    public let name = "cpu-reference"
    public var capabilities: OperatorCapabilities { ReferenceCapabilities.forward }

    /// The operator.
    public init() {}

    public func forward(_ attention: AttentionProblem) throws -> ForwardOutput {
        try requireSupport(attention)
        let dimensions = attention.dimensions
        let problem = try ReferenceProblem(attention.dequantized())
        let valueDimension = dimensions.valueHeadDimension
        try HostMemory.checkFits(shape: dimensions.outputShape5D, elementSize: MemoryLayout<Double>.size,
                                 argument: "query/value", what: "a float64 output of shape")
        var output = [Double](repeating: 0, count: dimensions.outputShape5D.reduce(1, *))
        var lse = [Double]()
        lse.reserveCapacity(dimensions.lseShape.reduce(1, *))
        // LSE is [B, G, H, Mq]: the loop order of forEachRow.
        problem.forEachRow { batch, group, head, query in
            let row = problem.row(batch: batch, group: group, head: head, query: query)
            lse.append(row.lse)
            let headIndex = problem.headIndex(batch: batch, group: group, head: head)
            let outputBase = problem.valueOffset(batch: batch, row: query, rows: dimensions.queryLength, group: group,
                                                 head: head)
            for (keyRow, probability) in zip(row.keys, row.probabilities) {
                let weight = probability * problem.dropoutFactor(headIndex: headIndex, query: query, keyRow: keyRow)
                if weight == 0 { continue }
                let valueBase = problem.valueOffset(batch: batch, row: keyRow, rows: dimensions.keyLength, group: group,
                                                    head: head)
                for channel in 0..<valueDimension { output[outputBase + channel] += weight * problem.value[valueBase + channel] }
            }
        }
        return ForwardOutput(
            output: try Tensor(shape: dimensions.outputShape, scalars: output, dtype: attention.outputDType),
            lse: try Tensor(shape: dimensions.lseShape, scalars: lse, dtype: .float32))
    }
}

/// What the reference operators support: everything, on the CPU (the forward also quantized
/// K/V, dequantized first; no gradient is defined for those).
enum ReferenceCapabilities {
    static let forward: OperatorCapabilities = {
        var capabilities = all
        capabilities.supportsQuantizedKeyValue = true
        return capabilities
    }()

    static let all = OperatorCapabilities(
        devices: [.cpu], dtypes: Set(DType.floatingPointCases), maxHeadDimension: .max, biasTypes: attentionBiasTypes,
        supportsDropout: true, supportsCustomScale: true, supportsDifferentValueHeadDimension: true,
        supportsBMGHK: true, supportsPartial: true, supportsOutputDType: true, isDeterministic: true,
        supportsBiasGradient: true)
}
