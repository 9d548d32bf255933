import Synchronization

/// A device's primary context, retained for as long as this object lives, with the device's
/// caching allocator. Driver calls on a thread make it current first.
public final class CUDAContext: Sendable {
    /// The driver.
    public let driver: CUDADriver
    /// The device.
    public let device: CUDADevice
    let handle: DriverHandle<CUDAContext>
    /// Freed device blocks by size class, reused before asking the driver for more.
    private let freeBlocks = Mutex<[Int: [UInt64]]>([:])

    /// Retains the primary context of device `ordinal`.
    public init(ordinal: Int = 0) throws {
        let driver = try CUDADriver.shared(), device = try driver.device(ordinal)
        handle = try DriverHandle(driver, creating: \.cuDevicePrimaryCtxRetain, { $0($1, device.handle) }) { _ in
            try? driver.call(\.cuDevicePrimaryCtxRelease) { $0(device.handle) }
        }
        self.driver = driver
        self.device = device
    }

    deinit {
        freeAll()  // before `handle` releases the context
    }

    /// Makes this context current on the calling thread.
    public func makeCurrent() throws {
        try driver.call(\.cuCtxSetCurrent) { $0(handle.pointer) }
    }

    /// Makes this context current on the calling thread, then calls driver function `function`
    /// as `CUDADriver.call(_:_:)` does.
    func call<Function>(_ function: DriverFunctions.Entry<Function>, _ invoke: (Function) throws -> Int32) throws {
        try makeCurrent()
        try driver.call(function, invoke)
    }

    /// Waits for all work of the context.
    public func synchronize() throws {
        try call(\.cuCtxSynchronize) { $0() }
    }

    /// The size class a request of `byteCount` bytes is served from: powers of two from 512 B;
    /// above 2⁶² B (where the next power of two does not fit in `Int`) the request's own size,
    /// which the driver then refuses as out of memory.
    static func sizeClass(_ byteCount: Int) -> Int {
        guard byteCount <= 1 << 62 else { return byteCount }
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
        var address: UInt64 = 0
        do {
            try call(\.cuMemAlloc) { $0(&address, size) }
        } catch let error as CUDAError where error.code == CUDAError.outOfMemory {  // out of memory: give the pool back and try once more
            freeAll()
            try call(\.cuMemAlloc) { $0(&address, size) }
        }
        return DeviceBuffer(context: self, address: address, byteCount: byteCount, capacity: size)
    }

    /// Takes back a block from a released buffer.
    func recycle(_ address: UInt64, capacity: Int) {
        freeBlocks.withLock { $0[capacity, default: []].append(address) }
    }

    /// Returns every pooled block to the driver.
    public func freeAll() {
        let blocks = freeBlocks.withLock { pool -> [UInt64] in
            defer { pool.removeAll() }
            return pool.values.flatMap { $0 }
        }
        guard !blocks.isEmpty, (try? makeCurrent()) != nil else { return }
        for block in blocks { try? driver.call(\.cuMemFree) { $0(block) } }
    }

    /// Blocks the pool holds, for tests and statistics.
    public var pooledBlockCount: Int { freeBlocks.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
