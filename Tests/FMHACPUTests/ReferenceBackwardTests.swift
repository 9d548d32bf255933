import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// `ReferenceBackward` against central finite differences of `L = Σ gradOutput ∘ output`, with the
/// output from the naive float64 attention, in float64. Inputs broadcast with stride 0 (GQA K/V,
/// a broadcast tensor bias) are perturbed in their shared storage, so their gradient is the sum
/// over the broadcast dimension, which the backward must return expanded.
@Suite struct ReferenceBackwardTests {
    /// An input as its own (small) storage plus an optional broadcast to the shape the call sees.
    struct Leaf {
        var values: [Double]
        let shape: [Int]
        let expandedShape: [Int]?

        init(_ shape: [Int], seed: UInt64, expandedTo expandedShape: [Int]? = nil) throws {
            values = try Tensor.randn(shape, dtype: .float64, seed: seed).toDoubleArray()
            self.shape = shape
            self.expandedShape = expandedShape
        }

        func tensor() throws -> Tensor {
            let base = try Tensor(shape: shape, scalars: values, dtype: .float64)
            return try expandedShape.map { try base.expanded(to: $0) } ?? base
        }

        /// The shape of the tensor the call sees.
        var callShape: [Int] { expandedShape ?? shape }

        /// Positions (row-major over `callShape`) that read leaf element `index`.
        func callPositions(of index: Int) -> [Int] {
            let call = callShape, rank = call.count
            let leafStrides = Tensor.contiguousStrides(for: shape)
            var positions = [Int]()
            let total = call.reduce(1, *)
            for position in 0..<total {
                var remainder = position, leafIndex = 0
                for dimension in (0..<rank).reversed() {
                    let coordinate = remainder % call[dimension]
                    remainder /= call[dimension]
                    if shape[dimension] != 1 { leafIndex += coordinate * leafStrides[dimension] }
                }
                if leafIndex == index { positions.append(position) }
            }
            return positions
        }
    }

    /// A backward problem: leaves for q, k, v and an optional tensor bias, a mask, a scale.
    struct Problem {
        var query: Leaf
        var key: Leaf
        var value: Leaf
        var biasLeaf: Leaf?
        /// Builds the bias from the tensor bias (if any).
        var makeBias: (Tensor?) -> (any AttentionBias)?
        var scale: Double?
        var dropout: DropoutState?

        func bias() throws -> (any AttentionBias)? { makeBias(try biasLeaf?.tensor()) }

        func inputs() throws -> Inputs {
            Inputs(query: try query.tensor(), key: try key.tensor(), value: try value.tensor(), bias: try bias(),
                   p: dropout?.p ?? 0, scale: scale)
        }

        /// `Σ gradOutput ∘ output` of the naive attention.
        func loss(_ gradOutput: [Double]) throws -> Double {
            let q = try query.tensor(), k = try key.tensor()
            let mask = dropout.map(DropoutMask.init)
            let naive = try NaiveAttention(
                query: q, key: k, value: try value.tensor(), bias: try denseBias(try bias(), query: q, key: k),
                scale: scale,
                dropoutFactor: mask.map { mask in { head, i, j in mask.isKept(head: head, query: i, key: j) ? mask.keptScale : 0 } })
            return naive.loss(gradOutput: gradOutput)
        }
    }

    /// Which leaf a finite difference perturbs.
    enum Which: String, CaseIterable { case query, key, value, bias }

