import CUDADriver
import FMHACore

/// The tensor-core forward ("cuda-flash", `flash_forward.cu`): FlashAttention-2's scheme with
/// `mma.sync` m16n8k16, one thread block per tile of queries of one mask block and head, every
/// bias (tiles the mask hides are skipped; a tensor bias is read tile by tile), GQA and stride-0
/// K/V read in place, K ≠ Kv, dropout (the CPU's Philox mask, bit for bit), partial output and
/// LSE. float16 and bfloat16, head dimensions that are multiples of 8 up to 256; the rest goes to
/// `cuda-reference`. Output and LSE stay on the device. Tensor bias and dropout run in a second
/// build of the kernel (`FMHA_EXTRAS`) with its own tile shapes.
public struct CUDAFlashForward: CUDAForwardRunner {
    /// The widths kernels are compiled for: K and Kv are padded to the first one that holds both.
    static let widths = Array(stride(from: 16, through: 128, by: 16)) + [160, 192, 224, 256]

    /// The width (one of `widths`) a problem of sizes `d` runs at: the first that holds K and Kv.
    static func width(for d: AttentionDimensions) -> Int {
        CUDAKernels.width(for: d, among: widths) ?? widths.last!
    }

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
        CUDAKernels.notSupportedReasons(capabilityReasons(problem) + CUDAKernels.tensorCoreSizeReasons(problem), on: problem.device)
    }

    public func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
        try forwardByRunning(problem)
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
        let width = Self.width(for: d)
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
                let aligned = CUDAKernels.rowsAre16ByteAligned([views.query, views.key, views.value], addresses: Array(addresses.prefix(3)))
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
                try KernelTiming.span(context) {
                    try function.launch(grid: (work.count / DeviceLowering.wordsPerTile, min(heads, 65535), 1), block: (tileShape.warps * 32, 1, 1),
                                        sharedMemory: tileShape.sharedMemoryBytes(width: width), arguments: arguments)
                }
            }
        }
    }
}
