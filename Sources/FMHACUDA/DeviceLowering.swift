import FMHACore

/// A call's `MaskLowering` as the CUDA kernels read it (prelude.cu's `fmha::Lowering`), uploaded
/// once per call as 64-bit integers, and the flash forward's work list of tiles.
enum DeviceLowering {
    /// Anchor (1 for bottom-right), left and right window (-1 for unbounded), block count, page
    /// size (0: unpaged), pages per row; per block its first query, query count, key start and key
    /// count; the page tables row by row; and with `rowBlocks` (kernels with a thread per query
    /// row) and several blocks, the block of every packed query.
    static func words(_ lowering: MaskLowering, rowBlocks: Bool) -> [Int64] {
        let band = lowering.band, pages = lowering.pages, blocks = lowering.blocks
        let rowWords = rowBlocks && blocks.count > 1 ? (blocks.last.map { $0.firstQuery + $0.queryCount } ?? 0) : 0
        var words = [Int64]()
        // (Reserved once, the pages written in place: serving caches have 10^5 page entries a call.)
        words.reserveCapacity(6 + 4 * blocks.count + (pages.map { $0.blockTables.count * $0.pagesPerSequence } ?? 0) + rowWords)
        words += [band.anchor == .bottomRight ? 1 : 0, Int64(band.left ?? -1), Int64(band.right ?? -1),
                  Int64(blocks.count), Int64(pages?.pageSize ?? 0), Int64(pages?.pagesPerSequence ?? 0)]
        for block in blocks {
            words.append(Int64(block.firstQuery))
            words.append(Int64(block.queryCount))
            words.append(Int64(block.keyStart))
            words.append(Int64(block.keyCount))
        }
        if let pages {
            var next = words.count
            words.append(contentsOf: repeatElement(0, count: pages.blockTables.count * pages.pagesPerSequence))
            words.withUnsafeMutableBufferPointer { buffer in
                for row in pages.blockTables {
                    for page in row {
                        buffer[next] = Int64(page)
                        next += 1
                    }
                }
            }
        }
        if rowWords > 0 {
            for (index, block) in blocks.enumerated() {
                for _ in 0..<block.queryCount { words.append(Int64(index)) }
            }
        }
        return words
    }

    /// Words per tile of `workList` (`FMHA_WORK_WORDS` in flash_forward.cu).
    static let wordsPerTile = 7

    /// Per tile: its block, first and end query, the logical keys some row sees and those every
    /// row sees (`MaskLowering.Tile`).
    static func workList(_ tiles: [MaskLowering.Tile]) -> [Int64] {
        var words = [Int64]()
        words.reserveCapacity(tiles.count * wordsPerTile)
        for tile in tiles {
            words += [Int64(tile.block), Int64(tile.start), Int64(tile.start + tile.rows), Int64(tile.keys.lowerBound),
                      Int64(tile.keys.upperBound), Int64(tile.inner.lowerBound), Int64(tile.inner.upperBound)]
        }
        return words
    }

    /// Words per key tile of `keyWorkList` (`FMHA_KEY_WORK_WORDS` in flash_backward.cu).
    static let wordsPerKeyTile = 5

    /// Per key tile: its block, first and end logical key, and the first and end query of the
    /// query tiles that see some of its keys (`MaskLowering.KeyTile.seenBy`; equal when none do).
    static func keyWorkList(_ keyTiles: [MaskLowering.KeyTile], tiles: [MaskLowering.Tile]) -> [Int64] {
        var words = [Int64]()
        words.reserveCapacity(keyTiles.count * wordsPerKeyTile)
        for keyTile in keyTiles {
            let seen = keyTile.seenBy
            let queries = seen.isEmpty ? 0..<0 : tiles[seen.lowerBound].start..<(tiles[seen.upperBound - 1].start + tiles[seen.upperBound - 1].rows)
            words += [Int64(keyTile.block), Int64(keyTile.keys.lowerBound), Int64(keyTile.keys.upperBound),
                      Int64(queries.lowerBound), Int64(queries.upperBound)]
        }
        return words
    }
}
