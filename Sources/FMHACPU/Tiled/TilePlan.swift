import FMHACore

/// How the tiled CPU operators split one call's queries into tiles, and which keys each query
/// of a tile sees, from the bias's `MaskLayout` (never a materialized mask).
///
/// Keys are counted in *logical* positions: without pages a logical key is its K/V row; with
/// pages it is a position in its block's own address space, mapped to a K/V row through that
/// block's page-table row.
struct TilePlan: Sendable {
    /// Up to `tileRows` consecutive queries of one block.
    struct Tile: Sendable {
        /// Block of a variable-length bias (0 otherwise).
        var block: Int
        /// Packed index of the first query.
        var start: Int
        /// Number of queries.
        var rows: Int
    }

    let tiles: [Tile]
    private let band: KeyBand
    private let blocks: BlockLayout?
    private let queryLength: Int
    private let keyLength: Int
    /// Page-table rows as Int64, one per block, for the kernels.
    let pageRows: [[Int64]]?
    /// Keys per page, when paged.
    let pageSize: Int

    init(mask: MaskLayout?, queryLength: Int, keyLength: Int, tileRows: Int) {
        band = mask?.band ?? .full
        blocks = mask?.blocks
        self.queryLength = queryLength
        self.keyLength = keyLength
        pageRows = blocks?.pages.map { $0.blockTables.map { $0.map(Int64.init) } }
        pageSize = blocks?.pages?.pageSize ?? 1
        var tiles = [Tile]()
        let blockStarts = blocks?.queryStarts ?? [0, queryLength]
        for block in 0..<(blockStarts.count - 1) {
            var start = blockStarts[block]
            while start < blockStarts[block + 1] {
                let rows = min(tileRows, blockStarts[block + 1] - start)
                tiles.append(Tile(block: block, start: start, rows: rows))
                start += rows
            }
        }
        self.tiles = tiles
    }

    /// Up to `tileKeys` consecutive logical keys of one block, with the query tiles of that block.
    struct KeyTile: Sendable {
        var block: Int
        var keys: Range<Int64>
        /// Indices into `tiles` of the block's query tiles.
        var queryTiles: Range<Int>
    }

    /// The key tiles of every block that has queries.
    func keyTiles(tileKeys: Int) -> [KeyTile] {
        var result = [KeyTile](), first = 0
        while first < tiles.count {
            let block = tiles[first].block
            var last = first
            while last < tiles.count, tiles[last].block == block { last += 1 }
            let start = Int64(blocks?.keyStarts[block] ?? 0), count = Int64(blocks?.keyLengths[block] ?? keyLength)
            var key = start
            while key < start + count {
                let end = min(key + Int64(tileKeys), start + count)
                result.append(KeyTile(block: block, keys: key..<end, queryTiles: first..<last))
                key = end
            }
            first = last
        }
        return result
    }

    /// Whether two blocks (or two pages of one block) can name the same K/V row, so that key
    /// tiles of different blocks must not be processed at the same time.
    var keyRowsOverlap: Bool {
        guard let blocks else { return false }
        if let pages = blocks.pages {
            var seen = Set<Int>()
            for block in 0..<blocks.count where blocks.keyLengths[block] > 0 {
                let first = blocks.keyStarts[block] / pages.pageSize
                let last = (blocks.keyStarts[block] + blocks.keyLengths[block] - 1) / pages.pageSize
                for page in first...last where !seen.insert(pages.blockTables[block][page]).inserted { return true }
            }
            return false
        }
        let intervals = (0..<blocks.count).filter { blocks.keyLengths[$0] > 0 }
            .map { blocks.keyStarts[$0]..<(blocks.keyStarts[$0] + blocks.keyLengths[$0]) }.sorted { $0.lowerBound < $1.lowerBound }
        return zip(intervals, intervals.dropFirst()).contains { $1.lowerBound < $0.upperBound }
    }

    /// Writes the logical key range `[lo, hi)` each row of `tile` sees and returns their union
    /// (empty when no row sees a key).
    func keyRanges(_ tile: Tile, lo: UnsafeMutablePointer<Int64>, hi: UnsafeMutablePointer<Int64>) -> Range<Int64> {
        var begin = Int64.max, end = Int64.min
        let firstQuery = blocks?.queryStarts[tile.block] ?? 0
        let queryCount = blocks.map { $0.queryStarts[tile.block + 1] - firstQuery } ?? queryLength
        let keyCount = blocks?.keyLengths[tile.block] ?? keyLength
        let keyStart = Int64(blocks?.keyStarts[tile.block] ?? 0)
        for row in 0..<tile.rows {
            let visible = band.visibleKeys(query: tile.start + row - firstQuery, queryCount: queryCount, keyCount: keyCount)
            lo[row] = keyStart + Int64(visible.lowerBound)
            hi[row] = keyStart + Int64(visible.upperBound)
            if !visible.isEmpty {
                begin = min(begin, lo[row])
                end = max(end, hi[row])
            }
        }
        return begin < end ? begin..<end : 0..<0
    }
}
