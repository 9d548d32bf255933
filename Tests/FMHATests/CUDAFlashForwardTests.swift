import FMHATestSupport
import FMHA
@testable import FMHACUDA
import Testing

/// The tensor-core forward (`cuda-flash`) against the CUDA reference on the same device inputs,
/// outputs poisoned with NaN before each run: every mask family, tensor biases, dropout (the same
/// Philox mask), head dimensions 8 ... 256 and K ≠ Kv, float16 and bfloat16, every tile shape,
/// GQA in place (ratios 1, 3, 4, 8), BMGHK, partial output, odd lengths (key counts one past a
/// tile), empty sequences, B·H > 65535, outputs past 2^31 elements, NaN in keys no query sees.
@Suite(.enabled(if: cudaDeviceAvailable, "no CUDA device"))
struct CUDAFlashForwardTests {
    /// Output and LSE of cuda-flash within the forward tolerance of cuda-reference.
    func check(_ inputs: Inputs, _ what: String, dropout: DropoutState? = nil,
               operator flashOperator: any CUDAForwardRunner = CUDAFlashForward()) throws {
        var inputs = inputs
        inputs.dropout = dropout
        let problem = try inputs.validate(), d = problem.dimensions
        #expect(flashOperator.notSupportedReasons(problem).isEmpty, "\(what)")
        let flash = ForwardOutput(
            output: try Tensor.full(d.outputShape, value: .nan, dtype: problem.outputDType).to(.cuda(0)),
            lse: try Tensor.full(d.lseShape, value: .nan, dtype: .float32).to(.cuda(0)))
        try flashOperator.run(problem, output: flash.output, lse: flash.lse)
        let reference = try CUDAReferenceForward().forward(problem)
        #expect(flash.output.shape == reference.output.shape && flash.output.dtype == reference.output.dtype, "\(what)")
        #expect(flash.lse.shape == reference.lse.shape, "\(what)")
        let outputRatio = Tolerance.forward(inputs.query.dtype).worstRatio(try flash.output.toDoubleArray(),
                                                                           try reference.output.toDoubleArray())
        let lseRatio = Tolerance(absolute: 2e-3, relative: 1e-4).worstRatio(try flash.lse.toDoubleArray(), try reference.lse.toDoubleArray())
        #expect(outputRatio <= 1 && lseRatio <= 1, "\(what): output \(outputRatio), LSE \(lseRatio)")
    }

    /// The operator dispatch picks for a plain 16-bit prefill on this GPU: cuda-hopper on
    /// compute capability 9.0, cuda-flash elsewhere.
    static var prefillOperator: String {
        (try? Device.cuda(0).cudaContext().device.computeCapability).map { $0.major == 9 && $0.minor == 0 } == true
            ? "cuda-hopper" : "cuda-flash"
    }

    /// The shared `randn` test data, on the GPU.
    static func randn(_ shape: [Int], _ seed: UInt64, _ dtype: DType) throws -> Tensor {
        try FMHATestSupport.randn(shape, seed, dtype, device: .cuda(0))
    }

    @Test(arguments: [DType.float16, .bfloat16], [16, 40, 64, 96, 128, 192, 256])
    func masksOfEveryFamily(dtype: DType, headDimension: Int) throws {
        let q = try Self.randn([1, 131, 2, headDimension], 1, dtype), k = try Self.randn([1, 200, 2, headDimension], 2, dtype)
        let v = try Self.randn([1, 200, 2, headDimension], 3, dtype)
        let biases = try everyMaskFamily(gappyKeysOverlap: true)
        for bias in biases {
            try check(Inputs(query: q, key: k, value: v, bias: bias, scale: 0.3), "\(bias.map { type(of: $0).name } ?? "no bias") \(dtype) K=\(headDimension)")
        }
    }

    @Test(arguments: [DType.float16, .bfloat16])
    func everyHeadDimensionAndKNotKv(dtype: DType) throws {
        // 129 queries: one past a tile of 64 or 128; 97 keys: one past 32 and 96.
        let bias = LowerTriangularFromBottomRightMask()
        for headDimension in stride(from: 8, through: 256, by: 8) {
            let q = try Self.randn([2, 129, 1, headDimension], 21, dtype), k = try Self.randn([2, 97, 1, headDimension], 22, dtype)
            let v = try Self.randn([2, 97, 1, headDimension], 23, dtype)
            try check(Inputs(query: q, key: k, value: v, bias: bias), "\(dtype) K=\(headDimension)")
        }
        for (headDimension, valueDimension) in [(64, 128), (136, 40), (8, 256)] {
            let q = try Self.randn([1, 70, 2, headDimension], 24, dtype), k = try Self.randn([1, 90, 2, headDimension], 25, dtype)
            let v = try Self.randn([1, 90, 2, valueDimension], 26, dtype)
            try check(Inputs(query: q, key: k, value: v, bias: LowerTriangularMask()), "\(dtype) K=\(headDimension) Kv=\(valueDimension)")
        }
    }

