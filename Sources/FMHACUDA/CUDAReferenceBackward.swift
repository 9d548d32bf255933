import CUDADriver
import FMHACore

/// The CUDA backward oracle ("cuda-reference"): dQ and the tensor-bias gradient with one thread
/// per query row, then dK and dV with one thread per key of each K/V head (every query head that
/// shares it looped over in order, so GQA gradients are summed without atomics and results are
/// deterministic), one launch per block of a variable-length bias. Float32 accumulation from the
/// forward LSE; the same Philox dropout mask as the CPU. Straightforward, not tuned.
public struct CUDAReferenceBackward: BackwardOperator {
    public let name = "cuda-reference"

    /// The operator.
    public init() {}

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float32, .float16, .bfloat16], maxHeadDimension: 65536, biasTypes: attentionBiasTypes,
            supportsDropout: true, supportsCustomScale: true, supportsDifferentValueHeadDimension: true,
            supportsBMGHK: true, isDeterministic: true, supportsBiasGradient: true,
            minimumComputeCapability: ComputeCapability(8, 0))
    }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        CUDAKernels.notSupportedReasons(capabilityReasons(problem), on: problem.device)
    }

    public func backward(_ backward: BackwardProblem) throws -> Gradients {
        let problem = backward.attention
        try requireSupport(problem)
        let d = problem.dimensions, inputs = problem.inputs
        let device = problem.device, context = try device.cudaContext()
        let views = (query: problem.query, key: problem.key, value: problem.value)
        let biasTensor = inputs.bias?.tensorBias
        let biasView = problem.tensorBias
        let (grid, sharing) = problem.keyValueHeads
        let shape = CUDAKernels.shapeWords(d, dtype: problem.dtype, views: views, bias: biasView)
            + (grid + sharing).map(Int64.init)
        let lowering = problem.lowering
        let mask = DeviceLowering.words(lowering, rowBlocks: true)
        let dropoutMask = problem.dropoutMask
        let rows = d.batch * d.groups * d.heads * d.queryLength
        let gridHeads = grid.reduce(1, *)
        let gridRows = grid[0] * d.keyLength * grid[1] * grid[2]

        // The output gradient, contiguous in the input dtype, and the LSE as float32 on the device.
        let gradient = try backward.gradOutput.converted(to: problem.dtype).contiguous().to(device)
        let lseOnDevice = try backward.lse.converted(to: .float32).contiguous().to(device)
        return try CUDAContexts.translatingErrors(device: device) { () throws -> Gradients in
            let dq = try context.allocate(max(rows * d.headDimension, 1) * 4)
            let dk = try context.allocate(max(gridRows * d.headDimension, 1) * 4)
            let dv = try context.allocate(max(gridRows * d.valueHeadDimension, 1) * 4)
            let delta = try context.allocate(max(rows, 1) * 4)
            let dBias = biasTensor == nil ? nil : try context.allocate(max(rows * d.keyLength, 1) * 4)
            for buffer in [dq, dk, dv] + (dBias.map { [$0] } ?? []) { try buffer.fill(0) }
            let shapeBuffer = try CUDAKernels.upload(shape, context), maskBuffer = try CUDAKernels.upload(mask, context)
            let kernels = try CUDAKernels.shared(), kernel = FixedKernel(.referenceBackward, architecture: context.device.kernelArchitecture)
            let dqKernel = try kernels.function(kernel, entry: "fmha_reference_backward_dq", context: context)
            let dkdvKernel = try kernels.function(kernel, entry: "fmha_reference_backward_dkdv", context: context)
            let tensors = [views.query, views.key, views.value, gradient, lseOnDevice] + (biasView.map { [$0] } ?? [])
            try CUDAKernels.withAddresses(tensors) { addresses in
                func common(_ arguments: inout KernelArguments) {
                    arguments.append(Float(problem.scale))
                    arguments.appendDropout(dropoutMask)
                }
                let inputsAddresses = [addresses[0], addresses[1], addresses[2], addresses.count > 5 ? addresses[5] : 0,
                                       addresses[3], addresses[4]]
                if rows > 0 {
                    var arguments = KernelArguments()
                    for address in inputsAddresses { arguments.append(address) }
                    arguments.append(delta)
                    arguments.append(dq)
                    arguments.append(dBias?.address ?? 0)
                    arguments.append(shapeBuffer)
                    arguments.append(maskBuffer)
                    common(&arguments)
                    try dqKernel.launch(grid: CUDAKernels.gridOfThreads(rows), block: (128, 1, 1), arguments: arguments)
                }
                // One launch per block, in order: blocks that name the same K/V rows never overlap.
                for (block, keys) in lowering.blocks.enumerated() {
                    let items = gridHeads * keys.keyCount
                    guard items > 0 else { continue }
                    var arguments = KernelArguments()
                    for address in inputsAddresses { arguments.append(address) }
                    arguments.append(delta)
                    arguments.append(dk)
                    arguments.append(dv)
                    arguments.append(shapeBuffer)
                    arguments.append(maskBuffer)
                    arguments.append(Int64(block))
                    common(&arguments)
                    try dkdvKernel.launch(grid: CUDAKernels.gridOfThreads(items), block: (128, 1, 1), arguments: arguments)
                }
                try context.synchronize()
            }
            func gradientTensor(_ buffer: DeviceBuffer, count: Int, shape: [Int], like input: Tensor) throws -> Tensor {
                try BroadcastGradient.tensor(try CUDAKernels.download(buffer, count: count), shape: shape, like: input, device: device)
            }
            var biasGradient: Tensor?
            if let biasTensor, let dBias {
                biasGradient = try gradientTensor(dBias, count: rows * d.keyLength, shape: biasTensor.shape, like: biasTensor)
            }
            return Gradients(
                dq: try gradientTensor(dq, count: rows * d.headDimension, shape: inputs.query.shape, like: inputs.query),
                dk: try gradientTensor(dk, count: gridRows * d.headDimension,
                                       shape: d.layout.shape(fromBMGHK: [grid[0], d.keyLength, grid[1], grid[2], d.headDimension]), like: inputs.key),
                dv: try gradientTensor(dv, count: gridRows * d.valueHeadDimension,
                                       shape: d.layout.shape(fromBMGHK: [grid[0], d.keyLength, grid[1], grid[2], d.valueHeadDimension]), like: inputs.value),
                dBias: biasGradient)
        }
    }
}
