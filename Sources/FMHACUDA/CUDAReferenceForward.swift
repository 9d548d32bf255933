import CUDADriver
import FMHACore

/// The CUDA forward oracle ("cuda-reference"): one thread per query row, float32 accumulation,
/// every bias (through `DeviceLowering`), layout, K ≠ Kv, scale, dropout (the CPU's Philox mask) and
/// partial output. Straightforward, not tuned; results come back through host memory.
public struct CUDAReferenceForward: ForwardOperator {
    public let name = "cuda-reference"

    /// The operator.
    public init() {}

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float32, .float16, .bfloat16], maxHeadDimension: 65536, biasTypes: attentionBiasTypes,
            supportsDropout: true, supportsCustomScale: true, supportsDifferentValueHeadDimension: true,
            supportsBMGHK: true, supportsPartial: true, supportsOutputDType: true, isDeterministic: true,
            minimumComputeCapability: ComputeCapability(8, 0))
    }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        CUDAKernels.notSupportedReasons(capabilityReasons(problem), on: problem.device)
    }

    public func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
        try requireSupport(problem)
        let d = problem.dimensions
        let device = problem.device, context = try device.cudaContext()
        let views = (query: problem.query, key: problem.key, value: problem.value)
        let biasView = problem.tensorBias
        let rows = d.batch * d.groups * d.heads * d.queryLength
        let shape = CUDAKernels.shapeWords(d, dtype: problem.dtype, views: views, bias: biasView)
        let mask = DeviceLowering.words(problem.lowering, rowBlocks: true)
        let dropoutMask = problem.dropoutMask

        return try CUDAContexts.translatingErrors(device: device) { () throws -> ForwardOutput in
            let output = try context.allocate(max(rows * d.valueHeadDimension, 1) * 4)
            let lse = try context.allocate(max(rows, 1) * 4)
            try output.fill(0)
            let shapeBuffer = try CUDAKernels.upload(shape, context), maskBuffer = try CUDAKernels.upload(mask, context)
            let function = try CUDAKernels.shared().function(FixedKernel(.referenceForward, architecture: context.device.kernelArchitecture),
                                                             entry: "fmha_reference_forward", context: context)
            try CUDAKernels.withAddresses([views.query, views.key, views.value] + (biasView.map { [$0] } ?? [])) { addresses in
                var arguments = KernelArguments()
                for index in 0..<3 { arguments.append(addresses[index]) }
                arguments.append(addresses.count > 3 ? addresses[3] : UInt64(0))
                arguments.append(output)
                arguments.append(lse)
                arguments.append(shapeBuffer)
                arguments.append(maskBuffer)
                arguments.append(Float(problem.scale))
                arguments.appendDropout(dropoutMask)
                if rows > 0 {
                    try function.launch(grid: CUDAKernels.gridOfThreads(rows), block: (128, 1, 1), arguments: arguments)
                }
                try context.synchronize()
            }
            let hostOutput = try CUDAKernels.download(output, count: rows * d.valueHeadDimension)
            let hostLSE = try CUDAKernels.download(lse, count: rows)
            return ForwardOutput(
                output: try Tensor(shape: d.outputShape, scalars: hostOutput, dtype: problem.outputDType, device: device),
                lse: try Tensor(shape: d.lseShape, scalars: hostLSE, dtype: .float32, device: device))
        }
    }
}

extension KernelArguments {
    /// The dropout parameters the kernels take, in order: seed, offset, keep threshold, scale of
    /// kept weights, on/off (0, 0, 0, 1 and off without dropout).
    mutating func appendDropout(_ mask: DropoutMask?) {
        append(mask?.state.seed ?? 0)
        append(mask?.state.offset ?? 0)
        append(mask?.threshold ?? 0)
        append(Float(mask?.keptScale ?? 1))
        append(Int32(mask == nil ? 0 : 1))
    }
}
