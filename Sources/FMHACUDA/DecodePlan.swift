import FMHACore

/// How one decoding call (`CUDAFlashDecode`) is cut into thread blocks: tiles of 16 (query, head)
/// rows, each tile's keys cut into splits, one block per (split, head chunk); and the work list and
/// merge list the kernels read (`flash_decode.cu`). Pure arithmetic, unit-tested on the CPU.
struct DecodePlan {
    /// Rows (query, head pairs) of a tile (`FMHA_TILE_ROWS`).
    static let tileRows = 16
    /// Words per entry of `workList` (`FMHA_DECODE_WORDS`).
    static let wordsPerEntry = 7
    /// Words per tile of `mergeList` (`FMHA_MERGE_WORDS`).
    static let wordsPerMerge = 4
    /// The most splits of one tile.
    static let maximumSplits = 128

    /// Query heads packed into one tile: those sharing a K/V head (`sharedHeads`, at most
    /// `tileRows`), times `tileRows / pack` queries.
    let pack: Int
    /// The (batch, group, chunk of `pack` heads) triples the grid walks for every entry.
    let headChunks: Int
    /// Logical keys per split (a multiple of the keys a block takes per round of its warps).
    let splitKeys: Int
    /// Per entry: mask block, first and end query, the split's keys [lo, hi), the tile's first
    /// entry and its number of splits.
    let workList: [Int64]
    /// Per tile with several splits: its first entry, its number of splits, first and end query.
    let mergeList: [Int64]

    /// Work entries (thread blocks per head chunk).
    var entries: Int { workList.count / Self.wordsPerEntry }
    /// Tiles whose splits `fmha_decode_merge` combines.
    var mergedTiles: Int { mergeList.count / Self.wordsPerMerge }

    /// The number of splits for `items` independent tiles × head chunks whose longest key range is
    /// `longestKeys`, on a device that runs `capacity` blocks at once, with splits of at least
    /// `minimumKeys` keys: of the counts that fill the device's waves best (blocks / (waves ·
    /// capacity)), the smallest within 5 % of the best, so that no more partial outputs are
    /// written and merged than the balance needs. 1 when the tiles alone fill it.
    static func splits(items: Int, capacity: Int, longestKeys: Int, minimumKeys: Int) -> Int {
        guard items > 0, capacity > 0, longestKeys > minimumKeys else { return 1 }
        let most = min(maximumSplits, (longestKeys + minimumKeys - 1) / minimumKeys)
        func efficiency(_ splits: Int) -> Double {
            let blocks = items * splits, waves = (blocks + capacity - 1) / capacity
            return Double(blocks) / Double(waves * capacity)
        }
        let best = (1...most).map(efficiency).max() ?? 1
        return (1...most).first { efficiency($0) >= 0.95 * best } ?? 1
    }

    /// The plan for `lowering`'s blocks with `heads` query heads per group, `sharedHeads` of them
    /// sharing each K/V head (1 unless K and V have stride 0 along H), `batchGroups` (batch, group)
    /// pairs, on a device of `capacity` concurrent blocks, a block taking `roundKeys` keys per
    /// round of its warps.
    init(lowering: MaskLowering, heads: Int, sharedHeads: Int, batchGroups: Int, capacity: Int, roundKeys: Int) {
        pack = max(1, min(sharedHeads, Self.tileRows))
        headChunks = batchGroups * ((heads + pack - 1) / pack)
        let tiles = lowering.tiles(rows: Self.tileRows / pack)
        let items = tiles.count * headChunks
        let longest = tiles.lazy.map(\.keys.count).max() ?? 0
        let splits = Self.splits(items: items, capacity: capacity, longestKeys: longest, minimumKeys: 4 * roundKeys)
        let perSplit = (longest + splits - 1) / splits
        splitKeys = max(roundKeys, (perSplit + roundKeys - 1) / roundKeys * roundKeys)
        var work = [Int64](), merges = [Int64]()
        for tile in tiles {
            let first = Int64(work.count / Self.wordsPerEntry)
            let starts = tile.keys.isEmpty ? [tile.keys.lowerBound] : Array(stride(from: tile.keys.lowerBound, to: tile.keys.upperBound, by: splitKeys))
            for start in starts {
                work += [Int64(tile.block), Int64(tile.start), Int64(tile.start + tile.rows), Int64(start),
                         Int64(min(start + splitKeys, tile.keys.upperBound)), first, Int64(starts.count)]
            }
            if starts.count > 1 {
                merges += [first, Int64(starts.count), Int64(tile.start), Int64(tile.start + tile.rows)]
            }
        }
        workList = work
        mergeList = merges
    }
}
