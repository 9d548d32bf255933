#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import FMHATestSupport
import FMHACore
import Testing

/// A deliberately plain float64 attention, written from the math in the reference inventory
/// (§1.2): `S = scale·Q·Kᵀ + bias`, a row softmax, `O = P·V` and `LSE = log Σ exp S`. It shares
/// nothing with `ReferenceProblem` but `Tensor.toDoubleArray()` and, for masks,
/// `AttentionBias.materialize(shape:)`.
///
/// Layout handling: every layout is read as `[B, M, G, H, K]` with G = 1 (BMK, BMHK) and H = 1
/// (BMK), which is exactly the logical row-major order of the tensor, so logical arrays can be
/// indexed directly.
struct NaiveAttention {
    let batch: Int, queryLength: Int, keyLength: Int, groups: Int, heads: Int
    let headDimension: Int, valueDimension: Int

    /// Output in the output tensor's logical order, `[B, Mq, G, H, Kv]`.
    var output: [Double]
    /// LSE in `[B, G, H, Mq]` order (the logical order of every LSE layout, BMK's `[B, 1, Mq]` too).
    var lse: [Double]

    /// The output shape in the inputs' layout.
    static func outputShape(query: Tensor, value: Tensor) -> [Int] {
        Array(query.shape.dropLast()) + [value.shape.last!]
    }

    /// The LSE shape the design guarantees: `[B, H, Mq]`, `[B, G, H, Mq]`, `[B, 1, Mq]`.
    static func lseShape(query: Tensor) -> [Int] {
        switch query.rank {
        case 3: [query.shape[0], 1, query.shape[1]]
        case 4: [query.shape[0], query.shape[2], query.shape[1]]
        default: [query.shape[0], query.shape[2], query.shape[3], query.shape[1]]
        }
    }

    /// Runs the naive attention. `bias` is dense `[B, G, H, Mq, Mkv]` (see `denseBias`);
    /// `dropoutFactor(head, i, j)` multiplies `P[i, j]` of linear head `(b·G + g)·H + h`.
    init(query: Tensor, key: Tensor, value: Tensor, bias: [Double]?, scale: Double? = nil,
         dropoutFactor: ((Int, Int, Int) -> Double)? = nil) throws {
        let rank = query.rank
        batch = query.shape[0]
        queryLength = query.shape[1]
        keyLength = key.shape[1]
        groups = rank == 5 ? query.shape[2] : 1
        heads = rank == 3 ? 1 : query.shape[rank - 2]
        headDimension = query.shape[rank - 1]
        valueDimension = value.shape[rank - 1]
        let scale = scale ?? 1 / Double(headDimension).squareRoot()
        let q = try query.toDoubleArray(), k = try key.toDoubleArray(), v = try value.toDoubleArray()
        let headCount = groups * heads
        output = [Double](repeating: 0, count: batch * queryLength * headCount * valueDimension)
        lse = [Double](repeating: -.infinity, count: batch * headCount * queryLength)
        for b in 0..<batch {
            for head in 0..<headCount {
                for i in 0..<queryLength {
                    // Scores of the visible keys only: a −inf bias hides the key entirely (so NaN in a
                    // hidden K/V row cannot leak in).
                    var visible = [(key: Int, score: Double)]()
                    for j in 0..<keyLength {
                        let biasValue = bias?[(((b * headCount + head) * queryLength + i) * keyLength) + j] ?? 0
                        if biasValue == -.infinity { continue }
                        var dot = 0.0
                        for c in 0..<headDimension {
                            dot += q[((b * queryLength + i) * headCount + head) * headDimension + c]
                                * k[((b * keyLength + j) * headCount + head) * headDimension + c]
                        }
                        let score = scale * dot + biasValue
                        if score == -.infinity { continue }
                        visible.append((j, score))
                    }
                    guard let maximum = visible.map(\.score).max() else { continue }
                    var sum = 0.0
                    for entry in visible { sum += exp(entry.score - maximum) }
                    lse[(b * headCount + head) * queryLength + i] = maximum + log(sum)
                    let outputBase = ((b * queryLength + i) * headCount + head) * valueDimension
                    for entry in visible {
                        var weight = exp(entry.score - maximum) / sum
                        if let dropoutFactor { weight *= dropoutFactor(b * headCount + head, i, entry.key) }
                        if weight == 0 { continue }
                        for c in 0..<valueDimension {
                            output[outputBase + c] += weight * v[((b * keyLength + entry.key) * headCount + head) * valueDimension + c]
                        }
                    }
                }
            }
        }
    }

    /// `Σ gradOutput ∘ output`.
    func loss(gradOutput: [Double]) -> Double {
        zip(output, gradOutput).reduce(0) { $0 + $1.0 * $1.1 }
    }
}

