extension CUDAFlashForward {
    /// The tuning table: the tile shape used for each width on a GPU of compute capability
    /// `major`.x. Hopper's entries were chosen by timing the candidates (`tuningCandidates`,
    /// `fmha bench --op cuda-flash-<shape>`) on the H200 (bench/GPU-NOTES.md: 128-key tiles up to
    /// K = 64, as FlashAttention-2 does, then 64-key tiles, and above K = 128 8 warps of 16 rows
    /// with two K/V stages); the others are the
    /// spill-free shapes closest to them (sm_80's ptxas spills FA2's 4×32-row shape above K = 64),
    /// not measured on such a GPU.
    /// With `extras` (tensor bias or dropout), 8 warps of 16 rows everywhere: the extra registers
    /// make the 4-warp shape spill. Below Hopper, width 256 takes 16-key tiles: sm_86 and sm_89
    /// give a block 99 KiB of shared memory, which 32-key tiles, the Q tile and the row ranges
    /// overflow by 1 KiB.
    static func tileShape(width: Int, major: Int, extras: Bool) -> TileShape {
        let fourWarpsOf32Rows = TileShape(warps: 4, warpTiles: 2, keys: 64, queryInShared: true, minimumBlocks: 2)
        let fourWarpsOf32RowsWideTiles = TileShape(warps: 4, warpTiles: 2, keys: 128, queryInShared: true, minimumBlocks: 2)
        let eightWarpsOf16Rows = TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1)
        let eightWarpsOf16RowsSmallTiles = TileShape(warps: 8, warpTiles: 1, keys: 32, queryInShared: true, minimumBlocks: 1)
        let eightWarpsOf16RowsTwoStages = TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1, stages: 2)
        if major < 9, width > 224 { return TileShape(warps: 8, warpTiles: 1, keys: 16, queryInShared: true, minimumBlocks: 1) }
        if extras { return width <= 128 ? eightWarpsOf16Rows : eightWarpsOf16RowsSmallTiles }
        if major >= 9 { return width <= 64 ? fourWarpsOf32RowsWideTiles : width <= 128 ? fourWarpsOf32Rows : eightWarpsOf16RowsTwoStages }
        switch width {
        case ...64: return fourWarpsOf32Rows
        case ...128: return eightWarpsOf16Rows
        default: return eightWarpsOf16RowsSmallTiles
        }
    }

    /// Tile shapes to time against the table's (the forward variants `cuda-flash-<shape name>`).
    public static let tuningCandidates = [
        TileShape(warps: 4, warpTiles: 2, keys: 32, queryInShared: false, minimumBlocks: 2),
        TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: false, minimumBlocks: 1),
        TileShape(warps: 4, warpTiles: 2, keys: 32, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 4, warpTiles: 2, keys: 64, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1),
        TileShape(warps: 8, warpTiles: 1, keys: 32, queryInShared: true, minimumBlocks: 1),
        TileShape(warps: 4, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 4, warpTiles: 2, keys: 128, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 8, warpTiles: 1, keys: 128, queryInShared: true, minimumBlocks: 1),
        TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1, stages: 2),
    ]
}
