import FMHACore

/// A kernel source compiled one way per architecture, without defines: the dropout keep-mask
/// kernel, the reference forward and backward kernels and the merge of partial attentions.
public struct FixedKernel: KernelVariantDescriptor {
    /// The kernel sources compiled this way.
    public enum Source: String, Sendable, Hashable, CaseIterable {
        /// `dropout_mask.cu`: the CUDA Philox keep mask, for testing it against the CPU's.
        case dropoutMask = "dropout_mask"
        /// `reference_forward.cu`: the forward oracle.
        case referenceForward = "reference_forward"
        /// `reference_backward.cu`: the backward oracle's dQ and dK/dV kernels.
        case referenceBackward = "reference_backward"
        /// `merge_attentions.cu`: `mergeAttentions` on the device.
        case mergeAttentions = "merge_attentions"
    }

    /// Which kernel source.
    public let source: Source
    public let architecture: String

    /// `source` compiled for `architecture`.
    public init(_ source: Source, architecture: String) {
        self.source = source
        self.architecture = architecture
    }

    public var sourceName: String { source.rawValue }

    public var entryPoints: [String] {
        switch source {
        case .dropoutMask: ["fmha_dropout_keep"]
        case .referenceForward: ["fmha_reference_forward"]
        case .referenceBackward: ["fmha_reference_backward_dq", "fmha_reference_backward_dkdv"]
        case .mergeAttentions: ["fmha_merge_attentions"]
        }
    }

    public var defines: [String: String] { [:] }

    public var dynamicSharedMemoryBytes: Int { 0 }
}

/// Every kernel variant the library may compile, so that all of them can be compiled ahead of use
/// (`fmha info --compile-kernels`, and the compile tests in CI, which need NVRTC but no GPU). None
/// may spill registers: a spill fails `fmha info --compile-kernels` and the compile tests.
public enum KernelCatalog {
    /// The architectures kernels are built and tested for.
    public static let architectures = ["sm_80", "sm_90", "sm_90a"]

    /// Every variant for `architecture`: the fixed kernels, the tensor-core forward's kernel of
    /// the tuning table for every width, input dtype (float16, bfloat16) and build (plain, and
    /// with tensor bias and dropout), then the tensor-core backward's and the decoding kernels' for every width and dtype, and
    /// on sm_90a the Hopper forward's.
    public static func allVariants(architecture: String) -> [any KernelVariantDescriptor] {
        FixedKernel.Source.allCases.map { FixedKernel($0, architecture: architecture) }
            + FlashForwardKernel.tableVariants(architecture: architecture)
            + FlashBackwardKernel.allVariants(architecture: architecture)
            + FlashDecodeKernel.allVariants(architecture: architecture)
            + HopperForwardKernel.allVariants(architecture: architecture)
    }
}
