import ArgumentParser
import FMHA

/// `fmha bench`: median time of attention calls over repeated runs, in ms and TFLOP/s.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time attention on given shapes: median over repeated runs after warm-up, in ms and TFLOP/s.")

    @Option(help: "Device: cpu or cuda[:N].") var device: DeviceArgument = .cpu
    @Option(help: "Input dtype (repeatable).") var dtype: [DType] = [.float32]
    @Option(name: .customLong("case"),
            help: "B,Mq,Mkv,H,K[,causal][,kv=Hkv] or varlen=L1/L2/...,H,K[,causal] (repeatable); causal is bottom-right.")
    var cases: [BenchCase] = [BenchCase(batch: 1, queries: 256, keys: 256, heads: 4, headDimension: 64, causal: false),
                              BenchCase(batch: 1, queries: 256, keys: 256, heads: 4, headDimension: 64, causal: true)]
    @Flag(help: "Time forward + backward instead of forward alone.") var backward = false
    @Option(parsing: .unconditional, help: "Dropout probability (0 ≤ p < 1); the backward replays the forward's mask.") var dropout = 0.0
    @Flag(name: .customLong("tensor-bias"),
          help: "Add a random bias tensor [B, H, Mq, Mkv] (LowerTriangularMaskWithTensorBias when causal); dense cases without kv= only.")
    var tensorBias = false
    @Option(help: "Store K/V in a paged cache of pages of this many keys, handed out in a shuffled order: B sequences of Mq queries over Mkv keys each under a paged padded-keys mask (causal with offset when causal); dense cases only.")
    var paged: Int?
    @Option(name: .customLong("kv-cache"),
            help: "Quantize K/V: int4 (1 scale/shift group a row), int4:G (G = 1, 2, 4, 8 groups) or fp8 (e4m3 row-wise); forward only, no --tensor-bias.")
    var kvCache: KeyValueCacheArgument?
    @Option(help: "Forward operator name (default: dispatch chooses).") var op: String?
    @Flag(help: "With --backward: only a backward that gives the same bits every run (on CUDA: cuda-flash, not cuda-flash-atomic).")
    var deterministic = false
    @Option(help: "Timed runs per case (after one warm-up run).") var repeats = 5
    @Flag(help: "One JSON object per line instead of a table.") var json = false
    @Flag(help: "Also measure the machine's float32 FMA peak (all threads) in the same run.") var fmaPeak = false

    func validate() throws {
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        guard dropout >= 0, dropout < 1 else { throw ValidationError("--dropout: expected 0 ≤ p < 1, got \(dropout)") }
        if tensorBias, let grouped = cases.first(where: { $0.sequenceLengths != nil || $0.kvHeads != nil }) {
            throw ValidationError("--tensor-bias takes dense cases without kv=, got \(grouped)")
        }
        if kvCache != nil, backward || tensorBias || dropout > 0 {
            throw ValidationError("--kv-cache times the forward alone, without --backward, --tensor-bias or --dropout")
        }
        if let paged {
            guard paged >= 1 else { throw ValidationError("--paged: expected a page size of at least 1 key, got \(paged)") }
            guard !tensorBias else { throw ValidationError("--paged takes no --tensor-bias") }
            if let varlen = cases.first(where: { $0.sequenceLengths != nil }) {
                throw ValidationError("--paged takes dense cases, got \(varlen)")
            }
        }
    }

    /// Prints the results as they come.
    func run() throws {
        try run { line in
            print(line)
            Platform.flushStandardOutput()
        }
    }

    /// Runs the cases, handing `emit` each output line as soon as it exists: with `--json` one
    /// object per case (then the FMA peak's), else the table once every case has run.
    func run(emit: (String) -> Void) throws {
        let chosen = try op.map { try Operators.forward(required: $0, argument: "--op") }
        var rows = [[String]]()
        let total = dtype.count * cases.count, progress = ProgressLine()
        for (index, (dtype, benchCase)) in dtype.flatMap({ d in cases.map { (d, $0) } }).enumerated() {
            progress.show("[\(index + 1)/\(total)] \(benchCase) \(dtype)")
            let measurement = try measure(benchCase, dtype: dtype, op: chosen)
            let mode = backward ? "fwd+bwd" : "fwd"
            let teraflops = benchCase.flops(backward: backward) / (measurement.milliseconds * 1e-3) / 1e12
            if json {
                emit(#"{"op": "\#(measurement.operatorName)", "device": "\#(device.device)", "dtype": "\#(dtype)", "B": \#(benchCase.batch), "Mq": \#(benchCase.queries), "Mkv": \#(benchCase.keys), "H": \#(benchCase.heads), "Hkv": \#(benchCase.kvHeads ?? benchCase.heads), "K": \#(benchCase.headDimension), "causal": \#(benchCase.causal), "case": "\#(benchCase)", "dropout": \#(dropout), "tensor_bias": \#(tensorBias), "paged": \#(paged.map(String.init) ?? "null"), "kv_cache": \#(kvCache.map { "\"\($0)\"" } ?? "null"), "kv_bytes": \#(benchCase.keyValueBytes(dtype: dtype, format: kvCache?.format)), "mode": "\#(mode)", "ms": \#(measurement.milliseconds), "gpu_ms": \#(measurement.kernelMilliseconds.map { "\($0)" } ?? "null"), "tflops": \#(teraflops)\#(backwardFields(measurement, benchCase))}"#)
            } else {
                rows.append([measurement.operatorName + (measurement.backwardOperatorName.map { " / " + $0 } ?? ""), dtype.rawValue, benchCase.description, mode,
                             Formatting.decimal(measurement.milliseconds, digits: 3),
                             Formatting.decimal(teraflops * 1000, digits: 2)])
            }
        }
        progress.clear()
        if !json {
            emit(Table.render(header: ["operator", "dtype", "B,Mq,Mkv,H,K", "mode", "median ms", "GFLOP/s"], rows: rows))
        }
        if fmaPeak {
            let peak = FMAPeak.measure()
            if json {
                emit(#"{"fma_peak_gflops": \#(peak.map { "\($0)" } ?? "null"), "threads": \#(CPUThreads.count)}"#)
            } else {
                emit("FMA peak (\(CPUThreads.count) threads): \(peak.map { Formatting.decimal($0, digits: 1) + " GFLOP/s" } ?? "not measured (no AVX2/FMA)")")
            }
        }
    }

    /// With `--backward`, the JSON fields of the backward alone: its operator, median
    /// milliseconds and TFLOP/s (counted as 2.5× the forward's FLOPs); else nothing.
    private func backwardFields(_ measurement: Measurement, _ benchCase: BenchCase) -> String {
        guard backward, let name = measurement.backwardOperatorName, let milliseconds = measurement.backwardMilliseconds else { return "" }
        let teraflops = benchCase.flops(backward: false) * 2.5 / (milliseconds * 1e-3) / 1e12
        return #", "backward_op": "\#(name)", "backward_ms": \#(milliseconds), "backward_tflops": \#(teraflops)"#
    }

    /// One case's timings: the median of the timed calls (forward, or forward + backward), the
    /// forward's operator, and with `--backward` the backward's operator and its median alone.
    private struct Measurement {
        var milliseconds: Double, operatorName: String
        /// The median GPU time of the forward's kernels (events), where its operator records it.
        var kernelMilliseconds: Double?
        var backwardOperatorName: String?, backwardMilliseconds: Double?
    }

    /// Median milliseconds of `repeats` runs after a warm-up (and of the backward alone).
    private func measure(_ benchCase: BenchCase, dtype: DType, op: (any ForwardOperator)?) throws -> Measurement {
        let (query, key, value): (Tensor, Tensor, Tensor)
        let bias: (any AttentionBias)?
        var scaleShifts: (key: Tensor?, value: Tensor?) = (nil, nil)
        let format = kvCache?.format
        if let paged {
            (query, key, value, bias, scaleShifts) = try benchCase.pagedInputs(pageSize: paged, dtype: dtype, format: format, device: device.device)
        } else {
            (query, key, value, scaleShifts) = try benchCase.inputs(dtype: dtype, format: format, device: device.device)
            bias = try benchCase.bias(tensor: tensorBias ? try Tensor.randn(
                [benchCase.batch, benchCase.heads, benchCase.queries, benchCase.keys], dtype: dtype, device: device.device, seed: 4) : nil)
        }
        var operatorName = ""
        func once() throws {
            let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: bias, p: dropout, op: op,
                                                                           seed: 5, keyScaleShift: scaleShifts.key,
                                                                           valueScaleShift: scaleShifts.value)
            operatorName = forward.operatorName
            if backward {
                _ = try memoryEfficientAttentionBackward(forward.output, output: forward.output, lse: forward.lse,
                                                         query: query, key: key, value: value, bias: bias,
                                                         dropout: forward.dropout, deterministic: deterministic)
            }
        }
        try once()
        let clock = ContinuousClock()
        func median(_ times: [Double]) -> Double {
            let times = times.sorted(), middle = times.count / 2
            return times.count % 2 == 1 ? times[middle] : (times[middle - 1] + times[middle]) / 2
        }
        func median(_ body: () throws -> Void) throws -> Double {
            try median((0..<repeats).map { _ in try clock.measure(body).seconds * 1e3 })
        }
        // Wall time of each call, and the GPU time of its kernels (events; CUDA forwards only).
        var wall = [Double](), kernels = [Double]()
        for _ in 0..<repeats {
            var milliseconds = 0.0
            kernels.append(try kernelMilliseconds { milliseconds = try clock.measure(once).seconds * 1e3 })
            wall.append(milliseconds)
        }
        var measurement = Measurement(milliseconds: median(wall), operatorName: operatorName)
        if !backward, kernels.contains(where: { $0 > 0 }) { measurement.kernelMilliseconds = median(kernels) }
        if backward {
            let forward = try memoryEfficientAttentionForwardRequiresGrad(query, key, value, bias: bias, p: dropout, op: op, seed: 5)
            let problem = try Inputs(query: query, key: key, value: value, bias: bias, dropout: forward.dropout,
                                     requiresDeterminism: deterministic).validate()
            measurement.backwardOperatorName = try Operators.backwardOperator(for: problem).name
            measurement.backwardMilliseconds = try median {
                _ = try memoryEfficientAttentionBackward(forward.output, output: forward.output, lse: forward.lse,
                                                         query: query, key: key, value: value, bias: bias, dropout: forward.dropout,
                                                         deterministic: deterministic)
            }
        }
        return measurement
    }
}

