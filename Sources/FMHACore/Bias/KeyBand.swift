/// Which keys of its block a query may see: a band around a diagonal.
///
/// Inside a block of `nq` queries and `nk` keys, query `i` sees key `j` (both local to the block)
/// iff `0 ≤ j < nk` and `i + s − left ≤ j ≤ i + s + right`, where the shift `s` is 0 for a
/// top-left diagonal and `nk − nq` for a bottom-right one, and a `nil` bound is unbounded. Every
/// `AttentionBias` mask is such a band applied per block; `MaskLayout` names the blocks.
public struct KeyBand: Sendable, Hashable {
    /// Where the diagonal starts.
    public enum Anchor: Sendable, Hashable {
        /// Query `i` is aligned with key `i`.
        case topLeft
        /// The last query is aligned with the last key (`s = nk − nq`).
        case bottomRight
    }

    /// Where the diagonal starts.
    public let anchor: Anchor
    /// How many keys before the diagonal are visible; `nil` for all of them.
    public let left: Int?
    /// How many keys after the diagonal are visible; `nil` for all of them.
    public let right: Int?

    /// A band; factories have already checked that bounds are ≥ 0.
    init(anchor: Anchor, left: Int?, right: Int?) {
        self.anchor = anchor
        self.left = left
        self.right = right
    }

    /// Every key of the block is visible.
    public static let full = KeyBand(anchor: .topLeft, left: nil, right: nil)
    /// Causal: keys up to the diagonal.
    public static func causal(_ anchor: Anchor) -> KeyBand { KeyBand(anchor: anchor, left: nil, right: 0) }
    /// Causal sliding window: the diagonal key and the `windowSize − 1` keys before it.
    public static func causalWindow(_ anchor: Anchor, windowSize: Int) -> KeyBand {
        KeyBand(anchor: anchor, left: windowSize - 1, right: 0)
    }

    /// The keys query `query` may see, as a (possibly empty) range of local key indices.
    public func visibleKeys(query: Int, queryCount: Int, keyCount: Int) -> Range<Int> {
        let diagonal = query + (anchor == .bottomRight ? keyCount - queryCount : 0)
        // Bounds wider than the block act as unbounded; clamping keeps the arithmetic in range.
        let reach = queryCount + keyCount
        let lower = left.map { max(0, diagonal - min(max($0, -reach), reach)) } ?? 0
        let upper = right.map { min(keyCount, diagonal + min(max($0, -reach), reach) + 1) } ?? keyCount
        return lower < upper ? lower..<upper : lower..<lower
    }
}
