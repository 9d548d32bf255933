import Testing
import FMHATestSupport
@testable import FMHACore

/// Expects `body` to throw an `invalidArgument` `FMHAError` whose message starts with `argument`
/// and whose "got …" part contains the offending `value`.
func expectInvalidArgument(_ argument: String, got value: String, sourceLocation: SourceLocation = #_sourceLocation,
                           _ body: () throws -> Void) {
    let error = #expect(throws: FMHAError.self, sourceLocation: sourceLocation) { try body() }
    guard let error else { return }
    #expect(error.kind == .invalidArgument, "\(error.message)", sourceLocation: sourceLocation)
    #expect(error.message.hasPrefix("\(argument): "), "\(error.message)", sourceLocation: sourceLocation)
    let given = error.message.split(separator: ", got ").last.map(String.init) ?? ""
    #expect(given.contains(value), "\(error.message)", sourceLocation: sourceLocation)
}

/// Expects two tensors to have the same shape and elements.
func expectEqualTensors(_ actual: Tensor, _ expected: Tensor, sourceLocation: SourceLocation = #_sourceLocation) throws {
    #expect(actual.shape == expected.shape, sourceLocation: sourceLocation)
    #expect(try actual.toArray() == expected.toArray(), sourceLocation: sourceLocation)
}

/// A call that must fail, the argument its error must name and the value it must quote.
struct FactoryErrorCase: Sendable, CustomTestStringConvertible {
    let name: String
    let argument: String
    let value: String
    let call: @Sendable () throws -> Void

    init(_ name: String, argument: String, got value: String, call: @escaping @Sendable () throws -> Void) {
        self.name = name
        self.argument = argument
        self.value = value
        self.call = call
    }

    var testDescription: String { name }
}

