import FMHATestSupport
import FMHA
import Testing

/// The README's example, through the `FMHA` module users import.
@Suite struct ReadmeExampleTests {
    @Test func readmeExampleRuns() throws {
        let query = try Tensor.randn([1, 8, 4, 64], dtype: .bfloat16, seed: 1)
        let key = try Tensor.randn([1, 8, 4, 64], dtype: .bfloat16, seed: 2)
        let value = try Tensor.randn([1, 8, 4, 64], dtype: .bfloat16, seed: 3)
        let bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [3, 5])
        let problem = try Inputs(query: query, key: key, value: value, bias: bias).validate()
        #expect(problem.dimensions.outputShape == [1, 8, 4, 64])
        let output = try memoryEfficientAttention(query, key, value, bias: bias)
        #expect(output.shape == [1, 8, 4, 64])
        let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: bias, p: 0.1, seed: 7)
        let gradients = try memoryEfficientAttentionBackward(
            output, output: forward.output, lse: forward.lse, query: query, key: key, value: value,
            bias: bias, dropout: forward.dropout)
        #expect(gradients.dk.shape == key.shape)
        let (first, firstLSE) = try memoryEfficientAttentionPartial(query, key.slice(dimension: 1, range: 0..<4),
                                                                    value.slice(dimension: 1, range: 0..<4))
        let (second, secondLSE) = try memoryEfficientAttentionPartial(query, key.slice(dimension: 1, range: 4..<8),
                                                                      value.slice(dimension: 1, range: 4..<8))
        let merged = try mergeAttentions([first, second], lses: [firstLSE, secondLSE])
        #expect(merged.output.shape == [1, 8, 4, 64])
        let cache = try Tensor.randn([1, 8, 4, 64], seed: 4)
        let (packed, _) = try KeyValueFormat.int4(groups: 2).quantize(cache)
        let step = try memoryEfficientAttention(query.slice(dimension: 1, range: 7..<8), packed, packed)
        #expect(packed.shape == [1, 8, 4, 10] && step.shape == [1, 1, 4, 64])
        #expect(Operators.explainForward(problem).map(\.name) == ["cpu-tiled", "cuda-decode", "cuda-hopper", "cuda-flash", "cuda-reference", "cpu-reference"])
        let mask = try bias.materialize(shape: [8, 8]).toArray()
        // Row 4 is the second query of the second sequence (keys 3..<8): it sees keys 3 and 4.
        #expect(mask[4 * 8 ..< 5 * 8].map { $0 == 0 } == [false, false, false, true, true, false, false, false])
    }
}
