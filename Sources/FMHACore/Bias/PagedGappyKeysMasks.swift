/// Gappy-keys masks over a paged K/V cache: sequence `b` uses logical keys
/// `kvSeqstarts[b] ..< kvSeqstarts[b] + kvSeqlen[b]` of its own row of the page table, and logical
/// key `p` lives in K/V row `blockTables[b][p / pageSize]·pageSize + p % pageSize`.
public protocol PagedGappyKeysBias: AttentionMask {
    /// Where each sequence's queries are along M.
    var queryInfo: SeqLenInfo { get }
    /// Start (inside the sequence's logical space) and length of each sequence's keys.
    var keyInfo: GappySeqInfo { get }
    /// The page table.
    var pages: PageTable { get }
}

extension PagedGappyKeysBias {
    public var blockLayout: BlockLayout? {
        BlockLayout(queryStarts: queryInfo.seqstarts, keyStarts: keyInfo.seqstarts, keyLengths: keyInfo.seqlens,
                    pages: pages, keyCount: pages.physicalKeyCount)
    }
}

/// Key and page information of a paged gappy mask, checked once for every factory.
struct PagedGappyKeysArguments {
    let queryInfo: SeqLenInfo
    let keyInfo: GappySeqInfo
    let pages: PageTable

    /// `kvSeqstarts` has one entry per sequence, an offset inside that sequence's logical space.
    /// (Upstream documents this form but its factory rejects every such list.)
    init(qSeqlen: [Int], kvSeqstarts: [Int], kvSeqlen: [Int], blockTables: [[Int]], pageSize: Int) throws {
        queryInfo = try SeqLenInfo.fromSeqlens(qSeqlen, argument: "qSeqlen")
        try SequenceLengths.checkSameCount(queries: queryInfo.count, keys: kvSeqlen.count, keyArgument: "kvSeqlen")
        pages = try PageTable.validated(blockTables: blockTables, pageSize: pageSize, sequenceCount: queryInfo.count)
        keyInfo = try GappySeqInfo.validated(seqstarts: kvSeqstarts, seqlens: kvSeqlen, limit: pages.capacity,
                                             limitDescription: "the page table's capacity (pages per row × pageSize)")
    }
}

/// An unpaged gappy mask moved onto a page table: row `b` of the pages stands for keys
/// `b·notionalPadding ..< (b + 1)·notionalPadding` of the unpaged key dimension, so a start
/// `s_b` becomes `s_b − b·notionalPadding` inside row `b`.
struct GappyPaging {
    let keyInfo: GappySeqInfo
    let pages: PageTable

    init(queryInfo: SeqLenInfo, keyInfo unpaged: GappySeqInfo, blockTables: [[Int]], pageSize: Int,
         notionalPadding: Int) throws {
        pages = try PageTable.validated(blockTables: blockTables, pageSize: pageSize, sequenceCount: unpaged.count)
        guard notionalPadding >= 0, notionalPadding % pageSize == 0 else {
            throw FMHAError.invalidArgument("notionalPadding", expected: "a multiple of pageSize (\(pageSize)), ≥ 0",
                                            got: "\(notionalPadding)")
        }
        guard notionalPadding.multipliedReportingOverflow(by: unpaged.count).overflow == false else {
            throw FMHAError.invalidArgument("notionalPadding", expected: "a padding whose total fits in Int",
                                            got: "\(notionalPadding)")
        }
        let starts = unpaged.seqstarts.enumerated().map { $1 - $0 * notionalPadding }
        keyInfo = try GappySeqInfo.validated(seqstarts: starts, seqlens: unpaged.seqlens, limit: pages.capacity,
                                             limitDescription: "the page table's capacity (pages per row × pageSize) after subtracting b·notionalPadding")
    }
}

/// `BlockDiagonalGappyKeysMask` over a paged cache.
public struct PagedBlockDiagonalGappyKeysMask: PagedGappyKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: GappySeqInfo
    public let pages: PageTable

    /// Sequences of `qSeqlen` queries against logical keys
    /// `kvSeqstarts[b] ..< kvSeqstarts[b] + kvSeqlen[b]` of page-table row `b`.
    public static func fromSeqlens(qSeqlen: [Int], kvSeqstarts: [Int], kvSeqlen: [Int], blockTables: [[Int]],
                                   pageSize: Int) throws -> Self {
        let arguments = try PagedGappyKeysArguments(qSeqlen: qSeqlen, kvSeqstarts: kvSeqstarts, kvSeqlen: kvSeqlen,
                                                    blockTables: blockTables, pageSize: pageSize)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo, pages: arguments.pages)
    }

    public var band: KeyBand { .full }
}

/// `BlockDiagonalCausalWithOffsetGappyKeysMask` over a paged cache.
public struct PagedBlockDiagonalCausalWithOffsetGappyKeysMask: PagedGappyKeysBias, Hashable {
    public let queryInfo: SeqLenInfo
    public let keyInfo: GappySeqInfo
    public let pages: PageTable

    /// As `PagedBlockDiagonalGappyKeysMask.fromSeqlens`.
    public static func fromSeqlens(qSeqlen: [Int], kvSeqstarts: [Int], kvSeqlen: [Int], blockTables: [[Int]],
                                   pageSize: Int) throws -> Self {
        let arguments = try PagedGappyKeysArguments(qSeqlen: qSeqlen, kvSeqstarts: kvSeqstarts, kvSeqlen: kvSeqlen,
                                                    blockTables: blockTables, pageSize: pageSize)
        return Self(queryInfo: arguments.queryInfo, keyInfo: arguments.keyInfo, pages: arguments.pages)
    }

    public var band: KeyBand { .causal(.bottomRight) }
}
