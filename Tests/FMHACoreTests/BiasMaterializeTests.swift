import Testing
import FMHATestSupport
@testable import FMHACore

/// Renders a materialized bias as rows of "1" (bias 0: attention allowed) and "0" (bias −inf:
/// masked), so that hand-checked masks can be written literally. Any other value shows as "?".
enum MaskRows {
    /// The rows of every `[Mq, Mkv]` plane of `tensor`, leading dimensions flattened in order.
    static func planes(of tensor: Tensor) throws -> [[String]] {
        let rows = tensor.shape[tensor.rank - 2], columns = tensor.shape[tensor.rank - 1]
        let planeCount = tensor.shape.dropLast(2).reduce(1, *)
        let values = try tensor.toArray()
        return (0..<planeCount).map { plane in
            (0..<rows).map { row in
                let start = (plane * rows + row) * columns
                return String(values[start..<start + columns].map(symbol))
            }
        }
    }

    /// "1" for 0, "0" for −inf, "?" for anything else.
    static func symbol(_ value: Float) -> Character {
        value == 0 ? "1" : value == -.infinity ? "0" : "?"
    }

    /// Materializes `bias` as `leading + [queries, keys]` in `dtype`, expects the result to have
    /// that shape and dtype and every plane to be equal, and returns the rows of the first plane.
    static func materialize(_ bias: some AttentionBias, queries: Int, keys: Int, leading: [Int] = [],
                            dtype: DType = .float32,
                            sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
        let shape = leading + [queries, keys]
        let tensor = try bias.materialize(shape: shape, dtype: dtype)
        #expect(tensor.shape == shape, sourceLocation: sourceLocation)
        #expect(tensor.dtype == dtype, sourceLocation: sourceLocation)
        let planes = try planes(of: tensor)
        let first = try #require(planes.first, sourceLocation: sourceLocation)
        #expect(planes.allSatisfy { $0 == first }, "leading planes differ", sourceLocation: sourceLocation)
        return first
    }
}

/// A bias and the mask it must materialize to, written as rows of "1" (allowed) and "0" (masked).
struct MaterializeCase: Sendable, CustomTestStringConvertible {
    let name: String
    let rows: [String]
    let makeBias: @Sendable () throws -> any AttentionBias

    init(_ name: String, rows: [String], makeBias: @escaping @Sendable () throws -> any AttentionBias) {
        self.name = name
        self.rows = rows
        self.makeBias = makeBias
    }

    var queries: Int { rows.count }
    var keys: Int { rows.first?.count ?? 0 }
    var testDescription: String { name }
}

/// Hand-checked materializations of every attention bias type (§3.3 of the xFormers reference).
@Suite struct BiasMaterializeTests {
    /// Checks every case in every dtype, as a plain `[Mq, Mkv]` plane and broadcast to `[2, 3, Mq, Mkv]`.
    static func check(_ testCase: MaterializeCase, dtype: DType) throws {
        let bias = try testCase.makeBias()
        for leading in [[], [2, 3]] {
            let rows = try MaskRows.materialize(bias, queries: testCase.queries, keys: testCase.keys, leading: leading,
                                                dtype: dtype)
            #expect(rows == testCase.rows, "leading dimensions \(leading)")
        }
    }

