import ArgumentParser
import FMHA

/// `fmha check`: every forward operator against a float64 oracle on one case per bias type (and
/// two with dropout), and every backward operator against the float64 backward oracle
/// (`cpu-reference`) on the same cases.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Run every available operator against a float64 oracle on every bias type; print a pass/fail table.")

    @Option(help: "Device to check: cpu or cuda.")
    var device: DeviceArgument = .cpu

    @Option(help: "Input dtypes to check (repeatable): float32, float16, bfloat16, float64.")
    var dtype: [DType] = [.float32, .float16, .bfloat16]

    func run() throws {
        var failures = 0, rows = [[String]](), skipped = [String: Int]()
        let progress = ProgressLine()
        for dtype in dtype {
            let samples = try SampleCases.all(dtype: dtype, device: device.device)
            // The backward oracle runs on the host: the same samples there (the same seeds).
            let hostSamples = device.device == .cpu ? samples : try SampleCases.all(dtype: dtype, device: .cpu)
            for (sample, host) in zip(samples, hostSamples) {
                for forward in Operators.forward {
                    progress.show("\(forward.name) \(sample.name) \(dtype)")
                    // Operators that cannot run a case are counted, not listed (on a CPU-only
                    // machine every CUDA case would be a row).
                    if let reason = forward.notSupportedReasons(sample.problem).first {
                        skipped["\(forward.name): \(reason)", default: 0] += 1
                        continue
                    }
                    let verdict = try Self.compare(forward, sample.problem, host: host.problem)
                    if !verdict.passed { failures += 1 }
                    rows.append([forward.name, sample.name, dtype.rawValue, verdict.error, verdict.passed ? "PASS" : "FAIL"])
                }
                var oracle: BackwardOracle?
                for backward in Operators.backward where backward.name != BackwardOracle.name {
                    progress.show("\(backward.name) backward \(sample.name) \(dtype)")
                    if let reason = backward.notSupportedReasons(sample.problem).first {
                        skipped["\(backward.name) backward: \(reason)", default: 0] += 1
                        continue
                    }
                    if oracle == nil { oracle = try BackwardOracle(host.problem) }
                    let verdict = try oracle!.compare(backward, sample.problem)
                    if !verdict.passed { failures += 1 }
                    rows.append([backward.name + " backward", sample.name, dtype.rawValue, verdict.error, verdict.passed ? "PASS" : "FAIL"])
                }
            }
        }
        progress.clear()
        print(Table.render(header: ["operator", "case", "dtype", "worst error ÷ allowed (≤ 1 passes)", "result"], rows: rows))
        for (reason, count) in skipped.sorted(by: { $0.key < $1.key }) { print("skipped \(count): \(reason)") }
        print("\(rows.count - failures) passed, \(failures) failed, \(skipped.values.reduce(0, +)) skipped")
        if failures > 0 { throw ExitCode.failure }
    }

    /// The operator's output and LSE against `DenseAttention` (with dropout, which it does not
    /// apply: the float64 `ReferenceForward` on `host`, the same problem on the CPU): the worst
    /// error as a multiple of the allowed one (the forward tolerance of the output dtype; 2e-4
    /// absolute on the LSE).
    static func compare(_ forward: any ForwardOperator, _ problem: AttentionProblem,
                        host: AttentionProblem) throws -> (passed: Bool, error: String) {
        let result = try forward.forward(problem)
        let oracle: (output: [Double], lse: [Double])
        if host.dropoutMask != nil {
            let reference = try ReferenceForward().forward(host)
            oracle = (try reference.output.toDoubleArray(), try reference.lse.toDoubleArray())
        } else {
            oracle = try DenseAttention.forward(problem)
        }
        let outputRatio = Tolerance.forward(result.output.dtype).worstRatio(try result.output.toDoubleArray(), oracle.output)
        let lseRatio = Tolerance(absolute: 2e-4, relative: 1e-5).worstRatio(try result.lse.toDoubleArray(), oracle.lse)
        let worst = max(outputRatio, lseRatio)
        return (worst <= 1, Formatting.decimal(worst, digits: 3))
    }
}

/// The float64 backward oracle (`cpu-reference`, `ReferenceBackward`) of one host problem: the
/// reference forward's output and LSE, a random output gradient and the gradients they give.
struct BackwardOracle {
    /// The oracle's operator name (it is not compared with itself).
    static let name = ReferenceBackward().name

    let output: Tensor, lse: Tensor, gradOutput: Tensor
    let gradients: Gradients

    init(_ problem: AttentionProblem) throws {
        let forward = try ReferenceForward().forward(problem)
        output = forward.output
        lse = forward.lse
        gradOutput = try Tensor.randn(problem.dimensions.outputShape, dtype: problem.dtype, seed: 99)
        gradients = try ReferenceBackward().backward(problem.backward(output: output, lse: lse, gradOutput: gradOutput))
    }

    /// `backward`'s gradients on `problem` (the oracle's, on its device) against the oracle's: the
    /// worst error over dQ, dK, dV (and the bias gradient) as a multiple of the allowed one (the
    /// backward tolerance of the input dtype).
    func compare(_ backward: any BackwardOperator, _ problem: AttentionProblem) throws -> (passed: Bool, error: String) {
        let device = problem.device
        let result = try backward.backward(problem.backward(output: try output.to(device), lse: try lse.to(device),
                                                            gradOutput: try gradOutput.to(device)))
        let tolerance = Tolerance.backward(problem.dtype)
        var worst = 0.0
        for (value, expected) in [(result.dq, gradients.dq), (result.dk, gradients.dk), (result.dv, gradients.dv)] {
            worst = max(worst, tolerance.worstRatio(try value.toDoubleArray(), try expected.toDoubleArray()))
        }
        switch (result.dBias, gradients.dBias) {
        case let (value?, expected?): worst = max(worst, tolerance.worstRatio(try value.toDoubleArray(), try expected.toDoubleArray()))
        case (nil, nil): break
        default: worst = .infinity  // one gives a bias gradient and the other does not
        }
        return (worst <= 1, Formatting.decimal(worst, digits: 3))
    }
}
