#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CUDADriver
import FMHATestSupport
@testable import FMHACUDA
import Synchronization
import Testing

/// `Sources/FMHACUDA/Kernels` of the repository this file belongs to (three folders above it), or
/// of the current folder when the tests run from a copy elsewhere (the GPU machine); nil if neither
/// has it.
let kernelsFolder: String? = {
    let fromSource = #filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast(3).joined(separator: "/")
    return [fromSource, "."].map { $0 + "/Sources/FMHACUDA/Kernels" }.first(where: LibrarySearch.isDirectory)
}()

/// A new empty folder under the system's temporary folder, removed with everything in it when
/// `body` returns.
func withTemporaryDirectory<Result>(_ body: (String) throws -> Result) throws -> Result {
    var template = Array("/tmp/fmha-cuda-tests.XXXXXX".utf8CString)
    guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw TestFailure("mkdtemp failed: errno \(errno)")
    }
    let path = String(cString: created)
    defer { removeRecursively(path) }
    return try body(path)
}

/// Deletes `path` and, for a folder, everything in it.
func removeRecursively(_ path: String) {
    if LibrarySearch.isDirectory(path) {
        LibrarySearch.directoryEntries(path).forEach { removeRecursively(path + "/" + $0) }
        rmdir(path)
    } else {
        unlink(path)
    }
}

/// A test's own failure with a message.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// NVRTC for the compile tests: they run where it loads, are skipped with the reason where it does
/// not, except in CI (`CI=true`), which installs it, so there they run and fail on the load error.
enum NVRTCForTests {
    /// NVRTC, or why it could not be loaded.
    static let loaded: Result<NVRTC, any Error> = Result { try NVRTC() }

    /// Whether this is a CI run.
    static let isContinuousIntegration = getenv("CI").map { String(cString: $0) } == "true"

    /// Whether the compile tests run.
    static var isEnabled: Bool {
        if case .success = loaded { return true }
        return isContinuousIntegration
    }

    /// Why the compile tests are skipped.
    static let skipReason: Comment =
        "NVRTC cannot be loaded: set FMHA_NVRTC_PATH to the folder of libnvrtc.so (with CI=true this fails instead)"

    /// A compiler backed by the real NVRTC (throws the load error, in CI, when there is none).
    static func compiler() throws -> RuntimeCompiler {
        try RuntimeCompiler.nvrtc(loaded.get())
    }
}

/// A stand-in compiler that counts its compilations and returns a cubin made of the source's bytes,
/// with a ptxas-style log; it can be told to take a while, to widen races.
final class CountingCompiler: Sendable {
    private let count = Atomic<Int>(0)
    private let delayMicroseconds: UInt32
    let version: String

    init(version: String = "stub 1.0", delayMicroseconds: UInt32 = 0) {
        self.version = version
        self.delayMicroseconds = delayMicroseconds
    }

    /// Compilations so far.
    var compilations: Int { count.load(ordering: .relaxed) }

    /// The `RuntimeCompiler` that runs this stand-in.
    var compiler: RuntimeCompiler {
        RuntimeCompiler(version: version) { [self] source, name, options in
            count.add(1, ordering: .relaxed)
            if delayMicroseconds > 0 { usleep(delayMicroseconds) }
            let log = """
                ptxas info    : Compiling entry function 'stub' for '\(options.first ?? "")'
                ptxas info    : Function properties for stub
                ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
                ptxas info    : Used 8 registers, used 0 barriers
                """
            return RuntimeCompiler.Output(cubin: Array(name.utf8) + Array(source.utf8.prefix(64)), log: log)
        }
    }
}

/// The GPU for the kernel tests, where there is one (never in CI).
enum GPUForTests {
    /// The first GPU's primary context, or nil without a driver or device.
    static let context: CUDAContext? = {
        guard let driver = try? CUDADriver.shared(), (try? driver.deviceCount()) ?? 0 > 0 else { return nil }
        return try? CUDAContext(ordinal: 0)
    }()
}
