import FMHATestSupport
import FMHA
@testable import FMHACUDA
import Testing

/// The tensor-core backward (`cuda-flash` and `cuda-flash-atomic`) against the CUDA reference
/// backward on the same device inputs, forward output, LSE and output gradient: every mask family, head dimensions 8 ... 256
/// and K ≠ Kv, float16 and bfloat16, GQA in place (ratios 1, 3, 4, 8) and stride-0 K/V, tensor
/// biases (broadcast, a fully masked row) with their gradient, dropout (the forward's mask),
/// a merged output, Mq or Mkv = 1, lengths one past a tile, empty sequences, B·H > 65535, NaN in
/// keys no query sees; and cuda-flash's same bits on a second run.
@Suite(.enabled(if: cudaDeviceAvailable, "no CUDA device"))
struct CUDAFlashBackwardTests {
    /// Gradients of cuda-flash and cuda-flash-atomic within the backward tolerance of
    /// cuda-reference's, and cuda-flash's bits equal on a second run, for the reference forward's
    /// output and LSE (or `output`/`lse` when given) and a random output gradient. (The atomic dQ
    /// refuses a tensor bias and problems without dropout, and says so.)
    func check(_ inputs: Inputs, _ what: String, dropout: DropoutState? = nil, output: Tensor? = nil, lse: Tensor? = nil) throws {
        var inputs = inputs
        inputs.dropout = dropout
        let problem = try inputs.validate()
        let forward = try CUDAReferenceForward().forward(problem)
        let gradOutput = try FMHATestSupport.randn(problem.dimensions.outputShape, 77, inputs.query.dtype, device: .cuda(0))
        let backward = try problem.backward(output: output ?? forward.output, lse: lse ?? forward.lse, gradOutput: gradOutput)
        let reference = try CUDAReferenceBackward().backward(backward)
        for flashOperator in [CUDAFlashBackward(), CUDAFlashBackward(deterministic: false)] {
            let reasons = flashOperator.notSupportedReasons(problem)
            if !flashOperator.deterministic, problem.tensorBias != nil || problem.dropoutMask == nil {
                #expect(!reasons.isEmpty && reasons.allSatisfy { $0.contains("tensor bias") || $0.contains("no dropout") }, "\(what): \(reasons)")
                continue
            }
            #expect(reasons.isEmpty, "\(what) \(flashOperator.name): \(reasons)")
            let flash = try flashOperator.backward(backward)
            #expect((flash.dBias == nil) == (reference.dBias == nil), "\(what): dBias presence")
            let again = flashOperator.deterministic ? try flashOperator.backward(backward) : nil
            let pairs = [("dq", flash.dq, reference.dq, again?.dq), ("dk", flash.dk, reference.dk, again?.dk),
                         ("dv", flash.dv, reference.dv, again?.dv)]
                + (flash.dBias.flatMap { value in reference.dBias.map { [("dBias", value, $0, again?.dBias)] } } ?? [])
            for (name, value, expected, repeated) in pairs {
                let label = "\(what) \(flashOperator.name) \(name)"
                #expect(value.device == .cuda(0) && value.shape == expected.shape && value.dtype == expected.dtype, "\(label)")
                let values = try value.toDoubleArray()
                let ratio = Tolerance.backward(expected.dtype).worstRatio(values, try expected.toDoubleArray())
                #expect(ratio <= 1, "\(label): \(ratio)× the tolerance")
                if let repeated {
                    let bits = values.map(\.bitPattern), repeatedBits = try repeated.toDoubleArray().map(\.bitPattern)
                    #expect(bits == repeatedBits, "\(label): a second run gave other bits")
                }
            }
        }
    }

    /// The shared `randn` test data, on the GPU.
    static func randn(_ shape: [Int], _ seed: UInt64, _ dtype: DType) throws -> Tensor {
        try FMHATestSupport.randn(shape, seed, dtype, device: .cuda(0))
    }

    @Test(arguments: [DType.float16, .bfloat16], [16, 40, 64, 128, 192, 256])
    func masksOfEveryFamily(dtype: DType, headDimension: Int) throws {
        let q = try Self.randn([1, 131, 2, headDimension], 1, dtype), k = try Self.randn([1, 200, 2, headDimension], 2, dtype)
        let v = try Self.randn([1, 200, 2, headDimension], 3, dtype)
        let biases = try everyMaskFamily(gappyKeysOverlap: false)
        for bias in biases {
            try check(Inputs(query: q, key: k, value: v, bias: bias, scale: 0.3),
                      "\(bias.map { type(of: $0).name } ?? "no bias") \(dtype) K=\(headDimension)")
        }
    }

