import CUDADriver
import FMHACore
import Synchronization

/// The process's CUDA kernel compiler and loaded kernels, shared by the CUDA operators.
final class CUDAKernels: Sendable {
    let compiler: KernelCompiler

    /// What identifies a loaded kernel: its variant (any family) and the device.
    private struct LoadedKernelKey: Hashable, Sendable {
        let kernel: AnyKernelVariant, device: Int
    }

    /// The kernels loaded so far: each variant's entry points on each device, ready to launch.
    private let loadedKernels = Mutex<[LoadedKernelKey: [String: CUDAFunction]]>([:])
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

    /// Kernel `entry` of `kernel`, compiled, loaded into `context` and readied (dynamic shared
    /// memory above 48 KiB allowed) once per device; `kernel` is for `context.device`'s
    /// architecture (`CUDADevice.kernelArchitecture`). A call looks the function up here instead
    /// of building the source, finding the function in its module and setting the attribute again
    /// (microseconds that short sequences feel).
    func function(_ kernel: some KernelVariantDescriptor, entry: String, context: CUDAContext) throws -> CUDAFunction {
        let key = LoadedKernelKey(kernel: AnyKernelVariant(kernel), device: context.device.ordinal)
        if let functions = loadedKernels.withLock({ $0[key] }) { return try Self.entry(entry, in: functions, of: kernel) }
        // Compiled outside the lock, so that different variants compile in parallel (the compiler
        // makes threads that ask for the same one wait for a single compilation).
        let cubin = try compiler.kernel(for: kernel).cubin
        let functions = try loadedKernels.withLock { loaded -> [String: CUDAFunction] in
            if let functions = loaded[key] { return functions }
            let functions = try load(kernel, cubin: cubin, context: context)
            loaded[key] = functions
            return functions
        }
        return try Self.entry(entry, in: functions, of: kernel)
    }

    /// The function called `entry` among `kernel`'s loaded `functions`.
    private static func entry(_ entry: String, in functions: [String: CUDAFunction],
                              of kernel: some KernelVariantDescriptor) throws -> CUDAFunction {
        guard let function = functions[entry] else {
            throw FMHAError.invalidArgument("CUDAKernels.function entry", expected: "one of \(kernel.entryPoints) of \(kernel)",
                                            got: "\"\(entry)\"")
        }
        return function
    }

    /// `kernel`'s module (`cubin`) loaded into `context` and its entry points by name, each allowed the
    /// kernel's dynamic shared memory when that is above the 48 KiB every kernel gets.
    private func load(_ kernel: some KernelVariantDescriptor, cubin: [UInt8], context: CUDAContext) throws -> [String: CUDAFunction] {
        let module = try CUDAModule(context: context, cubin: cubin)
        var functions = [String: CUDAFunction]()
        for entry in kernel.entryPoints {
            let function = try module.function(entry)
            if kernel.dynamicSharedMemoryBytes > 48 * 1024 { try function.allowDynamicSharedMemory(kernel.dynamicSharedMemoryBytes) }
            functions[entry] = function
        }
        return functions
    }

    /// The kernels' code for a dtype: 0 float32, 1 float16, 2 bfloat16.
    static func dtypeCode(_ dtype: DType) -> Int64 {
        dtype == .float16 ? 1 : dtype == .bfloat16 ? 2 : 0
    }

    /// The grid of 128-thread blocks, one thread per item (at most 2^20 blocks; the kernels loop).
    static func gridOfThreads(_ items: Int) -> (x: Int, y: Int, z: Int) {
        (min((items + 127) / 128, 1 << 20), 1, 1)
    }

    /// Whether every row of `tensors` (first elements at `addresses`, a unit last stride) starts on
    /// a 16-byte boundary, so that the tensor-core kernels move rows 8 16-bit elements at a time.
    static func rowsAre16ByteAligned(_ tensors: [Tensor], addresses: [UInt64]) -> Bool {
        addresses.allSatisfy { $0 % 16 == 0 } && tensors.allSatisfy { $0.strides.prefix(4).allSatisfy { $0 % 8 == 0 } }
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

    /// The first of `widths` (ascending) that holds both K and Kv of `d`, if any: the padded width
    /// a kernel is compiled for.
    static func width(for d: AttentionDimensions, among widths: [Int]) -> Int? {
        widths.first { $0 >= max(d.headDimension, d.valueHeadDimension) }
    }

    /// Why the tensor-core kernels (flash forward and backward) refuse `problem`'s sizes: head
    /// dimensions that are not multiples of 8, and key positions (32-bit there: K/V rows and the
    /// logical keys of every block) that reach 2^31.
    static func tensorCoreSizeReasons(_ problem: AttentionProblem) -> [String] {
        var reasons = [String]()
        let d = problem.dimensions
        for (what, size) in [("head dimension", d.headDimension), ("value head dimension", d.valueHeadDimension)]
        where size % 8 != 0 {
            reasons.append("\(what) \(size) is not a multiple of 8")
        }
        let keyEnd = problem.lowering.blocks.lazy.map { $0.keyStart + $0.keyCount }.max() ?? 0
        if max(d.keyLength, keyEnd) >= Int(Int32.max) {
            reasons.append("\(max(d.keyLength, keyEnd)) keys reach 2^31")
        }
        return reasons
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

/// A CUDA forward operator whose kernels write every element of the output and LSE tensors it is
/// given (contiguous, the problem's output shape and dtype, and float32, on its device): what the
/// GPU tests call with poisoned tensors, to see that nothing is left unwritten.
protocol CUDAForwardRunner: ForwardOperator {
    func run(_ problem: AttentionProblem, output: Tensor, lse: Tensor) throws
}

extension CUDAForwardRunner {
    /// What `forward(_:)` does for each of them: refuses what it cannot run, then runs the kernels
    /// into a new output and LSE (not zero-filled: the kernels write every element).
    func forwardByRunning(_ problem: AttentionProblem) throws -> ForwardOutput {
        try requireSupport(problem)
        let d = problem.dimensions
        let output = try Tensor.uninitialized(d.outputShape, dtype: problem.outputDType, device: problem.device)
        let lse = try Tensor.uninitialized(d.lseShape, dtype: .float32, device: problem.device)
        try run(problem, output: output, lse: lse)
        return ForwardOutput(output: output, lse: lse)
    }
}

extension CUDADevice {
    /// The architecture kernels are compiled for on this device, `sm_<major><minor>` (e.g. `sm_90`).
    var kernelArchitecture: String { "sm_\(computeCapability.major)\(computeCapability.minor)" }
}