/// Every validation of the bias factories, `makePaged` and `materialize` throws an `FMHAError`
/// naming the argument and the offending value; and `fromTensorList`/`split` round trips.
@Suite struct BiasFactoryErrorTests {
    static let windowCases: [FactoryErrorCase] = [
        FactoryErrorCase("causal window 0", argument: "windowSize", got: "0") {
            _ = try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 0)
        },
        FactoryErrorCase("makeLocalAttention with a negative window", argument: "windowSize", got: "-3") {
            _ = try LowerTriangularFromBottomRightMask().makeLocalAttention(windowSize: -3)
        },
        FactoryErrorCase("block-diagonal causal window 0", argument: "windowSize", got: "0") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2]).makeLocalAttention(windowSize: 0)
        },
        FactoryErrorCase("block-diagonal bottom-right window -1", argument: "windowSize", got: "-1") {
            _ = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [2]).makeLocalAttentionFromBottomRight(windowSize: -1)
        },
        FactoryErrorCase("padded causal window 0", argument: "windowSize", got: "0") {
            _ = try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: 2, kvSeqlen: [2],
                                                                                windowSize: 0)
        },
        FactoryErrorCase("paged causal window -2", argument: "windowSize", got: "-2") {
            _ = try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvSeqlen: [2], blockTables: [[0]],
                                                                            pageSize: 2, windowSize: -2)
        },
        FactoryErrorCase("two-sided window left -1", argument: "windowLeft", got: "-1") {
            _ = try LocalAttentionFromBottomRightMask(windowLeft: -1, windowRight: 0)
        },
        FactoryErrorCase("two-sided window right -2", argument: "windowRight", got: "-2") {
            _ = try LocalAttentionFromBottomRightMask(windowLeft: 0, windowRight: -2)
        },
        FactoryErrorCase("padded two-sided window left -1", argument: "windowLeft", got: "-1") {
            _ = try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: 2, kvSeqlen: [2],
                                                                          windowLeft: -1, windowRight: 1)
        },
        FactoryErrorCase("padded makeLocalAttention right -4", argument: "windowRight", got: "-4") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: 2, kvSeqlen: [2])
                .makeLocalAttention(windowLeft: 0, windowRight: -4)
        },
        FactoryErrorCase("gappy two-sided window left -3", argument: "windowLeft", got: "-3") {
            _ = try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                qSeqlen: [1], kvSeqstarts: [0, 2], kvSeqlen: [2], windowLeft: -3, windowRight: 0)
        },
    ]

    static let lengthCases: [FactoryErrorCase] = [
        FactoryErrorCase("negative query length", argument: "qSeqlen[1]", got: "-1") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, -1])
        },
        FactoryErrorCase("negative key length", argument: "kvSeqlen[1]", got: "-2") {
            _ = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [1, 1], kvSeqlen: [1, -2])
        },
        FactoryErrorCase("empty query lengths", argument: "qSeqlen", got: "[]") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [])
        },
        FactoryErrorCase("empty key lengths", argument: "kvSeqlen", got: "[]") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1], kvSeqlen: [])
        },
        FactoryErrorCase("padded negative query length", argument: "qSeqlen[0]", got: "-3") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [-3], kvPadding: 2, kvSeqlen: [1])
        },
        FactoryErrorCase("padded negative key length", argument: "kvSeqlen[1]", got: "-1") {
            _ = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvPadding: 2, kvSeqlen: [1, -1])
        },
        FactoryErrorCase("padded negative padding", argument: "kvPadding", got: "-1") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: -1, kvSeqlen: [0])
        },
        FactoryErrorCase("padded empty key lengths", argument: "kvSeqlen", got: "[]") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: 2, kvSeqlen: [])
        },
        FactoryErrorCase("gappy negative key length", argument: "kvSeqlen[0]", got: "-1") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0, 2], kvSeqlen: [-1])
        },
        FactoryErrorCase("gappy empty query lengths", argument: "qSeqlen", got: "[]") {
            _ = try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [], kvSeqstarts: [0], kvSeqlen: [])
        },
        FactoryErrorCase("paged negative key length", argument: "kvSeqlen[0]", got: "-2") {
            _ = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvSeqlen: [-2], blockTables: [[0]], pageSize: 2)
        },
        FactoryErrorCase("paged gappy negative key length", argument: "kvSeqlen[0]", got: "-1") {
            _ = try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0], kvSeqlen: [-1],
                                                                blockTables: [[0]], pageSize: 2)
        },
    ]

    static let countCases: [FactoryErrorCase] = [
        FactoryErrorCase("fewer key than query sequences", argument: "kvSeqlen", got: "1 entries") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [1])
        },
        FactoryErrorCase("more key than query sequences", argument: "kvSeqlen", got: "2 entries") {
            _ = try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [1], kvSeqlen: [1, 1])
        },
        FactoryErrorCase("padded sequence counts differ", argument: "kvSeqlen", got: "1 entries") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 2], kvPadding: 2, kvSeqlen: [1])
        },
        FactoryErrorCase("gappy sequence counts differ", argument: "kvSeqlen", got: "1 entries") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [0, 1], kvSeqlen: [1])
        },
        FactoryErrorCase("gappy starts without the key total", argument: "kvSeqstarts", got: "1") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0], kvSeqlen: [1])
        },
        FactoryErrorCase("gappy starts, one too many", argument: "kvSeqstarts", got: "3") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0, 1, 2], kvSeqlen: [1])
        },
        FactoryErrorCase("paged sequence counts differ", argument: "kvSeqlen", got: "1 entries") {
            _ = try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqlen: [1],
                                                                                blockTables: [[0], [1]], pageSize: 2)
        },
        FactoryErrorCase("paged gappy starts with the unpaged key total", argument: "kvSeqstarts", got: "2 starts") {
            _ = try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0, 2], kvSeqlen: [1],
                                                                blockTables: [[0]], pageSize: 2)
        },
    ]

    static let blockCases: [FactoryErrorCase] = [
        FactoryErrorCase("bottom-right causal with fewer keys than queries", argument: "kvSeqlen[1]", got: "2") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 3], kvSeqlen: [2, 2]).makeCausalFromBottomRight()
        },
        FactoryErrorCase("bottom-right causal factory with fewer keys than queries", argument: "kvSeqlen[0]", got: "1") {
            _ = try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [3], kvSeqlen: [1])
        },
        FactoryErrorCase("bottom-right window with fewer keys than queries", argument: "kvSeqlen[0]", got: "3") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [4], kvSeqlen: [3]).makeLocalAttentionFromBottomRight(windowSize: 2)
        },
        FactoryErrorCase("top-left window leaving queries without keys (nq − w ≥ nk)", argument: "kvSeqlen[1]", got: "2") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 5], kvSeqlen: [1, 2]).makeLocalAttention(windowSize: 3)
        },
        FactoryErrorCase("key length over the padding", argument: "kvSeqlen[1]", got: "4") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvPadding: 3, kvSeqlen: [3, 4])
        },
        FactoryErrorCase("local key length over the padding", argument: "kvSeqlen[0]", got: "5") {
            _ = try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: 4, kvSeqlen: [5],
                                                                          windowLeft: 1, windowRight: 1)
        },
        FactoryErrorCase("paged key length over the page table's capacity", argument: "kvSeqlen[0]", got: "5") {
            _ = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvSeqlen: [5], blockTables: [[0, 1]],
                                                                 pageSize: 2)
        },
        FactoryErrorCase("makePaged over the page table's capacity", argument: "kvSeqlen[0]", got: "5") {
            _ = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: 8, kvSeqlen: [5])
                .makePaged(blockTables: [[0, 1]], pageSize: 2)
        },
        FactoryErrorCase("paged gappy sequence past the page table's capacity", argument: "kvSeqstarts[0]", got: "3") {
            _ = try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [3], kvSeqlen: [2],
                                                                blockTables: [[0, 1]], pageSize: 2)
        },
        FactoryErrorCase("gappy negative start", argument: "kvSeqstarts[0]", got: "-1") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [-1, 4], kvSeqlen: [2])
        },
        FactoryErrorCase("gappy sequence past the key total", argument: "kvSeqstarts[1]", got: "3") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [0, 3, 4], kvSeqlen: [1, 2])
        },
        FactoryErrorCase("makePaged start before its row", argument: "kvSeqstarts[1]", got: "-3") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [0, 1, 10], kvSeqlen: [1, 1])
                .makePaged(blockTables: [[0], [1]], pageSize: 2, notionalPadding: 4)
        },
        FactoryErrorCase("makePaged start past its row's capacity", argument: "kvSeqstarts[0]", got: "3") {
            _ = try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [3, 4, 10],
                                                                          kvSeqlen: [1, 1])
                .makePaged(blockTables: [[0], [1]], pageSize: 2, notionalPadding: 4)
        },
        FactoryErrorCase("notionalPadding not a multiple of pageSize", argument: "notionalPadding", got: "3") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0, 4], kvSeqlen: [1])
                .makePaged(blockTables: [[0]], pageSize: 2, notionalPadding: 3)
        },
        FactoryErrorCase("negative notionalPadding", argument: "notionalPadding", got: "-4") {
            _ = try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0, 4], kvSeqlen: [1])
                .makePaged(blockTables: [[0]], pageSize: 2, notionalPadding: -4)
        },
    ]

    static let overflowCases: [FactoryErrorCase] = [
        FactoryErrorCase("query lengths whose sum overflows", argument: "qSeqlen", got: "\(Int.max)") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [Int.max, 1])
        },
        FactoryErrorCase("padding whose total overflows", argument: "kvPadding", got: "\(Int.max)") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvPadding: Int.max, kvSeqlen: [1, 1])
        },
        FactoryErrorCase("page offsets that overflow", argument: "blockTables", got: "page \(Int.max / 2)") {
            _ = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvSeqlen: [0], blockTables: [[Int.max / 2]],
                                                                 pageSize: 4)
        },
        FactoryErrorCase("notional padding whose total overflows", argument: "notionalPadding", got: "\(Int.max - 1)") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [0, 0, 1], kvSeqlen: [1, 1])
                .makePaged(blockTables: [[0], [1]], pageSize: 2, notionalPadding: Int.max - 1)
        },
        FactoryErrorCase("gappy negative key total", argument: "kvSeqstarts[1]", got: "-1") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0, -1], kvSeqlen: [0])
        },
    ]

    static let materializeCases: [FactoryErrorCase] = [
        FactoryErrorCase("rank 1 shape", argument: "shape", got: "[4]") {
            _ = try LowerTriangularMask().materialize(shape: [4])
        },
        FactoryErrorCase("negative size", argument: "shape", got: "[-1, 3]") {
            _ = try LowerTriangularMask().materialize(shape: [-1, 3])
        },
        FactoryErrorCase("block-diagonal query total", argument: "shape", got: "4") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 3]).materialize(shape: [4, 5])
        },
        FactoryErrorCase("block-diagonal key total", argument: "shape", got: "6") {
            _ = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [2, 3]).materialize(shape: [1, 5, 6])
        },
        FactoryErrorCase("padded key total", argument: "shape", got: "5") {
            _ = try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvPadding: 3, kvSeqlen: [1, 2])
                .materialize(shape: [2, 5])
        },
        FactoryErrorCase("gappy key total", argument: "shape", got: "7") {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [2, 8], kvSeqlen: [3])
                .materialize(shape: [1, 7])
        },
        FactoryErrorCase("paged columns short of the last page", argument: "shape", got: "9") {
            _ = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [3, 2],
                                                                 blockTables: [[3, 1], [0, 4]], pageSize: 2)
                .materialize(shape: [3, 9])
        },
        FactoryErrorCase("paged query total", argument: "shape", got: "2") {
            _ = try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 2], kvSeqstarts: [0, 0], kvSeqlen: [1, 1],
                                                                blockTables: [[0], [1]], pageSize: 2)
                .materialize(shape: [2, 4])
        },
    ]

    @Test(arguments: windowCases + lengthCases + countCases + blockCases + overflowCases + materializeCases)
    func throwsNamingTheArgumentAndValue(_ testCase: FactoryErrorCase) {
        expectInvalidArgument(testCase.argument, got: testCase.value) { try testCase.call() }
    }

    @Test func twoSidedWindowsAcceptZero() throws {
        _ = try LocalAttentionFromBottomRightMask(windowLeft: 0, windowRight: 0)
        _ = try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1], kvPadding: 1, kvSeqlen: [1],
                                                                      windowLeft: 0, windowRight: 0)
    }

    /// Extreme key totals and starts throw instead of overflowing.
    @Test func extremeGappyValuesThrowInsteadOfTrapping() {
        #expect(throws: FMHAError.self) {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [0, Int.min], kvSeqlen: [1])
        }
        #expect(throws: FMHAError.self) {
            _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1], kvSeqstarts: [Int.max, 5], kvSeqlen: [Int.max])
        }
    }

    @Test(.enabled(if: !DeviceTensorTests.hasDevice, "a CUDA device is present (DeviceTensorTests covers it)"))
    func materializeOnADeviceIsUnavailable() {
        let error = #expect(throws: FMHAError.self) {
            _ = try LowerTriangularMask().materialize(shape: [2, 2], device: .cuda(0))
        }
        #expect(error?.kind == .deviceUnavailable)
    }

    /// Every entry point that takes a page table, for two sequences of one query and one key.
    enum PagedEntryPoint: String, CaseIterable, Sendable {
        case paddedFactory, paddedMakePaged, gappyFactory, gappyMakePaged

        func make(blockTables: [[Int]], pageSize: Int) throws {
            switch self {
            case .paddedFactory:
                _ = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqlen: [1, 1],
                                                                     blockTables: blockTables, pageSize: pageSize)
            case .paddedMakePaged:
                _ = try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvPadding: 1,
                                                                                    kvSeqlen: [1, 1], windowSize: 1)
                    .makePaged(blockTables: blockTables, pageSize: pageSize)
            case .gappyFactory:
                _ = try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                    qSeqlen: [1, 1], kvSeqstarts: [0, 0], kvSeqlen: [1, 1], blockTables: blockTables, pageSize: pageSize)
            case .gappyMakePaged:
                _ = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqstarts: [0, 2, 4], kvSeqlen: [1, 1])
                    .makePaged(blockTables: blockTables, pageSize: pageSize, notionalPadding: 2)
            }
        }
    }

    /// A bad page table and what its error must say.
    struct PageTableError: Sendable, CustomTestStringConvertible {
        let blockTables: [[Int]]
        let pageSize: Int
        let argument: String
        let value: String
        var testDescription: String { "\(blockTables) of \(pageSize)" }
    }

    static let pageTableErrors = [
        PageTableError(blockTables: [[0, -1], [1, 2]], pageSize: 2, argument: "blockTables[0][1]", value: "-1"),
        PageTableError(blockTables: [[0, 1], [2]], pageSize: 2, argument: "blockTables[1]", value: "1 pages"),
        PageTableError(blockTables: [[0, 1]], pageSize: 2, argument: "blockTables", value: "1 rows"),
        PageTableError(blockTables: [[0], [1], [2]], pageSize: 2, argument: "blockTables", value: "3 rows"),
        PageTableError(blockTables: [[0], [1]], pageSize: 0, argument: "pageSize", value: "0"),
        PageTableError(blockTables: [[0], [1]], pageSize: -2, argument: "pageSize", value: "-2"),
    ]

    @Test(arguments: PagedEntryPoint.allCases, pageTableErrors)
    func badPageTablesThrow(_ entryPoint: PagedEntryPoint, _ bad: PageTableError) {
        expectInvalidArgument(bad.argument, got: bad.value) {
            try entryPoint.make(blockTables: bad.blockTables, pageSize: bad.pageSize)
        }
    }

    @Test(arguments: PagedEntryPoint.allCases)
    func goodPageTablesAreAccepted(_ entryPoint: PagedEntryPoint) throws {
        try entryPoint.make(blockTables: [[1], [0]], pageSize: 2)
    }
}

