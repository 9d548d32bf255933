import ArgumentParser
import FMHA

/// `fmha check`: every forward operator against a float64 oracle on one case per bias type.
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
            for sample in try SampleCases.all(dtype: dtype, device: device.device) {
                for forward in Operators.forward {
                    progress.show("\(forward.name) \(sample.name) \(dtype)")
                    // Operators that cannot run a case are counted, not listed (on a CPU-only
                    // machine every CUDA case would be a row).
                    if let reason = forward.notSupportedReasons(sample.problem).first {
                        skipped["\(forward.name): \(reason)", default: 0] += 1
                        continue
                    }
                    let verdict = try Self.compare(forward, sample.problem)
                    if !verdict.passed { failures += 1 }
                    rows.append([forward.name, sample.name, dtype.rawValue, verdict.error, verdict.passed ? "PASS" : "FAIL"])
                }
            }
        }
        progress.clear()
        print(Table.render(header: ["operator", "case", "dtype", "worst error ÷ allowed (≤ 1 passes)", "result"], rows: rows))
        for (reason, count) in skipped.sorted(by: { $0.key < $1.key }) { print("skipped \(count): \(reason)") }
        print("\(rows.count - failures) passed, \(failures) failed, \(skipped.values.reduce(0, +)) skipped")
        if failures > 0 { throw ExitCode.failure }
    }

    /// The operator's output and LSE against `DenseAttention`: the worst error as a multiple of
    /// the allowed one (the forward tolerance of the output dtype; 2e-4 absolute on the LSE).
    static func compare(_ forward: any ForwardOperator, _ problem: AttentionProblem) throws -> (passed: Bool, error: String) {
        let result = try forward.forward(problem)
        let oracle = try DenseAttention.forward(problem)
        let outputRatio = Tolerance.forward(result.output.dtype).worstRatio(try result.output.toDoubleArray(), oracle.output)
        let lseRatio = Tolerance(absolute: 2e-4, relative: 1e-5).worstRatio(try result.lse.toDoubleArray(), oracle.lse)
        let worst = max(outputRatio, lseRatio)
        return (worst <= 1, Formatting.decimal(worst, digits: 3))
    }
}
