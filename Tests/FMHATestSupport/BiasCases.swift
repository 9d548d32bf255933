import FMHACore

extension SplitMix64 {
    mutating func integer(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }

    mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }

    /// A sequence length: often 0, usually short, sometimes long.
    mutating func sequenceLength() -> Int {
        switch integer(0...19) {
        case 0...2: 0
        case 3...4: integer(16...40)
        default: integer(1...8)
        }
    }

    mutating func sequenceLengths(count: Int) -> [Int] { (0..<count).map { _ in sequenceLength() } }

    /// A window bound: usually small, sometimes wider than any block.
    mutating func window(minimum: Int) -> Int { chance(0.2) ? integer(minimum...64) : integer(minimum...5) }

    /// `rows` rows of `pagesPerRow` distinct pages each, drawn as random permutations of a pool a
    /// little larger than a row (so rows share pages and some pages are unused).
    mutating func blockTables(rows: Int, pagesPerRow: Int) -> [[Int]] {
        let pool = pagesPerRow + integer(0...4)
        return (0..<rows).map { _ in Array(Array(0..<pool).shuffled(using: &self).prefix(pagesPerRow)) }
    }

    /// A bias value: mostly small multiples of 1/4, sometimes −inf.
    mutating func biasValue() -> Float { chance(0.1) ? -.infinity : Float(integer(-8...8)) * 0.25 }
}

/// Every bias type, and how to draw a random instance of it.
public enum BiasKind: String, CaseIterable, Sendable {
    case tensor
    case lowerTriangular
    case lowerTriangularWithTensorBias
    case lowerTriangularFromBottomRight
    case lowerTriangularFromBottomRightLocalAttention
    case localAttentionFromBottomRight
    case blockDiagonal
    case blockDiagonalCausal
    case blockDiagonalCausalFromBottomRight
    case blockDiagonalCausalLocalAttention
    case blockDiagonalCausalLocalAttentionFromBottomRight
    case paddedKeys
    case causalWithOffsetPaddedKeys
    case localAttentionPaddedKeys
    case causalLocalAttentionPaddedKeys
    case pagedPaddedKeys
    case pagedCausalWithOffsetPaddedKeys
    case pagedCausalLocalPaddedKeys
    case gappyKeys
    case causalWithOffsetGappyKeys
    case localAttentionFromBottomRightGappyKeys
    case pagedGappyKeys
    case pagedCausalWithOffsetGappyKeys

    /// The Swift type a case of this kind builds.
    public var biasType: any AttentionBias.Type {
        switch self {
        case .tensor: Tensor.self
        case .lowerTriangular: LowerTriangularMask.self
        case .lowerTriangularWithTensorBias: LowerTriangularMaskWithTensorBias.self
        case .lowerTriangularFromBottomRight: LowerTriangularFromBottomRightMask.self
        case .lowerTriangularFromBottomRightLocalAttention: LowerTriangularFromBottomRightLocalAttentionMask.self
        case .localAttentionFromBottomRight: LocalAttentionFromBottomRightMask.self
        case .blockDiagonal: BlockDiagonalMask.self
        case .blockDiagonalCausal: BlockDiagonalCausalMask.self
        case .blockDiagonalCausalFromBottomRight: BlockDiagonalCausalFromBottomRightMask.self
        case .blockDiagonalCausalLocalAttention: BlockDiagonalCausalLocalAttentionMask.self
        case .blockDiagonalCausalLocalAttentionFromBottomRight: BlockDiagonalCausalLocalAttentionFromBottomRightMask.self
        case .paddedKeys: BlockDiagonalPaddedKeysMask.self
        case .causalWithOffsetPaddedKeys: BlockDiagonalCausalWithOffsetPaddedKeysMask.self
        case .localAttentionPaddedKeys: BlockDiagonalLocalAttentionPaddedKeysMask.self
        case .causalLocalAttentionPaddedKeys: BlockDiagonalCausalLocalAttentionPaddedKeysMask.self
        case .pagedPaddedKeys: PagedBlockDiagonalPaddedKeysMask.self
        case .pagedCausalWithOffsetPaddedKeys: PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.self
        case .pagedCausalLocalPaddedKeys: PagedBlockDiagonalCausalLocalPaddedKeysMask.self
        case .gappyKeys: BlockDiagonalGappyKeysMask.self
        case .causalWithOffsetGappyKeys: BlockDiagonalCausalWithOffsetGappyKeysMask.self
        case .localAttentionFromBottomRightGappyKeys: BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.self
        case .pagedGappyKeys: PagedBlockDiagonalGappyKeysMask.self
        case .pagedCausalWithOffsetGappyKeys: PagedBlockDiagonalCausalWithOffsetGappyKeysMask.self
        }
    }

