/// Operator selection: the first operator of a priority list with no reason to refuse the inputs;
/// an explicit choice is used or refused with its reasons, never replaced.
public enum Dispatch {
    /// Why each operator would or would not run `inputs`, in priority order (empty reasons: it can).
    public static func explain(_ operators: [any AttentionOperator], for inputs: Inputs) -> [(name: String, reasons: [String])] {
        operators.map { ($0.name, $0.notSupportedReasons(inputs)) }
    }

    /// The forward operator that runs `inputs`: `explicit` if given and able, else the first able
    /// one of `operators`. `entryPoint` names the caller in errors.
    public static func selectForward(_ operators: [any ForwardOperator], explicit: (any ForwardOperator)?,
                                     for inputs: Inputs, entryPoint: String) throws -> any ForwardOperator {
        if let explicit {
            try accept(explicit, for: inputs, entryPoint: entryPoint)
            return explicit
        }
        return operators[try firstAble(operators, for: inputs, entryPoint: entryPoint)]
    }

    /// The backward operator that runs `inputs`, chosen as `selectForward` does.
    public static func selectBackward(_ operators: [any BackwardOperator], explicit: (any BackwardOperator)?,
                                      for inputs: Inputs, entryPoint: String) throws -> any BackwardOperator {
        if let explicit {
            try accept(explicit, for: inputs, entryPoint: entryPoint)
            return explicit
        }
        return operators[try firstAble(operators, for: inputs, entryPoint: entryPoint)]
    }

    /// Throws the operator's reasons unless it can run `inputs`.
    private static func accept(_ chosen: any AttentionOperator, for inputs: Inputs, entryPoint: String) throws {
        let reasons = chosen.notSupportedReasons(inputs)
        guard reasons.isEmpty else {
            throw FMHAError(.unsupported, "Operator `\(chosen.name)` does not support these inputs of `\(entryPoint)`:\n"
                            + inputs.summary + "\n" + bulletList(reasons))
        }
    }

    /// Index of the first operator with no reasons, or an error listing every operator's reasons.
    private static func firstAble(_ operators: [any AttentionOperator], for inputs: Inputs, entryPoint: String) throws -> Int {
        var report = [String]()
        for (index, candidate) in operators.enumerated() {
            let reasons = candidate.notSupportedReasons(inputs)
            if reasons.isEmpty { return index }
            report.append("`\(candidate.name)` is not supported because:\n" + bulletList(reasons))
        }
        throw FMHAError(.unsupported, "No operator found for `\(entryPoint)` with inputs:\n" + inputs.summary + "\n"
                        + report.joined(separator: "\n"))
    }

    private static func bulletList(_ reasons: [String]) -> String {
        reasons.map { "    " + $0 }.joined(separator: "\n")
    }
}

extension Inputs {
    /// The inputs in a few lines, for error messages.
    public var summary: String {
        func describe(_ tensor: Tensor) -> String { "shape=\(tensor.shape) (\(tensor.dtype), \(tensor.device))" }
        var lines = ["  query       : \(describe(query))", "  key         : \(describe(key))",
                     "  value       : \(describe(value))"]
        lines.append("  bias        : \(bias.map { type(of: $0).name } ?? "none")")
        lines.append("  p           : \(p)")
        if let scale { lines.append("  scale       : \(scale)") }
        return lines.joined(separator: "\n")
    }
}
