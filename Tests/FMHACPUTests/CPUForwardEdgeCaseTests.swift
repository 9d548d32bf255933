import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// `CPUForwardTests` at the design's edge cases: rows without keys, empty tensors, and NaN in K/V
/// rows that no query sees.
extension CPUForwardTests {
    // MARK: - Rows without keys, empty tensors, NaN in hidden rows

    @Test func tensorBiasRowsOfMinusInfinity() throws {
        for dtype in Self.dtypes {
            var values = try randn([2, 2, 40, 70], 45).toDoubleArray()
            // Batch 1, head 0, query 2: every key −inf; batch 0, head 1, query 33: all but key 69;
            // batch 0, head 0, query 5: every key of the first key tile.
            for j in 0..<70 { values[((1 * 2 + 0) * 40 + 2) * 70 + j] = -.infinity }
            for j in 0..<69 { values[((0 * 2 + 1) * 40 + 33) * 70 + j] = -.infinity }
            for j in 0..<64 { values[((0 * 2 + 0) * 40 + 5) * 70 + j] = -.infinity }
            let bias = try Tensor(shape: [2, 2, 40, 70], scalars: values, dtype: dtype)
            let testCase = try Self.bmhk(batch: 2, queries: 40, keys: 70, bias: bias, dtype: dtype, seed: 46)
            let (reference, results) = try Self.compare(testCase, "−inf tensor-bias rows \(dtype)")
            #expect(try reference.lse.toDoubleArray()[(1 * 2 + 0) * 40 + 2] == -.infinity)
            // The row that sees one key copies that key's value row.
            let value = try testCase.value.toDoubleArray()
            for result in results {
                let output = try result.output.toDoubleArray()
                let row = Array(output[(33 * 2 + 1) * 7 ..< (33 * 2 + 1) * 7 + 7])
                let expected = Array(value[(69 * 2 + 1) * 7 ..< (69 * 2 + 1) * 7 + 7])
                #expect(Tolerance.forward(dtype).worstRatio(row, expected) <= 1, "single visible key \(dtype)")
            }
        }
    }

