import CUDADriver
import Testing
@testable import FMHACLI

/// `fmha info`: the CUDA report, and `--compile-kernels` where NVRTC can be loaded (always in CI).
@Suite struct InfoCommandTests {
    static var nvrtcAvailable: Bool { (try? NVRTC()) != nil || LibrarySearch.variables(["CI"])["CI"] == "true" }

    @Test func reportsCUDAStatusEitherWay() throws {
        let lines = InfoCommand.cudaDescription()
        // The driver line says what this machine has: the library and its device count (one line
        // per device after it), or why it is not available.
        let driverLine = try #require(lines.first { $0.hasPrefix("cuda driver: ") })
        if let driver = try? CUDADriver.shared() {
            let count = try driver.deviceCount()
            #expect(driverLine.hasPrefix("cuda driver: \(driver.library.path), CUDA "), "\(driverLine)")
            #expect(driverLine.hasSuffix(", \(count) device\(count == 1 ? "" : "s")"), "\(driverLine)")
            #expect(lines.filter { $0.hasPrefix("  ") }.count == count)
        } else {
            #expect(driverLine.hasPrefix("cuda driver: not available (") && driverLine.count > "cuda driver: not available ()".count,
                    "\(driverLine)")
        }
        let nvrtcLine = try #require(lines.first { $0.hasPrefix("nvrtc: ") })
        if let nvrtc = try? NVRTC() {
            let version = try nvrtc.version()
            #expect(nvrtcLine == "nvrtc: \(nvrtc.library.path), version \(version.major).\(version.minor)")
        } else {
            #expect(nvrtcLine.hasPrefix("nvrtc: not available (") && nvrtcLine.count > "nvrtc: not available ()".count, "\(nvrtcLine)")
        }
    }

    @Test(.enabled(if: nvrtcAvailable, "libnvrtc not found"))
    func compilesEveryKernelVariant() throws {
        // (One architecture: KernelCompileTests compiles every variant of every architecture.)
        try InfoCommand.compileEveryKernel(architectures: ["sm_90"])
    }

    @Test func rejectsUnknownArchitectures() {
        #expect(throws: (any Error).self) { _ = try InfoCommand.parse(["--compile-kernels", "--arch", "sm_75"]) }
        #expect(throws: Never.self) { _ = try InfoCommand.parse(["--compile-kernels", "--arch", "sm_90a"]) }
    }
}
