/// The mask of one call lowered to what every operator and kernel reads: blocks of queries and
/// keys, the visible key range of each query, tiles of queries with the keys they visit, and the
/// page lookup. The mask rules (`KeyBand`'s formula, the block search, the page table) are applied
/// here and nowhere else in Swift; the C kernels receive per-row ranges, and the CUDA kernels
/// receive the blocks, band and pages (`DeviceLowering`), with the device's one copy of the band
/// and page formulas in `prelude.cu`.
///
/// Keys are counted in *logical* positions: without pages a logical key is its K/V row; with
/// pages it is a position in its block's own address space, mapped to a K/V row through that
/// block's page-table row (`physicalKey`). Key ranges are absolute logical positions (the block's
/// key start included).
public struct MaskLowering: Sendable {
    /// Queries `firstQuery ..< firstQuery + queryCount` (packed) and logical keys
    /// `keyStart ..< keyStart + keyCount`; the band applies inside each block.
    public struct Block: Sendable, Hashable {
        /// Packed index of the block's first query.
        public let firstQuery: Int
        /// Number of queries.
        public let queryCount: Int
        /// First logical key.
        public let keyStart: Int
        /// Number of keys.
        public let keyCount: Int
    }

    /// Up to `rows` consecutive queries of one block, with the keys they visit.
    public struct Tile: Sendable, Hashable {
        /// Index into `blocks`.
        public let block: Int
        /// Packed index of the first query.
        public let start: Int
        /// Number of queries (fewer than the tile height at the end of a block).
        public let rows: Int
        /// The logical keys some query of the tile sees: the union of the rows' ranges (empty when
        /// no row sees a key). Kernels visit these and no others.
        public let keys: Range<Int>
        /// The logical keys every row of a full-height tile sees: key tiles inside need no
        /// per-element mask (empty for tiles shorter than the tile height).
        public let inner: Range<Int>
    }

    /// Up to `tileKeys` consecutive logical keys of one block, with the query tiles of that block.
    public struct KeyTile: Sendable, Hashable {
        /// Index into `blocks`.
        public let block: Int
        /// Logical keys.
        public let keys: Range<Int>
        /// Indices into the query tiles of the block's tiles.
        public let queryTiles: Range<Int>
        /// Indices into the query tiles of those that see some of `keys` (consecutive: the
        /// tiles' key unions only move forward); empty when no query sees them.
        public let seenBy: Range<Int>
    }

    /// The visible keys of each query, relative to its block.
    public let band: KeyBand
    /// The blocks: one of all `Mq` queries and `Mkv` keys unless the mask is variable-length.
    public let blocks: [Block]
    /// The page table of a paged mask.
    public let pages: PageTable?

    /// The lowering of `mask` (checked against the sizes by validation) for `queryLength`
    /// queries and `keyLength` keys per batch element.
    public init(_ mask: MaskLayout?, queryLength: Int, keyLength: Int) {
        band = mask?.band ?? .full
        pages = mask?.blocks?.pages
        if let layout = mask?.blocks {
            blocks = (0..<layout.count).map {
                Block(firstQuery: layout.queryStarts[$0], queryCount: layout.queryStarts[$0 + 1] - layout.queryStarts[$0],
                      keyStart: layout.keyStarts[$0], keyCount: layout.keyLengths[$0])
            }
        } else {
            blocks = [Block(firstQuery: 0, queryCount: queryLength, keyStart: 0, keyCount: keyLength)]
        }
    }

