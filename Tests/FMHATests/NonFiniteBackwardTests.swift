import FMHATestSupport
import FMHA
import Testing

/// The non-finite rule carried through the backward (docs/ARCHITECTURE.md "Non-finite values"), on
/// every backward operator of every test device, dispatched or variant, from the dispatched
/// forward's output and LSE: a NaN that a query row sees makes that row's dQ NaN and the dK and dV
/// rows of every key the row sees NaN (they sum over it), as the chain rule through PyTorch's
/// attention gives; the gradients of rows and keys it does not reach stay finite (known gap: not
/// on the tiled kernels under a mask, see below); NaN in a key no query sees reaches nothing.
@Suite struct NonFiniteBackwardTests {
    /// B = 1, Mq = Mkv = 6, H = 2, K = Kv = 8.
    static let shape = (length: 6, heads: 2, width: 8)

    /// A NaN written at (row, head, column) of the query or key, under `bias`; and which rows of dq
    /// and which key rows of dk / dv must be NaN in that head (the other head is finite everywhere).
    struct Case {
        let what: String
        let poisonQuery: Bool
        let row: Int
        let bias: (any AttentionBias)?
        let nanQueryRows: [Int], nanKeyRows: [Int]
    }

    static let cases = [
        // Query row 2 sees every key: its dq, and every key's dk and dv.
        Case(what: "NaN query, no mask", poisonQuery: true, row: 2, bias: nil, nanQueryRows: [2], nanKeyRows: Array(0..<6)),
        // Causal: query row 2 sees keys 0 ... 2.
        Case(what: "NaN query, causal", poisonQuery: true, row: 2, bias: LowerTriangularMask(), nanQueryRows: [2], nanKeyRows: [0, 1, 2]),
        // Causal: key 3 is seen by rows 3 ... 5, which see keys 0 ... 5 between them.
        Case(what: "NaN key, causal", poisonQuery: false, row: 3, bias: LowerTriangularMask(), nanQueryRows: [3, 4, 5],
             nanKeyRows: Array(0..<6)),
    ]

    static func index(_ row: Int, head: Int, column: Int) -> Int { (row * shape.heads + head) * shape.width + column }

