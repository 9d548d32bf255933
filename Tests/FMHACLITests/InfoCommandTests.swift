import CUDADriver
import Testing
@testable import FMHACLI

/// `fmha info`: the CUDA report, and `--compile-kernels` where NVRTC can be loaded (always in CI).
@Suite struct InfoCommandTests {
    static var nvrtcAvailable: Bool { (try? NVRTC()) != nil || LibrarySearch.environment["CI"] == "true" }

    @Test func reportsCUDAStatusEitherWay() {
        let lines = InfoCommand.cudaDescription()
        #expect(lines.contains { $0.hasPrefix("cuda driver: ") })
        #expect(lines.contains { $0.hasPrefix("nvrtc: ") })
    }

    @Test(.enabled(if: nvrtcAvailable, "libnvrtc not found"))
    func compilesEveryKernelVariant() throws {
        try InfoCommand.compileEveryKernel(architectures: ["sm_80", "sm_90"])
    }

    @Test func rejectsUnknownArchitectures() {
        #expect(throws: (any Error).self) { _ = try InfoCommand.parse(["--compile-kernels", "--arch", "sm_75"]) }
        #expect(throws: Never.self) { _ = try InfoCommand.parse(["--compile-kernels", "--arch", "sm_90a"]) }
    }
}