    @Test(arguments: [DType.float16, .bfloat16])
    func everyHeadDimensionAndKNotKv(dtype: DType) throws {
        // 65 queries and 97 keys: one past a tile of 64 queries or keys, and of 32 or 16.
        for headDimension in stride(from: 8, through: 256, by: 8) {
            let q = try Self.randn([2, 65, 1, headDimension], 21, dtype), k = try Self.randn([2, 97, 1, headDimension], 22, dtype)
            let v = try Self.randn([2, 97, 1, headDimension], 23, dtype)
            try check(Inputs(query: q, key: k, value: v, bias: LowerTriangularFromBottomRightMask()), "\(dtype) K=\(headDimension)")
        }
        for (headDimension, valueDimension) in [(64, 128), (136, 40), (8, 256)] {
            let q = try Self.randn([1, 70, 2, headDimension], 24, dtype), k = try Self.randn([1, 90, 2, headDimension], 25, dtype)
            let v = try Self.randn([1, 90, 2, valueDimension], 26, dtype)
            try check(Inputs(query: q, key: k, value: v, bias: LowerTriangularMask()), "\(dtype) K=\(headDimension) Kv=\(valueDimension)")
        }
    }

    /// Dropout (where the atomic dQ runs too) under every mask family, over head dimensions (one
    /// and two column parts, K ≠ Kv), with GQA and stride-0 K/V, and B·H > 65535.
    @Test(arguments: [DType.float16, .bfloat16])
    func dropoutUnderEveryMaskHeadDimensionAndGrouping(dtype: DType) throws {
        let dropout = DropoutState(p: 0.2, seed: 0xfeed, offset: 7)
        let q = try Self.randn([1, 131, 2, 40], 61, dtype), k = try Self.randn([1, 200, 2, 40], 62, dtype)
        let v = try Self.randn([1, 200, 2, 40], 63, dtype)
        for bias in try everyMaskFamily(gappyKeysOverlap: false) {
            try check(Inputs(query: q, key: k, value: v, bias: bias, p: 0.2), "dropout, \(bias.map { type(of: $0).name } ?? "no bias") \(dtype)",
                      dropout: dropout)
        }
        for (headDimension, valueDimension) in [(8, 8), (72, 72), (128, 128), (160, 160), (232, 232), (256, 256), (64, 136)] {
            let q = try Self.randn([2, 65, 1, headDimension], 64, dtype), k = try Self.randn([2, 97, 1, headDimension], 65, dtype)
            let v = try Self.randn([2, 97, 1, valueDimension], 66, dtype)
            try check(Inputs(query: q, key: k, value: v, bias: LowerTriangularFromBottomRightMask(), p: 0.2),
                      "dropout \(dtype) K=\(headDimension) Kv=\(valueDimension)", dropout: dropout)
        }
        let key = try Self.randn([2, 70, 2, 1, 64], 67, dtype).expanded(to: [2, 70, 2, 4, 64])
        try check(Inputs(query: try Self.randn([2, 100, 2, 4, 64], 68, dtype), key: key, value: key, bias: LowerTriangularMask(), p: 0.2),
                  "dropout GQA 4 \(dtype)", dropout: dropout)
        let heads = try Self.randn([3, 1, 30_000, 16], 69, dtype)
        try check(Inputs(query: heads, key: heads, value: heads, p: 0.2), "dropout B·H = 90000 \(dtype)", dropout: dropout)
    }

