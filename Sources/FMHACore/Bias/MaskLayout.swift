/// The structure every mask-type `AttentionBias` reduces to: a `KeyBand` applied in each block,
/// and, for variable-length (block-diagonal) biases, where each block's queries and keys are.
///
/// This is the compact description a bias gives; `MaskLowering` turns it, once per call, into
/// what operators and kernels read (blocks, per-row key ranges, tiles, page lookups).
public struct MaskLayout: Sendable, Hashable {
    /// The visible keys of each query, relative to its block.
    public let band: KeyBand
    /// The blocks of a variable-length bias; `nil` when every batch element is one block of all
    /// `Mq` queries and all `Mkv` keys.
    public let blocks: BlockLayout?

    /// A layout from its parts.
    init(band: KeyBand, blocks: BlockLayout? = nil) {
        self.band = band
        self.blocks = blocks
    }
}

/// Where each block of a variable-length bias sits in the packed query and key dimensions.
///
/// Block `b` holds queries `queryStarts[b] ..< queryStarts[b + 1]` and the logical keys
/// `keyStarts[b] ..< keyStarts[b] + keyLengths[b]`. Without paging a logical key is the row of K/V
/// with that index. With paging, logical keys are counted inside block `b`'s own address space and
/// `pages` maps them to rows of K/V.
public struct BlockLayout: Sendable, Hashable {
    /// Start of each block's queries, plus the total at the end (`count + 1` entries).
    public let queryStarts: [Int]
    /// Start of each block's keys (logical).
    public let keyStarts: [Int]
    /// Number of keys in each block.
    public let keyLengths: [Int]
    /// The page table of a paged bias.
    public let pages: PageTable?
    /// The number of K/V rows the bias describes: exactly the key dimension for unpaged biases,
    /// and the least one for paged ones (rows past the last page are never visible).
    public let keyCount: Int

    /// A block layout whose arrays a factory has already checked.
    init(queryStarts: [Int], keyStarts: [Int], keyLengths: [Int], pages: PageTable? = nil, keyCount: Int) {
        self.queryStarts = queryStarts
        self.keyStarts = keyStarts
        self.keyLengths = keyLengths
        self.pages = pages
        self.keyCount = keyCount
    }

    /// Number of blocks.
    public var count: Int { keyLengths.count }
    /// Total number of queries, i.e. the query dimension the bias needs.
    public var queryCount: Int { queryStarts.last ?? 0 }
}

/// A paged key/value cache: `blockTables[b][p]` is the physical page that holds keys
/// `p·pageSize ..< (p + 1)·pageSize` of sequence `b`.
public struct PageTable: Sendable, Hashable {
    /// One row of page indices per sequence, all rows of one length (`[batch][page]`).
    public let blockTables: [[Int]]
    /// Keys per page.
    public let pageSize: Int

    /// K/V rows needed to hold every page the tables name: `(max entry + 1) · pageSize` (stored:
    /// validation reads it on every call, and tables of serving caches hold 10^5 entries).
    public let physicalKeyCount: Int

    /// A page table that `validated(...)` has already checked.
    init(blockTables: [[Int]], pageSize: Int) {
        self.blockTables = blockTables
        self.pageSize = pageSize
        physicalKeyCount = ((blockTables.lazy.compactMap { $0.max() }.max() ?? -1) + 1) * pageSize
    }

    /// Pages per sequence.
    public var pagesPerSequence: Int { blockTables.first?.count ?? 0 }
    /// Keys each sequence can hold: `pagesPerSequence · pageSize`.
    public var capacity: Int { pagesPerSequence * pageSize }

    /// Checks a user's page table for `sequenceCount` sequences.
    static func validated(blockTables: [[Int]], pageSize: Int, sequenceCount: Int) throws -> PageTable {
        guard pageSize > 0 else {
            throw FMHAError.invalidArgument("pageSize", expected: "a page size > 0", got: "\(pageSize)")
        }
        guard blockTables.count == sequenceCount else {
            throw FMHAError.invalidArgument("blockTables", expected: "one row per sequence (\(sequenceCount) rows)",
                                            got: "\(blockTables.count) rows")
        }
        let width = blockTables.first?.count ?? 0
        for (row, table) in blockTables.enumerated() {
            guard table.count == width else {
                throw FMHAError.invalidArgument("blockTables[\(row)]", expected: "\(width) pages like row 0",
                                                got: "\(table.count) pages")
            }
            if let bad = table.firstIndex(where: { $0 < 0 }) {
                throw FMHAError.invalidArgument("blockTables[\(row)][\(bad)]", expected: "a page index ≥ 0",
                                                got: "\(table[bad])")
            }
        }
        let largestPage = blockTables.lazy.compactMap { $0.max() }.max() ?? 0
        guard largestPage < Int.max / pageSize - 1, width <= Int.max / pageSize else {
            throw FMHAError.invalidArgument("blockTables", expected: "page indices whose key offsets fit in Int",
                                            got: "page \(largestPage) with page size \(pageSize), \(width) pages per row")
        }
        return PageTable(blockTables: blockTables, pageSize: pageSize)
    }
}
