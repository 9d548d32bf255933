import FMHATestSupport
import FMHA
@testable import FMHACUDA
import Testing

/// The decoding forward (`cuda-decode`) against the CUDA reference on the same device inputs,
/// outputs poisoned with NaN before each run and a second run compared bit for bit: every mask
/// family decoding uses (dense, causal from the bottom right, padded, local windows, gappy and
/// paged keys with page sizes 16, 64 and 256, shuffled and shared pages), 1, 4 and 16 queries per
/// sequence, GQA ratios 1, 4 and 8 packed into one tile, head dimensions 8 ... 256 and K ≠ Kv, key
/// lengths 0, 1 and one past a split, splits merged on the device, partial output and partials
/// merged by `mergeAttentions`, unaligned rows, B·H > 65535, NaN in keys no query sees, dispatch.
@Suite(.enabled(if: cudaDeviceAvailable, "no CUDA device"))
struct CUDAFlashDecodeTests {
    /// Output and LSE of cuda-decode within the forward tolerance of cuda-reference, the same bits
    /// twice. A quantized cache: cuda-reference on the dequantized cache, and the same bits as
    /// cuda-decode on it (the kernel dequantizes exactly as the host).
    func check(_ inputs: Inputs, _ what: String, operator decode: CUDAFlashDecode = CUDAFlashDecode()) throws {
        let problem = try inputs.validate(), d = problem.dimensions
        #expect(decode.notSupportedReasons(problem).isEmpty, "\(what): \(decode.notSupportedReasons(problem))")
        func run(_ problem: AttentionProblem, _ decode: CUDAFlashDecode = decode) throws -> ForwardOutput {
            let result = ForwardOutput(
                output: try Tensor.full(d.outputShape, value: .nan, dtype: problem.outputDType).to(.cuda(0)),
                lse: try Tensor.full(d.lseShape, value: .nan, dtype: .float32).to(.cuda(0)))
            try decode.run(problem, output: result.output, lse: result.lse)
            return result
        }
        func sameBits(_ a: ForwardOutput, _ b: ForwardOutput) throws -> Bool {
            try a.output.toDoubleArray().elementsEqual(b.output.toDoubleArray()) { $0.bitPattern == $1.bitPattern }
                && a.lse.toDoubleArray().elementsEqual(b.lse.toDoubleArray()) { $0.bitPattern == $1.bitPattern }
        }
        let first = try run(problem), second = try run(problem)
        let plain = try problem.dequantized()
        if problem.keyValueFormat != nil {
            // With the quantized kernel's block shape (the plain one may fit other warp counts), where
            // the plain kernel fits it.
            let device = try problem.device.cudaContext().device
            let kernel = decode.kernel(for: problem, on: device)
            if kernel.shape.totalSharedMemoryBytes(width: kernel.width) <= device.sharedMemoryPerBlockOptIn {
                #expect(try sameBits(first, run(plain, CUDAFlashDecode(shape: kernel.shape))), "\(what): differs from the dequantized cache's")
            }
        }
        let reference = try CUDAReferenceForward().forward(plain)
        let output = try first.output.toDoubleArray(), lse = try first.lse.toDoubleArray()
        let outputRatio = Tolerance.forward(inputs.query.dtype).worstRatio(output, try reference.output.toDoubleArray())
        let lseRatio = Tolerance(absolute: 2e-3, relative: 1e-4).worstRatio(lse, try reference.lse.toDoubleArray())
        #expect(outputRatio <= 1 && lseRatio <= 1, "\(what): output \(outputRatio), LSE \(lseRatio)")
        #expect(try sameBits(first, second), "\(what): a second run differs")
    }

    static func randn(_ shape: [Int], _ seed: UInt64, _ dtype: DType) throws -> Tensor {
        try FMHATestSupport.randn(shape, seed, dtype, device: .cuda(0))
    }

