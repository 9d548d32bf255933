import CUDADriver
import FMHACore
import Synchronization

/// The tensor-core forward ("cuda-flash", `flash_forward.cu`): FlashAttention-2's scheme with
/// `mma.sync` m16n8k16, one thread block per tile of queries of one mask block and head, every
/// bias (tiles the mask hides are skipped; a tensor bias is read tile by tile), GQA and stride-0
/// K/V read in place, K ≠ Kv, dropout (the CPU's Philox mask, bit for bit), partial output and
/// LSE. float16 and bfloat16, head dimensions that are multiples of 8 up to 256; the rest goes to
/// `cuda-reference`. Output and LSE stay on the device. Tensor bias and dropout run in a second
/// build of the kernel (`FMHA_EXTRAS`) with its own tile shapes.
public struct CUDAFlashForward: ForwardOperator {
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
        /// (two Int32 per query) and, with two stages, their nine mbarriers.
        func totalSharedMemoryBytes(width: Int) -> Int { sharedMemoryBytes(width: width) + 8 * queries + (stages == 2 ? 72 : 0) }

        /// Why a block of this shape cannot run at `width` on a device that gives a block at most
        /// `limit` bytes of shared memory, or nil when it fits (a tuning shape can ask for more).
        func sharedMemoryProblem(width: Int, limit: Int) -> String? {
            let needed = totalSharedMemoryBytes(width: width)
            guard needed > limit else { return nil }
            return "tile shape \(name) at width \(width) needs \(needed) bytes of shared memory per block, this device gives at most \(limit)"
        }
    }

    /// The widths kernels are compiled for: K and Kv are padded to the first one that holds both.
    static let widths = Array(stride(from: 16, through: 128, by: 16)) + [160, 192, 224, 256]

    /// The tuning table: the tile shape used for each width on a GPU of compute capability
    /// `major`.x. Hopper's entries were chosen by timing the candidates (`tuningCandidates`,
    /// `fmha bench --op cuda-flash-<shape>`) on the H200 (bench/GPU-NOTES.md: 128-key tiles up to
    /// K = 64, as FlashAttention-2 does, then 64-key tiles, and above K = 128 8 warps of 16 rows
    /// with two K/V stages); the others are the
    /// spill-free shapes closest to them (sm_80's ptxas spills FA2's 4×32-row shape above K = 64),
    /// not measured on such a GPU.
    /// With `extras` (tensor bias or dropout), 8 warps of 16 rows everywhere: the extra registers
    /// make the 4-warp shape spill. Below Hopper, width 256 takes 16-key tiles: sm_86 and sm_89
    /// give a block 99 KiB of shared memory, which 32-key tiles, the Q tile and the row ranges
    /// overflow by 1 KiB.
    static func tileShape(width: Int, major: Int, extras: Bool) -> TileShape {
        let fourWarpsOf32Rows = TileShape(warps: 4, warpTiles: 2, keys: 64, queryInShared: true, minimumBlocks: 2)
        let fourWarpsOf32RowsWideTiles = TileShape(warps: 4, warpTiles: 2, keys: 128, queryInShared: true, minimumBlocks: 2)
        let eightWarpsOf16Rows = TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1)
        let eightWarpsOf16RowsSmallTiles = TileShape(warps: 8, warpTiles: 1, keys: 32, queryInShared: true, minimumBlocks: 1)
        let eightWarpsOf16RowsTwoStages = TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1, stages: 2)
        if major < 9, width > 224 { return TileShape(warps: 8, warpTiles: 1, keys: 16, queryInShared: true, minimumBlocks: 1) }
        if extras { return width <= 128 ? eightWarpsOf16Rows : eightWarpsOf16RowsSmallTiles }
        if major >= 9 { return width <= 64 ? fourWarpsOf32RowsWideTiles : width <= 128 ? fourWarpsOf32Rows : eightWarpsOf16RowsTwoStages }
        switch width {
        case ...64: return fourWarpsOf32Rows
        case ...128: return eightWarpsOf16Rows
        default: return eightWarpsOf16RowsSmallTiles
        }
    }

    /// Tile shapes to time against the table's (the forward variants `cuda-flash-<shape name>`).
    public static let tuningCandidates = [
        TileShape(warps: 4, warpTiles: 2, keys: 32, queryInShared: false, minimumBlocks: 2),
        TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: false, minimumBlocks: 1),
        TileShape(warps: 4, warpTiles: 2, keys: 32, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 4, warpTiles: 2, keys: 64, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1),
        TileShape(warps: 8, warpTiles: 1, keys: 32, queryInShared: true, minimumBlocks: 1),
        TileShape(warps: 4, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 4, warpTiles: 2, keys: 128, queryInShared: true, minimumBlocks: 2),
        TileShape(warps: 8, warpTiles: 1, keys: 128, queryInShared: true, minimumBlocks: 1),
        TileShape(warps: 8, warpTiles: 1, keys: 64, queryInShared: true, minimumBlocks: 1, stages: 2),
    ]

    public let name: String
    /// The tile shape every width uses, or nil for the tuning table's.
    let fixedTileShape: TileShape?

    /// The operator, with the tuning table's tile shapes.
    public init() {
        name = "cuda-flash"
        fixedTileShape = nil
    }

    /// The operator with one tile shape for every head dimension ("cuda-flash-<shape name>"), for tuning.
    public init(tileShape: TileShape) {
        name = "cuda-flash-\(tileShape.name)"
        fixedTileShape = tileShape
    }

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float16, .bfloat16], maxHeadDimension: 256, biasTypes: attentionBiasTypes,
            supportsDropout: true, supportsCustomScale: true, supportsDifferentValueHeadDimension: true, supportsBMGHK: true, supportsPartial: true, supportsOutputDType: true,
            isDeterministic: true, minimumComputeCapability: ComputeCapability(8, 0))
    }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        var reasons = capabilityReasons(problem)
        let d = problem.dimensions
        for (what, size) in [("head dimension", d.headDimension), ("value head dimension", d.valueHeadDimension)]
        where size % 8 != 0 {
            reasons.append("\(what) \(size) is not a multiple of 8")
        }
        // Key positions are 32-bit in the kernel: K/V rows and the logical keys of every block.
        let keyEnd = problem.lowering.blocks.lazy.map { $0.keyStart + $0.keyCount }.max() ?? 0
        if max(d.keyLength, keyEnd) >= Int(Int32.max) {
            reasons.append("\(max(d.keyLength, keyEnd)) keys reach 2^31")
        }
        return CUDAKernels.notSupportedReasons(reasons, on: problem.device)
    }

    public func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
        try requireSupport(problem)
        let d = problem.dimensions
        // Not zero-filled: the kernel writes every element (the tests poison them to check).
        let output = try Tensor.uninitialized(d.outputShape, dtype: problem.outputDType, device: problem.device)
        let lse = try Tensor.uninitialized(d.lseShape, dtype: .float32, device: problem.device)
        try run(problem, output: output, lse: lse)
        return ForwardOutput(output: output, lse: lse)
    }

    /// Runs the kernel on a supported `problem`, writing every element of `output` (contiguous,
    /// the output shape and dtype) and `lse` (contiguous float32) on the problem's device; tests
    /// pass poisoned tensors to see that nothing is left unwritten.
    func run(_ problem: AttentionProblem, output: Tensor, lse: Tensor) throws {
        let d = problem.dimensions
        let device = problem.device, context = try device.cudaContext()
        let views = (query: problem.query, key: problem.key, value: problem.value)
        let biasView = problem.tensorBias
        let dropoutMask = problem.dropoutMask
        let extras = biasView != nil || dropoutMask != nil
        let shape = CUDAKernels.shapeWords(d, dtype: problem.dtype, views: views, bias: biasView)
        let mask = DeviceLowering.words(problem.lowering, rowBlocks: false)
        let width = Self.widths.first { $0 >= max(d.headDimension, d.valueHeadDimension) } ?? Self.widths.last!
        let major = context.device.computeCapability.major
        // (The two-stage build takes no tensor bias or dropout: those go to the table's extras shape.)
        let tileShape = fixedTileShape.flatMap { extras && $0.stages == 2 ? nil : $0 }
            ?? Self.tileShape(width: width, major: major, extras: extras)
        if let problem = tileShape.sharedMemoryProblem(width: width, limit: context.device.sharedMemoryPerBlockOptIn) {
            throw FMHAError(.unsupported, "\(name): \(problem)")
        }
        let work = DeviceLowering.workList(problem.lowering.tiles(rows: tileShape.queries))
        let outputDType = output.dtype
        let heads = d.batch * d.groups * d.heads
        guard !work.isEmpty, heads > 0 else { return }
        try CUDAContexts.translatingErrors(device: device) {
            // Shape, mask and work list in one copy.
            let words = try CUDAKernels.upload(shape + mask + work, context)
            let function = try Self.kernel(width: width, tileShape: tileShape, dtype: problem.dtype, extras: extras,
                                           context: context)
            let tensors = [views.query, views.key, views.value, output, lse] + (biasView.map { [$0] } ?? [])
            try CUDAKernels.withAddresses(tensors) { addresses in
                // 16-byte loads when every row of q, k and v starts on a 16-byte boundary.
                let aligned = addresses.prefix(3).allSatisfy { $0 % 16 == 0 }
                    && [views.query, views.key, views.value].allSatisfy { $0.strides.prefix(4).allSatisfy { $0 % 8 == 0 } }
                var arguments = KernelArguments()
                for address in addresses.prefix(5) { arguments.append(address) }
                arguments.append(words.address)
                arguments.append(words.address + UInt64(shape.count * 8))
                arguments.append(words.address + UInt64((shape.count + mask.count) * 8))
                arguments.append(Float(problem.scale * 1.4426950408889634))
                arguments.append(CUDAKernels.dtypeCode(outputDType))
                arguments.append(Int32(aligned ? 1 : 0))
                arguments.append(addresses.count > 5 ? addresses[5] : UInt64(0))
                arguments.appendDropout(dropoutMask)
                try function.launch(grid: (work.count / DeviceLowering.wordsPerTile, min(heads, 65535), 1), block: (tileShape.warps * 32, 1, 1),
                                    sharedMemory: tileShape.sharedMemoryBytes(width: width), arguments: arguments)
                try context.synchronize()
            }
        }
    }

    /// What identifies a loaded kernel: its variant's parameters and the device.
    private struct LoadedKernelKey: Hashable {
        let width: Int, tileShape: TileShape, dtype: DType, extras: Bool, device: Int
    }

    /// The kernels loaded so far, each with its dynamic shared memory allowed: a call looks its
    /// kernel up here instead of building the descriptor, finding the function in its module and
    /// setting the attribute again (microseconds that short sequences feel).
    private static let loadedKernels = Mutex<[LoadedKernelKey: CUDAFunction]>([:])

    /// The kernel of `variant(width:tileShape:dtype:extras:architecture:)` for `context`'s device,
    /// compiled and loaded on first use, ready to launch with `tileShape.sharedMemoryBytes(width:)`.
    static func kernel(width: Int, tileShape: TileShape, dtype: DType, extras: Bool,
                       context: CUDAContext) throws -> CUDAFunction {
        let key = LoadedKernelKey(width: width, tileShape: tileShape, dtype: dtype, extras: extras,
                                  device: context.device.ordinal)
        if let loaded = loadedKernels.withLock({ $0[key] }) { return loaded }
        let function = try CUDAKernels.shared().function(
            variant(width: width, tileShape: tileShape, dtype: dtype, extras: extras, architecture: "").descriptor,
            entry: "fmha_flash_forward", context: context)
        let sharedMemory = tileShape.sharedMemoryBytes(width: width)
        if sharedMemory > 48 * 1024 { try function.allowDynamicSharedMemory(sharedMemory) }
        loadedKernels.withLock { $0[key] = function }
        return function
    }

    /// The kernel for K/V tiles `width` columns wide, `tileShape`, `dtype`, with or without the
    /// tensor bias and dropout (`extras`; `architecture` is filled in at load time when empty).
    static func variant(width: Int, tileShape: TileShape, dtype: DType, extras: Bool,
                        architecture: String) -> KernelVariant {
        KernelVariant(descriptor: KernelDescriptor(
            sourceName: "flash_forward", architecture: architecture,
            defines: ["FMHA_HEAD_DIM": "\(width)", "FMHA_DTYPE": dtype == .float16 ? "1" : "2",
                      "FMHA_WARPS": "\(tileShape.warps)", "FMHA_WARP_TILES": "\(tileShape.warpTiles)",
                      "FMHA_BLOCK_N": "\(tileShape.keys)", "FMHA_Q_SHARED": tileShape.queryInShared ? "1" : "0",
                      "FMHA_MIN_BLOCKS": "\(tileShape.minimumBlocks)", "FMHA_EXTRAS": extras ? "1" : "0",
                      "FMHA_STAGES": "\(tileShape.stages)"]),
                      entryPoints: ["fmha_flash_forward"])
    }

    /// The table's kernel for every width, dtype and extras (without, with).
    static func variants(architecture: String) -> [KernelVariant] {
        let major = KernelDescriptor(sourceName: "flash_forward", architecture: architecture).architectureMajor ?? 0
        return [false, true].flatMap { extras in
            widths.flatMap { width in
                [DType.float16, .bfloat16].map {
                    variant(width: width, tileShape: tileShape(width: width, major: major, extras: extras), dtype: $0,
                            extras: extras, architecture: architecture)
                }
            }
        }
    }
}
