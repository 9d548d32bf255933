import FMHACore

/// The §3.3 masking rule inside one block, written straight from the reference table: may local
/// query `i` of a block with `nq` queries see its local key `j` of `nk`? (`s = nk − nq`.)
public enum BlockRule: Sendable, CustomStringConvertible {
    /// Every key.
    case all
    /// `j ≤ i`.
    case causalTopLeft
    /// `j ≤ i + s`.
    case causalBottomRight
    /// `i − w + 1 ≤ j ≤ i`.
    case causalWindowTopLeft(windowSize: Int)
    /// `i + s − w + 1 ≤ j ≤ i + s`.
    case causalWindowBottomRight(windowSize: Int)
    /// `i + s − left ≤ j ≤ i + s + right`.
    case windowBottomRight(left: Int, right: Int)

    /// Whether local query `i` of `nq` may see local key `j` of `nk`.
    public func allows(query i: Int, key j: Int, queryCount nq: Int, keyCount nk: Int) -> Bool {
        let s = nk - nq
        switch self {
        case .all: return true
        case .causalTopLeft: return j <= i
        case .causalBottomRight: return j <= i + s
        case .causalWindowTopLeft(let w): return i - w + 1 <= j && j <= i
        case .causalWindowBottomRight(let w): return i + s - w + 1 <= j && j <= i + s
        case .windowBottomRight(let left, let right): return i + s - left <= j && j <= i + s + right
        }
    }

    public var description: String {
        switch self {
        case .all: "all"
        case .causalTopLeft: "j ≤ i"
        case .causalBottomRight: "j ≤ i+s"
        case .causalWindowTopLeft(let w): "i−\(w)+1 ≤ j ≤ i"
        case .causalWindowBottomRight(let w): "i+s−\(w)+1 ≤ j ≤ i+s"
        case .windowBottomRight(let left, let right): "i+s−\(left) ≤ j ≤ i+s+\(right)"
        }
    }
}

/// Which column of the materialized bias holds which key of a block, per §3.3 (independent of
/// the sources' `MaskLayout`).
public enum KeyGeometry: Sendable, CustomStringConvertible {
    /// One block of every query and every column.
    case dense
    /// Key blocks packed one after another.
    case packed(lengths: [Int])
    /// Key block `b` is `b·padding ..< b·padding + lengths[b]`.
    case padded(padding: Int, lengths: [Int])
    /// Key block `b` is `starts[b] ..< starts[b] + lengths[b]`.
    case gappy(starts: [Int], lengths: [Int])
    /// Block `b` uses logical keys `starts[b] ..< starts[b] + lengths[b]` of its own row, and
    /// logical key `p` lives in column `tables[b][p / pageSize]·pageSize + p % pageSize`.
    case paged(starts: [Int], lengths: [Int], tables: [[Int]], pageSize: Int)

    /// The local key of block `block` in column `column` (`nil` if the column holds none of its
    /// keys), and the block's number of keys.
    public func localKey(column: Int, block: Int, columns: Int) -> (key: Int?, keyCount: Int) {
        func within(_ key: Int, _ count: Int) -> (key: Int?, keyCount: Int) {
            (key >= 0 && key < count ? key : nil, count)
        }
        switch self {
        case .dense:
            return (column, columns)
        case .packed(let lengths):
            return within(column - lengths.prefix(block).reduce(0, +), lengths[block])
        case .padded(let padding, let lengths):
            return within(column - block * padding, lengths[block])
        case .gappy(let starts, let lengths):
            return within(column - starts[block], lengths[block])
        case .paged(let starts, let lengths, let tables, let pageSize):
            let page = column / pageSize, offset = column % pageSize
            let logical = tables[block].indices.filter { tables[block][$0] == page }.map { $0 * pageSize + offset }
            let key = logical.map { $0 - starts[block] }.first { $0 >= 0 && $0 < lengths[block] }
            return (key, lengths[block])
        }
    }

