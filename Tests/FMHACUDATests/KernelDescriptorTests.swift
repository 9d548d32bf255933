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
        // Headers come between the prelude and the kernel; an unknown one is refused.
        let flash = try KernelDescriptor(sourceName: "flash_backward", architecture: "sm_90", headers: ["tensor_core"]).source()
        let prelude = try #require(flash.firstRange(of: "#line 1 \"prelude.cu\"\n" + KernelSources.prelude))
        let header = try #require(flash.firstRange(of: "#line 1 \"tensor_core.cu\"\n" + KernelSources.tensorCore))
        #expect(prelude.upperBound <= header.lowerBound)
        #expect(flash.hasSuffix("#line 1 \"flash_backward.cu\"\n" + KernelSources.flashBackward))
        #expect(throws: FMHAError.self) {
            try KernelDescriptor(sourceName: "flash_backward", architecture: "sm_90", headers: ["no_such_header"]).source()
        }
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
            // Twelve widths (16 ... 128 by 16, 160 ... 256 by 32) × two dtypes × with and without extras,
            // then the decoding kernels' three cache kinds × twelve widths × two dtypes, and on sm_90a
            // the Hopper forward's four widths × two dtypes.
            let flash = (0..<48).map { _ in "flash_forward" } + (0..<48).map { _ in "flash_backward" }
                + (0..<72).map { _ in "flash_decode" } + (0..<(architecture == "sm_90a" ? 8 : 0)).map { _ in "hopper_forward" }
            #expect(variants.map(\.sourceName) == ["dropout_mask", "reference_forward", "reference_backward", "merge_attentions"] + flash)
            // Distinct typed descriptors, each producing its own kernel descriptor.
            #expect(Set(variants.map { AnyKernelVariant($0) }).count == variants.count)
            #expect(Set(variants.map(\.kernelDescriptor)).count == variants.count)
            #expect(variants.allSatisfy { $0.architecture == architecture && $0.kernelDescriptor.architecture == architecture })
        }
    }
}

