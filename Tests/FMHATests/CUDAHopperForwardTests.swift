import FMHATestSupport
import FMHA
@testable import FMHACUDA
import Testing

/// Whether the first GPU is a Hopper (compute capability 9.0), where cuda-hopper runs.
let hopperAvailable = CUDAFlashForwardTests.prefillOperator == "cuda-hopper"

/// The Hopper forward (`cuda-hopper`) against the CUDA reference on the same device inputs,
/// outputs poisoned with NaN before each run (`CUDAFlashForwardTests.check`): every mask family it
/// takes, head dimensions 8 ... 256 and K ≠ Kv, float16 and bfloat16, lengths one past a tile and
/// long enough for the K/V ring to wrap many times, GQA in place, BMGHK, partial output, strided
/// queries, B·H > 65535, NaN in keys no query sees; and what it refuses, with the reasons.
@Suite(.enabled(if: hopperAvailable, "no compute capability 9.0 GPU"))
struct CUDAHopperForwardTests {
    let flash = CUDAFlashForwardTests()

    func check(_ inputs: Inputs, _ what: String) throws {
        try flash.check(inputs, "cuda-hopper: \(what)", operator: CUDAHopperForward())
    }

    static func randn(_ shape: [Int], _ seed: UInt64, _ dtype: DType) throws -> Tensor {
        try FMHATestSupport.randn(shape, seed, dtype, device: .cuda(0))
    }

    @Test(arguments: [DType.float16, .bfloat16], [16, 40, 64, 96, 128, 160, 256])
    func masksOfEveryFamily(dtype: DType, headDimension: Int) throws {
        let q = try Self.randn([1, 131, 2, headDimension], 1, dtype), k = try Self.randn([1, 200, 2, headDimension], 2, dtype)
        let v = try Self.randn([1, 200, 2, headDimension], 3, dtype)
        for bias in try everyMaskFamily(gappyKeysOverlap: true) {
            let inputs = Inputs(query: q, key: k, value: v, bias: bias, scale: 0.3)
            let what = "\(bias.map { type(of: $0).name } ?? "no bias") \(dtype) K=\(headDimension)"
            if try inputs.validate().lowering.pages != nil {
                let reasons = CUDAHopperForward().notSupportedReasons(try inputs.validate())
                #expect(reasons.contains { $0.contains("paged keys") }, "\(what): \(reasons)")
                continue
            }
            try check(inputs, what)
        }
    }

    @Test(arguments: [DType.float16, .bfloat16])
    func headDimensionsLengthsAndKNotKv(dtype: DType) throws {
        for headDimension in [8, 24, 64, 72, 128, 136, 192, 256] {
            for (queries, keys) in [(1, 1), (33, 129), (129, 65), (300, 1025)] {
                let q = try Self.randn([2, queries, 1, headDimension], 21, dtype), k = try Self.randn([2, keys, 1, headDimension], 22, dtype)
                let v = try Self.randn([2, keys, 1, headDimension], 23, dtype)
                for mask in [nil, LowerTriangularFromBottomRightMask(), LowerTriangularMask()] as [(any AttentionBias)?] {
                    try check(Inputs(query: q, key: k, value: v, bias: mask),
                              "\(dtype) K=\(headDimension) Mq=\(queries) Mkv=\(keys) \(mask.map { type(of: $0).name } ?? "dense")")
                }
            }
        }
        for (headDimension, valueDimension) in [(64, 128), (128, 40), (8, 120), (256, 64), (40, 200)] {
            let q = try Self.randn([1, 70, 2, headDimension], 24, dtype), k = try Self.randn([1, 290, 2, headDimension], 25, dtype)
            let v = try Self.randn([1, 290, 2, valueDimension], 26, dtype)
            try check(Inputs(query: q, key: k, value: v, bias: LowerTriangularFromBottomRightMask()), "\(dtype) K=\(headDimension) Kv=\(valueDimension)")
        }
    }

