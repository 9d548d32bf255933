#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// The CUDA driver (`libcuda.so.1`) loaded with `dlopen` and initialized; symbols are bound on
/// first use by the versioned names `cuda.h` maps to (`cuMemAlloc_v2`, …). One per process.
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
        typealias Initialize = @convention(c) (UInt32) -> Int32
        typealias DriverVersion = @convention(c) (UnsafeMutablePointer<Int32>?) -> Int32
        var version: Int32 = 0
        let initialize = try library.function("cuInit", as: Initialize.self)
        let initResult = initialize(0)
        try Self.check(library, "cuInit", initResult)
        try Self.check(library, "cuDriverGetVersion", try library.function("cuDriverGetVersion", as: DriverVersion.self)(&version))
        self.version = Int(version)
    }

    /// Throws `CUDAError` unless `result` is `CUDA_SUCCESS`.
    public func check(_ call: String, _ result: Int32) throws {
        try Self.check(library, call, result)
    }

    private static func check(_ library: DynamicLibrary, _ call: String, _ result: Int32) throws {
        guard result != 0 else { return }
        typealias Describe = @convention(c) (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> Int32
        func ask(_ function: String) -> String? {
            var text: UnsafePointer<CChar>?
            guard let describe = try? library.function(function, as: Describe.self), describe(result, &text) == 0,
                  let text else { return nil }
            return String(cString: text)
        }
        throw CUDAError(call: call, code: result, name: ask("cuGetErrorName") ?? CUDAError.knownNames[result] ?? "CUresult \(result)",
                        message: ask("cuGetErrorString") ?? "no description")
    }

    /// Looks up driver function `name` as `Function` and checks its result.
    func call<Function>(_ name: String, as type: Function.Type) throws -> Function {
        try library.function(name, as: type)
    }

    /// Number of CUDA devices.
    public func deviceCount() throws -> Int {
        typealias GetCount = @convention(c) (UnsafeMutablePointer<Int32>?) -> Int32
        var count: Int32 = 0
        try check("cuDeviceGetCount", try call("cuDeviceGetCount", as: GetCount.self)(&count))
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
