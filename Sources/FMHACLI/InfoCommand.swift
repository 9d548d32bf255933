import ArgumentParser
import FMHA

/// `fmha info`: the platform, the GPU libraries, and every operator with its capabilities.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show the platform, CUDA libraries found or not, and every operator's capabilities.")

    @Flag(help: "Also compile every CUDA kernel variant with NVRTC (no GPU needed) and report registers, shared memory and spills; fail on a compile error or a spill.")
    var compileKernels = false

    @Option(name: .customLong("arch"), help: "Architectures for --compile-kernels (repeatable): \(KernelCatalog.architectures.joined(separator: ", ")).")
    var architectures: [String] = []

    func validate() throws {
        if let bad = architectures.first(where: { !KernelCatalog.architectures.contains($0) }) {
            throw ValidationError("--arch \(bad): expected one of \(KernelCatalog.architectures.joined(separator: ", "))")
        }
    }

    func run() throws {
        print("platform: Linux \(Platform.architecture), \(Platform.processorCount) logical CPUs")
        print("cpu: \(Platform.cpuDescription())")
        for line in Self.cudaDescription() { print(line) }
        print("attention biases: \(attentionBiasTypes.count) types")
        if compileKernels { try Self.compileEveryKernel(architectures: architectures.isEmpty ? KernelCatalog.architectures : architectures) }
        for (kind, operators) in [("forward", Operators.forward as [any AttentionOperator]),
                                  ("backward", Operators.backward as [any AttentionOperator])] {
            for op in operators {
                print("\(kind) operator \(op.name):")
                for line in Self.describe(op.capabilities, backward: kind == "backward") { print("  " + line) }
            }
        }
    }

    /// Compiles every kernel variant for `architectures` and prints one row per kernel function;
    /// exits non-zero when a variant fails to compile or spills where it must not.
    static func compileEveryKernel(architectures: [String]) throws {
        let compiler = try CUDAEnvironment.kernelCompiler()
        var rows = [[String]](), failures = 0
        for architecture in architectures {
            for variant in KernelCatalog.allVariants(architecture: architecture) {
                let name = variant.sourceName
                do {
                    let kernel = try compiler.kernel(for: variant)
                    let origin: String
                    switch kernel.origin {
                    case .compiled(let duration): origin = "compiled in \(Formatting.decimal(duration.seconds * 1000, digits: 0)) ms"
                    case .diskCache: origin = "disk cache"
                    }
                    for resources in kernel.resources {
                        let failed = resources.spills(moreThan: variant.toleratedSpillBytes)
                        if failed { failures += 1 }
                        let verdict = failed ? "FAIL: spills" : resources.spills ? "ok (spills tolerated)" : "ok"
                        rows.append([name, architecture, resources.function, "\(resources.registers)", "\(resources.sharedMemoryBytes)",
                                     "\(resources.spillStoreBytes)/\(resources.spillLoadBytes)", origin, verdict])
                    }
                } catch {
                    failures += 1
                    rows.append([name, architecture, "-", "-", "-", "-", "-", "FAIL: \(error)".split(separator: "\n").first.map(String.init) ?? "FAIL"])
                }
            }
        }
        print(Table.render(header: ["kernel", "arch", "function", "registers", "smem bytes", "spill st/ld", "origin", "result"], rows: rows))
        if failures > 0 {
            StandardError.writeLine("fmha info: \(failures) kernel variant\(failures == 1 ? "" : "s") failed")
            throw ExitCode.failure
        }
    }

    /// The CUDA driver, its devices and NVRTC: found and what they are, or why not.
    static func cudaDescription() -> [String] {
        let environment = CUDAEnvironment()
        var lines = [String]()
        switch environment.driver {
        case .success(let driver):
            let count = driver.devices.count
            lines.append("cuda driver: \(driver.path), CUDA \(driver.version / 1000).\(driver.version % 1000 / 10), \(count) device\(count == 1 ? "" : "s")")
            lines += driver.devices.map { "  \($0)" }
        case .failure(let error):
            lines.append("cuda driver: not available (\(error))")
        }
        switch environment.compiler {
        case .success(let nvrtc):
            lines.append("nvrtc: \(nvrtc.path), version \(nvrtc.version.major).\(nvrtc.version.minor)")
        case .failure(let error):
            lines.append("nvrtc: not available (\(error))")
        }
        return lines
    }

    /// One line per capability.
    static func describe(_ capabilities: OperatorCapabilities, backward: Bool) -> [String] {
        func yesNo(_ flag: Bool) -> String { flag ? "yes" : "no" }
        let biasCount = capabilities.biasTypes.count
        var lines = [
            "devices: \(capabilities.devices.map(\.rawValue).sorted().joined(separator: ", "))",
            "dtypes: \(DType.allCases.filter(capabilities.dtypes.contains).map(\.rawValue).joined(separator: ", "))",
            "max head dimension: \(capabilities.maxHeadDimension == .max ? "any" : String(capabilities.maxHeadDimension))",
            "bias types: \(biasCount == attentionBiasTypes.count ? "all \(biasCount)" : capabilities.biasTypes.map { $0.name }.joined(separator: ", "))",
            "dropout: \(yesNo(capabilities.supportsDropout)), custom scale: \(yesNo(capabilities.supportsCustomScale)), K ≠ Kv: \(yesNo(capabilities.supportsDifferentValueHeadDimension)), BMGHK: \(yesNo(capabilities.supportsBMGHK))",
            "partial: \(yesNo(capabilities.supportsPartial)), output dtype: \(yesNo(capabilities.supportsOutputDType)), deterministic: \(yesNo(capabilities.isDeterministic))",
        ]
        if backward { lines.append("bias gradient: \(yesNo(capabilities.supportsBiasGradient))") }
        if let minimum = capabilities.minimumComputeCapability { lines.append("minimum compute capability: \(minimum)") }
        return lines
    }
}
