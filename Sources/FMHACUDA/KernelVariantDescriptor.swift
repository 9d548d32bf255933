/// One kernel variant, described by typed fields: the key of every cache of compiled and loaded
/// kernels (`KernelCompiler`'s memory cache, the modules and functions `CUDAKernels` loads with
/// their shared-memory attribute set), and what produces the `KernelDescriptor` (source text and
/// compiler options) that NVRTC and the disk cache see.
///
/// Equal descriptors give the same cubin. Sequence lengths, strides and pointers are kernel
/// arguments and never belong here.
public protocol KernelVariantDescriptor: Hashable, Sendable, CustomStringConvertible {
    /// The kernel's source file in `Sources/FMHACUDA/Kernels` without `.cu`, e.g. `"dropout_mask"`.
    var sourceName: String { get }
    /// The GPU architecture NVRTC compiles for: `"sm_80"`, `"sm_90"`, `"sm_90a"`, ...
    var architecture: String { get }
    /// The `extern "C"` kernels the cubin defines.
    var entryPoints: [String] { get }
    /// The compile-time constants, computed from the typed fields.
    var defines: [String: String] { get }
    /// The shared kernel files compiled before the kernel (`KernelDescriptor.headers`).
    var headers: [String] { get }
    /// The dynamic shared memory every launch of the kernels asks for, in bytes; above 48 KiB
    /// loading the kernels allows it (`CUDAFunction.allowDynamicSharedMemory`).
    var dynamicSharedMemoryBytes: Int { get }
    /// The register spill bytes (stores or loads) ptxas may report for any of the kernels: 0
    /// unless a measurement found the spilling build faster than a spill-free one (the bound
    /// `KernelCompileTests` holds every variant to).
    var toleratedSpillBytes: Int { get }
}

extension KernelVariantDescriptor {
    /// What the run-time compiler and the disk cache see: the source name, the architecture, the
    /// defines and the headers.
    public var kernelDescriptor: KernelDescriptor {
        KernelDescriptor(sourceName: sourceName, architecture: architecture, defines: defines, headers: headers)
    }

    /// None by default.
    public var headers: [String] { [] }

    /// None by default.
    public var toleratedSpillBytes: Int { 0 }

    /// The kernel descriptor's description, e.g. `dropout_mask sm_90`.
    public var description: String { kernelDescriptor.description }
}

/// A kernel variant of any family as a dictionary key: equal when both are the same type and
/// equal, hashed as the variant hashes.
struct AnyKernelVariant: Hashable, Sendable {
    /// The variant.
    let base: any KernelVariantDescriptor

    /// `base` as a key.
    init(_ base: some KernelVariantDescriptor) {
        self.base = base
    }

    static func == (left: AnyKernelVariant, right: AnyKernelVariant) -> Bool {
        func isEqual<Variant: KernelVariantDescriptor>(_ variant: Variant) -> Bool {
            right.base as? Variant == variant
        }
        return isEqual(left.base)
    }

    func hash(into hasher: inout Hasher) {
        base.hash(into: &hasher)
    }
}