/// One benchmark shape: `B,Mq,Mkv,H,K[,causal][,kv=Hkv]` (dense; `kv=` gives Hkv K/V heads shared
/// by H / Hkv query heads each, read in place as stride-0 BMGHK), or `varlen=L1/L2/...,H,K[,causal]`
/// (one batch of sequences of those lengths under a block-diagonal mask, causal or not).
struct BenchCase: ExpressibleByArgument, CustomStringConvertible {
    var batch: Int
    var queries: Int
    var keys: Int
    var heads: Int
    var headDimension: Int
    var causal: Bool
    /// K/V heads (divides `heads`); nil when every query head has its own.
    var kvHeads: Int? = nil
    /// Sequence lengths of a varlen batch (then batch = 1 and queries = keys = their sum).
    var sequenceLengths: [Int]? = nil

    init(batch: Int, queries: Int, keys: Int, heads: Int, headDimension: Int, causal: Bool) {
        self.batch = batch
        self.queries = queries
        self.keys = keys
        self.heads = heads
        self.headDimension = headDimension
        self.causal = causal
    }

    init?(argument: String) {
        var parts = argument.split(separator: ",").map(String.init)
        var causal = false, kvHeads: Int? = nil
        while let last = parts.last, last == "causal" || last.hasPrefix("kv=") {
            if last == "causal" { causal = true } else { guard let n = Int(last.dropFirst(3)), n > 0 else { return nil }; kvHeads = n }
            parts.removeLast()
        }
        if let first = parts.first, first.hasPrefix("varlen=") {
            let lengths = first.dropFirst(7).split(separator: "/").compactMap { Int($0) }
            let numbers = parts.dropFirst().compactMap { Int($0) }
            guard parts.count == 3, numbers.count == 2, !lengths.isEmpty, lengths.allSatisfy({ $0 > 0 }), kvHeads == nil,
                  numbers.allSatisfy({ $0 > 0 }) else { return nil }
            let total = lengths.reduce(0, +)
            self.init(batch: 1, queries: total, keys: total, heads: numbers[0], headDimension: numbers[1], causal: causal)
            sequenceLengths = lengths
            return
        }
        let numbers = parts.compactMap { Int($0) }
        guard parts.count == 5, numbers.count == 5, numbers.allSatisfy({ $0 > 0 }) else { return nil }
        if let kvHeads, numbers[3] % kvHeads != 0 { return nil }
        self.init(batch: numbers[0], queries: numbers[1], keys: numbers[2], heads: numbers[3],
                  headDimension: numbers[4], causal: causal)
        self.kvHeads = kvHeads
    }

