import FMHATestSupport
@testable import FMHACUDA
import Testing

/// Every kernel variant through the real NVRTC (no GPU needed). Skipped with the reason where
/// NVRTC cannot be loaded, except in CI, which installs it (`.ci/run`) and so must not skip them.
@Suite(.enabled(if: NVRTCForTests.isEnabled, NVRTCForTests.skipReason))
struct KernelCompileTests {
    @Test(arguments: KernelCatalog.architectures)
    func compilesEveryVariant(architecture: String) throws {
        let compiler = KernelCompiler(compiler: try NVRTCForTests.compiler(), diskCache: nil)
        for variant in KernelCatalog.allVariants(architecture: architecture) {
            let kernel = try compiler.kernel(for: variant)
            #expect(kernel.cubin.starts(with: [0x7F, 0x45, 0x4C, 0x46]), "\(variant): not an ELF cubin")
            let resources = kernel.resources
            #expect(resources.map(\.function).sorted() == variant.entryPoints.sorted(),
                    "\(variant): ptxas reported \(resources.map(\.function)); log:\n\(kernel.log)")
            for function in resources {
                #expect(function.registers > 0, "\(variant) \(function.function): no register count in the log")
                #expect(!function.spills(moreThan: variant.toleratedSpillBytes),
                        "\(variant) \(function.function) spills \(function.spillStoreBytes) bytes (stores), \(function.spillLoadBytes) bytes (loads); tolerated: \(variant.toleratedSpillBytes)")
            }
        }
    }

    @Test func realCubinsRoundTripThroughTheDiskCache() throws {
        try withTemporaryDirectory { folder in
            let cache = KernelDiskCache(directory: folder)
            let variant = FixedKernel(.dropoutMask, architecture: "sm_90")
            let cold = try KernelCompiler(compiler: try NVRTCForTests.compiler(), diskCache: cache).kernel(for: variant)
            let warm = try KernelCompiler(compiler: try NVRTCForTests.compiler(), diskCache: cache).kernel(for: variant)
            guard case .compiled = cold.origin else { Issue.record("cold start origin \(cold.origin)"); return }
            #expect(warm.origin == .diskCache)
            #expect(warm.cubin == cold.cubin && warm.resources == cold.resources)
        }
    }

    @Test func compileErrorsCarryTheLogNamingTheFile() throws {
        let compiler = try NVRTCForTests.compiler()
        let source = "#line 1 \"broken.cu\"\nextern \"C\" __global__ void k() { undeclared(); }\n"
        #expect {
            try compiler.compile(source: source, name: "broken.cu", options: ["--gpu-architecture=sm_90"])
        } throws: { error in
            "\(error)".contains("broken.cu") && "\(error)".contains("undeclared")
        }
    }
}
