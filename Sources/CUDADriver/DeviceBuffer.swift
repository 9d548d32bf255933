/// Device memory from a context's caching allocator; goes back to the pool when released.
public final class DeviceBuffer: Sendable {
    /// The owning context.
    public let context: CUDAContext
    /// The device address (`CUdeviceptr`).
    public let address: UInt64
    /// Bytes requested.
    public let byteCount: Int
    /// Bytes of the block (its size class).
    let capacity: Int

    init(context: CUDAContext, address: UInt64, byteCount: Int, capacity: Int) {
        self.context = context
        self.address = address
        self.byteCount = byteCount
        self.capacity = capacity
    }

    deinit {
        context.recycle(address, capacity: capacity)
    }

    /// Copies `bytes` host bytes from `source` to `offset` bytes into this buffer.
    public func copy(from source: UnsafeRawPointer, bytes: Int, offset: Int = 0) throws {
        try checkRange(offset, bytes)
        try context.call(\.cuMemcpyHtoD) { $0(address + UInt64(offset), source, bytes) }
    }

    /// Queues a copy of `bytes` host bytes from `source` to `offset` bytes into this buffer on the
    /// default stream, ahead of the kernels launched after it. Returns without waiting for the
    /// device: the driver has copied pageable `source` memory into its own staging memory by then,
    /// so `source` may be freed, but the buffer must outlive the kernels that read it.
    public func enqueueCopy(from source: UnsafeRawPointer, bytes: Int, offset: Int = 0) throws {
        try checkRange(offset, bytes)
        try context.call(\.cuMemcpyHtoDAsync) { $0(address + UInt64(offset), source, bytes, nil) }
    }

    /// Copies `bytes` bytes from `offset` bytes into this buffer to host memory at `destination`.
    public func copy(to destination: UnsafeMutableRawPointer, bytes: Int, offset: Int = 0) throws {
        try checkRange(offset, bytes)
        try context.call(\.cuMemcpyDtoH) { $0(destination, address + UInt64(offset), bytes) }
    }

    /// Copies `bytes` bytes from `source` (device) into this buffer.
    public func copy(from source: DeviceBuffer, bytes: Int, sourceOffset: Int = 0, offset: Int = 0) throws {
        try checkRange(offset, bytes)
        try source.checkRange(sourceOffset, bytes)
        try context.call(\.cuMemcpyDtoD) { $0(address + UInt64(offset), source.address + UInt64(sourceOffset), bytes) }
    }

    /// Sets every byte to `value`.
    public func fill(_ value: UInt8) throws {
        try context.call(\.cuMemsetD8) { $0(address, value, byteCount) }
    }

    private func checkRange(_ offset: Int, _ bytes: Int) throws {
        guard offset >= 0, bytes >= 0, offset <= byteCount - bytes else {
            throw CUDAError(call: "copy", code: 1, name: "CUDA_ERROR_INVALID_VALUE",
                            message: "bytes \(offset)..<\(offset + bytes) are outside the buffer's \(byteCount)")
        }
    }
}
