/// Reference-counted memory that one or more `Tensor` views share.
///
/// Host memory is 64-byte aligned and zero-filled. Device memory arrives with the CUDA runtime;
/// until then asking for storage on `.cuda` throws `FMHAError.Kind.deviceUnavailable`.
public final class TensorStorage: @unchecked Sendable {
    /// Where the bytes live.
    public let device: Device
    /// Size in bytes.
    public let byteCount: Int
    /// Base address of host memory (`device == .cpu`).
    let hostAddress: UnsafeMutableRawPointer

    /// Allocates `byteCount` zeroed bytes on `device`.
    public init(byteCount: Int, device: Device) throws {
        guard byteCount >= 0 else {
            throw FMHAError.invalidArgument("byteCount", expected: "a size ≥ 0", got: "\(byteCount)")
        }
        guard device == .cpu else { throw device.hostOnlyError("allocating tensor storage") }
        self.device = device
        self.byteCount = byteCount
        hostAddress = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        hostAddress.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
    }

    deinit {
        hostAddress.deallocate()
    }
}
