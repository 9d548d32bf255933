import CUDADriver
import FMHACore

/// The tensor-core forward ("cuda-flash", `flash_forward.cu`): FlashAttention-2's scheme with
/// `mma.sync` m16n8k16, one thread block per tile of 64 queries of one mask block and head, every
/// bias without a tensor (tiles the mask hides are skipped), GQA and stride-0 K/V read in place,
/// partial output and LSE. float16 and bfloat16, head dimensions that are multiples of 16 up to
/// 128 with K = Kv, no dropout; the rest goes to `cuda-reference`. Output and LSE stay on the device.
public struct CUDAFlashForward: ForwardOperator {
    public let name = "cuda-flash"

    /// The operator.
    public init() {}

    /// The tensor biases are the only biases it cannot apply.
    static let biasTypes: [any AttentionBias.Type] = attentionBiasTypes.filter {
        $0 != Tensor.self && $0 != LowerTriangularMaskWithTensorBias.self
    }

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float16, .bfloat16], maxHeadDimension: 128, biasTypes: Self.biasTypes,
            supportsCustomScale: true, supportsBMGHK: true, supportsPartial: true, supportsOutputDType: true,
            isDeterministic: true, minimumComputeCapability: ComputeCapability(8, 0))
    }

    public func notSupportedReasons(_ inputs: Inputs) -> [String] {
        var reasons = capabilityReasons(inputs)
        let headDimension = inputs.query.shape.last ?? 0
        if headDimension % 16 != 0 {
            reasons.append("head dimension \(headDimension) is not a multiple of 16")
        }
        if (inputs.key.shape.dropFirst().first ?? 0) >= Int(Int32.max) {
            reasons.append("\(inputs.key.shape.dropFirst().first ?? 0) keys reach 2^31")
        }
        return CUDAKernels.notSupportedReasons(reasons, on: inputs.query.device)
    }

    public func forward(_ inputs: Inputs, dropout: DropoutState?) throws -> ForwardOutput {
        let d = try inputs.validate()
        try requireSupport(inputs)
        let device = inputs.query.device, context = try device.cudaContext()
        let views = try inputs.bmghkViews()
        let shape = CUDAKernels.shapeWords(d, dtype: inputs.query.dtype, views: views, bias: nil)
        let layout = inputs.bias?.maskLayout
        let mask = DeviceMask.encode(layout)
        let work = Self.tiles(queryStarts: layout?.blocks?.queryStarts ?? [0, d.queryLength])
        let outputDType = inputs.resolvedOutputDType
        let output = try Tensor.zeros(d.outputShape, dtype: outputDType, device: device)
        let lse = try Tensor.zeros(d.lseShape, dtype: .float32, device: device)
        let heads = d.batch * d.groups * d.heads
        guard !work.isEmpty, heads > 0 else { return ForwardOutput(output: output, lse: lse) }
        try CUDAKernels.run {
            let shapeBuffer = try CUDAKernels.upload(shape, context), maskBuffer = try CUDAKernels.upload(mask, context)
            let workBuffer = try CUDAKernels.upload(work, context)
            let function = try CUDAKernels.shared().function(
                Self.variant(headDimension: d.headDimension, dtype: inputs.query.dtype, architecture: "").descriptor,
                entry: "fmha_flash_forward", context: context)
            try CUDAKernels.withAddresses([views.query, views.key, views.value, output, lse]) { addresses in
                // 16-byte loads when every row of q, k and v starts on a 16-byte boundary.
                let aligned = addresses.prefix(3).allSatisfy { $0 % 16 == 0 }
                    && [views.query, views.key, views.value].allSatisfy { $0.strides.prefix(4).allSatisfy { $0 % 8 == 0 } }
                var arguments = KernelArguments()
                for address in addresses { arguments.append(address) }
                arguments.append(shapeBuffer)
                arguments.append(maskBuffer)
                arguments.append(workBuffer)
                arguments.append(Float(inputs.effectiveScale * 1.4426950408889634))
                arguments.append(Int64(outputDType == .float16 ? 1 : outputDType == .bfloat16 ? 2 : 0))
                arguments.append(Int32(aligned ? 1 : 0))
                try function.launch(grid: (work.count / 2, min(heads, 65535), 1), block: (128, 1, 1), arguments: arguments)
                try context.synchronize()
            }
        }
        return ForwardOutput(output: output, lse: lse)
    }

    /// The kernel for `headDimension` and `dtype` (`architecture` is filled in at load time when empty).
    static func variant(headDimension: Int, dtype: DType, architecture: String) -> KernelVariant {
        KernelVariant(descriptor: KernelDescriptor(
            sourceName: "flash_forward", architecture: architecture,
            defines: ["FMHA_HEAD_DIM": "\(headDimension)", "FMHA_DTYPE": dtype == .float16 ? "1" : "2"]),
                      entryPoints: ["fmha_flash_forward"])
    }

    /// The kernel's work list: (mask block, first query) of every tile of 64 queries, tiles never
    /// straddling two blocks; block `b` holds queries `queryStarts[b] ..< queryStarts[b + 1]`.
    static func tiles(queryStarts: [Int]) -> [Int64] {
        var work = [Int64]()
        for block in 0..<max(queryStarts.count - 1, 0) {
            for start in stride(from: queryStarts[block], to: queryStarts[block + 1], by: 64) {
                work += [Int64(block), Int64(start)]
            }
        }
        return work
    }
}
