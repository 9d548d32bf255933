import Testing
import FMHATestSupport
@testable import FMHACore

/// BFloat16 conversion: round to nearest even, NaN, infinities, signed zero, overflow.
@Suite struct BFloat16Tests {
    @Test func exactValuesRoundTrip() {
        for value: Float in [0, 1, -1, 0.5, 3, 1 + 0x1p-7, -65536, 0x1p-126] {
            #expect(BFloat16(value).floatValue == value)
        }
    }

    @Test func tiesGoToEven() {
        // Halfway between 1 (even mantissa) and 1 + 2⁻⁷: down to 1.
        #expect(BFloat16(1 + 0x1p-8).floatValue == 1)
        // Halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up to the even one.
        #expect(BFloat16(1 + 0x1p-7 + 0x1p-8).floatValue == 1 + 0x1p-6)
        // Just above and below the tie go to the nearest.
        #expect(BFloat16((1 + 0x1p-8).nextUp).floatValue == 1 + 0x1p-7)
        #expect(BFloat16((1 + 0x1p-7 + 0x1p-8).nextDown).floatValue == 1 + 0x1p-7)
        #expect(BFloat16(-(1 + 0x1p-8)).floatValue == -1)
    }

    @Test func specialValues() {
        #expect(BFloat16(Float.infinity).floatValue == .infinity)
        #expect(BFloat16(-Float.infinity).floatValue == -.infinity)
        #expect(BFloat16(Float.nan).isNaN)
        #expect(BFloat16(-Float.nan).floatValue.sign == .minus)
        // A signalling NaN whose payload sits only in the dropped bits must stay NaN, not become inf.
        let signalling = Float(bitPattern: 0x7F80_0001)
        #expect(signalling.isNaN)
        #expect(BFloat16(signalling).isNaN)
        let negativeZero: Float = -0.0
        #expect(BFloat16(negativeZero).bitPattern == 0x8000)
        // The largest Float rounds past the largest finite bfloat16 to infinity.
        let largest: Float = .greatestFiniteMagnitude
        #expect(BFloat16(largest).floatValue == Float.infinity)
        // Subnormals keep their top bits.
        let subnormal = Float(bitPattern: 0x0001_0000)
        #expect(BFloat16(subnormal).floatValue == subnormal)
    }

    @Test func bitPatternsAndFloatInit() {
        #expect(BFloat16(1).bitPattern == 0x3F80)
        #expect(Float(BFloat16(bitPattern: 0xC000)) == -2)
        let justAboveTie: Double = 1 + 0x1p-8 + 0x1p-40
        #expect(BFloat16(justAboveTie).floatValue == 1 + 0x1p-7)
        #expect(BFloat16(1).description == "1.0")
    }
}
