/// One C function of a dynamically loaded library, declared once in that library's table with its
/// C name and its `@convention(c)` type; its address is looked up on the first call (`dlsym`, then
/// cached by `DynamicLibrary`), so a symbol the library lacks fails only the calls that need it,
/// with a `LibraryError` naming it.
struct LibraryFunction<Function>: Sendable {
    /// The exported name, e.g. `cuMemAlloc_v2`: what is looked up and what errors name.
    let name: String

    init(_ name: String) {
        self.name = name
    }

    /// The function in `library`.
    func resolve(in library: DynamicLibrary) throws -> Function {
        unsafeBitCast(try library.address(of: name), to: Function.self)
    }
}

/// The CUDA driver functions this package calls, each declared once: the property is the name
/// `cuda.h` declares, the string the versioned symbol it maps that name to. Every one returns a
/// `CUresult` (`Int32`); handles are `OpaquePointer`, device addresses `UInt64` (`CUdeviceptr`),
/// devices `Int32` (`CUdevice`). Calls go through `CUDADriver.call(_:_:)`.
struct DriverFunctions: Sendable {
    /// The one table.
    static let table = DriverFunctions()
    /// How a call names its function: a key path such as `\.cuMemAlloc`.
    typealias Entry<Function> = @Sendable (DriverFunctions) -> LibraryFunction<Function>

    typealias Handle = OpaquePointer?
    typealias HandleOut = UnsafeMutablePointer<OpaquePointer?>?
    typealias DescribeResult = @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32
    /// The destroy call of a stream, an event or a module.
    typealias Destroy = @convention(c) (Handle) -> Int32

    // Initialization and errors.
    let cuInit = LibraryFunction<@convention(c) (UInt32) -> Int32>("cuInit")
    let cuDriverGetVersion = LibraryFunction<@convention(c) (UnsafeMutablePointer<Int32>?) -> Int32>("cuDriverGetVersion")
    let cuGetErrorName = LibraryFunction<DescribeResult>("cuGetErrorName")
    let cuGetErrorString = LibraryFunction<DescribeResult>("cuGetErrorString")

    // Devices.
    let cuDeviceGetCount = LibraryFunction<@convention(c) (UnsafeMutablePointer<Int32>?) -> Int32>("cuDeviceGetCount")
    let cuDeviceGet = LibraryFunction<@convention(c) (UnsafeMutablePointer<Int32>?, Int32) -> Int32>("cuDeviceGet")
    let cuDeviceGetName = LibraryFunction<@convention(c) (UnsafeMutablePointer<CChar>?, Int32, Int32) -> Int32>("cuDeviceGetName")
    let cuDeviceGetAttribute = LibraryFunction<@convention(c) (UnsafeMutablePointer<Int32>?, Int32, Int32) -> Int32>("cuDeviceGetAttribute")
    let cuDeviceTotalMem = LibraryFunction<@convention(c) (UnsafeMutablePointer<Int>?, Int32) -> Int32>("cuDeviceTotalMem_v2")

    // Contexts.
    let cuDevicePrimaryCtxRetain = LibraryFunction<@convention(c) (HandleOut, Int32) -> Int32>("cuDevicePrimaryCtxRetain")
    let cuDevicePrimaryCtxRelease = LibraryFunction<@convention(c) (Int32) -> Int32>("cuDevicePrimaryCtxRelease_v2")
    let cuCtxSetCurrent = LibraryFunction<@convention(c) (Handle) -> Int32>("cuCtxSetCurrent")
    let cuCtxSynchronize = LibraryFunction<@convention(c) () -> Int32>("cuCtxSynchronize")

    // Memory.
    let cuMemAlloc = LibraryFunction<@convention(c) (UnsafeMutablePointer<UInt64>?, Int) -> Int32>("cuMemAlloc_v2")
    let cuMemFree = LibraryFunction<@convention(c) (UInt64) -> Int32>("cuMemFree_v2")
    let cuMemcpyHtoD = LibraryFunction<@convention(c) (UInt64, UnsafeRawPointer?, Int) -> Int32>("cuMemcpyHtoD_v2")
    let cuMemcpyHtoDAsync = LibraryFunction<@convention(c) (UInt64, UnsafeRawPointer?, Int, Handle) -> Int32>("cuMemcpyHtoDAsync_v2")
    let cuMemcpyDtoH = LibraryFunction<@convention(c) (UnsafeMutableRawPointer?, UInt64, Int) -> Int32>("cuMemcpyDtoH_v2")
    let cuMemcpyDtoD = LibraryFunction<@convention(c) (UInt64, UInt64, Int) -> Int32>("cuMemcpyDtoD_v2")
    let cuMemsetD8 = LibraryFunction<@convention(c) (UInt64, UInt8, Int) -> Int32>("cuMemsetD8_v2")

    // Modules and kernels.
    let cuModuleLoadData = LibraryFunction<@convention(c) (HandleOut, UnsafeRawPointer?) -> Int32>("cuModuleLoadData")
    let cuModuleUnload = LibraryFunction<Destroy>("cuModuleUnload")
    let cuModuleGetFunction = LibraryFunction<@convention(c) (HandleOut, Handle, UnsafePointer<CChar>?) -> Int32>("cuModuleGetFunction")
    let cuFuncSetAttribute = LibraryFunction<@convention(c) (Handle, Int32, Int32) -> Int32>("cuFuncSetAttribute")
    let cuTensorMapEncodeTiled = LibraryFunction<@convention(c) (UnsafeMutableRawPointer?, Int32, UInt32, UnsafeMutableRawPointer?,
                                                                 UnsafePointer<UInt64>?, UnsafePointer<UInt64>?, UnsafePointer<UInt32>?,
                                                                 UnsafePointer<UInt32>?, Int32, Int32, Int32, Int32) -> Int32>("cuTensorMapEncodeTiled")
    let cuLaunchKernel = LibraryFunction<@convention(c) (Handle, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, Handle,
                                                         UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                                         UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> Int32>("cuLaunchKernel")

    // Streams and events.
    let cuStreamCreate = LibraryFunction<@convention(c) (HandleOut, UInt32) -> Int32>("cuStreamCreate")
    let cuStreamDestroy = LibraryFunction<Destroy>("cuStreamDestroy_v2")
    let cuStreamSynchronize = LibraryFunction<@convention(c) (Handle) -> Int32>("cuStreamSynchronize")
    let cuEventCreate = LibraryFunction<@convention(c) (HandleOut, UInt32) -> Int32>("cuEventCreate")
    let cuEventDestroy = LibraryFunction<Destroy>("cuEventDestroy_v2")
    let cuEventRecord = LibraryFunction<@convention(c) (Handle, Handle) -> Int32>("cuEventRecord")
    let cuEventSynchronize = LibraryFunction<@convention(c) (Handle) -> Int32>("cuEventSynchronize")
    let cuEventElapsedTime = LibraryFunction<@convention(c) (UnsafeMutablePointer<Float>?, Handle, Handle) -> Int32>("cuEventElapsedTime")
}