    /// Query [1, M, 2, ratio, K] and K/V [1, N, 2, 1, K] read as stride-0 heads (GQA).
    static func grouped(queries: Int, keys: Int, ratio: Int, headDimension: Int, valueDimension: Int? = nil,
                        dtype: DType, seed: UInt64) throws -> (Tensor, Tensor, Tensor) {
        let q = try randn([1, queries, 2, ratio, headDimension], seed, dtype)
        let k = try randn([1, keys, 2, 1, headDimension], seed + 1, dtype).expanded(to: [1, keys, 2, ratio, headDimension])
        let v = try randn([1, keys, 2, 1, valueDimension ?? headDimension], seed + 2, dtype)
            .expanded(to: [1, keys, 2, ratio, valueDimension ?? headDimension])
        return (q, k, v)
    }

    /// Block tables for sequences of `lengths` keys in pages of `pageSize`, pages handed out in a
    /// shuffled order (and, with `shared`, the first page of every sequence is page 0), and the
    /// number of pages the cache needs.
    static func pageTables(lengths: [Int], pageSize: Int, shared: Bool = false) -> (tables: [[Int]], pages: Int) {
        let perSequence = max(1, lengths.map { ($0 + pageSize - 1) / pageSize }.max() ?? 1)
        let count = lengths.count * perSequence + 1
        // A fixed permutation of 1 ..< count (multiplication by a number coprime to count - 1).
        var step = 7
        while gcd(step, count - 1) != 1 { step += 2 }
        var tables = [[Int]](), next = 0
        for _ in lengths {
            var row = [Int]()
            for _ in 0..<perSequence {
                row.append(1 + (next * step) % (count - 1))
                next += 1
            }
            if shared { row[0] = 0 }
            tables.append(row)
        }
        return (tables, count)
    }

