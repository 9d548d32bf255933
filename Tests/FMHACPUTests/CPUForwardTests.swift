import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// The tiled CPU forward (`CPUForward`, both the baseline and the AVX2 C kernels) against the
/// float64 oracle `ReferenceForward` called on the same inputs: every bias type at sizes that cut
/// across the 32-query × 64-key tiles, every head dimension class, the three layouts with stride-0
/// K/V, non-contiguous views, the three input and output dtypes, dropout, partial mode, and the
/// design's edge cases (fully masked rows, empty tensors, NaN in hidden K/V rows). The bias types
/// are here; the other sections extend the suite in CPUForwardShapeTests, CPUForwardEdgeCaseTests,
/// CPUForwardModeTests and CPUForwardDispatchTests.
@Suite struct CPUForwardTests {
    /// The kernel builds this CPU runs (`.avx512` and `.avx2` only where the CPU has them).
    static let kernels = CPUKernels.available

    /// The dtypes the tiled operator takes.
    static let dtypes: [DType] = [.float32, .float16, .bfloat16]

    /// One attention call (the reference tests' problem).
    typealias Case = ReferenceForwardTests.Problem

    /// A BMHK case with `batch` × `queries` queries and `keys` keys.
    static func bmhk(batch: Int = 1, queries: Int, keys: Int, heads: Int = 2, headDimension: Int = 8,
                     valueDimension: Int = 7, bias: (any AttentionBias)?, dtype: DType = .float32,
                     seed: UInt64 = 1) throws -> Case {
        Case(query: try randn([batch, queries, heads, headDimension], seed, dtype),
             key: try randn([batch, keys, heads, headDimension], seed + 1, dtype),
             value: try randn([batch, keys, heads, valueDimension], seed + 2, dtype),
             bias: bias)
    }

    /// The largest error as a multiple of `tolerance`, and where.
    static func worst(_ values: [Double], _ references: [Double], _ tolerance: Tolerance) -> (ratio: Double, index: Int) {
        var result = (ratio: 0.0, index: -1)
        for index in values.indices {
            let ratio = tolerance.worstRatio([values[index]], [references[index]])
            if ratio > result.ratio { result = (ratio, index) }
        }
        return result
    }