    /// The §3.3 rule of this kind, for the drawn window parameters.
    public func rule(windowSize: Int, windowLeft: Int, windowRight: Int) -> BlockRule {
        switch self {
        case .tensor, .blockDiagonal, .paddedKeys, .pagedPaddedKeys, .gappyKeys, .pagedGappyKeys:
            .all
        case .lowerTriangular, .lowerTriangularWithTensorBias, .blockDiagonalCausal:
            .causalTopLeft
        case .lowerTriangularFromBottomRight, .blockDiagonalCausalFromBottomRight, .causalWithOffsetPaddedKeys,
             .pagedCausalWithOffsetPaddedKeys, .causalWithOffsetGappyKeys, .pagedCausalWithOffsetGappyKeys:
            .causalBottomRight
        case .blockDiagonalCausalLocalAttention:
            .causalWindowTopLeft(windowSize: windowSize)
        case .lowerTriangularFromBottomRightLocalAttention, .blockDiagonalCausalLocalAttentionFromBottomRight,
             .causalLocalAttentionPaddedKeys, .pagedCausalLocalPaddedKeys:
            .causalWindowBottomRight(windowSize: windowSize)
        case .localAttentionFromBottomRight, .localAttentionPaddedKeys, .localAttentionFromBottomRightGappyKeys:
            .windowBottomRight(left: windowLeft, right: windowRight)
        }
    }

    /// Whether the kind is a paged mask (made from an unpaged one with `makePaged`).
    public var isPaged: Bool {
        [.pagedPaddedKeys, .pagedCausalWithOffsetPaddedKeys, .pagedCausalLocalPaddedKeys, .pagedGappyKeys,
         .pagedCausalWithOffsetGappyKeys].contains(self)
    }
}

/// One random bias with the mask it must materialize to.
public struct PropertyCase {
    /// The bias under test.
    public let bias: any AttentionBias
    /// Other constructions of the same bias (factory versus `make…`), which must agree.
    public let equivalents: [any AttentionBias]
    /// What the bias must materialize to.
    public let reference: ReferenceMask
    /// Query rows of the materialized plane.
    public let rows: Int
    /// Key columns of the materialized plane.
    public let columns: Int
    /// Broadcast dimensions to materialize in front of `[rows, columns]`.
    public let leading: [Int]
    /// For paged biases: the unpaged bias they were made from.
    public let roundTrip: PagingRoundTrip?
    /// The kind, the seed and the drawn arguments, for failure messages.
    public let summary: String

    /// How many cases `cases(_:)` draws of each kind.
    public static let casesPerKind = 30

    /// A random case of `kind`; the same seed always gives the same case.
    public static func random(_ kind: BiasKind, seed: UInt64) throws -> PropertyCase {
        var drawer = CaseDrawer(kind: kind, seed: seed)
        return try drawer.draw()
    }

    /// The cases of `kind`, each from its own seed.
    public static func cases(_ kind: BiasKind) throws -> [PropertyCase] {
        let kindIndex = UInt64(BiasKind.allCases.firstIndex(of: kind) ?? 0)
        return try (0..<UInt64(casesPerKind)).map { try random(kind, seed: 0xF3A0_0000 + kindIndex << 16 + $0) }
    }
}

/// Draws the arguments of one case and builds the bias for each family of kinds.
struct CaseDrawer {
    let kind: BiasKind
    var generator: SplitMix64
    let seed: UInt64
    let windowSize: Int, windowLeft: Int, windowRight: Int

