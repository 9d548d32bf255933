/// A CUDA stream of the context (`cuStreamCreate`, non-blocking with respect to the default
/// stream); destroyed when released.
public final class CUDAStream: Sendable {
    /// The context it belongs to.
    public let context: CUDAContext
    let handle: UncheckedPointer

    /// A new stream.
    public init(context: CUDAContext) throws {
        var stream: OpaquePointer?
        try context.call(\.cuStreamCreate) { $0(&stream, 1) }
        guard let stream else {
            throw CUDAError(call: "cuStreamCreate", code: 400, name: "CUDA_ERROR_INVALID_HANDLE", message: "no stream returned")
        }
        self.context = context
        handle = UncheckedPointer(UnsafeMutableRawPointer(stream))
    }

    deinit {
        try? context.call(\.cuStreamDestroy) { $0(OpaquePointer(handle.pointer)) }
    }

    /// Waits for everything queued on the stream.
    public func synchronize() throws {
        try context.call(\.cuStreamSynchronize) { $0(OpaquePointer(handle.pointer)) }
    }
}

/// A CUDA event, for timing work on a stream (`cuEventRecord`, `cuEventElapsedTime`); destroyed
/// when released.
public final class CUDAEvent: Sendable {
    /// The context it belongs to.
    public let context: CUDAContext
    let handle: UncheckedPointer

    /// A new event.
    public init(context: CUDAContext) throws {
        var event: OpaquePointer?
        try context.call(\.cuEventCreate) { $0(&event, 0) }
        guard let event else {
            throw CUDAError(call: "cuEventCreate", code: 400, name: "CUDA_ERROR_INVALID_HANDLE", message: "no event returned")
        }
        self.context = context
        handle = UncheckedPointer(UnsafeMutableRawPointer(event))
    }

    deinit {
        try? context.call(\.cuEventDestroy) { $0(OpaquePointer(handle.pointer)) }
    }

    /// Records the event on `stream` (the default stream when nil).
    public func record(on stream: CUDAStream? = nil) throws {
        try context.call(\.cuEventRecord) { $0(OpaquePointer(handle.pointer), stream.map { OpaquePointer($0.handle.pointer) }) }
    }

    /// Waits until the recorded work has finished.
    public func synchronize() throws {
        try context.call(\.cuEventSynchronize) { $0(OpaquePointer(handle.pointer)) }
    }

    /// Milliseconds between `start` and this event (both recorded and finished).
    public func milliseconds(since start: CUDAEvent) throws -> Double {
        var milliseconds: Float = 0
        try context.call(\.cuEventElapsedTime) { $0(&milliseconds, OpaquePointer(start.handle.pointer), OpaquePointer(handle.pointer)) }
        return Double(milliseconds)
    }
}
