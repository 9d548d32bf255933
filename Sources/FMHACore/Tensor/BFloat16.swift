/// A bfloat16 number: sign, 8 exponent bits and 7 mantissa bits, i.e. the upper 16 bits of a
/// `Float`.
///
/// Conversion from `Float` rounds to nearest, ties to even; NaN stays NaN (made quiet, sign kept)
/// and values beyond the largest finite bfloat16 round to infinity, as IEEE rounding requires.
/// Equality and hashing compare bit patterns (so `+0 != -0` and a NaN equals itself); compare
/// `floatValue`s for IEEE semantics.
public struct BFloat16: Sendable, Hashable, CustomStringConvertible {
    /// The raw 16 bits.
    public var bitPattern: UInt16

    /// Wraps raw bits.
    public init(bitPattern: UInt16) {
        self.bitPattern = bitPattern
    }

    /// Rounds `value` to the nearest bfloat16 (ties to even).
    public init(_ value: Float) {
        let bits = value.bitPattern
        if value.isNaN {
            // Keep the sign and the top payload bits; set the quiet bit so it cannot become inf.
            bitPattern = UInt16(truncatingIfNeeded: bits >> 16) | 0x0040
            return
        }
        // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even, and carries into
        // the exponent (up to infinity) exactly when IEEE rounding would.
        let lowestKeptBit = (bits >> 16) & 1
        bitPattern = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ lowestKeptBit) >> 16)
    }

    /// Rounds `value` to the nearest bfloat16 (ties to even) with a single rounding: the step
    /// through `Float` rounds to odd, which keeps enough bits for the last step to be exact.
    @_disfavoredOverload
    public init(_ value: Double) {
        self.init(Float.roundedToOdd(value))
    }

    /// The exact value as a `Float`.
    public var floatValue: Float { Float(bitPattern: UInt32(bitPattern) << 16) }

    /// True for either NaN encoding.
    public var isNaN: Bool { floatValue.isNaN }

    public var description: String { floatValue.description }
}

extension Float {
    /// `value` rounded to a float, to odd: the nearest float when it is exact, else the neighbour
    /// of the two around `value` whose last bit is 1. Rounding that once more to a format of at
    /// most 22 significant bits (float16, bfloat16) gives what rounding `value` directly would.
    public static func roundedToOdd(_ value: Double) -> Float {
        var narrowed = Float(value)
        if narrowed.isFinite, Double(narrowed) != value, narrowed.bitPattern & 1 == 0 {
            narrowed = Double(narrowed) < value ? narrowed.nextUp : narrowed.nextDown
        }
        return narrowed
    }

    /// The exact value of a bfloat16.
    public init(_ value: BFloat16) {
        self = value.floatValue
    }
}