    static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    /// The masks of decoding for sequences of `queries` queries over `lengths` keys (padded to
    /// `padding`), with the K/V length each needs.
    static func decodingMasks(queries: Int, lengths: [Int], padding: Int, pageSize: Int) throws -> [(any AttentionBias, keys: Int)] {
        let q = [Int](repeating: queries, count: lengths.count)
        let starts = (0...lengths.count).map { $0 * padding }
        let (tables, pages) = pageTables(lengths: lengths, pageSize: pageSize)
        let (sharedTables, sharedPages) = pageTables(lengths: lengths, pageSize: pageSize, shared: true)
        let padded = lengths.count * padding
        return [
            (try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: q, kvPadding: padding, kvSeqlen: lengths), padded),
            (try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: q, kvPadding: padding, kvSeqlen: lengths), padded),
            (try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(qSeqlen: q, kvPadding: padding, kvSeqlen: lengths,
                                                                              windowSize: 300), padded),
            (try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(qSeqlen: q, kvSeqstarts: starts.dropLast().map { $0 + 5 } + [padded],
                                                                        kvSeqlen: lengths.map { min($0, padding - 5) }), padded),
            (try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: q, kvSeqlen: lengths, blockTables: tables,
                                                                              pageSize: pageSize), pages * pageSize),
            (try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: q, kvSeqlen: lengths, blockTables: sharedTables,
                                                              pageSize: pageSize), sharedPages * pageSize),
            (try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(qSeqlen: q, kvSeqlen: lengths, blockTables: tables,
                                                                         pageSize: pageSize, windowSize: 200), pages * pageSize),
            (try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: q, kvSeqstarts: lengths.map { _ in 3 }, kvSeqlen: lengths.map { max(0, $0 - 3) },
                blockTables: tables, pageSize: pageSize), pages * pageSize),
        ]
    }

    @Test(arguments: [DType.float16, .bfloat16], [64, 128, 256])
    func decodingMasksQueriesAndGroups(dtype: DType, headDimension: Int) throws {
        // Lengths 0, 1, one past a split of 128 keys and one past a page.
        let lengths = [0, 1, 1025, 700, 257]
        for (queries, ratio, pageSize) in [(1, 4, 16), (4, 1, 64), (16, 1, 256), (2, 8, 16), (1, 8, 256)] {
            for (mask, keys) in try Self.decodingMasks(queries: queries, lengths: lengths, padding: 1100, pageSize: pageSize) {
                let (q, k, v) = try Self.grouped(queries: queries * lengths.count, keys: keys, ratio: ratio,
                                                 headDimension: headDimension, dtype: dtype, seed: 1)
                try check(Inputs(query: q, key: k, value: v, bias: mask),
                          "\(type(of: mask).name) \(dtype) K=\(headDimension) Mq=\(queries) GQA \(ratio) page \(pageSize)")
            }
        }
    }

    @Test(arguments: [DType.float16, .bfloat16])
    func denseCausalAndEveryHeadDimension(dtype: DType) throws {
        for headDimension in stride(from: 8, through: 256, by: 8) {
            let (q, k, v) = try Self.grouped(queries: 3, keys: 333, ratio: 4, headDimension: headDimension, dtype: dtype, seed: 5)
            try check(Inputs(query: q, key: k, value: v, bias: LowerTriangularFromBottomRightMask()), "\(dtype) K=\(headDimension)")
        }
        for (headDimension, valueDimension) in [(64, 128), (136, 40), (8, 256)] {
            let (q, k, v) = try Self.grouped(queries: 1, keys: 900, ratio: 3, headDimension: headDimension, valueDimension: valueDimension,
                                             dtype: dtype, seed: 6)
            try check(Inputs(query: q, key: k, value: v), "\(dtype) K=\(headDimension) Kv=\(valueDimension)")
        }
        // Batch of 3 (BMHK), Mq = 16, no mask; Mkv = 1.
        for keys in [1, 7, 4097] {
            let q = try Self.randn([3, 16, 4, 128], 7, dtype), k = try Self.randn([3, keys, 4, 128], 8, dtype)
            try check(Inputs(query: q, key: k, value: k), "\(dtype) B=3 Mq=16 Mkv=\(keys)")
        }
    }

    @Test func longKeysAreSplitAndMerged() throws {
        // One K/V head, one query: the plan cuts the keys into many splits, merged on the device.
        for keys in [4097, 65_537] {
            let (q, k, v) = try Self.grouped(queries: 1, keys: keys, ratio: 4, headDimension: 128, dtype: .bfloat16, seed: 9)
            let inputs = Inputs(query: try q.slice(dimension: 2, range: 0..<1), key: try k.slice(dimension: 2, range: 0..<1),
                                value: try v.slice(dimension: 2, range: 0..<1))
            let problem = try inputs.validate()
            let decode = CUDAFlashDecode()
            let device = try problem.device.cudaContext().device
            let plan = CUDAFlashDecode.plan(problem, kernel: decode.kernel(for: problem, on: device), on: device)
            #expect(plan.mergedTiles == 1 && plan.entries > 1, "\(keys) keys: \(plan.entries) splits")
            try check(inputs, "\(keys) keys in \(plan.entries) splits")
            try check(Inputs(query: q, key: k, value: v, bias: LowerTriangularFromBottomRightMask(), isPartial: true),
                      "\(keys) keys, partial")
        }
    }

    @Test func tuningShapes() throws {
        let lengths = [3, 1025, 700]
        for shape in CUDAFlashDecode.tuningShapes {
            for (mask, keys) in try Self.decodingMasks(queries: 2, lengths: lengths, padding: 1100, pageSize: 16).prefix(5) {
                let (q, k, v) = try Self.grouped(queries: 2 * lengths.count, keys: keys, ratio: 4, headDimension: 128, dtype: .bfloat16, seed: 11)
                try check(Inputs(query: q, key: k, value: v, bias: mask), "\(shape) \(type(of: mask).name)", operator: CUDAFlashDecode(shape: shape))
            }
        }
    }

    @Test func layoutsAndHeads() throws {
        // Keys and values whose rows are not 16-byte aligned (a slice of the last dimension): element loads.
        let wide = try Self.randn([1, 300, 3, 72], 12, .float16)
        let shifted = try wide.slice(dimension: 3, range: 4..<68)
        try check(Inputs(query: try Self.randn([1, 2, 3, 64], 13, .float16), key: shifted, value: shifted,
                         bias: LowerTriangularFromBottomRightMask()), "unaligned rows")
        // A transposed query, float32 partial output.
        let transposed = try Self.randn([2, 3, 5, 64], 14, .bfloat16).transposed(1, 2)
        let k = try Self.randn([2, 500, 3, 64], 15, .bfloat16)
        try check(Inputs(query: transposed, key: k, value: k, isPartial: true), "strided query, partial")
        // MQA with 32 query heads over one K/V head: two chunks of 16.
        let (q, kk, v) = try Self.grouped(queries: 1, keys: 2000, ratio: 32, headDimension: 64, dtype: .float16, seed: 16)
        try check(Inputs(query: q, key: kk, value: v), "MQA 32")
        // B·H > 65535 heads of one query and key each.
        let many = try Self.randn([3, 1, 30_000, 16], 17, .bfloat16)
        try check(Inputs(query: many, key: many, value: many), "B·H = 90000")
    }

    @Test func nanInKeysNoQuerySeesDoesNotLeak() throws {
        // Keys past each sequence's length (padding, and every unused page) hold NaN.
        let lengths = [70, 9, 1000]
        let (tables, pages) = Self.pageTables(lengths: lengths, pageSize: 16)
        let bias = try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1, 1], kvSeqlen: lengths,
                                                                                    blockTables: tables, pageSize: 16)
        var used = Set<Int>()
        for (row, length) in zip(tables, lengths) {
            for key in 0..<length { used.insert(row[key / 16] * 16 + key % 16) }
        }
        let k = try keysWithNaNRows(pages * 16, width: 64, seed: 18, device: .cuda(0)) { !used.contains($0) }
        let inputs = Inputs(query: try Self.randn([1, 3, 1, 64], 19, .float16), key: k, value: k, bias: bias)
        let output = try CUDAFlashDecode().forward(inputs, dropout: nil).output.toArray()
        #expect(output.allSatisfy { $0.isFinite })
        try check(inputs, "NaN in unused pages")
    }

    @Test func dispatchTakesFewQueriesPerBlock() throws {
        let k = try Self.randn([1, 64, 1, 64], 20, .float16)
        let few = try Self.randn([1, 16, 1, 64], 21, .float16), many = try Self.randn([1, 17, 1, 64], 22, .float16)
        #expect(try Operators.forwardOperator(for: Inputs(query: few, key: k, value: k).validate()).name == "cuda-decode")
        #expect(try Operators.forwardOperator(for: Inputs(query: many, key: k, value: k).validate()).name == CUDAFlashForwardTests.prefillOperator)
        let packed = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [16, 1], kvPadding: 32, kvSeqlen: [30, 2])
        let queries = try Self.randn([1, 17, 1, 64], 23, .float16)
        #expect(try Operators.forwardOperator(for: Inputs(query: queries, key: k, value: k, bias: packed).validate()).name == "cuda-decode")
        let reasons = CUDAFlashDecode().notSupportedReasons(try Inputs(query: many, key: k, value: k, p: 0.1).validate())
        #expect(reasons.contains { $0.contains("17 queries in a block") } && reasons.contains { $0.contains("dropout") }, "\(reasons)")
    }

    @Test func partialsOverKeyChunksMergeToOneCall() throws {
        // Decoding over a cache in three uneven chunks, each through the partial entry point on the
        // device (cuda-decode), merged: the attention over all keys, on the device.
        let (q, k, v) = try Self.grouped(queries: 2, keys: 3000, ratio: 4, headDimension: 128, dtype: .bfloat16, seed: 24)
        let whole = try memoryEfficientAttentionForwardRequiresGrad(q, k, v)
        var outputs = [Tensor](), lses = [Tensor]()
        for range in [0..<1000, 1000..<2900, 2900..<3000] {
            let part = try memoryEfficientAttentionPartial(q, k.slice(dimension: 1, range: range), v.slice(dimension: 1, range: range))
            #expect(part.output.device == .cuda(0) && part.output.dtype == .float32)
            outputs.append(part.output)
            lses.append(part.lse)
        }
        let merged = try mergeAttentions(outputs, lses: lses, outputDType: .bfloat16)
        #expect(merged.output.device == .cuda(0) && merged.lse?.device == .cuda(0))
        let outputRatio = Tolerance.forward(.bfloat16).worstRatio(try merged.output.toDoubleArray(), try whole.output.toDoubleArray())
        let lseRatio = Tolerance(absolute: 2e-3, relative: 1e-4).worstRatio(try merged.lse!.toDoubleArray(), try whole.lse.toDoubleArray())
        #expect(outputRatio <= 1 && lseRatio <= 1, "output \(outputRatio), LSE \(lseRatio)")
    }

    @Test(arguments: everyKeyValueFormat, [DType.float16, .bfloat16])
    func quantizedCachesUnderEveryDecodingMask(format: KeyValueFormat, dtype: DType) throws {
        let lengths = [0, 1, 1025, 700, 257]
        for (queries, ratio, pageSize, headDimension) in [(1, 8, 16, 128), (4, 1, 256, 64), (2, 4, 64, 256)] {
            for (mask, keys) in try Self.decodingMasks(queries: queries, lengths: lengths, padding: 1100, pageSize: pageSize) {
                let inputs = try quantizedDecodingInputs(queries: queries * lengths.count, keys: keys, ratio: ratio,
                                                         headDimension: headDimension, format: format, dtype: dtype, bias: mask,
                                                         device: .cuda(0), seed: 2)
                try check(inputs, "\(format) \(type(of: mask).name) \(dtype) K=\(headDimension) Mq=\(queries) GQA \(ratio) page \(pageSize)")
            }
        }
    }

    @Test func quantizedCachesOnePagedStepPerFormat() throws {
        // The quick subset: one decoding step of 3 sequences over a shuffled paged cache, GQA 8.
        let lengths = [1, 1500, 333]
        for format in everyKeyValueFormat {
            for headDimension in [64, 128, 256] where format.canStore(headDimension: headDimension) {
                let (mask, keys) = try Self.decodingMasks(queries: 1, lengths: lengths, padding: 1600, pageSize: 16)[4]
                let inputs = try quantizedDecodingInputs(queries: lengths.count, keys: keys, ratio: 8, headDimension: headDimension,
                                                         format: format, dtype: .bfloat16, bias: mask, device: .cuda(0), seed: 4)
                try check(inputs, "\(format) K=\(headDimension) paged")
            }
        }
    }

    @Test func quantizedCachesAtEveryWidthLongSplitsAndDispatch() throws {
        for format in everyKeyValueFormat {
            for headDimension in stride(from: 64, through: 256, by: 64) + [16, 32, 48, 80, 96, 112] where format.canStore(headDimension: headDimension) {
                let inputs = try quantizedDecodingInputs(queries: 3, keys: 333, ratio: 4, headDimension: headDimension, format: format,
                                                         dtype: .bfloat16, bias: LowerTriangularFromBottomRightMask(), device: .cuda(0), seed: 7)
                try check(inputs, "\(format) K=\(headDimension)")
            }
            // One sequence of 16385 keys: many splits merged on the device; partial output.
            var inputs = try quantizedDecodingInputs(queries: 1, keys: 16385, ratio: 8, headDimension: 128, format: format, dtype: .float16,
                                                     bias: nil, device: .cuda(0), seed: 9)
            try check(inputs, "\(format) 16385 keys")
            inputs.isPartial = true
            try check(inputs, "\(format) 16385 keys, partial")
            #expect(try Operators.forwardOperator(for: inputs.validate()).name == "cuda-decode")
            #expect(try memoryEfficientAttentionPartial(inputs.query, inputs.key, inputs.value, keyScaleShift: inputs.keyScaleShift,
                                                        valueScaleShift: inputs.valueScaleShift).output.device == .cuda(0))
            let reasons = try CUDAFlashForward().notSupportedReasons(inputs.validate())
            #expect(reasons.contains { $0.contains("quantized K/V") }, "\(reasons)")
        }
    }

    @Test func deviceMergeEqualsTheHostMerge() throws {
        // Five partials of one BMGHK shape: contiguous float32, a strided view, float16, bfloat16,
        // and one whose rows are all fully masked (LSE -inf, output 0) but one NaN row.
        let shape = [2, 7, 2, 3, 40], lseShape = [2, 2, 3, 7]
        var outputs = try (0..<4).map { try FMHATestSupport.randn(shape, UInt64(30 + $0)) }
        var lses = try (0..<4).map {
            try Tensor(shape: lseShape, scalars: FMHATestSupport.randn(lseShape, UInt64(40 + $0)).toDoubleArray().map { $0 * 4 })
        }
        outputs[1] = try FMHATestSupport.randn([2, 7, 2, 3, 80], 50).slice(dimension: 4, range: 20..<60)
        outputs[2] = try outputs[2].converted(to: .float16)
        outputs[3] = try outputs[3].converted(to: .bfloat16)
        lses[2] = try lses[2].converted(to: .float16)
        outputs.append(try Tensor.zeros(shape))
        var masked = [Double](repeating: -.infinity, count: lseShape.reduce(1, *))
        masked[5] = .nan
        lses.append(try Tensor(shape: lseShape, scalars: masked))
        for layout in [5, 4, 3] {
            func view(_ t: Tensor, lse: Bool) throws -> Tensor {
                switch layout {
                case 5: t
                case 4: lse ? try t.slice(dimension: 1, range: 0..<1).reshaped([2, 3, 7]) : try t.slice(dimension: 2, range: 0..<1).reshaped([2, 7, 3, 40])
                default: lse ? try t.slice(dimension: 1, range: 0..<1).slice(dimension: 2, range: 0..<1).reshaped([2, 1, 7])
                    : try t.slice(dimension: 2, range: 0..<1).slice(dimension: 3, range: 0..<1).reshaped([2, 7, 40])
                }
            }
            let hostOutputs = try outputs.map { try view($0, lse: false) }, hostLSEs = try lses.map { try view($0, lse: true) }
            for outputDType in [DType.float32, .bfloat16] {
                let host = try mergeAttentions(hostOutputs, lses: hostLSEs, outputDType: outputDType)
                let device = try mergeAttentions(hostOutputs.map { try $0.to(.cuda(0)) }, lses: hostLSEs.map { try $0.to(.cuda(0)) },
                                                 outputDType: outputDType)
                #expect(device.output.device == .cuda(0) && device.output.dtype == outputDType && device.lse?.shape == host.lse?.shape)
                let tolerance = outputDType == .float32 ? Tolerance(absolute: 1e-6, relative: 1e-5) : Tolerance.forward(.bfloat16)
                let outputRatio = tolerance.worstRatio(try device.output.toDoubleArray(), try host.output.toDoubleArray())
                let lseRatio = Tolerance(absolute: 1e-5, relative: 1e-6).worstRatio(try device.lse!.toDoubleArray(), try host.lse!.toDoubleArray())
                #expect(outputRatio <= 1 && lseRatio <= 1, "rank \(layout) \(outputDType): output \(outputRatio), LSE \(lseRatio)")
                let merged = try mergeAttentions(hostOutputs.map { try $0.to(.cuda(0)) }, lses: hostLSEs.map { try $0.to(.cuda(0)) }, writeLSE: false)
                #expect(merged.lse == nil)
            }
        }
    }
}
