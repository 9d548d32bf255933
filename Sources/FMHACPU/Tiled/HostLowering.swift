import FMHACore

/// A call's `MaskLowering` in the form the C kernels read: tiles of `tileRows` queries, every
/// query's visible logical keys as `row_lo`/`row_hi` arrays, and the page-table rows as Int64.
struct HostLowering: Sendable {
    /// The lowering it serves.
    let lowering: MaskLowering
    /// The query tiles, in block order.
    let tiles: [MaskLowering.Tile]
    /// Visible logical keys `[lo[i], hi[i])` of each packed query `i`.
    private let rowLo: [Int64], rowHi: [Int64]
    /// Page-table rows as Int64, one per block, when paged.
    private let pageRows: [[Int64]]?
    /// (query, key) pairs the tiles visit in one head: Σ rows × keys over the tiles.
    let visitedPairs: Int

    /// The kernels' view of `lowering` with tiles of `tileRows` queries.
    init(_ lowering: MaskLowering, tileRows: Int) {
        self.lowering = lowering
        tiles = lowering.tiles(rows: tileRows)
        let (lo, hi) = lowering.rowRanges()
        // (One unused entry when there are no queries, so that the arrays have an address.)
        (rowLo, rowHi) = lo.isEmpty ? ([0], [0]) : (lo, hi)
        pageRows = lowering.pages.map { $0.blockTables.map { $0.map(Int64.init) } }
        visitedPairs = tiles.reduce(0) { $0 + $1.rows * $1.keys.count }
    }

    /// The threads for a pass over `heads` heads of `products` multiply-adds per visited (query,
    /// key) pair: `CPUThreads.count(forFLOPs:)`.
    func threads(heads: Int, products: Int) -> Int {
        CPUThreads.count(forFLOPs: 2 * Double(heads) * Double(visitedPairs) * Double(products))
    }

    /// Keys per page (1 when unpaged).
    var pageSize: Int { lowering.pages?.pageSize ?? 1 }

    /// Calls `body` with the first elements of the `row_lo` and `row_hi` arrays (index them by
    /// packed query).
    func withRowRanges<Result>(_ body: (UnsafePointer<Int64>, UnsafePointer<Int64>) throws -> Result) rethrows -> Result {
        try rowLo.withUnsafeBufferPointer { lo in
            try rowHi.withUnsafeBufferPointer { hi in
                try body(lo.baseAddress!, hi.baseAddress!)
            }
        }
    }

    /// Calls `body` with the page-table row of `block`, or `nil` when unpaged.
    func withPageRow<Result>(_ block: Int, _ body: (UnsafePointer<Int64>?) -> Result) -> Result {
        guard let row = pageRows?[block] else { return body(nil) }
        return row.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
