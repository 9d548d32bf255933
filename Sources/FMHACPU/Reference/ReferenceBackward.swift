import FMHACore

/// The backward oracle: recomputes the softmax in float64 (the given LSE is only checked for
/// shape) and forms dQ, dK, dV and the tensor bias gradient directly from their definitions.
public struct ReferenceBackward: BackwardOperator {
    public let name = "cpu-reference"
    public var capabilities: OperatorCapabilities { ReferenceCapabilities.all }

    /// The operator.
    public init() {}

    public func backward(_ backward: BackwardProblem) throws -> Gradients {
        try requireSupport(backward.attention)
        let inputs = backward.attention.inputs, dimensions = backward.attention.dimensions
        let problem = try ReferenceProblem(backward.attention)
        let gradient = try backward.gradOutput.reshaped(dimensions.outputShape5D).toDoubleArray()
        let headDimension = dimensions.headDimension, valueDimension = dimensions.valueHeadDimension
        var dq = [Double](repeating: 0, count: problem.query.count)
        var dk = [Double](repeating: 0, count: problem.key.count)
        var dv = [Double](repeating: 0, count: problem.value.count)
        let biasTensor = inputs.bias?.tensorBias
        var dBias = [Double](repeating: 0, count: problem.bias?.count ?? 0)
        problem.forEachRow { batch, group, head, query in
            let row = problem.row(batch: batch, group: group, head: head, query: query)
            guard !row.keys.isEmpty else { return }
            let headIndex = problem.headIndex(batch: batch, group: group, head: head)
            let queryBase = problem.queryOffset(batch: batch, query: query, group: group, head: head)
            let gradientBase = problem.valueOffset(batch: batch, row: query, rows: dimensions.queryLength, group: group,
                                                   head: head)
            // dP_j = f_j·(dO·v_j), with f_j the dropout factor; D = Σ_j P_j·dP_j.
            var factors = [Double](), dProbabilities = [Double]()
            for keyRow in row.keys {
                let valueBase = problem.valueOffset(batch: batch, row: keyRow, rows: dimensions.keyLength, group: group,
                                                    head: head)
                var dot = 0.0
                for channel in 0..<valueDimension { dot += gradient[gradientBase + channel] * problem.value[valueBase + channel] }
                let factor = problem.dropoutFactor(headIndex: headIndex, query: query, keyRow: keyRow)
                factors.append(factor)
                dProbabilities.append(factor * dot)
            }
            let rowDot = zip(row.probabilities, dProbabilities).reduce(0) { $0 + $1.0 * $1.1 }
            for (position, keyRow) in row.keys.enumerated() {
                let probability = row.probabilities[position]
                let dScore = probability * (dProbabilities[position] - rowDot)
                let keyBase = problem.keyOffset(batch: batch, key: keyRow, group: group, head: head)
                for channel in 0..<headDimension {
                    dq[queryBase + channel] += problem.scale * dScore * problem.key[keyBase + channel]
                    dk[keyBase + channel] += problem.scale * dScore * problem.query[queryBase + channel]
                }
                let valueBase = problem.valueOffset(batch: batch, row: keyRow, rows: dimensions.keyLength, group: group,
                                                    head: head)
                let weight = probability * factors[position]
                for channel in 0..<valueDimension { dv[valueBase + channel] += weight * gradient[gradientBase + channel] }
                if biasTensor != nil {
                    dBias[problem.biasIndex(batch: batch, group: group, head: head, query: query, key: keyRow)] = dScore
                }
            }
        }
        return Gradients(
            dq: try BroadcastGradient.tensor(dq, shape: inputs.query.shape, like: inputs.query),
            dk: try BroadcastGradient.tensor(dk, shape: inputs.key.shape, like: inputs.key),
            dv: try BroadcastGradient.tensor(dv, shape: inputs.value.shape, like: inputs.value),
            dBias: try biasTensor.map { try BroadcastGradient.tensor(dBias, shape: $0.shape, like: $0) })
    }
}