    /// Compares the backward with central differences on `samples` elements of each leaf (every
    /// element when the leaf is small), with relative tolerance `1e-6`. Returns the gradients.
    @discardableResult
    static func check(_ problem: Problem, samples: Int = 8, _ what: String,
                      sourceLocation: SourceLocation = #_sourceLocation) throws -> Gradients {
        let inputs = try problem.inputs()
        let forward = try ReferenceForward().forward(inputs, dropout: problem.dropout)
        let gradOutputTensor = try Tensor.randn(forward.output.shape, dtype: .float64, seed: 999)
        let gradOutput = try gradOutputTensor.toDoubleArray()
        let gradients = try ReferenceBackward().backward(inputs, output: forward.output, lse: forward.lse,
                                                         gradOutput: gradOutputTensor, dropout: problem.dropout)
        #expect(gradients.dq.shape == inputs.query.shape && gradients.dk.shape == inputs.key.shape
                && gradients.dv.shape == inputs.value.shape, "\(what): gradient shapes", sourceLocation: sourceLocation)
        #expect(gradients.dq.dtype == .float64 && gradients.dk.dtype == .float64 && gradients.dv.dtype == .float64,
                sourceLocation: sourceLocation)
        if let biasLeaf = problem.biasLeaf {
            #expect(gradients.dBias?.shape == biasLeaf.callShape, "\(what): dBias shape", sourceLocation: sourceLocation)
        } else {
            #expect(gradients.dBias == nil, "\(what): dBias without a tensor bias", sourceLocation: sourceLocation)
        }
        var generator = SampleGenerator(state: 12345)
        for which in Which.allCases {
            let leaf: Leaf?, gradient: Tensor?
            switch which {
            case .query: (leaf, gradient) = (problem.query, gradients.dq)
            case .key: (leaf, gradient) = (problem.key, gradients.dk)
            case .value: (leaf, gradient) = (problem.value, gradients.dv)
            case .bias: (leaf, gradient) = (problem.biasLeaf, gradients.dBias)
            }
            guard let leaf, let gradient else { continue }
            let analytic = try gradient.toDoubleArray()
            #expect(!analytic.contains { $0.isNaN }, "\(what): NaN in d\(which)", sourceLocation: sourceLocation)
            let count = leaf.values.count
            let indices = count <= samples ? Array(0..<count) : (0..<samples).map { _ in generator.next(count) }
            for index in indices where leaf.values[index].isFinite {
                let step = 1e-5
                var plus = problem, minus = problem
                func perturb(_ problem: inout Problem, _ delta: Double) {
                    switch which {
                    case .query: problem.query.values[index] += delta
                    case .key: problem.key.values[index] += delta
                    case .value: problem.value.values[index] += delta
                    case .bias: problem.biasLeaf!.values[index] += delta
                    }
                }
                perturb(&plus, step)
                perturb(&minus, -step)
                let numeric = try (plus.loss(gradOutput) - minus.loss(gradOutput)) / (2 * step)
                // Every broadcast copy of the leaf element carries the summed gradient.
                for position in leaf.callPositions(of: index) {
                    let value = analytic[position]
                    #expect(abs(value - numeric) <= 1e-6 * abs(numeric) + 1e-8,
                            "\(what): d\(which)[\(position)] (leaf element \(index)) = \(value), finite differences \(numeric)",
                            sourceLocation: sourceLocation)
                }
            }
        }
        return gradients
    }

    static func plain(_ query: Leaf, _ key: Leaf, _ value: Leaf, scale: Double? = nil,
                      mask: (any AttentionBias)? = nil) -> Problem {
        Problem(query: query, key: key, value: value, biasLeaf: nil, makeBias: { _ in mask }, scale: scale)
    }

    @Test func bmhkWithoutBiasDifferentValueDimensionAndScale() throws {
        try Self.check(Self.plain(try Leaf([2, 5, 2, 4], seed: 1), try Leaf([2, 6, 2, 4], seed: 2),
                                  try Leaf([2, 6, 2, 3], seed: 3), scale: 0.7), samples: 12, "BMHK, K ≠ Kv, scale")
    }

    @Test func causalMask() throws {
        // Mq > Mkv with a top-left causal mask; and a bottom-right one, whose first rows see nothing.
        try Self.check(Self.plain(try Leaf([1, 6, 2, 3], seed: 4), try Leaf([1, 4, 2, 3], seed: 5),
                                  try Leaf([1, 4, 2, 3], seed: 6), mask: LowerTriangularMask()), "causal")
        let gradients = try Self.check(Self.plain(try Leaf([1, 6, 2, 3], seed: 7), try Leaf([1, 4, 2, 3], seed: 8),
                                                  try Leaf([1, 4, 2, 3], seed: 9), mask: LowerTriangularFromBottomRightMask()),
                                       "bottom-right causal")
        // Queries 0 and 1 see no key: zero gradient.
        let dq = try gradients.dq.toDoubleArray()
        #expect(dq[0..<12].allSatisfy { $0 == 0 })
        #expect(dq[12..<36].contains { $0 != 0 })
    }

    @Test func varlenMaskWithFullyMaskedRowsAndNaNPadding() throws {
        // Block 1 has 3 queries and 1 key (its first 2 queries see nothing); block 2 has no keys.
        let mask = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 3, 2], kvPadding: 4,
                                                                               kvSeqlen: [3, 1, 0])
        var problem = Self.plain(try Leaf([1, 7, 2, 4], seed: 10), try Leaf([1, 12, 2, 4], seed: 11),
                                 try Leaf([1, 12, 2, 2], seed: 12), mask: mask)
        // NaN in the padding rows (3, 5, 6, 7 and 8..<12) must not reach any gradient.
        for row in [3, 5, 6, 7, 8, 9, 10, 11] {
            for index in row * 8 ..< row * 8 + 8 { problem.key.values[index] = .nan }
            for index in row * 4 ..< row * 4 + 4 { problem.value.values[index] = .nan }
        }
        let gradients = try Self.check(problem, samples: 16, "varlen")
        let dq = try gradients.dq.toDoubleArray(), dk = try gradients.dk.toDoubleArray(), dv = try gradients.dv.toDoubleArray()
        // Queries 2, 3 (block 1) and 5, 6 (block 2): zero rows of dq (2 heads × 4 channels each).
        for query in [2, 3, 5, 6] { #expect(dq[query * 8 ..< query * 8 + 8].allSatisfy { $0 == 0 }, "dq row \(query)") }
        // (Query 4 sees a single key, so its softmax is constant and its dq is 0 too.)
        #expect(dq[0..<16].contains { $0 != 0 })
        for row in [3, 5, 6, 7, 8, 9, 10, 11] {
            #expect(dk[row * 8 ..< row * 8 + 8].allSatisfy { $0 == 0 }, "dk padding row \(row)")
            #expect(dv[row * 4 ..< row * 4 + 4].allSatisfy { $0 == 0 }, "dv padding row \(row)")
        }
    }

    @Test func pagedMask() throws {
        let mask = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 1], kvPadding: 4, kvSeqlen: [3, 4])
            .makePaged(blockTables: [[3, 1], [0, 2]], pageSize: 2)
        try Self.check(Self.plain(try Leaf([1, 3, 1, 3], seed: 13), try Leaf([1, 8, 1, 3], seed: 14),
                                  try Leaf([1, 8, 1, 3], seed: 15), mask: mask), samples: 24, "paged")
    }

    @Test func bmghkWithStrideZeroKeysAndValues() throws {
        // Two groups of three query heads; K/V shared within a group: dk, dv sum over the 3 heads.
        let problem = Self.plain(try Leaf([1, 4, 2, 3, 3], seed: 16),
                                 try Leaf([1, 5, 2, 1, 3], seed: 17, expandedTo: [1, 5, 2, 3, 3]),
                                 try Leaf([1, 5, 2, 1, 2], seed: 18, expandedTo: [1, 5, 2, 3, 2]),
                                 mask: LowerTriangularFromBottomRightMask())
        let gradients = try Self.check(problem, samples: 12, "BMGHK GQA")
        #expect(gradients.dk.shape == [1, 5, 2, 3, 3] && gradients.dv.shape == [1, 5, 2, 3, 2])
    }

    @Test func bmhkKeysAndValuesExpandedOverHeadsAndBatch() throws {
        let problem = Self.plain(try Leaf([3, 4, 2, 3], seed: 19),
                                 try Leaf([1, 5, 1, 3], seed: 20, expandedTo: [3, 5, 2, 3]),
                                 try Leaf([1, 5, 1, 4], seed: 21, expandedTo: [3, 5, 2, 4]), scale: 0.5)
        try Self.check(problem, samples: 15, "K/V broadcast over B and H")
    }

    @Test func broadcastTensorBias() throws {
        // [1, 1, Mq, Mkv] expanded to [B, H, Mq, Mkv]: dBias is the sum over B and H. Row 2 is all
        // −inf (a fully masked row) and one more element is −inf.
        var biasLeaf = try Leaf([1, 1, 4, 5], seed: 22, expandedTo: [2, 2, 4, 5])
        for key in 0..<5 { biasLeaf.values[2 * 5 + key] = -.infinity }
        biasLeaf.values[0 * 5 + 3] = -.infinity
        let problem = Problem(query: try Leaf([2, 4, 2, 3], seed: 23), key: try Leaf([2, 5, 2, 3], seed: 24),
                              value: try Leaf([2, 5, 2, 3], seed: 25), biasLeaf: biasLeaf, makeBias: { $0 }, scale: nil)
        let gradients = try Self.check(problem, samples: 20, "broadcast tensor bias")
        let dBias = try #require(gradients.dBias)
        #expect(dBias.shape == [2, 2, 4, 5])
        let values = try dBias.toDoubleArray(), dq = try gradients.dq.toDoubleArray()
        for b in 0..<2 {
            for h in 0..<2 {
                let base = (b * 2 + h) * 20
                #expect(values[base + 10 ..< base + 15].allSatisfy { $0 == 0 }, "dBias of the masked row")
                #expect(values[base + 3] == 0, "dBias of a −inf element")
                // Query 2 of every batch and head sees nothing: zero dq.
                let row = ((b * 4 + 2) * 2 + h) * 3
                #expect(dq[row ..< row + 3].allSatisfy { $0 == 0 })
            }
        }
        // Σ_j dBias = 0 on every visible row (softmax is shift invariant).
        for row in [0, 1, 3] {
            #expect(abs(values[row * 5 ..< row * 5 + 5].reduce(0, +)) < 1e-12)
        }
    }

    @Test func lowerTriangularMaskWithBroadcastTensorBias() throws {
        let biasLeaf = try Leaf([1, 2, 5, 5], seed: 26, expandedTo: [2, 2, 5, 5])
        let problem = Problem(query: try Leaf([2, 5, 2, 4], seed: 27), key: try Leaf([2, 5, 2, 4], seed: 28),
                              value: try Leaf([2, 5, 2, 2], seed: 29), biasLeaf: biasLeaf,
                              makeBias: { LowerTriangularMaskWithTensorBias($0!) }, scale: 0.3)
        let gradients = try Self.check(problem, samples: 25, "causal + tensor bias")
        // Masked positions (j > i) have zero bias gradient.
        let values = try #require(gradients.dBias).toDoubleArray()
        for i in 0..<5 { for j in (i + 1)..<5 { #expect(values[i * 5 + j] == 0) } }
    }

    @Test func bmkWithTensorBias() throws {
        let problem = Problem(query: try Leaf([2, 3, 2], seed: 30), key: try Leaf([2, 4, 2], seed: 31),
                              value: try Leaf([2, 4, 5], seed: 32), biasLeaf: try Leaf([2, 3, 4], seed: 33),
                              makeBias: { $0 }, scale: nil)
        try Self.check(problem, samples: 24, "BMK tensor bias")
    }

    @Test func queryExpandedOverHeads() throws {
        // A query shared by every head (stride 0 on H): like any stride-0 input ("Gradients": where
        // an input has stride 0 along a dimension its gradient is summed along it and returned
        // expanded), dq must be the sum over the heads of the per-head gradients, in every slice.
        let shared = try Tensor.randn([1, 3, 1, 4], dtype: .float64, seed: 34)
        let expanded = try shared.expanded(to: [1, 3, 3, 4])
        let key = try Tensor.randn([1, 5, 3, 4], dtype: .float64, seed: 35)
        let value = try Tensor.randn([1, 5, 3, 2], dtype: .float64, seed: 36)
        let gradOutput = try Tensor.randn([1, 3, 3, 2], dtype: .float64, seed: 37)
        func gradients(_ query: Tensor) throws -> Gradients {
            let inputs = Inputs(query: query, key: key, value: value)
            let forward = try ReferenceForward().forward(inputs, dropout: nil)
            return try ReferenceBackward().backward(inputs, output: forward.output, lse: forward.lse,
                                                    gradOutput: gradOutput, dropout: nil)
        }
        // Per-head gradients from a contiguous copy, summed over H and broadcast back.
        let perHead = try gradients(try expanded.contiguous()).dq.toDoubleArray()
        var expected = [Double](repeating: 0, count: perHead.count)
        for query in 0..<3 { for channel in 0..<4 {
            let sum = (0..<3).reduce(0.0) { $0 + perHead[(query * 3 + $1) * 4 + channel] }
            for head in 0..<3 { expected[(query * 3 + head) * 4 + channel] = sum }
        } }
        let dq = try gradients(expanded).dq
        #expect(dq.shape == [1, 3, 3, 4])
        expectClose(try dq.toDoubleArray(), expected, atol: 1e-12, rtol: 1e-12,
                    "dq of a query expanded over H (stride 0) should be summed over H")
        // Finite differences on the shared storage agree with that sum (checked on two elements).
        let problem = Self.plain(try Leaf([1, 3, 1, 4], seed: 34, expandedTo: [1, 3, 3, 4]),
                                 try Leaf([1, 5, 3, 4], seed: 35), try Leaf([1, 5, 3, 2], seed: 36))
        let g = try gradOutput.toDoubleArray()
        for index in [1, 6] {
            var plus = problem, minus = problem
            plus.query.values[index] += 1e-5
            minus.query.values[index] -= 1e-5
            let numeric = try (plus.loss(g) - minus.loss(g)) / 2e-5
            let position = (index / 4 * 3) * 4 + index % 4
            #expect(abs(expected[position] - numeric) <= 1e-6 * abs(numeric) + 1e-8, "the test's own expectation")
        }
    }

    // MARK: - Empty tensors

    @Test func noQueriesGiveZeroKeyAndValueGradients() throws {
        let inputs = Inputs(query: try Tensor.randn([2, 0, 2, 4], dtype: .float64, seed: 1),
                            key: try Tensor.randn([2, 5, 2, 4], dtype: .float64, seed: 2),
                            value: try Tensor.randn([2, 5, 2, 3], dtype: .float64, seed: 3))
        let forward = try ReferenceForward().forward(inputs, dropout: nil)
        let gradients = try ReferenceBackward().backward(inputs, output: forward.output, lse: forward.lse,
                                                         gradOutput: try Tensor.zeros([2, 0, 2, 3], dtype: .float64),
                                                         dropout: nil)
        #expect(gradients.dq.shape == [2, 0, 2, 4])
        #expect(gradients.dk.shape == [2, 5, 2, 4] && gradients.dv.shape == [2, 5, 2, 3])
        #expect(try gradients.dk.toDoubleArray().allSatisfy { $0 == 0 })
        #expect(try gradients.dv.toDoubleArray().allSatisfy { $0 == 0 })
    }

    @Test func noKeysGiveZeroQueryGradient() throws {
        let inputs = Inputs(query: try Tensor.randn([2, 3, 2, 4], dtype: .float64, seed: 1),
                            key: try Tensor.randn([2, 0, 2, 4], dtype: .float64, seed: 2),
                            value: try Tensor.randn([2, 0, 2, 3], dtype: .float64, seed: 3),
                            bias: try Tensor.zeros([2, 2, 3, 0], dtype: .float64))
        let forward = try ReferenceForward().forward(inputs, dropout: nil)
        let gradients = try ReferenceBackward().backward(inputs, output: forward.output, lse: forward.lse,
                                                         gradOutput: try Tensor.randn([2, 3, 2, 3], dtype: .float64, seed: 4),
                                                         dropout: nil)
        #expect(gradients.dq.shape == [2, 3, 2, 4])
        #expect(try gradients.dq.toDoubleArray().allSatisfy { $0 == 0 })
        #expect(gradients.dk.shape == [2, 0, 2, 4] && gradients.dv.shape == [2, 0, 2, 3])
        #expect(gradients.dBias?.shape == [2, 2, 3, 0])
    }

    @Test func emptyBatch() throws {
        let inputs = Inputs(query: try Tensor.zeros([0, 3, 2, 4], dtype: .float64),
                            key: try Tensor.zeros([0, 5, 2, 4], dtype: .float64),
                            value: try Tensor.zeros([0, 5, 2, 3], dtype: .float64), bias: LowerTriangularMask())
        let forward = try ReferenceForward().forward(inputs, dropout: nil)
        let gradients = try ReferenceBackward().backward(inputs, output: forward.output, lse: forward.lse,
                                                         gradOutput: try Tensor.zeros([0, 3, 2, 3], dtype: .float64),
                                                         dropout: nil)
        #expect(gradients.dq.shape == [0, 3, 2, 4] && gradients.dk.shape == [0, 5, 2, 4] && gradients.dv.shape == [0, 5, 2, 3])
    }

    @Test(arguments: [DType.float32, .float16, .bfloat16])
    func lowPrecisionGradientsHaveTheInputDType(dtype: DType) throws {
        // The gradients come back in the inputs' dtype, and agree with the float64 ones to the
        // backward tolerances of §6.3.
        let query = try Tensor.randn([1, 4, 2, 8], dtype: dtype, seed: 40)
        let key = try Tensor.randn([1, 6, 2, 8], dtype: dtype, seed: 41)
        let value = try Tensor.randn([1, 6, 2, 8], dtype: dtype, seed: 42)
        let gradOutput = try Tensor.randn([1, 4, 2, 8], dtype: dtype, seed: 43)
        let inputs = Inputs(query: query, key: key, value: value, bias: LowerTriangularFromBottomRightMask())
        let forward = try ReferenceForward().forward(inputs, dropout: nil)
        let gradients = try ReferenceBackward().backward(inputs, output: forward.output, lse: forward.lse,
                                                         gradOutput: gradOutput, dropout: nil)
        let wide = Inputs(query: try query.converted(to: .float64), key: try key.converted(to: .float64),
                          value: try value.converted(to: .float64), bias: LowerTriangularFromBottomRightMask())
        let wideForward = try ReferenceForward().forward(wide, dropout: nil)
        let reference = try ReferenceBackward().backward(wide, output: wideForward.output, lse: wideForward.lse,
                                                         gradOutput: try gradOutput.converted(to: .float64), dropout: nil)
        let tolerance: (Double, Double) = switch dtype {
        case .float16: (0.2, 2e-2)
        case .bfloat16: (0.9, 0.1)
        default: (9e-4, 1e-4)
        }
        for (name, low, high) in [("dq", gradients.dq, reference.dq), ("dk", gradients.dk, reference.dk),
                                  ("dv", gradients.dv, reference.dv)] {
            #expect(low.dtype == dtype)
            expectClose(try low.toDoubleArray(), try high.toDoubleArray(), atol: tolerance.0, rtol: tolerance.1, "\(dtype) \(name)")
        }
    }
}
