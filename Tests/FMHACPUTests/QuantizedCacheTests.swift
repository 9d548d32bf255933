import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// Quantized K/V caches on the CPU operators: the float64 oracle on a quantized cache equals it
/// on the dequantized tensors bit for bit, and the tiled forward (every kernel build) is within
/// the forward tolerance of it, for every format, dtype, GQA packing and the decoding masks
/// (padded causal with offset, paged with shuffled pages).
@Suite struct QuantizedCacheTests {
    static func masks(queries: Int) throws -> [(any AttentionBias)?] {
        let lengths = [0, 1, 100, 257]
        let q = [Int](repeating: queries, count: lengths.count)
        // Pages of 16 (17 per sequence), handed out in reverse.
        let tables = (0..<lengths.count).map { b in (0..<17).map { 4 * 17 - 1 - (b * 17 + $0) } }
        return [
            try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: q, kvPadding: 272, kvSeqlen: lengths),
            try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: q, kvSeqlen: lengths, blockTables: tables, pageSize: 16),
        ]
    }

    @Test(arguments: everyKeyValueFormat, [DType.float32, .bfloat16, .float16])
    func tiledAndReferenceOnQuantizedCaches(format: KeyValueFormat, dtype: DType) throws {
        for (queries, ratio, headDimension) in [(1, 4, 64), (3, 1, 128)] {
            for bias in try Self.masks(queries: queries) {
                let inputs = try quantizedDecodingInputs(queries: 4 * queries, keys: 4 * 272, ratio: ratio, headDimension: headDimension,
                                                         format: format, dtype: dtype, bias: bias, device: .cpu, seed: 3)
                let problem = try inputs.validate(), what = "\(format) \(dtype) Mq=\(queries) GQA \(ratio) \(type(of: bias!).name)"
                let reference = try ReferenceForward().forward(problem)
                let plain = try problem.dequantized()
                // (The inputs are BMGHK, so the dequantized views are in their layout.)
                let dense = try ReferenceForward().forward(Inputs(query: inputs.query, key: plain.key, value: plain.value, bias: bias).validate())
                #expect(try reference.output.toDoubleArray() == dense.output.toDoubleArray(), "\(what): oracle")
                for kernels in CPUForwardTests.kernels {
                    let result = try CPUForward(kernels: kernels).forward(problem)
                    let ratio = Tolerance.forward(dtype).worstRatio(try result.output.toDoubleArray(), try reference.output.toDoubleArray())
                    let lseRatio = Tolerance(absolute: 2e-4, relative: 1e-5).worstRatio(try result.lse.toDoubleArray(),
                                                                                        try reference.lse.toDoubleArray())
                    #expect(ratio <= 1 && lseRatio <= 1, "\(what) \(kernels): output \(ratio), LSE \(lseRatio)")
                }
            }
        }
    }

    @Test func backwardOperatorsRefuseQuantizedCaches() throws {
        let inputs = try quantizedDecodingInputs(queries: 2, keys: 20, ratio: 1, headDimension: 64, format: .fp8, dtype: .float32,
                                                 bias: nil, device: .cpu, seed: 1)
        let problem = try inputs.validate()
        for op in [CPUBackward() as any BackwardOperator, ReferenceBackward()] {
            #expect(op.notSupportedReasons(problem).contains { $0.contains("quantized K/V (fp8 e4m3 row-wise) is not supported") })
        }
        #expect(CPUForward().notSupportedReasons(problem).isEmpty && ReferenceForward().notSupportedReasons(problem).isEmpty)
    }
}
