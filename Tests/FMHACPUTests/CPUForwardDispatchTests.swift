#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// `CPUForwardTests` of what dispatch sees: names, capabilities and refusals, the kernel builds
/// this CPU runs, and results independent of the thread count.
extension CPUForwardTests {
    // MARK: - Dispatch

    @Test func namesAndCapabilities() {
        #expect(CPUForward().name == "cpu-tiled")
        #expect(CPUForward(kernels: .generic).name == "cpu-tiled-generic")
        #expect(CPUForward(kernels: .avx2).name == "cpu-tiled-avx2")
        let capabilities = CPUForward().capabilities
        #expect(capabilities.dtypes == [.float32, .float16, .bfloat16])
        #expect(capabilities.supportsDropout && capabilities.supportsBMGHK && capabilities.supportsPartial)
    }

    @Test func refusesFloat64InputsAndOutputs() throws {
        let float64 = try Self.bmhk(queries: 5, keys: 7, bias: nil, dtype: .float64)
        let reasons = try CPUForward().notSupportedReasons(float64.inputs)
        #expect(reasons.contains { $0.contains("dtype float64 is not supported") }, "\(reasons)")
        #expect(reasons.contains("a float64 output is not supported"), "\(reasons)")
        for dtype in Self.dtypes {
            var testCase = try Self.bmhk(queries: 5, keys: 7, bias: nil, dtype: dtype)
            testCase.outputDType = .float64
            #expect(try CPUForward().notSupportedReasons(testCase.inputs) == ["a float64 output is not supported"])
            testCase.isPartial = true
            #expect(try CPUForward().notSupportedReasons(testCase.inputs) == ["a float64 output is not supported"])
        }
    }

    @Test func acceptsEverythingElse() throws {
        let op = CPUForward()
        for dtype in Self.dtypes {
            for name in attentionBiasTypes.map({ $0.name }) {
                var testCase = try Self.biasCase(name, dtype: dtype)
                #expect(try op.notSupportedReasons(testCase.inputs).isEmpty, "\(name) \(dtype)")
                testCase.p = 0.3
                testCase.scale = 0.1
                testCase.isPartial = true
                testCase.outputDType = .bfloat16
                testCase.value = try testCase.value.slice(dimension: 3, range: 0..<3)
                #expect(try op.notSupportedReasons(testCase.inputs).isEmpty, "\(name) \(dtype) with every option")
            }
            let gqa = try Self.dropoutCase("GQA", dtype: dtype)
            #expect(try op.notSupportedReasons(gqa.inputs).isEmpty)
            var deterministic = gqa.inputs
            deterministic.requiresDeterminism = true
            #expect(try op.notSupportedReasons(deterministic).isEmpty)
        }
    }

    @Test func bestKernelsAreTheWidestBuildAvailable() throws {
        let inputs = try Self.biasCase("PagedBlockDiagonalCausalLocalPaddedKeysMask", dtype: .float16).inputs
        let best = try CPUForward().forward(inputs, dropout: nil)
        let specific = try CPUForward(kernels: CPUKernels.available[0]).forward(inputs, dropout: nil)
        #expect(try Self.bits(best.output) == Self.bits(specific.output) && Self.bits(best.lse) == Self.bits(specific.lse))
    }

    @Test func avx2KernelsReportWhetherThisCPURunsThem() throws {
        let inputs = try Self.bmhk(queries: 5, keys: 7, bias: nil).inputs
        let reasons = try CPUForward(kernels: .avx2).notSupportedReasons(inputs)
        if CPUKernels.cpuHasAVX2 {
            #expect(reasons.isEmpty)
        } else {
            #expect(reasons == ["this CPU lacks AVX2, FMA or F16C"])
        }
        let avx512Reasons = try CPUForward(kernels: .avx512).notSupportedReasons(inputs)
        #expect(CPUKernels.cpuHasAVX512 ? avx512Reasons.isEmpty : avx512Reasons == ["this CPU lacks AVX-512 (F, VL, BW, DQ)"])
        #expect(try CPUForward(kernels: .generic).notSupportedReasons(inputs).isEmpty)
        #expect(try CPUForward(kernels: .best).notSupportedReasons(inputs).isEmpty)
    }
}

/// Results must not depend on the number of threads (`FMHA_NUM_THREADS`) or on the run: each
/// tile is computed by one thread in a fixed order.
@Suite(.serialized) struct CPUForwardThreadCountTests {
    /// Runs `body` with `FMHA_NUM_THREADS` set to `value`, restoring the previous setting after.
    static func withThreads<Result>(_ value: String, _ body: () throws -> Result) rethrows -> Result {
        let previous = getenv("FMHA_NUM_THREADS").map { String(cString: $0) }
        setenv("FMHA_NUM_THREADS", value, 1)
        defer {
            if let previous { setenv("FMHA_NUM_THREADS", previous, 1) } else { unsetenv("FMHA_NUM_THREADS") }
        }
        return try body()
    }

    @Test(arguments: ["varlen", "paged", "GQA"])
    func bitwiseIdenticalForAnyThreadCount(name: String) throws {
        for dtype in [DType.float32, .bfloat16] {
            let testCase = try CPUForwardTests.dropoutCase(name, dtype: dtype)
            for kernel in CPUForwardTests.kernels {
                let op = CPUForward(kernels: kernel)
                for dropout in [nil, CPUForwardTests.dropout] {
                    var inputs = testCase.inputs
                    inputs.p = dropout?.p ?? 0
                    let runs = try ["1", "2", "3"].map { threads in
                        try Self.withThreads(threads) { try op.forward(inputs, dropout: dropout) }
                    }
                    #expect(Self.withThreads("2") { CPUThreads.count } == 2)
                    let again = try op.forward(inputs, dropout: dropout)
                    for result in runs.dropFirst() + [again] {
                        #expect(try CPUForwardTests.bits(result.output) == CPUForwardTests.bits(runs[0].output),
                                "\(name) \(dtype) \(op.name) dropout \(dropout != nil): output")
                        #expect(try CPUForwardTests.bits(result.lse) == CPUForwardTests.bits(runs[0].lse),
                                "\(name) \(dtype) \(op.name) dropout \(dropout != nil): LSE")
                    }
                }
            }
        }
    }
}
