import CUDADriver
import FMHACore

/// The decoding forward ("cuda-decode", `flash_decode.cu`): split-KV attention for few queries per
/// sequence (at most 16 per mask block: decoding and speculative steps). The query heads that share
/// a K/V head (GQA, K and V of stride 0 along H) are packed into one tile of 16 rows, so each K/V
/// head is read once per tile; a tile's keys are cut into splits (`DecodePlan`: as many as fill the
/// GPU), whose partial outputs a second kernel merges on the device. Every mask without a tensor
/// (paged caches and their block tables too) through the mask lowering; float16 and bfloat16,
/// head dimensions that are multiples of 8 up to 256, K ≠ Kv, partial output (LSE) and any output
/// dtype, and quantized K/V caches (int4 with 1-8 groups, fp8 e4m3 row-wise: `KeyValueFormat`),
/// dequantized tile by tile in shared memory; no dropout. Dispatch tries it before `cuda-flash`, whose 64- and 128-query tiles would
/// hold a few real rows here.
public struct CUDAFlashDecode: CUDAForwardRunner {
    /// The most queries of one mask block it takes.
    public static let maximumQueriesPerBlock = 16
    /// The tuning shapes `op:` can name ("cuda-decode-w4n32s2", ...).
    public static let tuningShapes: [FlashDecodeKernel.Shape] = [
        .init(warps: 4, keys: 32, stages: 2), .init(warps: 4, keys: 32, stages: 3), .init(warps: 8, keys: 16, stages: 3),
        .init(warps: 12, keys: 16, stages: 2), .init(warps: 4, keys: 16, stages: 2),
    ]

    /// Every bias type but those with a tensor (computed once: dispatch asks for the capabilities on every call).
    static let biasTypes = attentionBiasTypes.filter {
        ![ObjectIdentifier(Tensor.self), ObjectIdentifier(LowerTriangularMaskWithTensorBias.self)].contains(ObjectIdentifier($0))
    }

    public let name: String
    /// The block shape every width uses, or nil for `FlashDecodeKernel.Shape.standard`'s.
    let fixedShape: FlashDecodeKernel.Shape?

    /// The operator, with the standard block shapes.
    public init() {
        name = "cuda-decode"
        fixedShape = nil
    }

