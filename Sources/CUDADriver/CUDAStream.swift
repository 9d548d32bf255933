/// A CUDA stream of the context (`cuStreamCreate`, non-blocking with respect to the default
/// stream); destroyed when released.
public final class CUDAStream: Sendable {
    /// The context it belongs to.
    public let context: CUDAContext
    let handle: UncheckedPointer

    /// A new stream.
    public init(context: CUDAContext) throws {
        typealias Create = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?, UInt32) -> Int32
        try context.makeCurrent()
        var stream: OpaquePointer?
        let driver = context.driver
        try driver.check("cuStreamCreate", try driver.call("cuStreamCreate", as: Create.self)(&stream, 1))
        guard let stream else {
            throw CUDAError(call: "cuStreamCreate", code: 400, name: "CUDA_ERROR_INVALID_HANDLE", message: "no stream returned")
        }
        self.context = context
        handle = UncheckedPointer(UnsafeMutableRawPointer(stream))
    }

    deinit {
        typealias Destroy = @convention(c) (OpaquePointer?) -> Int32
        if (try? context.makeCurrent()) != nil, let destroy = try? context.driver.call("cuStreamDestroy_v2", as: Destroy.self) {
            _ = destroy(OpaquePointer(handle.pointer))
        }
    }

    /// Waits for everything queued on the stream.
    public func synchronize() throws {
        typealias Synchronize = @convention(c) (OpaquePointer?) -> Int32
        try context.makeCurrent()
        let driver = context.driver
        try driver.check("cuStreamSynchronize", try driver.call("cuStreamSynchronize", as: Synchronize.self)(OpaquePointer(handle.pointer)))
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
        typealias Create = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?, UInt32) -> Int32
        try context.makeCurrent()
        var event: OpaquePointer?
        let driver = context.driver
        try driver.check("cuEventCreate", try driver.call("cuEventCreate", as: Create.self)(&event, 0))
        guard let event else {
            throw CUDAError(call: "cuEventCreate", code: 400, name: "CUDA_ERROR_INVALID_HANDLE", message: "no event returned")
        }
        self.context = context
        handle = UncheckedPointer(UnsafeMutableRawPointer(event))
    }

    deinit {
        typealias Destroy = @convention(c) (OpaquePointer?) -> Int32
        if (try? context.makeCurrent()) != nil, let destroy = try? context.driver.call("cuEventDestroy_v2", as: Destroy.self) {
            _ = destroy(OpaquePointer(handle.pointer))
        }
    }

    /// Records the event on `stream` (the default stream when nil).
    public func record(on stream: CUDAStream? = nil) throws {
        typealias Record = @convention(c) (OpaquePointer?, OpaquePointer?) -> Int32
        try context.makeCurrent()
        let driver = context.driver
        try driver.check("cuEventRecord", try driver.call("cuEventRecord", as: Record.self)(
            OpaquePointer(handle.pointer), stream.map { OpaquePointer($0.handle.pointer) }))
    }

    /// Waits until the recorded work has finished.
    public func synchronize() throws {
        typealias Synchronize = @convention(c) (OpaquePointer?) -> Int32
        try context.makeCurrent()
        let driver = context.driver
        try driver.check("cuEventSynchronize", try driver.call("cuEventSynchronize", as: Synchronize.self)(OpaquePointer(handle.pointer)))
    }

    /// Milliseconds between `start` and this event (both recorded and finished).
    public func milliseconds(since start: CUDAEvent) throws -> Double {
        typealias Elapsed = @convention(c) (UnsafeMutablePointer<Float>?, OpaquePointer?, OpaquePointer?) -> Int32
        try context.makeCurrent()
        var milliseconds: Float = 0
        let driver = context.driver
        try driver.check("cuEventElapsedTime", try driver.call("cuEventElapsedTime", as: Elapsed.self)(
            &milliseconds, OpaquePointer(start.handle.pointer), OpaquePointer(handle.pointer)))
        return Double(milliseconds)
    }
}
