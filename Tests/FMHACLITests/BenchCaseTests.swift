import ArgumentParser
@testable import FMHACLI
import FMHA
import FMHACore
import Testing

/// `fmha bench`: dense, GQA and varlen case shapes, their FLOPs, refused spellings, and the
/// dropout, tensor-bias and paged-cache options.
struct BenchCaseTests {
    @Test func parsesDenseGroupedAndVarlenCases() throws {
        let dense = try #require(BenchCase(argument: "2,64,80,4,32,causal"))
        #expect(dense.batch == 2 && dense.queries == 64 && dense.keys == 80 && dense.causal && dense.kvHeads == nil)
        #expect(dense.flops(backward: false) == 4 * 2 * 4 * 64 * 80 * 32)

        let grouped = try #require(BenchCase(argument: "1,16,16,32,8,kv=8"))
        #expect(grouped.kvHeads == 8 && grouped.description == "1,16,16,32,8,kv=8")
        let (query, key, _, _) = try grouped.inputs(dtype: .float32, device: .cpu)
        #expect(query.shape == [1, 16, 8, 4, 8] && key.shape == [1, 16, 8, 4, 8] && key.strides[3] == 0)

        let varlen = try #require(BenchCase(argument: "varlen=3/5,2,8,causal"))
        #expect(varlen.batch == 1 && varlen.queries == 8 && varlen.sequenceLengths == [3, 5])
        #expect(varlen.flops(backward: false) == 4 * 2 * (9 + 25) * 8 / 2)
        #expect(try varlen.bias() is BlockDiagonalCausalMask)

        for bad in ["1,16,16,32,8,kv=5", "1,16,16,32", "varlen=,2,8", "varlen=3/0,2,8", "1,16,16,32,8,kv=0", "1,2,3,4,x"] {
            #expect(BenchCase(argument: bad) == nil, "\(bad)")
        }
    }

    @Test func dropoutAndTensorBiasOptions() throws {
        // A tiny forward + backward with both, dense and causal (runs, prints one JSON line per case).
        let command = try BenchCommand.parse(["--case", "1,9,11,2,8", "--case", "1,9,9,2,8,causal", "--tensor-bias",
                                              "--dropout", "0.3", "--backward", "--repeats", "1", "--json"])
        #expect(command.dropout == 0.3 && command.tensorBias && command.backward && command.cases.count == 2)
        var lines = [String]()
        try command.run { lines.append($0) }
        // One JSON object per case, saying what ran.
        #expect(lines.count == 2)
        for (line, name) in zip(lines, ["1,9,11,2,8", "1,9,9,2,8,causal"]) {
            guard case .object(let fields) = try JSONValue.parse(line) else {
                Issue.record("not a JSON object: \(line)")
                continue
            }
            #expect(fields["case"] == .string(name) && fields["causal"] == .bool(name.hasSuffix("causal")), "\(line)")
            #expect(fields["dropout"] == .number(0.3) && fields["tensor_bias"] == .bool(true), "\(line)")
            #expect(fields["mode"] == .string("fwd+bwd") && fields["dtype"] == .string("float32") && fields["device"] == .string("cpu"), "\(line)")
            #expect(fields["B"] == .number(1) && fields["Mq"] == .number(9) && fields["H"] == .number(2) && fields["Hkv"] == .number(2) && fields["K"] == .number(8), "\(line)")
            #expect(fields["Mkv"] == .number(name.hasSuffix("causal") ? 9 : 11), "\(line)")
            if case .number(let ms) = fields["ms"], case .number(let tflops) = fields["tflops"], case .string(let op) = fields["op"] {
                #expect(ms > 0 && tflops > 0 && op.hasPrefix("cpu-"), "\(line)")
            } else {
                Issue.record("ms, tflops or op missing: \(line)")
            }
        }
        let bias = try #require(BenchCase(argument: "1,9,9,2,8,causal")).bias(tensor: try Tensor.zeros([1, 2, 9, 9]))
        #expect(bias is LowerTriangularMaskWithTensorBias)
        for bad in [["--dropout", "1"], ["--dropout", "-0.1"], ["--tensor-bias", "--case", "varlen=3/4,2,8"],
                    ["--tensor-bias", "--case", "1,8,8,4,8,kv=2"]] {
            #expect(throws: (any Error).self, "\(bad)") { try BenchCommand.parse(bad) }
        }
    }