/// The dense `[B, G, H, Mq, Mkv]` additive bias of `bias` for these inputs: a plain tensor as
/// is, a mask through `materialize(shape: [Mq, Mkv])` (broadcast over B, G, H), and
/// `LowerTriangularMaskWithTensorBias` as the causal plane plus its tensor (kept in float64).
func denseBias(_ bias: (any AttentionBias)?, query: Tensor, key: Tensor) throws -> [Double]? {
    guard let bias else { return nil }
    let rank = query.rank
    let batch = query.shape[0], queryLength = query.shape[1], keyLength = key.shape[1]
    let headCount = rank == 5 ? query.shape[2] * query.shape[3] : rank == 4 ? query.shape[2] : 1
    if let tensor = bias as? Tensor { return try tensor.toDoubleArray() }
    var tensorPart: [Double]?
    let plane: [Double]
    if let withTensor = bias as? LowerTriangularMaskWithTensorBias {
        tensorPart = try withTensor.bias.toDoubleArray()
        plane = try LowerTriangularMask().materialize(shape: [queryLength, keyLength], dtype: .float64).toDoubleArray()
    } else {
        plane = try bias.materialize(shape: [queryLength, keyLength], dtype: .float64).toDoubleArray()
    }
    let planeSize = queryLength * keyLength
    var result = [Double](repeating: 0, count: batch * headCount * planeSize)
    for index in result.indices { result[index] = plane[index % max(planeSize, 1)] + (tensorPart?[index] ?? 0) }
    return result
}

/// K/V rows (per `[B, Mkv]` position) that no query of any head may see under `dense`.
func hiddenKeyRows(_ dense: [Double]?, batch: Int, headCount: Int, queryLength: Int, keyLength: Int) -> Set<[Int]> {
    guard let dense else { return [] }
    var hidden = Set<[Int]>()
    for b in 0..<batch {
        for j in 0..<keyLength {
            var seen = false
            for head in 0..<headCount where !seen {
                for i in 0..<queryLength where dense[((b * headCount + head) * queryLength + i) * keyLength + j] != -.infinity {
                    seen = true
                    break
                }
            }
            if !seen { hidden.insert([b, j]) }
        }
    }
    return hidden
}

/// A contiguous tensor from `values` with NaN written into every element whose `[b, m]` (first two
/// indices) is in `rows`.
func poisoned(_ tensor: Tensor, rows: Set<[Int]>) throws -> Tensor {
    guard !rows.isEmpty else { return tensor }
    var values = try tensor.toDoubleArray()
    let perRow = tensor.shape.dropFirst(2).reduce(1, *), length = tensor.shape[1]
    for index in values.indices {
        let row = index / perRow
        if rows.contains([row / length, row % length]) { values[index] = .nan }
    }
    return try Tensor(shape: tensor.shape, scalars: values, dtype: tensor.dtype)
}

/// Forward tolerances of the reference inventory §6.3 for an output dtype (float64: tight, since
/// the oracle is float64 throughout).
func forwardTolerance(_ dtype: DType) -> (atol: Double, rtol: Double) {
    switch dtype {
    case .float32: (3e-4, 2e-5)
    case .float16: (4e-3, 4e-4)
    case .bfloat16: (2e-2, 5e-3)
    case .float64, .int32: (1e-12, 1e-12)
    }
}

/// Two units in the last place of `dtype` (relative), plus an absolute floor for values near 0
/// (float16's subnormal spacing): the gap between two float64 results rounded to `dtype`.
func roundingTolerance(_ dtype: DType) -> (atol: Double, rtol: Double) {
    switch dtype {
    case .float32: (1e-12, 0x1p-22)
    case .float16: (0x1p-23, 0x1p-9)
    case .bfloat16: (1e-12, 0x1p-6)
    case .float64, .int32: (1e-15, 1e-13)
    }
}

/// `|actual − expected| ≤ atol + rtol·|expected|` elementwise; infinities must match exactly and
/// NaN never passes. Reports the worst element.
func expectClose(_ actual: [Double], _ expected: [Double], atol: Double, rtol: Double, _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    guard actual.count == expected.count else {
        Issue.record("\(what): \(actual.count) elements, expected \(expected.count)", sourceLocation: sourceLocation)
        return
    }
    var failures = 0, worst: (index: Int, excess: Double)?
    for index in actual.indices {
        let a = actual[index], e = expected[index]
        let ok: Bool
        if a.isNaN || e.isNaN {
            ok = false
        } else if e.isInfinite || a.isInfinite {
            ok = a == e
        } else {
            ok = abs(a - e) <= atol + rtol * abs(e)
        }
        if !ok {
            failures += 1
            let excess = a.isFinite && e.isFinite ? abs(a - e) - atol - rtol * abs(e) : .infinity
            if worst == nil || excess > worst!.excess { worst = (index, excess) }
        }
    }
    if let worst {
        Issue.record("\(what): \(failures) of \(actual.count) elements differ; worst at \(worst.index): got \(actual[worst.index]), expected \(expected[worst.index]) (atol \(atol), rtol \(rtol))",
                     sourceLocation: sourceLocation)
    }
}

/// A small deterministic generator for sampling indices.
struct SampleGenerator {
    var state: UInt64
    mutating func next(_ bound: Int) -> Int {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Int((state >> 33) % UInt64(bound))
    }
}
