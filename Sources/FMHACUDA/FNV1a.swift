/// The 64-bit FNV-1a hash (Fowler, Noll, Vo): small, fast and stable across runs and machines,
/// which is all a cache key and a corruption check need. Not cryptographic.
struct FNV1a: Sendable {
    /// The hash of the bytes combined so far.
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    /// Mixes `bytes` into the hash.
    mutating func combine(_ bytes: some Sequence<UInt8>) {
        for byte in bytes {
            value = (value ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
    }

    /// Mixes `text`'s UTF-8 and then a zero byte, so that ("ab", "c") and ("a", "bc") differ.
    mutating func combine(field text: String) {
        combine(text.utf8)
        combine(CollectionOfOne(0))
    }

    /// `value` as 16 lowercase hex digits.
    var hexadecimal: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
