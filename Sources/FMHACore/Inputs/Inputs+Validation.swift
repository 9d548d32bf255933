extension Inputs {
    /// Checks everything xFormers' `validate_inputs` checks, and a little more, and returns the
    /// call as the `AttentionProblem` operators run (the only way to make one). Throws `FMHAError`
    /// naming the argument, what was expected and what was given:
    /// - query, key and value of one rank (3, 4 or 5), one dtype, one device, unit last stride
    ///   (or int32 key and value: a quantized cache, `KeyValueFormat`, whose fp8 kind also needs
    ///   `keyScaleShift` and `valueScaleShift` of the cache's shape without its last dimension);
    /// - equal B (and G, H) everywhere, equal Mkv for key and value, equal K for query and key,
    ///   K ≥ 1 (no broadcasting: expand K/V with stride 0 for grouped-query attention);
    /// - `p` in [0, 1), a finite `scale`;
    /// - a bias type allowed with the layout (BMK takes none, a Tensor or `LowerTriangularMask`);
    ///   a tensor bias of exactly the scores' shape, the query's dtype and device; a
    ///   variable-length bias with B = 1 and the query and key totals it describes.
    public func validate() throws -> AttentionProblem {
        let (dimensions, format) = try validateTensors()
        guard p.isFinite, p >= 0, p < 1 else {
            throw FMHAError.invalidArgument("p", expected: "a dropout probability in [0, 1)", got: "\(p)")
        }
        if let scale, !scale.isFinite {
            throw FMHAError.invalidArgument("scale", expected: "a finite scale", got: "\(scale)")
        }
        if let bias { try validate(bias: bias, dimensions) }
        return try AttentionProblem(self, dimensions: dimensions, keyValueFormat: format)
    }

    /// Ranks, dtypes, devices, strides and sizes of query, key and value (and of the fp8 scale/shift).
    private func validateTensors() throws -> (AttentionDimensions, KeyValueFormat?) {
        // (Formatted only for an error.)
        func shapes() -> String { "query.shape \(query.shape), key.shape \(key.shape), value.shape \(value.shape)" }
        guard (3...5).contains(query.rank), key.rank == query.rank, value.rank == query.rank else {
            throw FMHAError.invalidArgument("query/key/value",
                                            expected: "tensors of one rank: BMK (3), BMHK (4) or BMGHK (5)", got: shapes())
        }
        guard key.device == query.device, value.device == query.device else {
            throw FMHAError.invalidArgument("query/key/value", expected: "tensors on one device",
                                            got: "query on \(query.device), key on \(key.device), value on \(value.device)")
        }
        let quantized = key.dtype == .int32 && value.dtype == .int32
        guard query.dtype.isFloatingPoint, quantized || (key.dtype == query.dtype && value.dtype == query.dtype) else {
            throw FMHAError.invalidArgument(
                "query/key/value",
                expected: "tensors of one floating-point dtype, or (a quantized cache) int32 key and value",
                got: "query \(query.dtype), key \(key.dtype), value \(value.dtype)")
        }
        for (name, tensor) in [("query", query), ("key", key), ("value", value)] {
            guard tensor.shape[tensor.rank - 1] <= 1 || tensor.strides[tensor.rank - 1] == 1 else {
                throw FMHAError.invalidArgument(name, expected: "a unit stride on the last dimension (call contiguous())",
                                                got: "strides \(tensor.strides) for shape \(tensor.shape)")
            }
        }
        let rank = query.rank
        let headDimension = query.shape[rank - 1]
        guard headDimension >= 1 else {
            throw FMHAError.invalidArgument("query", expected: "a head dimension K ≥ 1", got: "shape \(query.shape)")
        }
        let format = try keyValueFormat(headDimension: headDimension)
        // The last dimension key (and, quantized, value) must have.
        let keyWidth = format?.wordsPerRow(headDimension: headDimension) ?? headDimension
        let headAxes = 2..<(rank - 1)
        let compatible = key.shape[0] == query.shape[0] && value.shape[0] == query.shape[0]
            && value.shape[1] == key.shape[1]
            && headAxes.allSatisfy { key.shape[$0] == query.shape[$0] && value.shape[$0] == query.shape[$0] }
            && key.shape[rank - 1] == keyWidth && (format == nil || value.shape[rank - 1] == keyWidth)
        guard compatible else {
            throw FMHAError.invalidArgument(
                "query/key/value",
                expected: "equal batch and head sizes, key and value of one length, "
                    + (format.map { "key and value rows of \(keyWidth) words (\($0), K = \(headDimension))" }
                        ?? "query and key of one head dimension")
                    + " (no broadcasting: expand K/V yourself, stride 0 is fine)",
                got: shapes())
        }
        if format == .fp8 { try validateScaleShifts() }
        let layout: AttentionLayout = rank == 3 ? .bmk : rank == 4 ? .bmhk : .bmghk
        let dimensions = AttentionDimensions(
            layout: layout, batch: query.shape[0], queryLength: query.shape[1], keyLength: key.shape[1],
            groups: rank == 5 ? query.shape[2] : 1, heads: rank == 3 ? 1 : query.shape[rank - 2],
            headDimension: headDimension, valueHeadDimension: format == nil ? value.shape[rank - 1] : headDimension)
        return (dimensions, format)
    }

    /// The format of int32 K/V (nil for a plain cache): fp8 with scale/shift tensors, else int4
    /// with as many groups as the key's last dimension holds beyond K/8 words.
    func keyValueFormat(headDimension: Int) throws -> KeyValueFormat? {
        guard key.dtype == .int32 else {
            if keyScaleShift != nil || valueScaleShift != nil {
                throw FMHAError.invalidArgument("keyScaleShift/valueScaleShift", expected: "scale/shift words only with an int32 (fp8) key and value",
                                                got: "a \(key.dtype) key")
            }
            return nil
        }
        let format: KeyValueFormat
        if keyScaleShift != nil || valueScaleShift != nil {
            format = .fp8
        } else {
            guard headDimension % 8 == 0 else {
                throw FMHAError.invalidArgument("query", expected: "a head dimension that is a multiple of 8 with an int4 cache (int32 K/V without scale/shift words)",
                                                got: "shape \(query.shape)")
            }
            format = .int4(groups: key.shape[key.rank - 1] - headDimension / 8)
        }
        if let problem = format.headDimensionProblem(headDimension) {
            throw FMHAError.invalidArgument("key", expected: problem + " (key.shape[-1] = groups + K/8 for int4)",
                                            got: "key.shape \(key.shape), query.shape \(query.shape)")
        }
        return format
    }

    /// The fp8 scale/shift words: int32, one per key and value row, on the cache's device.
    private func validateScaleShifts() throws {
        for (name, words, cache) in [("keyScaleShift", keyScaleShift, key), ("valueScaleShift", valueScaleShift, value)] {
            let expected = Array(cache.shape.dropLast())
            guard let words, words.dtype == .int32, words.shape == expected, words.device == cache.device else {
                throw FMHAError.invalidArgument(
                    name, expected: "int32 scale/shift words of shape \(expected) on \(cache.device) (an fp8 cache needs both)",
                    got: words.map { "\($0.dtype) of shape \($0.shape) on \($0.device)" } ?? "none")
            }
        }
    }

    /// The bias against the layout and sizes of the call.
    private func validate(bias: any AttentionBias, _ dimensions: AttentionDimensions) throws {
        let biasName = type(of: bias).name
        if dimensions.layout == .bmk, !(bias is Tensor || bias is LowerTriangularMask) {
            throw FMHAError.invalidArgument(
                "bias", expected: "no bias, a Tensor or LowerTriangularMask with BMK inputs (use BMHK [B, M, 1, K] for other biases)",
                got: biasName)
        }
        if let tensor = bias.tensorBias {
            guard tensor.shape == dimensions.biasShape else {
                throw FMHAError.invalidArgument(
                    "bias", expected: "a tensor of shape \(dimensions.biasShape) ([B, (G, H,) Mq, Mkv]; use expanded(to:) to broadcast)",
                    got: "shape \(tensor.shape) for query.shape \(query.shape)")
            }
            guard tensor.dtype == query.dtype, tensor.device == query.device else {
                throw FMHAError.invalidArgument("bias", expected: "a \(query.dtype) tensor on \(query.device) like the query",
                                                got: "\(tensor.dtype) on \(tensor.device)")
            }
        }
        if let blocks = bias.maskLayout?.blocks {
            guard dimensions.batch == 1 else {
                throw FMHAError.invalidArgument(
                    "query", expected: "batch size 1 with \(biasName) (sequences are packed along M)",
                    got: "shape \(query.shape)")
            }
            try blocks.checkShape(queryCount: dimensions.queryLength, keyCount: dimensions.keyLength,
                                  argument: "query/key lengths for \(biasName)")
        }
    }
}