/// `fromTensorList` packs `[B_i, M_i, H, K]` tensors into one sequence per batch element;
/// `split`, `splitQueries` and `splitKV` give the tensors back.
@Suite struct BiasTensorListTests {
    /// The two mask types that have `fromTensorList`.
    enum PackingMask: String, CaseIterable, Sendable {
        case blockDiagonal, blockDiagonalCausal

        func pack(_ tensors: [Tensor]) throws -> (mask: any BlockDiagonalBias, packed: Tensor) {
            switch self {
            case .blockDiagonal: try BlockDiagonalMask.fromTensorList(tensors)
            case .blockDiagonalCausal: try BlockDiagonalCausalMask.fromTensorList(tensors)
            }
        }
    }

    /// Tensors `[B_i, M_i, 2, 3]` of different batch sizes and lengths, one of them empty.
    static func inputs() throws -> [Tensor] {
        try [(2, 3), (1, 5), (3, 1), (1, 0)].enumerated().map { index, sizes in
            try Tensor.randn([sizes.0, sizes.1, 2, 3], seed: UInt64(index + 1))
        }
    }

    @Test(arguments: PackingMask.allCases)
    func splitUndoesFromTensorList(_ packing: PackingMask) throws {
        let inputs = try Self.inputs()
        let (mask, packed) = try packing.pack(inputs)
        #expect(packed.shape == [1, 14, 2, 3])
        #expect(try packed.toArray() == inputs.flatMap { try $0.toArray() })
        #expect(mask.queryInfo.seqlens == [3, 3, 5, 1, 1, 1, 0])
        #expect(mask.keyInfo == mask.queryInfo)
        #expect(mask.batchSizes == [2, 1, 3, 1])
        for pieces in [try mask.split(packed), try mask.splitQueries(packed), try mask.splitKV(packed)] {
            try #require(pieces.count == inputs.count)
            for (piece, input) in zip(pieces, inputs) {
                try expectEqualTensors(piece, input)
            }
        }
    }

