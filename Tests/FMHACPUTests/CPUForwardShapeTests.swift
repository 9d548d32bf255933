import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// `CPUForwardTests` where sizes and memory layouts vary: long sequences, head dimensions and
/// scale, the three layouts with stride-0 K/V, and non-contiguous views.
extension CPUForwardTests {
    // MARK: - Long sequences

    @Test(arguments: [DType.float32, .bfloat16])
    func longBottomRightCausal(dtype: DType) throws {
        // Mq = 1025 (≡ 1 mod 32 and 64), Mkv = 1089 (≡ 1 mod 64): a partial tile on both sides.
        let testCase = try Self.bmhk(queries: 1025, keys: 1089, heads: 1, headDimension: 8, valueDimension: 8,
                                     bias: LowerTriangularFromBottomRightMask(), dtype: dtype, seed: 60)
        try Self.compare(testCase, "long bottom-right causal")
    }

    /// The BF16 dot products (Q·Kᵀ in bfloat16 pairs, P rounded to bfloat16 for P·V) land much
    /// closer to the float64 result than bfloat16's forward tolerance (atol 2e-2), which would hide a
    /// broken product on outputs of this size; so they are held to a few bfloat16 roundings (the
    /// worst element sits at about half of this bound).
    @Test(.enabled(if: CPUKernels.cpuHasAVX512BF16, "no AVX-512 BF16 on this CPU"), arguments: [2, 3])
    func bfloat16DotProductsStayCloseToTheReference(heads: Int) throws {
        let bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [33, 140], kvSeqlen: [70, 140])
        let inputs = Inputs(query: try randn([1, 173, heads, 64], 63, .bfloat16),
                            key: try randn([1, 210, heads, 64], 64, .bfloat16),
                            value: try randn([1, 210, heads, 32], 65, .bfloat16), bias: bias)
        let expected = try ReferenceForward().forward(inputs, dropout: nil).output.toDoubleArray()
        let output = try CPUForward(kernels: .avx512).forward(inputs, dropout: nil).output.toDoubleArray()
        let tight = Tolerance(absolute: 3e-3, relative: 1.5e-2)
        let error = Self.worst(output, expected, tight)
        #expect(error.ratio <= 1, "worst error \(error.ratio)× the tolerance at \(error.index)")
    }

    @Test func decoding() throws {
        // One query per sequence against long caches, as in generation: B = 3, Mq = 1, Mkv = 1025.
        for dtype in Self.dtypes {
            let testCase = try Self.bmhk(batch: 3, queries: 1, keys: 1025, heads: 4, headDimension: 128,
                                         valueDimension: 128, bias: LowerTriangularFromBottomRightMask(), dtype: dtype,
                                         seed: 62)
            try Self.compare(testCase, "decoding \(dtype)")
        }
    }

    @Test(arguments: [1, 2, 3, 5, 8, 9, 36])
    func fewQueryTiles(queries: Int) throws {
        // Tiles of up to 8 queries take the few-row kernel (with BF16 dot products for bfloat16 where
        // the CPU has them, even widths), larger ones the tile kernel (36: a full tile and 4 more): dense,
        // bottom-right causal with a window, a tensor bias, paged keys, dropout, K ≠ Kv and head
        // dimensions that are not a multiple of the vector width.
        for dtype in Self.dtypes {
            let keys = 131
            let cases: [(String, Case)] = [
                ("dense", try Self.bmhk(queries: queries, keys: keys, headDimension: 40, valueDimension: 24, bias: nil,
                                        dtype: dtype, seed: 70)),
                ("local", try Self.bmhk(queries: queries, keys: keys, headDimension: 19, valueDimension: 33,
                                        bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 70),
                                        dtype: dtype, seed: 73)),
                ("tensor", try Self.bmhk(batch: 2, queries: queries, keys: keys, headDimension: 64, valueDimension: 64,
                                         bias: try randn([2, 2, queries, keys], 76, dtype), dtype: dtype, seed: 77)),
                ("paged", try Self.bmhk(queries: 2 * queries, keys: 8 * 32, headDimension: 16, valueDimension: 16,
                                        bias: try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                                            qSeqlen: [queries, queries], kvSeqlen: [100, 80],
                                            blockTables: [[5, 0, 2, 6], [1, 4, 3, 7]], pageSize: 32),
                                        dtype: dtype, seed: 80)),
            ]
            for (name, testCase) in cases {
                try Self.compare(testCase, "\(name) Mq=\(queries) \(dtype)")
            }
            try Self.compare(cases[1].1, dropout: DropoutState(p: 0.3, seed: 5, offset: 7), "local + dropout Mq=\(queries) \(dtype)")
        }
    }

    @Test func longVarlen() throws {
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [0, 1, 1025, 0], kvPadding: 1089,
                                                                               kvSeqlen: [7, 0, 1089, 64])
        let testCase = try Self.bmhk(queries: 1026, keys: 4 * 1089, heads: 1, headDimension: 8, valueDimension: 8,
                                     bias: bias, dtype: .float16, seed: 61)
        try Self.compare(testCase, poisonHiddenRows: true, "long varlen")
    }

    // MARK: - Head dimensions and scale

    @Test(arguments: [1, 7, 8, 16, 24, 33, 64, 80, 96, 128, 160, 256])
    func headDimension(_ k: Int) throws {
        for dtype in Self.dtypes {
            let testCase = try Self.bmhk(queries: 33, keys: 65, heads: 2, headDimension: k, valueDimension: k,
                                         bias: LowerTriangularFromBottomRightMask(), dtype: dtype, seed: UInt64(k))
            try Self.compare(testCase, "K = \(k)")
        }
    }

    @Test(arguments: [(64, 24), (24, 7), (8, 256), (1, 33), (160, 1)])
    func differentValueHeadDimension(k: Int, kv: Int) throws {
        func randnBias(_ dtype: DType) throws -> any AttentionBias {
            LowerTriangularMaskWithTensorBias(try randn([2, 2, 33, 70], 77, dtype))
        }
        for dtype in Self.dtypes {
            let testCase = try Self.bmhk(batch: 2, queries: 33, keys: 70, heads: 2, headDimension: k, valueDimension: kv,
                                         bias: try randnBias(dtype), dtype: dtype, seed: UInt64(k * 1000 + kv))
            try Self.compare(testCase, "K = \(k), Kv = \(kv)")
        }
    }

    @Test func largestHeadDimensions() throws {
        // Up to the operator's maximum, 4096, on either side.
        for (k, kv) in [(4096, 3), (5, 4096), (512, 300)] {
            let testCase = try Self.bmhk(queries: 33, keys: 65, heads: 1, headDimension: k, valueDimension: kv,
                                         bias: LowerTriangularFromBottomRightMask(), dtype: .bfloat16, seed: UInt64(k + kv))
            try Self.compare(testCase, "K = \(k), Kv = \(kv)")
        }
    }

    @Test(arguments: [0.0, 2.5, -0.7, 1e-3])
    func customScale(_ scale: Double) throws {
        for dtype in Self.dtypes {
            var testCase = try Self.bmhk(batch: 2, queries: 40, keys: 97, headDimension: 64, valueDimension: 24,
                                         bias: LowerTriangularMask(), dtype: dtype, seed: 80)
            testCase.scale = scale
            try Self.compare(testCase, "scale \(scale)")
        }
    }

    // MARK: - Layouts and strides

    @Test(arguments: ["none", "tensor", "causal"])
    func bmkLayout(biasKind: String) throws {
        for dtype in Self.dtypes {
            let bias: (any AttentionBias)? = switch biasKind {
            case "tensor": try randn([3, 33, 65], 14, dtype)
            case "causal": LowerTriangularMask()
            default: nil
            }
            let testCase = Case(query: try randn([3, 33, 16], 11, dtype), key: try randn([3, 65, 16], 12, dtype),
                                value: try randn([3, 65, 9], 13, dtype), bias: bias)
            let (reference, _) = try Self.compare(testCase, "BMK \(biasKind)")
            #expect(reference.lse.shape == [3, 1, 33])
        }
    }

    /// Grouped-query attention as BMHK and BMGHK, with K/V expanded over H with stride 0.
    @Test(arguments: [1, 3, 4, 8])
    func groupedQueryAttention(ratio: Int) throws {
        for dtype in Self.dtypes {
            // BMHK: one K/V head shared by `ratio` query heads.
            let bmhk = Case(query: try randn([2, 33, ratio, 16], 20, dtype),
                            key: try randn([2, 65, 1, 16], 21, dtype).expanded(to: [2, 65, ratio, 16]),
                            value: try randn([2, 65, 1, 24], 22, dtype).expanded(to: [2, 65, ratio, 24]),
                            bias: LowerTriangularFromBottomRightMask())
            #expect(ratio == 1 || (bmhk.key.strides[2] == 0 && bmhk.value.strides[2] == 0))
            try Self.compare(bmhk, "BMHK GQA ×\(ratio) \(dtype)")
            // BMGHK: two groups, each of `ratio` query heads over one K/V head.
            let key = try randn([2, 65, 2, 1, 16], 24, dtype).expanded(to: [2, 65, 2, ratio, 16])
            let value = try randn([2, 65, 2, 1, 8], 25, dtype).expanded(to: [2, 65, 2, ratio, 8])
            let biases: [(any AttentionBias)?] = [nil, LowerTriangularFromBottomRightMask(),
                                                  try randn([2, 2, ratio, 33, 65], 26, dtype)]
            for bias in biases {
                let bmghk = Case(query: try randn([2, 33, 2, ratio, 16], 23, dtype), key: key, value: value, bias: bias,
                                 scale: 0.3)
                let (reference, _) = try Self.compare(bmghk, "BMGHK GQA ×\(ratio) \(bias.map { type(of: $0).name } ?? "none") \(dtype)")
                #expect(reference.lse.shape == [2, 2, ratio, 33])
            }
        }
    }

    @Test func bmghkVarlenWithStrideZeroKeys() throws {
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [0, 33, 7, 0], kvPadding: 65,
                                                                               kvSeqlen: [3, 65, 2, 0])
        for dtype in Self.dtypes {
            let testCase = Case(query: try randn([1, 40, 2, 4, 8], 27, dtype),
                                key: try randn([1, 260, 2, 1, 8], 28, dtype).expanded(to: [1, 260, 2, 4, 8]),
                                value: try randn([1, 260, 2, 1, 8], 29, dtype).expanded(to: [1, 260, 2, 4, 8]),
                                bias: bias)
            let (reference, _) = try Self.compare(testCase, "BMGHK varlen \(dtype)")
            #expect(reference.lse.shape == [1, 2, 4, 40])
            // Paged, shuffled pages, with K/V heads shared by three query heads each.
            let pages = Self.shuffledPages(rows: 4, perRow: 5, seed: 13)
            let paged = try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: [0, 33, 7, 0], kvSeqstarts: [0, 3, 30, 79], kvSeqlen: [3, 65, 2, 1], blockTables: pages.tables,
                pageSize: 16)
            let keys = pages.pages * 16
            let pagedCase = Case(query: try randn([1, 40, 2, 3, 8], 27, dtype),
                                 key: try randn([1, keys, 2, 1, 8], 28, dtype).expanded(to: [1, keys, 2, 3, 8]),
                                 value: try randn([1, keys, 2, 1, 8], 29, dtype).expanded(to: [1, keys, 2, 3, 8]),
                                 bias: paged)
            try Self.compare(pagedCase, "BMGHK paged \(dtype)")
        }
    }

    @Test func strideZeroOverBatchAndHeads() throws {
        let query = try randn([1, 33, 1, 16], 30).expanded(to: [3, 33, 4, 16])
        let key = try randn([1, 65, 1, 16], 31).expanded(to: [3, 65, 4, 16])
        let value = try randn([1, 65, 1, 16], 32).expanded(to: [3, 65, 4, 16])
        try Self.compare(Case(query: query, key: key, value: value, bias: LowerTriangularMask()), "stride 0 over B and H")
        // Every key row the same (stride 0 along Mkv): uniform weights over the visible keys.
        let sameKey = try randn([1, 1, 1, 16], 33).expanded(to: [3, 65, 4, 16])
        #expect(sameKey.strides[1] == 0)
        try Self.compare(Case(query: query, key: sameKey, value: value, bias: LowerTriangularFromBottomRightMask()),
                         "stride 0 along Mkv")
    }

    @Test func slicesOfAPackedQKVTensor() throws {
        for dtype in Self.dtypes {
            // [B, M, H, 3·K]: q, k and v interleaved per head, each a non-contiguous view.
            let packed = try randn([2, 70, 3, 3 * 24], 33, dtype)
            let query = try packed.slice(dimension: 3, range: 0..<24)
            let key = try packed.slice(dimension: 3, range: 24..<48)
            let value = try packed.slice(dimension: 3, range: 48..<72)
            #expect(!query.isContiguous && key.offset == 24 && value.strides == [70 * 216, 216, 72, 1])
            try Self.compare(Case(query: query, key: key, value: value, bias: LowerTriangularMask()), "packed QKV \(dtype)")
            // [B, M, 3, H, K] selected along the "3" dimension.
            let stacked = try randn([2, 70, 3, 3, 16], 34, dtype)
            func pick(_ index: Int) throws -> Tensor {
                let view = try stacked.slice(dimension: 2, range: index..<index + 1)
                return try Tensor(storage: view.storage, shape: [2, 70, 3, 16], strides: [view.strides[0], view.strides[1], 16, 1],
                                  offset: view.offset, dtype: dtype)
            }
            try Self.compare(Case(query: try pick(0), key: try pick(1), value: try pick(2), bias: nil, scale: 0.2),
                             "stacked QKV \(dtype)")
        }
    }

    @Test func transposedAndSlicedViews() throws {
        for dtype in Self.dtypes {
            // Query [B, H, M, K] transposed to [B, M, H, K]; keys a slice along M of a longer tensor;
            // values transposed; a transposed tensor bias (column stride ≠ 1).
            let query = try randn([2, 3, 33, 24], 35, dtype).transposed(1, 2)
            let key = try randn([2, 140, 3, 24], 36, dtype).slice(dimension: 1, range: 5..<134)
            let value = try randn([2, 3, 129, 7], 37, dtype).transposed(1, 2)
            let bias = try randn([2, 3, 129, 33], 38, dtype).transposed(2, 3)
            #expect(!query.isContiguous && !value.isContiguous && !bias.isContiguous && key.offset > 0)
            try Self.compare(Case(query: query, key: key, value: value, bias: bias), "transposed views \(dtype)")
        }
    }

    @Test func expandedTensorBias() throws {
        for dtype in Self.dtypes {
            // One [1, 1, Mq, Mkv] plane expanded over B and H with stride 0, alone and with a causal mask.
            let plane = try randn([1, 1, 33, 129], 39, dtype)
            let bias = try plane.expanded(to: [2, 3, 33, 129])
            #expect(bias.strides[0] == 0 && bias.strides[1] == 0)
            try Self.compare(try Self.bmhk(batch: 2, queries: 33, keys: 129, heads: 3, bias: bias, dtype: dtype, seed: 40),
                             "expanded tensor bias \(dtype)")
            try Self.compare(try Self.bmhk(batch: 2, queries: 33, keys: 129, heads: 3, bias: LowerTriangularMaskWithTensorBias(bias),
                                           dtype: dtype, seed: 41),
                             "causal + expanded tensor bias \(dtype)")
            // Stride 0 along Mq (one row for every query) and along Mkv (one value per query).
            let row = try randn([2, 3, 1, 129], 42, dtype).expanded(to: [2, 3, 33, 129])
            let column = try randn([2, 3, 33, 1], 43, dtype).expanded(to: [2, 3, 33, 129])
            #expect(row.strides[2] == 0 && column.strides[3] == 0)
            for (name, bias) in [("row", row), ("column", column)] {
                try Self.compare(try Self.bmhk(batch: 2, queries: 33, keys: 129, heads: 3, bias: bias, dtype: dtype, seed: 44),
                                 "tensor bias broadcast along its \(name) \(dtype)")
            }
        }
    }

    @Test func headDimensionOneWithANonUnitLastStride() throws {
        // Validation allows any stride on a last dimension of size 1.
        let query = try randn([2, 33, 1, 3], 42).transposed(2, 3)
        let key = try randn([2, 65, 1, 3], 43).transposed(2, 3)
        #expect(query.shape == [2, 33, 3, 1] && query.strides[3] == 3)
        let value = try randn([2, 65, 3, 5], 44)
        try Self.compare(Case(query: query, key: key, value: value, bias: LowerTriangularMask()), "K = 1, last stride 3")
    }
}
