import ArgumentParser
import FMHA

/// `fmha run`: attention on .npy files.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Compute attention (and, with --grad-output, its gradients) on .npy inputs (float32, float64 or float16, C order) and write float32 .npy outputs.")

    @Option(help: "Query .npy: [B, Mq, K], [B, Mq, H, K] or [B, Mq, G, H, K].") var query: String
    @Option(help: "Key .npy.") var key: String
    @Option(help: "Value .npy.") var value: String
    @Option(help: "Bias JSON: an xFormers bias class name with its factory's arguments.") var bias: String?
    // (Numbers are taken unconditionally, so that `--scale -0.5` needs no `=`.)
    @Option(parsing: .unconditional, help: "Scale on Q·Kᵀ (default 1/sqrt(K)).") var scale: Double?
    @Option(parsing: .unconditional, help: "Dropout probability.") var p: Double = 0
    @Option(parsing: .unconditional, help: "Dropout seed.") var seed: UInt64?
    @Option(help: "Compute in this dtype: float32, float16, bfloat16 or float64 (default: the query file's).") var dtype: DType?
    @Option(help: "Device: cpu or cuda[:N].") var device: DeviceArgument = .cpu
    @Option(help: "Forward operator name (default: dispatch chooses).") var op: String?
    @Option(help: "Output .npy.") var out: String
    @Option(help: "Also write the log-sum-exp .npy.") var lse: String?
    @Option(help: "Gradient of the output .npy (shaped like --out): run the backward too, replaying the dropout.")
    var gradOutput: String?
    @Option(help: "Write ∂L/∂query .npy (needs --grad-output).") var dq: String?
    @Option(help: "Write ∂L/∂key .npy (needs --grad-output).") var dk: String?
    @Option(help: "Write ∂L/∂value .npy (needs --grad-output).") var dv: String?
    @Option(help: "Write ∂L/∂bias .npy for a tensor bias (needs --grad-output).") var dbias: String?

    /// Computes and writes the outputs, throwing `FMHAError` for anything wrong with the files or
    /// arguments (`FMHACommand.run(arguments:)` makes it one line and exit code 2).
    func run() throws {
        let progress = ProgressLine()
        defer { progress.clear() }
        progress.show("reading the inputs")
        let tensors = try [query, key, value].map { path in
            let tensor = try NumpyFile.read(path: path)
            return try tensor.converted(to: dtype ?? tensor.dtype).to(device.device)
        }
        // A tensor bias goes where the inputs go, in their dtype.
        let attentionBias = try bias.map { try BiasSpec.load(path: $0).converted(to: tensors[0].dtype, device: device.device) }
        let chosen = try op.map { try Operators.forward(required: $0, argument: "--op") }
        let gradientPaths = [("--dq", dq), ("--dk", dk), ("--dv", dv), ("--dbias", dbias)]
        if gradOutput == nil, let (name, _) = gradientPaths.first(where: { $0.1 != nil }) {
            throw FMHAError.invalidArgument(name, expected: "--grad-output with it (the gradient of the output)", got: "no --grad-output")
        }
        if dbias != nil, attentionBias?.tensorBias == nil {
            throw FMHAError.invalidArgument("--dbias", expected: "a bias with a tensor part (Tensor or LowerTriangularMaskWithTensorBias)",
                                            got: attentionBias.map { "\(type(of: $0).name)" } ?? "no bias")
        }
        progress.show("forward")
        let result = try memoryEfficientAttentionForwardRequiresGrad(
            tensors[0], tensors[1], tensors[2], bias: attentionBias, p: p, scale: scale, op: chosen, seed: seed)
        var outputs = [(result.output, out)] + (lse.map { [(result.lse, $0)] } ?? [])
        if let gradOutput {
            progress.show("backward")
            let gradient = try NumpyFile.read(path: gradOutput).converted(to: tensors[0].dtype).to(device.device)
            let gradients = try memoryEfficientAttentionBackward(
                gradient, output: result.output, lse: result.lse, query: tensors[0], key: tensors[1], value: tensors[2],
                bias: attentionBias, dropout: result.dropout, scale: scale)
            for (tensor, path) in [(gradients.dq, dq), (gradients.dk, dk), (gradients.dv, dv), (gradients.dBias, dbias)] {
                if let tensor, let path { outputs.append((tensor, path)) }
            }
        }
        progress.show("writing the outputs")
        // All the outputs or none (a bad --lse path must not leave --out written).
        try FileBytes.writeAll(try outputs.map { (try NumpyFile.encode($0.0), $0.1) })
    }
}

