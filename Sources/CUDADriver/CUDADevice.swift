/// A CUDA device and the properties kernels are planned with.
public struct CUDADevice: Sendable, CustomStringConvertible {
    /// Its ordinal.
    public let ordinal: Int
    /// The driver's handle (`CUdevice`).
    public let handle: Int32
    /// e.g. "NVIDIA H200".
    public let name: String
    /// e.g. (9, 0).
    public let computeCapability: (major: Int, minor: Int)
    /// Streaming multiprocessors.
    public let multiprocessorCount: Int
    /// Shared memory a block gets without opting in, and with (`cuFuncSetAttribute`).
    public let sharedMemoryPerBlock: Int
    public let sharedMemoryPerBlockOptIn: Int
    /// L2 cache bytes.
    public let l2CacheSize: Int
    /// Device memory bytes.
    public let totalMemory: Int

    init(driver: CUDADriver, ordinal: Int) throws {
        var handle: Int32 = 0
        try driver.call(\.cuDeviceGet) { $0(&handle, Int32(ordinal)) }
        var nameBytes = [CChar](repeating: 0, count: 256)
        try driver.call(\.cuDeviceGetName) { $0(&nameBytes, 256, handle) }
        func attribute(_ code: Int32) throws -> Int {
            var value: Int32 = 0
            try driver.call(\.cuDeviceGetAttribute) { $0(&value, code, handle) }
            return Int(value)
        }
        var memory = 0
        try driver.call(\.cuDeviceTotalMem) { $0(&memory, handle) }
        self.ordinal = ordinal
        self.handle = handle
        name = String(decoding: nameBytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // CU_DEVICE_ATTRIBUTE_*: COMPUTE_CAPABILITY_MAJOR 75, _MINOR 76, MULTIPROCESSOR_COUNT 16,
        // MAX_SHARED_MEMORY_PER_BLOCK 8, MAX_SHARED_MEMORY_PER_BLOCK_OPTIN 97, L2_CACHE_SIZE 38.
        computeCapability = (try attribute(75), try attribute(76))
        multiprocessorCount = try attribute(16)
        sharedMemoryPerBlock = try attribute(8)
        sharedMemoryPerBlockOptIn = try attribute(97)
        l2CacheSize = try attribute(38)
        totalMemory = memory
    }

    public var description: String {
        "\(name) (cuda:\(ordinal), sm_\(computeCapability.major)\(computeCapability.minor), \(multiprocessorCount) SMs, "
            + "\(totalMemory >> 30) GiB, \(sharedMemoryPerBlockOptIn >> 10) KiB shared memory per block, \(l2CacheSize >> 20) MiB L2)"
    }
}
