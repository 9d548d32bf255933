import FMHACore

/// The decoding kernels (`flash_decode.cu`: the split-KV forward and the merge of its splits) for
/// tiles `width` columns wide, one input dtype, one K/V cache kind and one block shape, one cubin.
public struct FlashDecodeKernel: KernelVariantDescriptor {
    /// How the K/V cache holds its elements (`FMHA_KV_FORMAT`): in the input dtype, or quantized
    /// (`KeyValueFormat`; the int4 group count is a kernel argument).
    public enum Cache: Int, Sendable, Hashable, CaseIterable {
        case plain = 0, int4 = 1, fp8 = 2

        /// The kind of a problem's cache.
        init(_ format: KeyValueFormat?) {
            switch format {
            case nil: self = .plain
            case .int4: self = .int4
            case .fp8: self = .fp8
            }
        }

        /// Bytes of shared memory per staged K or V row at `width` columns (the ring's rows):
        /// plain rows of width + 8 16-bit values; int4, 8 header words and width/8 words; fp8,
        /// width/4 words, the scale/shift word and 3 unused (16-byte aligned rows).
        func stagedRowBytes(width: Int) -> Int {
            switch self {
            case .plain: (width + 8) * 2
            case .int4: (8 + width / 8) * 4
            case .fp8: (width / 4 + 4) * 4
            }
        }
    }

    /// The split-KV forward.
    public static let decodeEntry = "fmha_flash_decode"
    /// The merge of a tile's splits.
    public static let mergeEntry = "fmha_decode_merge"
    /// Threads per block of the merge.
    static let mergeThreads = 128

    /// A decode block's shape: `warps` warps, each taking key tiles of `keys` keys in turn through
    /// its own ring of `stages` K/V buffers.
    public struct Shape: Sendable, Hashable, CustomStringConvertible {
        public let warps: Int, keys: Int, stages: Int

        /// A shape; `keys` 16 or 32 (a lane holds the page lookup of one key), `stages` 2 to 4.
        public init(warps: Int, keys: Int, stages: Int) {
            self.warps = warps
            self.keys = keys
            self.stages = stages
        }

        /// Keys a block takes per round of its warps.
        var roundKeys: Int { warps * keys }

        /// "w<warps>n<keys>s<stages>", the suffix of the tuning variants' names.
        public var description: String { "w\(warps)n\(keys)s\(stages)" }

        /// Dynamic shared memory at `width`: every warp's ring of K and V rows (and, for a quantized
        /// cache, its dequantized K and V tile), and the Q tile (rows of width + 8 16-bit values).
        func sharedMemoryBytes(width: Int, cache: Cache = .plain) -> Int {
            let row = (width + 8) * 2
            let dequantized = cache == .plain ? 0 : 2 * keys * row
            return warps * (stages * 2 * keys * cache.stagedRowBytes(width: width) + dequantized) + DecodePlan.tileRows * row
        }

        /// All the shared memory a block uses: the dynamic buffers and the static per-warp maxima
        /// and sums and per-row key ranges.
        func totalSharedMemoryBytes(width: Int, cache: Cache = .plain) -> Int {
            sharedMemoryBytes(width: width, cache: cache) + 2 * warps * DecodePlan.tileRows * 4 + 2 * DecodePlan.tileRows * 4
        }

        /// The standard shape at `width` for `cache` on a device giving a block `limit` bytes of shared
        /// memory: key tiles of 32 keys up to 64 columns, else 16 (4 KiB of K per tile at 128 columns),
        /// two stages, and as many warps of `warpCounts` as fit (more warps, more bytes in flight: on
        /// the H200 at 128 columns 8 warps read 1.15-1.37× faster than 4 of 32-key tiles).
        static func standard(width: Int, cache: Cache = .plain, sharedMemoryLimit limit: Int) -> Shape {
            let keys = width <= 64 ? 32 : 16
            let fitting = warpCounts(width: width, cache: cache).lazy.map { Shape(warps: $0, keys: keys, stages: 2) }.first {
                $0.totalSharedMemoryBytes(width: width, cache: cache) <= limit
            }
            return fitting ?? Shape(warps: 2, keys: keys, stages: 2)
        }

        /// The warp counts the standard shape tries, most first: 8, 6, 4; for a quantized cache up to
        /// 128 columns 12 first (its warps are bound by their own per-tile work, not by memory: 12 warps
        /// were 1.24× faster than 8 on the H200, bench/GPU-NOTES.md D5-D6; wider, 12 warps' 168
        /// registers a thread spill, fp8 from 160 columns on sm_80).
        static func warpCounts(width: Int, cache: Cache) -> [Int] {
            cache != .plain && width <= 128 ? [12, 8, 6, 4] : [8, 6, 4]
        }

        /// The opt-in shared memory per block that the catalog's variants are chosen for on
        /// `architecture`: 227 KiB on sm_90 (H100, H200), 163 KiB on sm_80 (A100).
        static func sharedMemoryLimit(architecture: String) -> Int {
            architecture.hasPrefix("sm_9") ? 232_448 : 166_912
        }
    }

    /// The padded head dimension (`FMHA_HEAD_DIM`), one of `CUDAFlashForward.widths`.
    public let width: Int
    /// The input dtype: float16 or bfloat16 (`FMHA_DTYPE` 1 or 2).
    public let dtype: DType
    /// The block shape (`FMHA_WARPS`, `FMHA_BLOCK_N`, `FMHA_STAGES`).
    public let shape: Shape
    /// The K/V cache kind (`FMHA_KV_FORMAT`).
    public let cache: Cache
    public let architecture: String

    /// The kernels of `width`, `dtype`, `cache` and `shape` for `architecture`.
    public init(width: Int, dtype: DType, cache: Cache = .plain, shape: Shape, architecture: String) {
        self.width = width
        self.dtype = dtype
        self.cache = cache
        self.shape = shape
        self.architecture = architecture
    }

    public var sourceName: String { "flash_decode" }

    public var entryPoints: [String] { [Self.decodeEntry, Self.mergeEntry] }

    public var headers: [String] { ["tensor_core"] }

    public var defines: [String: String] {
        ["FMHA_HEAD_DIM": "\(width)", "FMHA_DTYPE": dtype == .float16 ? "1" : "2", "FMHA_WARPS": "\(shape.warps)",
         "FMHA_BLOCK_N": "\(shape.keys)", "FMHA_STAGES": "\(shape.stages)", "FMHA_KV_FORMAT": "\(cache.rawValue)"]
    }

    public var dynamicSharedMemoryBytes: Int { shape.sharedMemoryBytes(width: width, cache: cache) }

    /// The standard shape's kernels for every width, dtype and cache kind on `architecture` (for
    /// its flagship's shared memory, `Shape.sharedMemoryLimit`).
    static func allVariants(architecture: String) -> [FlashDecodeKernel] {
        let limit = Shape.sharedMemoryLimit(architecture: architecture)
        return Cache.allCases.flatMap { cache in
            CUDAFlashForward.widths.flatMap { width in
                [DType.float16, .bfloat16].map {
                    FlashDecodeKernel(width: width, dtype: $0, cache: cache,
                                      shape: .standard(width: width, cache: cache, sharedMemoryLimit: limit), architecture: architecture)
                }
            }
        }
    }
}
