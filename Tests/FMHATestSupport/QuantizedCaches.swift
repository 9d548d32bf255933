import FMHACore

/// The cache formats quantized-cache tests cover: int4 with every group count, and fp8.
public let everyKeyValueFormat: [KeyValueFormat] = KeyValueFormat.int4GroupCounts.map { .int4(groups: $0) } + [.fp8]

/// Decoding inputs over a quantized K/V cache: the query `[1, queries, 2, ratio, K]` in `dtype`;
/// key and value `[1, keys, 2, ratio, words]`, standard normal data (values spread by 3 from the
/// keys) quantized in `format` on the host and read as stride-0 heads (GQA), with fp8's
/// scale/shift words likewise; all on `device`.
public func quantizedDecodingInputs(queries: Int, keys: Int, ratio: Int, headDimension: Int, format: KeyValueFormat,
                                    dtype: DType, bias: (any AttentionBias)?, device: Device, seed: UInt64) throws -> Inputs {
    let query = try randn([1, queries, 2, ratio, headDimension], seed, dtype, device: device)
    func cache(_ seed: UInt64, spread: Double) throws -> (Tensor, Tensor?) {
        let raw = try Tensor(shape: [1, keys, 2, 1, headDimension],
                             scalars: randn([1, keys, 2, 1, headDimension], seed).toDoubleArray().map { $0 * spread })
        let (words, pairs) = try format.quantize(raw)
        let expandedWords = try words.expanded(to: [1, keys, 2, ratio, words.shape[4]]).to(device)
        return (expandedWords, try pairs?.expanded(to: [1, keys, 2, ratio]).to(device))
    }
    let (key, keyPairs) = try cache(seed + 1, spread: 1), (value, valuePairs) = try cache(seed + 2, spread: 3)
    return Inputs(query: query, key: key, value: value, bias: bias, keyScaleShift: keyPairs, valueScaleShift: valuePairs)
}
