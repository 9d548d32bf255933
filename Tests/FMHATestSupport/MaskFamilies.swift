import FMHACore

/// One mask of every family (and no mask) for 131 packed queries over 200 keys: causal and
/// bottom-right causal, local windows, block-diagonal with empty blocks, padded, paged (page size
/// 25) and gappy keys. With `gappyKeysOverlap` the gappy mask's two blocks share key rows 3 ..< 130
/// (what forwards take; backwards that cannot add up dK/dV there refuse it), else they are disjoint.
public func everyMaskFamily(gappyKeysOverlap: Bool) throws -> [(any AttentionBias)?] {
    [
        nil,
        LowerTriangularMask(),
        LowerTriangularFromBottomRightMask(),
        try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 37),
        try LocalAttentionFromBottomRightMask(windowLeft: 70, windowRight: 5),
        try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [0, 64, 1, 66, 0], kvSeqlen: [3, 65, 1, 131, 0]),
        try BlockDiagonalMask.fromSeqlens(qSeqlen: [65, 66], kvSeqlen: [120, 80]),
        try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [70, 61], kvPadding: 100, kvSeqlen: [100, 0]),
        try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: [70, 61], kvSeqlen: [90, 100],
                                                                    blockTables: [[5, 0, 2, 6], [1, 4, 3, 7]], pageSize: 25,
                                                                    windowSize: 40),
        gappyKeysOverlap
            ? try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [70, 61], kvSeqstarts: [3, 0, 200], kvSeqlen: [150, 130])
            : try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [70, 61], kvSeqstarts: [0, 70, 200], kvSeqlen: [60, 130]),
    ]
}

/// One case of `tensorBiasAndDropoutCases`: inputs, a description, the dropout to replay.
public struct TensorBiasCase {
    public let inputs: Inputs
    public let what: String
    public let dropout: DropoutState?
}

/// Tensor biases and dropout for the CUDA suites, on `device`: a [B, H, Mq, Mkv] bias with -inf
/// over all keys of query 5 (a fully masked row), a causal mask with a bias broadcast over batch
/// and heads (stride 0), and dropout p = 0.3 without a bias, under bottom-right causal, with the
/// tensor bias, and under disjoint gappy and paged masks (2 × 97 queries over 150 keys, or one
/// batch of 194 over 300 for the block masks; 3 heads).
public func tensorBiasAndDropoutCases(dtype: DType, headDimension: Int, device: Device) throws -> [TensorBiasCase] {
    let q = try randn([2, 97, 3, headDimension], 31, dtype, device: device), k = try randn([2, 150, 3, headDimension], 32, dtype, device: device)
    let v = try randn([2, 150, 3, headDimension], 33, dtype, device: device)
    var values = try Tensor.randn([2, 3, 97, 150], dtype: .float32, seed: 34).toArray()
    for head in 0..<6 { for key in 0..<150 { values[(head * 97 + 5) * 150 + key] = -.infinity } }
    let bias = try Tensor(shape: [2, 3, 97, 150], scalars: values, dtype: dtype).to(device)
    let broadcast = try randn([1, 1, 97, 150], 35, dtype, device: device).expanded(to: [2, 3, 97, 150])
    var cases = [
        TensorBiasCase(inputs: Inputs(query: q, key: k, value: v, bias: bias), what: "\(dtype) K=\(headDimension) tensor bias", dropout: nil),
        TensorBiasCase(inputs: Inputs(query: q, key: k, value: v, bias: LowerTriangularMaskWithTensorBias(broadcast)),
                       what: "\(dtype) K=\(headDimension) causal + broadcast tensor bias", dropout: nil),
    ]
    let masks: [(any AttentionBias)?] = [
        nil, LowerTriangularFromBottomRightMask(), bias,
        try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [97, 97], kvSeqstarts: [3, 150, 300], kvSeqlen: [120, 140]),
        try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: [97, 97], kvSeqlen: [140, 100],
                                                                    blockTables: [[5, 0, 2, 6], [1, 4, 3, 7]], pageSize: 37, windowSize: 60),
    ]
    for (index, mask) in masks.enumerated() {
        let blocks = index >= 3
        let query = blocks ? try q.reshaped([1, 194, 3, headDimension]) : q
        let key = blocks ? try k.reshaped([1, 300, 3, headDimension]) : k
        let value = blocks ? try v.reshaped([1, 300, 3, headDimension]) : v
        cases.append(TensorBiasCase(inputs: Inputs(query: query, key: key, value: value, bias: mask, p: 0.3),
                                    what: "\(dtype) K=\(headDimension) dropout, \(mask.map { type(of: $0).name } ?? "no bias")",
                                    dropout: DropoutState(p: 0.3, seed: 0x1234_5678_9abc, offset: UInt32(index))))
    }
    return cases
}
