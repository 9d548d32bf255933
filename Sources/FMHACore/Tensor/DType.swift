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

    /// Size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        case .float64: 8
        }
    }

    public var description: String { rawValue }
}