    /// The masks over the whole `Mq × Mkv` plane, and plain tensors.
    @Suite struct Dense {
        static let cases: [MaterializeCase] = [
            MaterializeCase("Tensor of 0 and −inf", rows: ["101", "001"]) {
                try Tensor(shape: [2, 3], scalars: [0, -Float.infinity, 0, -Float.infinity, -Float.infinity, 0])
            },
            MaterializeCase("LowerTriangularMask 3×3", rows: ["100", "110", "111"]) { LowerTriangularMask() },
            MaterializeCase("LowerTriangularMask 4×2: rows past Mkv see every key", rows: ["10", "11", "11", "11"]) {
                LowerTriangularMask()
            },
            MaterializeCase("LowerTriangularMask 2×4 is top-left", rows: ["1000", "1100"]) { LowerTriangularMask() },
            MaterializeCase("LowerTriangularMaskWithTensorBias of zeros", rows: ["100", "110", "111"]) {
                LowerTriangularMask().addBias(try Tensor.zeros([3, 3]))
            },
            MaterializeCase("LowerTriangularFromBottomRightMask 3×3 equals top-left", rows: ["100", "110", "111"]) {
                LowerTriangularFromBottomRightMask()
            },
            MaterializeCase("LowerTriangularFromBottomRightMask 2×4", rows: ["1110", "1111"]) {
                LowerTriangularFromBottomRightMask()
            },
            MaterializeCase("LowerTriangularFromBottomRightMask 4×2: first rows see nothing", rows: ["00", "00", "10", "11"]) {
                LowerTriangularFromBottomRightMask()
            },
            MaterializeCase("LowerTriangularFromBottomRightLocalAttentionMask w=2, 3×3", rows: ["100", "110", "011"]) {
                try LowerTriangularFromBottomRightMask().makeLocalAttention(windowSize: 2)
            },
            MaterializeCase("LowerTriangularFromBottomRightLocalAttentionMask w=2, 2×4", rows: ["0110", "0011"]) {
                try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 2)
            },
            MaterializeCase("LowerTriangularFromBottomRightLocalAttentionMask w=1 is the diagonal", rows: ["100", "010", "001"]) {
                try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 1)
            },
            MaterializeCase("LocalAttentionFromBottomRightMask 1/2, 4×4 (upstream doc)", rows: ["1110", "1111", "0111", "0011"]) {
                try LocalAttentionFromBottomRightMask(windowLeft: 1, windowRight: 2)
            },
            MaterializeCase("LocalAttentionFromBottomRightMask 1/2, 4×5", rows: ["11110", "01111", "00111", "00011"]) {
                try LocalAttentionFromBottomRightMask(windowLeft: 1, windowRight: 2)
            },
            MaterializeCase("LocalAttentionFromBottomRightMask 0/0, 2×3", rows: ["010", "001"]) {
                try LocalAttentionFromBottomRightMask(windowLeft: 0, windowRight: 0)
            },
            MaterializeCase("LocalAttentionFromBottomRightMask Int.max/Int.max sees every key", rows: ["11", "11", "11"]) {
                try LocalAttentionFromBottomRightMask(windowLeft: .max, windowRight: .max)
            },
            MaterializeCase("LowerTriangularFromBottomRightLocalAttentionMask w=Int.max is bottom-right causal",
                            rows: ["1110", "1111"]) {
                try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: .max)
            },
        ]

        @Test(arguments: cases, DType.floatingPointCases)
        func materializesHandCheckedMask(_ testCase: MaterializeCase, dtype: DType) throws {
            try BiasMaterializeTests.check(testCase, dtype: dtype)
        }

        @Test(arguments: [[1, 2, 3, 4], [2, 2, 3, 4]], DType.floatingPointCases)
        func lowerTriangularMaskWithTensorBiasAddsItsTensor(shape: [Int], dtype: DType) throws {
            let values = (0..<24).map { Float($0) * 0.25 - 2 }
            let bias = try Tensor(shape: [1, 2, 3, 4], scalars: values)
            let result = try LowerTriangularMaskWithTensorBias(bias).materialize(shape: shape, dtype: dtype)
            let expected = (0..<shape.reduce(1, *)).map { index -> Float in
                let query = index / 4 % 3, key = index % 4
                return key <= query ? values[index % values.count] : -.infinity
            }
            #expect(result.shape == shape)
            #expect(try result.toArray() == expected)
        }

        /// A float64 tensor bias materialized in float64 keeps its float64 values, as upstream's
        /// `mask + bias` does.
        @Test func lowerTriangularMaskWithFloat64TensorBiasKeepsFloat64Precision() throws {
            let bias = try Tensor(shape: [2, 2], scalars: [0.1, 0.2, 0.3, 0.4] as [Double], dtype: .float64)
            let values = try LowerTriangularMaskWithTensorBias(bias).materialize(shape: [2, 2], dtype: .float64)
                .toDoubleArray()
            #expect(values == [0.1, -.infinity, 0.3, 0.4])
        }

        @Test func tensorBiasBroadcastsAndConverts() throws {
            let bias = try Tensor(shape: [1, 3], scalars: [1.5, -2, 0])
            let result = try bias.materialize(shape: [2, 2, 3], dtype: .bfloat16)
            #expect(result.dtype == .bfloat16)
            #expect(try result.toArray() == Array(repeating: [1.5, -2, 0], count: 4).flatMap { $0 })
        }
    }

    /// `BlockDiagonalMask` and the causal and local masks made from it.
    @Suite struct BlockDiagonal {
        static let cases: [MaterializeCase] = [
            MaterializeCase("BlockDiagonalMask q [2, 1], kv [1, 3]", rows: ["1000", "1000", "0111"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 1], kvSeqlen: [1, 3])
            },
            MaterializeCase("BlockDiagonalMask q [2, 0, 1] with an empty sequence", rows: ["110", "110", "001"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 0, 1])
            },
            MaterializeCase("BlockDiagonalCausalMask q [3, 2]",
                            rows: ["10000", "11000", "11100", "00010", "00011"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [3, 2]).makeCausal()
            },
            MaterializeCase("BlockDiagonalCausalMask q [3, 1], kv [2, 2] is top-left",
                            rows: ["1000", "1100", "1100", "0010"]) {
                try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [3, 1], kvSeqlen: [2, 2])
            },
            MaterializeCase("BlockDiagonalCausalFromBottomRightMask q [2, 2] (upstream test)",
                            rows: ["1000", "1100", "0010", "0011"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 2]).makeCausalFromBottomRight()
            },
            MaterializeCase("BlockDiagonalCausalFromBottomRightMask q [2], kv [5] (upstream test)",
                            rows: ["11110", "11111"]) {
                try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [2], kvSeqlen: [5])
            },
            MaterializeCase("BlockDiagonalCausalLocalAttentionMask q [4, 6], w=2 (upstream test)",
                            rows: ["1000000000", "1100000000", "0110000000", "0011000000",
                                   "0000100000", "0000110000", "0000011000", "0000001100", "0000000110", "0000000011"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [4, 6]).makeLocalAttention(windowSize: 2)
            },
            MaterializeCase("BlockDiagonalCausalLocalAttentionMask q [3], w=Int.max is causal", rows: ["100", "110", "111"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [3]).makeLocalAttention(windowSize: .max)
            },
            MaterializeCase("BlockDiagonalCausalLocalAttentionMask q [3], kv [2], w=2", rows: ["10", "11", "01"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [3], kvSeqlen: [2]).makeLocalAttention(windowSize: 2)
            },
            MaterializeCase("BlockDiagonalCausalLocalAttentionFromBottomRightMask q [2, 1], kv [4, 3], w=2",
                            rows: ["0110000", "0011000", "0000011"]) {
                try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 1], kvSeqlen: [4, 3])
                    .makeLocalAttentionFromBottomRight(windowSize: 2)
            },
        ]

        @Test(arguments: cases, DType.floatingPointCases)
        func materializesHandCheckedMask(_ testCase: MaterializeCase, dtype: DType) throws {
            try BiasMaterializeTests.check(testCase, dtype: dtype)
        }

        @Test func bottomRightCausalBlocksHaveExactValues() throws {
            let mask = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 2]).makeCausalFromBottomRight()
            let masked = -Float.infinity
            #expect(try mask.materialize(shape: [4, 4]).toArray() == [
                0, masked, masked, masked,
                0, 0, masked, masked,
                masked, masked, 0, masked,
                masked, masked, 0, 0,
            ])
        }
    }

    /// Masks over a padded K/V cache: key block `b` is `b·padding ..< b·padding + kvSeqlen[b]`.
    @Suite struct PaddedKeys {
        static let cases: [MaterializeCase] = [
            MaterializeCase("BlockDiagonalPaddedKeysMask q [2, 1], padding 4, kv [3, 1]",
                            rows: ["11100000", "11100000", "00001000"]) {
                try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [2, 1], kvPadding: 4, kvSeqlen: [3, 1])
            },
            MaterializeCase("BlockDiagonalCausalWithOffsetPaddedKeysMask q [2, 3], padding 5, kv [4, 3]",
                            rows: ["1110000000", "1111000000", "0000010000", "0000011000", "0000011100"]) {
                try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 3], kvPadding: 5, kvSeqlen: [4, 3])
            },
            MaterializeCase("BlockDiagonalCausalWithOffsetPaddedKeysMask q [3], padding 3, kv [2]: more queries than keys",
                            rows: ["000", "100", "110"]) {
                try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [3], kvPadding: 3, kvSeqlen: [2])
            },
            MaterializeCase("BlockDiagonalLocalAttentionPaddedKeysMask q [2, 1], padding 4, kv [4, 2], 1/1",
                            rows: ["01110000", "00110000", "00001100"]) {
                try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [2, 1], kvPadding: 4, kvSeqlen: [4, 2],
                                                                          windowLeft: 1, windowRight: 1)
            },
            MaterializeCase("BlockDiagonalPaddedKeysMask.makeLocalAttention, 1/1",
                            rows: ["01110000", "00110000", "00001100"]) {
                try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [2, 1], kvPadding: 4, kvSeqlen: [4, 2])
                    .makeLocalAttention(windowLeft: 1, windowRight: 1)
            },
            MaterializeCase("BlockDiagonalCausalLocalAttentionPaddedKeysMask q [3, 1], padding 6, kv [5, 0], w=2",
                            rows: ["011000000000", "001100000000", "000110000000", "000000000000"]) {
                try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [3, 1], kvPadding: 6,
                                                                                kvSeqlen: [5, 0], windowSize: 2)
            },
        ]

        @Test(arguments: cases, DType.floatingPointCases)
        func materializesHandCheckedMask(_ testCase: MaterializeCase, dtype: DType) throws {
            try BiasMaterializeTests.check(testCase, dtype: dtype)
        }

        /// Upstream's `test_attn_bias_padded`: each block is `triu(−inf, diagonal: 1 + kvlen − qlen)`
        /// over its used keys, and the padding columns are masked.
        @Test(arguments: [([3, 1, 4], [5, 2, 4], 6), ([1, 1], [0, 3], 3), ([4], [2], 2)])
        func causalWithOffsetPaddedKeysIsUpperTriangularPerBlock(queryLengths: [Int], keyLengths: [Int], padding: Int) throws {
            let mask = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvPadding: padding,
                                                                                  kvSeqlen: keyLengths)
            let keyCount = padding * keyLengths.count
            var expected = [Float]()
            for (block, (queryLength, keyLength)) in zip(queryLengths, keyLengths).enumerated() {
                for query in 0..<queryLength {
                    for column in 0..<keyCount {
                        let key = column - block * padding
                        let isUsedKey = key >= 0 && key < keyLength
                        let isAboveDiagonal = key - query >= 1 + keyLength - queryLength
                        expected.append(isUsedKey && !isAboveDiagonal ? 0 : -.infinity)
                    }
                }
            }
            let result = try mask.materialize(shape: [queryLengths.reduce(0, +), keyCount])
            #expect(try result.toArray() == expected)
        }
    }

    /// Paged masks, materialized in the physical key layout `[Mq, (max table entry + 1)·pageSize]`.
    @Suite struct Paged {
        static let cases: [MaterializeCase] = [
            MaterializeCase("PagedBlockDiagonalPaddedKeysMask q [1, 2], kv [3, 2], pages [[3, 1], [0, 4]] of 2",
                            rows: ["0010001100", "1100000000", "1100000000"]) {
                try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [3, 2],
                                                                 blockTables: [[3, 1], [0, 4]], pageSize: 2)
            },
            MaterializeCase("BlockDiagonalPaddedKeysMask.makePaged ignores the unpaged padding",
                            rows: ["0010001100", "1100000000", "1100000000"]) {
                try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 2], kvPadding: 7, kvSeqlen: [3, 2])
                    .makePaged(blockTables: [[3, 1], [0, 4]], pageSize: 2)
            },
            MaterializeCase("PagedBlockDiagonalCausalWithOffsetPaddedKeysMask q [2], kv [3], pages [[2, 0]] of 2",
                            rows: ["000011", "100011"]) {
                try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2], kvPadding: 4, kvSeqlen: [3])
                    .makePaged(blockTables: [[2, 0]], pageSize: 2)
            },
            MaterializeCase("PagedBlockDiagonalCausalLocalPaddedKeysMask q [2], kv [4], pages [[3, 0, 2, 1]] of 1, w=2",
                            rows: ["1010", "0110"]) {
                try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: [2], kvSeqlen: [4],
                                                                            blockTables: [[3, 0, 2, 1]], pageSize: 1,
                                                                            windowSize: 2)
            },
            MaterializeCase("PagedBlockDiagonalGappyKeysMask q [1, 1], starts [1, 0], kv [2, 3], pages [[1, 2], [3, 0]] of 2",
                            rows: ["00011000", "10000011"]) {
                try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [1, 0], kvSeqlen: [2, 3],
                                                                blockTables: [[1, 2], [3, 0]], pageSize: 2)
            },
            MaterializeCase("BlockDiagonalGappyKeysMask.makePaged, notional padding 4",
                            rows: ["00011000", "10000011"]) {
                try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [1, 4, 8], kvSeqlen: [2, 3])
                    .makePaged(blockTables: [[1, 2], [3, 0]], pageSize: 2, notionalPadding: 4)
            },
            MaterializeCase("PagedBlockDiagonalCausalWithOffsetGappyKeysMask q [2], start 1, kv [3], pages [[2, 0]] of 2",
                            rows: ["100001", "110001"]) {
                try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [2], kvSeqstarts: [1], kvSeqlen: [3],
                                                                                blockTables: [[2, 0]], pageSize: 2)
            },
            MaterializeCase("BlockDiagonalCausalWithOffsetGappyKeysMask.makePaged, notional padding 2",
                            rows: ["100001", "110001"]) {
                try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [2], kvSeqstarts: [1, 4], kvSeqlen: [3])
                    .makePaged(blockTables: [[2, 0]], pageSize: 2, notionalPadding: 2)
            },
        ]

        @Test(arguments: cases, DType.floatingPointCases)
        func materializesHandCheckedMask(_ testCase: MaterializeCase, dtype: DType) throws {
            try BiasMaterializeTests.check(testCase, dtype: dtype)
        }

        @Test func columnsPastTheLastPageAreMasked() throws {
            let mask = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [3, 2],
                                                                       blockTables: [[3, 1], [0, 4]], pageSize: 2)
            let rows = try MaskRows.materialize(mask, queries: 3, keys: 13)
            #expect(rows == ["0010001100000", "1100000000000", "1100000000000"])
        }
    }

    /// Gappy masks: key block `b` is `kvSeqstarts[b] ..< kvSeqstarts[b] + kvSeqlen[b]`, blocks may
    /// overlap or leave gaps.
    @Suite struct GappyKeys {
        static let cases: [MaterializeCase] = [
            MaterializeCase("BlockDiagonalGappyKeysMask with overlapping and gapped blocks",
                            rows: ["1110000000", "0011000000", "0011000000", "0000000100"]) {
                try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 2, 1], kvSeqstarts: [0, 2, 7, 10], kvSeqlen: [3, 2, 1])
            },
            MaterializeCase("BlockDiagonalCausalWithOffsetGappyKeysMask with overlapping and gapped blocks",
                            rows: ["1110000000", "0010000000", "0011000000", "0000000100"]) {
                try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [1, 2, 1], kvSeqstarts: [0, 2, 7, 10],
                                                                          kvSeqlen: [3, 2, 1])
            },
            MaterializeCase("BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask 0/1",
                            rows: ["000110", "000010", "010000"]) {
                try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                    qSeqlen: [2, 1], kvSeqstarts: [1, 0, 6], kvSeqlen: [4, 2], windowLeft: 0, windowRight: 1)
            },
        ]

        @Test(arguments: cases, DType.floatingPointCases)
        func materializesHandCheckedMask(_ testCase: MaterializeCase, dtype: DType) throws {
            try BiasMaterializeTests.check(testCase, dtype: dtype)
        }
    }
}
