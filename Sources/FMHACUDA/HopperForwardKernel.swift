import FMHACore

/// The Hopper forward kernel (`hopper_forward.cu`, sm_90a only: wgmma, the tensor memory
/// accelerator and setmaxnreg) for tiles `width` columns wide and one input dtype.
public struct HopperForwardKernel: KernelVariantDescriptor {
    /// The one kernel the cubin defines.
    public static let entryPoint = "fmha_hopper_forward"
    /// The widths it is compiled for: K and Kv are padded to the first that holds both.
    static let widths = [64, 128, 192, 256]
    /// Queries per thread block (two consumer warpgroups of 64).
    static let blockQueries = 128
    /// Threads per block: a producer warpgroup and two consumers.
    static let threads = 384
    /// The one architecture it runs on.
    static let architecture = "sm_90a"

    /// The padded head dimension (`FMHA_HEAD_DIM`), one of `widths`.
    public let width: Int
    /// The input dtype: float16 or bfloat16 (`FMHA_DTYPE` 1 or 2).
    public let dtype: DType
    /// K/V buffers in the ring (`FMHA_STAGES`).
    public let stages: Int
    public var architecture: String { Self.architecture }

    /// The kernel of `width` and `dtype` with `stages` K/V buffers.
    public init(width: Int, dtype: DType, stages: Int = 2) {
        self.width = width
        self.dtype = dtype
        self.stages = stages
    }

    public var sourceName: String { "hopper_forward" }
    public var entryPoints: [String] { [Self.entryPoint] }
    public var headers: [String] { ["tensor_core"] }

    /// Keys per K/V tile (`FMHA_BLOCK_N`): 128, or 64 past 128 columns (the O accumulators of 96 and
    /// 128 registers a thread leave room for 32 of scores; and two stages of 128-key tiles would
    /// not fit in shared memory beside the Q tile).
    public var blockKeys: Int { width > 128 ? 64 : 128 }

    public var defines: [String: String] {
        ["FMHA_HEAD_DIM": "\(width)", "FMHA_DTYPE": dtype == .float16 ? "1" : "2", "FMHA_BLOCK_N": "\(blockKeys)",
         "FMHA_STAGES": "\(stages)"]
    }

    /// The Q tile and `stages` K and V tiles (rows of `width` 16-bit values), and 1 KiB to align
    /// them to the 128-byte swizzle's 1024-byte pattern (`FMHA_SHARED_BYTES`).
    public var dynamicSharedMemoryBytes: Int { (Self.blockQueries + 2 * stages * blockKeys) * width * 2 + 1024 }

    /// Every variant, on sm_90a (none elsewhere).
    static func allVariants(architecture: String) -> [HopperForwardKernel] {
        guard architecture == Self.architecture else { return [] }
        return widths.flatMap { width in [DType.float16, .bfloat16].map { HopperForwardKernel(width: width, dtype: $0) } }
    }
}
