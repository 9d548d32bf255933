#if canImport(Glibc)
import Glibc
#endif
import FMHATestSupport
import FMHACore
import Testing
@testable import FMHACPU

/// The tiled CPU backward against the float64 reference backward: every bias type, both kernel
/// builds, dtypes, GQA with stride-0 K/V, dropout replay, overlapping key blocks, and identical
/// bits for any thread count.
@Suite(.serialized) struct CPUBackwardTests {
    /// The kernel builds this CPU runs.
    static let kernelBuilds = CPUKernels.available

    /// Gradients of `inputs` from `operator` and from the reference, for a random output gradient.
    static func gradients(_ inputs: Inputs, _ backward: any BackwardOperator, dropout: DropoutState? = nil)
        throws -> (tested: Gradients, reference: Gradients) {
        let forward = try ReferenceForward().forward(inputs, dropout: dropout)
        let gradOutput = try Tensor.randn(forward.output.shape, dtype: inputs.query.dtype, seed: 4242)
        let output = try forward.output.converted(to: inputs.query.dtype)
        return (try backward.backward(inputs, output: output, lse: forward.lse, gradOutput: gradOutput, dropout: dropout),
                try ReferenceBackward().backward(inputs, output: output, lse: forward.lse, gradOutput: gradOutput,
                                                 dropout: dropout))
    }

    /// Every gradient within the backward tolerance of its dtype, with equal shapes and strides.
    static func expectClose(_ tested: Gradients, _ reference: Gradients, _ what: String,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
        let pairs = [("dq", tested.dq, reference.dq), ("dk", tested.dk, reference.dk), ("dv", tested.dv, reference.dv)]
            + (reference.dBias.map { [("dBias", tested.dBias ?? $0, $0)] } ?? [])
        #expect((tested.dBias == nil) == (reference.dBias == nil), "\(what): dBias presence", sourceLocation: sourceLocation)
        for (name, value, expected) in pairs {
            #expect(value.shape == expected.shape && value.strides == expected.strides && value.dtype == expected.dtype,
                    "\(what) \(name): \(value) vs \(expected)", sourceLocation: sourceLocation)
            let ratio = Tolerance.backward(value.dtype).worstRatio(try value.toDoubleArray(), try expected.toDoubleArray())
            #expect(ratio <= 1, "\(what) \(name): worst error \(ratio)× the tolerance", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: attentionBiasTypes.map { $0.name }, kernelBuilds)
    func everyBiasTypeMatchesTheReference(biasName: String, kernels: CPUKernels) throws {
        let problem = try ReferenceForwardTests.problem(forBiasNamed: biasName)
        let (tested, reference) = try Self.gradients(problem.inputs, CPUBackward(kernels: kernels))
        try Self.expectClose(tested, reference, "\(biasName) \(kernels)")
    }

    /// Two heads take the one-pass backward (one item per K/V head) on two threads, three heads
    /// the two-pass one; bfloat16 with even head dimensions takes the BF16 dot products where the
    /// CPU has them, and an odd one the float32 products.
    @Test(arguments: [DType.float16, .bfloat16], kernelBuilds)
    func halfPrecisionInputs(dtype: DType, kernels: CPUKernels) throws {
        let bias = try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [7, 0, 33], kvSeqlen: [9, 4, 40])
        for (heads, headDimension) in [(2, 24), (3, 24), (2, 7)] {
            let inputs = Inputs(query: try Tensor.randn([1, 40, heads, headDimension], dtype: dtype, seed: 1),
                                key: try Tensor.randn([1, 53, heads, headDimension], dtype: dtype, seed: 2),
                                value: try Tensor.randn([1, 53, heads, 16], dtype: dtype, seed: 3), bias: bias, scale: 0.2)
            let (tested, reference) = try Self.gradients(inputs, CPUBackward(kernels: kernels))
            try Self.expectClose(tested, reference, "\(dtype) \(kernels) H=\(heads) K=\(headDimension)")
        }
    }