    @Test(arguments: [64, 128, 256])
    func keyLengthsJustPastATile(headDimension: Int) throws {
        // One key past 0, 64, 128 and 1024 keys: a last tile of one key behind full 32-, 64- and
        // 128-key tiles (and, at K = 256, both buffers of the two-stage shape wrapping several times).
        for keys in [1, 65, 129, 1025] {
            for queries in [1, 33] {
                let q = try Self.randn([2, queries, 2, headDimension], 36, .bfloat16)
                let k = try Self.randn([2, keys, 2, headDimension], 37, .bfloat16), v = try Self.randn([2, keys, 2, headDimension], 38, .bfloat16)
                for mask in [nil, LowerTriangularFromBottomRightMask()] as [(any AttentionBias)?] {
                    try check(Inputs(query: q, key: k, value: v, bias: mask),
                              "K=\(headDimension) Mq=\(queries) Mkv=\(keys) \(mask == nil ? "dense" : "causal")")
                }
            }
        }
    }

    @Test(arguments: CUDAFlashForward.tuningCandidates)
    func everyTuningTileShape(tileShape: CUDAFlashForward.TileShape) throws {
        // (K = 256 too for the two-stage shape, the one meant for it.)
        for headDimension in [64, 128] + (tileShape.stages == 2 ? [256] : []) {
            let q = try Self.randn([1, 300, 2, headDimension], 27, .bfloat16), k = try Self.randn([1, 360, 2, headDimension], 28, .bfloat16)
            let bias = try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [150, 0, 150], kvSeqlen: [160, 30, 170])
            try check(Inputs(query: q, key: k, value: k, bias: bias), "\(tileShape.name) K=\(headDimension)",
                      operator: CUDAFlashForward(tileShape: tileShape))
            // Many key tiles (11 of 64 keys): every buffer is refilled several times (with two stages,
            // their barrier phases wrap); a bottom-right causal mask on top.
            let long = try Self.randn([2, 260, 2, headDimension], 29, .bfloat16), longKeys = try Self.randn([2, 700, 2, headDimension], 30, .bfloat16)
            for mask in [nil, LowerTriangularFromBottomRightMask()] as [(any AttentionBias)?] {
                try check(Inputs(query: long, key: longKeys, value: longKeys, bias: mask),
                          "\(tileShape.name) K=\(headDimension) Mkv=700 \(mask == nil ? "dense" : "causal")",
                          operator: CUDAFlashForward(tileShape: tileShape))
            }
        }
        guard tileShape.stages == 2 else { return }
        // The two-stage kernel's other paths: the heads loop (B·H > 65535: its barriers are set up
        // again for each head) and rows that are not 16-byte aligned (element copies, plain arrivals).
        let heads = try Self.randn([3, 1, 30_000, 16], 14, .bfloat16)
        try check(Inputs(query: heads, key: heads, value: heads), "\(tileShape.name) B·H = 90000",
                  operator: CUDAFlashForward(tileShape: tileShape))
        let shifted = try Self.randn([1, 200, 3, 72], 19, .bfloat16).slice(dimension: 3, range: 4..<68)
        try check(Inputs(query: try Self.randn([1, 150, 3, 64], 20, .bfloat16), key: shifted, value: shifted,
                         bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 90)),
                  "\(tileShape.name) unaligned rows", operator: CUDAFlashForward(tileShape: tileShape))
    }

    @Test(arguments: [DType.float16, .bfloat16], [64, 128, 256])
    func tensorBiasAndDropout(dtype: DType, headDimension: Int) throws {
        for testCase in try tensorBiasAndDropoutCases(dtype: dtype, headDimension: headDimension, device: .cuda(0)) {
            try check(testCase.inputs, testCase.what, dropout: testCase.dropout)
        }
    }

    @Test func groupedQueriesLayoutsAndPartialOutput() throws {
        // Three query heads per K/V head, BMHK with stride-0 heads.
        let key3 = try Self.randn([1, 45, 2, 1, 64], 29, .float16).expanded(to: [1, 45, 2, 3, 64])
        try check(Inputs(query: try Self.randn([1, 60, 2, 3, 64], 30, .float16), key: key3, value: key3, bias: LowerTriangularMask()),
                  "GQA 3")
        // GQA as stride-0 K/V in BMGHK and BMHK, queries longer than keys (bottom-right causal).
        let key = try Self.randn([2, 70, 2, 1, 32], 5, .bfloat16).expanded(to: [2, 70, 2, 4, 32])
        let value = try Self.randn([2, 70, 2, 1, 32], 6, .bfloat16).expanded(to: [2, 70, 2, 4, 32])
        let query = try Self.randn([2, 100, 2, 4, 32], 7, .bfloat16)
        try check(Inputs(query: query, key: key, value: value, bias: LowerTriangularFromBottomRightMask()), "GQA, Mq > Mkv")
        let key4 = try Self.randn([1, 33, 1, 48], 8, .float16).expanded(to: [1, 33, 8, 48])
        let value4 = try Self.randn([1, 33, 1, 48], 9, .float16).expanded(to: [1, 33, 8, 48])
        try check(Inputs(query: try Self.randn([1, 1, 8, 48], 10, .float16), key: key4, value: value4), "Mq = 1, stride-0 heads")
        // A non-contiguous query (a transposed view) and partial output in float32.
        let transposed = try Self.randn([1, 3, 65, 64], 11, .float16).transposed(1, 2)
        let k = try Self.randn([1, 129, 3, 64], 12, .float16), v = try Self.randn([1, 129, 3, 64], 13, .float16)
        try check(Inputs(query: transposed, key: k, value: v, bias: LowerTriangularMask(), isPartial: true), "partial, strided query")
        // Keys and values whose rows are not 16-byte aligned (a slice of the last dimension): element loads.
        let wide = try Self.randn([1, 77, 3, 72], 19, .bfloat16)
        let shifted = try wide.slice(dimension: 3, range: 4..<68)
        try check(Inputs(query: try Self.randn([1, 50, 3, 64], 20, .bfloat16), key: shifted, value: shifted,
                         bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 20)), "unaligned rows")
        // B·H > 65535 heads of one query and key each.
        let q = try Self.randn([3, 1, 30_000, 16], 14, .bfloat16)
        try check(Inputs(query: q, key: q, value: q), "B·H = 90000")
    }

    @Test(arguments: [64, 256])
    func outputPastTwoToThe31Elements(headDimension: Int) throws {
        // 16 queries per batch entry and just over 2^31 output elements in all (4 GiB of bfloat16):
        // the output and LSE offsets need 64 bits. Q, K and V are one batch entry broadcast over
        // the batch (stride 0), so every entry's output is the small problem's; the first and the
        // last entry are checked against the reference on it.
        let batch = (1 << 31) / (16 * headDimension) + 1
        let q = try Self.randn([1, 16, 1, headDimension], 39, .bfloat16)
        let k = try Self.randn([1, 40, 1, headDimension], 40, .bfloat16), v = try Self.randn([1, 40, 1, headDimension], 41, .bfloat16)
        for mask in [nil, LowerTriangularFromBottomRightMask()] as [(any AttentionBias)?] {
            let what = "K=\(headDimension) B=\(batch) \(mask == nil ? "dense" : "causal")"
            let reference = try CUDAReferenceForward().forward(Inputs(query: q, key: k, value: v, bias: mask), dropout: nil)
            let large = Inputs(query: try q.expanded(to: [batch, 16, 1, headDimension]), key: try k.expanded(to: [batch, 40, 1, headDimension]),
                               value: try v.expanded(to: [batch, 40, 1, headDimension]), bias: mask)
            let flash = try CUDAFlashForward().forward(large, dropout: nil)
            let output = try flash.output.to(.cpu), lse = try flash.lse.to(.cpu)
            for entry in [0, batch - 1] {
                let outputRatio = Tolerance.forward(.bfloat16).worstRatio(try output.slice(dimension: 0, range: entry..<entry + 1).toDoubleArray(),
                                                                          try reference.output.toDoubleArray())
                let lseRatio = Tolerance(absolute: 2e-3, relative: 1e-4).worstRatio(try lse.slice(dimension: 0, range: entry..<entry + 1).toDoubleArray(),
                                                                                    try reference.lse.toDoubleArray())
                #expect(outputRatio <= 1 && lseRatio <= 1, "\(what) entry \(entry): output \(outputRatio), LSE \(lseRatio)")
            }
        }
    }

    @Test func nanInKeysNoQuerySeesDoesNotLeak() throws {
        // Padding rows of a padded-keys mask hold NaN; no query sees them.
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [40, 7], kvPadding: 90, kvSeqlen: [70, 9])
        let k = try keysWithNaNRows(180, width: 64, seed: 15, device: .cuda(0)) { ($0 % 90) >= ($0 < 90 ? 70 : 9) }
        let inputs = Inputs(query: try Self.randn([1, 47, 1, 64], 16, .float16), key: k, value: k, bias: bias)
        let output = try CUDAFlashForward().forward(inputs, dropout: nil).output.toArray()
        #expect(output.allSatisfy { $0.isFinite })
        try check(inputs, "NaN in padding")
    }

    @Test func dispatchPicksItForHalfPrecisionDeviceTensors() throws {
        let q = try Self.randn([1, 17, 1, 64], 17, .float16)
        #expect(try Operators.forwardOperator(for: Inputs(query: q, key: q, value: q).validate()).name == Self.prefillOperator)
        let odd = try Self.randn([1, 17, 1, 36], 18, .float16)
        #expect(try Operators.forwardOperator(for: Inputs(query: odd, key: odd, value: odd).validate()).name == "cuda-reference")
    }
}