    /// Runs `CPUForward` with each of `kernels` and `ReferenceForward` on the same inputs, and
    /// checks shapes, dtypes, the output within `Tolerance.forward(outputDType)`, the LSE within
    /// 2e-4, no NaN or infinity in the output, and rows without keys (output exactly 0, LSE −inf).
    /// With `poisonHiddenRows`, NaN is first written into every K/V row that no query sees.
    @discardableResult
    static func compare(_ original: Case, kernels: [CPUKernels] = kernels, dropout: DropoutState? = nil,
                        poisonHiddenRows: Bool = false, _ what: String,
                        sourceLocation: SourceLocation = #_sourceLocation) throws -> (reference: ForwardOutput, results: [ForwardOutput]) {
        var testCase = original
        let dimensions = try testCase.inputs.validate().dimensions
        if poisonHiddenRows {
            let dense = try denseBias(testCase.bias, query: testCase.query, key: testCase.key)
            let hidden = hiddenKeyRows(dense, batch: dimensions.batch, headCount: dimensions.groups * dimensions.heads,
                                       queryLength: dimensions.queryLength, keyLength: dimensions.keyLength)
            testCase.key = try poisoned(testCase.key, rows: hidden)
            testCase.value = try poisoned(testCase.value, rows: hidden)
        }
        let inputs = testCase.inputs
        let reference = try ReferenceForward().forward(inputs, dropout: dropout)
        let expectedOutput = try reference.output.toDoubleArray(), expectedLSE = try reference.lse.toDoubleArray()
        let outputDType = (try inputs.validate().outputDType)
        let tolerance = Tolerance.forward(outputDType), lseTolerance = Tolerance(absolute: 2e-4, relative: 1e-5)
        let headCount = dimensions.groups * dimensions.heads
        let queryLength = dimensions.queryLength, valueDimension = dimensions.valueHeadDimension
        var results = [ForwardOutput]()
        for kernel in kernels {
            let op = CPUForward(kernels: kernel)
            let label = "\(what) [\(op.name), \(inputs.query.dtype) → \(outputDType)]"
            let reasons = try op.notSupportedReasons(inputs)
            #expect(reasons.isEmpty, "\(label): refused: \(reasons)", sourceLocation: sourceLocation)
            guard reasons.isEmpty else { continue }
            let result = try op.forward(inputs, dropout: dropout)
            results.append(result)
            #expect(result.output.shape == dimensions.outputShape && result.output.dtype == outputDType,
                    "\(label): output \(result.output.shape) \(result.output.dtype)", sourceLocation: sourceLocation)
            #expect(result.lse.shape == dimensions.lseShape && result.lse.dtype == .float32,
                    "\(label): LSE \(result.lse.shape) \(result.lse.dtype)", sourceLocation: sourceLocation)
            guard result.output.shape == dimensions.outputShape, result.lse.shape == dimensions.lseShape else { continue }
            let output = try result.output.toDoubleArray(), lse = try result.lse.toDoubleArray()
            if let bad = output.firstIndex(where: { !$0.isFinite }) {
                Issue.record("\(label): output[\(bad)] = \(output[bad]) (reference \(expectedOutput[bad]))",
                             sourceLocation: sourceLocation)
            }
            if let bad = lse.firstIndex(where: { $0.isNaN || $0 == .infinity }) {
                Issue.record("\(label): LSE[\(bad)] = \(lse[bad])", sourceLocation: sourceLocation)
            }
            let outputError = worst(output, expectedOutput, tolerance)
            #expect(outputError.ratio <= 1,
                    "\(label): output error \(outputError.ratio)× tolerance at \(outputError.index): \(outputError.index >= 0 ? output[outputError.index] : 0) vs \(outputError.index >= 0 ? expectedOutput[outputError.index] : 0)",
                    sourceLocation: sourceLocation)
            let lseError = worst(lse, expectedLSE, lseTolerance)
            #expect(lseError.ratio <= 1,
                    "\(label): LSE error \(lseError.ratio)× tolerance at \(lseError.index): \(lseError.index >= 0 ? lse[lseError.index] : 0) vs \(lseError.index >= 0 ? expectedLSE[lseError.index] : 0)",
                    sourceLocation: sourceLocation)
            // Rows that see no key: output exactly 0, LSE −inf.
            var maskedRows = 0, badRows = [String]()
            for b in 0..<dimensions.batch {
                for head in 0..<headCount {
                    for i in 0..<queryLength where expectedLSE[(b * headCount + head) * queryLength + i] == -.infinity {
                        maskedRows += 1
                        let base = ((b * queryLength + i) * headCount + head) * valueDimension
                        if lse[(b * headCount + head) * queryLength + i] != -.infinity
                            || !output[base..<base + valueDimension].allSatisfy({ $0 == 0 }) {
                            badRows.append("b\(b) h\(head) q\(i)")
                        }
                    }
                }
            }
            #expect(badRows.isEmpty, "\(label): \(badRows.count) of \(maskedRows) rows without keys are not (0, −inf): \(badRows.prefix(5))",
                    sourceLocation: sourceLocation)
        }
        return (reference, results)
    }

    /// K/V rows of `testCase` that no query sees (what `poisonHiddenRows` overwrites).
    static func hiddenRows(_ testCase: Case) throws -> Set<[Int]> {
        let d = try testCase.inputs.validate().dimensions
        return hiddenKeyRows(try denseBias(testCase.bias, query: testCase.query, key: testCase.key), batch: d.batch,
                             headCount: d.groups * d.heads, queryLength: d.queryLength, keyLength: d.keyLength)
    }

    // MARK: - Every bias type

    /// Query lengths of the variable-length cases: empty sequences first, in the middle and last;
    /// 1, 7, 33 (≡ 1 mod 32) and 65 (≡ 1 mod 32 and mod 64) queries.
    static let varlenQueries = [0, 33, 1, 0, 65, 7, 0]

    /// `rows` page-table rows of `perRow` pages each, shuffled, out of pages `0 ..< rows·perRow + 2`
    /// with two pages never named (their K/V rows are hidden from every query).
    static func shuffledPages(rows: Int, perRow: Int, seed: UInt64) -> (tables: [[Int]], pages: Int) {
        var pages = Array(0..<(rows * perRow + 2)), generator = SampleGenerator(state: seed)
        for index in pages.indices.reversed() where index > 0 { pages.swapAt(index, generator.next(index + 1)) }
        return (stride(from: 0, to: rows * perRow, by: perRow).map { Array(pages[$0..<$0 + perRow]) }, rows * perRow + 2)
    }

    /// A case of the bias type called `name` at awkward sizes, in `dtype`.
    static func biasCase(_ name: String, dtype: DType) throws -> Case {
        let q = varlenQueries, totalQueries = varlenQueries.reduce(0, +)
        func varlen(keys: Int, _ bias: any AttentionBias) throws -> Case {
            try bmhk(queries: totalQueries, keys: keys, bias: bias, dtype: dtype, seed: 11)
        }
        switch name {
        case "Tensor":
            return try bmhk(batch: 2, queries: 33, keys: 127, bias: try randn([2, 2, 33, 127], 90, dtype), dtype: dtype)
        case "LowerTriangularMask":
            // Top-left causal with Mkv > Mq: keys 65..<129 are hidden from every query.
            return try bmhk(batch: 2, queries: 65, keys: 129, bias: LowerTriangularMask(), dtype: dtype)
        case "LowerTriangularMaskWithTensorBias":
            let bias = LowerTriangularMaskWithTensorBias(try randn([2, 2, 33, 65], 91, dtype))
            return try bmhk(batch: 2, queries: 33, keys: 65, bias: bias, dtype: dtype)
        case "LowerTriangularFromBottomRightMask":
            // q longer than kv: the first 94 queries see nothing.
            return try bmhk(batch: 2, queries: 127, keys: 33, bias: LowerTriangularFromBottomRightMask(), dtype: dtype)
        case "LowerTriangularFromBottomRightLocalAttentionMask":
            return try bmhk(queries: 33, keys: 193, bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 40),
                            dtype: dtype)
        case "LocalAttentionFromBottomRightMask":
            // Shift −96: queries 0...93 see nothing; the others see up to all 33 keys.
            return try bmhk(queries: 129, keys: 33, bias: try LocalAttentionFromBottomRightMask(windowLeft: 40, windowRight: 2),
                            dtype: dtype)
        case "BlockDiagonalMask":
            // A one-query block without keys; key blocks of queryless blocks are hidden.
            return try varlen(keys: 209, try BlockDiagonalMask.fromSeqlens(qSeqlen: q, kvSeqlen: [5, 64, 0, 1, 129, 7, 3]))
        case "BlockDiagonalCausalMask":
            return try varlen(keys: 109, try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: q, kvSeqlen: [2, 65, 3, 1, 33, 1, 4]))
        case "BlockDiagonalCausalFromBottomRightMask":
            return try varlen(keys: 241, try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(
                qSeqlen: q, kvSeqlen: [2, 65, 7, 1, 129, 33, 4]))
        case "BlockDiagonalCausalLocalAttentionMask":
            let base = try BlockDiagonalMask.fromSeqlens(qSeqlen: q, kvSeqlen: [2, 65, 3, 1, 33, 1, 4])
            return try varlen(keys: 109, try base.makeLocalAttention(windowSize: 40))
        case "BlockDiagonalCausalLocalAttentionFromBottomRightMask":
            let base = try BlockDiagonalMask.fromSeqlens(qSeqlen: q, kvSeqlen: [2, 65, 7, 1, 129, 33, 4])
            return try varlen(keys: 241, try base.makeLocalAttentionFromBottomRight(windowSize: 40))
        case "BlockDiagonalPaddedKeysMask":
            return try varlen(keys: 7 * 129, try BlockDiagonalPaddedKeysMask.fromSeqlens(
                qSeqlen: q, kvPadding: 129, kvSeqlen: [5, 129, 0, 64, 65, 7, 3]))
        case "BlockDiagonalCausalWithOffsetPaddedKeysMask":
            // Block 4 has 33 keys for 65 queries and block 5 two keys for seven queries (bottom-right:
            // their first queries see nothing); block 2 has none.
            return try varlen(keys: 7 * 65, try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: q, kvPadding: 65, kvSeqlen: [3, 65, 0, 5, 33, 2, 1]))
        case "BlockDiagonalLocalAttentionPaddedKeysMask":
            return try varlen(keys: 7 * 129, try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(
                qSeqlen: q, kvPadding: 129, kvSeqlen: [5, 129, 0, 64, 65, 7, 3], windowLeft: 33, windowRight: 1))
        case "BlockDiagonalCausalLocalAttentionPaddedKeysMask":
            return try varlen(keys: 7 * 129, try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(
                qSeqlen: q, kvPadding: 129, kvSeqlen: [5, 129, 0, 64, 65, 2, 3], windowSize: 40))
        case "PagedBlockDiagonalPaddedKeysMask":
            // Pages of 16 keys (four per key tile), 9 per sequence; 3 K/V rows past the last page.
            let pages = shuffledPages(rows: 7, perRow: 9, seed: 5)
            return try varlen(keys: pages.pages * 16 + 3, try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqlen: [5, 129, 0, 144, 65, 7, 3], blockTables: pages.tables, pageSize: 16))
        case "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask":
            // Pages of 5 keys: pages straddle the 64-key tiles.
            let pages = shuffledPages(rows: 7, perRow: 27, seed: 6)
            return try varlen(keys: pages.pages * 5 + 1, try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqlen: [3, 129, 0, 5, 33, 2, 1], blockTables: pages.tables, pageSize: 5))
        case "PagedBlockDiagonalCausalLocalPaddedKeysMask":
            let pages = shuffledPages(rows: 7, perRow: 3, seed: 7)
            return try varlen(keys: pages.pages * 64, try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqlen: [5, 129, 0, 64, 65, 7, 3], blockTables: pages.tables, pageSize: 64, windowSize: 40))
        case "BlockDiagonalGappyKeysMask":
            // Overlapping key blocks, gaps, and keys after the last block.
            return try varlen(keys: 300, try BlockDiagonalGappyKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqstarts: [250, 10, 0, 40, 100, 97, 240, 300], kvSeqlen: [3, 129, 0, 2, 65, 7, 1]))
        case "BlockDiagonalCausalWithOffsetGappyKeysMask":
            return try varlen(keys: 300, try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqstarts: [250, 10, 0, 40, 100, 97, 240, 300], kvSeqlen: [3, 129, 0, 2, 33, 2, 1]))
        case "BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask":
            return try varlen(keys: 300, try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqstarts: [250, 10, 0, 40, 100, 97, 240, 300], kvSeqlen: [3, 129, 0, 2, 65, 7, 1],
                windowLeft: 33, windowRight: 2))
        case "PagedBlockDiagonalGappyKeysMask":
            let pages = shuffledPages(rows: 7, perRow: 10, seed: 8)
            return try varlen(keys: pages.pages * 16, try PagedBlockDiagonalGappyKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqstarts: [0, 17, 160, 3, 90, 31, 159], kvSeqlen: [3, 129, 0, 2, 65, 7, 1],
                blockTables: pages.tables, pageSize: 16))
        case "PagedBlockDiagonalCausalWithOffsetGappyKeysMask":
            let pages = shuffledPages(rows: 7, perRow: 10, seed: 9)
            return try varlen(keys: pages.pages * 16, try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqstarts: [0, 17, 160, 3, 90, 31, 159], kvSeqlen: [3, 129, 0, 2, 33, 2, 1],
                blockTables: pages.tables, pageSize: 16))
        default:
            throw FMHAError(.unsupported, "no CPUForward test case for bias type \(name): add one to CPUForwardTests")
        }
    }

    @Test(arguments: attentionBiasTypes.map { $0.name })
    func everyBiasTypeMatchesTheReference(biasName: String) throws {
        for dtype in Self.dtypes {
            let testCase = try Self.biasCase(biasName, dtype: dtype)
            #expect(testCase.bias.map { type(of: $0).name } == biasName)
            // Pure masks: NaN in every K/V row the mask hides must not reach the output.
            try Self.compare(testCase, poisonHiddenRows: !(testCase.bias is Tensor), "\(biasName) \(dtype)")
        }
    }

    @Test func theBiasCasesHideRowsAndMaskWholeRows() throws {
        // The NaN and fully-masked checks above only bite if the cases have such rows.
        for name in ["LowerTriangularMask", "BlockDiagonalMask", "BlockDiagonalPaddedKeysMask",
                     "PagedBlockDiagonalPaddedKeysMask", "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask",
                     "BlockDiagonalGappyKeysMask", "PagedBlockDiagonalGappyKeysMask"] {
            #expect(try !Self.hiddenRows(Self.biasCase(name, dtype: .float32)).isEmpty, "\(name)")
        }
        // Unused pages and the rows past the last page are hidden.
        let paged = try Self.biasCase("PagedBlockDiagonalPaddedKeysMask", dtype: .float32)
        let hidden = try Self.hiddenRows(paged)
        let named = Set(Self.shuffledPages(rows: 7, perRow: 9, seed: 5).tables.joined())
        for page in 0..<65 where !named.contains(page) {
            #expect((page * 16..<page * 16 + 16).allSatisfy { hidden.contains([0, $0]) }, "page \(page)")
        }
        #expect(hidden.contains([0, 65 * 16 + 2]))
        for name in ["LowerTriangularFromBottomRightMask", "LocalAttentionFromBottomRightMask", "BlockDiagonalMask",
                     "BlockDiagonalCausalWithOffsetPaddedKeysMask", "BlockDiagonalGappyKeysMask"] {
            let lse = try ReferenceForward().forward(Self.biasCase(name, dtype: .float32).inputs, dropout: nil).lse
            #expect(try lse.toDoubleArray().contains(-.infinity), "\(name)")
        }
    }
}
