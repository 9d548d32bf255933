/// Variable-length masks whose key blocks may sit anywhere in K/V: key block `b` is
/// `kvSeqstarts[b] ..< kvSeqstarts[b] + kvSeqlen[b]` (blocks may overlap or leave gaps).
public protocol GappyKeysBias: AttentionMask {
    /// Where each sequence's queries are along M.
    var queryInfo: SeqLenInfo { get }
    /// Where each sequence's keys start, and how many it uses.
    var keyInfo: GappySeqInfo { get }
    /// Total K/V rows (upstream's final `kvSeqstarts` entry).
    var keyCount: Int { get }
}

extension GappyKeysBias {
    public var blockLayout: BlockLayout? {
        BlockLayout(queryStarts: queryInfo.seqstarts, keyStarts: keyInfo.seqstarts, keyLengths: keyInfo.seqlens,
                    keyCount: keyCount)
    }
}

/// Query and key information of a gappy mask, checked once for every gappy factory.
struct GappyKeysArguments {
    let queryInfo: SeqLenInfo
    let keyInfo: GappySeqInfo
    let keyCount: Int

    /// `kvSeqstarts` has one entry per sequence plus the total number of keys at the end.
    init(qSeqlen: [Int], kvSeqstarts: [Int], kvSeqlen: [Int]) throws {
        queryInfo = try SeqLenInfo.fromSeqlens(qSeqlen, argument: "qSeqlen")
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: kvSeqlen.count, keyArgument: "kvSeqlen")
        guard kvSeqstarts.count == kvSeqlen.count + 1 else {
            throw FMHAError.invalidArgument("kvSeqstarts",
                                            expected: "\(kvSeqlen.count + 1) entries (a start per sequence, then the key total)",
                                            got: "\(kvSeqstarts.count)")
        }
        keyCount = kvSeqstarts[kvSeqstarts.count - 1]
        guard keyCount >= 0 else {
            throw FMHAError.invalidArgument("kvSeqstarts[\(kvSeqlen.count)]", expected: "the key total, ≥ 0",
                                            got: "\(keyCount)")
        }
        keyInfo = try GappySeqInfo.validated(seqstarts: Array(kvSeqstarts.dropLast()), seqlens: kvSeqlen,
                                             limit: keyCount, limitDescription: "the key total kvSeqstarts.last")
    }
}

/// Each query sees the used keys of its own sequence.
public struct BlockDiagonalGappyKeysMask: GappyKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: GappySeqInfo
    public let keyCount: Int

    /// Sequences of `qSeqlen` queries against keys `kvSeqstarts[b] ..< kvSeqstarts[b] + kvSeqlen[b]`;
    /// `kvSeqstarts` ends with the total number of keys.
    public static func fromSeqlens(qSeqlen: [Int], kvSeqstarts: [Int], kvSeqlen: [Int]) throws -> Self {
        let arguments = try GappyKeysArguments(qSeqlen: qSeqlen, kvSeqstarts: kvSeqstarts, kvSeqlen: kvSeqlen)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo, keyCount: arguments.keyCount)
    }

    public var band: KeyBand { .full }

    /// The same mask over a paged cache whose rows stand for `notionalPadding` keys each of this
    /// mask's key dimension (see `GappyPaging`).
    public func makePaged(blockTables: [[Int]], pageSize: Int, notionalPadding: Int) throws -> PagedBlockDiagonalGappyKeysMask {
        let paged = try GappyPaging(queryInfo: queryInfo, keyInfo: keyInfo, blockTables: blockTables, pageSize: pageSize,
                                    notionalPadding: notionalPadding)
        return PagedBlockDiagonalGappyKeysMask(queryInfo: queryInfo, keyInfo: paged.keyInfo, pages: paged.pages)
    }
}

/// Bottom-right causal over each sequence's used keys: `j ≤ i + kvSeqlen[b] − qSeqlen[b]`.
public struct BlockDiagonalCausalWithOffsetGappyKeysMask: GappyKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: GappySeqInfo
    public let keyCount: Int

    /// As `BlockDiagonalGappyKeysMask.fromSeqlens`.
    public static func fromSeqlens(qSeqlen: [Int], kvSeqstarts: [Int], kvSeqlen: [Int]) throws -> Self {
        let arguments = try GappyKeysArguments(qSeqlen: qSeqlen, kvSeqstarts: kvSeqstarts, kvSeqlen: kvSeqlen)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo, keyCount: arguments.keyCount)
    }

    public var band: KeyBand { .causal(.bottomRight) }

    /// The same mask over a paged cache (see `BlockDiagonalGappyKeysMask.makePaged`).
    public func makePaged(blockTables: [[Int]], pageSize: Int,
                          notionalPadding: Int) throws -> PagedBlockDiagonalCausalWithOffsetGappyKeysMask {
        let paged = try GappyPaging(queryInfo: queryInfo, keyInfo: keyInfo, blockTables: blockTables, pageSize: pageSize,
                                    notionalPadding: notionalPadding)
        return PagedBlockDiagonalCausalWithOffsetGappyKeysMask(queryInfo: queryInfo, keyInfo: paged.keyInfo,
                                                               pages: paged.pages)
    }
}

/// Two-sided window over each sequence's used keys: `i + s − windowLeft ≤ j ≤ i + s + windowRight`,
/// `s = kvSeqlen[b] − qSeqlen[b]`.
public struct BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask: GappyKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: GappySeqInfo
    public let keyCount: Int
    /// Keys visible before the diagonal (≥ 0).
    public let windowLeft: Int
    /// Keys visible after the diagonal (≥ 0).
    public let windowRight: Int

    /// Gappy sequences with a two-sided window (MSLK's `from_seqlens_local_gappy`).
    public static func fromSeqlens(qSeqlen: [Int], kvSeqstarts: [Int], kvSeqlen: [Int], windowLeft: Int,
                                   windowRight: Int) throws -> Self {
        let arguments = try GappyKeysArguments(qSeqlen: qSeqlen, kvSeqstarts: kvSeqstarts, kvSeqlen: kvSeqlen)
        try Windows.checkSides(left: windowLeft, right: windowRight)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo, keyCount: arguments.keyCount,
                    windowLeft: windowLeft, windowRight: windowRight)
    }

    public var band: KeyBand { KeyBand(anchor: .bottomRight, left: windowLeft, right: windowRight) }
}
