import FMHACore
import FMHACPU
import FMHACUDA

/// The operators this build has, in dispatch priority order, and the questions dispatch answers.
public enum Operators {
    /// Forward operators, most preferred first.
    public static let forward: [any ForwardOperator] = [
        CPUForward(), CUDAFlashDecode(), CUDAHopperForward(), CUDAFlashForward(), CUDAReferenceForward(), ReferenceForward(),
    ]
    /// Backward operators, most preferred first.
    public static let backward: [any BackwardOperator] = [
        CPUBackward(), CUDAFlashBackward(deterministic: false), CUDAFlashBackward(), CUDAReferenceBackward(), ReferenceBackward(),
    ]

    /// Forward operators that dispatch never picks but `op:` or `--op` can name: each build of
    /// the CPU kernels (`cpu-tiled-avx512`, `cpu-tiled-avx2`, `cpu-tiled-generic`) and the
    /// tensor-core forward with each tuning candidate's tile shape (`cuda-flash-w8x1n64b1`, ...),
    /// the decoding forward with each tuning shape (`cuda-decode-w8n16s2`, ...).
    public static let forwardVariants: [any ForwardOperator] =
        CPUKernels.allCases.filter { $0 != .best }.map { CPUForward(kernels: $0) }
        + CUDAFlashForward.tuningCandidates.map { CUDAFlashForward(tileShape: $0) }
        + CUDAFlashDecode.tuningShapes.map { CUDAFlashDecode(shape: $0) }
    /// Backward operators that dispatch never picks but `op:` can name.
    public static let backwardVariants: [any BackwardOperator] =
        CPUKernels.allCases.filter { $0 != .best }.map { CPUBackward(kernels: $0) }

    /// Every forward operator `op:` can name: the dispatched ones, then the variants.
    public static var namedForward: [any ForwardOperator] { forward + forwardVariants }

    /// The forward operator called `name`, if this build has one.
    public static func forward(named name: String) -> (any ForwardOperator)? {
        namedForward.first { $0.name == name }
    }

    /// The forward operator called `name`, or an error that lists the dispatched operators (the
    /// tuning variants, which `op:` can name too, are listed by `fmha info`).
    public static func forward(required name: String, argument: String = "op") throws -> any ForwardOperator {
        guard let found = forward(named: name) else {
            throw FMHAError.invalidArgument(
                argument, expected: "one of \(forward.map(\.name).joined(separator: ", ")) (or a kernel variant that `fmha info` lists)",
                got: "\"\(name)\"")
        }
        return found
    }

    /// The backward operator called `name`, if this build has one.
    public static func backward(named name: String) -> (any BackwardOperator)? {
        (backward + backwardVariants).first { $0.name == name }
    }

    /// Which forward operator would run `problem`, without running anything; throws, with every
    /// operator's reasons, when none can.
    public static func forwardOperator(for problem: AttentionProblem) throws -> any ForwardOperator {
        try Dispatch.selectForward(forward, explicit: nil, for: problem, entryPoint: "memoryEfficientAttentionForward")
    }

    /// Which backward operator would run `problem`, without running anything.
    public static func backwardOperator(for problem: AttentionProblem) throws -> any BackwardOperator {
        try Dispatch.selectBackward(backward, explicit: nil, for: problem, entryPoint: "memoryEfficientAttentionBackward")
    }

    /// Every forward operator with its reasons to refuse `problem` (none: it can run it).
    public static func explainForward(_ problem: AttentionProblem) -> [(name: String, reasons: [String])] {
        Dispatch.explain(forward, for: problem)
    }

    /// Every backward operator with its reasons to refuse `problem`.
    public static func explainBackward(_ problem: AttentionProblem) -> [(name: String, reasons: [String])] {
        Dispatch.explain(backward, for: problem)
    }
}