    @Test(arguments: PackingMask.allCases)
    func fromTensorListMasksOneBlockPerBatchElement(_ packing: PackingMask) throws {
        let (mask, _) = try packing.pack(try Self.inputs())
        let perSequence = try BlockDiagonalMask.fromSeqlens(qSeqlen: [3, 3, 5, 1, 1, 1, 0])
        let expected: any AttentionBias = try packing == .blockDiagonal ? perSequence : perSequence.makeCausal()
        try expectEqualTensors(try mask.materialize(shape: [14, 14]), try expected.materialize(shape: [14, 14]))
    }

    @Test func derivedMasksKeepTheBatchSizes() throws {
        let inputs = try Self.inputs()
        let (mask, packed) = try BlockDiagonalMask.fromTensorList(inputs)
        let pieces = try mask.makeCausal().split(packed)
        #expect(pieces.map(\.shape) == inputs.map(\.shape))
    }

    @Test func splitWithoutBatchSizesGivesOneTensorPerSequence() throws {
        let packed = try Tensor(shape: [1, 5, 2], scalars: (0..<10).map(Float.init))
        let pieces = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 0, 3]).split(packed)
        #expect(pieces.map(\.shape) == [[1, 2, 2], [1, 0, 2], [1, 3, 2]])
        #expect(try pieces.map { try $0.toArray() } == [[0, 1, 2, 3], [], [4, 5, 6, 7, 8, 9]])
    }

    @Test func splitQueriesAndKeysFollowTheirOwnLengths() throws {
        let mask = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [3, 1])
        let queries = try Tensor.randn([1, 3, 2])
        let keys = try Tensor.randn([1, 4, 2], seed: 7)
        #expect(try mask.splitQueries(queries).map(\.shape) == [[1, 1, 2], [1, 2, 2]])
        let keyPieces = try mask.splitKV(keys)
        #expect(keyPieces.map(\.shape) == [[1, 3, 2], [1, 1, 2]])
        try expectEqualTensors(keyPieces[1], keys.slice(dimension: 1, range: 3..<4))
    }

    static let splitErrorCases: [FactoryErrorCase] = [
        FactoryErrorCase("split with different query and key lengths", argument: "split", got: "qSeqlen [1, 2]") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [2, 1]).split(try Tensor.zeros([1, 3]))
        },
        FactoryErrorCase("split of a batch of two", argument: "tensor", got: "[2, 5, 1]") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 3]).split(try Tensor.zeros([2, 5, 1]))
        },
        FactoryErrorCase("split of the wrong total", argument: "tensor", got: "[1, 4, 1]") {
            _ = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [2, 3]).split(try Tensor.zeros([1, 4, 1]))
        },
        FactoryErrorCase("split of a rank 1 tensor", argument: "tensor", got: "[5]") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 3]).splitQueries(try Tensor.zeros([5]))
        },
        FactoryErrorCase("splitKV of the query total", argument: "tensor", got: "[1, 3, 2]") {
            _ = try BlockDiagonalMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [3, 1]).splitKV(try Tensor.zeros([1, 3, 2]))
        },
        FactoryErrorCase("fromTensorList of no tensors", argument: "tensors", got: "an empty list") {
            _ = try BlockDiagonalMask.fromTensorList([])
        },
        FactoryErrorCase("fromTensorList of a rank 1 tensor", argument: "tensors[1]", got: "shape [3]") {
            _ = try BlockDiagonalCausalMask.fromTensorList([try Tensor.zeros([1, 2]), try Tensor.zeros([3])])
        },
        FactoryErrorCase("fromTensorList of mismatched heads", argument: "tensors[1]", got: "shape [1, 2, 3]") {
            _ = try BlockDiagonalMask.fromTensorList([try Tensor.zeros([2, 2, 4]), try Tensor.zeros([1, 2, 3])])
        },
    ]

    @Test(arguments: splitErrorCases)
    func badSplitsThrow(_ testCase: FactoryErrorCase) {
        expectInvalidArgument(testCase.argument, got: testCase.value) { try testCase.call() }
    }
}
