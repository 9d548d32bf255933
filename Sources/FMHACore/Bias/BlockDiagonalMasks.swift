/// The variable-length masks over packed sequences (batch of one): query block `b` sees only key
/// block `b`, and inside it the type's `band`.
public protocol BlockDiagonalBias: AttentionMask {
    /// Where each sequence's queries are along M.
    var queryInfo: SeqLenInfo { get }
    /// Where each sequence's keys are along Mkv.
    var keyInfo: SeqLenInfo { get }
    /// The batch size of each tensor given to `fromTensorList`, to undo it in `split`.
    var batchSizes: [Int]? { get }
}

extension BlockDiagonalBias {
    public var blockLayout: BlockLayout? {
        BlockLayout(queryStarts: queryInfo.seqstarts, keyStarts: Array(keyInfo.seqstarts.dropLast()),
                    keyLengths: keyInfo.seqlens, keyCount: keyInfo.total)
    }

    /// The same blocks with a top-left causal mask inside each.
    public func makeCausal() throws -> BlockDiagonalCausalMask {
        try BlockDiagonalCausalMask(queryInfo: queryInfo, keyInfo: keyInfo, batchSizes: batchSizes)
    }

    /// The same blocks with a bottom-right causal mask inside each (needs keys ≥ queries per block).
    public func makeCausalFromBottomRight() throws -> BlockDiagonalCausalFromBottomRightMask {
        try BlockDiagonalCausalFromBottomRightMask(queryInfo: queryInfo, keyInfo: keyInfo, batchSizes: batchSizes)
    }

    /// The same blocks with a top-left causal window of `windowSize` keys inside each.
    public func makeLocalAttention(windowSize: Int) throws -> BlockDiagonalCausalLocalAttentionMask {
        try BlockDiagonalCausalLocalAttentionMask(queryInfo: queryInfo, keyInfo: keyInfo, windowSize: windowSize,
                                                  batchSizes: batchSizes)
    }

    /// The same blocks with a bottom-right causal window of `windowSize` keys inside each.
    public func makeLocalAttentionFromBottomRight(windowSize: Int) throws -> BlockDiagonalCausalLocalAttentionFromBottomRightMask {
        try BlockDiagonalCausalLocalAttentionFromBottomRightMask(queryInfo: queryInfo, keyInfo: keyInfo,
                                                                 windowSize: windowSize, batchSizes: batchSizes)
    }

    /// Undoes `fromTensorList`: splits a packed `[1, ΣM, ...]` tensor into the original tensors
    /// (or one `[1, M_b, ...]` tensor per sequence). Needs equal query and key blocks.
    public func split(_ tensor: Tensor) throws -> [Tensor] {
        guard queryInfo == keyInfo else {
            throw FMHAError.invalidArgument("split", expected: "a mask whose query and key lengths are equal (use splitQueries or splitKV)",
                                            got: "qSeqlen \(queryInfo.seqlens), kvSeqlen \(keyInfo.seqlens)")
        }
        return try splitQueries(tensor)
    }

    /// Splits a packed query-side tensor `[1, ΣMq, ...]` per `fromTensorList` input or sequence.
    public func splitQueries(_ tensor: Tensor) throws -> [Tensor] {
        try BlockDiagonalPacking.split(tensor, info: queryInfo, batchSizes: batchSizes)
    }

    /// Splits a packed key/value-side tensor `[1, ΣMkv, ...]` per `fromTensorList` input or sequence.
    public func splitKV(_ tensor: Tensor) throws -> [Tensor] {
        try BlockDiagonalPacking.split(tensor, info: keyInfo, batchSizes: batchSizes)
    }
}

/// The block-diagonal masks built from lengths alone (no window): `BlockDiagonalMask`,
/// `BlockDiagonalCausalMask`, `BlockDiagonalCausalFromBottomRightMask`.
public protocol BlockDiagonalSeqlensBias: BlockDiagonalBias {
    /// Checks the blocks for this mask type.
    init(queryInfo: SeqLenInfo, keyInfo: SeqLenInfo, batchSizes: [Int]?) throws
}

extension BlockDiagonalSeqlensBias {
    /// Blocks of `qSeqlen` queries against `kvSeqlen` keys (`nil`: the same as `qSeqlen`).
    public static func fromSeqlens(qSeqlen: [Int], kvSeqlen: [Int]? = nil) throws -> Self {
        let queryInfo = try SeqLenInfo.fromSeqlens(qSeqlen, argument: "qSeqlen")
        let keyInfo = try kvSeqlen.map { try SeqLenInfo.fromSeqlens($0, argument: "kvSeqlen") } ?? queryInfo
        return try Self(queryInfo: queryInfo, keyInfo: keyInfo, batchSizes: nil)
    }

