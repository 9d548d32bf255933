import CUDADriver
import FMHACore

/// The tensor-core backward (`flash_backward.cu`): FlashAttention-2's backward with `mma.sync`
/// m16n8k16 and float32 accumulation, from the forward's output and LSE (any output and LSE: a
/// merged one too). D = rowsum(dO∘O) first; then dK/dV per tile of keys over every query head
/// sharing its K/V head and every query that sees it. dQ comes one of two ways:
/// - "cuda-flash" (deterministic): its own pass per tile of queries over the keys it sees, which
///   recomputes S and dP (7 matrix products per pair instead of 5) and gives the same bits on
///   every run;
/// - "cuda-flash-atomic", for dropout: the dK/dV pass adds dS·K to float32 sums by atomic
///   additions, whose order (and so the last bits of dQ) depends on scheduling, and the dropout
///   mask is drawn once instead of twice. Without dropout it measured no faster than the dQ pass
///   (H200), so only the dropout build has it; no tensor bias (its gradient comes from the dQ
///   pass).
/// Every bias through the mask lowering (gradients of paged keys scattered through the block
/// tables), the tensor bias and its gradient (summed over broadcast dimensions on the device),
/// dropout replayed from the forward's Philox mask, GQA and stride-0 K/V summed in the kernel.
/// float16 and bfloat16, head dimensions that are multiples of 8 up to 256, K ≠ Kv; gradients in
/// the input dtype, on the device.
public struct CUDAFlashBackward: BackwardOperator {
    /// Whether dQ has its own pass (the same bits every run) rather than atomic additions.
    public let deterministic: Bool

    public var name: String { deterministic ? "cuda-flash" : "cuda-flash-atomic" }

