import FMHACore
@testable import FMHACUDA
import Testing

/// The Hopper forward's kernel variants and what `cuda-hopper` refuses, on the CPU (the GPU suite
/// is `CUDAHopperForwardTests`).
struct HopperForwardKernelTests {
    @Test func variantsAreSm90aOnlyAndFitItsSharedMemory() {
        #expect(HopperForwardKernel.allVariants(architecture: "sm_90").isEmpty)
        #expect(HopperForwardKernel.allVariants(architecture: "sm_80").isEmpty)
        let variants = HopperForwardKernel.allVariants(architecture: "sm_90a")
        #expect(variants.map(\.width) == [64, 64, 128, 128, 192, 192, 256, 256])
        for variant in variants {
            // 227 KiB a block on sm_90, less the kernel's static barriers.
            #expect(variant.dynamicSharedMemoryBytes <= 227 * 1024 - 128, "\(variant)")
            #expect(variant.defines["FMHA_BLOCK_N"] == "\(variant.blockKeys)")
        }
    }

    @Test func tensorsTheCopyEngineCannotAddressAreNamed() throws {
        let aligned = try Tensor.zeros([1, 10, 1, 2, 64])
        #expect(CUDAHopperForward.mapReason(aligned) == nil)
        // A view of columns 4 ..< 68: its first element 8 bytes past a 16-byte boundary.
        let shifted = try Tensor.zeros([1, 10, 1, 2, 72]).slice(dimension: 4, range: 4..<68)
        #expect(CUDAHopperForward.mapReason(shifted)?.contains("16-byte aligned") == true)
        // Rows 36 elements (72 bytes) apart.
        let narrow = try Tensor.zeros([1, 10, 1, 1, 36]).slice(dimension: 4, range: 0..<32)
        #expect(CUDAHopperForward.mapReason(narrow)?.contains("multiple of 16 bytes") == true)
        // One row broadcast along the sequence (stride 0): refused; broadcast heads are read in place.
        let broadcastRows = try Tensor.zeros([1, 1, 1, 2, 64]).expanded(to: [1, 10, 1, 2, 64])
        #expect(CUDAHopperForward.mapReason(broadcastRows)?.contains("stride 0") == true)
        #expect(CUDAHopperForward.mapReason(try Tensor.zeros([1, 10, 1, 1, 64]).expanded(to: [1, 10, 1, 4, 64])) == nil)
        // A transposed view: the last dimension not contiguous.
        let transposed = try Tensor.zeros([1, 10, 1, 64, 2]).transposed(3, 4)
        #expect(CUDAHopperForward.mapReason(transposed)?.contains("not 1") == true)
    }

    @Test func headsAndQueriesPastInt32AreRefused() throws {
        // 2^16 · 2^15 = 2^31 heads of one query and one key, broadcast (stride 0): no memory.
        let q = try Tensor.zeros([1, 1, 1, 8], dtype: .float16).expanded(to: [1 << 16, 1, 1 << 15, 8])
        let reasons = CUDAHopperForward().notSupportedReasons(try Inputs(query: q, key: q, value: q).validate())
        #expect(reasons.contains { $0.contains("heads (B·G·H) reach 2^31") }, "\(reasons)")
    }
}