    var description: String {
        let suffix = (causal ? ",causal" : "") + (kvHeads.map { ",kv=\($0)" } ?? "")
        if let sequenceLengths {
            return "varlen=\(sequenceLengths.map(String.init).joined(separator: "/")),\(heads),\(headDimension)\(suffix)"
        }
        return "\(batch),\(queries),\(keys),\(heads),\(headDimension)\(suffix)"
    }

    /// Query, key and value: BMHK, or BMGHK with stride-0 K/V heads for `kv=`; K/V quantized in
    /// `format` (with fp8's scale/shift words) when given.
    func inputs(dtype: DType, format: KeyValueFormat? = nil,
                device: Device) throws -> (query: Tensor, key: Tensor, value: Tensor, scaleShifts: (key: Tensor?, value: Tensor?)) {
        let kvHeads = kvHeads ?? heads, ratio = heads / kvHeads
        let query = try Self.random(self.kvHeads == nil ? [batch, queries, heads, headDimension] : [batch, queries, kvHeads, ratio, headDimension],
                                    dtype: dtype, device: device, seed: 1)
        let caches = try (2...3).map { seed in
            try Self.cache([batch, keys, kvHeads, 1, headDimension], sharedBy: ratio, dtype: dtype, format: format, device: device, seed: UInt64(seed))
        }
        // (BMHK without kv=: the shared-head dimension of size 1 dropped.)
        func layout(_ tensor: Tensor?) throws -> Tensor? {
            guard let tensor, self.kvHeads == nil else { return tensor }
            return try tensor.reshaped(Array(tensor.shape.prefix(3)) + Array(tensor.shape.dropFirst(4)))
        }
        return (query, try layout(caches[0].values)!, try layout(caches[1].values)!, (try layout(caches[0].scaleShift), try layout(caches[1].scaleShift)))
    }

