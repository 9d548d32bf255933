import FMHATestSupport
import FMHA
import Testing

/// The one non-finite rule (DESIGN, docs/ARCHITECTURE.md) on every forward operator of every test
/// device, dispatched or variant: NaN or ±inf in what a row sees (its query, a visible key, value
/// or bias entry) gives NaN in that row's output and LSE, as in PyTorch (a value only makes its
/// column non-finite); rows that see no key get 0 and −inf; nothing leaks into other rows.
@Suite struct NonFiniteSemanticsTests {
    /// B = 1, Mq = 3, Mkv = 5, H = 2, K = Kv = 8; key column 0 alternates in sign so that an
    /// infinite query element gives scores of both signs.
    static let shape = (queries: 3, keys: 5, heads: 2, width: 8)

    /// Where non-finite values are written: (tensor, flat index in BMHK / [1, H, Mq, Mkv]).
    enum Poison {
        case query(Float, index: Int), key(Float, index: Int), value(Float, index: Int), bias(Float, index: Int)
    }

    /// Inputs with `poison` written in, on `device`, as `dtype`, with a random tensor bias or
    /// (`tensorBias` false) the mask alone.
    static func inputs(_ poison: Poison, causal: Bool, dtype: DType, device: Device, tensorBias: Bool = true) throws -> Inputs {
        let s = shape
        var q = try Tensor.randn([1, s.queries, s.heads, s.width], dtype: .float32, seed: 1).toArray()
        var k = try Tensor.randn([1, s.keys, s.heads, s.width], dtype: .float32, seed: 2).toArray()
        var v = try Tensor.randn([1, s.keys, s.heads, s.width], dtype: .float32, seed: 3).toArray()
        var b = try Tensor.randn([1, s.heads, s.queries, s.keys], dtype: .float32, seed: 4).toArray()
        for key in 0..<s.keys { for head in 0..<s.heads { k[(key * s.heads + head) * s.width] = key % 2 == 0 ? 1 : -1 } }
        switch poison {
        case .query(let x, let index): q[index] = x
        case .key(let x, let index): k[index] = x
        case .value(let x, let index): v[index] = x
        case .bias(let x, let index): b[index] = x
        }
        func tensor(_ values: [Float], _ shape: [Int]) throws -> Tensor { try Tensor(shape: shape, scalars: values, dtype: dtype).to(device) }
        let bias = try tensor(b, [1, s.heads, s.queries, s.keys])
        let mask: (any AttentionBias)?
        if tensorBias {
            mask = causal ? LowerTriangularMaskWithTensorBias(bias) : bias
        } else {
            mask = causal ? LowerTriangularMask() : nil
        }
        return Inputs(query: try tensor(q, [1, s.queries, s.heads, s.width]), key: try tensor(k, [1, s.keys, s.heads, s.width]),
                      value: try tensor(v, [1, s.keys, s.heads, s.width]), bias: mask)
    }

    /// Flat BMHK index of (query or key `row`, `head`, `column`).
    static func at(_ row: Int, head: Int, column: Int = 0) -> Int { (row * shape.heads + head) * shape.width + column }

    /// The cases: poison, mask, and the (query, head) rows that must be NaN, or only non-finite in
    /// `column` (a poisoned value); every other output element and LSE must be finite.
    typealias Case = (what: String, poison: Poison, causal: Bool, nanRows: [(query: Int, head: Int)], column: Int?)
    static let cases: [Case] = [
        ("NaN query", .query(.nan, index: at(1, head: 0, column: 3)), false, [(1, 0)], nil),
        ("+inf query", .query(.infinity, index: at(1, head: 1)), false, [(1, 1)], nil),
        ("-inf query", .query(-.infinity, index: at(2, head: 0)), false, [(2, 0)], nil),
        ("NaN key seen by all", .key(.nan, index: at(0, head: 1, column: 5)), false, [(0, 1), (1, 1), (2, 1)], nil),
        ("NaN key seen by the last query", .key(.nan, index: at(2, head: 0, column: 5)), true, [(2, 0)], nil),
        ("+inf value", .value(.infinity, index: at(1, head: 0, column: 6)), false, [(0, 0), (1, 0), (2, 0)], 6),
        ("NaN value", .value(.nan, index: at(4, head: 1, column: 2)), false, [(0, 1), (1, 1), (2, 1)], 2),
        ("NaN bias", .bias(.nan, index: (1 * shape.queries + 2) * shape.keys + 1), false, [(2, 1)], nil),
        ("+inf bias", .bias(.infinity, index: (0 * shape.queries + 0) * shape.keys + 4), false, [(0, 0)], nil),
        ("NaN bias under the mask", .bias(.nan, index: (0 * shape.queries + 0) * shape.keys + 4), true, [], nil),
    ]

    @Test(arguments: testDevices)
    func everyForwardOperatorFollowsTheRule(_ device: Device) throws {
        var checked = Set<String>()
        for dtype in [DType.float32, .bfloat16] {
            // Each case with the tensor bias and, unless the bias holds the poison, without it
            // (operators that take no tensor bias: cuda-decode).
            for (testCase, tensorBias) in Self.cases.flatMap({ testCase -> [(Self.Case, Bool)] in
                if case .bias = testCase.poison { return [(testCase, true)] }
                return [(testCase, true), (testCase, false)]
            }) {
                let inputs = try Self.inputs(testCase.poison, causal: testCase.causal, dtype: dtype, device: device, tensorBias: tensorBias)
                let problem = try inputs.validate()
                for op in Operators.namedForward where op.notSupportedReasons(problem).isEmpty {
                    checked.insert(op.name)
                    let result = try op.forward(problem)
                    let output = try result.output.toDoubleArray(), lse = try result.lse.toDoubleArray()
                    let label = "\(testCase.what)\(tensorBias ? "" : " (no tensor bias)") \(dtype) \(op.name) on \(device)"
                    for query in 0..<Self.shape.queries {
                        for head in 0..<Self.shape.heads {
                            let poisoned = testCase.nanRows.contains { $0.query == query && $0.head == head }
                            let rowLSE = lse[head * Self.shape.queries + query]
                            let rowIsNaN = poisoned && testCase.column == nil
                            #expect(rowIsNaN ? rowLSE.isNaN : rowLSE.isFinite, "\(label): LSE of (\(query), \(head)) \(rowLSE)")
                            for column in 0..<Self.shape.width {
                                let value = output[Self.at(query, head: head, column: column)]
                                if rowIsNaN {
                                    #expect(value.isNaN, "\(label): output (\(query), \(head), \(column)) \(value)")
                                } else if poisoned && testCase.column == column {
                                    #expect(!value.isFinite, "\(label): output (\(query), \(head), \(column)) \(value)")
                                } else {
                                    #expect(value.isFinite, "\(label): output (\(query), \(head), \(column)) \(value)")
                                }
                            }
                        }
                    }
                }
            }
        }
        let expected = device == .cpu ? ["cpu-reference", "cpu-tiled"] : ["cuda-decode", "cuda-flash", "cuda-reference"]
        #expect(expected.allSatisfy(checked.contains), "\(checked)")
    }
}