    public var description: String {
        switch self {
        case .dense: "dense"
        case .packed(let lengths): "kv \(lengths)"
        case .padded(let padding, let lengths): "kv \(lengths) padding \(padding)"
        case .gappy(let starts, let lengths): "kv \(lengths) starts \(starts)"
        case .paged(let starts, let lengths, let tables, let pageSize):
            "kv \(lengths) starts \(starts) pages \(tables) of \(pageSize)"
        }
    }
}

/// The expected materialization of a bias: blocks of queries, where their keys are, the rule in
/// each block, and any additive tensor.
public struct ReferenceMask: Sendable {
    /// Query lengths of the blocks; `nil` for one block of every query.
    public let queryLengths: [Int]?
    /// Where each block's keys are.
    public let keys: KeyGeometry
    /// The rule inside every block.
    public let rule: BlockRule
    /// Row-major `[rows, columns]` additive values (a tensor bias), `nil` for pure masks.
    public let additive: [Float]?

    /// The mask of `queryLengths` query blocks (`nil`: one block of every query) over keys placed
    /// as `keys`, `rule` in each block, plus `additive` where the rule allows (`nil`: 0).
    public init(queryLengths: [Int]?, keys: KeyGeometry, rule: BlockRule, additive: [Float]?) {
        self.queryLengths = queryLengths
        self.keys = keys
        self.rule = rule
        self.additive = additive
    }

    /// The block of each row and the row's index inside it.
    public func queryPositions(rows: Int) -> [(block: Int, query: Int, queryCount: Int)] {
        guard let queryLengths else { return (0..<rows).map { (0, $0, rows) } }
        return queryLengths.enumerated().flatMap { block, length in (0..<length).map { (block, $0, length) } }
    }

    /// The `[rows, columns]` plane, computed element by element from the rule.
    public func plane(rows: Int, columns: Int) -> [Float] {
        var plane = [Float]()
        plane.reserveCapacity(rows * columns)
        for (row, position) in queryPositions(rows: rows).enumerated() {
            for column in 0..<columns {
                let (key, keyCount) = keys.localKey(column: column, block: position.block, columns: columns)
                let isAllowed = key.map {
                    rule.allows(query: position.query, key: $0, queryCount: position.queryCount, keyCount: keyCount)
                } ?? false
                plane.append(isAllowed ? additive?[row * columns + column] ?? 0 : -.infinity)
            }
        }
        return plane
    }
}

/// How a paged mask maps back to the unpaged mask it was made from: row `b` of the page table
/// stands for unpaged keys `b·rowStride ..< b·rowStride + capacity`.
public struct PagingRoundTrip {
    /// The mask before paging.
    public let unpaged: any AttentionBias
    /// The unpaged mask's number of key columns.
    public let unpagedColumns: Int
    /// How far apart the rows of the page table are in the unpaged key dimension.
    public let rowStride: Int
    /// Query lengths of the blocks.
    public let queryLengths: [Int]
    /// The block tables: row `b` lists the physical pages of block `b`.
    public let tables: [[Int]]
    /// Keys per page.
    public let pageSize: Int

    /// The unpaged `[rows, unpagedColumns]` plane rebuilt from the paged plane by following each
    /// query's block table.
    public func gather(pagedPlane: [Float], physicalColumns: Int) -> [Float] {
        let capacity = (tables.first?.count ?? 0) * pageSize
        var result = [Float](), row = 0
        for (block, length) in queryLengths.enumerated() {
            for _ in 0..<length {
                for column in 0..<unpagedColumns {
                    let logical = column - block * rowStride
                    guard logical >= 0, logical < capacity else {
                        result.append(-.infinity)
                        continue
                    }
                    let physical = tables[block][logical / pageSize] * pageSize + logical % pageSize
                    result.append(pagedPlane[row * physicalColumns + physical])
                }
                row += 1
            }
        }
        return result
    }
}
