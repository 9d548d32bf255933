import FMHACore

/// The forward output with what a backward pass needs.
public struct AttentionForwardResult: Sendable {
    /// Attention output.
    public var output: Tensor
    /// Log-sum-exp per query: float32 `[B, H, Mq]` (`[B, G, H, Mq]` for BMGHK, `[B, 1, Mq]` for
    /// BMK); −inf for a query that sees no key.
    public var lse: Tensor
    /// The dropout to replay in the backward pass; `nil` without dropout.
    public var dropout: DropoutState?
    /// Name of the operator that ran.
    public var operatorName: String
}

/// Attention `softmax(scale·Q·Kᵀ + bias)·V`, with dropout `p` on the weights, as xFormers'
/// `memory_efficient_attention`.
///
/// - Parameters:
///   - query: `[B, Mq, K]`, `[B, Mq, H, K]` or `[B, Mq, G, H, K]`.
///   - key: `[B, Mkv, ...K]` like the query (expand shared K/V heads with stride 0).
///   - value: `[B, Mkv, ..., Kv]`.
///   - bias: an `AttentionBias` or an additive `Tensor` of the scores' shape.
///   - p: dropout probability in [0, 1).
///   - scale: factor on `Q·Kᵀ`; `1/sqrt(K)` when `nil`.
///   - op: run this forward operator or fail with its reasons; dispatch chooses when `nil`.
///   - outputDType: dtype of the result; the query's when `nil`.
///   - seed: dropout seed; a random one when `nil`.
///   - keyScaleShift, valueScaleShift: with an fp8 cache (int32 `key` and `value`, see
///     `KeyValueFormat`), each row's scale/shift word, shaped like the cache without its last
///     dimension. An int32 cache without them is int4.
/// - Returns: `[B, Mq, ..., Kv]`.
public func memoryEfficientAttention(_ query: Tensor, _ key: Tensor, _ value: Tensor, bias: (any AttentionBias)? = nil,
                                     p: Double = 0, scale: Double? = nil, op: (any ForwardOperator)? = nil,
                                     outputDType: DType? = nil, seed: UInt64? = nil, keyScaleShift: Tensor? = nil,
                                     valueScaleShift: Tensor? = nil) throws -> Tensor {
    try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: bias, p: p, scale: scale, op: op,
                                                    outputDType: outputDType, seed: seed, keyScaleShift: keyScaleShift,
                                                    valueScaleShift: valueScaleShift).output
}

/// The forward pass alone, as xFormers' `memory_efficient_attention_forward`; the same
/// arguments and result as `memoryEfficientAttention`.
public func memoryEfficientAttentionForward(_ query: Tensor, _ key: Tensor, _ value: Tensor,
                                            bias: (any AttentionBias)? = nil, p: Double = 0, scale: Double? = nil,
                                            op: (any ForwardOperator)? = nil, outputDType: DType? = nil,
                                            seed: UInt64? = nil, keyScaleShift: Tensor? = nil,
                                            valueScaleShift: Tensor? = nil) throws -> Tensor {
    try memoryEfficientAttention(query, key, value, bias: bias, p: p, scale: scale, op: op, outputDType: outputDType,
                                 seed: seed, keyScaleShift: keyScaleShift, valueScaleShift: valueScaleShift)
}

/// The forward pass with its LSE and dropout state, for `memoryEfficientAttentionBackward`
/// (xFormers' `memory_efficient_attention_forward_requires_grad`, which refuses dropout; this
/// one returns the state that replays it). Quantized caches as for `memoryEfficientAttention`
/// (no backward takes them).
public func memoryEfficientAttentionForwardRequiresGrad(
    _ query: Tensor, _ key: Tensor, _ value: Tensor, bias: (any AttentionBias)? = nil, p: Double = 0,
    scale: Double? = nil, op: (any ForwardOperator)? = nil, outputDType: DType? = nil, seed: UInt64? = nil,
    keyScaleShift: Tensor? = nil, valueScaleShift: Tensor? = nil
) throws -> AttentionForwardResult {
    let problem = try Inputs(query: query, key: key, value: value, bias: bias, p: p, seed: seed, scale: scale,
                             outputDType: outputDType, keyScaleShift: keyScaleShift, valueScaleShift: valueScaleShift).validate()
    let chosen = try Dispatch.selectForward(Operators.forward, explicit: op, for: problem,
                                            entryPoint: "memoryEfficientAttentionForward")
    let result = try chosen.forward(problem)
    return AttentionForwardResult(output: result.output, lse: result.lse, dropout: problem.dropout, operatorName: chosen.name)
}

/// The gradients of attention, as xFormers' `memory_efficient_attention_backward`, from the
/// forward's `output` and `lse`; pass the forward's `dropout` to replay it (xFormers refuses
/// dropout here). Stride-0 (broadcast) inputs get gradients summed along the broadcast dimension.
/// With `deterministic` only operators that give the same bits on every run qualify (on CUDA:
/// `cuda-flash`, whose dQ has its own pass, instead of `cuda-flash-atomic`).
public func memoryEfficientAttentionBackward(
    _ gradOutput: Tensor, output: Tensor, lse: Tensor, query: Tensor, key: Tensor, value: Tensor,
    bias: (any AttentionBias)? = nil, dropout: DropoutState? = nil, scale: Double? = nil,
    op: (any BackwardOperator)? = nil, deterministic: Bool = false
) throws -> Gradients {
    let problem = try Inputs(query: query, key: key, value: value, bias: bias, dropout: dropout, scale: scale,
                             requiresDeterminism: deterministic).validate()
    let backward = try problem.backward(output: output, lse: lse, gradOutput: gradOutput)
    let chosen = try Dispatch.selectBackward(Operators.backward, explicit: op, for: problem,
                                             entryPoint: "memoryEfficientAttentionBackward")
    return try chosen.backward(backward)
}

/// Attention of the queries over one chunk of keys, for `mergeAttentions`, as xFormers'
/// `memory_efficient_attention_partial`: the output is float32 (float64 for float64 inputs)
/// unless `outputDType` says otherwise, and a query that sees no key of the chunk gets output 0
/// and LSE −inf, so that merging ignores it. No dropout. Quantized caches as for
/// `memoryEfficientAttention`.
public func memoryEfficientAttentionPartial(_ query: Tensor, _ key: Tensor, _ value: Tensor,
                                            bias: (any AttentionBias)? = nil, scale: Double? = nil,
                                            op: (any ForwardOperator)? = nil, outputDType: DType? = nil,
                                            keyScaleShift: Tensor? = nil,
                                            valueScaleShift: Tensor? = nil) throws -> (output: Tensor, lse: Tensor) {
    let problem = try Inputs(query: query, key: key, value: value, bias: bias, scale: scale, outputDType: outputDType,
                             isPartial: true, keyScaleShift: keyScaleShift, valueScaleShift: valueScaleShift).validate()
    let chosen = try Dispatch.selectForward(Operators.forward, explicit: op, for: problem,
                                            entryPoint: "memoryEfficientAttentionPartial")
    let result = try chosen.forward(problem)
    return (result.output, result.lse)
}
