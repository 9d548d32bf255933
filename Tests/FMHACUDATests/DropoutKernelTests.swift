import CUDADriver
import FMHATestSupport
import FMHACore
import FMHACUDA
import Testing

/// The CUDA dropout mask (`prelude.cu`'s Philox, through `dropout_mask.cu`) against FMHACore's
/// `DropoutMask` on the CPU, bit for bit. Needs a GPU; never runs in CI.
@Suite(.enabled(if: GPUForTests.context != nil, "no CUDA device"))
struct DropoutKernelTests {
    /// A mask to draw and the grid to draw it on; `maximumBlocks` small enough makes the kernel's
    /// grid-stride loop go round several times.
    struct Case: Sendable, CustomTestStringConvertible {
        var state: DropoutState
        var head: Int
        var queries: Int
        var keys: Int
        var maximumBlocks = 1024

        var testDescription: String {
            "p \(state.p), seed \(state.seed), offset \(state.offset), head \(head), \(queries)x\(keys), ≤\(maximumBlocks) blocks"
        }
    }

    @Test(arguments: [
        Case(state: DropoutState(p: 0.1, seed: 0x0123_4567_89AB_CDEF), head: 0, queries: 37, keys: 61),
        Case(state: DropoutState(p: 0.5, seed: .max, offset: 7), head: 70_000, queries: 5, keys: 4099, maximumBlocks: 2),
        Case(state: DropoutState(p: 0.3, seed: 42, offset: .max), head: 3, queries: 1, keys: 1),
        Case(state: DropoutState(p: 0, seed: 1), head: 1, queries: 3, keys: 9),
        Case(state: DropoutState(p: 0.999, seed: 1 << 40), head: 12, queries: 300, keys: 300, maximumBlocks: 1),
    ])
    func keepMaskMatchesTheCPU(_ test: Case) throws {
        let context = try #require(GPUForTests.context)
        let capability = context.device.computeCapability
        let compiler = KernelCompiler(compiler: try .nvrtc(NVRTC()), driverVersion: "\(context.driver.version)", diskCache: nil)
        let variant = FixedKernel(.dropoutMask, architecture: "sm_\(capability.major)\(capability.minor)")
        let kernel = try compiler.kernel(for: variant)
        let function = try CUDAModule(context: context, cubin: kernel.cubin).function("fmha_dropout_keep")

        let mask = DropoutMask(test.state)
        let count = test.queries * test.keys
        let buffer = try context.allocate(count)
        try buffer.fill(0xFF)
        var arguments = KernelArguments()
        arguments.append(buffer)
        arguments.append(UInt32(test.queries))
        arguments.append(UInt32(test.keys))
        arguments.append(UInt32(test.head))
        arguments.append(test.state.seed)
        arguments.append(test.state.offset)
        arguments.append(mask.threshold)
        let threads = 128
        let quads = test.queries * ((test.keys + 3) / 4)
        try function.launch(grid: (min((quads + threads - 1) / threads, test.maximumBlocks), 1, 1), block: (threads, 1, 1),
                            arguments: arguments)
        try context.synchronize()
        var kept = [UInt8](repeating: 0xEE, count: count)
        try kept.withUnsafeMutableBytes { try buffer.copy(to: $0.baseAddress!, bytes: count) }

        var mismatches = [String]()
        for query in 0..<test.queries {
            for key in 0..<test.keys {
                let expected: UInt8 = mask.isKept(head: test.head, query: query, key: key) ? 1 : 0
                if kept[query * test.keys + key] != expected, mismatches.count < 5 {
                    mismatches.append("(query \(query), key \(key)): GPU \(kept[query * test.keys + key]), CPU \(expected)")
                }
            }
        }
        #expect(mismatches.isEmpty, "GPU and CPU masks differ at \(mismatches)")
    }
}
