import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

/// `CPUForwardTests` of the call's options: explicit output dtypes, partial mode and dropout.
extension CPUForwardTests {
    // MARK: - Dtypes

    @Test(arguments: [(DType.float32, DType.float16), (.float32, .bfloat16), (.float16, .float32), (.bfloat16, .float32),
                      (.float16, .bfloat16), (.bfloat16, .float16)])
    func explicitOutputDType(input: DType, output: DType) throws {
        var testCase = try Self.biasCase("BlockDiagonalCausalWithOffsetPaddedKeysMask", dtype: input)
        testCase.outputDType = output
        let (reference, _) = try Self.compare(testCase, poisonHiddenRows: true, "\(input) → \(output)")
        #expect(reference.output.dtype == output)
    }

    // MARK: - Partial mode

    @Test(arguments: [DType.float32, .float16, .bfloat16])
    func partialModeDefaultsToFloat32(dtype: DType) throws {
        var testCase = try Self.biasCase("BlockDiagonalCausalWithOffsetPaddedKeysMask", dtype: dtype)
        testCase.isPartial = true
        #expect((try testCase.inputs.validate().outputDType) == .float32)
        let (reference, results) = try Self.compare(testCase, poisonHiddenRows: true, "partial \(dtype)")
        // Block 2 (query 33) has no keys; the first 32 queries of block 4 (34..<66) see none either.
        for result in [reference] + results {
            #expect(result.output.dtype == .float32)
            let lse = try result.lse.toDoubleArray()
            #expect(lse[33] == -.infinity && lse[106 + 33] == -.infinity && lse[34] == -.infinity && lse[65] == -.infinity)
            #expect(lse[0].isFinite && lse[32].isFinite && lse[66].isFinite && lse[106 + 66].isFinite)
        }
    }

    @Test(arguments: [(DType.float16, DType.float16), (.float16, .bfloat16), (.float32, .float16), (.float32, .bfloat16),
                      (.bfloat16, .bfloat16)])
    func partialModeWithExplicitOutputDType(input: DType, output: DType) throws {
        var testCase = try Self.biasCase("PagedBlockDiagonalCausalWithOffsetGappyKeysMask", dtype: input)
        testCase.isPartial = true
        testCase.outputDType = output
        let (_, results) = try Self.compare(testCase, poisonHiddenRows: true, "partial \(input) → \(output)")
        for result in results { #expect(result.output.dtype == output) }
    }

    @Test func partialModeWithoutKeys() throws {
        var testCase = try Self.bmhk(batch: 2, queries: 33, keys: 0, bias: nil, dtype: .float16)
        testCase.isPartial = true
        let (_, results) = try Self.compare(testCase, "partial Mkv 0")
        for result in results {
            #expect(result.output.dtype == .float32)
            #expect(try result.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
        }
    }

    // MARK: - Dropout

    static let dropout = DropoutState(p: 0.3, seed: 0x0123_4567_89AB_CDEF, offset: 5)

    /// Dropout cases: variable-length, paged, and grouped-query BMGHK with stride-0 K/V.
    static func dropoutCase(_ name: String, dtype: DType) throws -> Case {
        var testCase: Case
        switch name {
        case "varlen":
            testCase = try biasCase("BlockDiagonalCausalWithOffsetPaddedKeysMask", dtype: dtype)
        case "paged":
            testCase = try biasCase("PagedBlockDiagonalCausalWithOffsetPaddedKeysMask", dtype: dtype)
        default:
            testCase = Case(query: try randn([2, 65, 2, 3, 16], 50, dtype),
                            key: try randn([2, 130, 2, 1, 16], 51, dtype).expanded(to: [2, 130, 2, 3, 16]),
                            value: try randn([2, 130, 2, 1, 8], 52, dtype).expanded(to: [2, 130, 2, 3, 8]),
                            bias: LowerTriangularFromBottomRightMask())
        }
        testCase.p = dropout.p
        return testCase
    }

    @Test(arguments: ["varlen", "paged", "GQA"])
    func dropoutMatchesTheReferenceMask(name: String) throws {
        for dtype in Self.dtypes {
            let testCase = try Self.dropoutCase(name, dtype: dtype)
            let (_, results) = try Self.compare(testCase, dropout: Self.dropout, poisonHiddenRows: name != "GQA",
                                                "dropout \(name) \(dtype)")
            // Dropout changed the result, and the same state gives the same bits again.
            var plain = testCase
            plain.p = 0
            for (kernel, result) in zip(Self.kernels, results) {
                let withoutDropout = try CPUForward(kernels: kernel).forward(plain.inputs, dropout: nil).output.toDoubleArray()
                #expect(try result.output.toDoubleArray() != withoutDropout)
                let again = try CPUForward(kernels: kernel).forward(testCase.inputs, dropout: Self.dropout)
                #expect(try Self.bits(again.output) == Self.bits(result.output), "dropout \(name) \(dtype) run to run")
            }
            // A different offset gives a different mask.
            let other = DropoutState(p: Self.dropout.p, seed: Self.dropout.seed, offset: Self.dropout.offset + 1)
            let shifted = try CPUForward(kernels: .generic).forward(testCase.inputs, dropout: other)
            #expect(try Self.bits(shifted.output) != Self.bits(results[0].output))
        }
    }

    @Test(arguments: [1e-6, 0.5, 0.95])
    func dropoutProbabilities(p: Double) throws {
        var testCase = try Self.dropoutCase("GQA", dtype: .float32)
        testCase.p = p
        try Self.compare(testCase, dropout: DropoutState(p: p, seed: 99, offset: 0), "dropout p = \(p)")
    }

    /// The stored bits of a tensor's elements, for bitwise comparisons.
    static func bits(_ tensor: Tensor) throws -> [UInt64] {
        try tensor.toDoubleArray().map(\.bitPattern)
    }
}
