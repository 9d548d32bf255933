import FMHACore

/// The one encoding of every bias's mask that the CUDA kernels share, uploaded once per call as
/// 64-bit integers: anchor (1 for bottom-right), left and right window (-1 for unbounded), block
/// count (0: one block of all queries and keys), page size (0: unpaged), pages per row, then the
/// blocks' query starts (count + 1), key starts, key lengths and the page tables row by row.
/// Kernels read it as `reference_forward.cu` documents.
public enum DeviceMask {
    /// The encoding of `layout` (`nil`: no mask, every key visible).
    public static func encode(_ layout: MaskLayout?) -> [Int64] {
        guard let layout else { return [0, -1, -1, 0, 0, 0, 0] }
        let band = layout.band
        var words: [Int64] = [band.anchor == .bottomRight ? 1 : 0, Int64(band.left ?? -1), Int64(band.right ?? -1)]
        guard let blocks = layout.blocks else { return words + [0, 0, 0, 0] }
        let pages = blocks.pages
        words += [Int64(blocks.count), Int64(pages?.pageSize ?? 0), Int64(pages?.pagesPerSequence ?? 0)]
        words += blocks.queryStarts.map(Int64.init) + blocks.keyStarts.map(Int64.init) + blocks.keyLengths.map(Int64.init)
        words += (pages?.blockTables.flatMap { $0 } ?? []).map(Int64.init)
        return words
    }
}
