#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import FMHA
import FMHATestSupport
import Testing
@testable import FMHACLI

/// `fmha run`: .npy files in, attention out, and exit code 2 with one line for bad input.
@Suite struct RunCommandTests {
    /// Writes q, k, v of the given shapes into `directory` and returns their paths.
    func writeInputs(_ directory: TemporaryDirectory, query: [Int], key: [Int], value: [Int]) throws -> [String] {
        try zip(["q.npy", "k.npy", "v.npy"], [query, key, value]).enumerated().map { index, pair in
            let path = directory.file(pair.0)
            try NumpyFile.write(try Tensor.randn(pair.1, seed: UInt64(index + 1)), path: path)
            return path
        }
    }

    func arguments(_ paths: [String], out: String, extra: [String] = []) -> [String] {
        ["--query", paths[0], "--key", paths[1], "--value", paths[2], "--out", out] + extra
    }

    @Test func roundTripMatchesTheLibrary() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let paths = try writeInputs(directory, query: [1, 3, 2, 8], key: [1, 24, 2, 8], value: [1, 24, 2, 4])
        let biasPath = directory.file("bias.json")
        let spec = #"{"type": "BlockDiagonalCausalWithOffsetPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 12, "kv_seqlen": [5, 7]}"#
        try FileBytes.write(Array(spec.utf8), path: biasPath)
        let out = directory.file("out.npy"), lse = directory.file("lse.npy")
        try RunCommand.parse(arguments(paths, out: out, extra: ["--bias", biasPath, "--lse", lse, "--scale", "0.5"])).run()

        let bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 1], kvPadding: 12,
                                                                               kvSeqlen: [5, 7])
        let inputs = try paths.map { try NumpyFile.read(path: $0) }
        let expected = try memoryEfficientAttentionForwardRequiresGrad(inputs[0], inputs[1], inputs[2], bias: bias,
                                                                       scale: 0.5)
        let written = try NumpyFile.read(path: out)
        #expect(written.shape == [1, 3, 2, 4])
        #expect(try written.toArray() == expected.output.toArray())
        #expect(try NumpyFile.read(path: lse).toArray() == expected.lse.toArray())
    }

    @Test(.enabled(if: cudaDeviceAvailable, "no CUDA device"))
    func runsOnTheGPU() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let paths = try writeInputs(directory, query: [1, 3, 2, 8], key: [1, 5, 2, 8], value: [1, 5, 2, 4])
        let cpu = directory.file("cpu.npy"), gpu = directory.file("gpu.npy")
        try RunCommand.parse(arguments(paths, out: cpu)).run()
        try RunCommand.parse(arguments(paths, out: gpu, extra: ["--device", "cuda", "--op", "cuda-reference"])).run()
        let expected = try NumpyFile.read(path: cpu).toDoubleArray(), actual = try NumpyFile.read(path: gpu).toDoubleArray()
        #expect(Tolerance.forward(.float32).worstRatio(actual, expected) <= 1)
    }

    @Test func dtypeAndDropoutOptions() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let paths = try writeInputs(directory, query: [2, 5, 8], key: [2, 6, 8], value: [2, 6, 8])
        let first = directory.file("first.npy"), second = directory.file("second.npy")
        for out in [first, second] {
            try RunCommand.parse(arguments(paths, out: out, extra: ["--dtype", "bfloat16", "--p", "0.5", "--seed", "3"])).run()
        }
        let output = try NumpyFile.read(path: first)
        #expect(output.dtype == .float32)
        #expect(try output.toArray() == NumpyFile.read(path: second).toArray())
        // bfloat16 results are exactly representable in bfloat16.
        #expect(try output.toArray().allSatisfy { Float(BFloat16($0)) == $0 })
    }

    /// A failed write of one output (here --lse into a missing folder) leaves the others unwritten.
    @Test func outputsAreWrittenTogetherOrNotAtAll() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let paths = try writeInputs(directory, query: [1, 3, 2, 8], key: [1, 5, 2, 8], value: [1, 5, 2, 4])
        let out = directory.file("out.npy")
        expectFMHAError(["missing-folder"]) {
            try RunCommand.parse(arguments(paths, out: out, extra: ["--lse", directory.path + "/missing-folder/lse.npy"])).run()
        }
        #expect(access(out, F_OK) != 0, "--out was written although --lse failed")
        #expect(access(out + ".fmha-partial-\(getpid())", F_OK) != 0, "a temporary file was left behind")
        try RunCommand.parse(arguments(paths, out: out)).run()
        #expect(try NumpyFile.read(path: out).shape == [1, 3, 2, 4])
    }

    /// Each bad input gives one clear line from `run()` and, from the command line, exit code 2.
    @Test func badInputExitsWithCodeTwo() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let paths = try writeInputs(directory, query: [1, 3, 2, 8], key: [1, 5, 2, 8], value: [1, 5, 2, 4])
        let out = directory.file("out.npy")
        let badJSON = directory.file("bad.json"), badSpec = directory.file("spec.json")
        try FileBytes.write(Array(#"{"type": "BlockDiagonalMask", "q_seqlen": [1, 2"#.utf8), path: badJSON)
        try FileBytes.write(Array(#"{"type": "BlockDiagonalMask", "q_seqlen": [1, 1]}"#.utf8), path: badSpec)
        let cases: [([String], [String])] = [
            (["--query", directory.path + "/missing.npy", "--key", paths[1], "--value", paths[2], "--out", out],
             ["missing.npy"]),
            (arguments(paths, out: out, extra: ["--bias", badJSON]), ["bad.json", "invalid JSON"]),
            (arguments([paths[0], paths[2], paths[1]], out: out), ["query/key/value", "key.shape [1, 5, 2, 4]"]),
            (arguments(paths, out: out, extra: ["--bias", badSpec]), ["BlockDiagonalMask", "2 queries", "got 3"]),
            (arguments(paths, out: out, extra: ["--op", "nope"]), ["--op", "nope"]),
            (arguments(paths, out: out, extra: ["--p", "1.5"]), ["p:", "1.5"]),
        ] + (cudaDeviceAvailable ? [] : [(arguments(paths, out: out, extra: ["--device", "cuda"]), ["cuda"])])
        for (arguments, fragments) in cases {
            let command = try RunCommand.parse(arguments)
            expectFMHAError(fragments) { try command.run() }
            #expect(FMHACommand.run(arguments: ["run"] + arguments) == 2)
        }
    }
}