    /// Packs tensors `[B_i, M_i, ...]` into one `[1, Σ B_i·M_i, ...]` and returns the mask with one
    /// block per batch element, as xFormers' `from_tensor_list`.
    public static func fromTensorList(_ tensors: [Tensor]) throws -> (Self, Tensor) {
        let (seqlens, batchSizes, packed) = try BlockDiagonalPacking.pack(tensors)
        let info = try SeqLenInfo.fromSeqlens(seqlens, argument: "tensors")
        return (try Self(queryInfo: info, keyInfo: info, batchSizes: batchSizes), packed)
    }
}

/// Every query sees every key of its own block, none of the others.
public struct BlockDiagonalMask: BlockDiagonalSeqlensBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: SeqLenInfo
    public let batchSizes: [Int]?

    /// Throws unless there are as many key blocks as query blocks.
    public init(queryInfo: SeqLenInfo, keyInfo: SeqLenInfo, batchSizes: [Int]? = nil) throws {
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: keyInfo.count, keyArgument: "kvSeqlen")
        self.queryInfo = queryInfo
        self.keyInfo = keyInfo
        self.batchSizes = batchSizes
    }

    public var band: KeyBand { .full }
}

/// Block-diagonal with a top-left causal mask in each block (`j ≤ i`).
public struct BlockDiagonalCausalMask: BlockDiagonalSeqlensBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: SeqLenInfo
    public let batchSizes: [Int]?

    /// Throws unless there are as many key blocks as query blocks.
    public init(queryInfo: SeqLenInfo, keyInfo: SeqLenInfo, batchSizes: [Int]? = nil) throws {
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: keyInfo.count, keyArgument: "kvSeqlen")
        self.queryInfo = queryInfo
        self.keyInfo = keyInfo
        self.batchSizes = batchSizes
    }

    public var band: KeyBand { .causal(.topLeft) }
}

/// Block-diagonal with a bottom-right causal mask in each block (`j ≤ i + nk − nq`); every block
/// needs at least as many keys as queries.
public struct BlockDiagonalCausalFromBottomRightMask: BlockDiagonalSeqlensBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: SeqLenInfo
    public let batchSizes: [Int]?

    /// Throws unless the block counts match and each block has `nk ≥ nq`.
    public init(queryInfo: SeqLenInfo, keyInfo: SeqLenInfo, batchSizes: [Int]? = nil) throws {
        try BlockDiagonalPacking.checkKeysCoverQueries(queryInfo: queryInfo, keyInfo: keyInfo)
        self.queryInfo = queryInfo
        self.keyInfo = keyInfo
        self.batchSizes = batchSizes
    }

    public var band: KeyBand { .causal(.bottomRight) }
}

/// Block-diagonal with a top-left causal window in each block: `i − w + 1 ≤ j ≤ i`.
public struct BlockDiagonalCausalLocalAttentionMask: BlockDiagonalBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: SeqLenInfo
    public let batchSizes: [Int]?
    /// Keys each query may see, its own included (> 0).
    public let windowSize: Int

    /// Throws unless the block counts match, `windowSize > 0`, and every query of every block sees
    /// at least one key (`nq − w < nk`), as upstream requires.
    public init(queryInfo: SeqLenInfo, keyInfo: SeqLenInfo, windowSize: Int, batchSizes: [Int]? = nil) throws {
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: keyInfo.count, keyArgument: "kvSeqlen")
        try Windows.checkSize(windowSize)
        for (block, (queries, keys)) in zip(queryInfo.seqlens, keyInfo.seqlens).enumerated()
        where queries - windowSize >= keys {
            throw FMHAError.invalidArgument(
                "kvSeqlen[\(block)]",
                expected: "more than qSeqlen − windowSize = \(queries - windowSize) keys, so that every query of the block sees a key",
                got: "\(keys)")
        }
        self.queryInfo = queryInfo
        self.keyInfo = keyInfo
        self.windowSize = windowSize
        self.batchSizes = batchSizes
    }

    public var band: KeyBand { .causalWindow(.topLeft, windowSize: windowSize) }
}

