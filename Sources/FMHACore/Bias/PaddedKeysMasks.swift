/// Variable-length masks over a padded K/V cache: queries are packed, and key block `b` is
/// `b·padding ..< b·padding + kvSeqlen[b]` of a `[1, B·padding, ...]` key tensor.
public protocol PaddedKeysBias: AttentionMask {
    /// Where each sequence's queries are along M.
    var queryInfo: SeqLenInfo { get }
    /// Used keys and padding of each sequence.
    var keyInfo: PaddedSeqLenInfo { get }
}

extension PaddedKeysBias {
    public var blockLayout: BlockLayout? {
        BlockLayout(queryStarts: queryInfo.seqstarts, keyStarts: keyInfo.seqstarts, keyLengths: keyInfo.seqlens,
                    keyCount: keyInfo.count * keyInfo.padding)
    }
}

/// Query and key information of a padded mask, checked once for every padded factory.
struct PaddedKeysArguments {
    let queryInfo: SeqLenInfo
    let keyInfo: PaddedSeqLenInfo

    init(qSeqlen: [Int], kvPadding: Int, kvSeqlen: [Int]) throws {
        queryInfo = try SeqLenInfo.fromSeqlens(qSeqlen, argument: "qSeqlen")
        keyInfo = try PaddedSeqLenInfo.fromSeqlens(kvSeqlen, padding: kvPadding)
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: keyInfo.count, keyArgument: "kvSeqlen")
    }
}

/// Each query sees the used keys of its own sequence.
public struct BlockDiagonalPaddedKeysMask: PaddedKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: PaddedSeqLenInfo

    /// Sequences of `qSeqlen` queries against the first `kvSeqlen[b]` of `kvPadding` keys each.
    public static func fromSeqlens(qSeqlen: [Int], kvPadding: Int, kvSeqlen: [Int]) throws -> Self {
        let arguments = try PaddedKeysArguments(qSeqlen: qSeqlen, kvPadding: kvPadding, kvSeqlen: kvSeqlen)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo)
    }

    public var band: KeyBand { .full }

    /// The same mask over a paged cache (`blockTables[b]` lists sequence b's pages).
    public func makePaged(blockTables: [[Int]], pageSize: Int) throws -> PagedBlockDiagonalPaddedKeysMask {
        try PagedBlockDiagonalPaddedKeysMask(queryInfo: queryInfo, kvSeqlen: keyInfo.seqlens, blockTables: blockTables,
                                             pageSize: pageSize)
    }

    /// The two-sided local version (`i + s − windowLeft ≤ j ≤ i + s + windowRight`).
    public func makeLocalAttention(windowLeft: Int, windowRight: Int) throws -> BlockDiagonalLocalAttentionPaddedKeysMask {
        try Windows.checkSides(left: windowLeft, right: windowRight)
        return BlockDiagonalLocalAttentionPaddedKeysMask(queryInfo: queryInfo, keyInfo: keyInfo, windowLeft: windowLeft,
                                                         windowRight: windowRight)
    }
}

/// The decoding (KV-cache) mask: bottom-right causal over each sequence's used keys,
/// `j ≤ i + kvSeqlen[b] − qSeqlen[b]`.
public struct BlockDiagonalCausalWithOffsetPaddedKeysMask: PaddedKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: PaddedSeqLenInfo

    /// Sequences of `qSeqlen` queries against the first `kvSeqlen[b]` of `kvPadding` keys each.
    public static func fromSeqlens(qSeqlen: [Int], kvPadding: Int, kvSeqlen: [Int]) throws -> Self {
        let arguments = try PaddedKeysArguments(qSeqlen: qSeqlen, kvPadding: kvPadding, kvSeqlen: kvSeqlen)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo)
    }

    public var band: KeyBand { .causal(.bottomRight) }

    /// The same mask over a paged cache.
    public func makePaged(blockTables: [[Int]], pageSize: Int) throws -> PagedBlockDiagonalCausalWithOffsetPaddedKeysMask {
        try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask(queryInfo: queryInfo, kvSeqlen: keyInfo.seqlens,
                                                             blockTables: blockTables, pageSize: pageSize)
    }
}

/// Two-sided window over each sequence's used keys: `i + s − windowLeft ≤ j ≤ i + s + windowRight`,
/// `s = kvSeqlen[b] − qSeqlen[b]` (`windowLeft + windowRight + 1` keys at most).
public struct BlockDiagonalLocalAttentionPaddedKeysMask: PaddedKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: PaddedSeqLenInfo
    /// Keys visible before the diagonal (≥ 0).
    public let windowLeft: Int
    /// Keys visible after the diagonal (≥ 0).
    public let windowRight: Int

    /// Padded sequences with a two-sided window (xFormers' `from_seqlens_local`).
    public static func fromSeqlens(qSeqlen: [Int], kvPadding: Int, kvSeqlen: [Int], windowLeft: Int,
                                   windowRight: Int) throws -> Self {
        let arguments = try PaddedKeysArguments(qSeqlen: qSeqlen, kvPadding: kvPadding, kvSeqlen: kvSeqlen)
        try Windows.checkSides(left: windowLeft, right: windowRight)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo, windowLeft: windowLeft,
                    windowRight: windowRight)
    }

    public var band: KeyBand { KeyBand(anchor: .bottomRight, left: windowLeft, right: windowRight) }
}

/// Bottom-right causal window over each sequence's used keys: `i + s − w + 1 ≤ j ≤ i + s`.
public struct BlockDiagonalCausalLocalAttentionPaddedKeysMask: PaddedKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: PaddedSeqLenInfo
    /// Keys each query may see, its own included (> 0).
    public let windowSize: Int

    /// Padded sequences with a causal window (xFormers' `from_seqlens_local`).
    public static func fromSeqlens(qSeqlen: [Int], kvPadding: Int, kvSeqlen: [Int], windowSize: Int) throws -> Self {
        let arguments = try PaddedKeysArguments(qSeqlen: qSeqlen, kvPadding: kvPadding, kvSeqlen: kvSeqlen)
        try Windows.checkSize(windowSize)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo, windowSize: windowSize)
    }

    public var band: KeyBand { .causalWindow(.bottomRight, windowSize: windowSize) }

    /// The same mask over a paged cache.
    public func makePaged(blockTables: [[Int]], pageSize: Int) throws -> PagedBlockDiagonalCausalLocalPaddedKeysMask {
        try PagedBlockDiagonalCausalLocalPaddedKeysMask(queryInfo: queryInfo, kvSeqlen: keyInfo.seqlens,
                                                        blockTables: blockTables, pageSize: pageSize,
                                                        windowSize: windowSize)
    }
}
