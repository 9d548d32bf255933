import FMHACore

/// The tensor-core backward's kernels (`flash_backward.cu`) for tiles `width` columns wide, one
/// input dtype, with or without the tensor bias and dropout (`extras`): the D pre-pass, the dQ
/// pass, the dK/dV pass (which in the extras build can also add dQ atomically), the bias-gradient
/// sum and the atomic dQ's conversion, one cubin. The tile sizes follow from the width
/// and the build; blocks have four warps. (Every size here compiles without spills at 255
/// registers for sm_80 and sm_90, but for `keyPassQueries`'s few bytes in the extras build;
/// larger tiles spill.)
public struct FlashBackwardKernel: KernelVariantDescriptor {
    /// The D = rowsum(dO∘O) kernel.
    public static let deltaEntry = "fmha_flash_backward_delta"
    /// The dQ (and bias gradient) kernel.
    public static let queryEntry = "fmha_flash_backward_dq"
    /// The dK/dV kernel.
    public static let keyValueEntry = "fmha_flash_backward_dkdv"
    /// The kernel that sums the bias gradient over broadcast dimensions.
    public static let biasSumEntry = "fmha_flash_backward_bias_sum"
    /// The kernel that converts the atomic dQ sums to the input dtype.
    public static let querySumEntry = "fmha_flash_backward_dq_from_sum"

    /// The padded head dimension (`FMHA_HEAD_DIM`), one of `CUDAFlashForward.widths`.
    public let width: Int
    /// The input dtype: float16 or bfloat16 (`FMHA_DTYPE` 1 or 2).
    public let dtype: DType
    /// Whether this build takes a tensor bias and dropout (`FMHA_EXTRAS`).
    public let extras: Bool
    public let architecture: String

    /// The kernels of `width`, `dtype` and `extras` for `architecture`.
    public init(width: Int, dtype: DType, extras: Bool, architecture: String) {
        self.width = width
        self.dtype = dtype
        self.extras = extras
        self.architecture = architecture
    }

    /// Words of the shape the dQ and dK/dV kernels take by value (`FMHA_SHAPE_WORDS`).
    static let shapeWords = 42

    /// Threads per block (four warps).
    static let threads = 128
    /// Queries per block of the dQ pass, and keys per block of the dK/dV pass (16 per warp).
    static let blockRows = 64

    /// Keys per tile of the dQ pass (`FMHA_DQ_KEYS`): 64, or 32 past 128 columns where its dQ
    /// accumulators take most of the registers (and past 96 with the extras: 64 spills at 112 on
    /// sm_90); 16 at 224 without them (32 spills there on sm_80).
    var queryPassKeys: Int {
        if width == 224 && !extras { return 16 }
        return width > 128 || (extras && width > 96) ? 32 : 64
    }
    /// Queries per step of the dK/dV pass (`FMHA_DKDV_QUERIES`): 32. (The extras build spills a
    /// few bytes with it at widths 80-160 and 256 — 4-8 bytes on sm_90, 4-24 on sm_80 — and still
    /// measured faster than 16 without spills on the H200: dropout backward +11-27 %, tensor-bias
    /// backward +3-5 %.)
    var keyPassQueries: Int { 32 }

    /// The extras build's dK/dV spills (`keyPassQueries`): at most 24 bytes stored and 32 loaded, on sm_80.
    public var toleratedSpillBytes: Int { extras ? 32 : 0 }
    /// Column parts of the dK/dV pass (`FMHA_COLUMN_PARTS`): past 128 columns its dK and dV
    /// accumulators are split over two blocks per key tile.
    var columnParts: Int { width <= 128 ? 1 : 2 }

    /// Buffers per walked tile (`FMHA_STAGES`): 2 up to 128 columns (the next K/V or Q/dO tile is
    /// copied while the current one is worked on), 1 past them (two blocks per SM would not fit).
    var stages: Int { width <= 128 ? 2 : 1 }

    /// Dynamic shared memory of the dQ pass: Q and dO tiles, K and V tiles per stage (rows of
    /// width + 8 values).
    var queryPassSharedMemoryBytes: Int { 2 * (Self.blockRows + stages * queryPassKeys) * (width + 8) * 2 }
    /// Dynamic shared memory of the dK/dV pass: K and V tiles, Q and dO tiles per stage, and in
    /// the extras build the step's dSᵀ (keys × queries + 8) for the atomic dQ.
    var keyPassSharedMemoryBytes: Int {
        2 * (Self.blockRows + stages * keyPassQueries) * (width + 8) * 2 + (extras ? Self.blockRows * (keyPassQueries + 8) * 2 : 0)
    }

    public var sourceName: String { "flash_backward" }

    public var entryPoints: [String] { [Self.deltaEntry, Self.queryEntry, Self.keyValueEntry, Self.biasSumEntry, Self.querySumEntry] }

    public var headers: [String] { ["tensor_core"] }

    public var defines: [String: String] {
        ["FMHA_HEAD_DIM": "\(width)", "FMHA_DTYPE": dtype == .float16 ? "1" : "2",
         "FMHA_DQ_KEYS": "\(queryPassKeys)", "FMHA_DKDV_QUERIES": "\(keyPassQueries)", "FMHA_COLUMN_PARTS": "\(columnParts)",
         "FMHA_EXTRAS": extras ? "1" : "0", "FMHA_STAGES": "\(stages)"]
    }

    /// The larger of the two passes' (the attribute is set once per function to this).
    public var dynamicSharedMemoryBytes: Int { max(queryPassSharedMemoryBytes, keyPassSharedMemoryBytes) }

    /// A bound on the static shared memory either pass declares: four 4-byte values per query
    /// (dQ: 64 rows; dK/dV: at most 2 stages of 32) and its work record, 1,088 and 1,072 bytes as
    /// ptxas reports them (sm_90, K = 128).
    static let staticSharedMemoryBytes = 1152

    /// Why these kernels cannot run on a device that gives a block at most `limit` bytes of shared
    /// memory, or nil when they fit.
    func sharedMemoryProblem(limit: Int) -> String? {
        let needed = dynamicSharedMemoryBytes + Self.staticSharedMemoryBytes
        guard needed > limit else { return nil }
        return "width \(width) needs \(needed) bytes of shared memory per block, this device gives at most \(limit)"
    }

    /// Every width, input dtype and build on `architecture`.
    static func allVariants(architecture: String) -> [FlashBackwardKernel] {
        [false, true].flatMap { extras in
            CUDAFlashForward.widths.flatMap { width in
                [DType.float16, .bfloat16].map { FlashBackwardKernel(width: width, dtype: $0, extras: extras, architecture: architecture) }
            }
        }
    }
}