/// Block-diagonal with a bottom-right causal window in each block: `i + s − w + 1 ≤ j ≤ i + s`,
/// `s = nk − nq`; every block needs at least as many keys as queries.
public struct BlockDiagonalCausalLocalAttentionFromBottomRightMask: BlockDiagonalBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: SeqLenInfo
    public let batchSizes: [Int]?
    /// Keys each query may see, its own included (> 0).
    public let windowSize: Int

    /// Throws unless the block counts match, each block has `nk ≥ nq`, and `windowSize > 0`.
    public init(queryInfo: SeqLenInfo, keyInfo: SeqLenInfo, windowSize: Int, batchSizes: [Int]? = nil) throws {
        try BlockDiagonalPacking.checkKeysCoverQueries(queryInfo: queryInfo, keyInfo: keyInfo)
        try Windows.checkSize(windowSize)
        self.queryInfo = queryInfo
        self.keyInfo = keyInfo
        self.windowSize = windowSize
        self.batchSizes = batchSizes
    }

    public var band: KeyBand { .causalWindow(.bottomRight, windowSize: windowSize) }
}

/// Packing and unpacking of sequences along M, shared by the block-diagonal masks.
enum BlockDiagonalPacking {
    /// Throws unless the block counts match and every key block is at least as long as its
    /// query block (needed by bottom-right masks, whose first query would otherwise see nothing).
    static func checkKeysCoverQueries(queryInfo: SeqLenInfo, keyInfo: SeqLenInfo) throws {
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: keyInfo.count, keyArgument: "kvSeqlen")
        for (block, (queries, keys)) in zip(queryInfo.seqlens, keyInfo.seqlens).enumerated() where keys < queries {
            throw FMHAError.invalidArgument("kvSeqlen[\(block)]",
                                            expected: "at least qSeqlen[\(block)] = \(queries) keys (bottom-right masks need num_keys ≥ num_queries)",
                                            got: "\(keys)")
        }
    }

    /// Concatenates `[B_i, M_i, ...]` tensors into `[1, Σ B_i·M_i, ...]`; returns the lengths
    /// (`B_i` copies of `M_i`), the batch sizes and the packed tensor.
    static func pack(_ tensors: [Tensor]) throws -> (seqlens: [Int], batchSizes: [Int], packed: Tensor) {
        var seqlens = [Int](), batchSizes = [Int](), flattened = [Tensor]()
        for (position, tensor) in tensors.enumerated() {
            guard tensor.rank >= 2 else {
                throw FMHAError.invalidArgument("tensors[\(position)]", expected: "a tensor [B, M, ...] of rank ≥ 2",
                                                got: "shape \(tensor.shape)")
            }
            let batch = tensor.shape[0], length = tensor.shape[1]
            seqlens += Array(repeating: length, count: batch)
            batchSizes.append(batch)
            flattened.append(try tensor.reshaped([1, batch * length] + tensor.shape.dropFirst(2)))
        }
        return (seqlens, batchSizes, try Tensor.concatenated(flattened, dimension: 1))
    }

    /// Splits `[1, total, ...]` along M into one tensor per `batchSizes` entry (reshaped to
    /// `[B_i, M_i, ...]`), or one `[1, M_b, ...]` per sequence without batch sizes.
    static func split(_ tensor: Tensor, info: SeqLenInfo, batchSizes: [Int]?) throws -> [Tensor] {
        guard tensor.rank >= 2, tensor.shape[0] == 1, tensor.shape[1] == info.total else {
            throw FMHAError.invalidArgument("tensor", expected: "shape [1, \(info.total), ...] (batch 1, the packed total)",
                                            got: "\(tensor.shape)")
        }
        let starts = info.seqstarts, trailing = Array(tensor.shape.dropFirst(2))
        guard let batchSizes else {
            return try info.intervals().map { try tensor.slice(dimension: 1, range: $0) }
        }
        guard batchSizes.allSatisfy({ $0 > 0 }), batchSizes.reduce(0, +) == info.count else {
            throw FMHAError.invalidArgument("batchSizes", expected: "positive sizes summing to \(info.count) sequences",
                                            got: "\(batchSizes)")
        }
        var result = [Tensor](), sequence = 0
        for batch in batchSizes {
            let range = starts[sequence]..<starts[sequence + batch]
            result.append(try tensor.slice(dimension: 1, range: range).reshaped([batch, -1] + trailing))
            sequence += batch
        }
        return result
    }
}