    /// The block that holds packed query `query` (`0 ≤ query < Mq`); empty blocks hold none.
    public func block(containing query: Int) -> Int {
        // The last block starting at or before `query`: past any empty blocks that start there too.
        var low = 0, high = blocks.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if blocks[middle].firstQuery <= query { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// The logical keys that packed query `query` of `block` sees (possibly empty).
    @inline(__always)
    public func visibleKeys(query: Int, block: Int) -> Range<Int> {
        let b = blocks[block]
        let local = band.visibleKeys(query: query - b.firstQuery, queryCount: b.queryCount, keyCount: b.keyCount)
        return (b.keyStart + local.lowerBound)..<(b.keyStart + local.upperBound)
    }

    /// The K/V row that holds logical key `logical` of `block`.
    @inline(__always)
    public func physicalKey(block: Int, logical: Int) -> Int {
        guard let pages else { return logical }
        return pages.blockTables[block][logical / pages.pageSize] * pages.pageSize + logical % pages.pageSize
    }

    /// Calls `body` with each K/V row that packed query `query` sees, in increasing logical order.
    @inline(__always)
    public func forEachVisibleKey(query: Int, _ body: (Int) -> Void) {
        let block = block(containing: query)
        for logical in visibleKeys(query: query, block: block) { body(physicalKey(block: block, logical: logical)) }
    }

    /// The visible logical keys `[lo[i], hi[i])` of every packed query `i`, as the C kernels read
    /// them (`row_lo`/`row_hi`); an empty range has `lo == hi`.
    public func rowRanges() -> (lo: [Int64], hi: [Int64]) {
        let count = blocks.last.map { $0.firstQuery + $0.queryCount } ?? 0
        var lo = [Int64](repeating: 0, count: count), hi = [Int64](repeating: 0, count: count)
        for (index, block) in blocks.enumerated() {
            for query in block.firstQuery..<(block.firstQuery + block.queryCount) {
                let keys = visibleKeys(query: query, block: index)
                lo[query] = Int64(keys.lowerBound)
                hi[query] = Int64(keys.upperBound)
            }
        }
        return (lo, hi)
    }

    /// The tiles of `rows` queries of every block, in order (tiles never straddle two blocks).
    ///
    /// Visible ranges only move forward with the query and the queries that see any key are
    /// consecutive, so a tile's union runs from its first seeing row's start to its last seeing
    /// row's end, and its inner range from the last row's start to the first row's end.
    public func tiles(rows: Int) -> [Tile] {
        var tiles = [Tile]()
        for (index, block) in blocks.enumerated() {
            let end = block.firstQuery + block.queryCount
            for start in stride(from: block.firstQuery, to: end, by: rows) {
                let count = min(rows, end - start)
                let queries = start..<(start + count)
                let top = visibleKeys(query: queries.lowerBound, block: index)
                let bottom = visibleKeys(query: queries.upperBound - 1, block: index)
                // The first and last rows that see keys (searched for only when an end row sees none).
                let first = top.isEmpty ? queries.lazy.map { self.visibleKeys(query: $0, block: index) }.first { !$0.isEmpty } : top
                let last = bottom.isEmpty
                    ? queries.reversed().lazy.map { self.visibleKeys(query: $0, block: index) }.first { !$0.isEmpty } : bottom
                let keys = first.flatMap { first in last.map { first.lowerBound..<$0.upperBound } } ?? 0..<0
                let seenByEveryRow = count == rows && !top.isEmpty && !bottom.isEmpty && bottom.lowerBound < top.upperBound
                let inner = seenByEveryRow ? bottom.lowerBound..<top.upperBound : 0..<0
                tiles.append(Tile(block: index, start: start, rows: count, keys: keys, inner: inner))
            }
        }
        return tiles
    }

    /// The key tiles of `tileKeys` keys of every block that has query tiles among `tiles`.
    public func keyTiles(_ tiles: [Tile], tileKeys: Int) -> [KeyTile] {
        var result = [KeyTile](), first = 0
        while first < tiles.count {
            let block = tiles[first].block
            var last = first
            while last < tiles.count, tiles[last].block == block { last += 1 }
            // The tiles that see keys are consecutive, and their unions move forward with them:
            // two pointers sweep the tiles that reach past a key tile's start and those that begin
            // before its end.
            var seeing = first..<last
            while let lower = seeing.first, tiles[lower].keys.isEmpty { seeing = (lower + 1)..<seeing.upperBound }
            while let upper = seeing.last, tiles[upper].keys.isEmpty { seeing = seeing.lowerBound..<upper }
            var low = seeing.lowerBound, high = seeing.lowerBound
            let keys = blocks[block].keyStart..<(blocks[block].keyStart + blocks[block].keyCount)
            for start in stride(from: keys.lowerBound, to: keys.upperBound, by: tileKeys) {
                let tileKeysRange = start..<min(start + tileKeys, keys.upperBound)
                while low < seeing.upperBound, tiles[low].keys.upperBound <= tileKeysRange.lowerBound { low += 1 }
                high = max(high, low)
                while high < seeing.upperBound, tiles[high].keys.lowerBound < tileKeysRange.upperBound { high += 1 }
                result.append(KeyTile(block: block, keys: tileKeysRange, queryTiles: first..<last, seenBy: low..<high))
            }
            first = last
        }
        return result
    }

    /// Whether two blocks (or two pages of one block) can name the same K/V row, so that key
    /// tiles of different blocks must not be processed at the same time.
    public var keyRowsOverlap: Bool {
        let used = blocks.indices.filter { blocks[$0].keyCount > 0 }
        if let pages {
            var seen = Set<Int>()
            for block in used {
                let first = blocks[block].keyStart / pages.pageSize
                let last = (blocks[block].keyStart + blocks[block].keyCount - 1) / pages.pageSize
                for page in first...last where !seen.insert(pages.blockTables[block][page]).inserted { return true }
            }
            return false
        }
        let intervals = used.map { blocks[$0].keyStart..<(blocks[$0].keyStart + blocks[$0].keyCount) }
            .sorted { $0.lowerBound < $1.lowerBound }
        return zip(intervals, intervals.dropFirst()).contains { $1.lowerBound < $0.upperBound }
    }
}
