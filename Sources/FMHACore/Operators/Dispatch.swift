/// Operator selection: the first operator of a priority list with no reason to refuse the inputs;
/// an explicit choice is used or refused with its reasons, never replaced.
public enum Dispatch {
    /// Why each operator would or would not run `problem`, in priority order (empty reasons: it can).
    public static func explain(_ operators: [any AttentionOperator], for problem: AttentionProblem) -> [(name: String, reasons: [String])] {
        operators.map { ($0.name, $0.notSupportedReasons(problem)) }
    }

    /// The forward operator that runs `problem`: `explicit` if given and able, else the first able
    /// one of `operators`. `entryPoint` names the caller in errors.
    public static func selectForward(_ operators: [any ForwardOperator], explicit: (any ForwardOperator)?,
                                     for problem: AttentionProblem, entryPoint: String) throws -> any ForwardOperator {
        if let explicit {
            try accept(explicit, for: problem, entryPoint: entryPoint)
            return explicit
        }
        return operators[try firstAble(operators, for: problem, entryPoint: entryPoint)]
    }

    /// The backward operator that runs `problem`, chosen as `selectForward` does.
    public static func selectBackward(_ operators: [any BackwardOperator], explicit: (any BackwardOperator)?,
                                      for problem: AttentionProblem, entryPoint: String) throws -> any BackwardOperator {
        if let explicit {
            try accept(explicit, for: problem, entryPoint: entryPoint)
            return explicit
        }
        return operators[try firstAble(operators, for: problem, entryPoint: entryPoint)]
    }

    /// Throws the operator's reasons unless it can run `problem`.
    private static func accept(_ chosen: any AttentionOperator, for problem: AttentionProblem, entryPoint: String) throws {
        let reasons = chosen.notSupportedReasons(problem)
        guard reasons.isEmpty else {
            throw FMHAError(.unsupported, "Operator `\(chosen.name)` does not support these inputs of `\(entryPoint)`:\n"
                            + problem.summary + "\n" + bulletList(reasons))
        }
    }

    /// Index of the first operator with no reasons, or an error listing every operator's reasons.
    private static func firstAble(_ operators: [any AttentionOperator], for problem: AttentionProblem, entryPoint: String) throws -> Int {
        var report = [String]()
        for (index, candidate) in operators.enumerated() {
            let reasons = candidate.notSupportedReasons(problem)
            if reasons.isEmpty { return index }
            report.append("`\(candidate.name)` is not supported because:\n" + bulletList(reasons))
        }
        throw FMHAError(.unsupported, "No operator found for `\(entryPoint)` with inputs:\n" + problem.summary + "\n"
                        + report.joined(separator: "\n"))
    }

    private static func bulletList(_ reasons: [String]) -> String {
        reasons.map { "    " + $0 }.joined(separator: "\n")
    }
}

extension AttentionProblem {
    /// The inputs in a few lines, for error messages.
    public var summary: String {
        let inputs = self.inputs
        func describe(_ tensor: Tensor) -> String { "shape=\(tensor.shape) (\(tensor.dtype), \(tensor.device))" }
        var lines = ["  query       : \(describe(inputs.query))", "  key         : \(describe(inputs.key))",
                     "  value       : \(describe(inputs.value))"]
        lines.append("  bias        : \(inputs.bias.map { type(of: $0).name } ?? "none")")
        lines.append("  p           : \(inputs.p)")
        if let scale = inputs.scale { lines.append("  scale       : \(scale)") }
        return lines.joined(separator: "\n")
    }
}