    /// Key ranges longer than one group of key tiles (FMHA_BACKWARD_KEY_GROUP × 64 keys): several
    /// groups, a partial last group and tile, and masks under which a query tile sees only some
    /// tiles of a group; float32, float16 and bfloat16 (BF16 products where the CPU has them), two
    /// heads (one pass) and three (two passes).
    @Test(arguments: kernelBuilds)
    func keyRangesLongerThanOneGroup(kernels: CPUKernels) throws {
        let keys = 600, queries = 40
        let masks: [(any AttentionBias)?] = [
            nil,
            try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: 150),
            try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [15, 25], kvSeqstarts: [0, 280, 600],
                                                                       kvSeqlen: [270, 300]),
            try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [15, 25], kvSeqlen: [290, 250],
                                                             blockTables: [[7, 1, 4, 0, 2, 13, 9, 11], [3, 5, 6, 8, 10, 12, 14, 15]],
                                                             pageSize: 37),
        ]
        for (index, bias) in masks.enumerated() {
            for (dtype, heads) in [(DType.float32, 2), (.float32, 3), (.bfloat16, 2), (.float16, 2)] {
                let inputs = Inputs(query: try Tensor.randn([1, queries, heads, 32], dtype: dtype, seed: 31),
                                    key: try Tensor.randn([1, keys, heads, 32], dtype: dtype, seed: 32),
                                    value: try Tensor.randn([1, keys, heads, 24], dtype: dtype, seed: 33), bias: bias)
                let (tested, reference) = try Self.gradients(inputs, CPUBackward(kernels: kernels))
                try Self.expectClose(tested, reference, "mask \(index) \(dtype) H=\(heads) \(kernels)")
            }
        }
    }

    /// The BF16 dot products round P and dS to bfloat16 for dV, dK and dQ: much closer to the
    /// float64 gradients than bfloat16's backward tolerance asks (which would hide a broken
    /// product), so they are held to a tolerance a few bfloat16 roundings wide.
    @Test(.enabled(if: CPUKernels.cpuHasAVX512BF16, "no AVX-512 BF16 on this CPU"), arguments: [2, 3])
    func bfloat16DotProductsStayCloseToTheReference(heads: Int) throws {
        let bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [33, 40], kvSeqlen: [70, 40])
        let inputs = Inputs(query: try Tensor.randn([1, 73, heads, 32], dtype: .bfloat16, seed: 21),
                            key: try Tensor.randn([1, 110, heads, 32], dtype: .bfloat16, seed: 22),
                            value: try Tensor.randn([1, 110, heads, 16], dtype: .bfloat16, seed: 23), bias: bias)
        let (tested, reference) = try Self.gradients(inputs, CPUBackward(kernels: .avx512))
        let tolerance = Tolerance(absolute: 0.03, relative: 0.02)
        for (name, value, expected) in [("dq", tested.dq, reference.dq), ("dk", tested.dk, reference.dk), ("dv", tested.dv, reference.dv)] {
            let ratio = tolerance.worstRatio(try value.toDoubleArray(), try expected.toDoubleArray())
            #expect(ratio <= 1, "\(name): worst error \(ratio)× the tolerance")
        }
    }

    @Test(arguments: kernelBuilds)
    func groupedQueryKeysGetSummedGradients(kernels: CPUKernels) throws {
        // BMGHK: 2 groups of 4 query heads over one K/V head each; K/V expanded with stride 0.
        let key = try Tensor.randn([1, 70, 2, 1, 32], seed: 5).expanded(to: [1, 70, 2, 4, 32])
        let value = try Tensor.randn([1, 70, 2, 1, 8], seed: 6).expanded(to: [1, 70, 2, 4, 8])
        let inputs = Inputs(query: try Tensor.randn([1, 65, 2, 4, 32], seed: 7), key: key, value: value,
                            bias: LowerTriangularFromBottomRightMask())
        let (tested, reference) = try Self.gradients(inputs, CPUBackward(kernels: kernels))
        #expect(tested.dk.strides[3] == 0 && tested.dv.strides[3] == 0)
        try Self.expectClose(tested, reference, "GQA \(kernels)")
    }

    @Test(arguments: kernelBuilds)
    func dropoutReplaysTheForwardMask(kernels: CPUKernels) throws {
        let bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [33, 40], kvSeqlen: [70, 40])
        let inputs = Inputs(query: try Tensor.randn([1, 73, 3, 16], seed: 8), key: try Tensor.randn([1, 110, 3, 16], seed: 9),
                            value: try Tensor.randn([1, 110, 3, 16], seed: 10), bias: bias, p: 0.3)
        let (tested, reference) = try Self.gradients(inputs, CPUBackward(kernels: kernels),
                                                     dropout: DropoutState(p: 0.3, seed: 77, offset: 2))
        try Self.expectClose(tested, reference, "dropout \(kernels)")
    }

    @Test func overlappingGappyBlocksAndSharedPages() throws {
        // Two sequences reading the same keys: their dK/dV contributions add up in those rows.
        let gappy = try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
            qSeqlen: [5, 7], kvSeqstarts: [10, 0, 90], kvSeqlen: [80, 70])
        let gappyInputs = Inputs(query: try Tensor.randn([1, 12, 2, 16], seed: 11), key: try Tensor.randn([1, 90, 2, 16], seed: 12),
                                 value: try Tensor.randn([1, 90, 2, 16], seed: 13), bias: gappy)
        let (tested, reference) = try Self.gradients(gappyInputs, CPUBackward())
        try Self.expectClose(tested, reference, "overlapping gappy")
        // A prefix page shared by both sequences.
        let paged = try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
            qSeqlen: [3, 4], kvSeqlen: [20, 30], blockTables: [[2, 0], [2, 1]], pageSize: 16)
        let pagedInputs = Inputs(query: try Tensor.randn([1, 7, 2, 16], seed: 14), key: try Tensor.randn([1, 48, 2, 16], seed: 15),
                                 value: try Tensor.randn([1, 48, 2, 16], seed: 16), bias: paged)
        let (pagedTested, pagedReference) = try Self.gradients(pagedInputs, CPUBackward())
        try Self.expectClose(pagedTested, pagedReference, "shared pages")
    }

    /// Every gradient's bits (signs of zeros included) with `FMHA_NUM_THREADS` 1 to 4: the thread
    /// count also switches between the one- and two-pass schemes, which must agree bit for bit.
    @Test(arguments: [DType.float32, .bfloat16])
    func sameBitsForAnyThreadCount(dtype: DType) throws {
        let plain = Inputs(query: try Tensor.randn([2, 100, 3, 24], dtype: dtype, seed: 17),
                           key: try Tensor.randn([2, 130, 3, 24], dtype: dtype, seed: 18),
                           value: try Tensor.randn([2, 130, 3, 24], dtype: dtype, seed: 19), bias: LowerTriangularFromBottomRightMask())
        // Causal with a tensor bias, B = 1, H = 3: masked bias-gradient entries must be +0 however the work is split.
        let biased = Inputs(query: try Tensor.randn([1, 64, 3, 32], dtype: dtype, seed: 20),
                            key: try Tensor.randn([1, 64, 3, 32], dtype: dtype, seed: 21),
                            value: try Tensor.randn([1, 64, 3, 32], dtype: dtype, seed: 22),
                            bias: LowerTriangularMaskWithTensorBias(try Tensor.randn([1, 3, 64, 64], dtype: dtype, seed: 23)))
        let previous = getenv("FMHA_NUM_THREADS").map { String(cString: $0) }
        defer {
            if let previous { setenv("FMHA_NUM_THREADS", previous, 1) } else { unsetenv("FMHA_NUM_THREADS") }
        }
        for (name, inputs) in [("bottom-right causal", plain), ("causal + tensor bias", biased)] {
            var results = [[UInt64]]()
            for threads in ["1", "2", "3", "4"] {
                setenv("FMHA_NUM_THREADS", threads, 1)
                let (tested, _) = try Self.gradients(inputs, CPUBackward())
                let values = try [tested.dq, tested.dk, tested.dv].flatMap { try $0.toDoubleArray() }
                    + (try tested.dBias?.toDoubleArray() ?? [])
                results.append(values.map(\.bitPattern))
            }
            #expect(results.allSatisfy { $0 == results[0] }, "\(name), \(dtype)")
        }
    }

    @Test func smallCallsStayOnOneThreadUnlessThreadsAreRequested() {
        let small = CPUThreads.minimumParallelFLOPs / 2, large = CPUThreads.minimumParallelFLOPs * 2
        #expect(CPUThreads.threads(forFLOPs: small, requested: nil, available: 8) == 1)
        #expect(CPUThreads.threads(forFLOPs: large, requested: nil, available: 8) == 8)
        #expect(CPUThreads.threads(forFLOPs: small, requested: 3, available: 8) == 3)
    }

    @Test func refusesFloat64() throws {
        let inputs = Inputs(query: try Tensor.randn([1, 2, 1, 8], dtype: .float64, seed: 1),
                            key: try Tensor.randn([1, 2, 1, 8], dtype: .float64, seed: 2),
                            value: try Tensor.randn([1, 2, 1, 8], dtype: .float64, seed: 3))
        #expect(try CPUBackward().notSupportedReasons(inputs).contains { $0.contains("float64") })
    }
}