    /// A K or V cache `[..., Hkv, 1, K]` read as `sharing` stride-0 heads `[..., Hkv, sharing, K]`:
    /// normal random values of `dtype` (`random`), or quantized in `format` from a drawn block of
    /// rows repeated over the cache, with fp8's scale/shift words `[..., Hkv, sharing]`.
    static func cache(_ shape: [Int], sharedBy sharing: Int, dtype: DType, format: KeyValueFormat?, device: Device,
                      seed: UInt64) throws -> (values: Tensor, scaleShift: Tensor?) {
        let headDimension = shape[shape.count - 1], leading = Array(shape.dropLast(2))
        func shared(_ tensor: Tensor, _ last: [Int]) throws -> Tensor {
            try tensor.expanded(to: leading + [sharing] + last)
        }
        guard let format else { return (try shared(random(shape, dtype: dtype, device: device, seed: seed), [headDimension]), nil) }
        let rows = leading.reduce(1, *), blockRows = max(1, min(rows, (1 << 22) / headDimension))
        let (words, pairs) = try format.quantize(Tensor.randn([blockRows, headDimension], seed: seed))
        let width = format.wordsPerRow(headDimension: headDimension)
        let values = try repeating(words, shape: leading + [1, width], device: device)
        return (try shared(values, [width]), try pairs.map { try shared(repeating($0, shape: leading + [1], device: device), []) })
    }

    /// Normal random values of `shape` on `device`: up to 2^22 elements drawn one by one, past
    /// that a drawn block of 2^22 repeated (decoding caches reach 10^10 elements, too many to draw
    /// on the host; the timing does not depend on the values).
    static func random(_ shape: [Int], dtype: DType, device: Device, seed: UInt64) throws -> Tensor {
        let count = shape.reduce(1, *), block = 1 << 22
        guard count > block else { return try Tensor.randn(shape, dtype: dtype, device: device, seed: seed) }
        return try repeating(Tensor.randn([block], dtype: dtype, seed: seed), shape: shape, device: device)
    }

    /// A contiguous tensor of `shape` on `device` whose elements are `block`'s (contiguous, on the
    /// host) over and over.
    static func repeating(_ block: Tensor, shape: [Int], device: Device) throws -> Tensor {
        let tensor = try Tensor.uninitialized(shape, dtype: block.dtype)
        try block.withUnsafeHostAddress { source in
            try tensor.withUnsafeHostAddress { target in
                let bytes = shape.reduce(1, *) * block.dtype.byteSize, blockBytes = block.count * block.dtype.byteSize
                var filled = 0
                while filled < bytes, blockBytes > 0 {
                    (target + filled).copyMemory(from: source, byteCount: min(blockBytes, bytes - filled))
                    filled += blockBytes
                }
            }
        }
        return try tensor.to(device)
    }

