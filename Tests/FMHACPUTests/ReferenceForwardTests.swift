#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// `ReferenceForward` (the float64 oracle) against the naive attention of `NaiveAttention.swift`,
/// over every bias type, layout, stride pattern and dtype, plus the edge cases the design
/// guarantees: fully masked rows (output 0, LSE −inf, never NaN), NaN in hidden K/V rows, empty
/// tensors, and the partial mode's output dtype.
@Suite struct ReferenceForwardTests {
    /// One attention problem.
    struct Problem {
        var query: Tensor
        var key: Tensor
        var value: Tensor
        var bias: (any AttentionBias)?
        var scale: Double?
        var outputDType: DType?
        var isPartial = false
        var p = 0.0

        var inputs: Inputs {
            Inputs(query: query, key: key, value: value, bias: bias, p: p, scale: scale, outputDType: outputDType,
                   isPartial: isPartial)
        }
    }

    /// Runs the reference and the naive attention on `problem` and compares output and LSE, the
    /// shapes and dtypes, and the fully-masked-row contract. With `poisonHiddenRows`, K/V rows that
    /// no query sees are overwritten with NaN first.
    @discardableResult
    static func check(_ original: Problem, poisonHiddenRows: Bool = false, _ what: String,
                      sourceLocation: SourceLocation = #_sourceLocation) throws -> (ForwardOutput, NaiveAttention) {
        var problem = original
        let dense = try denseBias(problem.bias, query: problem.query, key: problem.key)
        if poisonHiddenRows {
            let rank = problem.query.rank
            let headCount = rank == 5 ? problem.query.shape[2] * problem.query.shape[3] : rank == 4 ? problem.query.shape[2] : 1
            let hidden = hiddenKeyRows(dense, batch: problem.query.shape[0], headCount: headCount,
                                       queryLength: problem.query.shape[1], keyLength: problem.key.shape[1])
            problem.key = try poisoned(problem.key, rows: hidden)
            problem.value = try poisoned(problem.value, rows: hidden)
        }
        let naive = try NaiveAttention(query: problem.query, key: problem.key, value: problem.value, bias: dense,
                                       scale: problem.scale)
        let result = try ReferenceForward().forward(problem.inputs, dropout: nil)
        let outputDType = (try problem.inputs.validate().outputDType)
        #expect(result.output.shape == NaiveAttention.outputShape(query: problem.query, value: problem.value),
                "\(what): output shape", sourceLocation: sourceLocation)
        #expect(result.output.dtype == outputDType, "\(what): output dtype", sourceLocation: sourceLocation)
        #expect(result.lse.shape == NaiveAttention.lseShape(query: problem.query), "\(what): LSE shape",
                sourceLocation: sourceLocation)
        #expect(result.lse.dtype == .float32, "\(what): LSE dtype", sourceLocation: sourceLocation)
        let output = try result.output.toDoubleArray(), lse = try result.lse.toDoubleArray()
        #expect(!output.contains { $0.isNaN } && !lse.contains { $0.isNaN }, "\(what): NaN in the result",
                sourceLocation: sourceLocation)
        let tolerance = forwardTolerance(outputDType)
        expectClose(output, naive.output, atol: tolerance.atol, rtol: tolerance.rtol, "\(what): output",
                    sourceLocation: sourceLocation)
        // LSE: float32 of a float64 value (§6.3's logsumexp tolerance is 2e-4 absolute).
        expectClose(lse, naive.lse, atol: 2e-4, rtol: 1e-5, "\(what): LSE", sourceLocation: sourceLocation)
        // The oracle is float64 from the same rounded inputs, so beyond §6.3 it must agree with the
        // naive result to the output dtype's rounding.
        let rounding = roundingTolerance(outputDType)
        expectClose(output, naive.output, atol: rounding.atol, rtol: rounding.rtol, "\(what): output (rounding level)",
                    sourceLocation: sourceLocation)
        expectClose(lse, naive.lse, atol: 1e-12, rtol: 0x1p-22, "\(what): LSE (rounding level)", sourceLocation: sourceLocation)
        // Rows that see no key: output exactly 0 and LSE −inf.
        let headCount = naive.groups * naive.heads
        for b in 0..<naive.batch {
            for head in 0..<headCount {
                for i in 0..<naive.queryLength where naive.lse[(b * headCount + head) * naive.queryLength + i] == -.infinity {
                    let base = ((b * naive.queryLength + i) * headCount + head) * naive.valueDimension
                    let row = output[base..<base + naive.valueDimension]
                    #expect(row.allSatisfy { $0 == 0 }, "\(what): fully masked row b\(b) head\(head) q\(i) is \(Array(row))",
                            sourceLocation: sourceLocation)
                }
            }
        }
        return (result, naive)
    }

    /// A BMHK problem with `batch` × `queries` queries and `keys` keys.
    static func bmhk(batch: Int, queries: Int, keys: Int, heads: Int = 2, headDimension: Int = 6,
                     valueDimension: Int = 5, bias: (any AttentionBias)?, dtype: DType = .float32,
                     seed: UInt64 = 1) throws -> Problem {
        Problem(query: try randn([batch, queries, heads, headDimension], seed, dtype),
                key: try randn([batch, keys, heads, headDimension], seed + 1, dtype),
                value: try randn([batch, keys, heads, valueDimension], seed + 2, dtype),
                bias: bias)
    }

    // MARK: - Every bias type

    /// A shuffled page table: `rows` sequences of `pagesPerRow` pages out of `0...rows·pagesPerRow`
    /// (one page number skipped, so one physical page is never named).
    static let shuffledPages = [[7, 0, 12], [3, 9, 1], [11, 4, 8], [2, 10, 6]]

    /// A valid instance of the bias type called `name` with awkward sizes (lengths 1, 7, 33, 127,
    /// empty sequences, kv lengths 0, shuffled pages) and the BMHK problem it fits.
    static func problem(forBiasNamed name: String) throws -> Problem {
        switch name {
        case "Tensor":
            let bias = try randn([2, 2, 7, 127], 90)
            return try bmhk(batch: 2, queries: 7, keys: 127, bias: bias)
        case "LowerTriangularMask":
            return try bmhk(batch: 2, queries: 33, keys: 7, bias: LowerTriangularMask())
        case "LowerTriangularMaskWithTensorBias":
            return try bmhk(batch: 2, queries: 7, keys: 33, bias: LowerTriangularMaskWithTensorBias(try randn([2, 2, 7, 33], 91)))
        case "LowerTriangularFromBottomRightMask":
            // Mq > Mkv: the first 26 queries see no key.
            return try bmhk(batch: 2, queries: 33, keys: 7, bias: LowerTriangularFromBottomRightMask())
        case "LowerTriangularFromBottomRightLocalAttentionMask":
            return try bmhk(batch: 2, queries: 7, keys: 33,
                            bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 5))
        case "LocalAttentionFromBottomRightMask":
            return try bmhk(batch: 1, queries: 33, keys: 7, bias: try LocalAttentionFromBottomRightMask(windowLeft: 3, windowRight: 2))
        case "BlockDiagonalMask":
            // A block of 7 queries with no keys, and an empty query block.
            let bias = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 7, 0, 33], kvSeqlen: [7, 0, 5, 33])
            return try bmhk(batch: 1, queries: 41, keys: 45, bias: bias)
        case "BlockDiagonalCausalMask":
            let bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [1, 7, 0, 33], kvSeqlen: [3, 1, 2, 33])
            return try bmhk(batch: 1, queries: 41, keys: 39, bias: bias)
        case "BlockDiagonalCausalFromBottomRightMask":
            let bias = try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [1, 7, 0, 12], kvSeqlen: [3, 7, 2, 127])
            return try bmhk(batch: 1, queries: 20, keys: 139, bias: bias)
        case "BlockDiagonalCausalLocalAttentionMask":
            let base = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 7, 0, 12], kvSeqlen: [3, 7, 2, 33])
            return try bmhk(batch: 1, queries: 20, keys: 45, bias: try base.makeLocalAttention(windowSize: 3))
        case "BlockDiagonalCausalLocalAttentionFromBottomRightMask":
            let base = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 7, 0, 12], kvSeqlen: [3, 7, 2, 33])
            return try bmhk(batch: 1, queries: 20, keys: 45, bias: try base.makeLocalAttentionFromBottomRight(windowSize: 4))
        case "BlockDiagonalPaddedKeysMask":
            let bias = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 7, 0, 5], kvPadding: 9, kvSeqlen: [3, 9, 2, 0])
            return try bmhk(batch: 1, queries: 13, keys: 36, bias: bias)
        case "BlockDiagonalCausalWithOffsetPaddedKeysMask":
            // Block 1 has fewer keys than queries (its first 3 queries see nothing); block 3 has none.
            let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [1, 7, 0, 5], kvPadding: 9,
                                                                                   kvSeqlen: [3, 4, 2, 0])
            return try bmhk(batch: 1, queries: 13, keys: 36, bias: bias)
        case "BlockDiagonalLocalAttentionPaddedKeysMask":
            let bias = try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1, 7, 0, 5], kvPadding: 9,
                                                                                 kvSeqlen: [3, 9, 2, 0], windowLeft: 2, windowRight: 1)
            return try bmhk(batch: 1, queries: 13, keys: 36, bias: bias)
        case "BlockDiagonalCausalLocalAttentionPaddedKeysMask":
            let bias = try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1, 7, 0, 5], kvPadding: 9,
                                                                                       kvSeqlen: [3, 9, 2, 0], windowSize: 3)
            return try bmhk(batch: 1, queries: 13, keys: 36, bias: bias)
        case "PagedBlockDiagonalPaddedKeysMask":
            let bias = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 7, 0, 5], kvPadding: 12, kvSeqlen: [3, 12, 2, 0])
                .makePaged(blockTables: shuffledPages, pageSize: 4)
            // 13 pages of 4 rows, plus one row past the last page.
            return try bmhk(batch: 1, queries: 13, keys: 53, bias: bias)
        case "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask":
            let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [1, 7, 0, 5], kvPadding: 12,
                                                                                   kvSeqlen: [3, 5, 2, 0])
                .makePaged(blockTables: shuffledPages, pageSize: 4)
            return try bmhk(batch: 1, queries: 13, keys: 53, bias: bias)
        case "PagedBlockDiagonalCausalLocalPaddedKeysMask":
            let bias = try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1, 7, 0, 5], kvPadding: 12,
                                                                                       kvSeqlen: [3, 12, 2, 0], windowSize: 3)
                .makePaged(blockTables: shuffledPages, pageSize: 4)
            return try bmhk(batch: 1, queries: 13, keys: 53, bias: bias)
        case "BlockDiagonalGappyKeysMask":
            // Overlapping key blocks and gaps.
            let bias = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [2, 7, 0, 3], kvSeqstarts: [10, 0, 4, 20, 33],
                                                                 kvSeqlen: [5, 7, 3, 0])
            return try bmhk(batch: 1, queries: 12, keys: 33, bias: bias)
        case "BlockDiagonalCausalWithOffsetGappyKeysMask":
            let bias = try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [2, 7, 0, 3], kvSeqstarts: [10, 0, 4, 20, 33],
                                                                                 kvSeqlen: [5, 4, 3, 0])
            return try bmhk(batch: 1, queries: 12, keys: 33, bias: bias)
        case "BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask":
            let bias = try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                qSeqlen: [2, 7, 0, 3], kvSeqstarts: [10, 0, 4, 20, 33], kvSeqlen: [5, 7, 3, 0], windowLeft: 1, windowRight: 2)
            return try bmhk(batch: 1, queries: 12, keys: 33, bias: bias)
        case "PagedBlockDiagonalGappyKeysMask":
            let bias = try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [2, 7, 0, 3], kvSeqstarts: [1, 0, 5, 12],
                                                                      kvSeqlen: [5, 11, 3, 0], blockTables: shuffledPages, pageSize: 4)
            return try bmhk(batch: 1, queries: 12, keys: 53, bias: bias)
        case "PagedBlockDiagonalCausalWithOffsetGappyKeysMask":
            let bias = try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: [2, 7, 0, 3], kvSeqstarts: [1, 0, 5, 12], kvSeqlen: [5, 4, 3, 0], blockTables: shuffledPages, pageSize: 4)
            return try bmhk(batch: 1, queries: 12, keys: 53, bias: bias)
        default:
            throw FMHAError(.unsupported, "no test case for bias type \(name): add one to ReferenceForwardTests")
        }
    }

    @Test(arguments: attentionBiasTypes.map { $0.name })
    func everyBiasTypeMatchesNaive(biasName: String) throws {
        let problem = try Self.problem(forBiasNamed: biasName)
        #expect(problem.bias.map { type(of: $0).name } == biasName)
        // Pure masks: NaN in every K/V row the mask hides must not reach the output.
        try Self.check(problem, poisonHiddenRows: !(problem.bias is Tensor), biasName)
    }

    /// Masks at the edges of their factories' ranges.
    static func edgeProblem(_ name: String) throws -> Problem {
        switch name {
        case "empty first and last query blocks":
            let bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [0, 3, 0], kvSeqlen: [2, 3, 4])
            return try bmhk(batch: 1, queries: 3, keys: 9, bias: bias)
        case "single query and key":
            return try bmhk(batch: 3, queries: 1, keys: 1, bias: LowerTriangularFromBottomRightMask())
        case "sequences sharing a page":
            let bias = try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: [2, 3], kvSeqlen: [6, 7], blockTables: [[0, 3], [0, 1]], pageSize: 4)
            return try bmhk(batch: 1, queries: 5, keys: 16, bias: bias)
        case "unbounded two-sided window":
            return try bmhk(batch: 2, queries: 7, keys: 5, bias: try LocalAttentionFromBottomRightMask(windowLeft: .max, windowRight: .max))
        case "unbounded causal window":
            return try bmhk(batch: 2, queries: 5, keys: 7, bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: .max))
        case "window of one key":
            let bias = try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [3, 2], kvPadding: 5,
                                                                                       kvSeqlen: [5, 1], windowSize: 1)
            return try bmhk(batch: 1, queries: 5, keys: 10, bias: bias)
        case "zero-width two-sided window":
            let bias = try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                qSeqlen: [4, 1], kvSeqstarts: [2, 0, 8], kvSeqlen: [6, 8], windowLeft: 0, windowRight: 0)
            return try bmhk(batch: 1, queries: 5, keys: 8, bias: bias)
        default:
            throw FMHAError(.unsupported, "no edge case \(name)")
        }
    }

    @Test(arguments: ["empty first and last query blocks", "single query and key", "sequences sharing a page",
                      "unbounded two-sided window", "unbounded causal window", "window of one key",
                      "zero-width two-sided window"])
    func maskEdgeCases(name: String) throws {
        try Self.check(try Self.edgeProblem(name), poisonHiddenRows: true, name)
    }

    @Test func unboundedWindowsEqualTheirUnwindowedMasks() throws {
        let windowed = try Self.edgeProblem("unbounded two-sided window")
        var plain = windowed
        plain.bias = nil
        let a = try ReferenceForward().forward(windowed.inputs, dropout: nil).output.toDoubleArray()
        #expect(try a == ReferenceForward().forward(plain.inputs, dropout: nil).output.toDoubleArray())
        let causalWindow = try Self.edgeProblem("unbounded causal window")
        var causal = causalWindow
        causal.bias = LowerTriangularFromBottomRightMask()
        #expect(try ReferenceForward().forward(causalWindow.inputs, dropout: nil).output.toDoubleArray()
                == ReferenceForward().forward(causal.inputs, dropout: nil).output.toDoubleArray())
    }

    @Test func hiddenRowsArePoisonedWhereExpected() throws {
        // The paged padded mask hides the rows of the unnamed page (5) and the trailing row; the
        // NaN check above is only meaningful if those rows really get NaN.
        let problem = try Self.problem(forBiasNamed: "PagedBlockDiagonalPaddedKeysMask")
        let dense = try denseBias(problem.bias, query: problem.query, key: problem.key)
        let hidden = hiddenKeyRows(dense, batch: 1, headCount: 2, queryLength: 13, keyLength: 53)
        for row in 20..<24 { #expect(hidden.contains([0, row])) }
        #expect(hidden.contains([0, 52]))
        // Sequence 0 uses keys 0..<3 of page 7: rows 28..<31 are visible, row 31 is not.
        #expect(!hidden.contains([0, 28]) && hidden.contains([0, 31]))
    }

    // MARK: - Fully masked rows

    @Test func kvSeqlenZeroGivesZeroOutputAndMinusInfinityLSE() throws {
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 3], kvPadding: 4, kvSeqlen: [4, 0])
        let problem = try Self.bmhk(batch: 1, queries: 5, keys: 8, bias: bias)
        let (result, _) = try Self.check(problem, poisonHiddenRows: true, "kvSeqlen 0")
        let output = try result.output.toDoubleArray(), lse = try result.lse.toDoubleArray()
        // Queries 2..<5 (sequence 1), both heads.
        for query in 2..<5 {
            for head in 0..<2 {
                #expect(lse[head * 5 + query] == -.infinity)
                let base = (query * 2 + head) * 5
                #expect(output[base..<base + 5].allSatisfy { $0 == 0 })
            }
        }
        #expect(lse[0].isFinite && lse[1].isFinite)
    }

    @Test(arguments: [DType.float32, .float16, .bfloat16, .float64])
    func tensorBiasRowOfMinusInfinity(dtype: DType) throws {
        var values = try randn([2, 2, 4, 6], 40).toDoubleArray()
        // Batch 1, head 0, query 2: every key −inf; batch 0, head 1, query 0: all but key 5.
        for j in 0..<6 { values[((1 * 2 + 0) * 4 + 2) * 6 + j] = -.infinity }
        for j in 0..<5 { values[((0 * 2 + 1) * 4 + 0) * 6 + j] = -.infinity }
        let bias = try Tensor(shape: [2, 2, 4, 6], scalars: values, dtype: dtype)
        let problem = try Self.bmhk(batch: 2, queries: 4, keys: 6, bias: bias, dtype: dtype)
        let (result, naive) = try Self.check(problem, "−inf tensor-bias row (\(dtype))")
        let lse = try result.lse.toDoubleArray()
        #expect(lse[(1 * 2 + 0) * 4 + 2] == -.infinity)
        #expect(naive.lse[(1 * 2 + 0) * 4 + 2] == -.infinity)
        // The row that sees one key copies that key's value row.
        let output = try result.output.toDoubleArray(), value = try problem.value.toDoubleArray()
        let tolerance = forwardTolerance(dtype)
        expectClose(Array(output[(0 * 2 + 1) * 5 ..< (0 * 2 + 1) * 5 + 5]),
                    Array(value[(5 * 2 + 1) * 5 ..< (5 * 2 + 1) * 5 + 5]),
                    atol: tolerance.atol, rtol: tolerance.rtol, "single visible key")
    }

    @Test func everyRowMaskedForEveryHead() throws {
        // Mq = 9 > Mkv = 0 keys per block of a gappy mask: nothing at all is visible.
        let bias = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [4, 5], kvSeqstarts: [0, 3, 6], kvSeqlen: [0, 0])
        let problem = try Self.bmhk(batch: 1, queries: 9, keys: 6, bias: bias)
        let (result, _) = try Self.check(problem, poisonHiddenRows: true, "nothing visible")
        #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
        #expect(try result.output.toDoubleArray().allSatisfy { $0 == 0 })
    }

    // MARK: - Layouts and strides

    @Test(arguments: ["none", "tensor", "causal"])
    func bmkLayout(biasKind: String) throws {
        let query = try randn([3, 7, 5], 11), key = try randn([3, 33, 5], 12), value = try randn([3, 33, 3], 13)
        let bias: (any AttentionBias)? = switch biasKind {
        case "tensor": try randn([3, 7, 33], 14)
        case "causal": LowerTriangularMask()
        default: nil
        }
        let (result, _) = try Self.check(Problem(query: query, key: key, value: value, bias: bias), "BMK \(biasKind)")
        #expect(result.lse.shape == [3, 1, 7])
        #expect(result.output.shape == [3, 7, 3])
    }

    @Test func bmghkWithStrideZeroKeysAndValues() throws {
        // Two groups of three query heads sharing one K/V head each.
        let query = try randn([2, 7, 2, 3, 4], 20)
        let key = try randn([2, 12, 2, 1, 4], 21).expanded(to: [2, 12, 2, 3, 4])
        let value = try randn([2, 12, 2, 1, 6], 22).expanded(to: [2, 12, 2, 3, 6])
        #expect(key.strides[3] == 0 && value.strides[3] == 0)
        let biases: [(any AttentionBias)?] = [nil, LowerTriangularFromBottomRightMask(),
                                              LowerTriangularMaskWithTensorBias(try randn([2, 2, 3, 7, 12], 23)),
                                              try randn([2, 2, 3, 7, 12], 24)]
        for bias in biases {
            let (result, _) = try Self.check(Problem(query: query, key: key, value: value, bias: bias, scale: 0.4),
                                             "BMGHK \(bias.map { type(of: $0).name } ?? "none")")
            #expect(result.lse.shape == [2, 2, 3, 7])
            #expect(result.output.shape == [2, 7, 2, 3, 6])
        }
    }

    @Test func bmghkVarlen() throws {
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [1, 4], kvPadding: 6, kvSeqlen: [5, 2])
        let query = try randn([1, 5, 2, 2, 3], 25)
        let key = try randn([1, 12, 2, 1, 3], 26).expanded(to: [1, 12, 2, 2, 3])
        let value = try randn([1, 12, 2, 1, 3], 27).expanded(to: [1, 12, 2, 2, 3])
        try Self.check(Problem(query: query, key: key, value: value, bias: bias), poisonHiddenRows: true, "BMGHK varlen")
    }

    @Test func bmhkStrideZeroOverHeadsAndBatch() throws {
        let query = try randn([3, 5, 4, 8], 30)
        let key = try randn([1, 9, 1, 8], 31).expanded(to: [3, 9, 4, 8])
        let value = try randn([1, 9, 1, 8], 32).expanded(to: [3, 9, 4, 8])
        try Self.check(Problem(query: query, key: key, value: value, bias: LowerTriangularMask()), "stride-0 K/V over B and H")
    }

    @Test func slicesOfAPackedQKVTensor() throws {
        // [B, M, H, 3·K] with q, k, v interleaved per head: each is a non-contiguous view.
        let packed = try randn([2, 9, 3, 3 * 8], 33)
        let query = try packed.slice(dimension: 3, range: 0..<8)
        let key = try packed.slice(dimension: 3, range: 8..<16)
        let value = try packed.slice(dimension: 3, range: 16..<24)
        #expect(!query.isContiguous && key.offset == 8 && value.strides == [9 * 72, 72, 24, 1])
        try Self.check(Problem(query: query, key: key, value: value, bias: LowerTriangularMask()), "packed QKV")
        // The same through [B, M, 3, H, K] views, selecting along the "3" dimension.
        let stacked = try randn([2, 9, 3, 3, 8], 34)
        func pick(_ index: Int) throws -> Tensor {
            let view = try stacked.slice(dimension: 2, range: index..<index + 1)
            return try Tensor(storage: view.storage, shape: [2, 9, 3, 8], strides: [view.strides[0], view.strides[1], 8, 1],
                              offset: view.offset, dtype: .float32)
        }
        try Self.check(Problem(query: try pick(0), key: try pick(1), value: try pick(2), bias: nil, scale: 0.2), "stacked QKV")
    }

    @Test func transposedAndSlicedViews() throws {
        // Query [B, H, M, K] transposed to [B, M, H, K]; keys a slice along M of a longer tensor;
        // a transposed tensor bias.
        let query = try randn([2, 3, 7, 5], 35).transposed(1, 2)
        let key = try randn([2, 40, 3, 5], 36).slice(dimension: 1, range: 3..<36)
        let value = try randn([2, 3, 33, 4], 37).transposed(1, 2)
        let bias = try randn([2, 3, 33, 7], 38).transposed(2, 3)
        #expect(!query.isContiguous && !value.isContiguous && !bias.isContiguous && key.offset > 0)
        try Self.check(Problem(query: query, key: key, value: value, bias: bias), "transposed views")
    }

    @Test func customScaleAndDifferentValueHeadDimension() throws {
        for (scale, valueDimension) in [(0.0, 5), (2.5, 1), (-0.7, 11), (1e-3, 8)] as [(Double, Int)] {
            var problem = try Self.bmhk(batch: 2, queries: 7, keys: 9, headDimension: 8, valueDimension: valueDimension,
                                        bias: LowerTriangularFromBottomRightMask())
            problem.scale = scale
            try Self.check(problem, "scale \(scale), Kv \(valueDimension)")
        }
        // scale 0: every visible key has the same weight, so the output is the mean of the value rows.
        var uniform = try Self.bmhk(batch: 1, queries: 1, keys: 4, heads: 1, bias: nil)
        uniform.scale = 0
        let output = try ReferenceForward().forward(uniform.inputs, dropout: nil).output.toDoubleArray()
        let value = try uniform.value.toDoubleArray()
        for channel in 0..<5 {
            let mean = (0..<4).reduce(0.0) { $0 + value[$1 * 5 + channel] } / 4
            #expect(abs(output[channel] - mean) < 1e-6)
        }
    }

    // MARK: - Dtypes

    @Test(arguments: DType.floatingPointCases)
    func dtypesMatchNaiveOnRoundedInputs(dtype: DType) throws {
        let bias = LowerTriangularMaskWithTensorBias(try randn([2, 2, 7, 33], 50, dtype))
        var problem = try Self.bmhk(batch: 2, queries: 7, keys: 33, headDimension: 8, valueDimension: 8, bias: bias,
                                    dtype: dtype, seed: 51)
        problem.scale = 0.3
        try Self.check(problem, "\(dtype) with tensor bias")
        let varlen = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [3, 4], kvPadding: 16, kvSeqlen: [16, 0])
        try Self.check(try Self.bmhk(batch: 1, queries: 7, keys: 32, bias: varlen, dtype: dtype, seed: 52),
                       poisonHiddenRows: true, "\(dtype) varlen")
    }

    @Test func float64IsExactToRounding() throws {
        // The oracle is float64 throughout: it agrees with the naive sum to a few ulps.
        let problem = try Self.bmhk(batch: 1, queries: 5, keys: 17, bias: LowerTriangularMask(), dtype: .float64)
        let (result, naive) = try Self.check(problem, "float64")
        expectClose(try result.output.toDoubleArray(), naive.output, atol: 1e-14, rtol: 1e-13, "float64 output")
    }

    @Test(arguments: [(DType.float16, DType.float32), (.bfloat16, .float64), (.float32, .float16)])
    func explicitOutputDType(input: DType, output: DType) throws {
        var problem = try Self.bmhk(batch: 1, queries: 4, keys: 6, bias: nil, dtype: input)
        problem.outputDType = output
        let (result, _) = try Self.check(problem, "\(input) → \(output)")
        #expect(result.output.dtype == output)
    }

    // MARK: - Long sequences

    @Test func longCausal() throws {
        let query = try randn([1, 1000, 8], 60), key = try randn([1, 1031, 8], 61), value = try randn([1, 1031, 8], 62)
        try Self.check(Problem(query: query, key: key, value: value, bias: LowerTriangularMask()), "long causal BMK")
        // The bottom-right version needs BMHK with one head.
        let reshaped = Problem(query: try query.reshaped([1, 1000, 1, 8]), key: try key.reshaped([1, 1031, 1, 8]),
                               value: try value.reshaped([1, 1031, 1, 8]), bias: LowerTriangularFromBottomRightMask())
        try Self.check(reshaped, poisonHiddenRows: true, "long bottom-right causal")
    }

    @Test func longVarlen() throws {
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [3, 1, 1024], kvPadding: 1030,
                                                                               kvSeqlen: [1030, 0, 1029])
        let problem = try Self.bmhk(batch: 1, queries: 1028, keys: 3090, heads: 1, headDimension: 8, valueDimension: 8,
                                    bias: bias, seed: 63)
        try Self.check(problem, poisonHiddenRows: true, "long varlen")
    }

    // MARK: - Empty tensors

    @Test(arguments: [(0, 5, 7), (2, 0, 7), (2, 5, 0), (0, 0, 0)])
    func emptyTensors(batch: Int, queries: Int, keys: Int) throws {
        for layout in [3, 4, 5] {
            let headShape = layout == 3 ? [] : layout == 4 ? [2] : [2, 3]
            let problem = Problem(query: try randn([batch, queries] + headShape + [4], 70),
                                  key: try randn([batch, keys] + headShape + [4], 71),
                                  value: try randn([batch, keys] + headShape + [3], 72),
                                  bias: layout == 3 ? nil : LowerTriangularFromBottomRightMask())
            let (result, _) = try Self.check(problem, "empty B\(batch) Mq\(queries) Mkv\(keys) rank \(layout)")
            #expect(result.output.shape == [batch, queries] + headShape + [3])
            #expect(try result.output.toDoubleArray().allSatisfy { $0 == 0 })
            if keys == 0 { #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity }) }
        }
    }

    @Test func emptyKeysWithATensorBias() throws {
        let problem = try Self.bmhk(batch: 2, queries: 3, keys: 0, bias: try randn([2, 2, 3, 0], 73))
        let (result, _) = try Self.check(problem, "Mkv 0 with tensor bias")
        #expect(result.lse.shape == [2, 2, 3])
        #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
    }

    // MARK: - Partial mode

    @Test(arguments: [(DType.float16, DType.float32), (.bfloat16, .float32), (.float32, .float32), (.float64, .float64)])
    func partialDefaultOutputDType(input: DType, expected: DType) throws {
        var problem = try Self.bmhk(batch: 1, queries: 4, keys: 6, bias: LowerTriangularMask(), dtype: input)
        problem.isPartial = true
        #expect((try problem.inputs.validate().outputDType) == expected)
        let (result, _) = try Self.check(problem, "partial \(input)")
        #expect(result.output.dtype == expected)
        // An explicit output dtype still wins.
        problem.outputDType = .float16
        let explicit = try ReferenceForward().forward(problem.inputs, dropout: nil)
        #expect(explicit.output.dtype == .float16)
    }

    @Test func partialWithNoKeys() throws {
        var problem = try Self.bmhk(batch: 2, queries: 3, keys: 0, bias: nil, dtype: .float16)
        problem.isPartial = true
        let (result, _) = try Self.check(problem, "partial Mkv 0")
        #expect(result.output.dtype == .float32)
        #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
        #expect(try result.output.toDoubleArray().allSatisfy { $0 == 0 })
    }

    // MARK: - The test's own machinery

    @Test func naiveAttentionOnAHandComputedCase() throws {
        // One query, two keys, scale 1: scores 1 and 2 (+ bias 0 and log 2), weights 1/5 and 4/5.
        let query = try Tensor(shape: [1, 1, 1], scalars: [1.0], dtype: .float64)
        let key = try Tensor(shape: [1, 2, 1], scalars: [1.0, 2.0], dtype: .float64)
        let value = try Tensor(shape: [1, 2, 1], scalars: [10.0, 20.0], dtype: .float64)
        let bias = try Tensor(shape: [1, 1, 2], scalars: [0.0, log(2.0)], dtype: .float64)
        let naive = try NaiveAttention(query: query, key: key, value: value, bias: try bias.toDoubleArray(), scale: 1)
        let expectedWeight = 1 / (1 + 2 * exp(1.0))
        #expect(abs(naive.output[0] - (10 * expectedWeight + 20 * (1 - expectedWeight))) < 1e-12)
        #expect(abs(naive.lse[0] - log(exp(1.0) + 2 * exp(2.0))) < 1e-12)
        try Self.check(Problem(query: query, key: key, value: value, bias: bias, scale: 1), "hand case")
    }
}
