#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import FMHACore
import FMHACUDA

/// Combines partial attentions over disjoint key chunks into attention over all their keys, as
/// xFormers' `merge_attentions`.
///
/// Per query: `m = max_i lse_i`, `w_i = exp(lse_i − m)`, output `Σ w_i·out_i / Σ w_i` and LSE
/// `m + log Σ w_i`. When every chunk has LSE −inf (the query saw no key anywhere) the output is 0
/// and the LSE −inf. On a CUDA device the merge runs there, in float32 (`CUDAMergeAttentions`;
/// float32, float16 and bfloat16 partials and outputs); otherwise in float64 on the host, the
/// results then copied to the partials' device.
///
/// - Parameters:
///   - outputs: one per chunk, each `[B, M, H, Kv]` (or `[B, M, G, H, Kv]`, `[B, M, Kv]`), all of
///     one shape.
///   - lses: one per chunk, `[B, H, M]` (`[B, G, H, M]`, `[B, 1, M]`) as the partial call gave it.
///   - writeLSE: whether to return the merged LSE.
///   - outputDType: dtype of the merged output; the chunks' when `nil`.
public func mergeAttentions(_ outputs: [Tensor], lses: [Tensor], writeLSE: Bool = true,
                           outputDType: DType? = nil) throws -> (output: Tensor, lse: Tensor?) {
    guard let first = outputs.first else {
        throw FMHAError.invalidArgument("outputs", expected: "at least one partial output", got: "an empty list")
    }
    guard lses.count == outputs.count else {
        throw FMHAError.invalidArgument("lses", expected: "one LSE per output (\(outputs.count))", got: "\(lses.count)")
    }
    guard (3...5).contains(first.rank) else {
        throw FMHAError.invalidArgument("outputs[0]", expected: "rank 3, 4 or 5 ([B, M, (G, H,) Kv])",
                                        got: "shape \(first.shape)")
    }
    let batch = first.shape[0], length = first.shape[1], channels = first.shape[first.rank - 1]
    let heads = Array(first.shape.dropFirst(2).dropLast())
    let lseShape = [batch] + (heads.isEmpty ? [1] : heads) + [length]
    for (chunk, (output, lse)) in zip(outputs, lses).enumerated() {
        guard output.shape == first.shape, output.device == first.device else {
            throw FMHAError.invalidArgument("outputs[\(chunk)]", expected: "shape \(first.shape) on \(first.device)",
                                            got: "shape \(output.shape) on \(output.device)")
        }
        guard lse.shape == lseShape, lse.device == first.device else {
            throw FMHAError.invalidArgument("lses[\(chunk)]", expected: "shape \(lseShape) on \(first.device)",
                                            got: "shape \(lse.shape) on \(lse.device)")
        }
    }
    if case .cuda = first.device,
       CUDAMergeAttentions.supports(outputs: outputs, lses: lses, outputDType: outputDType ?? first.dtype) {
        return try CUDAMergeAttentions.merge(outputs, lses: lses, writeLSE: writeLSE, outputDType: outputDType ?? first.dtype)
    }
    let headCount = heads.reduce(1, *)
    let chunkOutputs = try outputs.map { try $0.toDoubleArray() }
    let chunkLSEs = try lses.map { try $0.toDoubleArray() }
    var merged = [Double](repeating: 0, count: first.count)
    var mergedLSE = [Double](repeating: -.infinity, count: batch * headCount * length)
    for b in 0..<batch {
        for head in 0..<headCount {
            for position in 0..<length {
                // LSE is [B, heads, M]; outputs are [B, M, heads, Kv].
                let lseIndex = (b * headCount + head) * length + position
                let outputBase = ((b * length + position) * headCount + head) * channels
                let maximum = chunkLSEs.map { $0[lseIndex] }.max() ?? -.infinity
                guard maximum > -.infinity else { continue }
                var weightSum = 0.0
                for chunk in chunkOutputs.indices {
                    let weight = exp(chunkLSEs[chunk][lseIndex] - maximum)
                    if weight == 0 { continue }
                    weightSum += weight
                    for channel in 0..<channels { merged[outputBase + channel] += weight * chunkOutputs[chunk][outputBase + channel] }
                }
                for channel in 0..<channels { merged[outputBase + channel] /= weightSum }
                mergedLSE[lseIndex] = maximum + log(weightSum)
            }
        }
    }
    // On the partials' device (the merge itself runs on the host).
    let output = try Tensor(shape: first.shape, scalars: merged, dtype: outputDType ?? first.dtype).to(first.device)
    let lse = writeLSE ? try Tensor(shape: lseShape, scalars: mergedLSE, dtype: .float32).to(first.device) : nil
    return (output, lse)
}
