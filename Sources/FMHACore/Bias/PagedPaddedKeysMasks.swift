/// Padded-keys masks over a paged K/V cache: logical key `p` of sequence `b` lives in K/V row
/// `blockTables[b][p / pageSize]·pageSize + p % pageSize`, and each sequence has room for
/// `pagesPerSequence·pageSize` keys.
public protocol PagedPaddedKeysBias: AttentionMask {
    /// Where each sequence's queries are along M.
    var queryInfo: SeqLenInfo { get }
    /// Used keys of each sequence; the padding is the capacity of a row of the page table.
    var keyInfo: PaddedSeqLenInfo { get }
    /// The page table.
    var pages: PageTable { get }
}

extension PagedPaddedKeysBias {
    public var blockLayout: BlockLayout? {
        BlockLayout(queryStarts: queryInfo.seqstarts, keyStarts: Array(repeating: 0, count: keyInfo.count),
                    keyLengths: keyInfo.seqlens, pages: pages, keyCount: pages.physicalKeyCount)
    }
}

/// Query, key and page information of a paged padded mask, checked once for every factory.
struct PagedPaddedKeysArguments {
    let queryInfo: SeqLenInfo
    let keyInfo: PaddedSeqLenInfo
    let pages: PageTable

    init(queryInfo: SeqLenInfo, kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int) throws {
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: kvSeqlen.count, keyArgument: "kvSeqlen")
        self.queryInfo = queryInfo
        pages = try PageTable.validated(blockTables: blockTables, pageSize: pageSize, sequenceCount: kvSeqlen.count)
        keyInfo = try PaddedSeqLenInfo.fromSeqlens(kvSeqlen, padding: pages.capacity,
                                                   paddingArgument: "the page table's capacity (pages per row × pageSize)")
    }
}

/// `BlockDiagonalPaddedKeysMask` over a paged cache.
public struct PagedBlockDiagonalPaddedKeysMask: PagedPaddedKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: PaddedSeqLenInfo
    public let pages: PageTable

    init(queryInfo: SeqLenInfo, kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int) throws {
        let arguments = try PagedPaddedKeysArguments(queryInfo: queryInfo, kvSeqlen: kvSeqlen,
                                                     blockTables: blockTables, pageSize: pageSize)
        (self.queryInfo, keyInfo, pages) = (arguments.queryInfo, arguments.keyInfo, arguments.pages)
    }

    /// Sequences of `qSeqlen` queries against `kvSeqlen[b]` keys stored in pages `blockTables[b]`.
    public static func fromSeqlens(qSeqlen: [Int], kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int) throws -> Self {
        try Self(queryInfo: SeqLenInfo.fromSeqlens(qSeqlen, argument: "qSeqlen"), kvSeqlen: kvSeqlen,
                 blockTables: blockTables, pageSize: pageSize)
    }

    public var band: KeyBand { .full }
}

/// `BlockDiagonalCausalWithOffsetPaddedKeysMask` over a paged cache (paged decoding).
public struct PagedBlockDiagonalCausalWithOffsetPaddedKeysMask: PagedPaddedKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: PaddedSeqLenInfo
    public let pages: PageTable

    init(queryInfo: SeqLenInfo, kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int) throws {
        let arguments = try PagedPaddedKeysArguments(queryInfo: queryInfo, kvSeqlen: kvSeqlen,
                                                     blockTables: blockTables, pageSize: pageSize)
        (self.queryInfo, keyInfo, pages) = (arguments.queryInfo, arguments.keyInfo, arguments.pages)
    }

    /// Sequences of `qSeqlen` queries against `kvSeqlen[b]` keys stored in pages `blockTables[b]`.
    public static func fromSeqlens(qSeqlen: [Int], kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int) throws -> Self {
        try Self(queryInfo: SeqLenInfo.fromSeqlens(qSeqlen, argument: "qSeqlen"), kvSeqlen: kvSeqlen,
                 blockTables: blockTables, pageSize: pageSize)
    }

    public var band: KeyBand { .causal(.bottomRight) }
}

/// `BlockDiagonalCausalLocalAttentionPaddedKeysMask` over a paged cache.
public struct PagedBlockDiagonalCausalLocalPaddedKeysMask: PagedPaddedKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: PaddedSeqLenInfo
    public let pages: PageTable
    /// Keys each query may see, its own included (> 0).
    public let windowSize: Int

    init(queryInfo: SeqLenInfo, kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int, windowSize: Int) throws {
        let arguments = try PagedPaddedKeysArguments(queryInfo: queryInfo, kvSeqlen: kvSeqlen,
                                                     blockTables: blockTables, pageSize: pageSize)
        try Windows.checkSize(windowSize)
        (self.queryInfo, keyInfo, pages) = (arguments.queryInfo, arguments.keyInfo, arguments.pages)
        self.windowSize = windowSize
    }

    /// Paged sequences with a bottom-right causal window (MSLK's `from_seqlens_local`).
    public static func fromSeqlens(qSeqlen: [Int], kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int,
                                   windowSize: Int) throws -> Self {
        try Self(queryInfo: SeqLenInfo.fromSeqlens(qSeqlen, argument: "qSeqlen"), kvSeqlen: kvSeqlen,
                 blockTables: blockTables, pageSize: pageSize, windowSize: windowSize)
    }

    public var band: KeyBand { .causalWindow(.bottomRight, windowSize: windowSize) }
}
