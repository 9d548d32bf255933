import FMHATestSupport
import FMHA
import Testing

/// The CUDA reference forward against the CPU reference on the same inputs (moved to the GPU):
/// masks of every family, GQA, a tensor bias, dropout with the same Philox mask, partial output.
/// Enabled only where a CUDA device is present.
@Suite(.enabled(if: cudaDeviceAvailable, "no CUDA device"))
struct CUDAReferenceTests {
    /// Output and LSE of the CUDA reference within the forward tolerance of the CPU reference.
    func check(_ inputs: Inputs, dropout: DropoutState? = nil, _ what: String) throws {
        let device = try inputs.to(.cuda(0))
        let cuda = try CUDAReferenceForward().forward(device, dropout: dropout)
        let cpu = try ReferenceForward().forward(inputs, dropout: dropout)
        #expect(cuda.output.device == .cuda(0) && cuda.output.shape == cpu.output.shape && cuda.output.dtype == cpu.output.dtype)
        let outputRatio = Tolerance.forward(cpu.output.dtype).worstRatio(try cuda.output.toDoubleArray(), try cpu.output.toDoubleArray())
        let lseRatio = Tolerance(absolute: 2e-4, relative: 1e-5).worstRatio(try cuda.lse.toDoubleArray(), try cpu.lse.toDoubleArray())
        #expect(outputRatio <= 1 && lseRatio <= 1, "\(what): output \(outputRatio), LSE \(lseRatio)")
    }

