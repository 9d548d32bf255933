import ArgumentParser
import FMHA

/// `fmha bench`: median time of attention calls over repeated runs, in ms and TFLOP/s.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time attention on given shapes: median over repeated runs after warm-up, in ms and TFLOP/s.")

    @Option(help: "Device: cpu or cuda[:N].") var device: DeviceArgument = .cpu
    @Option(help: "Input dtype (repeatable).") var dtype: [DType] = [.float32]
    @Option(name: .customLong("case"), help: "B,Mq,Mkv,H,K[,causal] (repeatable); causal is bottom-right.")
    var cases: [BenchCase] = [BenchCase(batch: 1, queries: 256, keys: 256, heads: 4, headDimension: 64, causal: false),
                              BenchCase(batch: 1, queries: 256, keys: 256, heads: 4, headDimension: 64, causal: true)]
    @Flag(help: "Time forward + backward instead of forward alone.") var backward = false
    @Option(help: "Forward operator name (default: dispatch chooses).") var op: String?
    @Option(help: "Timed runs per case (after one warm-up run).") var repeats = 5
    @Flag(help: "One JSON object per line instead of a table.") var json = false
    @Flag(help: "Also measure the machine's float32 FMA peak (all threads) in the same run.") var fmaPeak = false

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
    }

    func run() throws {
        let chosen: (any ForwardOperator)? = try op.map { name in
            guard let found = Operators.forward(named: name) else {
                throw ValidationError("--op \(name): expected one of \((Operators.forward + Operators.forwardVariants).map(\.name))")
            }
            return found
        }
        var rows = [[String]]()
        let total = dtype.count * cases.count
        for (index, (dtype, benchCase)) in dtype.flatMap({ d in cases.map { (d, $0) } }).enumerated() {
            if StandardError.isTerminal, !json { StandardError.write("\r[\(index + 1)/\(total)] \(benchCase) \(dtype)   ") }
            let measurement = try measure(benchCase, dtype: dtype, op: chosen)
            let mode = backward ? "fwd+bwd" : "fwd"
            let teraflops = benchCase.flops(backward: backward) / (measurement.milliseconds * 1e-3) / 1e12
            if json {
                print(#"{"op": "\#(measurement.operatorName)", "device": "\#(device.device)", "dtype": "\#(dtype)", "B": \#(benchCase.batch), "Mq": \#(benchCase.queries), "Mkv": \#(benchCase.keys), "H": \#(benchCase.heads), "K": \#(benchCase.headDimension), "causal": \#(benchCase.causal), "mode": "\#(mode)", "ms": \#(measurement.milliseconds), "tflops": \#(teraflops)}"#)
            } else {
                rows.append([measurement.operatorName, dtype.rawValue, benchCase.description, mode,
                             Formatting.decimal(measurement.milliseconds, digits: 3),
                             Formatting.decimal(teraflops * 1000, digits: 2)])
            }
        }
        if StandardError.isTerminal, !json { StandardError.write("\r" + String(repeating: " ", count: 60) + "\r") }
        if !json {
            print(Table.render(header: ["operator", "dtype", "B,Mq,Mkv,H,K", "mode", "median ms", "GFLOP/s"], rows: rows))
        }
        if fmaPeak {
            let peak = FMAPeak.measure()
            if json {
                print(#"{"fma_peak_gflops": \#(peak.map { "\($0)" } ?? "null"), "threads": \#(CPUThreads.count)}"#)
            } else {
                print("FMA peak (\(CPUThreads.count) threads): \(peak.map { Formatting.decimal($0, digits: 1) + " GFLOP/s" } ?? "not measured (no AVX2/FMA)")")
            }
        }
    }

    /// Median milliseconds of `repeats` runs after a warm-up.
    private func measure(_ benchCase: BenchCase, dtype: DType, op: (any ForwardOperator)?) throws
        -> (milliseconds: Double, operatorName: String) {
        let d = device.device
        let query = try Tensor.randn([benchCase.batch, benchCase.queries, benchCase.heads, benchCase.headDimension],
                                     dtype: dtype, device: d, seed: 1)
        let key = try Tensor.randn([benchCase.batch, benchCase.keys, benchCase.heads, benchCase.headDimension],
                                   dtype: dtype, device: d, seed: 2)
        let value = try Tensor.randn([benchCase.batch, benchCase.keys, benchCase.heads, benchCase.headDimension],
                                     dtype: dtype, device: d, seed: 3)
        let bias: (any AttentionBias)? = benchCase.causal ? LowerTriangularFromBottomRightMask() : nil
        var operatorName = ""
        func once() throws {
            let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: bias, op: op)
            operatorName = forward.operatorName
            if backward {
                _ = try memoryEfficientAttentionBackward(forward.output, output: forward.output, lse: forward.lse,
                                                         query: query, key: key, value: value, bias: bias)
            }
        }
        try once()
        let clock = ContinuousClock()
        var times = [Double]()
        for _ in 0..<repeats {
            let elapsed = try clock.measure(once)
            times.append(elapsed.seconds * 1e3)
        }
        times.sort()
        let middle = times.count / 2
        let median = times.count % 2 == 1 ? times[middle] : (times[middle - 1] + times[middle]) / 2
        return (median, operatorName)
    }
}

/// One benchmark shape: `B,Mq,Mkv,H,K[,causal]`.
struct BenchCase: ExpressibleByArgument, CustomStringConvertible {
    var batch: Int
    var queries: Int
    var keys: Int
    var heads: Int
    var headDimension: Int
    var causal: Bool

    init(batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int, causal: Bool) {
        self.batch = batch
        self.queries = queries
        self.keys = keys
        self.heads = heads
        self.headDimension = headDimension
        self.causal = causal
    }

    init?(argument: String) {
        let parts = argument.split(separator: ",").map(String.init)
        guard parts.count == 5 || (parts.count == 6 && parts[5] == "causal") else { return nil }
        let numbers = parts.prefix(5).compactMap { Int($0) }
        guard numbers.count == 5, numbers.allSatisfy({ $0 > 0 }) else { return nil }
        self.init(batch: numbers[0], queries: numbers[1], keys: numbers[2], heads: numbers[3],
                  headDimension: numbers[4], causal: parts.count == 6)
    }

    var description: String {
        "\(batch),\(queries),\(keys),\(heads),\(headDimension)\(causal ? ",causal" : "")"
    }

    /// 4·B·H·Mq·Mkv·K, halved when causal with Mq = Mkv, times 3.5 with the backward pass.
    func flops(backward: Bool) -> Double {
        var flops = 4 * Double(batch) * Double(heads) * Double(queries) * Double(keys) * Double(headDimension)
        if causal, queries == keys { flops /= 2 }
        return backward ? flops * 3.5 : flops
    }
}