    /// The operator with one block shape for every head dimension ("cuda-decode-<shape>"), for tuning.
    public init(shape: FlashDecodeKernel.Shape) {
        name = "cuda-decode-\(shape)"
        fixedShape = shape
    }

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float16, .bfloat16], maxHeadDimension: 256,
            biasTypes: Self.biasTypes,
            supportsDropout: false, supportsCustomScale: true, supportsDifferentValueHeadDimension: true, supportsBMGHK: true,
            supportsPartial: true, supportsOutputDType: true, isDeterministic: true, minimumComputeCapability: ComputeCapability(8, 0),
            supportsQuantizedKeyValue: true)
    }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        var reasons = capabilityReasons(problem) + CUDAKernels.tensorCoreSizeReasons(problem)
        if let most = problem.lowering.blocks.lazy.map(\.queryCount).max(), most > Self.maximumQueriesPerBlock {
            reasons.append("\(most) queries in a block: more than \(Self.maximumQueriesPerBlock), where cuda-flash's query tiles fill up")
        }
        let availability = CUDAKernels.notSupportedReasons(reasons, on: problem.device)
        guard availability.isEmpty, let device = try? problem.device.cudaContext().device else { return availability }
        let kernel = kernel(for: problem, on: device)
        let needed = kernel.shape.totalSharedMemoryBytes(width: kernel.width, cache: kernel.cache)
        if needed > device.sharedMemoryPerBlockOptIn {
            return ["block shape \(kernel.shape) at width \(kernel.width) needs \(needed) bytes of shared memory per block, this device gives at most \(device.sharedMemoryPerBlockOptIn)"]
        }
        return []
    }

    /// The kernels `problem` runs on `device`.
    func kernel(for problem: AttentionProblem, on device: CUDADevice) -> FlashDecodeKernel {
        let width = CUDAFlashForward.width(for: problem.dimensions)
        let cache = FlashDecodeKernel.Cache(problem.keyValueFormat)
        return FlashDecodeKernel(width: width, dtype: problem.dtype, cache: cache,
                                 shape: fixedShape ?? .standard(width: width, cache: cache, sharedMemoryLimit: device.sharedMemoryPerBlockOptIn),
                                 architecture: device.kernelArchitecture)
    }

    /// The plan of `problem` on `device` (blocks of this kernel run one per SM).
    static func plan(_ problem: AttentionProblem, kernel: FlashDecodeKernel, on device: CUDADevice) -> DecodePlan {
        let d = problem.dimensions
        return DecodePlan(lowering: problem.lowering, heads: d.heads, sharedHeads: problem.keyValueHeads.sharing[2],
                          batchGroups: d.batch * d.groups, capacity: device.multiprocessorCount, roundKeys: kernel.shape.roundKeys)
    }

    public func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
        try forwardByRunning(problem)
    }

    /// Runs the kernels on a supported `problem`, writing every element of `output` (contiguous,
    /// the output shape and dtype) and `lse` (contiguous float32) on the problem's device.
    func run(_ problem: AttentionProblem, output: Tensor, lse: Tensor) throws {
        let d = problem.dimensions
        let device = problem.device, context = try device.cudaContext()
        let views = (query: problem.query, key: problem.key, value: problem.value)
        let kernel = kernel(for: problem, on: context.device)
        let plan = Self.plan(problem, kernel: kernel, on: context.device)
        let headChunks = plan.headChunks
        guard plan.entries > 0, headChunks > 0 else { return }
        let shape = CUDAKernels.shapeWords(d, dtype: problem.dtype, views: views, bias: nil)
        let mask = DeviceLowering.words(problem.lowering, rowBlocks: false)
        // Quantized caches: the int4 group count, then the fp8 scale/shift words' strides.
        let scaleShifts = [problem.keyScaleShift, problem.valueScaleShift].compactMap { $0 }
        var quantized = [Int64(0)]
        if case .int4(let groups) = problem.keyValueFormat { quantized[0] = Int64(groups) }
        quantized += scaleShifts.isEmpty ? [Int64](repeating: 0, count: 8) : scaleShifts.flatMap { $0.strides.map(Int64.init) }
        try CUDAContexts.translatingErrors(device: device) {
            // Shape, mask, work list, merge list and the quantized cache's words in one copy.
            let words = try CUDAKernels.upload(shape + mask + plan.workList + plan.mergeList + quantized, context)
            let maskAddress = words.address + UInt64(shape.count * 8)
            let workAddress = maskAddress + UInt64(mask.count * 8)
            let mergeAddress = workAddress + UInt64(plan.workList.count * 8)
            let quantizedAddress = mergeAddress + UInt64(plan.mergeList.count * 8)
            // The splits' outputs and LSEs (only when some tile has several).
            let slots = plan.mergedTiles > 0 ? headChunks * plan.entries * DecodePlan.tileRows : 0
            let partialOutput = slots > 0 ? try context.allocate(slots * kernel.width * 4) : nil
            let partialLSE = slots > 0 ? try context.allocate(slots * 4) : nil
            let kernels = try CUDAKernels.shared()
            let decode = try kernels.function(kernel, entry: FlashDecodeKernel.decodeEntry, context: context)
            try CUDAKernels.withAddresses([views.query, views.key, views.value, output, lse] + scaleShifts) { addresses in
                // 16-byte loads when every row of q, k and v starts on a 16-byte boundary (of q alone
                // for a quantized cache, whose rows are copied by words).
                let loaded = kernel.cache == .plain ? 3 : 1
                let aligned = CUDAKernels.rowsAre16ByteAligned(Array([views.query, views.key, views.value].prefix(loaded)),
                                                              addresses: Array(addresses.prefix(loaded)))
                var arguments = KernelArguments()
                for address in addresses.prefix(5) { arguments.append(address) }
                arguments.append(words.address)
                arguments.append(maskAddress)
                arguments.append(workAddress)
                arguments.append(Float(problem.scale * 1.4426950408889634))
                arguments.append(CUDAKernels.dtypeCode(output.dtype))
                arguments.append(Int32(aligned ? 1 : 0))
                arguments.append(partialOutput?.address ?? 0)
                arguments.append(partialLSE?.address ?? 0)
                arguments.append(Int32(plan.pack))
                arguments.append(Int64(plan.entries))
                arguments.append(quantizedAddress)
                arguments.append(addresses.count > 5 ? addresses[5] : 0)
                arguments.append(addresses.count > 6 ? addresses[6] : 0)
                try KernelTiming.span(context) {
                    try decode.launch(grid: (plan.entries, min(headChunks, 65535), 1), block: (kernel.shape.warps * 32, 1, 1),
                                      sharedMemory: kernel.dynamicSharedMemoryBytes, arguments: arguments)
                    if let partialOutput, let partialLSE {
                        var arguments = KernelArguments()
                        arguments.append(addresses[3])
                        arguments.append(addresses[4])
                        arguments.append(words.address)
                        arguments.append(mergeAddress)
                        arguments.append(partialOutput.address)
                        arguments.append(partialLSE.address)
                        arguments.append(CUDAKernels.dtypeCode(output.dtype))
                        arguments.append(Int32(plan.pack))
                        arguments.append(Int64(plan.entries))
                        try kernels.function(kernel, entry: FlashDecodeKernel.mergeEntry, context: context).launch(
                            grid: (plan.mergedTiles, min(headChunks, 65535), DecodePlan.tileRows),
                            block: (FlashDecodeKernel.mergeThreads, 1, 1), arguments: arguments)
                    }
                }
            }
        }
    }
}