    @Test func everyRowMaskedInEveryTile() throws {
        // Gappy blocks with no keys at all, and a bottom-right mask with more queries than keys + window.
        let bias = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [33, 0, 65], kvSeqstarts: [0, 3, 6, 70], kvSeqlen: [0, 3, 0])
        let (reference, results) = try Self.compare(try Self.bmhk(queries: 98, keys: 70, bias: bias), poisonHiddenRows: true,
                                                    "nothing visible")
        #expect(try reference.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
        for result in results {
            #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
            #expect(try result.output.toDoubleArray().allSatisfy { $0 == 0 })
        }
    }

    @Test(arguments: [(0, 33, 65), (2, 0, 65), (2, 33, 0), (0, 0, 0)])
    func emptyTensors(batch: Int, queries: Int, keys: Int) throws {
        for layout in [3, 4, 5] {
            let heads = layout == 3 ? [] : layout == 4 ? [2] : [2, 3]
            for dtype in Self.dtypes {
                let testCase = Case(query: try randn([batch, queries] + heads + [8], 70, dtype),
                                    key: try randn([batch, keys] + heads + [8], 71, dtype),
                                    value: try randn([batch, keys] + heads + [5], 72, dtype),
                                    bias: layout == 3 ? nil : LowerTriangularFromBottomRightMask())
                let (_, results) = try Self.compare(testCase, "empty B\(batch) Mq\(queries) Mkv\(keys) rank \(layout)")
                for result in results {
                    #expect(result.output.shape == [batch, queries] + heads + [5])
                    #expect(try result.output.toDoubleArray().allSatisfy { $0 == 0 })
                    #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
                }
            }
        }
    }

    @Test func emptyHeadsAndValueHeadDimension() throws {
        for dtype in Self.dtypes {
            // Kv = 0: an empty output, but every LSE value is still defined.
            let noValues = try Self.bmhk(batch: 2, queries: 33, keys: 65, heads: 2, valueDimension: 0,
                                         bias: LowerTriangularFromBottomRightMask(), dtype: dtype, seed: 74)
            let (reference, results) = try Self.compare(noValues, "Kv = 0 \(dtype)")
            #expect(reference.lse.shape == [2, 2, 33])
            for result in results { #expect(result.output.shape == [2, 33, 2, 0]) }
            // H = 0 and G = 0.
            try Self.compare(try Self.bmhk(batch: 2, queries: 33, keys: 65, heads: 0, bias: nil, dtype: dtype), "H = 0 \(dtype)")
            try Self.compare(Case(query: try randn([1, 33, 0, 2, 8], 75, dtype), key: try randn([1, 65, 0, 2, 8], 76, dtype),
                                  value: try randn([1, 65, 0, 2, 8], 77, dtype), bias: LowerTriangularMask()),
                             "G = 0 \(dtype)")
        }
    }

    @Test func emptyKeysWithATensorBias() throws {
        let testCase = try Self.bmhk(batch: 2, queries: 3, keys: 0, bias: try randn([2, 2, 3, 0], 73))
        let (_, results) = try Self.compare(testCase, "Mkv 0 with tensor bias")
        for result in results { #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity }) }
    }

    @Test func nanInKeysAndValuesOutsideEveryWindow() throws {
        // Bottom-right windows and padded / paged masks whose hidden rows fall inside the K/V span the
        // tiles walk: pages between used pages, padding between used keys, keys between gappy blocks.
        let pages = Self.shuffledPages(rows: 3, perRow: 8, seed: 12)
        let cases: [(String, Case)] = [
            ("window", try Self.bmhk(batch: 2, queries: 100, keys: 300,
                                     bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 3))),
            ("two-sided window", try Self.bmhk(queries: 65, keys: 200,
                                               bias: try LocalAttentionFromBottomRightMask(windowLeft: 0, windowRight: 0))),
            ("padded", try Self.bmhk(queries: 70, keys: 3 * 128, bias: try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: [1, 65, 4], kvPadding: 128, kvSeqlen: [1, 100, 64]))),
            ("paged", try Self.bmhk(queries: 70, keys: pages.pages * 8, bias: try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(
                qSeqlen: [1, 65, 4], kvSeqlen: [1, 63, 64], blockTables: pages.tables, pageSize: 8, windowSize: 9))),
            ("gappy", try Self.bmhk(queries: 70, keys: 400, bias: try BlockDiagonalGappyKeysMask.fromSeqlens(
                qSeqlen: [1, 65, 4], kvSeqstarts: [300, 0, 150, 400], kvSeqlen: [1, 63, 64]))),
        ]
        for (name, testCase) in cases {
            for dtype in Self.dtypes {
                var typed = testCase
                typed.query = try testCase.query.converted(to: dtype)
                typed.key = try testCase.key.converted(to: dtype)
                typed.value = try testCase.value.converted(to: dtype)
                #expect(try !Self.hiddenRows(typed).isEmpty, "\(name)")
                try Self.compare(typed, poisonHiddenRows: true, "NaN outside every window: \(name) \(dtype)")
            }
        }
    }

    /// A tensor bias of −inf hides keys for the oracle (`ReferenceProblem` skips −inf scores), so
    /// NaN in a value row that a −inf column hides from every query does not reach its output. The
    /// tiled kernels weight such a row by exactly 0 and accumulate 0 · NaN = NaN. DESIGN.md only
    /// promises this for rows "the mask hides" (and xFormers' kernels behave like the tiled one),
    /// so this is recorded as a known divergence from the oracle rather than a failure.
    @Test func nanInValueRowsHiddenByMinusInfinityBias() throws {
        var values = try randn([1, 2, 33, 70], 47).toDoubleArray()
        for index in values.indices where [3, 64, 69].contains(index % 70) { values[index] = -.infinity }
        let bias = try Tensor(shape: [1, 2, 33, 70], scalars: values, dtype: .float32)
        let testCase = try Self.bmhk(queries: 33, keys: 70, bias: bias, seed: 48)
        let hidden = try Self.hiddenRows(testCase)
        #expect(hidden == [[0, 3], [0, 64], [0, 69]])
        var poisonedValues = testCase
        poisonedValues.value = try poisoned(testCase.value, rows: hidden)
        // Without NaN both agree.
        try Self.compare(testCase, "−inf bias columns")
        try Self.compare(poisonedValues, "NaN in value rows a −inf bias column hides")
    }
}
