import CUDADriver
import FMHACore
import Synchronization

/// The CUDA forward oracle ("cuda-reference"): one thread per query row, float32 accumulation,
/// every bias (through `DeviceLowering`), layout, K ≠ Kv, scale, dropout (the CPU's Philox mask) and
/// partial output. Straightforward, not tuned; results come back through host memory.
public struct CUDAReferenceForward: ForwardOperator {
    public let name = "cuda-reference"

    /// The operator.
    public init() {}

    public var capabilities: OperatorCapabilities {
        OperatorCapabilities(
            devices: [.cuda], dtypes: [.float32, .float16, .bfloat16], maxHeadDimension: 65536, biasTypes: attentionBiasTypes,
            supportsDropout: true, supportsCustomScale: true, supportsDifferentValueHeadDimension: true,
            supportsBMGHK: true, supportsPartial: true, supportsOutputDType: true, isDeterministic: true,
            minimumComputeCapability: ComputeCapability(8, 0))
    }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        CUDAKernels.notSupportedReasons(capabilityReasons(problem), on: problem.device)
    }

    public func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
        try requireSupport(problem)
        let d = problem.dimensions
        let device = problem.device, context = try device.cudaContext()
        let views = (query: problem.query, key: problem.key, value: problem.value)
        let biasView = problem.tensorBias
        let rows = d.batch * d.groups * d.heads * d.queryLength
        let shape = CUDAKernels.shapeWords(d, dtype: problem.dtype, views: views, bias: biasView)
        let mask = DeviceLowering.words(problem.lowering, rowBlocks: true)
        let dropoutMask = problem.dropoutMask

        return try CUDAContexts.translatingErrors(device: device) { () throws -> ForwardOutput in
            let output = try context.allocate(max(rows * d.valueHeadDimension, 1) * 4)
            let lse = try context.allocate(max(rows, 1) * 4)
            try output.fill(0)
            let shapeBuffer = try CUDAKernels.upload(shape, context), maskBuffer = try CUDAKernels.upload(mask, context)
            let function = try CUDAKernels.shared().function("reference_forward", entry: "fmha_reference_forward", context: context)
            try CUDAKernels.withAddresses([views.query, views.key, views.value] + (biasView.map { [$0] } ?? [])) { addresses in
                var arguments = KernelArguments()
                for index in 0..<3 { arguments.append(addresses[index]) }
                arguments.append(addresses.count > 3 ? addresses[3] : UInt64(0))
                arguments.append(output)
                arguments.append(lse)
                arguments.append(shapeBuffer)
                arguments.append(maskBuffer)
                arguments.append(Float(problem.scale))
                arguments.appendDropout(dropoutMask)
                if rows > 0 {
                    try function.launch(grid: CUDAKernels.gridOfThreads(rows), block: (128, 1, 1), arguments: arguments)
                }
                try context.synchronize()
            }
            let hostOutput = try CUDAKernels.download(output, count: rows * d.valueHeadDimension)
            let hostLSE = try CUDAKernels.download(lse, count: rows)
            return ForwardOutput(
                output: try Tensor(shape: d.outputShape, scalars: hostOutput, dtype: problem.outputDType, device: device),
                lse: try Tensor(shape: d.lseShape, scalars: hostLSE, dtype: .float32, device: device))
        }
    }
}

/// The process's CUDA kernel compiler and loaded modules, shared by the CUDA operators.
final class CUDAKernels: Sendable {
    let compiler: KernelCompiler
    private let modules = Mutex<[String: CUDAModule]>([:])
    private static let instance = Mutex<CUDAKernels?>(nil)

    private init() throws {
        let driver = try CUDADriver.shared()
        compiler = KernelCompiler(compiler: try RuntimeCompiler.nvrtc(NVRTC()), driverVersion: "\(driver.version)")
    }

    /// The shared instance; throws when the driver or NVRTC cannot be loaded.
    static func shared() throws -> CUDAKernels {
        try instance.withLock { instance in
            if let instance { return instance }
            let created = try CUDAKernels()
            instance = created
            return created
        }
    }

    /// Kernel `entry` of `sourceName` for `context`'s device, compiled and loaded once.
    func function(_ sourceName: String, entry: String, context: CUDAContext) throws -> CUDAFunction {
        try function(KernelDescriptor(sourceName: sourceName, architecture: ""), entry: entry, context: context)
    }

