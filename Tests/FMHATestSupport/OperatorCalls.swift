import FMHACore

extension ForwardOperator {
    /// Validates `inputs` with `dropout` as their dropout (tests name the dropout at each call)
    /// and runs them.
    public func forward(_ inputs: Inputs, dropout: DropoutState?) throws -> ForwardOutput {
        var inputs = inputs
        inputs.dropout = dropout
        return try forward(inputs.validate())
    }
}

extension BackwardOperator {
    /// Validates `inputs` with `dropout` as their dropout, and the forward's `output` and `lse`
    /// with the output's gradient, and runs the backward.
    public func backward(_ inputs: Inputs, output: Tensor, lse: Tensor, gradOutput: Tensor,
                         dropout: DropoutState?) throws -> Gradients {
        var inputs = inputs
        inputs.dropout = dropout
        return try backward(inputs.validate().backward(output: output, lse: lse, gradOutput: gradOutput))
    }
}

extension AttentionOperator {
    /// The operator's reasons to refuse `inputs`, once validated.
    public func notSupportedReasons(_ inputs: Inputs) throws -> [String] {
        try notSupportedReasons(inputs.validate())
    }
}
