import CUDADriver
import FMHACore
import FMHACUDA

/// What this process finds of CUDA: the driver with its devices, and NVRTC, each with what it is
/// or why it cannot be used (`fmha info` prints both). Needs no GPU: without one, `driver` says why.
public struct CUDAEnvironment: Sendable {
    /// The CUDA driver (`libcuda`), loaded and initialized.
    public struct Driver: Sendable {
        /// The path or name the library was opened by, e.g. `libcuda.so.1`.
        public let path: String
        /// The driver's CUDA version as `cuDriverGetVersion` gives it: 13000 for CUDA 13.0.
        public let version: Int
        /// Every CUDA device, by ordinal.
        public let devices: [DeviceProperties]
    }

    /// One CUDA device and the properties the kernels are planned with.
    public struct DeviceProperties: Sendable, CustomStringConvertible {
        /// Its ordinal: `Device.cuda(ordinal)`.
        public let ordinal: Int
        /// e.g. "NVIDIA H200".
        public let name: String
        /// e.g. (9, 0).
        public let computeCapability: (major: Int, minor: Int)
        /// Device memory bytes.
        public let totalMemory: Int
        /// One line with the name, ordinal, architecture, SMs, memory, shared memory and L2 size.
        public let description: String
    }

    /// NVRTC (`libnvrtc`), CUDA's run-time compiler, loaded.
    public struct Compiler: Sendable {
        /// The path or name the library was opened by.
        public let path: String
        /// Its version, e.g. (13, 0).
        public let version: (major: Int, minor: Int)
    }

    /// The driver, or why it cannot be used (no libcuda, no device, a failed driver call).
    public let driver: Result<Driver, FMHAError>
    /// NVRTC, or why it cannot be loaded (every place searched).
    public let compiler: Result<Compiler, FMHAError>

    /// Looks for the driver and NVRTC now.
    public init() {
        driver = Self.probing {
            let driver = try CUDADriver.shared()
            let devices = try (0..<driver.deviceCount()).map { ordinal in
                let device = try driver.device(ordinal)
                return DeviceProperties(ordinal: device.ordinal, name: device.name, computeCapability: device.computeCapability,
                                        totalMemory: device.totalMemory, description: device.description)
            }
            return Driver(path: driver.library.path, version: driver.version, devices: devices)
        }
        compiler = Self.probing {
            let nvrtc = try NVRTC()
            return Compiler(path: nvrtc.library.path, version: try nvrtc.version())
        }
    }

    /// A kernel compiler over this machine's NVRTC, without the driver (no GPU needed): for
    /// checking that every kernel variant compiles (`KernelCatalog`), as `fmha info --compile-kernels` does.
    public static func kernelCompiler() throws -> KernelCompiler {
        try translatingErrors { KernelCompiler(compiler: try RuntimeCompiler.nvrtc(NVRTC())) }
    }

    /// `body`'s value, or its error as an `FMHAError`.
    private static func probing<Value>(_ body: () throws -> Value) -> Result<Value, FMHAError> {
        Result { () throws(FMHAError) in try translatingErrors(body) }
    }

    /// Runs `body`, turning a library that cannot be loaded into a `.deviceUnavailable` error and
    /// a failed driver or compiler call into a `.cuda` one, each with the library's message.
    private static func translatingErrors<Value>(_ body: () throws -> Value) throws(FMHAError) -> Value {
        do {
            return try body()
        } catch let error as LibraryError {
            throw FMHAError(.deviceUnavailable, "\(error)")
        } catch let error as FMHAError {
            throw error
        } catch {
            throw FMHAError(.cuda, "\(error)")
        }
    }
}