    @Test(arguments: testDevices)
    func everyBackwardOperatorCarriesNaNToWhatItReaches(_ device: Device) throws {
        let s = Self.shape
        var checked = Set<String>()
        for dtype in [DType.float32, .bfloat16] {
            for testCase in Self.cases {
                var q = try Tensor.randn([1, s.length, s.heads, s.width], dtype: .float32, seed: 1).toArray()
                var k = try Tensor.randn([1, s.length, s.heads, s.width], dtype: .float32, seed: 2).toArray()
                if testCase.poisonQuery {
                    q[Self.index(testCase.row, head: 0, column: 1)] = .nan
                } else {
                    k[Self.index(testCase.row, head: 0, column: 1)] = .nan
                }
                func tensor(_ values: [Float]) throws -> Tensor {
                    try Tensor(shape: [1, s.length, s.heads, s.width], scalars: values, dtype: dtype).to(device)
                }
                let query = try tensor(q), key = try tensor(k)
                let value = try Tensor.randn([1, s.length, s.heads, s.width], dtype: dtype, device: device, seed: 3)
                let gradOutput = try Tensor.randn([1, s.length, s.heads, s.width], dtype: dtype, device: device, seed: 4)
                let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: testCase.bias)
                let problem = try Inputs(query: query, key: key, value: value, bias: testCase.bias).validate()
                for op in Operators.backward + Operators.backwardVariants where op.notSupportedReasons(problem).isEmpty {
                    checked.insert(op.name)
                    let gradients = try memoryEfficientAttentionBackward(
                        gradOutput, output: forward.output, lse: forward.lse, query: query, key: key, value: value,
                        bias: testCase.bias, op: op)
                    let label = "\(testCase.what) \(dtype) \(op.name) on \(device)"
                    let gradients3 = [("dq", try gradients.dq.toDoubleArray(), testCase.nanQueryRows),
                                      ("dk", try gradients.dk.toDoubleArray(), testCase.nanKeyRows),
                                      ("dv", try gradients.dv.toDoubleArray(), testCase.nanKeyRows)]
                    func rows(nan: Bool) -> [(what: String, values: [Double])] {
                        gradients3.flatMap { name, values, nanRows in
                            (0..<s.length).flatMap { row in
                                (0..<s.heads).compactMap { head -> (String, [Double])? in
                                    guard (head == 0 && nanRows.contains(row)) == nan else { return nil }
                                    return ("\(name) row \(row) head \(head)", (0..<s.width).map { values[Self.index(row, head: head, column: $0)] })
                                }
                            }
                        }
                    }
                    for (what, slice) in rows(nan: true) {
                        #expect(slice.allSatisfy { $0.isNaN }, "\(label): \(what): \(slice)")
                    }
                    func expectFinite() {
                        for (what, slice) in rows(nan: false) {
                            #expect(slice.allSatisfy { $0.isFinite }, "\(label): \(what): \(slice)")
                        }
                    }
                    // The tiled kernels multiply whole tiles: under a mask, a NaN query (key) row
                    // reaches the dK/dV (dQ) rows of keys (queries) it is masked from inside a
                    // tile, as 0·NaN. The float64 reference skips masked pairs.
                    if testCase.bias != nil, op.name.hasPrefix("cpu-tiled") || op.name.hasPrefix("cuda-flash") {
                        withKnownIssue("0·NaN inside a tile's products (docs/ARCHITECTURE.md, Non-finite values)") { expectFinite() }
                    } else {
                        expectFinite()
                    }
                }
            }
        }
        let expected = device == .cpu ? ["cpu-reference", "cpu-tiled"] : ["cuda-flash", "cuda-reference"]
        #expect(expected.allSatisfy(checked.contains), "\(checked)")
    }

    @Test(arguments: testDevices)
    func nanInKeysNoQuerySeesReachesNoGradient(_ device: Device) throws {
        // Two sequences of 3 queries over padded keys (5 of 8, 2 of 8): the padding rows hold NaN.
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [3, 3], kvPadding: 8, kvSeqlen: [5, 2])
        var keys = try Tensor.randn([1, 16, 1, 8], dtype: .float32, seed: 5).toArray()
        for row in 0..<16 where row % 8 >= (row < 8 ? 5 : 2) {
            for column in 0..<8 { keys[row * 8 + column] = .nan }
        }
        for dtype in [DType.float32, .bfloat16] {
            let k = try Tensor(shape: [1, 16, 1, 8], scalars: keys, dtype: dtype).to(device)
            let q = try Tensor.randn([1, 6, 1, 8], dtype: dtype, device: device, seed: 6)
            let gradOutput = try Tensor.randn([1, 6, 1, 8], dtype: dtype, device: device, seed: 7)
            let forward = try memoryEfficientAttentionForwardRequiresGrad(q, k, k, bias: bias)
            let problem = try Inputs(query: q, key: k, value: k, bias: bias).validate()
            for op in Operators.backward + Operators.backwardVariants where op.notSupportedReasons(problem).isEmpty {
                let gradients = try memoryEfficientAttentionBackward(gradOutput, output: forward.output, lse: forward.lse,
                                                                     query: q, key: k, value: k, bias: bias, op: op)
                #expect(try gradients.dq.toDoubleArray().allSatisfy(\.isFinite), "\(dtype) \(op.name) on \(device): dq")
                // dK and dV of K = V: finite on the keys the queries see, zero on the padding.
                let dk = try gradients.dk.toDoubleArray(), dv = try gradients.dv.toDoubleArray()
                for row in 0..<16 {
                    let seen = row % 8 < (row < 8 ? 5 : 2)
                    let rows = [dk, dv].map { Array($0[(row * 8)..<(row * 8 + 8)]) }
                    #expect(rows.allSatisfy { seen ? $0.allSatisfy(\.isFinite) : $0.allSatisfy { $0 == 0 } },
                            "\(dtype) \(op.name) on \(device): key row \(row): \(rows)")
                }
            }
        }
    }
}
