import ArgumentParser
import FMHA

/// `fmha run`: attention on .npy files.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Compute attention on .npy inputs (float32, float64 or float16, C order) and write float32 .npy outputs.")

    @Option(help: "Query .npy: [B, Mq, K], [B, Mq, H, K] or [B, Mq, G, H, K].") var query: String
    @Option(help: "Key .npy.") var key: String
    @Option(help: "Value .npy.") var value: String
    @Option(help: "Bias JSON: an xFormers bias class name with its factory's arguments.") var bias: String?
    @Option(help: "Scale on Q·Kᵀ (default 1/sqrt(K)).") var scale: Double?
    @Option(help: "Dropout probability.") var p: Double = 0
    @Option(help: "Dropout seed.") var seed: UInt64?
    @Option(help: "Compute in this dtype: float32, float16, bfloat16 or float64 (default: the query file's).") var dtype: DType?
    @Option(help: "Device: cpu or cuda[:N].") var device: DeviceArgument = .cpu
    @Option(help: "Forward operator name (default: dispatch chooses).") var op: String?
    @Option(help: "Output .npy.") var out: String
    @Option(help: "Also write the log-sum-exp .npy.") var lse: String?

    func run() throws {
        try exitingWithCodeTwoOnFMHAError(compute)
    }

    /// The work of `run()`, throwing `FMHAError` for anything wrong with the files or arguments.
    func compute() throws {
        let tensors = try [query, key, value].map { path in
            let tensor = try NumpyFile.read(path: path)
            return try tensor.converted(to: dtype ?? tensor.dtype).to(device.device)
        }
        let attentionBias = try bias.map { try BiasSpec.load(path: $0) }
        let chosen: (any ForwardOperator)? = try op.map { name in
            guard let found = Operators.forward(named: name) else {
                throw FMHAError.invalidArgument("--op", expected: "one of \(Operators.namedForward.map(\.name))", got: name)
            }
            return found
        }
        let result = try memoryEfficientAttentionForwardRequiresGrad(
            tensors[0], tensors[1], tensors[2], bias: attentionBias, p: p, scale: scale, op: chosen, seed: seed)
        try NumpyFile.write(result.output, path: out)
        if let lse { try NumpyFile.write(result.lse, path: lse) }
    }
}

