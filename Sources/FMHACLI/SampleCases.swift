import FMHA

/// One attention problem for `fmha check`: a bias of some type with inputs of matching sizes.
struct SampleCase {
    /// What it exercises, e.g. the bias type.
    var name: String
    /// The validated inputs, random from a fixed seed.
    var problem: AttentionProblem
}

/// A small valid instance of every bias type, at awkward sizes (lengths that are not multiples
/// of any tile, empty sequences, shuffled pages), with random inputs; then two with dropout.
enum SampleCases {
    /// Query, key/value lengths per batch element, batch size, and the bias.
    private typealias Sample = (queries: Int, keys: Int, batch: Int, bias: (any AttentionBias)?)

    /// The bias of each sample; tensor biases get their tensor from `tensor(shape)`.
    private static func samples(tensor: ([Int]) throws -> Tensor, heads: Int) throws -> [Sample] {
        let paddedQueries = [2, 1, 3], padding = 8, paddedKeys = [5, 0, 7]
        let pagedQueries = [2, 1], pagedKeys = [5, 7], tables = [[3, 0], [1, 2]], pageSize = 4
        return [
            (7, 9, 2, nil),
            (7, 9, 2, try tensor([2, heads, 7, 9])),
            (7, 9, 2, LowerTriangularMask()),
            (7, 9, 2, LowerTriangularMask().addBias(try tensor([2, heads, 7, 9]))),
            (5, 9, 2, LowerTriangularFromBottomRightMask()),
            (5, 9, 2, try LowerTriangularFromBottomRightMask().makeLocalAttention(windowSize: 3)),
            (9, 7, 2, try LocalAttentionFromBottomRightMask(windowLeft: 2, windowRight: 1)),
            (8, 12, 1, try BlockDiagonalMask.fromSeqlens(qSeqlen: [3, 0, 5], kvSeqlen: [4, 2, 6])),
            (8, 8, 1, try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [3, 5], kvSeqlen: [2, 6])),
            (8, 11, 1, try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [3, 5], kvSeqlen: [4, 7])),
            (10, 10, 1, try BlockDiagonalMask.fromSeqlens(qSeqlen: [4, 6]).makeLocalAttention(windowSize: 2)),
            (8, 11, 1, try BlockDiagonalMask.fromSeqlens(qSeqlen: [3, 5], kvSeqlen: [4, 7])
                .makeLocalAttentionFromBottomRight(windowSize: 3)),
            (6, 24, 1, try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: paddedQueries, kvPadding: padding,
                                                                  kvSeqlen: paddedKeys)),
            (6, 24, 1, try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: paddedQueries, kvPadding: padding, kvSeqlen: paddedKeys)),
            (6, 24, 1, try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(
                qSeqlen: paddedQueries, kvPadding: padding, kvSeqlen: paddedKeys, windowLeft: 2, windowRight: 1)),
            (6, 24, 1, try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(
                qSeqlen: paddedQueries, kvPadding: padding, kvSeqlen: paddedKeys, windowSize: 3)),
            (3, 16, 1, try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(
                qSeqlen: pagedQueries, kvSeqlen: pagedKeys, blockTables: tables, pageSize: pageSize)),
            (3, 16, 1, try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: pagedQueries, kvSeqlen: pagedKeys, blockTables: tables, pageSize: pageSize)),
            (3, 16, 1, try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(
                qSeqlen: pagedQueries, kvSeqlen: pagedKeys, blockTables: tables, pageSize: pageSize, windowSize: 3)),
            (5, 12, 1, try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [2, 3], kvSeqstarts: [4, 0, 12],
                                                                 kvSeqlen: [5, 3])),
            (5, 12, 1, try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: [2, 3], kvSeqstarts: [4, 0, 12], kvSeqlen: [5, 3])),
            (5, 12, 1, try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                qSeqlen: [2, 3], kvSeqstarts: [4, 0, 12], kvSeqlen: [5, 3], windowLeft: 1, windowRight: 1)),
            (3, 16, 1, try PagedBlockDiagonalGappyKeysMask.fromSeqlens(
                qSeqlen: pagedQueries, kvSeqstarts: [1, 2], kvSeqlen: [4, 5], blockTables: tables, pageSize: pageSize)),
            (3, 16, 1, try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: pagedQueries, kvSeqstarts: [1, 2], kvSeqlen: [4, 5], blockTables: tables, pageSize: pageSize)),
        ]
    }

    /// The samples that also apply dropout (p = 0.3, a fixed seed): without a bias and under a
    /// block-diagonal causal mask.
    private static func dropoutSamples() throws -> [Sample] {
        [(7, 9, 2, nil), (8, 8, 1, try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [3, 5], kvSeqlen: [2, 6]))]
    }

    /// Every sample in `dtype` on `device`, BMHK with `heads` heads, head dimensions 24 and 16.
    static func all(dtype: DType, device: Device, heads: Int = 2, seed: UInt64 = 1) throws -> [SampleCase] {
        var nextSeed = seed
        func random(_ shape: [Int]) throws -> Tensor {
            nextSeed &+= 1
            return try Tensor.randn(shape, dtype: dtype, device: device, seed: nextSeed)
        }
        func sampleCase(_ sample: Sample, p: Double) throws -> SampleCase {
            let inputs = Inputs(query: try random([sample.batch, sample.queries, heads, 24]),
                                key: try random([sample.batch, sample.keys, heads, 24]),
                                value: try random([sample.batch, sample.keys, heads, 16]), bias: sample.bias, p: p, seed: 7)
            let name = sample.bias.map { type(of: $0).name } ?? "no bias"
            return SampleCase(name: p > 0 ? "dropout \(p), \(name)" : name, problem: try inputs.validate())
        }
        return try samples(tensor: random, heads: heads).map { try sampleCase($0, p: 0) }
            + dropoutSamples().map { try sampleCase($0, p: 0.3) }
    }
}