    init(kind: BiasKind, seed: UInt64) {
        self.kind = kind
        self.seed = seed
        generator = SplitMix64(seed: seed)
        windowSize = generator.window(minimum: 1)
        windowLeft = generator.window(minimum: 0)
        windowRight = generator.window(minimum: 0)
    }

    var rule: BlockRule { kind.rule(windowSize: windowSize, windowLeft: windowLeft, windowRight: windowRight) }

    mutating func draw() throws -> PropertyCase {
        switch kind {
        case .tensor, .lowerTriangular, .lowerTriangularWithTensorBias, .lowerTriangularFromBottomRight,
             .lowerTriangularFromBottomRightLocalAttention, .localAttentionFromBottomRight:
            try drawDense()
        case .blockDiagonal, .blockDiagonalCausal, .blockDiagonalCausalFromBottomRight, .blockDiagonalCausalLocalAttention,
             .blockDiagonalCausalLocalAttentionFromBottomRight:
            try drawBlockDiagonal()
        case .paddedKeys, .causalWithOffsetPaddedKeys, .localAttentionPaddedKeys, .causalLocalAttentionPaddedKeys:
            try drawPaddedKeys()
        case .pagedPaddedKeys, .pagedCausalWithOffsetPaddedKeys, .pagedCausalLocalPaddedKeys:
            try drawPagedPaddedKeys()
        case .gappyKeys, .causalWithOffsetGappyKeys, .localAttentionFromBottomRightGappyKeys:
            try drawGappyKeys()
        case .pagedGappyKeys, .pagedCausalWithOffsetGappyKeys:
            try drawPagedGappyKeys()
        }
    }

    mutating func leading() -> [Int] { [[], [], [2], [1, 3]][generator.integer(0...3)] }

    /// A case whose queries are `queryLengths` (`nil`: one block of `rows`) over `rows × columns`.
    mutating func makeCase(bias: any AttentionBias, equivalents: [any AttentionBias] = [], queryLengths: [Int]?,
                           keys: KeyGeometry, rows: Int, columns: Int, additive: [Float]? = nil,
                           roundTrip: PagingRoundTrip? = nil, details: String = "") -> PropertyCase {
        let reference = ReferenceMask(queryLengths: queryLengths, keys: keys, rule: rule, additive: additive)
        let summary = "\(kind) seed \(seed): q \(queryLengths ?? [rows]), \(keys) \(details), rule \(rule)"
        return PropertyCase(bias: bias, equivalents: equivalents, reference: reference, rows: rows, columns: columns,
                            leading: leading(), roundTrip: roundTrip, summary: summary)
    }

