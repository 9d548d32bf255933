/// A CUDA stream of the context (`cuStreamCreate`, non-blocking with respect to the default
/// stream); destroyed when released.
public final class CUDAStream: Sendable {
    /// The context it belongs to.
    public let context: CUDAContext
    let handle: DriverHandle<CUDAStream>

    /// A new stream.
    public init(context: CUDAContext) throws {
        self.context = context
        handle = try context.makeHandle(\.cuStreamCreate, { $0($1, 1) }, destroy: \.cuStreamDestroy)
    }

    /// Waits for everything queued on the stream.
    public func synchronize() throws {
        try context.call(\.cuStreamSynchronize) { $0(handle.pointer) }
    }
}

/// A CUDA event, for timing work on a stream (`cuEventRecord`, `cuEventElapsedTime`); destroyed
/// when released.
public final class CUDAEvent: Sendable {
    /// The context it belongs to.
    public let context: CUDAContext
    let handle: DriverHandle<CUDAEvent>

    /// A new event.
    public init(context: CUDAContext) throws {
        self.context = context
        handle = try context.makeHandle(\.cuEventCreate, { $0($1, 0) }, destroy: \.cuEventDestroy)
    }

    /// Records the event on `stream` (the default stream when nil).
    public func record(on stream: CUDAStream? = nil) throws {
        try context.call(\.cuEventRecord) { $0(handle.pointer, stream?.handle.pointer) }
    }

    /// Waits until the recorded work has finished.
    public func synchronize() throws {
        try context.call(\.cuEventSynchronize) { $0(handle.pointer) }
    }

    /// Milliseconds between `start` and this event (both recorded and finished).
    public func milliseconds(since start: CUDAEvent) throws -> Double {
        var milliseconds: Float = 0
        try context.call(\.cuEventElapsedTime) { $0(&milliseconds, start.handle.pointer, handle.pointer) }
        return Double(milliseconds)
    }
}