    @Test(arguments: [DType.float32, .float16, .bfloat16])
    func masksOfEveryFamily(dtype: DType) throws {
        let q = try randn([1, 9, 2, 24], 1, dtype), k = try randn([1, 24, 2, 24], 2, dtype)
        let v = try randn([1, 24, 2, 16], 3, dtype)
        let biases: [any AttentionBias] = [
            LowerTriangularFromBottomRightMask(),
            try LocalAttentionFromBottomRightMask(windowLeft: 3, windowRight: 1),
            try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [4, 0, 5], kvSeqlen: [10, 3, 11]),
            try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [5, 4], kvPadding: 12, kvSeqlen: [9, 0]),
            try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: [5, 4], kvSeqlen: [9, 12],
                                                                        blockTables: [[5, 0, 2], [1, 4, 3]], pageSize: 4,
                                                                        windowSize: 5),
            try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [5, 4], kvSeqstarts: [3, 0, 24],
                                                                       kvSeqlen: [20, 7]),
            try randn([1, 2, 9, 24], 4, dtype),
        ]
        for bias in biases { try check(Inputs(query: q, key: k, value: v, bias: bias, scale: 0.3), "\(type(of: bias).name) \(dtype)") }
    }

    @Test func groupedQueriesDropoutAndPartialOutput() throws {
        let key = try randn([2, 70, 2, 1, 32], 5).expanded(to: [2, 70, 2, 4, 32])
        let value = try randn([2, 70, 2, 1, 8], 6).expanded(to: [2, 70, 2, 4, 8])
        let query = try randn([2, 33, 2, 4, 32], 7)
        try check(Inputs(query: query, key: key, value: value, bias: LowerTriangularMask()), "GQA")
        try check(Inputs(query: query, key: key, value: value, p: 0.3), dropout: DropoutState(p: 0.3, seed: 9, offset: 1), "dropout")
        try check(Inputs(query: try query.converted(to: .bfloat16), key: try key.converted(to: .bfloat16),
                         value: try value.converted(to: .bfloat16), isPartial: true), "partial")
    }

    @Test func adversarialShapes() throws {
        // B·H > 65535 rows of one query each, against a single key and value (Mkv = 1).
        let q = try randn([3, 1, 30_000, 8], 8), k = try randn([3, 1, 30_000, 8], 9)
        let v = try randn([3, 1, 30_000, 4], 10)
        try check(Inputs(query: q, key: k, value: v), "B·H = 90000, Mkv = 1")
        // Zero-length sequences first, in the middle and last of a varlen batch.
        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [0, 3, 0, 4, 0], kvPadding: 6,
                                                                               kvSeqlen: [0, 5, 2, 6, 0])
        try check(Inputs(query: try randn([1, 7, 2, 16], 11), key: try randn([1, 30, 2, 16], 12),
                         value: try randn([1, 30, 2, 16], 13), bias: bias), "empty sequences")
    }

    /// Gradients of the CUDA reference backward within the backward tolerance of the CPU
    /// reference's, for the same forward output and output gradient.
    func checkBackward(_ inputs: Inputs, dropout: DropoutState? = nil, _ what: String) throws {
        let forward = try ReferenceForward().forward(inputs, dropout: dropout)
        let output = try forward.output.converted(to: inputs.query.dtype)
        let gradOutput = try Tensor.randn(output.shape, dtype: inputs.query.dtype, seed: 77)
        let cpu = try ReferenceBackward().backward(inputs, output: output, lse: forward.lse, gradOutput: gradOutput, dropout: dropout)
        let device = try inputs.to(.cuda(0))
        let cuda = try CUDAReferenceBackward().backward(device, output: try output.to(.cuda(0)), lse: try forward.lse.to(.cuda(0)),
                                                        gradOutput: try gradOutput.to(.cuda(0)), dropout: dropout)
        #expect((cuda.dBias == nil) == (cpu.dBias == nil), "\(what): dBias presence")
        let pairs = [("dq", cuda.dq, cpu.dq), ("dk", cuda.dk, cpu.dk), ("dv", cuda.dv, cpu.dv)]
            + (cpu.dBias.flatMap { expected in cuda.dBias.map { [("dBias", $0, expected)] } } ?? [])
        for (name, value, expected) in pairs {
            #expect(value.device == .cuda(0) && value.shape == expected.shape && value.strides == expected.strides, "\(what) \(name)")
            let ratio = Tolerance.backward(expected.dtype).worstRatio(try value.toDoubleArray(), try expected.toDoubleArray())
            #expect(ratio <= 1, "\(what) \(name): \(ratio)× the tolerance")
        }
    }

    @Test func backwardMatchesTheCPUReference() throws {
        let q = try randn([1, 9, 2, 24], 31), k = try randn([1, 24, 2, 24], 32), v = try randn([1, 24, 2, 16], 33)
        let biases: [any AttentionBias] = [
            LowerTriangularFromBottomRightMask(),
            try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: [4, 0, 5], kvSeqlen: [10, 3, 11]),
            try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: [5, 4], kvSeqlen: [9, 12],
                                                                        blockTables: [[5, 0, 2], [1, 4, 3]], pageSize: 4,
                                                                        windowSize: 5),
            // Overlapping key blocks: their dK/dV add up in the shared rows.
            try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: [5, 4], kvSeqstarts: [3, 0, 24],
                                                                       kvSeqlen: [20, 7]),
            try randn([1, 1, 9, 24], 34).expanded(to: [1, 2, 9, 24]),
        ]
        for bias in biases { try checkBackward(Inputs(query: q, key: k, value: v, bias: bias, scale: 0.3), "\(type(of: bias).name)") }
        let key = try randn([1, 40, 2, 1, 32], 35).expanded(to: [1, 40, 2, 4, 32])
        let value = try randn([1, 40, 2, 1, 8], 36).expanded(to: [1, 40, 2, 4, 8])
        let query = try randn([1, 33, 2, 4, 32], 37)
        try checkBackward(Inputs(query: query, key: key, value: value, bias: LowerTriangularMask()), "GQA")
        try checkBackward(Inputs(query: query, key: key, value: value, p: 0.3), dropout: DropoutState(p: 0.3, seed: 5), "dropout")
        try checkBackward(Inputs(query: try query.converted(to: .bfloat16), key: try key.converted(to: .bfloat16),
                                 value: try value.converted(to: .bfloat16)), "bfloat16")
    }

    /// Keys and values of more than 2³¹ elements each (float16, 4.3 GB apiece): the queries see only
    /// the last keys (a bottom-right window), which must be addressed with 64-bit offsets; compared
    /// with the CPU reference on those last keys alone.
    @Test func tensorsBeyondTwoToTheThirtyFirstElements() throws {
        let keys = (1 << 21) + 65, width = 1024, window = 64
        func bigTensor(seed: UInt64) throws -> Tensor {
            let host = try Tensor.zeros([1, keys, 1, width], dtype: .float16)
            let tail = try Tensor.randn([1, 65, 1, width], dtype: .float16, seed: seed).toArray()
            try host.withUnsafeHostAddress { base in
                let values = base.assumingMemoryBound(to: Float16.self) + (keys - 65) * width
                for index in tail.indices { values[index] = Float16(tail[index]) }
            }
            return host
        }
        let key = try bigTensor(seed: 41), value = try bigTensor(seed: 42)
        #expect(key.count > 1 << 31)
        let query = try Tensor.randn([1, 2, 1, width], dtype: .float16, seed: 43)
        let mask = try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: window)
        let cuda = try CUDAReferenceForward().forward(
            Inputs(query: try query.to(.cuda(0)), key: try key.to(.cuda(0)), value: try value.to(.cuda(0)), bias: mask),
            dropout: nil)
        let tail = keys - 65
        let cpu = try ReferenceForward().forward(
            Inputs(query: query, key: try key.slice(dimension: 1, range: tail..<keys), value: try value.slice(dimension: 1, range: tail..<keys),
                   bias: mask), dropout: nil)
        #expect(Tolerance.forward(.float16).worstRatio(try cuda.output.toDoubleArray(), try cpu.output.toDoubleArray()) <= 1)
        #expect(Tolerance(absolute: 2e-4, relative: 1e-5).worstRatio(try cuda.lse.toDoubleArray(), try cpu.lse.toDoubleArray()) <= 1)
    }

    @Test func dispatchPicksItForDeviceTensors() throws {
        let q = try Tensor.randn([1, 5, 1, 8], device: .cuda(0), seed: 1)
        #expect(try Operators.forwardOperator(for: Inputs(query: q, key: q, value: q).validate()).name == "cuda-reference")
        let output = try memoryEfficientAttention(q, q, q)
        #expect(output.device == .cuda(0))
    }
}
