import FMHACore

/// One kernel the library can compile: its descriptor and the functions it defines. None may
/// spill registers: a spill fails `fmha info --compile-kernels` and the compile tests.
public struct KernelVariant: Sendable, Hashable {
    /// What to compile.
    public let descriptor: KernelDescriptor
    /// The `extern "C"` kernels the cubin defines.
    public let entryPoints: [String]

    /// A variant of `descriptor` defining `entryPoints`.
    public init(descriptor: KernelDescriptor, entryPoints: [String]) {
        self.descriptor = descriptor
        self.entryPoints = entryPoints
    }
}

/// Every kernel variant the library may compile, so that all of them can be compiled ahead of use
/// (`fmha info --compile-kernels`, and the compile tests in CI, which need NVRTC but no GPU).
public enum KernelCatalog {
    /// The architectures kernels are built and tested for.
    public static let architectures = ["sm_80", "sm_90", "sm_90a"]

    /// The dropout keep-mask kernel (`dropout_mask.cu`), for testing the CUDA Philox mask.
    public static func dropoutKeep(architecture: String) -> KernelVariant {
        KernelVariant(descriptor: KernelDescriptor(sourceName: "dropout_mask", architecture: architecture),
                      entryPoints: ["fmha_dropout_keep"])
    }

    /// The reference forward kernel (`reference_forward.cu`).
    public static func referenceForward(architecture: String) -> KernelVariant {
        KernelVariant(descriptor: KernelDescriptor(sourceName: "reference_forward", architecture: architecture),
                      entryPoints: ["fmha_reference_forward"])
    }

    /// The reference backward kernels (`reference_backward.cu`).
    public static func referenceBackward(architecture: String) -> KernelVariant {
        KernelVariant(descriptor: KernelDescriptor(sourceName: "reference_backward", architecture: architecture),
                      entryPoints: ["fmha_reference_backward_dq", "fmha_reference_backward_dkdv"])
    }

    /// The tensor-core forward kernels (`flash_forward.cu`): one per width (16 ... 128 in steps of
    /// 16, then 160 ... 256 in steps of 32), input dtype (float16, bfloat16) and build (plain, and
    /// with tensor bias and dropout), each with its tile shape from the tuning table.
    public static func flashForward(architecture: String) -> [KernelVariant] {
        CUDAFlashForward.variants(architecture: architecture)
    }

    /// Every variant for `architecture`.
    public static func allVariants(architecture: String) -> [KernelVariant] {
        [dropoutKeep(architecture: architecture), referenceForward(architecture: architecture),
         referenceBackward(architecture: architecture)] + flashForward(architecture: architecture)
    }
}