    @Test func longSequencesWrapTheRing() throws {
        // 33 key tiles per query tile and 24 query tiles: the two-stage ring wraps many times, per
        // head and across the heads a block loops over.
        let q = try Self.randn([1, 3000, 4, 128], 31, .bfloat16), k = try Self.randn([1, 4200, 4, 128], 32, .bfloat16)
        let v = try Self.randn([1, 4200, 4, 128], 33, .bfloat16)
        for mask in [nil, LowerTriangularFromBottomRightMask(), try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 700)]
            as [(any AttentionBias)?] {
            try check(Inputs(query: q, key: k, value: v, bias: mask), "long, \(mask.map { type(of: $0).name } ?? "dense")")
        }
        let wide = try Self.randn([1, 1500, 2, 256], 35, .float16)
        try check(Inputs(query: wide, key: wide, value: wide, bias: LowerTriangularMask()), "long, K = 256, causal")
        let varlen = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [1000, 1, 1999])
        let packed = try Self.randn([1, 3000, 4, 64], 34, .float16)
        try check(Inputs(query: packed, key: packed, value: packed, bias: varlen), "varlen causal 1000, 1, 1999")
    }

    @Test func groupedQueriesLayoutsAndPartialOutput() throws {
        let key3 = try Self.randn([1, 45, 2, 1, 64], 29, .float16).expanded(to: [1, 45, 2, 3, 64])
        try check(Inputs(query: try Self.randn([1, 60, 2, 3, 64], 30, .float16), key: key3, value: key3, bias: LowerTriangularMask()),
                  "GQA 3")
        let key = try Self.randn([2, 170, 2, 1, 32], 5, .bfloat16).expanded(to: [2, 170, 2, 4, 32])
        let value = try Self.randn([2, 170, 2, 1, 32], 6, .bfloat16).expanded(to: [2, 170, 2, 4, 32])
        let query = try Self.randn([2, 200, 2, 4, 32], 7, .bfloat16)
        try check(Inputs(query: query, key: key, value: value, bias: LowerTriangularFromBottomRightMask()), "GQA 4, Mq > Mkv")
        let transposed = try Self.randn([1, 3, 165, 64], 11, .float16).transposed(1, 2)
        let k = try Self.randn([1, 229, 3, 64], 12, .float16), v = try Self.randn([1, 229, 3, 64], 13, .float16)
        try check(Inputs(query: transposed, key: k, value: v, bias: LowerTriangularMask(), isPartial: true), "partial, strided query")
        let many = try Self.randn([3, 1, 30_000, 16], 14, .bfloat16)
        try check(Inputs(query: many, key: many, value: many), "B·H = 90000")
    }

    @Test func nanInKeysNoQuerySeesDoesNotLeak() throws {
        // Padding rows of a padded-keys mask hold NaN; no query sees them, but they share key
        // tiles with keys that queries see.
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [40, 7], kvPadding: 190, kvSeqlen: [170, 9])
        let k = try keysWithNaNRows(380, width: 64, seed: 15, device: .cuda(0)) { ($0 % 190) >= ($0 < 190 ? 170 : 9) }
        let inputs = Inputs(query: try Self.randn([1, 47, 1, 64], 16, .float16), key: k, value: k, bias: bias)
        let output = try CUDAHopperForward().forward(inputs, dropout: nil).output.toArray()
        #expect(output.allSatisfy { $0.isFinite })
        try check(inputs, "NaN in padding")
    }

    @Test func dispatchAndWhatItRefuses() throws {
        let q = try Self.randn([1, 300, 2, 128], 17, .bfloat16)
        #expect(try Operators.forwardOperator(for: Inputs(query: q, key: q, value: q).validate()).name == "cuda-hopper")
        func reasons(_ inputs: Inputs) throws -> [String] { CUDAHopperForward().notSupportedReasons(try inputs.validate()) }
        let bias = try Self.randn([1, 2, 300, 300], 18, .bfloat16)
        #expect(try reasons(Inputs(query: q, key: q, value: q, bias: bias)).contains { $0.contains("bias") })
        #expect(try reasons(Inputs(query: q, key: q, value: q, p: 0.1)).contains { $0.contains("dropout") })
        let shifted = try Self.randn([1, 77, 2, 136], 19, .bfloat16).slice(dimension: 3, range: 4..<68)
        let unaligned = Inputs(query: try Self.randn([1, 77, 2, 64], 20, .bfloat16), key: shifted, value: shifted)
        #expect(try reasons(unaligned).contains { $0.contains("16-byte aligned") })
        #expect(try Operators.forwardOperator(for: unaligned.validate()).name == "cuda-flash")
        try flash.check(unaligned, "unaligned rows on cuda-flash")
    }
}
