#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import FMHACore

/// Attention over the materialized bias, in float64: the plainest formula, independent of the
/// mask layouts the operators walk. It checks the reference operator (and `fmha check` uses it).
public enum DenseAttention {
    /// Output `[B, Mq, G, H, Kv]` and LSE `[B, G, H, Mq]`, both row-major, of `problem`
    /// without dropout. A row whose scores are all −inf gets output 0 and LSE −inf.
    public static func forward(_ problem: AttentionProblem) throws -> (output: [Double], lse: [Double]) {
        let problem = try problem.dequantized()
        let d = problem.dimensions, inputs = problem.inputs
        let query = try problem.query.toDoubleArray()
        let key = try problem.key.toDoubleArray()
        let value = try problem.value.toDoubleArray()
        let bias = try inputs.bias?.materialize(shape: d.biasShape, dtype: .float64).toDoubleArray()
        let scale = problem.scale
        try HostMemory.checkFits(shape: d.outputShape5D, elementSize: MemoryLayout<Double>.size, argument: "query/value",
                                 what: "a float64 output of shape")
        var output = [Double](repeating: 0, count: d.outputShape5D.reduce(1, *)), lse = [Double]()
        for b in 0..<d.batch {
            for g in 0..<d.groups {
                for h in 0..<d.heads {
                    for i in 0..<d.queryLength {
                        let queryBase = (((b * d.queryLength + i) * d.groups + g) * d.heads + h) * d.headDimension
                        let scores = (0..<d.keyLength).map { j -> Double in
                            let keyBase = (((b * d.keyLength + j) * d.groups + g) * d.heads + h) * d.headDimension
                            let dot = (0..<d.headDimension).reduce(0.0) { $0 + query[queryBase + $1] * key[keyBase + $1] }
                            let biasIndex = (((b * d.groups + g) * d.heads + h) * d.queryLength + i) * d.keyLength + j
                            return scale * dot + (bias?[biasIndex] ?? 0)
                        }
                        let maximum = scores.max() ?? -.infinity
                        guard maximum > -.infinity else {
                            lse.append(-.infinity)
                            continue
                        }
                        let weights = scores.map { exp($0 - maximum) }
                        let sum = weights.reduce(0, +)
                        lse.append(maximum + log(sum))
                        let outputBase = (((b * d.queryLength + i) * d.groups + g) * d.heads + h) * d.valueHeadDimension
                        for (j, weight) in weights.enumerated() where weight > 0 {
                            let valueBase = (((b * d.keyLength + j) * d.groups + g) * d.heads + h) * d.valueHeadDimension
                            for c in 0..<d.valueHeadDimension { output[outputBase + c] += weight / sum * value[valueBase + c] }
                        }
                    }
                }
            }
        }
        return (output, lse)
    }
}