    @Test func groupedQueriesAndLayouts() throws {
        for ratio in [1, 3, 4, 8] {
            let key = try Self.randn([2, 70, 2, 1, 64], 5, .bfloat16).expanded(to: [2, 70, 2, ratio, 64])
            let value = try Self.randn([2, 70, 2, 1, 64], 6, .bfloat16).expanded(to: [2, 70, 2, ratio, 64])
            let query = try Self.randn([2, 100, 2, ratio, 64], 7, .bfloat16)
            try check(Inputs(query: query, key: key, value: value, bias: LowerTriangularFromBottomRightMask()), "GQA \(ratio)")
        }
        // Stride-0 K/V heads in BMHK and over the batch; Mq = 1; Mkv = 1.
        let key4 = try Self.randn([1, 33, 1, 48], 8, .float16).expanded(to: [3, 33, 8, 48])
        let value4 = try Self.randn([1, 33, 1, 48], 9, .float16).expanded(to: [3, 33, 8, 48])
        try check(Inputs(query: try Self.randn([3, 1, 8, 48], 10, .float16), key: key4, value: value4), "Mq = 1, stride-0 heads and batch")
        try check(Inputs(query: try Self.randn([2, 40, 3, 32], 15, .float16), key: try Self.randn([2, 1, 3, 32], 16, .float16),
                         value: try Self.randn([2, 1, 3, 32], 17, .float16)), "Mkv = 1")
        // A transposed (non-contiguous) query, BMK, unaligned key rows (element loads).
        let transposed = try Self.randn([1, 3, 65, 64], 11, .float16).transposed(1, 2)
        try check(Inputs(query: transposed, key: try Self.randn([1, 129, 3, 64], 12, .float16),
                         value: try Self.randn([1, 129, 3, 64], 13, .float16), bias: LowerTriangularMask()), "strided query")
        try check(Inputs(query: try Self.randn([2, 77, 32], 18, .bfloat16), key: try Self.randn([2, 50, 32], 19, .bfloat16),
                         value: try Self.randn([2, 50, 32], 20, .bfloat16)), "BMK")
        let shifted = try Self.randn([1, 77, 3, 72], 19, .bfloat16).slice(dimension: 3, range: 4..<68)
        try check(Inputs(query: try Self.randn([1, 50, 3, 64], 20, .bfloat16), key: shifted, value: shifted,
                         bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 20)), "unaligned rows")
        // B·H > 65535 heads of one query and key each.
        let q = try Self.randn([3, 1, 30_000, 16], 14, .bfloat16)
        try check(Inputs(query: q, key: q, value: q), "B·H = 90000")
    }

    @Test(arguments: [DType.float16, .bfloat16], [64, 128, 256])
    func tensorBiasAndDropout(dtype: DType, headDimension: Int) throws {
        for testCase in try tensorBiasAndDropoutCases(dtype: dtype, headDimension: headDimension, device: .cuda(0)) {
            try check(testCase.inputs, testCase.what, dropout: testCase.dropout)
        }
    }

    @Test func mergedOutputEmptySequencesAndHiddenNaN() throws {
        // The output and LSE of two partial attentions merged: the backward of the whole attention.
        let q = try Self.randn([1, 80, 2, 64], 41, .bfloat16), k = try Self.randn([1, 150, 2, 64], 42, .bfloat16)
        let v = try Self.randn([1, 150, 2, 64], 43, .bfloat16)
        let first = try CUDAFlashForward().forward(Inputs(query: q, key: try k.slice(dimension: 1, range: 0..<70),
                                                          value: try v.slice(dimension: 1, range: 0..<70), isPartial: true), dropout: nil)
        let second = try CUDAFlashForward().forward(Inputs(query: q, key: try k.slice(dimension: 1, range: 70..<150),
                                                           value: try v.slice(dimension: 1, range: 70..<150), isPartial: true), dropout: nil)
        let merged = try mergeAttentions([try first.output.to(.cpu), try second.output.to(.cpu)],
                                         lses: [try first.lse.to(.cpu), try second.lse.to(.cpu)], outputDType: .bfloat16)
        try check(Inputs(query: q, key: k, value: v), "merged output", output: try merged.output.to(.cuda(0)),
                  lse: try merged.lse!.to(.cuda(0)))
        // Zero-length sequences first, in the middle and last; NaN in the padding keys and values.
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [0, 3, 0, 70, 0], kvPadding: 80,
                                                                               kvSeqlen: [0, 5, 2, 75, 0])
        var keyValues = try Tensor.randn([1, 400, 2, 32], dtype: .float32, seed: 44).toArray()
        for row in 0..<400 where !(80..<85).contains(row) && !(160..<162).contains(row) && !(240..<315).contains(row) {
            for c in 0..<64 { keyValues[row * 64 + c] = .nan }
        }
        let hidden = try Tensor(shape: [1, 400, 2, 32], scalars: keyValues, dtype: .float16).to(.cuda(0))
        try check(Inputs(query: try Self.randn([1, 73, 2, 32], 45, .float16), key: hidden, value: hidden, bias: bias),
                  "empty sequences, NaN in padding keys")
    }

    @Test func refusesWhatItCannotTakeAndIsDispatched() throws {
        let q = try Self.randn([1, 9, 2, 24], 51, .float16), k = try Self.randn([1, 24, 2, 24], 52, .float16)
        // Blocks naming the same K/V rows: their gradients would have to be added up.
        let overlapping = try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [5, 4], kvSeqstarts: [3, 0, 24],
                                                                                   kvSeqlen: [20, 7])
        let problem = try Inputs(query: q, key: k, value: k, bias: overlapping).validate()
        #expect(CUDAFlashBackward().notSupportedReasons(problem).contains { $0.contains("share K/V rows") })
        #expect(try Operators.backwardOperator(for: problem).name == "cuda-reference")
        #expect(try Operators.backwardOperator(for: try Inputs(query: q, key: k, value: k).validate()).name == "cuda-flash")
        #expect(try Operators.backwardOperator(for: try Inputs(query: q, key: k, value: k, p: 0.1).validate()).name == "cuda-flash-atomic")
        let deterministic = try Inputs(query: q, key: k, value: k, p: 0.1, requiresDeterminism: true).validate()
        #expect(try Operators.backwardOperator(for: deterministic).name == "cuda-flash")
        let odd = try Inputs(query: try Self.randn([1, 9, 2, 20], 53, .float16), key: try Self.randn([1, 9, 2, 20], 54, .float16),
                             value: try Self.randn([1, 9, 2, 20], 55, .float16)).validate()
        #expect(CUDAFlashBackward().notSupportedReasons(odd) == ["head dimension 20 is not a multiple of 8",
                                                                  "value head dimension 20 is not a multiple of 8"])
    }
}
