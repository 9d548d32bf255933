import CUDADriver
import FMHACore

extension CUDAFlashForward {
    /// The shape of one thread block's work: `warps` warps of `warpTiles` tiles of 16 queries each,
    /// K/V tiles of `keys` keys, Q fragments in registers or (`queryInShared`) read from shared
    /// memory for each product, and the blocks per SM promised to ptxas (`__launch_bounds__`).
    public struct TileShape: Sendable, Hashable {
        public let warps: Int, warpTiles: Int, keys: Int, queryInShared: Bool, minimumBlocks: Int
        /// K/V buffers per tensor (`FMHA_STAGES`): 1, or 2 tracked by mbarriers (the copies of the
        /// next tiles overlap the work on the current ones; Q in shared memory, no tensor bias or dropout).
        public let stages: Int

        /// A tile shape; `warpTiles` is 1 or 2, `keys` a multiple of 16, `stages` 1 or 2.
        public init(warps: Int, warpTiles: Int, keys: Int, queryInShared: Bool, minimumBlocks: Int, stages: Int = 1) {
            self.warps = warps
            self.warpTiles = warpTiles
            self.keys = keys
            self.queryInShared = queryInShared
            self.minimumBlocks = minimumBlocks
            self.stages = stages
        }

        /// Queries per thread block.
        public var queries: Int { warps * warpTiles * 16 }
        /// "w<warps>x<warpTiles>n<keys>[q]b<minimumBlocks>[s2]" (q: Q in shared memory, s2: two
        /// stages), the suffix of the tuning variants' names.
        public var name: String { "w\(warps)x\(warpTiles)n\(keys)\(queryInShared ? "q" : "")b\(minimumBlocks)\(stages == 2 ? "s2" : "")" }

        /// Dynamic shared memory of a block for tiles `width` columns wide: the K and V tiles (each
        /// `stages` times), and the Q tile when it is in shared memory (rows of width + 8 16-bit values).
        func sharedMemoryBytes(width: Int) -> Int {
            (2 * stages * keys + (queryInShared ? queries : 0)) * (width + 8) * 2
        }

        /// All the shared memory a block uses: the dynamic tiles and the kernel's static row ranges
        /// (two Int32 per query), its tile record (`DeviceLowering.wordsPerTile` Int64) and, with
        /// two stages, their nine mbarriers.
        func totalSharedMemoryBytes(width: Int) -> Int {
            sharedMemoryBytes(width: width) + 8 * queries + 8 * DeviceLowering.wordsPerTile + (stages == 2 ? 72 : 0)
        }

        /// Why a block of this shape cannot run at `width` on a device that gives a block at most
        /// `limit` bytes of shared memory, or nil when it fits (a tuning shape can ask for more).
        func sharedMemoryProblem(width: Int, limit: Int) -> String? {
            let needed = totalSharedMemoryBytes(width: width)
            guard needed > limit else { return nil }
            return "tile shape \(name) at width \(width) needs \(needed) bytes of shared memory per block, this device gives at most \(limit)"
        }
    }
}

extension CUDAFlashForward {
    /// The `FlashForwardKernel` of `width`, `tileShape`, `dtype` and `extras` for `context`'s
    /// device, compiled and loaded on first use (`CUDAKernels.function`), ready to launch with
    /// `tileShape.sharedMemoryBytes(width:)` bytes of dynamic shared memory.
    static func kernel(width: Int, tileShape: TileShape, dtype: DType, extras: Bool,
                       context: CUDAContext) throws -> CUDAFunction {
        try CUDAKernels.shared().function(
            FlashForwardKernel(width: width, tileShape: tileShape, dtype: dtype, extras: extras,
                               architecture: context.device.kernelArchitecture),
            entry: FlashForwardKernel.entryPoint, context: context)
    }
}

/// The tensor-core forward kernel (`flash_forward.cu`) for K/V tiles `width` columns wide, one
/// tile shape, one input dtype, with or without the tensor bias and dropout (`extras`).
public struct FlashForwardKernel: KernelVariantDescriptor {
    /// The one kernel the cubin defines.
    public static let entryPoint = "fmha_flash_forward"

    /// The padded head dimension (`FMHA_HEAD_DIM`), one of `CUDAFlashForward.widths`.
    public let width: Int
    /// The thread block's work (`FMHA_WARPS`, `FMHA_WARP_TILES`, `FMHA_BLOCK_N`, `FMHA_Q_SHARED`,
    /// `FMHA_MIN_BLOCKS`, `FMHA_STAGES`).
    public let tileShape: CUDAFlashForward.TileShape
    /// The input dtype: float16 or bfloat16 (`FMHA_DTYPE` 1 or 2).
    public let dtype: DType
    /// Whether this build takes a tensor bias and dropout (`FMHA_EXTRAS`).
    public let extras: Bool
    public let architecture: String

    /// The kernel of `width`, `tileShape`, `dtype` and `extras` for `architecture`.
    public init(width: Int, tileShape: CUDAFlashForward.TileShape, dtype: DType, extras: Bool, architecture: String) {
        self.width = width
        self.tileShape = tileShape
        self.dtype = dtype
        self.extras = extras
        self.architecture = architecture
    }

    public var sourceName: String { "flash_forward" }

    public var entryPoints: [String] { [Self.entryPoint] }

    public var headers: [String] { ["tensor_core"] }

    public var defines: [String: String] {
        ["FMHA_HEAD_DIM": "\(width)", "FMHA_DTYPE": dtype == .float16 ? "1" : "2",
         "FMHA_WARPS": "\(tileShape.warps)", "FMHA_WARP_TILES": "\(tileShape.warpTiles)",
         "FMHA_BLOCK_N": "\(tileShape.keys)", "FMHA_Q_SHARED": tileShape.queryInShared ? "1" : "0",
         "FMHA_MIN_BLOCKS": "\(tileShape.minimumBlocks)", "FMHA_EXTRAS": extras ? "1" : "0",
         "FMHA_STAGES": "\(tileShape.stages)"]
    }

    /// The K and V tiles and, with Q in shared memory, the Q tile (`TileShape.sharedMemoryBytes`).
    public var dynamicSharedMemoryBytes: Int { tileShape.sharedMemoryBytes(width: width) }

    /// The tuning table's kernel for every width, dtype and extras (without, with) on `architecture`.
    static func tableVariants(architecture: String) -> [FlashForwardKernel] {
        let major = KernelDescriptor(sourceName: "flash_forward", architecture: architecture).architectureMajor ?? 0
        return [false, true].flatMap { extras in
            CUDAFlashForward.widths.flatMap { width in
                [DType.float16, .bfloat16].map {
                    FlashForwardKernel(width: width, tileShape: CUDAFlashForward.tileShape(width: width, major: major, extras: extras),
                                       dtype: $0, extras: extras, architecture: architecture)
                }
            }
        }
    }
}
