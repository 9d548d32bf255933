/// An attention operator: a named implementation with declared capabilities.
public protocol AttentionOperator: Sendable {
    /// A short unique name, e.g. `cpu-reference`; what `op:` and `--op` refer to.
    var name: String { get }
    /// What it supports.
    var capabilities: OperatorCapabilities { get }
    /// Why it cannot run `problem`; empty when it can. The default explains every capability the
    /// problem needs and the operator lacks; operators add their own checks.
    func notSupportedReasons(_ problem: AttentionProblem) -> [String]
}

extension AttentionOperator {
    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        capabilityReasons(problem)
    }

    /// Throws the operator's reasons unless it can run `problem`: operators call this first, so
    /// that calling one directly with a problem it does not support fails cleanly.
    public func requireSupport(_ problem: AttentionProblem) throws {
        let reasons = notSupportedReasons(problem)
        guard reasons.isEmpty else {
            throw FMHAError(.unsupported, "Operator `\(name)` does not support these inputs: " + reasons.joined(separator: "; "))
        }
    }

    /// The reasons that follow from `capabilities` alone, in xFormers' order.
    public func capabilityReasons(_ problem: AttentionProblem) -> [String] {
        let capabilities = self.capabilities, inputs = problem.inputs, d = problem.dimensions
        var reasons = [String]()
        let device = problem.device
        if !capabilities.devices.contains(device.kind) {
            reasons.append("device \(device) is not supported (supported: \(capabilities.devices.map(\.rawValue).sorted().joined(separator: ", ")))")
        }
        let dtype = problem.dtype
        if !capabilities.dtypes.contains(dtype) {
            reasons.append("dtype \(dtype) is not supported (supported: \(capabilities.dtypes.map(\.rawValue).sorted().joined(separator: ", ")))")
        }
        let headDimension = d.headDimension, valueHeadDimension = d.valueHeadDimension
        if max(headDimension, valueHeadDimension) > capabilities.maxHeadDimension {
            reasons.append("head dimension \(max(headDimension, valueHeadDimension)) is over the maximum \(capabilities.maxHeadDimension)")
        }
        if headDimension != valueHeadDimension, !capabilities.supportsDifferentValueHeadDimension {
            reasons.append("query/key head dimension \(headDimension) differs from value head dimension \(valueHeadDimension)")
        }
        if let bias = inputs.bias, !capabilities.supportsBiasType(of: bias) {
            reasons.append("bias type \(type(of: bias).name) is not supported")
        }
        if let dropout = problem.dropout, !capabilities.supportsDropout {
            reasons.append("dropout (p = \(dropout.p)) is not supported")
        }
        if inputs.scale != nil, !capabilities.supportsCustomScale {
            reasons.append("a custom scale is not supported")
        }
        if d.layout == .bmghk, !capabilities.supportsBMGHK {
            reasons.append("BMGHK (5-dimensional) inputs are not supported")
        }
        if problem.isPartial, !capabilities.supportsPartial {
            reasons.append("partial attention is not supported")
        }
        if let outputDType = inputs.outputDType, outputDType != dtype, !capabilities.supportsOutputDType {
            reasons.append("output dtype \(outputDType) different from the input dtype \(dtype) is not supported")
        }
        if let format = problem.keyValueFormat, !capabilities.supportsQuantizedKeyValue {
            reasons.append("quantized K/V (\(format)) is not supported")
        }
        if problem.requiresDeterminism, !capabilities.isDeterministic {
            reasons.append("it is not deterministic, and determinism was required")
        }
        return reasons
    }
}

/// The forward pass and its log-sum-exp.
public struct ForwardOutput: Sendable {
    /// Attention output, in `AttentionProblem.outputDType`, shaped like the query with the value's
    /// head dimension.
    public var output: Tensor
    /// Natural-log sum of exp of the scores per query, float32, `[B, H, Mq]` (`[B, G, H, Mq]` for
    /// BMGHK, `[B, 1, Mq]` for BMK); −inf where a query sees no key.
    public var lse: Tensor

    /// Output and LSE.
    public init(output: Tensor, lse: Tensor) {
        self.output = output
        self.lse = lse
    }
}

/// Gradients of the attention inputs. Where an input has stride 0 along a dimension (expanded
/// K/V of grouped-query attention, a broadcast tensor bias), its gradient is summed along that
/// dimension and returned expanded the same way: any slice along it is the gradient of the shared
/// tensor.
public struct Gradients: Sendable {
    /// ∂L/∂query.
    public var dq: Tensor
    /// ∂L/∂key.
    public var dk: Tensor
    /// ∂L/∂value.
    public var dv: Tensor
    /// ∂L/∂bias for a tensor bias (its shape and dtype); `nil` otherwise.
    public var dBias: Tensor?

    /// The gradients.
    public init(dq: Tensor, dk: Tensor, dv: Tensor, dBias: Tensor?) {
        self.dq = dq
        self.dk = dk
        self.dv = dv
        self.dBias = dBias
    }
}

/// A forward operator.
public protocol ForwardOperator: AttentionOperator {
    /// Runs `problem` (which this operator supports), with its dropout when it has one.
    func forward(_ problem: AttentionProblem) throws -> ForwardOutput
}

/// A backward operator.
public protocol BackwardOperator: AttentionOperator {
    /// The gradients of `problem.attention` given the forward's output and LSE and the gradient
    /// of the output, replaying the forward's dropout when it has one.
    func backward(_ problem: BackwardProblem) throws -> Gradients
}
