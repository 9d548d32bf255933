import FMHATestSupport
import FMHA
import Testing

/// The public entry points: they agree with the operator they dispatch to, dropout is seeded and
/// replayable, partial attention merges back into full attention, and dispatch explains, uses or
/// refuses operators as the design says.
@Suite struct EntryPointTests {
    /// `|a − e| ≤ atol + rtol·|e|` elementwise, infinities equal, no NaN.
    static func expectClose(_ actual: Tensor, _ expected: Tensor, atol: Double, rtol: Double, _ what: String,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(actual.shape == expected.shape, "\(what): shape \(actual.shape) vs \(expected.shape)",
                sourceLocation: sourceLocation)
        let a = try actual.toDoubleArray(), e = try expected.toDoubleArray()
        guard a.count == e.count else { return }
        var failures = [String]()
        for index in a.indices {
            let ok = a[index].isNaN || e[index].isNaN ? false
                : a[index].isInfinite || e[index].isInfinite ? a[index] == e[index]
                : abs(a[index] - e[index]) <= atol + rtol * abs(e[index])
            if !ok { failures.append("[\(index)] \(a[index]) vs \(e[index])") }
        }
        #expect(failures.isEmpty, "\(what): \(failures.count) of \(a.count) differ: \(failures.prefix(4))",
                sourceLocation: sourceLocation)
    }

    // MARK: - Entry points against the operator

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let query: Tensor, key: Tensor, value: Tensor
        let bias: (any AttentionBias)?
        var testDescription: String { name }
    }

    static let caseNames = ["BMK no bias", "BMHK causal f16", "BMGHK GQA tensor bias", "varlen bf16"]

    static func makeCases() throws -> [Case] {
        func t(_ shape: [Int], _ seed: UInt64, _ dtype: DType = .float32) throws -> Tensor { try randn(shape, seed, dtype) }
        return [
            Case(name: "BMK no bias", query: try t([2, 5, 8], 1), key: try t([2, 7, 8], 2), value: try t([2, 7, 4], 3), bias: nil),
            Case(name: "BMHK causal f16", query: try t([1, 6, 2, 8], 4, .float16), key: try t([1, 6, 2, 8], 5, .float16),
                 value: try t([1, 6, 2, 8], 6, .float16), bias: LowerTriangularMask()),
            Case(name: "BMGHK GQA tensor bias", query: try t([1, 4, 2, 2, 4], 7),
                 key: try t([1, 5, 2, 1, 4], 8).expanded(to: [1, 5, 2, 2, 4]),
                 value: try t([1, 5, 2, 1, 4], 9).expanded(to: [1, 5, 2, 2, 4]), bias: try t([1, 2, 2, 4, 5], 10)),
            Case(name: "varlen bf16", query: try t([1, 5, 2, 8], 11, .bfloat16), key: try t([1, 8, 2, 8], 12, .bfloat16),
                 value: try t([1, 8, 2, 8], 13, .bfloat16),
                 bias: try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 3], kvPadding: 4, kvSeqlen: [4, 0])),
        ]
    }

    /// The operator dispatch must choose on `device`: on the CPU the first of `Operators.forward`
    /// (the fast CPU operator takes every case); on a GPU the first CUDA operator that takes them.
    static func expectedOperator(_ problem: AttentionProblem, on device: Device) -> String? {
        guard device != .cpu else { return Operators.forward[0].name }
        return Operators.forward.first {
            $0.capabilities.devices == [device.kind] && $0.notSupportedReasons(problem).isEmpty
        }?.name
    }

    /// On every device here, with the case's tensors moved there.
    @Test(arguments: testDevices, caseNames)
    func entryPointEqualsTheOperatorItDispatchesTo(_ device: Device, _ name: String) throws {
        let testCase = try #require(try Self.makeCases().first { $0.name == name })
        let inputs = try Inputs(query: testCase.query, key: testCase.key, value: testCase.value, bias: testCase.bias).to(device)
        let (query, key, value, bias) = (inputs.query, inputs.key, inputs.value, inputs.bias)
        let chosen = try Operators.forwardOperator(for: inputs.validate())
        #expect(chosen.name == Self.expectedOperator(try inputs.validate(), on: device))
        let direct = try chosen.forward(inputs, dropout: nil)
        let output = try memoryEfficientAttention(query, key, value, bias: bias)
        #expect(output.device == device)
        #expect(output.shape == direct.output.shape && output.dtype == direct.output.dtype)
        #expect(try output.toDoubleArray() == direct.output.toDoubleArray())
        let forwardOnly = try memoryEfficientAttentionForward(query, key, value, bias: bias)
        #expect(try forwardOnly.toDoubleArray() == direct.output.toDoubleArray())
        let withLSE = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: bias)
        #expect(withLSE.operatorName == chosen.name && withLSE.dropout == nil)
        #expect(try withLSE.lse.toDoubleArray() == direct.lse.toDoubleArray())
        #expect(withLSE.lse.dtype == .float32)
        // The same operator passed explicitly gives the same bits.
        let explicit = try memoryEfficientAttention(query, key, value, bias: bias, op: chosen)
        #expect(try explicit.toDoubleArray() == output.toDoubleArray())
    }

    @Test func backwardEntryPointReturnsExpandedSummedGradients() throws {
        let query = try randn([1, 4, 2, 3, 4], 20, .float64)
        let key = try randn([1, 5, 2, 1, 4], 21, .float64).expanded(to: [1, 5, 2, 3, 4])
        let value = try randn([1, 5, 2, 1, 4], 22, .float64).expanded(to: [1, 5, 2, 3, 4])
        let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: LowerTriangularMask())
        let gradOutput = try randn(forward.output.shape, 23, .float64)
        let gradients = try memoryEfficientAttentionBackward(gradOutput, output: forward.output, lse: forward.lse,
                                                             query: query, key: key, value: value, bias: LowerTriangularMask())
        #expect(gradients.dk.shape == key.shape && gradients.dv.shape == value.shape && gradients.dq.shape == query.shape)
        // Every head of a group holds the group's (summed) gradient.
        let dk = try gradients.dk.toDoubleArray()
        for base in stride(from: 0, to: dk.count, by: 12) {
            #expect(dk[base..<base + 4] == dk[base + 4..<base + 8] && dk[base..<base + 4] == dk[base + 8..<base + 12])
        }
        let backwardInputs = Inputs(query: query, key: key, value: value, bias: LowerTriangularMask())
        let direct = try Operators.backwardOperator(for: backwardInputs.validate()).backward(
            backwardInputs, output: forward.output,
            lse: forward.lse, gradOutput: gradOutput, dropout: nil)
        #expect(try gradients.dq.toDoubleArray() == direct.dq.toDoubleArray())
        #expect(try gradients.dv.toDoubleArray() == direct.dv.toDoubleArray())
    }

    // MARK: - Dropout seeds

    @Test func seedMakesDropoutReproducible() throws {
        let query = try randn([2, 6, 2, 8], 30), key = try randn([2, 9, 2, 8], 31), value = try randn([2, 9, 2, 8], 32)
        let first = try memoryEfficientAttention(query, key, value, p: 0.3, seed: 42).toDoubleArray()
        let again = try memoryEfficientAttention(query, key, value, p: 0.3, seed: 42).toDoubleArray()
        let other = try memoryEfficientAttention(query, key, value, p: 0.3, seed: 43).toDoubleArray()
        let none = try memoryEfficientAttention(query, key, value).toDoubleArray()
        #expect(first == again)
        #expect(first != other)
        #expect(first != none)
        // Without a seed, two calls draw different masks.
        let random1 = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, p: 0.3)
        let random2 = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, p: 0.3)
        #expect(random1.dropout != nil && random1.dropout?.seed != random2.dropout?.seed)
        #expect(try random1.output.toDoubleArray() != random2.output.toDoubleArray())
        // The state that comes back replays the call, through the operator or the entry point.
        let result = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, p: 0.3, seed: 42)
        #expect(result.dropout == DropoutState(p: 0.3, seed: 42))
        #expect(try result.output.toDoubleArray() == first)
        let inputs = Inputs(query: query, key: key, value: value, p: 0.3)
        #expect(result.dropout != nil)
        let replayed = try Operators.forward[0].forward(inputs, dropout: result.dropout)
        #expect(try replayed.output.toDoubleArray() == first)
        // The problem carries the inputs' dropout: an operator handed it drops out, with no second `p` to forget.
        let seeded = try Inputs(query: query, key: key, value: value, p: 0.3, seed: 42).validate()
        #expect(seeded.dropout == DropoutState(p: 0.3, seed: 42))
        #expect(try Operators.forward[0].forward(seeded).output.toDoubleArray() == first)
        #expect(try memoryEfficientAttention(query, key, value, p: 0.3, seed: random1.dropout!.seed).toDoubleArray()
                == random1.output.toDoubleArray())
    }

    @Test func backwardReplaysTheForwardsDropout() throws {
        let query = try randn([1, 5, 2, 4], 33, .float64), key = try randn([1, 7, 2, 4], 34, .float64)
        let value = try randn([1, 7, 2, 4], 35, .float64)
        let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, p: 0.4, seed: 7)
        let gradOutput = try randn([1, 5, 2, 4], 36, .float64)
        let replayed = try memoryEfficientAttentionBackward(gradOutput, output: forward.output, lse: forward.lse, query: query,
                                                            key: key, value: value, dropout: forward.dropout)
        let direct = try Operators.backwardOperator(for: Inputs(query: query, key: key, value: value, p: 0.4).validate()).backward(
                                                        Inputs(query: query, key: key, value: value, p: 0.4),
                                                        output: forward.output, lse: forward.lse, gradOutput: gradOutput,
                                                        dropout: forward.dropout)
        #expect(try replayed.dv.toDoubleArray() == direct.dv.toDoubleArray())
        #expect(try replayed.dq.toDoubleArray() == direct.dq.toDoubleArray())
        let withoutDropout = try memoryEfficientAttentionBackward(gradOutput, output: forward.output, lse: forward.lse,
                                                                  query: query, key: key, value: value)
        #expect(try withoutDropout.dv.toDoubleArray() != replayed.dv.toDoubleArray())
    }

    // MARK: - Partial attention and merging

    struct MergeCase: CustomTestStringConvertible, Sendable {
        let name: String
        let query: Tensor, key: Tensor, value: Tensor
        /// The bias over all keys.
        let fullBias: (any AttentionBias)?
        /// Key ranges of the chunks and each chunk's bias.
        let chunks: [(range: Range<Int>, bias: (any AttentionBias)?)]
        var testDescription: String { name }
    }

    /// Chunks whose bias is the full tensor bias (or materialized mask) sliced along the keys.
    static func slicedChunks(_ dense: Tensor, _ ranges: [Range<Int>]) throws -> [(range: Range<Int>, bias: (any AttentionBias)?)] {
        try ranges.map { ($0, try dense.slice(dimension: -1, range: $0)) }
    }

    static let mergeCaseNames = ["causal, 3 chunks", "rows masked everywhere, empty chunk", "BMGHK tensor bias",
                                 "BMK float16, no bias", "decoding chunks with masks"]

    static func makeMergeCases() throws -> [MergeCase] {
        func t(_ shape: [Int], _ seed: UInt64, _ dtype: DType = .float32) throws -> Tensor { try randn(shape, seed, dtype) }
        // Causal over 6 queries and 10 keys: chunk 7..<10 is fully masked for every query, chunk
        // 3..<7 for queries 0–2.
        let causal = try LowerTriangularMask().materialize(shape: [2, 2, 6, 10])
        // Bottom-right causal with Mq > Mkv: queries 0 and 1 see no key at all; one empty chunk.
        let bottomRight = try LowerTriangularFromBottomRightMask().materialize(shape: [1, 2, 6, 4])
        let gqaBias = try t([1, 2, 3, 5, 9], 40)
        return [
            MergeCase(name: "causal, 3 chunks", query: try t([2, 6, 2, 8], 41), key: try t([2, 10, 2, 8], 42), value: try t([2, 10, 2, 4], 43),
                      fullBias: LowerTriangularMask(), chunks: try slicedChunks(causal, [0..<3, 3..<7, 7..<10])),
            MergeCase(name: "rows masked everywhere, empty chunk", query: try t([1, 6, 2, 8], 44), key: try t([1, 4, 2, 8], 45),
                      value: try t([1, 4, 2, 8], 46), fullBias: LowerTriangularFromBottomRightMask(),
                      chunks: try slicedChunks(bottomRight, [0..<2, 2..<2, 2..<4])),
            MergeCase(name: "BMGHK tensor bias", query: try t([1, 5, 2, 3, 4], 47),
                      key: try t([1, 9, 2, 1, 4], 48).expanded(to: [1, 9, 2, 3, 4]),
                      value: try t([1, 9, 2, 1, 4], 49).expanded(to: [1, 9, 2, 3, 4]),
                      fullBias: gqaBias, chunks: try slicedChunks(gqaBias, [0..<4, 4..<9])),
            MergeCase(name: "BMK float16, no bias", query: try t([2, 3, 8], 50, .float16), key: try t([2, 8, 8], 51, .float16),
                      value: try t([2, 8, 8], 52, .float16), fullBias: nil, chunks: [(0..<5, nil), (5..<8, nil)]),
            MergeCase(name: "decoding chunks with masks", query: try t([1, 3, 2, 8], 53), key: try t([1, 10, 2, 8], 54),
                      value: try t([1, 10, 2, 8], 55), fullBias: LowerTriangularFromBottomRightMask(),
                      // Every query sees keys 0..<6; the last chunk is bottom-right causal itself.
                      chunks: [(0..<6, nil), (6..<10, LowerTriangularFromBottomRightMask())]),
        ]
    }

    @Test func caseNamesListEveryCase() throws {
        #expect(try Self.makeCases().map(\.name) == Self.caseNames)
        #expect(try Self.makeMergeCases().map(\.name) == Self.mergeCaseNames)
    }

    @Test(arguments: mergeCaseNames)
    func mergedPartialsEqualFullAttention(_ name: String) throws {
        let testCase = try #require(try Self.makeMergeCases().first { $0.name == name })
        let full = try memoryEfficientAttentionForwardRequiresGrad(testCase.query, testCase.key, testCase.value,
                                                                   bias: testCase.fullBias, outputDType: .float32)
        var outputs = [Tensor](), lses = [Tensor]()
        for chunk in testCase.chunks {
            let partial = try memoryEfficientAttentionPartial(
                testCase.query, try testCase.key.slice(dimension: 1, range: chunk.range),
                try testCase.value.slice(dimension: 1, range: chunk.range), bias: chunk.bias)
            #expect(partial.output.dtype == .float32, "partial output defaults to float32")
            #expect(partial.lse.shape == full.lse.shape)
            outputs.append(partial.output)
            lses.append(partial.lse)
        }
        let merged = try mergeAttentions(outputs, lses: lses)
        #expect(merged.output.dtype == .float32)
        try Self.expectClose(merged.output, full.output, atol: 1e-5, rtol: 1e-5, "\(testCase.name): merged output")
        let mergedLSE = try #require(merged.lse)
        try Self.expectClose(mergedLSE, full.lse, atol: 1e-5, rtol: 1e-6, "\(testCase.name): merged LSE")
        // Rows with no key in any chunk: exactly 0 and −inf, as the full attention gives them.
        let lse = try mergedLSE.toDoubleArray(), output = try merged.output.toDoubleArray()
        #expect(!output.contains { $0.isNaN })
        let fullLSE = try full.lse.toDoubleArray()
        #expect(lse.filter { $0 == -.infinity }.count == fullLSE.filter { $0 == -.infinity }.count)
        // Without the LSE, the same output.
        let noLSE = try mergeAttentions(outputs, lses: lses, writeLSE: false)
        #expect(noLSE.lse == nil)
        #expect(try noLSE.output.toDoubleArray() == output)
        let half = try mergeAttentions(outputs, lses: lses, outputDType: .float16)
        #expect(half.output.dtype == .float16)
    }

    @Test func chunksWithFullyMaskedRowsAreIgnored() throws {
        // The "causal, 3 chunks" case, looked at chunk by chunk.
        let testCase = try Self.makeMergeCases()[0]
        let last = try memoryEfficientAttentionPartial(testCase.query, try testCase.key.slice(dimension: 1, range: 7..<10),
                                                       try testCase.value.slice(dimension: 1, range: 7..<10),
                                                       bias: testCase.chunks[2].bias)
        #expect(try last.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
        #expect(try last.output.toDoubleArray().allSatisfy { $0 == 0 })
        // Merging a fully masked chunk with any other leaves the other unchanged.
        let first = try memoryEfficientAttentionPartial(testCase.query, try testCase.key.slice(dimension: 1, range: 0..<3),
                                                        try testCase.value.slice(dimension: 1, range: 0..<3),
                                                        bias: testCase.chunks[0].bias)
        let merged = try mergeAttentions([last.output, first.output, last.output], lses: [last.lse, first.lse, last.lse])
        try Self.expectClose(merged.output, first.output, atol: 1e-7, rtol: 1e-7, "merge with masked chunks")
        try Self.expectClose(try #require(merged.lse), first.lse, atol: 1e-7, rtol: 1e-7, "merge LSE with masked chunks")
        // Every chunk masked: 0 and −inf.
        let nothing = try mergeAttentions([last.output, last.output], lses: [last.lse, last.lse])
        #expect(try nothing.output.toDoubleArray().allSatisfy { $0 == 0 })
        #expect(try #require(nothing.lse).toDoubleArray().allSatisfy { $0 == -.infinity })
    }

    @Test func partialOutputDTypes() throws {
        let query = try randn([1, 3, 2, 8], 60, .float16), key = try randn([1, 4, 2, 8], 61, .float16)
        let value = try randn([1, 4, 2, 8], 62, .float16)
        #expect(try memoryEfficientAttentionPartial(query, key, value).output.dtype == .float32)
        #expect(try memoryEfficientAttentionPartial(query, key, value, outputDType: .float16).output.dtype == .float16)
        let wide = try memoryEfficientAttentionPartial(try query.converted(to: .float64), try key.converted(to: .float64),
                                                       try value.converted(to: .float64))
        #expect(wide.output.dtype == .float64 && wide.lse.dtype == .float32)
        let empty = try memoryEfficientAttentionPartial(query, try key.slice(dimension: 1, range: 0..<0),
                                                        try value.slice(dimension: 1, range: 0..<0))
        #expect(try empty.lse.toDoubleArray().allSatisfy { $0 == -.infinity })
        #expect(try empty.output.toDoubleArray().allSatisfy { $0 == 0 })
    }

    @Test func mergeErrors() throws {
        let output = try randn([1, 3, 2, 4], 70), lse = try randn([1, 2, 3], 71)
        func expectInvalid(_ fragment: String, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
            let error = #expect(throws: FMHAError.self, sourceLocation: sourceLocation) { try body() }
            #expect(error?.kind == .invalidArgument, sourceLocation: sourceLocation)
            #expect(error?.message.contains(fragment) == true, "\(error?.message ?? "no error") lacks \(fragment)",
                    sourceLocation: sourceLocation)
        }
        expectInvalid("outputs") { _ = try mergeAttentions([], lses: []) }
        expectInvalid("lses") { _ = try mergeAttentions([output, output], lses: [lse]) }
        expectInvalid("outputs[1]") { _ = try mergeAttentions([output, try randn([1, 3, 2, 5], 72)], lses: [lse, lse]) }
        expectInvalid("outputs[1]") { _ = try mergeAttentions([output, try randn([1, 4, 2, 4], 73)], lses: [lse, lse]) }
        expectInvalid("lses[1]") { _ = try mergeAttentions([output, output], lses: [lse, try randn([1, 2, 4], 74)]) }
        expectInvalid("lses[0]") { _ = try mergeAttentions([output], lses: [try randn([1, 3, 2], 75)]) }
        expectInvalid("outputs[0]") { _ = try mergeAttentions([try randn([3, 4], 76)], lses: [try randn([3], 77)]) }
    }

    // MARK: - Dispatch

    /// A forward operator that runs only float16 with head dimension ≤ 64, no bias, no extras.
    /// Its output is all 7s so that a test can tell it ran.
    struct RestrictedForward: ForwardOperator {
        let name = "test-restricted"
        var capabilities: OperatorCapabilities {
            OperatorCapabilities(devices: [.cpu], dtypes: [.float16], maxHeadDimension: 64, biasTypes: [])
        }

        func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
            let dimensions = problem.dimensions
            return ForwardOutput(output: try Tensor.full(dimensions.outputShape, value: 7, dtype: problem.outputDType),
                                 lse: try Tensor.full(dimensions.lseShape, value: 7))
        }
    }

    /// A backward operator that accepts only float16.
    struct RestrictedBackward: BackwardOperator {
        let name = "test-restricted-backward"
        var capabilities: OperatorCapabilities {
            OperatorCapabilities(devices: [.cpu], dtypes: [.float16], maxHeadDimension: 64, biasTypes: [LowerTriangularMask.self])
        }

        func backward(_ problem: BackwardProblem) throws -> Gradients {
            let inputs = problem.attention.inputs
            return Gradients(dq: try Tensor.full(inputs.query.shape, value: 7, dtype: inputs.query.dtype),
                      dk: try Tensor.full(inputs.key.shape, value: 7, dtype: inputs.key.dtype),
                      dv: try Tensor.full(inputs.value.shape, value: 7, dtype: inputs.value.dtype), dBias: nil)
        }
    }

    /// Inputs that break every capability the restricted operator lacks, with the fragments its
    /// reasons must contain, in order.
    static func everythingUnsupported() throws -> (Inputs, [[String]]) {
        let inputs = Inputs(query: try randn([1, 4, 1, 2, 128], 80), key: try randn([1, 6, 1, 2, 128], 81),
                            value: try randn([1, 6, 1, 2, 96], 82), bias: LowerTriangularMask(), p: 0.2, scale: 0.5,
                            outputDType: .float16, isPartial: true, requiresDeterminism: true)
        let fragments = [
            ["dtype float32", "float16"], ["head dimension 128", "64"], ["128", "96"], ["bias type LowerTriangularMask"],
            ["dropout", "0.2"], ["custom scale"], ["BMGHK"], ["partial"], ["output dtype float16", "float32"], ["determinis"],
        ]
        return (inputs, fragments)
    }

    @Test func restrictedOperatorExplainsEveryRefusal() throws {
        let (inputs, fragments) = try Self.everythingUnsupported()
        let reasons = try RestrictedForward().notSupportedReasons(inputs)
        #expect(reasons.count == fragments.count, "\(reasons)")
        for (reason, expected) in zip(reasons, fragments) {
            #expect(expected.allSatisfy { reason.contains($0) }, "\"\(reason)\" lacks \(expected)")
        }
        // One reason at a time.
        let simple = Inputs(query: try randn([1, 4, 2, 8], 83, .float16), key: try randn([1, 6, 2, 8], 84, .float16),
                            value: try randn([1, 6, 2, 8], 85, .float16))
        #expect(try RestrictedForward().notSupportedReasons(simple).isEmpty)
        var withBias = simple
        withBias.bias = LowerTriangularMask()
        #expect(try RestrictedForward().notSupportedReasons(withBias) == ["bias type LowerTriangularMask is not supported"])
        var cudaOnly = RestrictedForward().capabilities
        cudaOnly.devices = [.cuda]
        struct CUDAOnly: ForwardOperator {
            let name = "test-cuda-only"
            let capabilities: OperatorCapabilities
            func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
                throw FMHAError(.unsupported, "never runs")
            }
        }
        let deviceReasons = try CUDAOnly(capabilities: cudaOnly).notSupportedReasons(simple)
        #expect(deviceReasons.count == 1 && deviceReasons.first?.contains("cpu") == true
                && deviceReasons.first?.contains("cuda") == true, "\(deviceReasons)")
    }

    @Test func explainListsEveryOperator() throws {
        let (inputs, _) = try Self.everythingUnsupported()
        let explained = try Operators.explainForward(inputs.validate())
        #expect(explained.map(\.name) == Operators.forward.map(\.name))
        // The CPU reference runs anything on the CPU.
        #expect(explained.first { $0.name == "cpu-reference" }?.reasons == [])
        let operators: [any AttentionOperator] = [RestrictedForward() as any AttentionOperator]
            + Operators.forward.map { $0 as any AttentionOperator }
        let withFake = Dispatch.explain(operators, for: try inputs.validate())
        #expect(withFake.map(\.name) == ["test-restricted"] + Operators.forward.map(\.name))
        #expect(withFake[0].reasons.count == 10)
        #expect(try Operators.explainBackward(inputs.validate()).map(\.name) == Operators.backward.map(\.name))
    }

    @Test func explicitOperatorIsRefusedWithItsReasonsAndNeverReplaced() throws {
        let (inputs, fragments) = try Self.everythingUnsupported()
        var nonPartial = inputs
        nonPartial.isPartial = false
        nonPartial.requiresDeterminism = false
        let error = #expect(throws: FMHAError.self) {
            _ = try memoryEfficientAttention(nonPartial.query, nonPartial.key, nonPartial.value, bias: nonPartial.bias,
                                             p: 0.2, scale: 0.5, op: RestrictedForward(), outputDType: .float16)
        }
        #expect(error?.kind == .unsupported)
        #expect(error?.message.contains("test-restricted") == true)
        for expected in fragments.prefix(7) + [fragments[8]] {
            #expect(expected.allSatisfy { error?.message.contains($0) == true }, "\(error?.message ?? "") lacks \(expected)")
        }
        let partialError = #expect(throws: FMHAError.self) {
            _ = try memoryEfficientAttentionPartial(try randn([1, 3, 2, 8], 86, .float16),
                                                    try randn([1, 4, 2, 8], 87, .float16),
                                                    try randn([1, 4, 2, 8], 88, .float16), op: RestrictedForward())
        }
        #expect(partialError?.kind == .unsupported && partialError?.message.contains("partial") == true)
        // Where it can run, the explicit operator is what runs (its output is all 7s).
        let query = try randn([1, 3, 2, 8], 89, .float16)
        let output = try memoryEfficientAttention(query, query, query, op: RestrictedForward())
        #expect(try output.toDoubleArray().allSatisfy { $0 == 7 })
        let result = try memoryEfficientAttentionForwardRequiresGrad(query, query, query, op: RestrictedForward())
        #expect(result.operatorName == "test-restricted")
    }

    @Test func dispatchTakesTheFirstAbleOperator() throws {
        let half = Inputs(query: try randn([1, 3, 2, 8], 90, .float16), key: try randn([1, 4, 2, 8], 91, .float16),
                          value: try randn([1, 4, 2, 8], 92, .float16))
        let candidates: [any ForwardOperator] = [RestrictedForward()] + Operators.forward
        #expect(try Dispatch.selectForward(candidates, explicit: nil, for: half.validate(), entryPoint: "test").name == "test-restricted")
        var single = half
        single.query = try randn([1, 3, 2, 8], 93)
        single.key = try randn([1, 4, 2, 8], 94)
        single.value = try randn([1, 4, 2, 8], 95)
        #expect(try Dispatch.selectForward(candidates, explicit: nil, for: single.validate(), entryPoint: "test").name == Operators.forward[0].name)
        // No operator fits: the error lists every operator with its reasons.
        let error = #expect(throws: FMHAError.self) {
            _ = try Dispatch.selectForward([RestrictedForward()], explicit: nil, for: single.validate(), entryPoint: "test")
        }
        #expect(error?.kind == .unsupported)
        #expect(error?.message.contains("test-restricted") == true && error?.message.contains("dtype float32") == true)
        // The summary shows the tensors as the caller passed them (BMHK), not the problem's BMGHK views.
        #expect(error?.message.contains("query       : shape=[1, 3, 2, 8]") == true, "\(error?.message ?? "")")
    }

    @Test func explicitBackwardOperatorIsRefused() throws {
        let query = try randn([1, 3, 2, 8], 96), key = try randn([1, 4, 2, 8], 97), value = try randn([1, 4, 2, 8], 98)
        let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: LowerTriangularMask())
        let error = #expect(throws: FMHAError.self) {
            _ = try memoryEfficientAttentionBackward(forward.output, output: forward.output, lse: forward.lse, query: query,
                                                     key: key, value: value, bias: LowerTriangularMask(),
                                                     op: RestrictedBackward())
        }
        #expect(error?.kind == .unsupported)
        #expect(error?.message.contains("test-restricted-backward") == true && error?.message.contains("dtype float32") == true)
        #expect(error?.message.contains("bias type") == false, "LowerTriangularMask is listed, so no bias reason")
    }

    // MARK: - Validation errors surface from every entry point

    @Test(arguments: [1.0, 1.5, -0.1, Double.nan])
    func invalidDropoutProbability(p: Double) throws {
        let query = try randn([1, 3, 2, 8], 100)
        for body in [
            { _ = try memoryEfficientAttention(query, query, query, p: p, seed: 1) },
            { _ = try memoryEfficientAttention(query, query, query, p: p, op: RestrictedForward()) },
            { _ = try memoryEfficientAttentionForwardRequiresGrad(query, query, query, p: p) },
            { _ = try memoryEfficientAttentionBackward(query, output: query, lse: try Tensor.zeros([1, 2, 3]), query: query,
                                                       key: query, value: query, dropout: DropoutState(p: p, seed: 1)) },
        ] as [() throws -> Void] {
            let error = #expect(throws: FMHAError.self) { try body() }
            #expect(error?.kind == .invalidArgument && error?.message.contains("dropout probability") == true,
                    "\(error?.message ?? "")")
        }
    }

    @Test func otherValidationErrorsSurface() throws {
        let query = try randn([1, 3, 2, 8], 101), key = try randn([1, 4, 2, 8], 102)
        func expectInvalid(_ fragment: String, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
            let error = #expect(throws: FMHAError.self, sourceLocation: sourceLocation) { try body() }
            #expect(error?.kind == .invalidArgument, "\(error?.message ?? "")", sourceLocation: sourceLocation)
            #expect(error?.message.contains(fragment) == true, "\(error?.message ?? "no error") lacks \(fragment)",
                    sourceLocation: sourceLocation)
        }
        expectInvalid("scale") { _ = try memoryEfficientAttention(query, key, key, scale: .infinity) }
        expectInvalid("query/key/value") { _ = try memoryEfficientAttention(query, try randn([1, 4, 2, 6], 103), key) }
        expectInvalid("bias") {
            _ = try memoryEfficientAttentionPartial(query, key, key, bias: try randn([1, 2, 3, 5], 104))
        }
        expectInvalid("query") {
            _ = try memoryEfficientAttention(try randn([2, 3, 2, 8], 105), try randn([2, 4, 2, 8], 106),
                                             try randn([2, 4, 2, 8], 107),
                                             bias: try BlockDiagonalMask.fromSeqlens(qSeqlen: [3], kvSeqlen: [4]))
        }
        expectInvalid("query") {
            _ = try Operators.forwardOperator(for: Inputs(query: query, key: key, value: key,
                                                          bias: try BlockDiagonalMask.fromSeqlens(qSeqlen: [2], kvSeqlen: [4])).validate())
        }
        let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, key)
        expectInvalid("lse") {
            _ = try memoryEfficientAttentionBackward(forward.output, output: forward.output, lse: try Tensor.zeros([1, 3, 2]),
                                                     query: query, key: key, value: key)
        }
        expectInvalid("gradOutput") {
            _ = try memoryEfficientAttentionBackward(try randn([1, 3, 2, 7], 108), output: forward.output, lse: forward.lse,
                                                     query: query, key: key, value: key)
        }
    }
}