    /// The masks over one `Mq × Mkv` plane, and tensor biases (drawn as `[Mq, Mkv]` or `[1, Mkv]`).
    mutating func drawDense() throws -> PropertyCase {
        let rows = generator.sequenceLength(), columns = generator.sequenceLength()
        let tensorRows = generator.chance(0.5) ? 1 : rows
        let tensorValues = (0..<tensorRows * columns).map { _ in generator.biasValue() }
        let tensor = try Tensor(shape: [tensorRows, columns], scalars: tensorValues)
        let additive = (0..<rows * columns).map { index in
            tensorValues[(tensorRows == 1 ? 0 : index / columns) * columns + index % columns]
        }
        let bias: any AttentionBias, equivalents: [any AttentionBias]
        switch kind {
        case .tensor: (bias, equivalents) = (tensor, [])
        case .lowerTriangular: (bias, equivalents) = (LowerTriangularMask(), [])
        case .lowerTriangularWithTensorBias: (bias, equivalents) = (LowerTriangularMask().addBias(tensor), [])
        case .lowerTriangularFromBottomRight: (bias, equivalents) = (LowerTriangularFromBottomRightMask(), [])
        case .lowerTriangularFromBottomRightLocalAttention:
            (bias, equivalents) = (try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: windowSize),
                                   [try LowerTriangularFromBottomRightMask().makeLocalAttention(windowSize: windowSize)])
        default:
            (bias, equivalents) = (try LocalAttentionFromBottomRightMask(windowLeft: windowLeft, windowRight: windowRight), [])
        }
        let hasTensor = kind == .tensor || kind == .lowerTriangularWithTensorBias
        return makeCase(bias: bias, equivalents: equivalents, queryLengths: nil, keys: .dense, rows: rows, columns: columns,
                        additive: hasTensor ? additive : nil, details: "columns \(columns)")
    }

    /// Key lengths for query blocks `queryLengths` that this kind accepts.
    mutating func keyLengths(for queryLengths: [Int]) -> [Int] {
        queryLengths.map { queries in
            let keys = generator.sequenceLength()
            switch kind {
            case .blockDiagonalCausalFromBottomRight, .blockDiagonalCausalLocalAttentionFromBottomRight:
                return queries + keys % 4
            case .blockDiagonalCausalLocalAttention:
                return max(keys, queries - windowSize + 1)
            default:
                return keys
            }
        }
    }

    /// `BlockDiagonalMask` and the masks its `make…` functions build.
    mutating func drawBlockDiagonal() throws -> PropertyCase {
        let queryLengths = generator.sequenceLengths(count: generator.integer(1...5))
        let sameKeys = generator.chance(0.3)
        let keyLengths = sameKeys ? queryLengths : keyLengths(for: queryLengths)
        let base = try BlockDiagonalMask.fromSeqlens(qSeqlen: queryLengths, kvSeqlen: sameKeys ? nil : keyLengths)
        let bias: any AttentionBias, equivalents: [any AttentionBias]
        switch kind {
        case .blockDiagonal: (bias, equivalents) = (base, [])
        case .blockDiagonalCausal:
            (bias, equivalents) = (try base.makeCausal(),
                                   [try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: queryLengths, kvSeqlen: keyLengths)])
        case .blockDiagonalCausalFromBottomRight:
            (bias, equivalents) = (try base.makeCausalFromBottomRight(),
                                   [try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: queryLengths,
                                                                                          kvSeqlen: keyLengths)])
        case .blockDiagonalCausalLocalAttention: (bias, equivalents) = (try base.makeLocalAttention(windowSize: windowSize), [])
        default: (bias, equivalents) = (try base.makeLocalAttentionFromBottomRight(windowSize: windowSize), [])
        }
        return makeCase(bias: bias, equivalents: equivalents, queryLengths: queryLengths, keys: .packed(lengths: keyLengths),
                        rows: queryLengths.reduce(0, +), columns: keyLengths.reduce(0, +))
    }

    /// Query and key lengths with a padding that holds every key block.
    mutating func paddedArguments() -> (queryLengths: [Int], keyLengths: [Int], padding: Int) {
        let queryLengths = generator.sequenceLengths(count: generator.integer(1...5))
        let keyLengths = generator.sequenceLengths(count: queryLengths.count)
        return (queryLengths, keyLengths, (keyLengths.max() ?? 0) + generator.integer(0...3))
    }

    /// The unpaged padded-keys mask of this kind (or of the kind a paged kind is made from).
    func paddedMask(queryLengths: [Int], keyLengths: [Int], padding: Int) throws -> any AttentionBias {
        switch kind {
        case .paddedKeys, .pagedPaddedKeys:
            try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvPadding: padding, kvSeqlen: keyLengths)
        case .causalWithOffsetPaddedKeys, .pagedCausalWithOffsetPaddedKeys:
            try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvPadding: padding,
                                                                       kvSeqlen: keyLengths)
        case .localAttentionPaddedKeys:
            try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvPadding: padding,
                                                                     kvSeqlen: keyLengths, windowLeft: windowLeft,
                                                                     windowRight: windowRight)
        default:
            try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvPadding: padding,
                                                                           kvSeqlen: keyLengths, windowSize: windowSize)
        }
    }

    mutating func drawPaddedKeys() throws -> PropertyCase {
        let (queryLengths, keyLengths, padding) = paddedArguments()
        let bias = try paddedMask(queryLengths: queryLengths, keyLengths: keyLengths, padding: padding)
        let equivalents: [any AttentionBias] = kind != .localAttentionPaddedKeys ? [] : [
            try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvPadding: padding, kvSeqlen: keyLengths)
                .makeLocalAttention(windowLeft: windowLeft, windowRight: windowRight),
        ]
        return makeCase(bias: bias, equivalents: equivalents, queryLengths: queryLengths,
                        keys: .padded(padding: padding, lengths: keyLengths), rows: queryLengths.reduce(0, +),
                        columns: padding * keyLengths.count)
    }

    /// A page size and block tables with room for `keyLengths` (plus some spare pages).
    mutating func pages(for keyLengths: [Int]) -> (pageSize: Int, tables: [[Int]], columns: Int) {
        let pageSize = generator.integer(1...8)
        let longest = keyLengths.max() ?? 0
        let pagesPerRow = (longest + pageSize - 1) / pageSize + generator.integer(0...2)
        let tables = generator.blockTables(rows: keyLengths.count, pagesPerRow: pagesPerRow)
        let physicalColumns = ((tables.joined().max() ?? -1) + 1) * pageSize
        return (pageSize, tables, physicalColumns + (generator.chance(0.3) ? generator.integer(1...3) : 0))
    }

    /// The paged version of `unpaged` through `makePaged`, and the same mask from the paged factory.
    func pagedPaddedMasks(unpaged: any AttentionBias, queryLengths: [Int], keyLengths: [Int], tables: [[Int]],
                          pageSize: Int) throws -> (paged: any AttentionBias, direct: any AttentionBias) {
        switch unpaged {
        case let mask as BlockDiagonalPaddedKeysMask:
            (try mask.makePaged(blockTables: tables, pageSize: pageSize),
             try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvSeqlen: keyLengths,
                                                              blockTables: tables, pageSize: pageSize))
        case let mask as BlockDiagonalCausalWithOffsetPaddedKeysMask:
            (try mask.makePaged(blockTables: tables, pageSize: pageSize),
             try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvSeqlen: keyLengths,
                                                                              blockTables: tables, pageSize: pageSize))
        case let mask as BlockDiagonalCausalLocalAttentionPaddedKeysMask:
            (try mask.makePaged(blockTables: tables, pageSize: pageSize),
             try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: queryLengths, kvSeqlen: keyLengths,
                                                                         blockTables: tables, pageSize: pageSize,
                                                                         windowSize: windowSize))
        default:
            throw FMHAError(.unsupported, "no paged version of \(type(of: unpaged))")
        }
    }

    mutating func drawPagedPaddedKeys() throws -> PropertyCase {
        let (queryLengths, keyLengths, padding) = paddedArguments()
        let (pageSize, tables, columns) = pages(for: keyLengths)
        let unpaged = try paddedMask(queryLengths: queryLengths, keyLengths: keyLengths, padding: padding)
        let (paged, direct) = try pagedPaddedMasks(unpaged: unpaged, queryLengths: queryLengths, keyLengths: keyLengths,
                                                   tables: tables, pageSize: pageSize)
        let keys = KeyGeometry.paged(starts: keyLengths.map { _ in 0 }, lengths: keyLengths, tables: tables, pageSize: pageSize)
        let roundTrip = PagingRoundTrip(unpaged: unpaged, unpagedColumns: padding * keyLengths.count, rowStride: padding,
                                        queryLengths: queryLengths, tables: tables, pageSize: pageSize)
        return makeCase(bias: paged, equivalents: [direct], queryLengths: queryLengths, keys: keys,
                        rows: queryLengths.reduce(0, +), columns: columns, roundTrip: roundTrip,
                        details: "unpaged padding \(padding)")
    }

    /// The unpaged gappy-keys mask of this kind (or of the kind a paged kind is made from).
    func gappyMask(queryLengths: [Int], starts: [Int], keyLengths: [Int], keyTotal: Int) throws -> any AttentionBias {
        let seqstarts = starts + [keyTotal]
        return switch kind {
        case .gappyKeys, .pagedGappyKeys:
            try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: queryLengths, kvSeqstarts: seqstarts, kvSeqlen: keyLengths)
        case .causalWithOffsetGappyKeys, .pagedCausalWithOffsetGappyKeys:
            try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: queryLengths, kvSeqstarts: seqstarts,
                                                                      kvSeqlen: keyLengths)
        default:
            try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                qSeqlen: queryLengths, kvSeqstarts: seqstarts, kvSeqlen: keyLengths, windowLeft: windowLeft,
                windowRight: windowRight)
        }
    }

    /// Key blocks placed at random in a key dimension a little longer than all of them together,
    /// so that they overlap and leave gaps.
    mutating func drawGappyKeys() throws -> PropertyCase {
        let queryLengths = generator.sequenceLengths(count: generator.integer(1...5))
        let keyLengths = generator.sequenceLengths(count: queryLengths.count)
        let keyTotal = keyLengths.reduce(0, +) + generator.integer(0...6)
        let starts = keyLengths.map { generator.integer(0...keyTotal - $0) }
        let bias = try gappyMask(queryLengths: queryLengths, starts: starts, keyLengths: keyLengths, keyTotal: keyTotal)
        return makeCase(bias: bias, queryLengths: queryLengths, keys: .gappy(starts: starts, lengths: keyLengths),
                        rows: queryLengths.reduce(0, +), columns: keyTotal)
    }

    /// An unpaged gappy mask whose block `b` starts at `b·notionalPadding + offset[b]`, then paged
    /// with `makePaged`; the offsets are the starts inside each row of the page table.
    mutating func drawPagedGappyKeys() throws -> PropertyCase {
        let queryLengths = generator.sequenceLengths(count: generator.integer(1...5))
        let keyLengths = generator.sequenceLengths(count: queryLengths.count)
        let (pageSize, tables, columns) = pages(for: keyLengths)
        let capacity = (tables.first?.count ?? 0) * pageSize
        let offsets = keyLengths.map { generator.integer(0...capacity - $0) }
        let notionalPadding = pageSize * generator.integer(1...(tables.first?.count ?? 0) + 2)
        let starts = offsets.enumerated().map { $0 * notionalPadding + $1 }
        let keyTotal = (zip(starts, keyLengths).map(+).max() ?? 0) + generator.integer(0...3)
        let unpaged = try gappyMask(queryLengths: queryLengths, starts: starts, keyLengths: keyLengths, keyTotal: keyTotal)
        let (paged, direct): (any AttentionBias, any AttentionBias) = switch unpaged {
        case let mask as BlockDiagonalGappyKeysMask:
            (try mask.makePaged(blockTables: tables, pageSize: pageSize, notionalPadding: notionalPadding),
             try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: queryLengths, kvSeqstarts: offsets, kvSeqlen: keyLengths,
                                                             blockTables: tables, pageSize: pageSize))
        case let mask as BlockDiagonalCausalWithOffsetGappyKeysMask:
            (try mask.makePaged(blockTables: tables, pageSize: pageSize, notionalPadding: notionalPadding),
             try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                 qSeqlen: queryLengths, kvSeqstarts: offsets, kvSeqlen: keyLengths, blockTables: tables, pageSize: pageSize))
        default:
            throw FMHAError(.unsupported, "no paged version of \(type(of: unpaged))")
        }
        let keys = KeyGeometry.paged(starts: offsets, lengths: keyLengths, tables: tables, pageSize: pageSize)
        let roundTrip = PagingRoundTrip(unpaged: unpaged, unpagedColumns: keyTotal, rowStride: notionalPadding,
                                        queryLengths: queryLengths, tables: tables, pageSize: pageSize)
        return makeCase(bias: paged, equivalents: [direct], queryLengths: queryLengths, keys: keys,
                        rows: queryLengths.reduce(0, +), columns: columns, roundTrip: roundTrip,
                        details: "unpaged starts \(starts) of \(keyTotal), notional padding \(notionalPadding)")
    }
}
