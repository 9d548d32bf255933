#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// The CUDA driver (`libcuda.so.1`) loaded with `dlopen` and initialized; its functions
/// (`DriverFunctions`) are bound on first use by the versioned names `cuda.h` maps to
/// (`cuMemAlloc_v2`, …). One per process.
public final class CUDADriver: Sendable {
    /// The loaded library.
    public let library: DynamicLibrary
    /// `cuDriverGetVersion`, e.g. 13000 for CUDA 13.0.
    public let version: Int

    private static let loaded = Mutex<Result<CUDADriver, LoadFailure>?>(nil)

    /// The process's driver, loaded and initialized on first use; the error says why not (no
    /// libcuda, no device, …) every time it is asked.
    public static func shared() throws -> CUDADriver {
        let result = loaded.withLock { cached -> Result<CUDADriver, LoadFailure> in
            if let cached { return cached }
            let fresh: Result<CUDADriver, LoadFailure>
            do {
                fresh = .success(try CUDADriver())
            } catch let error as LibraryError {
                fresh = .failure(.library(error))
            } catch let error as CUDAError {
                fresh = .failure(.cuda(error))
            } catch {
                fresh = .failure(.library(LibraryError(library: "the CUDA driver", attempts: ["\(error)"])))
            }
            cached = fresh
            return fresh
        }
        switch result {
        case .success(let driver): return driver
        case .failure(.library(let error)): throw error
        case .failure(.cuda(let error)): throw error
        }
    }

    private init() throws {
        library = try DynamicLibrary.open(LibrarySearch.driverCandidates, what: "the CUDA driver (libcuda.so.1)")
        var version: Int32 = 0
        try Self.call(\.cuInit, in: library) { $0(0) }
        try Self.call(\.cuDriverGetVersion, in: library) { $0(&version) }
        self.version = Int(version)
    }

    /// Calls driver function `function` (a `DriverFunctions` entry, e.g. `\.cuMemAlloc`) through
    /// `invoke`, which passes the arguments; throws `CUDAError`, naming the function, unless it
    /// returns `CUDA_SUCCESS`.
    func call<Function>(_ function: DriverFunctions.Entry<Function>, _ invoke: (Function) throws -> Int32) throws {
        try Self.call(function, in: library, invoke)
    }

    private static func call<Function>(_ function: DriverFunctions.Entry<Function>, in library: DynamicLibrary,
                                       _ invoke: (Function) throws -> Int32) throws {
        let function = function(DriverFunctions.table)
        let result = try invoke(try function.resolve(in: library))
        guard result != 0 else { return }
        func ask(_ describe: DriverFunctions.Entry<DriverFunctions.DescribeResult>) -> String? {
            var text: UnsafePointer<CChar>?
            guard let describe = try? describe(DriverFunctions.table).resolve(in: library), describe(result, &text) == 0,
                  let text else { return nil }
            return String(cString: text)
        }
        throw CUDAError(call: function.name, code: result,
                        name: ask(\.cuGetErrorName) ?? CUDAError.knownNames[result] ?? "CUresult \(result)",
                        message: ask(\.cuGetErrorString) ?? "no description")
    }

    /// Number of CUDA devices.
    public func deviceCount() throws -> Int {
        var count: Int32 = 0
        try call(\.cuDeviceGetCount) { $0(&count) }
        return Int(count)
    }

    /// The device with this ordinal and its properties.
    public func device(_ ordinal: Int) throws -> CUDADevice {
        try CUDADevice(driver: self, ordinal: ordinal)
    }
}

/// Why `CUDADriver.shared()` failed, kept so that every later call reports the same cause.
enum LoadFailure: Error, Sendable {
    case library(LibraryError)
    case cuda(CUDAError)
}
