extension CUDAFlashForward {
    /// One row of the tuning table: the tile shape for `widths` on GPUs whose compute capability's
    /// major is in `majors`, for the plain build, the extras build (tensor bias or dropout) or,
    /// when `extras` is nil, both; `measured` gives the measurement that chose it (or why none did).
    struct TuningEntry: Sendable {
        let majors: ClosedRange<Int>
        let widths: ClosedRange<Int>
        let extras: Bool?
        let tileShape: TileShape
        let measured: String

        /// Whether this row is the one for `width` on compute capability `major`.x with or without `extras`.
        func matches(width: Int, major: Int, extras: Bool) -> Bool {
            majors.contains(major) && widths.contains(width) && (self.extras ?? extras) == extras
        }
    }

    /// Hopper and later (compute capability 9.x and up).
    private static let hopper = 9...Int.max
    /// Below Hopper (Ampere and Ada, 8.x; also an architecture whose major is unknown, 0).
    private static let belowHopper = 0...8

    /// The tuning table: every (major, width, build) has exactly one row. Hopper's plain rows were
    /// chosen by timing `tuningCandidates` (`fmha bench --op cuda-flash-<shape>`) on the H200
    /// (bench/GPU-NOTES.md, TFLOP/s); the rows below Hopper are the spill-free shapes closest to
    /// them, not timed on such a GPU (sm_80's ptxas spills FA2's 4×32-row shape above K = 64); the
    /// extras take 8 warps of 16 rows, their extra registers make the 4-warp shape spill.
    static let tuningTable: [TuningEntry] = [
        TuningEntry(majors: hopper, widths: 16...64, extras: false, tileShape: fourWarpsOf32RowsWideTiles,
                    measured: "H200 bf16 K = 64 4,4096,32 (step 10): w4x2n128qb2 273.8, w4x2n64qb2 234.9, w8x1n128qb1 188.2, "
                        + "w8x1n64qb1 166.0; causal 232.1 / 206.2 / 167.4 / 149.0 (FA2's 128-key tiles)"),
        TuningEntry(majors: hopper, widths: 65...128, extras: false, tileShape: fourWarpsOf32Rows,
                    measured: "H200 bf16 K = 128 M = 8192 (steps 6-7): w4x2n64qb2 177.0, w8x1n64b1 149.3, w8x1n64qb1 146.3, "
                        + "w8x1n32qb1 122.8, w4x1n64qb2 121.1 (FA2's 4 warps of 32 rows)"),
        TuningEntry(majors: hopper, widths: 129...256, extras: false, tileShape: eightWarpsOf16RowsTwoStages,
                    measured: "H200 K = 256 M = 4096: w8x1n64qb1 159.8, w8x1n32qb1 140.5, w4x2n64qb2 67.0 (steps 6-7); "
                        + "its two-stage form w8x1n64qb1p 239.6 -> 261.1 bf16 (step 11); as the entry K = 256 276.1/269.7, "
                        + "K = 192 246.9/254.1 bf16/f16 (step 13)"),
        TuningEntry(majors: hopper, widths: 16...128, extras: true, tileShape: eightWarpsOf16Rows,
                    measured: "no other shape timed: the extras' registers make w4x2n64qb2 spill above K = 64 (K = 96: 140 bytes, "
                        + "K = 128: 704, NVRTC sm_90); H200 bf16 2,4096,16,128: tensor bias 100.3, dropout 0.1 71.9"),
        TuningEntry(majors: hopper, widths: 129...256, extras: true, tileShape: eightWarpsOf16RowsSmallTiles,
                    measured: "no other shape timed: 8 warps of 16 rows (the 4-warp shape spills), 32-key tiles above K = 128 "
                        + "(no measurement written down)"),
        TuningEntry(majors: belowHopper, widths: 16...64, extras: false, tileShape: fourWarpsOf32Rows,
                    measured: "not timed on such a GPU: Hopper's K = 128 shape, spill-free on sm_80 up to K = 64"),
        TuningEntry(majors: belowHopper, widths: 65...128, extras: false, tileShape: eightWarpsOf16Rows,
                    measured: "not timed on such a GPU: sm_80's ptxas spills w4x2n64qb2 above K = 64; the closest spill-free shape"),
        TuningEntry(majors: belowHopper, widths: 129...224, extras: false, tileShape: eightWarpsOf16RowsSmallTiles,
                    measured: "not timed on such a GPU: 64-key tiles overflow sm_86/sm_89's 99 KiB per block from K = 192"),
        TuningEntry(majors: belowHopper, widths: 16...128, extras: true, tileShape: eightWarpsOf16Rows,
                    measured: "not timed on such a GPU: Hopper's extras shape"),
        TuningEntry(majors: belowHopper, widths: 129...224, extras: true, tileShape: eightWarpsOf16RowsSmallTiles,
                    measured: "not timed on such a GPU: Hopper's extras shape"),
        TuningEntry(majors: belowHopper, widths: 225...256, extras: nil, tileShape: eightWarpsOf16RowsTinyTiles,
                    measured: "not timed on such a GPU: sm_86/sm_89 give a block 99 KiB of shared memory, which 32-key tiles, "
                        + "the Q tile and the row ranges overflow by 1 KiB at K = 256"),
    ]

    /// FA2's shape: 4 warps of 2 × 16 rows, 64-key tiles, Q in shared memory, 2 blocks per SM.
    private static let fourWarpsOf32Rows = TileShape(warps: 4, warpTiles: 2, keys: 64, queryInShared: true, minimumBlocks: 2)
    /// FA2's shape with 128-key tiles.
    private static let fourWarpsOf32RowsWideTiles = TileShape(warps: 4, warpTiles: 2, keys: 128, queryInShared: true, minimumBlocks: 2)
    /// 8 warps of 16 rows, 64-key tiles, Q in shared memory, 1 block per SM.
    private static let eightWarpsOf16Rows = TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1)
    /// 8 warps of 16 rows with 32-key tiles.
    private static let eightWarpsOf16RowsSmallTiles = TileShape(warps: 8, warpTiles: 1, keys: 32, queryInShared: true, minimumBlocks: 1)
    /// 8 warps of 16 rows with 16-key tiles.
    private static let eightWarpsOf16RowsTinyTiles = TileShape(warps: 8, warpTiles: 1, keys: 16, queryInShared: true, minimumBlocks: 1)
    /// 8 warps of 16 rows, 64-key tiles in two K/V stages.
    private static let eightWarpsOf16RowsTwoStages = TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1,
                                                               stages: 2)

    /// The tuning table's tile shape for `width` (one of `widths`) on a GPU of compute capability
    /// `major`.x, with or without `extras` (tensor bias or dropout).
    static func tileShape(width: Int, major: Int, extras: Bool) -> TileShape {
        guard let entry = tuningTable.first(where: { $0.matches(width: width, major: major, extras: extras) }) else {
            preconditionFailure("the tuning table has no row for width \(width), sm_\(major)x, extras \(extras)")
        }
        return entry.tileShape
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