    /// The operator: with dQ in its own pass (`deterministic`), or added atomically.
    public init(deterministic: Bool = true) {
        self.deterministic = deterministic
    }

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float16, .bfloat16], maxHeadDimension: 256, biasTypes: attentionBiasTypes,
            supportsDropout: true, supportsCustomScale: true, supportsDifferentValueHeadDimension: true,
            supportsBMGHK: true, isDeterministic: deterministic, supportsBiasGradient: true,
            minimumComputeCapability: ComputeCapability(8, 0))
    }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        var reasons = capabilityReasons(problem) + CUDAKernels.tensorCoreSizeReasons(problem)
        let d = problem.dimensions
        if d.queryLength >= Int(Int32.max) {
            reasons.append("\(d.queryLength) queries reach 2^31")
        }
        if !deterministic {
            if problem.dropoutMask == nil {
                reasons.append("no dropout: the atomic dQ is built only into the dropout kernels (without dropout it measured no faster than cuda-flash's dQ pass)")
            }
            if problem.tensorBias != nil {
                reasons.append("a tensor bias takes its gradient from the dQ pass, which the atomic dQ skips (cuda-flash has it)")
            }
        }
        if problem.lowering.keyRowsOverlap {
            reasons.append("blocks of the mask share K/V rows (their dK/dV would have to be added up)")
        }
        if !BroadcastGradient.broadcastDimensions(of: problem.query).isEmpty {
            reasons.append("the query is broadcast (stride 0), so its gradient would have to be summed")
        }
        // dK and dV are summed over the K/V head grid only: dimensions (of B, G, H) where both
        // K and V are broadcast.
        let sharing = problem.keyValueHeads.sharing
        let summed = Set(zip([0, 2, 3], sharing).filter { $0.1 > 1 }.map(\.0))
        for (name, view) in [("key", problem.key), ("value", problem.value)] {
            let broadcast = BroadcastGradient.broadcastDimensions(of: view)
            if !Set(broadcast).isSubset(of: summed) {
                reasons.append("the \(name) is broadcast (stride 0) along BMGHK dimensions \(broadcast) that the other of key and value is not, or along M or K")
            }
        }
        // (Last: a device to ask for its shared memory is known to work only once nothing else objects.)
        let availability = CUDAKernels.notSupportedReasons(reasons, on: problem.device)
        guard availability.isEmpty, let device = try? problem.device.cudaContext().device else { return availability }
        return Self.kernel(for: problem, on: device).sharedMemoryProblem(limit: device.sharedMemoryPerBlockOptIn).map { [$0] } ?? []
    }

    /// The kernels `problem` runs on `device`: its width, its dtype, with the tensor bias and
    /// dropout build when it has either.
    static func kernel(for problem: AttentionProblem, on device: CUDADevice) -> FlashBackwardKernel {
        FlashBackwardKernel(width: CUDAFlashForward.width(for: problem.dimensions), dtype: problem.dtype,
                            extras: problem.tensorBias != nil || problem.dropoutMask != nil, architecture: device.kernelArchitecture)
    }

    public func backward(_ backward: BackwardProblem) throws -> Gradients {
        let problem = backward.attention
        try requireSupport(problem)
        let d = problem.dimensions, inputs = problem.inputs
        let device = problem.device, context = try device.cudaContext()
        let views = (query: problem.query, key: problem.key, value: problem.value)
        let biasView = problem.tensorBias
        let (grid, sharing) = problem.keyValueHeads
        let kernel = Self.kernel(for: problem, on: context.device)
        // dO in the input dtype and O in any, both with unit last strides, on the device.
        let gradOutput = try Inputs.bmghkView(Self.rows(of: backward.gradOutput, dtype: problem.dtype, device: device))
        let output = try Inputs.bmghkView(Self.rows(of: backward.output, dtype: backward.output.dtype, device: device))
        let lse = try backward.lse.converted(to: .float32).contiguous().to(device)
        var shape = CUDAKernels.shapeWords(d, dtype: problem.dtype, views: views, bias: biasView)
        shape += (grid + sharing).map(Int64.init)
        shape += gradOutput.strides.prefix(4).map(Int64.init)
        shape += output.strides.prefix(4).map(Int64.init)
        shape.append(CUDAKernels.dtypeCode(output.dtype))
        // The bias gradient straight in the bias's dtype when nothing is summed, else in float32
        // and summed over the broadcast dimensions by a second kernel.
        let biasTensor = inputs.bias?.tensorBias
        let summedBiasDimensions = biasTensor.map(BroadcastGradient.broadcastDimensions(of:)) ?? []
        shape.append(summedBiasDimensions.isEmpty ? 1 : 0)
        precondition(shape.count == FlashBackwardKernel.shapeWords, "flash_backward.cu's ShapeWords")
        let lowering = problem.lowering
        let tiles = lowering.tiles(rows: FlashBackwardKernel.blockRows)
        let work = DeviceLowering.workList(tiles)
        let keyWork = DeviceLowering.keyWorkList(lowering.keyTiles(tiles, tileKeys: FlashBackwardKernel.blockRows), tiles: tiles)
        let mask = DeviceLowering.words(lowering, rowBlocks: false)

        let heads = d.batch * d.groups * d.heads, rows = heads * d.queryLength
        let dq = try Tensor.uninitialized(d.queryShape5D, dtype: problem.dtype, device: device)
        let queryGradientCount = dq.count
        let keyGrid = [grid[0], d.keyLength, grid[1], grid[2]]
        // Zeros: key rows no block names get none of the kernels' writes.
        let dk = try Tensor.zeros(keyGrid + [d.headDimension], dtype: problem.dtype, device: device)
        let dv = try Tensor.zeros(keyGrid + [d.valueHeadDimension], dtype: problem.dtype, device: device)
        // (Zeros: pairs the mask hides get no write.)
        let biasGradient = try biasTensor.map { bias in
            try Tensor.zeros(bias.shape.enumerated().map { bias.strides[$0.offset] == 0 ? 1 : $0.element },
                             dtype: bias.dtype, device: device)
        }
        try CUDAContexts.translatingErrors(device: device) {
            let words = try CUDAKernels.upload(shape + mask + work + keyWork, context)
            let shapeAddress = words.address, maskAddress = shapeAddress + UInt64(shape.count * 8)
            let workAddress = maskAddress + UInt64(mask.count * 8), keyWorkAddress = workAddress + UInt64(work.count * 8)
            let delta = try context.allocate(max(rows, 1) * 4)
            let fullBiasGradient = biasTensor == nil || summedBiasDimensions.isEmpty ? nil
                : try context.allocate(max(rows * d.keyLength, 1) * 4)
            try fullBiasGradient?.fill(0)
            // The atomic dQ's float32 sums, [B, Mq, G, H, K] as dq.
            let querySums = deterministic ? nil : try context.allocate(max(queryGradientCount, 1) * 4)
            try querySums?.fill(0)
            let kernels = try CUDAKernels.shared()
            func function(_ entry: String) throws -> CUDAFunction { try kernels.function(kernel, entry: entry, context: context) }
            var tensors = [views.query, views.key, views.value, gradOutput, output, lse, dq, dk, dv]
            if let biasView, let biasGradient { tensors += [biasView, biasGradient] }
            try CUDAKernels.withAddresses(tensors) { addresses in
                let (q, k, v, gradOut, out, lseAddress) = (addresses[0], addresses[1], addresses[2], addresses[3], addresses[4], addresses[5])
                let (dqAddress, dkAddress, dvAddress) = (addresses[6], addresses[7], addresses[8])
                let biasAddress = addresses.count > 9 ? addresses[9] : 0
                // 16-byte loads when every row of q, k, v and dO starts on a 16-byte boundary.
                let aligned = CUDAKernels.rowsAre16ByteAligned([views.query, views.key, views.value, gradOutput], addresses: [q, k, v, gradOut])
                func pass(_ arguments: inout KernelArguments, gradients: [UInt64], work: UInt64) {
                    for address in [q, k, v, gradOut, lseAddress, delta.address] + gradients { arguments.append(address) }
                    arguments.append(words: shape)
                    arguments.append(maskAddress)
                    arguments.append(work)
                    arguments.append(Float(problem.scale))
                    arguments.append(Int32(aligned ? 1 : 0))
                    arguments.append(biasAddress)
                    arguments.appendDropout(problem.dropoutMask)
                }
                if rows > 0 {
                    var arguments = KernelArguments()
                    arguments.append(out)
                    arguments.append(gradOut)
                    arguments.append(delta)
                    arguments.append(shapeAddress)
                    try function(FlashBackwardKernel.deltaEntry).launch(
                        grid: (min((rows + 3) / 4, 1 << 20), 1, 1), block: (FlashBackwardKernel.threads, 1, 1), arguments: arguments)
                }
                if deterministic, !work.isEmpty, heads > 0 {
                    var arguments = KernelArguments()
                    let biasGradientAddress = fullBiasGradient?.address ?? (addresses.count > 10 ? addresses[10] : 0)
                    pass(&arguments, gradients: [dqAddress, biasGradientAddress], work: workAddress)
                    try function(FlashBackwardKernel.queryEntry).launch(
                        grid: (work.count / DeviceLowering.wordsPerTile, min(heads, 65535), 1), block: (FlashBackwardKernel.threads, 1, 1),
                        sharedMemory: kernel.queryPassSharedMemoryBytes, arguments: arguments)
                }
                let gridHeads = grid.reduce(1, *)
                if !keyWork.isEmpty, gridHeads > 0 {
                    var arguments = KernelArguments()
                    pass(&arguments, gradients: [dkAddress, dvAddress, querySums?.address ?? 0], work: keyWorkAddress)
                    try function(FlashBackwardKernel.keyValueEntry).launch(
                        grid: (keyWork.count / DeviceLowering.wordsPerKeyTile, min(gridHeads, 65535), kernel.columnParts),
                        block: (FlashBackwardKernel.threads, 1, 1), sharedMemory: kernel.keyPassSharedMemoryBytes, arguments: arguments)
                }
                if let querySums, queryGradientCount > 0 {
                    var arguments = KernelArguments()
                    arguments.append(querySums)
                    arguments.append(dqAddress)
                    arguments.append(Int64(queryGradientCount))
                    arguments.append(Float(problem.scale))
                    try function(FlashBackwardKernel.querySumEntry).launch(
                        grid: CUDAKernels.gridOfThreads(queryGradientCount), block: (FlashBackwardKernel.threads, 1, 1), arguments: arguments)
                }
                if let biasTensor, let biasGradient, let fullBiasGradient {
                    // The bias gradient as the bias's own shape (padded to rank 5), summed where it is broadcast.
                    let padding = [Int](repeating: 1, count: 5 - biasTensor.rank)
                    let summed = biasTensor.shape.indices.map { summedBiasDimensions.contains($0) ? 1 : 0 }
                    let dims = (padding + biasTensor.shape + padding.map { _ in 0 } + summed).map(Int64.init)
                    let dimsBuffer = try CUDAKernels.upload(dims, context)
                    var arguments = KernelArguments()
                    arguments.append(fullBiasGradient)
                    arguments.append(addresses[10])
                    arguments.append(dimsBuffer)
                    try function(FlashBackwardKernel.biasSumEntry).launch(
                        grid: CUDAKernels.gridOfThreads(biasGradient.count), block: (128, 1, 1), arguments: arguments)
                    try context.synchronize()  // (before the dims buffer goes)
                }
                try context.synchronize()
            }
        }
        return Gradients(
            dq: try dq.reshaped(inputs.query.shape),
            dk: try dk.reshaped(d.layout.shape(fromBMGHK: keyGrid + [d.headDimension])).expanded(to: inputs.key.shape),
            dv: try dv.reshaped(d.layout.shape(fromBMGHK: keyGrid + [d.valueHeadDimension])).expanded(to: inputs.value.shape),
            dBias: try biasGradient.map { try $0.expanded(to: biasTensor!.shape) })
    }

    /// `tensor` on `device` in `dtype` with a unit last stride: itself when it already is, else a
    /// contiguous copy (made on the host).
    static func rows(of tensor: Tensor, dtype: DType, device: Device) throws -> Tensor {
        if tensor.dtype == dtype, tensor.device == device, tensor.strides.last == 1 || tensor.shape.last == 1 { return tensor }
        return try tensor.to(.cpu).converted(to: dtype).contiguous().to(device)
    }
}