    /// Kernel `entry` of `descriptor` compiled for `context`'s device (its architecture replaces
    /// the descriptor's), compiled and loaded once.
    func function(_ descriptor: KernelDescriptor, entry: String, context: CUDAContext) throws -> CUDAFunction {
        let capability = context.device.computeCapability
        var descriptor = descriptor
        descriptor.architecture = "sm_\(capability.major)\(capability.minor)"
        let key = "\(descriptor)/\(context.device.ordinal)"
        let module = try modules.withLock { modules -> CUDAModule in
            if let module = modules[key] { return module }
            let kernel = try compiler.kernel(for: descriptor)
            let module = try CUDAModule(context: context, cubin: kernel.cubin)
            modules[key] = module
            return module
        }
        return try module.function(entry)
    }

    /// The kernels' code for a dtype: 0 float32, 1 float16, 2 bfloat16.
    static func dtypeCode(_ dtype: DType) -> Int64 {
        dtype == .float16 ? 1 : dtype == .bfloat16 ? 2 : 0
    }

    /// The grid of 128-thread blocks, one thread per item (at most 2^20 blocks; the kernels loop).
    static func gridOfThreads(_ items: Int) -> (x: Int, y: Int, z: Int) {
        (min((items + 127) / 128, 1 << 20), 1, 1)
    }

    /// Device addresses of the tensors' first elements, valid inside `body`.
    static func withAddresses(_ tensors: [Tensor], _ body: ([UInt64]) throws -> Void) throws {
        func nest(_ index: Int, _ collected: [UInt64]) throws {
            guard index < tensors.count else { return try body(collected) }
            try tensors[index].withDeviceAddress { try nest(index + 1, collected + [$0]) }
        }
        try nest(0, [])
    }

    /// `words` in a new device buffer, copied ahead of the kernels launched next on the default
    /// stream (the call does not wait for the copy); keep the buffer until they have run.
    static func upload(_ words: [Int64], _ context: CUDAContext) throws -> DeviceBuffer {
        let buffer = try context.allocate(max(words.count, 1) * 8)
        try words.withUnsafeBytes { bytes in
            if let base = bytes.baseAddress { try buffer.enqueueCopy(from: base, bytes: bytes.count) }
        }
        return buffer
    }

    /// The first `count` float32 values of `buffer`, on the host.
    static func download(_ buffer: DeviceBuffer, count: Int) throws -> [Float] {
        var values = [Float](repeating: 0, count: count)
        try values.withUnsafeMutableBytes { bytes in
            if let base = bytes.baseAddress, count > 0 { try buffer.copy(to: base, bytes: bytes.count) }
        }
        return values
    }

    /// The `shape` words of the reference kernels: sizes, dtype code (0 float32, 1 float16, 2
    /// bfloat16), whether there is a tensor bias, then the q, k, v strides over (b, m, g, h) and the
    /// bias strides over (b, g, h, i, j).
    static func shapeWords(_ d: AttentionDimensions, dtype: DType, views: (query: Tensor, key: Tensor, value: Tensor),
                           bias: Tensor?) -> [Int64] {
        var words = [d.batch, d.queryLength, d.keyLength, d.groups, d.heads, d.headDimension, d.valueHeadDimension]
            .map(Int64.init)
        words += [CUDAKernels.dtypeCode(dtype), bias == nil ? 0 : 1]
        for view in [views.query, views.key, views.value] { words += view.strides.prefix(4).map(Int64.init) }
        return words + (bias?.strides ?? [0, 0, 0, 0, 0]).map(Int64.init)
    }

    /// `inputReasons` (why an operator refuses the inputs) when there are any, else why the CUDA
    /// kernels cannot run on `device`: the `notSupportedReasons` of every CUDA operator.
    static func notSupportedReasons(_ inputReasons: [String], on device: Device) -> [String] {
        inputReasons.isEmpty ? availabilityReasons(on: device) : inputReasons
    }

    /// Why the CUDA kernels cannot run on `device` (empty when they can): no driver or NVRTC, or
    /// a GPU below compute capability 8.0.
    static func availabilityReasons(on device: Device) -> [String] {
        do {
            _ = try shared()
            let capability = try device.cudaContext().device.computeCapability
            return capability < (8, 0) ? ["compute capability \(capability.major).\(capability.minor) is below 8.0"] : []
        } catch {
            return ["CUDA is not usable: \(error)"]
        }
    }
}

extension KernelArguments {
    /// The dropout parameters the kernels take, in order: seed, offset, keep threshold, scale of
    /// kept weights, on/off (0, 0, 0, 1 and off without dropout).
    mutating func appendDropout(_ mask: DropoutMask?) {
        append(mask?.state.seed ?? 0)
        append(mask?.state.offset ?? 0)
        append(mask?.threshold ?? 0)
        append(Float(mask?.keptScale ?? 1))
        append(Int32(mask == nil ? 0 : 1))
    }
}
