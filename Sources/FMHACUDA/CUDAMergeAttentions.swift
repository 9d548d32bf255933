import CUDADriver
import FMHACore

/// `mergeAttentions` on a CUDA device (`merge_attentions.cu`): any number of partial outputs and
/// LSEs, of any strides, merged per row on the GPU by the rule the decode splits' merge uses
/// (`fmha::MergeWeights`), in float32.
public enum CUDAMergeAttentions {
    /// The dtypes the device merge reads and writes.
    static let dtypes: Set<DType> = [.float32, .float16, .bfloat16]

    /// Whether the device merge takes partials of these dtypes (float32, float16 or bfloat16
    /// outputs and LSEs) into a merged output of `outputDType` (one of those too).
    public static func supports(outputs: [Tensor], lses: [Tensor], outputDType: DType) -> Bool {
        dtypes.contains(outputDType) && (outputs + lses).allSatisfy { dtypes.contains($0.dtype) }
    }

    /// The merge of `outputs` (each `[B, M, (G, H,) Kv]`, one shape, on one CUDA device) by
    /// `lses` (each `[B, 1 | H | G, H, M]`), as the caller checked them: the merged output
    /// (contiguous, `outputDType`, the partials' shape) and, when `writeLSE`, the merged LSE
    /// (contiguous float32).
    public static func merge(_ outputs: [Tensor], lses: [Tensor], writeLSE: Bool,
                             outputDType: DType) throws -> (output: Tensor, lse: Tensor?) {
        let first = outputs[0], device = first.device
        let views = try outputs.map(Inputs.bmghkView)
        let lseViews = try lses.map { $0.rank == 3 ? try $0.unsqueezed(at: 1) : $0 }
        let shape = views[0].shape
        let output = try Tensor.uninitialized(first.shape, dtype: outputDType, device: device)
        let lse = writeLSE ? try Tensor.uninitialized(Array(lses[0].shape), dtype: .float32, device: device) : nil
        let rows = shape[0] * shape[1] * shape[2] * shape[3]
        guard rows > 0 else { return (output, lse) }
        let context = try device.cudaContext()
        try CUDAContexts.translatingErrors(device: device) {
            let function = try CUDAKernels.shared().function(FixedKernel(.mergeAttentions, architecture: context.device.kernelArchitecture),
                                                             entry: "fmha_merge_attentions", context: context)
            try CUDAKernels.withAddresses([output] + (lse.map { [$0] } ?? []) + views + lseViews) { addresses in
                let partials = views.count
                var table = [Int64]()
                for index in 0..<partials {
                    let view = views[index], lseView = lseViews[index]
                    table.append(Int64(bitPattern: addresses[addresses.count - 2 * partials + index]))
                    table += view.strides.map(Int64.init) + [CUDAKernels.dtypeCode(view.dtype)]
                    table.append(Int64(bitPattern: addresses[addresses.count - partials + index]))
                    table += lseView.strides.map(Int64.init) + [CUDAKernels.dtypeCode(lseView.dtype)]
                }
                let words = try CUDAKernels.upload(shape.map(Int64.init) + table, context)
                var arguments = KernelArguments()
                arguments.append(addresses[0])
                arguments.append(lse == nil ? UInt64(0) : addresses[1])
                arguments.append(words.address)
                arguments.append(words.address + UInt64(shape.count * 8))
                arguments.append(Int64(partials))
                arguments.append(CUDAKernels.dtypeCode(outputDType))
                try function.launch(grid: (min(rows, 1 << 20), 1, 1), block: (128, 1, 1), arguments: arguments)
                try context.synchronize()
            }
        }
        return (output, lse)
    }
}