/// Typed descriptors → the defines and entry points the kernels are compiled with.
@Suite struct KernelVariantDescriptorTests {
    @Test func flashForwardKernelProducesTheKernelsDefines() {
        let shape = CUDAFlashForward.TileShape(warps: 4, warpTiles: 2, keys: 64, queryInShared: true, minimumBlocks: 2)
        let kernel = FlashForwardKernel(width: 128, tileShape: shape, dtype: .bfloat16, extras: false, architecture: "sm_90")
        #expect(kernel.kernelDescriptor == KernelDescriptor(sourceName: "flash_forward", architecture: "sm_90", defines: [
            "FMHA_HEAD_DIM": "128", "FMHA_DTYPE": "2", "FMHA_WARPS": "4", "FMHA_WARP_TILES": "2", "FMHA_BLOCK_N": "64",
            "FMHA_Q_SHARED": "1", "FMHA_MIN_BLOCKS": "2", "FMHA_EXTRAS": "0", "FMHA_STAGES": "1",
        ], headers: ["tensor_core"]))
        #expect(kernel.entryPoints == ["fmha_flash_forward"])
        #expect(kernel.dynamicSharedMemoryBytes == (2 * 64 + 128) * 136 * 2)
        let twoStages = CUDAFlashForward.TileShape(warps: 8, warpTiles: 1, keys: 32, queryInShared: false, minimumBlocks: 1, stages: 2)
        let other = FlashForwardKernel(width: 256, tileShape: twoStages, dtype: .float16, extras: true, architecture: "sm_80")
        #expect(other.kernelDescriptor.defines == [
            "FMHA_HEAD_DIM": "256", "FMHA_DTYPE": "1", "FMHA_WARPS": "8", "FMHA_WARP_TILES": "1", "FMHA_BLOCK_N": "32",
            "FMHA_Q_SHARED": "0", "FMHA_MIN_BLOCKS": "1", "FMHA_EXTRAS": "1", "FMHA_STAGES": "2",
        ])
    }

    @Test func fixedKernelsHaveNoDefines() {
        let kernels = FixedKernel.Source.allCases.map { FixedKernel($0, architecture: "sm_90a") }
        #expect(kernels.map(\.kernelDescriptor) == ["dropout_mask", "reference_forward", "reference_backward", "merge_attentions"].map {
            KernelDescriptor(sourceName: $0, architecture: "sm_90a")
        })
        #expect(kernels.map(\.entryPoints) == [["fmha_dropout_keep"], ["fmha_reference_forward"],
                                              ["fmha_reference_backward_dq", "fmha_reference_backward_dkdv"], ["fmha_merge_attentions"]])
        #expect(kernels.allSatisfy { $0.dynamicSharedMemoryBytes == 0 })
        #expect(kernels[0].description == "dropout_mask sm_90a")
    }

    @Test func keysOfDifferentFamiliesOrFieldsDiffer() {
        let shape = CUDAFlashForward.TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1)
        let flash = FlashForwardKernel(width: 64, tileShape: shape, dtype: .float16, extras: false, architecture: "sm_90")
        #expect(AnyKernelVariant(flash) == AnyKernelVariant(flash))
        #expect(AnyKernelVariant(flash).hashValue == AnyKernelVariant(flash).hashValue)
        #expect(AnyKernelVariant(flash) != AnyKernelVariant(FixedKernel(.referenceForward, architecture: "sm_90")))
        #expect(AnyKernelVariant(flash) != AnyKernelVariant(
            FlashForwardKernel(width: 64, tileShape: shape, dtype: .float16, extras: true, architecture: "sm_90")))
        #expect(AnyKernelVariant(flash) != AnyKernelVariant(
            FlashForwardKernel(width: 64, tileShape: shape, dtype: .float16, extras: false, architecture: "sm_80")))
    }

    @Test func flashBackwardKernelProducesTheKernelsDefines() {
        let kernel = FlashBackwardKernel(width: 128, dtype: .bfloat16, extras: false, architecture: "sm_90")
        #expect(kernel.kernelDescriptor == KernelDescriptor(sourceName: "flash_backward", architecture: "sm_90", defines: [
            "FMHA_HEAD_DIM": "128", "FMHA_DTYPE": "2", "FMHA_DQ_KEYS": "64", "FMHA_DKDV_QUERIES": "32",
            "FMHA_COLUMN_PARTS": "1", "FMHA_EXTRAS": "0", "FMHA_STAGES": "2",
        ], headers: ["tensor_core"]))
        #expect(kernel.entryPoints == ["fmha_flash_backward_delta", "fmha_flash_backward_dq", "fmha_flash_backward_dkdv",
                                       "fmha_flash_backward_bias_sum", "fmha_flash_backward_dq_from_sum"])
        #expect(kernel.toleratedSpillBytes == 0)
        // The larger pass: dQ's Q and dO tiles of 64 rows and two stages of K and V tiles of 64
        // rows, 136 values a row.
        #expect(kernel.dynamicSharedMemoryBytes == 2 * (64 + 2 * 64) * 136 * 2)
        // What fits: 104,448 + 1,152 bytes at K = 128, over an sm_86's 99 KiB, under an H100's 227 KiB.
        #expect(kernel.sharedMemoryProblem(limit: 99 * 1024) ==
                "width 128 needs 105600 bytes of shared memory per block, this device gives at most 101376")
        #expect(kernel.sharedMemoryProblem(limit: 227 * 1024) == nil)
        let wide = FlashBackwardKernel(width: 256, dtype: .float16, extras: true, architecture: "sm_80")
        #expect(wide.kernelDescriptor.defines == [
            "FMHA_HEAD_DIM": "256", "FMHA_DTYPE": "1", "FMHA_DQ_KEYS": "32", "FMHA_DKDV_QUERIES": "32",
            "FMHA_COLUMN_PARTS": "2", "FMHA_EXTRAS": "1", "FMHA_STAGES": "1",
        ])
        // The dK/dV pass of the extras build adds the atomic dQ's dSᵀ tile: 64 keys × (32 + 8) values.
        #expect(wide.keyPassSharedMemoryBytes == 2 * (64 + 32) * 264 * 2 + 64 * 40 * 2)
        #expect(wide.toleratedSpillBytes == 32)
    }
}
