import CUDADriver
import FMHACore

/// The Hopper forward ("cuda-hopper", `hopper_forward.cu`): FlashAttention-3's layout on sm_90a.
/// A block of 128 queries of one mask block and one head has a producer warpgroup, whose copies
/// of the Q tile and of 128-key K/V tiles go through the tensor memory accelerator into a ring of
/// shared-memory buffers tracked by mbarriers, and two consumer warpgroups of 64 queries that run
/// S = Q·Kᵀ and O += P·V by `wgmma` with the softmax in registers. Every mask without a tensor
/// and without pages through the mask lowering, GQA and stride-0 K/V in place (the tensor maps
/// give such a dimension extent 1), K ≠ Kv, partial output and any output dtype; float16 and
/// bfloat16 with K and Kv up to 256 (128-key tiles, 64 past 128 columns). Everything else
/// (compute capability other than 9.0, a tensor bias, dropout, paged caches, quantized caches, rows
/// the tensor memory accelerator cannot address) goes to `cuda-flash`, and dispatch says why.
public struct CUDAHopperForward: CUDAForwardRunner {
    public let name = "cuda-hopper"

    /// The operator.
    public init() {}

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float16, .bfloat16], maxHeadDimension: HopperForwardKernel.widths.last!,
            biasTypes: CUDAFlashDecode.biasTypes, supportsDropout: false, supportsCustomScale: true,
            supportsDifferentValueHeadDimension: true, supportsBMGHK: true, supportsPartial: true, supportsOutputDType: true,
            isDeterministic: true, minimumComputeCapability: ComputeCapability(9, 0))
    }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        var reasons = capabilityReasons(problem) + CUDAKernels.tensorCoreSizeReasons(problem)
        let d = problem.dimensions
        if d.batch * d.groups * d.heads >= Int(Int32.max) {
            reasons.append("\(d.batch * d.groups * d.heads) heads (B·G·H) reach 2^31")
        }
        if d.queryLength >= Int(Int32.max) { reasons.append("\(d.queryLength) queries reach 2^31") }
        if problem.lowering.pages != nil {
            reasons.append("paged keys: the tensor memory accelerator copies whole tiles, not pages")
        }
        for (name, tensor) in [("query", problem.query), ("key", problem.key), ("value", problem.value)] {
            if let reason = Self.mapReason(tensor) { reasons.append("\(name): \(reason)") }
        }
        let availability = CUDAKernels.notSupportedReasons(reasons, on: problem.device)
        guard availability.isEmpty, let device = try? problem.device.cudaContext().device else { return availability }
        if device.computeCapability.major != 9 || device.computeCapability.minor != 0 {
            return ["compute capability \(device.computeCapability.major).\(device.computeCapability.minor): sm_90a code runs on 9.0 only"]
        }
        return []
    }

    /// Why the tensor memory accelerator cannot address `tensor` ([B, M, G, H, K] of 16-bit
    /// values), or nil: its rows must be contiguous, start 16-byte aligned, lie a multiple of 16
    /// bytes apart along every dimension that has more than one index, and not be broadcast along
    /// the sequence.
    static func mapReason(_ tensor: Tensor) -> String? {
        if tensor.strides[4] != 1 && tensor.shape[4] > 1 { return "the last dimension has stride \(tensor.strides[4]), not 1" }
        if tensor.offset % 8 != 0 { return "its first element is not 16-byte aligned" }
        // (The maps give a stride-0 dimension extent 1 and the kernel reads its index 0, which the
        // rows of a sequence cannot be.)
        if tensor.shape[1] > 1 && tensor.strides[1] == 0 { return "its rows have stride 0 (broadcast along the sequence)" }
        for dimension in 0..<4 where tensor.shape[dimension] > 1 && tensor.strides[dimension] % 8 != 0 {
            return "stride \(tensor.strides[dimension]) along dimension \(dimension) is not a multiple of 16 bytes"
        }
        return nil
    }

    /// The tensor map of `tensor` at `address`: dimensions (column, row, h, g, b), boxes of 64
    /// columns × `rows` rows; a dimension of one index or of stride 0 has extent 1.
    static func map(_ tensor: Tensor, address: UInt64, rows: Int, driver: CUDADriver) throws -> TensorMap {
        let order = [1, 3, 2, 0]
        let extents = [UInt64(tensor.shape[4])]
            + order.map { tensor.strides[$0] == 0 ? 1 : UInt64(tensor.shape[$0]) }
        let strides = order.map { tensor.strides[$0] == 0 || tensor.shape[$0] == 1 ? UInt64(16) : UInt64(tensor.strides[$0] * 2) }
        return try TensorMap(driver: driver, elementType: tensor.dtype == .float16 ? .float16 : .bfloat16, address: address,
                             extents: extents, strides: strides, box: [64, UInt32(rows), 1, 1, 1])
    }

    public func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
        try forwardByRunning(problem)
    }

    /// Runs the kernel on a supported `problem`, writing every element of `output` (contiguous,
    /// the output shape and dtype) and `lse` (contiguous float32) on the problem's device.
    func run(_ problem: AttentionProblem, output: Tensor, lse: Tensor) throws {
        let d = problem.dimensions
        let device = problem.device, context = try device.cudaContext()
        let views = (query: problem.query, key: problem.key, value: problem.value)
        // (Some width holds them: the capabilities refuse K or Kv past the widest.)
        let width = CUDAKernels.width(for: d, among: HopperForwardKernel.widths)!
        let kernel = HopperForwardKernel(width: width, dtype: problem.dtype)
        let shape = CUDAKernels.shapeWords(d, dtype: problem.dtype, views: views, bias: nil)
        let mask = DeviceLowering.words(problem.lowering, rowBlocks: false)
        let work = DeviceLowering.workList(problem.lowering.tiles(rows: HopperForwardKernel.blockQueries))
        let heads = d.batch * d.groups * d.heads
        guard !work.isEmpty, heads > 0 else { return }
        let driver = try CUDADriver.shared()
        try CUDAContexts.translatingErrors(device: device) {
            let words = try CUDAKernels.upload(shape + mask + work, context)
            let function = try CUDAKernels.shared().function(kernel, entry: HopperForwardKernel.entryPoint, context: context)
            try CUDAKernels.withAddresses([views.query, views.key, views.value, output, lse]) { addresses in
                var arguments = KernelArguments()
                for (tensor, (address, rows)) in zip([views.query, views.key, views.value],
                                                     zip(addresses, [HopperForwardKernel.blockQueries, kernel.blockKeys, kernel.blockKeys])) {
                    arguments.append(words: try Self.map(tensor, address: address, rows: rows, driver: driver).words)
                }
                arguments.append(addresses[3])
                arguments.append(addresses[4])
                arguments.append(words.address)
                arguments.append(words.address + UInt64(shape.count * 8))
                arguments.append(words.address + UInt64((shape.count + mask.count) * 8))
                arguments.append(Float(problem.scale * 1.4426950408889634))
                arguments.append(CUDAKernels.dtypeCode(output.dtype))
                try KernelTiming.span(context) {
                    try function.launch(grid: (work.count / DeviceLowering.wordsPerTile, min(heads, 65535), 1),
                                        block: (HopperForwardKernel.threads, 1, 1), sharedMemory: kernel.dynamicSharedMemoryBytes,
                                        arguments: arguments)
                }
            }
        }
    }
}
