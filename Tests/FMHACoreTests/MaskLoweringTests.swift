import Testing
import FMHATestSupport
@testable import FMHACore

/// `MaskLowering`, the one place the mask rules are applied, against the independent rules of
/// the test-support mask oracle (`ReferenceMask`, `KeyGeometry`): per-row ranges and page lookups
/// give exactly the columns the formula allows, and every tile height's tiles visit the union of
/// their rows' ranges and skip per-element masking only where every row sees every key.
@Suite struct MaskLoweringTests {
    @Test(arguments: BiasKind.allCases)
    func rowsAndTilesMatchTheFormula(_ kind: BiasKind) throws {
        for testCase in try PropertyCase.cases(kind) where testCase.bias.maskLayout != nil {
            let lowering = MaskLowering(testCase.bias.maskLayout, queryLength: testCase.rows, keyLength: testCase.columns)
            let reference = testCase.reference
            let expected = ReferenceMask(queryLengths: reference.queryLengths, keys: reference.keys, rule: reference.rule,
                                         additive: nil).plane(rows: testCase.rows, columns: testCase.columns)
            var ranges = [Range<Int>]()
            for row in 0..<testCase.rows {
                let block = lowering.block(containing: row)
                let keys = lowering.visibleKeys(query: row, block: block)
                ranges.append(keys)
                let columns = Set(keys.map { lowering.physicalKey(block: block, logical: $0) })
                let allowed = Set((0..<testCase.columns).filter { expected[row * testCase.columns + $0] == 0 })
                #expect(columns == allowed && columns.count == keys.count, "\(testCase.summary): row \(row)")
            }
            let (lo, hi) = lowering.rowRanges()
            #expect(lo.map(Int.init) == ranges.map(\.lowerBound) && hi.map(Int.init) == ranges.map(\.upperBound),
                    "\(testCase.summary)")
            for height in [1, 7, 16, 64] {
                let tiles = lowering.tiles(rows: height)
                #expect(tiles.flatMap { $0.start..<($0.start + $0.rows) } == Array(0..<testCase.rows), "\(testCase.summary)")
                for tile in tiles {
                    let rows = ranges[tile.start..<(tile.start + tile.rows)]
                    #expect(rows.indices.allSatisfy { lowering.block(containing: $0) == tile.block || ranges[$0].isEmpty })
                    let seeing = rows.filter { !$0.isEmpty }
                    let union = seeing.isEmpty ? 0..<0 : seeing.map(\.lowerBound).min()!..<seeing.map(\.upperBound).max()!
                    #expect(tile.keys == union, "\(testCase.summary): tile at \(tile.start) of \(height)")
                    // Every key of the inner range is seen by every row; it is empty unless the tile is full.
                    #expect(tile.inner.isEmpty || (tile.rows == height && rows.allSatisfy {
                        $0.lowerBound <= tile.inner.lowerBound && tile.inner.upperBound <= $0.upperBound
                    }), "\(testCase.summary): inner of tile at \(tile.start)")
                    if tile.rows == height, seeing.count == rows.count {
                        let common = rows.map(\.lowerBound).max()!..<max(rows.map(\.lowerBound).max()!, rows.map(\.upperBound).min()!)
                        #expect(tile.inner == common || (tile.inner.isEmpty && common.isEmpty), "\(testCase.summary)")
                    }
                }
                // Key tiles: each block's keys in order, seen by exactly the query tiles whose rows see one of them.
                for tileKeys in [1, 16, 64] {
                    for keyTile in lowering.keyTiles(tiles, tileKeys: tileKeys) {
                        let seeing = tiles.indices.filter { index in
                            let tile = tiles[index]
                            return tile.block == keyTile.block && ranges[tile.start..<(tile.start + tile.rows)].contains { $0.overlaps(keyTile.keys) }
                        }
                        #expect(Array(keyTile.seenBy) == seeing, "\(testCase.summary): key tile \(keyTile.keys) of \(tileKeys), tiles of \(height)")
                    }
                }
            }
        }
    }

    @Test func noMaskIsOneFullBlock() {
        let lowering = MaskLowering(nil, queryLength: 33, keyLength: 7)
        #expect(lowering.band == .full && lowering.blocks == [MaskLowering.Block(firstQuery: 0, queryCount: 33, keyStart: 0, keyCount: 7)])
        #expect(lowering.tiles(rows: 16).map(\.keys) == [0..<7, 0..<7, 0..<7])
        #expect(lowering.tiles(rows: 16).map(\.inner) == [0..<7, 0..<7, 0..<0])
        #expect(MaskLowering(nil, queryLength: 0, keyLength: 7).tiles(rows: 16).isEmpty)
    }
}
