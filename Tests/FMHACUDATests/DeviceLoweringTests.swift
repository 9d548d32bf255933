import FMHATestSupport
import FMHACore
import Testing
@testable import FMHACUDA

/// The device form of the mask lowering: the words prelude.cu's `fmha::Lowering` reads, and the
/// flash forward's work list.
@Suite struct DeviceLoweringTests {
    func words(_ bias: (any AttentionBias)?, queries: Int = 5, keys: Int = 7, rowBlocks: Bool = false) -> [Int64] {
        DeviceLowering.words(MaskLowering(bias?.maskLayout, queryLength: queries, keyLength: keys), rowBlocks: rowBlocks)
    }

    @Test func noMaskIsOneBlockOfEveryKey() {
        #expect(words(nil) == [0, -1, -1, 1, 0, 0] + [0, 5, 0, 7])
        #expect(words(nil, rowBlocks: true) == [0, -1, -1, 1, 0, 0] + [0, 5, 0, 7], "one block: no row table")
    }

    @Test func denseMasksCarryTheirBand() throws {
        #expect(words(LowerTriangularMask()) == [0, -1, 0, 1, 0, 0] + [0, 5, 0, 7])
        #expect(words(try LocalAttentionFromBottomRightMask(windowLeft: 2, windowRight: 3)) == [1, 2, 3, 1, 0, 0] + [0, 5, 0, 7])
        #expect(words(try LowerTriangularFromBottomRightMask().makeLocalAttention(windowSize: 4))
                == [1, 3, 0, 1, 0, 0] + [0, 5, 0, 7])
    }

    @Test func blocksPagesAndRowBlocksFollowTheHeader() throws {
        let padded = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 0, 3], kvPadding: 8, kvSeqlen: [5, 1, 7])
        #expect(words(padded, keys: 24) == [1, -1, 0, 3, 0, 0] + [0, 2, 0, 5] + [2, 0, 8, 1] + [2, 3, 16, 7])
        #expect(words(padded, keys: 24, rowBlocks: true)
                == [1, -1, 0, 3, 0, 0] + [0, 2, 0, 5] + [2, 0, 8, 1] + [2, 3, 16, 7] + [0, 0, 2, 2, 2])
        let paged = try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 2], kvSeqstarts: [1, 0], kvSeqlen: [3, 4],
                                                                   blockTables: [[4, 2], [0, 1]], pageSize: 4)
        #expect(words(paged, queries: 3, keys: 20)
                == [0, -1, -1, 2, 4, 2] + [0, 1, 1, 3] + [1, 2, 0, 4] + [4, 2, 0, 1])
    }

    @Test func workListHasSevenWordsPerTile() throws {
        // Causal over 130 queries and keys, tiles of 64: every row of a tile sees keys up to its first
        // row's diagonal; the last tile is short, so it has no inner range.
        let lowering = MaskLowering(LowerTriangularMask().maskLayout, queryLength: 130, keyLength: 130)
        #expect(DeviceLowering.workList(lowering.tiles(rows: 64))
                == [0, 0, 64, 0, 64, 0, 1] + [0, 64, 128, 0, 128, 0, 65] + [0, 128, 130, 0, 130, 0, 0])
        #expect(DeviceLowering.wordsPerTile == 7)
        // Empty blocks get no tile; tiles never straddle blocks.
        let blocks = try BlockDiagonalMask.fromSeqlens(qSeqlen: [0, 65, 0, 1, 0], kvSeqlen: [2, 3, 0, 4, 1])
        let tiles = MaskLowering(blocks.maskLayout, queryLength: 66, keyLength: 10).tiles(rows: 64)
        #expect(tiles.map(\.block) == [1, 1, 3] && tiles.map(\.start) == [0, 64, 65] && tiles.map(\.rows) == [64, 1, 1])
        #expect(tiles.map(\.keys) == [2..<5, 2..<5, 5..<9] && tiles.map(\.inner) == [2..<5, 0..<0, 0..<0])
    }
}
