/// A loaded cubin; unloaded when released.
public final class CUDAModule: Sendable {
    /// The context it lives in.
    public let context: CUDAContext
    let handle: DriverHandle<CUDAModule>

    /// Loads `cubin` into `context`.
    public init(context: CUDAContext, cubin: [UInt8]) throws {
        self.context = context
        handle = try context.makeHandle(\.cuModuleLoadData, { load, module in cubin.withUnsafeBytes { load(module, $0.baseAddress) } },
                                        destroy: \.cuModuleUnload)
    }

    /// The kernel called `name` (an `extern "C"` name).
    public func function(_ name: String) throws -> CUDAFunction {
        var function: OpaquePointer?
        try context.driver.call(\.cuModuleGetFunction) { $0(&function, handle.pointer, name) }
        guard let function else {
            throw CUDAError(call: "cuModuleGetFunction", code: 500, name: "CUDA_ERROR_NOT_FOUND", message: "\(name) not found")
        }
        return CUDAFunction(module: self, handle: UncheckedPointer(UnsafeMutableRawPointer(function)), name: name)
    }
}

/// A kernel of a loaded module.
public struct CUDAFunction: Sendable {
    /// The module it belongs to (kept alive by this value).
    public let module: CUDAModule
    let handle: UncheckedPointer
    /// Its name.
    public let name: String

    /// Launches the kernel on `stream` (the default stream when nil) with `arguments` (one per
    /// kernel parameter, in order) and `sharedMemory` bytes of dynamic shared memory.
    public func launch(grid: (x: Int, y: Int, z: Int), block: (x: Int, y: Int, z: Int), sharedMemory: Int = 0,
                       stream: CUDAStream? = nil, arguments: KernelArguments) throws {
        try arguments.withPointers { pointers in
            try module.context.call(\.cuLaunchKernel) {
                $0(OpaquePointer(handle.pointer), UInt32(grid.x), UInt32(grid.y), UInt32(grid.z),
                   UInt32(block.x), UInt32(block.y), UInt32(block.z), UInt32(sharedMemory),
                   stream?.handle.pointer, pointers, nil)
            }
        }
    }
}

extension CUDAFunction {
    /// Lets the kernel use up to `bytes` of dynamic shared memory
    /// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), needed above 48 KiB.
    public func allowDynamicSharedMemory(_ bytes: Int) throws {
        try module.context.call(\.cuFuncSetAttribute) { $0(OpaquePointer(handle.pointer), 8, Int32(bytes)) }
    }
}

/// The parameters of one kernel launch, by value, in order.
public struct KernelArguments {
    private var storage: [[UInt8]] = []

    /// No arguments yet.
    public init() {}

    /// Appends a parameter of trivial type (an integer, a float, a device address as UInt64, a
    /// struct laid out as the kernel declares it).
    public mutating func append<Value: BitwiseCopyable>(_ value: Value) {
        storage.append(withUnsafeBytes(of: value) { Array($0) })
    }

    /// Appends one parameter made of `words` in order: a kernel's struct of 64-bit integers, by value.
    public mutating func append(words: [Int64]) {
        storage.append(words.withUnsafeBytes { Array($0) })
    }

    /// Appends a buffer's device address.
    public mutating func append(_ buffer: DeviceBuffer) {
        append(buffer.address)
    }

    /// Calls `body` with the array of parameter addresses `cuLaunchKernel` takes.
    func withPointers<Result>(_ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>?) throws -> Result) rethrows -> Result {
        let copies = storage.map { bytes -> UnsafeMutableRawPointer in
            let pointer = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
            bytes.withUnsafeBytes { source in
                if let base = source.baseAddress { pointer.copyMemory(from: base, byteCount: bytes.count) }
            }
            return pointer
        }
        defer { copies.forEach { $0.deallocate() } }
        var pointers: [UnsafeMutableRawPointer?] = copies.map { $0 }
        return try pointers.withUnsafeMutableBufferPointer { try body($0.baseAddress) }
    }
}
