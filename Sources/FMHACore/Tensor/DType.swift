/// The element type of a `Tensor`.
public enum DType: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// IEEE binary32.
    case float32
    /// IEEE binary16 (Swift's `Float16`).
    case float16
    /// bfloat16: the upper half of a binary32 (`BFloat16`).
    case bfloat16
    /// IEEE binary64, for reference computations on the CPU.
    case float64
    /// 32-bit two's-complement integers: storage for quantized K/V caches (int4 nibbles or fp8
    /// bytes packed into words, as xFormers' split-K decoder takes them). Not an attention dtype.
    case int32

    /// The floating-point dtypes, the ones attention computes in.
    public static let floatingPointCases: [DType] = [.float32, .float16, .bfloat16, .float64]

    /// Whether this is a floating-point dtype (every case but `int32`).
    public var isFloatingPoint: Bool { self != .int32 }

    /// Size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .float32, .int32: 4
        case .float16, .bfloat16: 2
        case .float64: 8
        }
    }

    public var description: String { rawValue }
}
