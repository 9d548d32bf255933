import Testing
import FMHATestSupport
@testable import FMHACore

/// Quantized K/V caches (`KeyValueFormat`): the fp8 e4m3 values and rounding, the int4 and fp8
/// row layouts against hand-packed words, quantization error bounds, and the validation of int32
/// K/V (with xFormers' rule that only int32 key and value may differ from the query's dtype).
@Suite struct KeyValueQuantizationTests {
    /// One float16 scale/shift word (scale in the low half).
    static func pair(scale: Float16, shift: Float16) -> Int32 {
        Int32(bitPattern: UInt32(scale.bitPattern) | UInt32(shift.bitPattern) << 16)
    }

    @Test func e4m3ValuesAndRounding() {
        let values = FP8E4M3.values
        #expect(values[0x38] == 1 && values[0xB8] == -1 && values[0x7E] == 448 && values[0xFE] == -448)
        #expect(values[0x08] == 0x1p-6 && values[0x01] == 0x1p-9 && values[0x07] == 7 * 0x1p-9 && values[0x39] == 1.125)
        #expect(values[0x7F].isNaN && values[0xFF].isNaN && values[0x80] == 0 && values[0x80].sign == .minus)
        // Every non-NaN byte is its value's encoding.
        for byte in 0..<256 where !values[byte].isNaN { #expect(FP8E4M3.encode(values[byte]) == UInt8(byte), "byte \(byte)") }
        // Ties to even, saturation, subnormal steps, NaN.
        #expect(FP8E4M3.encode(1.0625) == 0x38 && FP8E4M3.encode(1.1875) == 0x3A && FP8E4M3.encode(1.07) == 0x39)
        #expect(FP8E4M3.encode(1000) == 0x7E && FP8E4M3.encode(-1e30) == 0xFE && FP8E4M3.encode(.infinity) == 0x7E)
        #expect(FP8E4M3.encode(1.5 * 0x1p-9) == 0x02 && FP8E4M3.encode(0x1p-11) == 0x00 && FP8E4M3.encode(.nan) == 0x7F)
    }

    /// The values of `dtype` next to `value` (one of them) below and above it.
    static func neighbours(of value: Double, _ dtype: DType) -> [Double] {
        switch dtype {
        case .float16: return [Double(Float16(value).nextDown), Double(Float16(value).nextUp)]
        case .bfloat16:
            let bits = BFloat16(Float(value)).bitPattern, magnitude = bits & 0x7FFF, sign = bits & 0x8000
            let down = magnitude == 0 ? 0x8001 : sign | (magnitude - 1)
            return [BFloat16(bitPattern: sign | (magnitude + 1)), BFloat16(bitPattern: down)].map { Double($0.floatValue) }
        default: return [Double(Float(value).nextDown), Double(Float(value).nextUp)]
        }
    }

    /// The smallest magnitude that rounds to infinity in `dtype`.
    static func overflowThreshold(_ dtype: DType) -> Double {
        switch dtype {
        case .float16: 65520
        case .bfloat16: (2 - 0x1p-8) * 0x1p127
        default: (2 - 0x1p-24) * 0x1p127
        }
    }

    @Test(arguments: [DType.float16, .bfloat16, .float32])
    func dequantizingRoundsTheExactValueOnce(dtype: DType) throws {
        // Every e4m3 byte and int4 step against float16 scales and shifts of every magnitude: the
        // result is the value of dtype nearest to x·scale + shift (ties to even), with scale and
        // shift first rounded to dtype.
        let halves: [Float16] = [0x1p-24, 0x1p-14, 0.001, 0.3, -0.7, 1, 3.14, -100, 2050, 65504, -65504, 0x1.ffcp-15, 0.10004]
        // Byte n of word w is 4w + n: every byte once.
        let fp8Words: [Int32] = (0..<64).map { (w: Int) -> Int32 in
            let first = UInt32(4 * w)
            return Int32(bitPattern: first | (first + 1) << 8 | (first + 2) << 16 | (first + 3) << 24)
        }
        var checked = 0
        for scale in halves {
            for shift in halves + [0] {
                let pair = Self.pair(scale: scale, shift: shift)
                let fp8 = try KeyValueFormat.fp8.dequantize(Tensor(shape: [1, 64], words: fp8Words), scaleShift: Tensor(shape: [1], words: [pair]),
                                                            headDimension: 256, dtype: dtype).toDoubleArray()
                let int4 = try KeyValueFormat.int4(groups: 1).dequantize(
                    Tensor(shape: [1, 3], words: [pair, Int32(bitPattern: 0x7654_3210), Int32(bitPattern: 0xFEDC_BA98)]),
                    scaleShift: nil, headDimension: 16, dtype: dtype).toDoubleArray()
                let (s, t) = dtype == .bfloat16 ? (Double(BFloat16(Float(scale)).floatValue), Double(BFloat16(Float(shift)).floatValue))
                                                : (Double(scale), Double(shift))
                let xs: [Double] = FP8E4M3.values.map { Double($0) } + (0..<16).map { Double($0) }
                for (x, result) in zip(xs, fp8 + int4) where !x.isNaN {
                    let exact = x * s + t
                    // (Only where the double holds the exact value.)
                    guard exact - t == x * s, exact.magnitude < 1e30 else { continue }
                    if result.isInfinite {
                        #expect(exact.magnitude >= Self.overflowThreshold(dtype) && (result > 0) == (exact > 0), "\(dtype): \(exact) → \(result)")
                        continue
                    }
                    let error: Double = (result - exact).magnitude
                    for neighbour in Self.neighbours(of: result, dtype) {
                        let other: Double = (neighbour - exact).magnitude
                        #expect(error < other || (error == other && Self.isEven(result, dtype)), "\(dtype): \(x)·\(scale) + \(shift) = \(exact) → \(result)")
                    }
                    checked += 1
                }
            }
        }
        #expect(checked > 30_000)
    }

    /// Whether `value`'s last significand bit in `dtype` is 0.
    static func isEven(_ value: Double, _ dtype: DType) -> Bool {
        switch dtype {
        case .float16: Float16(value).bitPattern & 1 == 0
        case .bfloat16: BFloat16(Float(value)).bitPattern & 1 == 0
        default: Float(value).bitPattern & 1 == 0
        }
    }

    @Test func int4RowLayout() throws {
        // K = 16, 2 groups: elements 8w + n are nibble n of data word w; group 1 starts at element 8.
        let row: [Int32] = [Self.pair(scale: 2, shift: -1), Self.pair(scale: 0.5, shift: 10),
                            Int32(bitPattern: 0x7654_3210), Int32(bitPattern: 0xFEDC_BA98)]
        let values = try KeyValueFormat.int4(groups: 2).dequantize(Tensor(shape: [1, 4], words: row), scaleShift: nil,
                                                                   headDimension: 16, dtype: .float32).toArray()
        let first: [Float] = (0..<8).map { Float($0) * 2 - 1 }, second: [Float] = (8..<16).map { Float($0) * 0.5 + 10 }
        #expect(values == first + second)
    }

    @Test func fp8RowLayout() throws {
        // Element 4w + n is byte n of word w; the row's scale/shift word comes from its own tensor.
        let words = try Tensor(shape: [1, 2], words: [Int32(bitPattern: 0x7E00_B838), Int32(bitPattern: 0x0801_3940)])
        let pairs = try Tensor(shape: [1], words: [Self.pair(scale: 0.5, shift: 1)])
        let values = try KeyValueFormat.fp8.dequantize(words, scaleShift: pairs, headDimension: 8, dtype: .float32).toArray()
        #expect(values == [1.5, 0.5, 1, 225, 2, 1.5625, 1 + 0x1p-10, 1 + 0x1p-7])
    }

    @Test(arguments: [KeyValueFormat.int4(groups: 1), .int4(groups: 2), .int4(groups: 4), .int4(groups: 8), .fp8])
    func quantizationErrorIsWithinHalfAStep(format: KeyValueFormat) throws {
        let x = try randn([3, 5, 2, 64], 11, .float32)
        let (words, pairs) = try format.quantize(x)
        #expect(words.dtype == .int32 && words.shape == [3, 5, 2, format.wordsPerRow(headDimension: 64)])
        #expect(pairs?.shape == (format == .fp8 ? [3, 5, 2] : nil))
        let back = try format.dequantize(words, scaleShift: pairs, headDimension: 64, dtype: .float32).toArray()
        let original = try x.toArray()
        for row in 0..<(original.count / 64) {
            let part = original[row * 64 ..< (row + 1) * 64], restored = back[row * 64 ..< (row + 1) * 64]
            let range = (part.max() ?? 0) - (part.min() ?? 0)
            for (offset, (a, b)) in zip(part, restored).enumerated() {
                switch format {
                case .int4(let groups):
                    // Half a step of the element's group (15 steps over its range), plus float16
                    // rounding of scale and shift.
                    let size = 64 / groups, group = part.dropFirst(offset / size * size).prefix(size)
                    let groupRange = (group.max() ?? 0) - (group.min() ?? 0)
                    #expect(abs(a - b) <= groupRange / 30 * 1.02 + 4e-3, "\(format) row \(row): \(a) → \(b)")
                case .fp8:
                    // e4m3 keeps 3 mantissa bits: half an ulp is 1/16 of the magnitude (of |x − shift| ≤ range).
                    #expect(abs(a - b) <= range / 16 + 4e-3, "fp8 row \(row): \(a) → \(b)")
                }
            }
        }
    }

    @Test func dequantizedProblemKeepsSharedHeadsAndRoundsToTheQueryDType() throws {
        let query = try randn([1, 3, 2, 4, 32], 1, .bfloat16)
        let cache = try randn([1, 9, 2, 1, 32], 2, .float32)
        let (words, _) = try KeyValueFormat.int4(groups: 4).quantize(cache)
        let shared = try words.expanded(to: [1, 9, 2, 4, 8])
        let problem = try Inputs(query: query, key: shared, value: shared).validate()
        #expect(problem.keyValueFormat == .int4(groups: 4) && problem.dimensions.valueHeadDimension == 32)
        let plain = try problem.dequantized()
        #expect(plain.keyValueFormat == nil && plain.key.dtype == .bfloat16 && plain.key.strides[3] == 0)
        let expected = try KeyValueFormat.int4(groups: 4).dequantize(words, scaleShift: nil, headDimension: 32, dtype: .bfloat16)
            .expanded(to: [1, 9, 2, 4, 32]).toDoubleArray()
        #expect(try plain.key.toDoubleArray() == expected && plain.value.toDoubleArray() == expected)
    }

    @Test func fp8RowsAreSharedOnlyWhereTheirScaleShiftWordsAreToo() throws {
        // Words shared by 4 heads (stride 0), scale/shift words per head: each head dequantizes
        // with its own pair, and no kernel may read the heads' rows once for all of them.
        let query = try randn([1, 2, 1, 4, 8], 1, .float32)
        let words = try Tensor(shape: [1, 3, 1, 1, 2], words: (0..<6).map { _ in Int32(bitPattern: 0x3838_3838) })
            .expanded(to: [1, 3, 1, 4, 2])
        let perHead = try Tensor(shape: [1, 3, 1, 4], words: (0..<12).map { Self.pair(scale: Float16($0 % 4 + 1), shift: 0) })
        let problem = try Inputs(query: query, key: words, value: words, keyScaleShift: perHead, valueScaleShift: perHead).validate()
        #expect(problem.keyValueHeads.sharing == [1, 1, 1])
        let key = try problem.dequantized().key.toArray()
        // Element value 1.0 (e4m3 0x38) times head h's scale h + 1.
        #expect(key == (0..<3).flatMap { _ in (0..<4).flatMap { h in [Float](repeating: Float(h + 1), count: 8) } })
        // Shared scale/shift words too: the heads share their rows.
        let sharedPairs = try perHead.slice(dimension: 3, range: 0..<1).expanded(to: [1, 3, 1, 4])
        let shared = try Inputs(query: query, key: words, value: words, keyScaleShift: sharedPairs, valueScaleShift: sharedPairs).validate()
        #expect(try shared.keyValueHeads.sharing == [1, 1, 4] && shared.dequantized().key.strides[3] == 0)
    }

    /// Validation fails with a message containing every one of `fragments`.
    func expectFailure(_ inputs: Inputs, mentioning fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
        let error = #expect(throws: FMHAError.self, sourceLocation: sourceLocation) { try inputs.validate() }
        for fragment in fragments {
            #expect(error?.message.contains(fragment) == true, "\(error?.message ?? "no error") lacks \(fragment)",
                    sourceLocation: sourceLocation)
        }
    }