    /// The case over a paged K/V cache: the B sequences packed along M (query [1, B·Mq, ...]), their
    /// keys in pages of `pageSize` handed out by a fixed shuffle (K/V [1, pages·pageSize, ...]), under
    /// `PagedBlockDiagonalCausalWithOffsetPaddedKeysMask` when causal, else
    /// `PagedBlockDiagonalPaddedKeysMask`. Dense cases only.
    func pagedInputs(pageSize: Int, dtype: DType, format: KeyValueFormat? = nil,
                     device: Device) throws -> (Tensor, Tensor, Tensor, any AttentionBias, scaleShifts: (key: Tensor?, value: Tensor?)) {
        let perSequence = (keys + pageSize - 1) / pageSize, pages = batch * perSequence
        // Page i of the cache goes to slot (i · step) mod pages, step coprime to the page count.
        var step = max(1, pages / 2 + 1)
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        while gcd(step, pages) != 1 { step += 1 }
        let tables = (0..<batch).map { b in (0..<perSequence).map { ((b * perSequence + $0) * step) % pages } }
        let qSeqlen = [Int](repeating: queries, count: batch), kvSeqlen = [Int](repeating: keys, count: batch)
        let bias: any AttentionBias = causal
            ? try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: qSeqlen, kvSeqlen: kvSeqlen, blockTables: tables, pageSize: pageSize)
            : try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: qSeqlen, kvSeqlen: kvSeqlen, blockTables: tables, pageSize: pageSize)
        let kvHeads = kvHeads ?? heads, ratio = heads / kvHeads
        let query = try Self.random([1, batch * queries, kvHeads, ratio, headDimension], dtype: dtype, device: device, seed: 1)
        let cache = try (2...3).map { seed in
            try Self.cache([1, pages * pageSize, kvHeads, 1, headDimension], sharedBy: ratio, dtype: dtype, format: format, device: device,
                           seed: UInt64(seed))
        }
        return (query, cache[0].values, cache[1].values, bias, (cache[0].scaleShift, cache[1].scaleShift))
    }

    /// The mask: block-diagonal (causal or not) for varlen, bottom-right causal or none otherwise;
    /// with a `tensor` (dense cases), the tensor, under a causal mask when causal.
    func bias(tensor: Tensor? = nil) throws -> (any AttentionBias)? {
        if let tensor { return causal ? LowerTriangularMaskWithTensorBias(tensor) : tensor }
        if let sequenceLengths {
            return causal ? try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: sequenceLengths)
                : try BlockDiagonalMask.fromSeqlens(qSeqlen: sequenceLengths)
        }
        return causal ? LowerTriangularFromBottomRightMask() : nil
    }

    /// The bytes of K and V a call reads (every key of every sequence once per K/V head, as the
    /// decode kernel does): rows of K elements of `dtype`, or of `format`'s words (fp8's scale/shift
    /// word included).
    func keyValueBytes(dtype: DType, format: KeyValueFormat?) -> Int {
        let rowBytes = format.map { 4 * $0.wordsPerRow(headDimension: headDimension) + ($0 == .fp8 ? 4 : 0) } ?? headDimension * dtype.byteSize
        let rows = (sequenceLengths?.reduce(0, +) ?? batch * keys) * (kvHeads ?? heads)
        return 2 * rows * rowBytes
    }

    /// 4·B·H·Mq·Mkv·K (per sequence for varlen), halved when causal with Mq = Mkv, times 3.5 with
    /// the backward pass.
    func flops(backward: Bool) -> Double {
        let products = sequenceLengths.map { $0.reduce(0.0) { $0 + Double($1) * Double($1) } }
            ?? Double(batch) * Double(queries) * Double(keys)
        var flops = 4 * Double(heads) * products * Double(headDimension)
        if causal, queries == keys { flops /= 2 }
        return backward ? flops * 3.5 : flops
    }
}

/// `--kv-cache int4[:G] | fp8`: a quantized K/V cache format.
struct KeyValueCacheArgument: ExpressibleByArgument, CustomStringConvertible {
    /// The format named.
    var format: KeyValueFormat

    init?(argument: String) {
        if argument == "fp8" {
            format = .fp8
        } else if argument == "int4" {
            format = .int4(groups: 1)
        } else if argument.hasPrefix("int4:"), let groups = Int(argument.dropFirst(5)), KeyValueFormat.int4GroupCounts.contains(groups) {
            format = .int4(groups: groups)
        } else {
            return nil
        }
    }

    var description: String {
        switch format {
        case .int4(let groups): "int4:\(groups)"
        case .fp8: "fp8"
        }
    }
}
