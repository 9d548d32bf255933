import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// Dropout in the reference operators: the forward applies exactly the Philox mask of
/// `DropoutMask.isKept(head: (b·G + g)·H + h, query: i, key: j)` (j the K/V row) to P with kept
/// weights scaled by 1/(1 − p), the LSE ignores dropout, and the backward replays the same mask.
@Suite struct DropoutReplayTests {
    static let state = DropoutState(p: 0.3, seed: 0x1234_5678_9ABC, offset: 7)

    static func factor(_ state: DropoutState) -> (Int, Int, Int) -> Double {
        let mask = DropoutMask(state)
        return { head, query, key in mask.isKept(head: head, query: query, key: key) ? mask.keptScale : 0 }
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let query: Tensor, key: Tensor, value: Tensor
        let bias: (any AttentionBias)?
        var testDescription: String { name }
    }

    static let caseNames = ["BMGHK", "BMGHK stride-0 K/V", "BMK causal", "paged, shuffled pages",
                            "float32 with tensor bias", "float16"]

    static func makeCases() throws -> [Case] {
        func randn(_ shape: [Int], _ seed: UInt64, _ dtype: DType = .float64) throws -> Tensor {
            try Tensor.randn(shape, dtype: dtype, seed: seed)
        }
        let paged = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [3, 1, 4], kvPadding: 8,
                                                                                 kvSeqlen: [8, 0, 6])
            .makePaged(blockTables: [[4, 1], [0, 5], [3, 2]], pageSize: 4)
        return [
            Case(name: "BMGHK", query: try randn([2, 5, 2, 3, 4], 1), key: try randn([2, 9, 2, 3, 4], 2),
                 value: try randn([2, 9, 2, 3, 3], 3), bias: nil),
            Case(name: "BMGHK stride-0 K/V", query: try randn([2, 5, 2, 3, 4], 4),
                 key: try randn([2, 9, 2, 1, 4], 5).expanded(to: [2, 9, 2, 3, 4]),
                 value: try randn([2, 9, 2, 1, 3], 6).expanded(to: [2, 9, 2, 3, 3]), bias: LowerTriangularFromBottomRightMask()),
            Case(name: "BMK causal", query: try randn([3, 7, 5], 7), key: try randn([3, 7, 5], 8), value: try randn([3, 7, 2], 9),
                 bias: LowerTriangularMask()),
            Case(name: "paged, shuffled pages", query: try randn([1, 8, 2, 4], 10), key: try randn([1, 24, 2, 4], 11),
                 value: try randn([1, 24, 2, 4], 12), bias: paged),
            Case(name: "float32 with tensor bias", query: try randn([2, 6, 2, 8], 13, .float32), key: try randn([2, 11, 2, 8], 14, .float32),
                 value: try randn([2, 11, 2, 8], 15, .float32), bias: try randn([2, 2, 6, 11], 16, .float32)),
            Case(name: "float16", query: try randn([1, 6, 2, 8], 17, .float16), key: try randn([1, 11, 2, 8], 18, .float16),
                 value: try randn([1, 11, 2, 8], 19, .float16), bias: LowerTriangularMask()),
        ]
    }

    @Test func caseNamesListEveryCase() throws {
        #expect(try Self.makeCases().map(\.name) == Self.caseNames)
    }

    @Test(arguments: caseNames)
    func forwardAppliesTheMaskOfItsState(_ name: String) throws {
        let testCase = try #require(try Self.makeCases().first { $0.name == name })
        let state = Self.state
        let inputs = Inputs(query: testCase.query, key: testCase.key, value: testCase.value, bias: testCase.bias, p: state.p)
        let result = try ReferenceForward().forward(inputs, dropout: state)
        let dense = try denseBias(testCase.bias, query: testCase.query, key: testCase.key)
        let naive = try NaiveAttention(query: testCase.query, key: testCase.key, value: testCase.value, bias: dense,
                                       dropoutFactor: Self.factor(state))
        let atol: Double = switch testCase.query.dtype {
        case .float64: 1e-12
        case .float32: 2e-4
        default: 2.8e-2
        }
        let output = try result.output.toDoubleArray()
        expectClose(output, naive.output, atol: atol, rtol: 0, "\(testCase.name): output with dropout")
        // The LSE is computed before dropout: the same as without it.
        let plain = try ReferenceForward().forward(Inputs(query: testCase.query, key: testCase.key, value: testCase.value,
                                                          bias: testCase.bias), dropout: nil)
        #expect(try result.lse.toDoubleArray() == plain.lse.toDoubleArray())
        // Dropout changed something, and replaying the state gives the same bits.
        #expect(try output != plain.output.toDoubleArray())
        #expect(try ReferenceForward().forward(inputs, dropout: state).output.toDoubleArray() == output)
        // Another offset or seed is another mask.
        let otherOffset = DropoutState(p: state.p, seed: state.seed, offset: state.offset + 1)
        #expect(try ReferenceForward().forward(inputs, dropout: otherOffset).output.toDoubleArray() != output)
    }

    @Test func keyIndexIsTheKVRowAndHeadIndexIsLinear() throws {
        // With a one-hot V and scale 0, the output *is* the dropped-out P: check each element
        // against isKept with the documented indices (b·G + g)·H + h, i, j.
        let (batch, groups, heads, queries, keys) = (2, 2, 2, 3, 8)
        var values = [Double](repeating: 0, count: batch * keys * groups * heads * keys)
        for b in 0..<batch { for j in 0..<keys { for head in 0..<(groups * heads) {
            values[((b * keys + j) * groups * heads + head) * keys + j] = 1
        } } }
        let value = try Tensor(shape: [batch, keys, groups, heads, keys], scalars: values, dtype: .float64)
        let inputs = Inputs(query: try Tensor.randn([batch, queries, groups, heads, 2], dtype: .float64, seed: 1),
                            key: try Tensor.randn([batch, keys, groups, heads, 2], dtype: .float64, seed: 2),
                            value: value, p: 0.5, scale: 0)
        let state = DropoutState(p: 0.5, seed: 77, offset: 3)
        let output = try ReferenceForward().forward(inputs, dropout: state).output.toDoubleArray()
        let mask = DropoutMask(state)
        for b in 0..<batch { for i in 0..<queries { for g in 0..<groups { for h in 0..<heads { for j in 0..<keys {
            let position = ((((b * queries + i) * groups + g) * heads + h) * keys) + j
            let expected = mask.isKept(head: (b * groups + g) * heads + h, query: i, key: j) ? 2.0 / Double(keys) : 0
            #expect(abs(output[position] - expected) < 1e-15, "b\(b) i\(i) g\(g) h\(h) j\(j)")
        } } } } }
    }

    @Test func keepRateAndScaling() throws {
        // B = 2, H = 2, Mq = 64, Mkv = Kv = 128, one-hot V, scale 0: output = kept/(0.7·128).
        let (batch, heads, queries, keys) = (2, 2, 64, 128)
        var values = [Double](repeating: 0, count: batch * keys * heads * keys)
        for b in 0..<batch { for j in 0..<keys { for h in 0..<heads { values[((b * keys + j) * heads + h) * keys + j] = 1 } } }
        let inputs = Inputs(query: try Tensor.randn([batch, queries, heads, 4], dtype: .float64, seed: 3),
                            key: try Tensor.randn([batch, keys, heads, 4], dtype: .float64, seed: 4),
                            value: try Tensor(shape: [batch, keys, heads, keys], scalars: values, dtype: .float64),
                            p: 0.3, scale: 0)
        let output = try ReferenceForward().forward(inputs, dropout: Self.state).output.toDoubleArray()
        let keptValue = 1 / (0.7 * Double(keys))
        var kept = 0, perHead = [Int](repeating: 0, count: batch * heads)
        for (position, element) in output.enumerated() {
            if element == 0 { continue }
            #expect(abs(element - keptValue) < 1e-15)
            kept += 1
            let h = (position / keys) % heads, b = position / (keys * heads * queries)
            perHead[b * heads + h] += 1
        }
        let total = Double(output.count), rate = Double(kept) / total
        // Binomial: σ = sqrt(0.21/32768) ≈ 0.0025; allow 5σ.
        #expect(abs(rate - 0.7) < 0.0127, "keep rate \(rate)")
        for count in perHead {
            let headRate = Double(count) / Double(queries * keys)
            #expect(abs(headRate - 0.7) < 0.026, "per-head keep rate \(headRate)")  // 5σ of 8192 draws
        }
        // Unbiased: the mean weight stays 1/Mkv.
        let mean = output.reduce(0, +) / total
        #expect(abs(mean * Double(keys) - 1) < 0.02)
        // The heads do not share one mask.
        let plane = queries * keys
        func headPlane(_ b: Int, _ h: Int) -> [Bool] {
            (0..<plane).map { output[((b * queries + $0 / keys) * heads + h) * keys + $0 % keys] != 0 }
        }
        #expect(headPlane(0, 0) != headPlane(0, 1) && headPlane(0, 0) != headPlane(1, 0))
    }

    // MARK: - Backward replay

    typealias Leaf = ReferenceBackwardTests.Leaf

    @Test func backwardReplaysTheMaskCausal() throws {
        var problem = ReferenceBackwardTests.plain(try Leaf([2, 5, 2, 3], seed: 50), try Leaf([2, 6, 2, 3], seed: 51),
                                                   try Leaf([2, 6, 2, 4], seed: 52), scale: 0.8, mask: LowerTriangularMask())
        problem.dropout = Self.state
        try ReferenceBackwardTests.check(problem, samples: 16, "dropout, causal")
    }

    @Test func backwardReplaysTheMaskGQA() throws {
        var problem = ReferenceBackwardTests.plain(try Leaf([1, 4, 2, 3, 3], seed: 53),
                                                   try Leaf([1, 6, 2, 1, 3], seed: 54, expandedTo: [1, 6, 2, 3, 3]),
                                                   try Leaf([1, 6, 2, 1, 2], seed: 55, expandedTo: [1, 6, 2, 3, 2]),
                                                   mask: LowerTriangularFromBottomRightMask())
        problem.dropout = DropoutState(p: 0.5, seed: 9, offset: 1)
        try ReferenceBackwardTests.check(problem, samples: 16, "dropout, BMGHK GQA")
    }

    @Test func backwardReplaysTheMaskWithTensorBiasAndPages() throws {
        let mask = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 2], kvPadding: 4, kvSeqlen: [4, 3])
            .makePaged(blockTables: [[2, 0], [3, 1]], pageSize: 2)
        var paged = ReferenceBackwardTests.plain(try Leaf([1, 4, 2, 3], seed: 56), try Leaf([1, 8, 2, 3], seed: 57),
                                                 try Leaf([1, 8, 2, 3], seed: 58), mask: mask)
        paged.dropout = Self.state
        try ReferenceBackwardTests.check(paged, samples: 20, "dropout, paged")
        var biased = ReferenceBackwardTests.Problem(
            query: try Leaf([2, 4, 2, 3], seed: 59), key: try Leaf([2, 5, 2, 3], seed: 60), value: try Leaf([2, 5, 2, 3], seed: 61),
            biasLeaf: try Leaf([1, 1, 4, 5], seed: 62, expandedTo: [2, 2, 4, 5]), makeBias: { $0 }, scale: nil)
        biased.dropout = Self.state
        try ReferenceBackwardTests.check(biased, samples: 20, "dropout, broadcast tensor bias")
    }

    @Test func backwardWithoutTheStateDiffers() throws {
        // Forgetting the state gives other gradients: the replay is not a no-op.
        let inputs = Inputs(query: try Tensor.randn([1, 4, 2, 4], dtype: .float64, seed: 70),
                            key: try Tensor.randn([1, 6, 2, 4], dtype: .float64, seed: 71),
                            value: try Tensor.randn([1, 6, 2, 4], dtype: .float64, seed: 72), p: 0.3)
        let forward = try ReferenceForward().forward(inputs, dropout: Self.state)
        let gradOutput = try Tensor.randn([1, 4, 2, 4], dtype: .float64, seed: 73)
        let replayed = try ReferenceBackward().backward(inputs, output: forward.output, lse: forward.lse,
                                                        gradOutput: gradOutput, dropout: Self.state)
        var plainInputs = inputs
        plainInputs.p = 0
        let plain = try ReferenceBackward().backward(plainInputs, output: forward.output, lse: forward.lse,
                                                     gradOutput: gradOutput, dropout: nil)
        #expect(try replayed.dv.toDoubleArray() != plain.dv.toDoubleArray())
        #expect(try replayed.dq.toDoubleArray() != plain.dq.toDoubleArray())
    }
}