    @Test func pagedCacheOption() throws {
        // Two sequences of 3 queries (GQA 4 over 2), 40 keys each in pages of 16 (3 a sequence).
        let command = try BenchCommand.parse(["--case", "2,3,40,4,8,kv=2,causal", "--paged", "16", "--repeats", "1", "--json"])
        var lines = [String]()
        try command.run { lines.append($0) }
        #expect(lines.count == 1)
        if case .object(let fields) = try JSONValue.parse(lines.first ?? "") {
            // (No CUDA operator ran: no GPU time.)
            #expect(fields["paged"] == .number(16) && fields["gpu_ms"] == .null && fields["Mq"] == .number(3), "\(lines)")
        } else {
            Issue.record("not a JSON object: \(lines)")
        }
        let benchCase = try #require(BenchCase(argument: "2,3,40,4,8,kv=2,causal"))
        let (query, key, value, bias, _) = try benchCase.pagedInputs(pageSize: 16, dtype: .float32, device: .cpu)
        #expect(query.shape == [1, 6, 2, 2, 8] && key.shape == [1, 96, 2, 2, 8] && value.shape == key.shape && key.strides[3] == 0)
        let paged = try #require(bias as? PagedBlockDiagonalCausalWithOffsetPaddedKeysMask)
        let pages = paged.pages.blockTables.flatMap { $0 }
        #expect(pages.sorted() == Array(0..<6) && pages != Array(0..<6), "every page once, shuffled: \(pages)")
        #expect(throws: Never.self) { try Inputs(query: query, key: key, value: value, bias: bias).validate() }
        for bad in [["--paged", "0"], ["--paged", "4", "--tensor-bias"], ["--paged", "4", "--case", "varlen=3/4,2,8"]] {
            #expect(throws: (any Error).self, "\(bad)") { try BenchCommand.parse(bad) }
        }
        // Inputs past 2^22 elements repeat one drawn block.
        let large = try BenchCase.random([3, 1 << 21], dtype: .bfloat16, device: .cpu, seed: 9).toArray()
        #expect(Array(large[0..<16]) == Array(large[(1 << 22)..<((1 << 22) + 16)]) && large[0] != large[1])
    }

    @Test func quantizedCacheOption() throws {
        for (name, format) in [("int4", KeyValueFormat.int4(groups: 1)), ("int4:4", .int4(groups: 4)), ("fp8", .fp8)] {
            for paged in [[], ["--paged", "16"]] {
                let command = try BenchCommand.parse(["--case", "2,1,40,4,64,kv=2", "--kv-cache", name, "--dtype", "bfloat16",
                                                      "--repeats", "1", "--json"] + paged)
                var lines = [String]()
                try command.run { lines.append($0) }
                guard case .object(let fields) = try JSONValue.parse(lines.first ?? "") else {
                    Issue.record("not a JSON object: \(lines)")
                    continue
                }
                // K and V of 2 sequences × 40 keys × 2 K/V heads (paged: 3 pages of 16 a sequence, all read).
                let rowBytes = 4 * format.wordsPerRow(headDimension: 64) + (format == .fp8 ? 4 : 0)
                #expect(fields["kv_cache"] == .string(name == "int4" ? "int4:1" : name) && fields["kv_bytes"] == .number(Double(2 * 80 * 2 * rowBytes)),
                        "\(lines)")
            }
            let benchCase = try #require(BenchCase(argument: "2,1,40,4,64,kv=2"))
            let (query, key, value, scaleShifts) = try benchCase.inputs(dtype: .bfloat16, format: format, device: .cpu)
            #expect(key.dtype == .int32 && key.shape == [2, 40, 2, 2, format.wordsPerRow(headDimension: 64)] && key.strides[3] == 0)
            #expect(throws: Never.self) {
                try Inputs(query: query, key: key, value: value, keyScaleShift: scaleShifts.key, valueScaleShift: scaleShifts.value).validate()
            }
        }
        for bad in [["--kv-cache", "int3"], ["--kv-cache", "int4:3"], ["--kv-cache", "fp8", "--backward"], ["--kv-cache", "int4", "--dropout", "0.1"]] {
            #expect(throws: (any Error).self, "\(bad)") { try BenchCommand.parse(bad) }
        }
    }

    /// A valid shape too large for host memory gives one line naming the shape and the bytes and
    /// exit code 2 (it used to trap in the allocator): the issue's 25.6 GB query where the machine
    /// has less, and a 25.6 TB one everywhere.
    @Test func shapeTooLargeForMemoryExitsWithCodeTwo() throws {
        let issueCase = (argument: "1,100000000,100000000,1,64", bytes: 25_600_000_000)
        let cases = [issueCase, (argument: "1,100000000000,1,1,64", bytes: 25_600_000_000_000)]
        for (argument, bytes) in cases where bytes > HostMemory.capacity {
            let command = try BenchCommand.parse(["--case", argument, "--repeats", "1"])
            expectFMHAError(["shape", "expected at most", "of host memory", "needing \(bytes) bytes"]) {
                try command.run { _ in }
            }
            #expect(FMHACommand.run(arguments: ["bench", "--case", argument, "--repeats", "1"]) == 2)
        }
    }
}
