/// Where a tensor's elements live.
public enum Device: Sendable, Hashable, CustomStringConvertible {
    /// Host memory.
    case cpu
    /// The CUDA device with this ordinal.
    case cuda(Int)

    public var description: String {
        switch self {
        case .cpu: "cpu"
        case .cuda(let ordinal): "cuda:\(ordinal)"
        }
    }

    /// The error for an operation that needs host memory but was given a tensor on `self`.
    func hostOnlyError(_ operation: String) -> FMHAError {
        FMHAError(.unsupported, "\(operation) works on host memory: move the tensor from \(self) with to(.cpu) first")
    }
}