    @Test func validationOfQuantizedCaches() throws {
        let query = try randn([2, 1, 3, 64], 1, .float16)
        let int4 = try Tensor.zeros([2, 50, 3, 8 + 2], dtype: .int32), fp8 = try Tensor.zeros([2, 50, 3, 16], dtype: .int32)
        let pairs = try Tensor.zeros([2, 50, 3], dtype: .int32)
        #expect(try Inputs(query: query, key: int4, value: int4).validate().keyValueFormat == .int4(groups: 2))
        let problem = try Inputs(query: query, key: fp8, value: fp8, keyScaleShift: pairs, valueScaleShift: pairs).validate()
        #expect(problem.keyValueFormat == .fp8 && problem.keyScaleShift?.shape == [2, 50, 1, 3])
        let plain = try randn([2, 50, 3, 64], 2, .float16)
        expectFailure(Inputs(query: query, key: int4, value: plain), mentioning: "int32 key and value", "value float16")
        expectFailure(Inputs(query: try Tensor.zeros([2, 1, 3, 64], dtype: .int32), key: int4, value: int4), mentioning: "floating-point")
        // 3 groups; 16 groups; a query head dimension that is no multiple of 8 for int4.
        let three = try Tensor.zeros([2, 50, 3, 11], dtype: .int32)
        expectFailure(Inputs(query: query, key: three, value: three), mentioning: "1, 2, 4 or 8 int4 groups, got 3")
        let sixteen = try Tensor.zeros([2, 50, 3, 24], dtype: .int32)
        expectFailure(Inputs(query: query, key: sixteen, value: sixteen), mentioning: "got 16")
        expectFailure(Inputs(query: try randn([2, 1, 3, 20], 3, .float16), key: int4, value: int4), mentioning: "multiple of 8")
        // int4 with 8 groups needs K a multiple of 64.
        let eight = try Tensor.zeros([2, 50, 3, 4 + 8], dtype: .int32)
        expectFailure(Inputs(query: try randn([2, 1, 3, 32], 3, .float16), key: eight, value: eight), mentioning: "multiple of 8 × 8 groups")
        // Key and value rows of different widths.
        expectFailure(Inputs(query: query, key: int4, value: try Tensor.zeros([2, 50, 3, 9], dtype: .int32)), mentioning: "rows of 10 words")
        // fp8: both scale/shift tensors, int32, the cache's shape without its last dimension.
        expectFailure(Inputs(query: query, key: fp8, value: fp8, keyScaleShift: pairs), mentioning: "valueScaleShift", "none")
        expectFailure(Inputs(query: query, key: fp8, value: fp8, keyScaleShift: pairs, valueScaleShift: try Tensor.zeros([2, 50, 3])),
                      mentioning: "valueScaleShift", "float32")
        expectFailure(Inputs(query: query, key: fp8, value: fp8, keyScaleShift: try Tensor.zeros([2, 49, 3], dtype: .int32),
                             valueScaleShift: pairs), mentioning: "keyScaleShift", "[2, 50, 3]")
        expectFailure(Inputs(query: query, key: plain, value: plain, keyScaleShift: pairs, valueScaleShift: pairs),
                      mentioning: "only with an int32")
        // Quantizing refuses what it cannot store.
        #expect(throws: FMHAError.self) { try KeyValueFormat.int4(groups: 2).quantize(randn([4, 24], 1)) }
        #expect(throws: FMHAError.self) { try KeyValueFormat.fp8.quantize(Tensor.zeros([4, 8], dtype: .int32)) }
        // int32 is storage, not a bias dtype.
        #expect(throws: FMHAError.self) { try LowerTriangularMask().materialize(shape: [2, 2], dtype: .int32) }
    }
}
