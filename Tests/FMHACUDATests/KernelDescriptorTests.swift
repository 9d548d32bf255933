import FMHATestSupport
import FMHACore
@testable import FMHACUDA
import Testing

/// Descriptor → source and options.
@Suite struct KernelDescriptorTests {
    @Test func sourceIsDefinesThenPreludeThenKernel() throws {
        let descriptor = KernelDescriptor(sourceName: "dropout_mask", architecture: "sm_90",
                                          defines: ["THREADS": "128", "HEAD_DIM": "64"])
        let source = try descriptor.source()
        let lines = source.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines[1] == "#define HEAD_DIM 64")
        #expect(lines[2] == "#define THREADS 128")
        #expect(lines[3] == "#line 1 \"prelude.cu\"")
        #expect(source.contains("#line 1 \"prelude.cu\"\n" + KernelSources.prelude))
        #expect(source.hasSuffix("#line 1 \"dropout_mask.cu\"\n" + KernelSources.dropoutMask))
    }

    @Test func optionsNameTheArchitectureAndAskForTheResourceReport() throws {
        let options = try KernelDescriptor(sourceName: "dropout_mask", architecture: "sm_90a").options()
        #expect(options == ["--gpu-architecture=sm_90a", "--std=c++17", "-default-device", "-Xptxas", "-v"])
    }

    @Test(arguments: [
        KernelDescriptor(sourceName: "no_such_kernel", architecture: "sm_90"),
        KernelDescriptor(sourceName: "prelude", architecture: "sm_90"),
        KernelDescriptor(sourceName: "dropout_mask", architecture: "sm_90", defines: ["1BAD": "1"]),
        KernelDescriptor(sourceName: "dropout_mask", architecture: "sm_90", defines: ["GOOD": "1\n#include <x>"]),
    ])
    func invalidDescriptorsHaveNoSource(descriptor: KernelDescriptor) {
        #expect(throws: FMHAError.self) { try descriptor.source() }
    }

    @Test(arguments: ["compute_90", "sm_", "sm_9x", "sm_90ab", "90", ""])
    func invalidArchitecturesHaveNoOptions(architecture: String) {
        #expect(throws: FMHAError.self) { try KernelDescriptor(sourceName: "dropout_mask", architecture: architecture).options() }
    }

    @Test func descriptionListsTheDefinesInOrder() {
        let descriptor = KernelDescriptor(sourceName: "dropout_mask", architecture: "sm_80", defines: ["B": "2", "A": "1"])
        #expect(descriptor.description == "dropout_mask sm_80 [A=1, B=2]")
    }

    @Test func catalogListsEveryKernelForEveryArchitecture() {
        for architecture in KernelCatalog.architectures {
            let variants = KernelCatalog.allVariants(architecture: architecture)
            // Twelve widths (16 ... 128 by 16, 160 ... 256 by 32) × two dtypes × with and without extras.
            let flash = (0..<48).map { _ in "flash_forward" }
            #expect(variants.map(\.descriptor.sourceName) == ["dropout_mask", "reference_forward", "reference_backward"] + flash)
            #expect(Set(variants.map(\.descriptor)).count == variants.count)
            #expect(variants.allSatisfy { $0.descriptor.architecture == architecture })
        }
    }
}
