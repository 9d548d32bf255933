/// How a key or value cache holds its elements when it is quantized: packed into int32 words, as
/// xFormers' split-K decoder (`triton_splitk`) takes them. Dequantized, an element is
/// `x·scale + shift` (`x` the stored integer or fp8 value, `scale` and `shift` float16, first
/// rounded to the query's dtype: exact but for bfloat16) computed exactly and rounded once to the
/// query's dtype, which is what the kernels compute in (one paired fused multiply-add of that
/// dtype per two elements on the GPU).
public enum KeyValueFormat: Sendable, Hashable, CustomStringConvertible {
    /// int4 with `groups` (1, 2, 4 or 8) scale/shift pairs per row: a row of head dimension K is
    /// `groups + K/8` words. Word g < `groups` holds group g's float16 scale in its low and its
    /// float16 shift in its high 16 bits; then word `groups + w` holds elements 8w ..< 8w + 8,
    /// element 8w + n in bits 4n ..< 4n + 4 (unsigned). Group g covers elements
    /// g·K/groups ..< (g + 1)·K/groups.
    case int4(groups: Int)
    /// fp8 e4m3 (the `fn` kind: no infinities, NaN at S.1111.111), a row of K elements in K/4
    /// words, element 4w + n in byte n of word w (bits 8n ..< 8n + 8). Each row's float16 scale
    /// (low 16 bits) and shift (high 16 bits) are one int32 word of a separate tensor shaped like
    /// the cache without its last dimension (`Inputs.keyScaleShift`, `valueScaleShift`).
    case fp8

    /// The group sizes int4 rows may have.
    public static let int4GroupCounts = [1, 2, 4, 8]

    public var description: String {
        switch self {
        case .int4(let groups): "int4 (\(groups) group\(groups == 1 ? "" : "s"))"
        case .fp8: "fp8 e4m3 row-wise"
        }
    }

    /// int32 words in a row of `headDimension` elements.
    public func wordsPerRow(headDimension: Int) -> Int {
        switch self {
        case .int4(let groups): groups + headDimension / 8
        case .fp8: headDimension / 4
        }
    }

    /// Whether rows of `headDimension` elements can be stored in this format.
    public func canStore(headDimension: Int) -> Bool { headDimensionProblem(headDimension) == nil }

    /// Why rows of `headDimension` elements cannot be stored in this format (nil when they can).
    func headDimensionProblem(_ headDimension: Int) -> String? {
        switch self {
        case .int4(let groups):
            guard Self.int4GroupCounts.contains(groups) else { return "1, 2, 4 or 8 int4 groups, got \(groups)" }
            return headDimension % (8 * groups) == 0 ? nil
                : "a head dimension that is a multiple of 8 × \(groups) groups for int4 (whole words per group), got \(headDimension)"
        case .fp8:
            return headDimension % 4 == 0 ? nil : "a head dimension that is a multiple of 4 for fp8, got \(headDimension)"
        }
    }
}

/// fp8 e4m3 (`float8_e4m3fn`): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; the
/// largest finite value is 448; S.1111.111 is NaN.
public enum FP8E4M3 {
    /// The value of every byte.
    public static let values: [Float] = (0..<256).map { decode(UInt8($0)) }

    /// The value of `byte`.
    static func decode(_ byte: UInt8) -> Float {
        let sign: Float = byte & 0x80 != 0 ? -1 : 1
        let exponent = Int((byte >> 3) & 0xF), mantissa = Float(byte & 7)
        if exponent == 15, byte & 7 == 7 { return .nan }
        if exponent == 0 { return sign * mantissa / 8 * Float(sign: .plus, exponent: -6, significand: 1) }
        return sign * (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
    }

    /// `value` rounded to the nearest e4m3 (ties to even), saturating at ±448; NaN gives NaN.
    public static func encode(_ value: Float) -> UInt8 {
        if value.isNaN { return 0x7F }
        let sign: UInt8 = value.sign == .minus ? 0x80 : 0
        let magnitude = abs(value)
        if magnitude >= 448 { return sign | 0x7E }
        let smallestNormal = Float(sign: .plus, exponent: -6, significand: 1)
        if magnitude < smallestNormal {
            // Subnormals: steps of 2^-9 (code 8 is the smallest normal).
            let steps = (magnitude * 512).rounded(.toNearestOrEven)
            return sign | UInt8(steps)
        }
        let exponent = Int(magnitude.exponent)
        let mantissa = (magnitude.significand - 1) * 8
        var step = Int(mantissa.rounded(.toNearestOrEven)), biased = exponent + 7
        if step == 8 { step = 0; biased += 1 }
        let code = min(0x7E, (biased << 3) | step)
        return sign | UInt8(code)
    }
}
