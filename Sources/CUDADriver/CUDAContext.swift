import Synchronization

/// A device's primary context, retained for as long as this object lives, with the device's
/// caching allocator. Driver calls on a thread make it current first.
public final class CUDAContext: Sendable {
    /// The driver.
    public let driver: CUDADriver
    /// The device.
    public let device: CUDADevice
    let handle: UncheckedPointer
    /// Freed device blocks by size class, reused before asking the driver for more.
    private let freeBlocks = Mutex<[Int: [UInt64]]>([:])

    private typealias Retain = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?, Int32) -> Int32
    private typealias Release = @convention(c) (Int32) -> Int32
    private typealias SetCurrent = @convention(c) (OpaquePointer?) -> Int32

    /// Retains the primary context of device `ordinal`.
    public init(ordinal: Int = 0) throws {
        driver = try CUDADriver.shared()
        device = try driver.device(ordinal)
        var context: OpaquePointer?
        try driver.check("cuDevicePrimaryCtxRetain", try driver.call("cuDevicePrimaryCtxRetain", as: Retain.self)(&context, device.handle))
        guard let context else {
            throw CUDAError(call: "cuDevicePrimaryCtxRetain", code: 201, name: "CUDA_ERROR_INVALID_CONTEXT", message: "no context returned")
        }
        handle = UncheckedPointer(UnsafeMutableRawPointer(context))
    }

    deinit {
        freeAll()
        if let release = try? driver.call("cuDevicePrimaryCtxRelease_v2", as: Release.self) { _ = release(device.handle) }
    }

    /// Makes this context current on the calling thread.
    public func makeCurrent() throws {
        try driver.check("cuCtxSetCurrent", try driver.call("cuCtxSetCurrent", as: SetCurrent.self)(OpaquePointer(handle.pointer)))
    }

    /// Waits for all work of the context.
    public func synchronize() throws {
        typealias Synchronize = @convention(c) () -> Int32
        try makeCurrent()
        try driver.check("cuCtxSynchronize", try driver.call("cuCtxSynchronize", as: Synchronize.self)())
    }

    /// The size class a request of `byteCount` bytes is served from: powers of two from 512 B.
    static func sizeClass(_ byteCount: Int) -> Int {
        var size = 512
        while size < byteCount { size <<= 1 }
        return size
    }

    /// Device memory of at least `byteCount` bytes, from a freed block of its size class when
    /// there is one (one `cuMemAlloc` per new block, not per call); returned to the pool when the
    /// buffer is released.
    public func allocate(_ byteCount: Int) throws -> DeviceBuffer {
        let size = Self.sizeClass(max(byteCount, 1))
        if let reused = freeBlocks.withLock({ $0[size]?.popLast() }) {
            return DeviceBuffer(context: self, address: reused, byteCount: byteCount, capacity: size)
        }
        typealias Allocate = @convention(c) (UnsafeMutablePointer<UInt64>?, Int) -> Int32
        try makeCurrent()
        var address: UInt64 = 0
        var result = try driver.call("cuMemAlloc_v2", as: Allocate.self)(&address, size)
        if result == 2 {  // out of memory: give the pool back and try once more
            freeAll()
            result = try driver.call("cuMemAlloc_v2", as: Allocate.self)(&address, size)
        }
        try driver.check("cuMemAlloc_v2", result)
        return DeviceBuffer(context: self, address: address, byteCount: byteCount, capacity: size)
    }

    /// Takes back a block from a released buffer.
    func recycle(_ address: UInt64, capacity: Int) {
        freeBlocks.withLock { $0[capacity, default: []].append(address) }
    }

    /// Returns every pooled block to the driver.
    public func freeAll() {
        typealias Free = @convention(c) (UInt64) -> Int32
        let blocks = freeBlocks.withLock { pool -> [UInt64] in
            defer { pool.removeAll() }
            return pool.values.flatMap { $0 }
        }
        guard !blocks.isEmpty, (try? makeCurrent()) != nil, let free = try? driver.call("cuMemFree_v2", as: Free.self) else { return }
        for block in blocks { _ = free(block) }
    }

    /// Blocks the pool holds, for tests and statistics.
    public var pooledBlockCount: Int { freeBlocks.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
