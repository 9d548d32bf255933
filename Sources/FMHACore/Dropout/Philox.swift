/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
/// counter-based generator whose output is a pure function of a 128-bit counter and a 64-bit key.
/// Matches the Random123 reference (and cuRAND's Philox) bit for bit.
public enum Philox {
    static let multiplier0: UInt32 = 0xD251_1F53
    static let multiplier1: UInt32 = 0xCD9E_8D57
    static let keyIncrement0: UInt32 = 0x9E37_79B9
    static let keyIncrement1: UInt32 = 0xBB67_AE85

    /// Ten rounds of Philox4x32 on `counter` with `key`: four independent uniform 32-bit words.
    @inline(__always)
    public static func generate(counter: SIMD4<UInt32>, key: SIMD2<UInt32>) -> SIMD4<UInt32> {
        var counter = counter, key = key
        for round in 0..<10 {
            if round > 0 {
                key.x &+= keyIncrement0
                key.y &+= keyIncrement1
            }
            let product0 = UInt64(multiplier0) &* UInt64(counter.x)
            let product1 = UInt64(multiplier1) &* UInt64(counter.z)
            counter = SIMD4(UInt32(truncatingIfNeeded: product1 >> 32) ^ counter.y ^ key.x,
                            UInt32(truncatingIfNeeded: product1),
                            UInt32(truncatingIfNeeded: product0 >> 32) ^ counter.w ^ key.y,
                            UInt32(truncatingIfNeeded: product0))
        }
        return counter
    }
}
