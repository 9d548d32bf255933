import ArgumentParser
import FMHA
import Testing
@testable import FMHACLI

/// The `fmha` command line as a whole: usage errors and bad input exit 2 (one line on standard
/// error), `--help` exits 0, negative numbers need no `=`, and a bias file follows `--dtype`.
@Suite struct ExitCodeTests {
    @Test(arguments: [
        ["nosuch"], ["run", "--query"], ["bench", "--case", "garbage"], ["bench", "--case", "1,4,4,1,8", "--dropout", "-0.5"],
        ["bench", "--case", "1,4,4,1,8", "--op", "nope"], ["check", "--dtype", "float7"], ["info", "--arch", "sm_1"],
        ["run", "--query", "/nonexistent/q.npy", "--key", "k", "--value", "v", "--out", "o", "--scale", "-0.5"],
    ])
    func usageErrorsAndBadInputExitWithTwo(arguments: [String]) {
        #expect(FMHACommand.run(arguments: arguments) == 2, "\(arguments)")
    }

    @Test func checkPassesOnThisMachine() {
        #expect(FMHACommand.run(arguments: ["check", "--dtype", "float32"]) == 0)
    }

    @Test func helpExitsWithZero() {
        #expect(FMHACommand.run(arguments: ["--help"]) == 0)
        #expect(FMHACommand.run(arguments: ["run", "--help"]) == 0)
    }

    @Test func negativeNumbersNeedNoEquals() throws {
        let command = try RunCommand.parse(["--query", "q", "--key", "k", "--value", "v", "--out", "o", "--scale", "-0.5",
                                            "--p", "-1"])
        #expect(command.scale == -0.5 && command.p == -1)
        // Parsed, then refused by bench's own check, which names the value (not "Missing value").
        do {
            _ = try BenchCommand.parse(["--dropout", "-0.25"])
            Issue.record("a negative dropout was accepted")
        } catch {
            #expect(BenchCommand.message(for: error).contains("got -0.25"), "\(BenchCommand.message(for: error))")
        }
    }

    @Test func unknownOperatorListsTheDispatchedOnes() throws {
        #expect(throws: FMHAError.self) { try Operators.forward(required: "nope") }
        do {
            _ = try Operators.forward(required: "nope", argument: "--op")
        } catch let error as FMHAError {
            #expect(error.message.contains("--op") && error.message.contains("cpu-tiled") && error.message.contains("\"nope\""))
            #expect(!error.message.contains("cuda-flash-w"), "tuning variants are listed by fmha info, not here")
        } catch {
            Issue.record("unexpected \(error)")
        }
        #expect(try Operators.forward(required: "cpu-reference").name == "cpu-reference")
    }

    @Test func tensorBiasFollowsTheDtype() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let paths = try ["q.npy", "k.npy", "v.npy"].enumerated().map { index, name in
            let path = directory.file(name)
            try NumpyFile.write(try Tensor.randn([1, 3, 2, 8], seed: UInt64(index + 1)), path: path)
            return path
        }
        let biasValues = try Tensor.randn([1, 2, 3, 3], seed: 9)
        try NumpyFile.write(biasValues, path: directory.file("b.npy"))
        let spec = directory.file("bias.json")
        try FileBytes.write(Array(#"{"type": "Tensor", "path": "b.npy"}"#.utf8), path: spec)
        let out = directory.file("out.npy")
        try RunCommand.parse(["--query", paths[0], "--key", paths[1], "--value", paths[2], "--bias", spec,
                              "--dtype", "bfloat16", "--out", out]).run()
        let inputs = try paths.map { try NumpyFile.read(path: $0).converted(to: .bfloat16) }
        let expected = try memoryEfficientAttention(inputs[0], inputs[1], inputs[2], bias: biasValues.converted(to: .bfloat16))
        #expect(try NumpyFile.read(path: out).toArray() == expected.converted(to: .float32).toArray())
    }
}
