import FMHA
import Testing
@testable import FMHACLI

@Suite struct BiasSpecTests {
    /// Parses `json` text into a bias.
    func bias(_ json: String, baseDirectory: String = "") throws -> any AttentionBias {
        try BiasSpec.parse(JSONValue.parse(json), baseDirectory: baseDirectory)
    }

    /// The dense materialized bias, for comparisons.
    func dense(_ bias: any AttentionBias, _ shape: [Int]) throws -> [Float] {
        try bias.materialize(shape: shape).toArray()
    }

    @Test func buildsEveryBiasType() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try NumpyFile.write(Tensor.randn([1, 2, 3, 4], seed: 3), path: directory.file("bias.npy"))
        let cases: [(String, any AttentionBias.Type)] = [
            (#"{"type": "Tensor", "path": "bias.npy"}"#, Tensor.self),
            (#"{"type": "LowerTriangularMask"}"#, LowerTriangularMask.self),
            (#"{"type": "LowerTriangularMaskWithTensorBias", "path": "bias.npy"}"#, LowerTriangularMaskWithTensorBias.self),
            (#"{"type": "LowerTriangularFromBottomRightMask"}"#, LowerTriangularFromBottomRightMask.self),
            (#"{"type": "LowerTriangularFromBottomRightLocalAttentionMask", "window_size": 2}"#,
             LowerTriangularFromBottomRightLocalAttentionMask.self),
            (#"{"type": "LocalAttentionFromBottomRightMask", "window_left": 1, "window_right": 2}"#,
             LocalAttentionFromBottomRightMask.self),
            (#"{"type": "BlockDiagonalMask", "q_seqlen": [2, 3]}"#, BlockDiagonalMask.self),
            (#"{"type": "BlockDiagonalCausalMask", "q_seqlen": [2, 3], "kv_seqlen": [2, 4]}"#, BlockDiagonalCausalMask.self),
            (#"{"type": "BlockDiagonalCausalFromBottomRightMask", "q_seqlen": [2, 3], "kv_seqlen": [4, 3]}"#,
             BlockDiagonalCausalFromBottomRightMask.self),
            (#"{"type": "BlockDiagonalCausalLocalAttentionMask", "q_seqlen": [4, 6], "window_size": 2}"#,
             BlockDiagonalCausalLocalAttentionMask.self),
            (#"{"type": "BlockDiagonalCausalLocalAttentionFromBottomRightMask", "q_seqlen": [2, 1], "kv_seqlen": [3, 4], "window_size": 2}"#,
             BlockDiagonalCausalLocalAttentionFromBottomRightMask.self),
            (#"{"type": "BlockDiagonalPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 8, "kv_seqlen": [5, 7]}"#,
             BlockDiagonalPaddedKeysMask.self),
            (#"{"type": "BlockDiagonalCausalWithOffsetPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 8, "kv_seqlen": [5, 7]}"#,
             BlockDiagonalCausalWithOffsetPaddedKeysMask.self),
            (#"{"type": "BlockDiagonalLocalAttentionPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 8, "kv_seqlen": [5, 7], "window_left": 2, "window_right": 0}"#,
             BlockDiagonalLocalAttentionPaddedKeysMask.self),
            (#"{"type": "BlockDiagonalCausalLocalAttentionPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 8, "kv_seqlen": [5, 7], "window_size": 3}"#,
             BlockDiagonalCausalLocalAttentionPaddedKeysMask.self),
            (#"{"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1, 1], "kv_seqlen": [3, 5], "block_tables": [[0, 1], [2, 3]], "page_size": 4}"#,
             PagedBlockDiagonalPaddedKeysMask.self),
            (#"{"type": "PagedBlockDiagonalCausalWithOffsetPaddedKeysMask", "q_seqlen": [2, 1], "kv_seqlen": [3, 5], "block_tables": [[0, 1], [2, 3]], "page_size": 4}"#,
             PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.self),
            (#"{"type": "PagedBlockDiagonalCausalLocalPaddedKeysMask", "q_seqlen": [2, 1], "kv_seqlen": [3, 5], "block_tables": [[0, 1], [2, 3]], "page_size": 4, "window_size": 2}"#,
             PagedBlockDiagonalCausalLocalPaddedKeysMask.self),
            (#"{"type": "BlockDiagonalGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [0, 5, 12], "kv_seqlen": [3, 4]}"#,
             BlockDiagonalGappyKeysMask.self),
            (#"{"type": "BlockDiagonalCausalWithOffsetGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [0, 5, 12], "kv_seqlen": [3, 4]}"#,
             BlockDiagonalCausalWithOffsetGappyKeysMask.self),
            (#"{"type": "BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [0, 5, 12], "kv_seqlen": [3, 4], "window_left": 1, "window_right": 0}"#,
             BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.self),
            (#"{"type": "PagedBlockDiagonalGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [1, 0], "kv_seqlen": [3, 6], "block_tables": [[0, 1], [3, 2]], "page_size": 4}"#,
             PagedBlockDiagonalGappyKeysMask.self),
            (#"{"type": "PagedBlockDiagonalCausalWithOffsetGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [1, 0], "kv_seqlen": [3, 6], "block_tables": [[0, 1], [3, 2]], "page_size": 4}"#,
             PagedBlockDiagonalCausalWithOffsetGappyKeysMask.self),
        ]
        for (json, expected) in cases {
            let built = try bias(json, baseDirectory: directory.path)
            #expect(type(of: built) == expected, "\(json)")
        }
        // The cases cover every bias type, and the table knows exactly those names.
        let covered = Set(cases.map { $0.1.name })
        #expect(covered == Set(attentionBiasTypes.map { $0.name }))
        #expect(Set(BiasSpec.recipes.keys) == covered)
        #expect(BiasSpec.knownTypes == attentionBiasTypes.map { $0.name })
    }

    @Test func paddedKeysExampleMatchesTheFactory() throws {
        let parsed = try bias(#"{"type": "BlockDiagonalCausalWithOffsetPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 8, "kv_seqlen": [5, 7]}"#)
        let direct = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 1], kvPadding: 8, kvSeqlen: [5, 7])
        #expect(parsed as? BlockDiagonalCausalWithOffsetPaddedKeysMask == direct)
        #expect(try dense(parsed, [1, 2, 3, 16]) == dense(direct, [1, 2, 3, 16]))
    }

    @Test func pagedExampleMatchesTheFactory() throws {
        let parsed = try bias(#"{"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1, 1], "kv_seqlen": [3, 5], "block_tables": [[0, 1], [2, 3]], "page_size": 4}"#)
        let direct = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 1], kvSeqlen: [3, 5],
                                                                      blockTables: [[0, 1], [2, 3]], pageSize: 4)
        #expect(try dense(parsed, [2, 16]) == dense(direct, [2, 16]))
    }

    @Test func localAttentionExampleMatchesTheDocumentation() throws {
        let parsed = try bias(#"{"type": "LocalAttentionFromBottomRightMask", "window_left": 1, "window_right": 2}"#)
        let direct = try LocalAttentionFromBottomRightMask(windowLeft: 1, windowRight: 2)
        let mask = try dense(parsed, [4, 4])
        #expect(mask == (try dense(direct, [4, 4])))
        let rows = (0..<4).map { row in (0..<4).map { mask[row * 4 + $0] == 0 ? "1" : "0" }.joined() }
        #expect(rows == ["1110", "1111", "0111", "0011"])
    }

    @Test func buildsLocalBlockDiagonalMasksFromBlockDiagonalMask() throws {
        let topLeft = try bias(#"{"type": "BlockDiagonalCausalLocalAttentionMask", "q_seqlen": [4, 6], "window_size": 2}"#)
        let direct = try BlockDiagonalMask.fromSeqlens(qSeqlen: [4, 6]).makeLocalAttention(windowSize: 2)
        #expect(try dense(topLeft, [10, 10]) == dense(direct, [10, 10]))
        let bottomRight = try bias(#"{"type": "BlockDiagonalCausalLocalAttentionFromBottomRightMask", "q_seqlen": [2, 1], "kv_seqlen": [3, 4], "window_size": 2}"#)
        let directBottomRight = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 1], kvSeqlen: [3, 4])
            .makeLocalAttentionFromBottomRight(windowSize: 2)
        #expect(try dense(bottomRight, [3, 7]) == dense(directBottomRight, [3, 7]))
    }

    @Test func gappyStartsFollowUpstreamConventions() throws {
        let unpaged = try bias(#"{"type": "BlockDiagonalGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [0, 5, 12], "kv_seqlen": [3, 4]}"#)
        let direct = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [2, 1], kvSeqstarts: [0, 5, 12], kvSeqlen: [3, 4])
        #expect(try dense(unpaged, [3, 12]) == dense(direct, [3, 12]))
        // Unpaged masks need the key total as a final start; paged ones have one start per sequence.
        expectFMHAError(["kv_seqstarts", "3 entries"]) {
            _ = try bias(#"{"type": "BlockDiagonalGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [0, 5], "kv_seqlen": [3, 4]}"#)
        }
        expectFMHAError(["kv_seqstarts"]) {
            _ = try bias(#"{"type": "PagedBlockDiagonalGappyKeysMask", "q_seqlen": [2, 1], "kv_seqstarts": [1, 0, 8], "kv_seqlen": [3, 6], "block_tables": [[0, 1], [3, 2]], "page_size": 4}"#)
        }
    }

    @Test func tensorPathsResolveAgainstTheSpecificationFolder() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let tensor = try Tensor(shape: [1, 1, 2, 2], scalars: [Float(0.5), -1, 2, 0])
        try NumpyFile.write(tensor, path: directory.file("bias.npy"))
        let specPath = directory.file("spec.json")
        try FileBytes.write(Array(#"{"type": "LowerTriangularMaskWithTensorBias", "path": "bias.npy"}"#.utf8), path: specPath)
        let loaded = try BiasSpec.load(path: specPath)
        let causal = try #require(loaded as? LowerTriangularMaskWithTensorBias)
        #expect(try causal.bias.toArray() == [0.5, -1, 2, 0])
        #expect(try dense(loaded, [1, 1, 2, 2]) == [0.5, -.infinity, 2, 0])
        // Absolute paths ignore the base directory.
        let absolute = try bias("{\"type\": \"Tensor\", \"path\": \"\(directory.path)/bias.npy\"}", baseDirectory: "/elsewhere")
        #expect(try (absolute as? Tensor)?.toArray() == [0.5, -1, 2, 0])
        expectFMHAError(["/elsewhere/bias.npy", "No such file or directory"]) {
            _ = try bias(#"{"type": "Tensor", "path": "bias.npy"}"#, baseDirectory: "/elsewhere")
        }
        #expect(BiasSpec.directory(of: "spec.json") == "")
        #expect(BiasSpec.directory(of: "/spec.json") == "/")
        #expect(BiasSpec.directory(of: "a/b/spec.json") == "a/b")
        #expect(BiasSpec.resolve("x.npy", baseDirectory: "") == "x.npy")
        #expect(BiasSpec.resolve("x.npy", baseDirectory: "/") == "/x.npy")
        #expect(BiasSpec.resolve("x.npy", baseDirectory: "a/b") == "a/b/x.npy")
    }

    @Test func rejectsBadSpecificationShapes() {
        expectFMHAError(["bias specification", "a JSON object", "an array"]) { _ = try bias("[1]") }
        expectFMHAError(["type", "no \"type\" key", "BlockDiagonalMask"]) { _ = try bias(#"{"q_seqlen": [1]}"#) }
        expectFMHAError(["type", "a string", "the number 3"]) { _ = try bias(#"{"type": 3}"#) }
        expectFMHAError(["type", "\"BlockDiagonalMasks\"", "one of Tensor, LowerTriangularMask,",
                         "PagedBlockDiagonalCausalWithOffsetGappyKeysMask"]) {
            _ = try bias(#"{"type": "BlockDiagonalMasks", "q_seqlen": [1]}"#)
        }
    }

    @Test func rejectsUnknownAndMissingKeys() {
        expectFMHAError(["kv_seqlens", "unknown key", "BlockDiagonalMask", "q_seqlen, kv_seqlen"]) {
            _ = try bias(#"{"type": "BlockDiagonalMask", "q_seqlen": [1], "kv_seqlens": [1]}"#)
        }
        expectFMHAError(["window_size", "unknown key", "no keys besides \"type\""]) {
            _ = try bias(#"{"type": "LowerTriangularMask", "window_size": 3}"#)
        }
        expectFMHAError(["page_size", "no \"page_size\" key"]) {
            _ = try bias(#"{"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1, 1], "kv_seqlen": [3, 5], "block_tables": [[0, 1], [2, 3]]}"#)
        }
        expectFMHAError(["q_seqlen", "no \"q_seqlen\" key"]) { _ = try bias(#"{"type": "BlockDiagonalCausalMask"}"#) }
        expectFMHAError(["path", "no \"path\" key"]) { _ = try bias(#"{"type": "Tensor"}"#) }
    }

    @Test func rejectsValuesOfTheWrongKind() throws {
        let local = #"{"type": "LowerTriangularFromBottomRightLocalAttentionMask", "window_size": "#
        expectFMHAError(["window_size", "an integer", "1.5"]) { _ = try bias(local + "1.5}") }
        expectFMHAError(["window_size", "an integer", "1e+100"]) { _ = try bias(local + "1e100}") }
        expectFMHAError(["window_size", "an integer", "9007199254740994"]) { _ = try bias(local + "9007199254740994}") }
        expectFMHAError(["window_size", "an integer", "the string \"3\""]) { _ = try bias(local + "\"3\"}") }
        expectFMHAError(["window_size", "an integer", "an array"]) { _ = try bias(local + "[3]}") }
        expectFMHAError(["window_size", "an integer", "null"]) { _ = try bias(local + "null}") }
        expectFMHAError(["window_size", "an integer", "the boolean true"]) { _ = try bias(local + "true}") }
        #expect(try type(of: bias(local + "2.0}")) == LowerTriangularFromBottomRightLocalAttentionMask.self)
        #expect(try type(of: bias(local + "3e0}")) == LowerTriangularFromBottomRightLocalAttentionMask.self)

        expectFMHAError(["q_seqlen", "an array of integers", "the number 2"]) {
            _ = try bias(#"{"type": "BlockDiagonalMask", "q_seqlen": 2}"#)
        }
        expectFMHAError(["q_seqlen[1]", "an integer", "the string \"2\""]) {
            _ = try bias(#"{"type": "BlockDiagonalMask", "q_seqlen": [1, "2"]}"#)
        }
        expectFMHAError(["kv_seqlen[0]", "an integer", "0.5"]) {
            _ = try bias(#"{"type": "BlockDiagonalMask", "q_seqlen": [1], "kv_seqlen": [0.5]}"#)
        }
        let paged = #"{"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1, 1], "kv_seqlen": [3, 5], "page_size": 4, "block_tables": "#
        expectFMHAError(["block_tables[0][1]", "an integer", "1.5"]) { _ = try bias(paged + "[[0, 1.5], [2, 3]]}") }
        expectFMHAError(["block_tables[0]", "an array of integers", "the number 0"]) { _ = try bias(paged + "[0, 1]}") }
        expectFMHAError(["block_tables", "an array of arrays of integers", "an object"]) { _ = try bias(paged + "{}}") }
        expectFMHAError(["path", "a non-empty string", "the number 1"]) { _ = try bias(#"{"type": "Tensor", "path": 1}"#) }
        expectFMHAError(["path", "a non-empty string"]) { _ = try bias(#"{"type": "Tensor", "path": ""}"#) }
    }

    /// Factory errors name the JSON keys (not the Swift parameters) and nothing in Swift spelling.
    @Test func passesFactoryErrorsThrough() {
        expectFMHAError(["window_size", "a window size > 0", "0"]) {
            _ = try bias(#"{"type": "LowerTriangularFromBottomRightLocalAttentionMask", "window_size": 0}"#)
        }
        expectFMHAError(["window_left", "≥ 0", "-1"]) {
            _ = try bias(#"{"type": "LocalAttentionFromBottomRightMask", "window_left": -1, "window_right": 2}"#)
        }
        expectFMHAError(["kv_seqlen[1]", "kv_padding"]) {
            _ = try bias(#"{"type": "BlockDiagonalPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 4, "kv_seqlen": [3, 7]}"#)
        }
        expectFMHAError(["kv_seqlen", "one entry per q_seqlen entry"]) {
            _ = try bias(#"{"type": "BlockDiagonalMask", "q_seqlen": [2, 1], "kv_seqlen": [3]}"#)
        }
        expectFMHAError(["q_seqlen", "at least one sequence length"]) {
            _ = try bias(#"{"type": "BlockDiagonalCausalMask", "q_seqlen": []}"#)
        }
        expectFMHAError(["kv_seqlen[0]", "num_keys ≥ num_queries"]) {
            _ = try bias(#"{"type": "BlockDiagonalCausalFromBottomRightMask", "q_seqlen": [3], "kv_seqlen": [2]}"#)
        }
        expectFMHAError(["block_tables[0][1]", "a page index ≥ 0"]) {
            _ = try bias(#"{"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1, 1], "kv_seqlen": [3, 5], "block_tables": [[0, -1], [2, 3]], "page_size": 4}"#)
        }
        expectFMHAError(["page_size", "> 0"]) {
            _ = try bias(#"{"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1], "kv_seqlen": [0], "block_tables": [[0]], "page_size": 0}"#)
        }
        let mismatched = #"{"type": "BlockDiagonalMask", "q_seqlen": [2, 1], "kv_seqlen": [3]}"#
        let error = catchError { _ = try bias(mismatched) }
        #expect(error != nil && error?.message.contains("Seqlen") == false, "\(error?.message ?? "no error")")
    }

    /// The error `body` throws, if it throws an `FMHAError`.
    func catchError(_ body: () throws -> Void) -> FMHAError? {
        do {
            try body()
            return nil
        } catch {
            return error as? FMHAError
        }
    }

    @Test func loadNamesTheFileInFactoryErrors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("bias.json")
        try FileBytes.write(Array(#"{"type": "BlockDiagonalCausalMask", "q_seqlen": []}"#.utf8), path: path)
        expectFMHAError([path + ": q_seqlen", "at least one sequence length"]) { _ = try BiasSpec.load(path: path) }
    }

    @Test func loadReportsFileAndJSONErrors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let missing = directory.path + "/missing.json"
        expectFMHAError(["cannot open", missing, "No such file or directory"]) { _ = try BiasSpec.load(path: missing) }
        let broken = directory.file("broken.json")
        try FileBytes.write(Array(#"{"type": "LowerTriangularMask",}"#.utf8), path: broken)
        expectFMHAError([broken, "invalid JSON at byte 31", "a string key"]) { _ = try BiasSpec.load(path: broken) }
        let binary = directory.file("binary.json")
        try FileBytes.write([0x7B, 0xFF, 0xFE, 0x7D], path: binary)
        expectFMHAError([binary, "not valid UTF-8"]) { _ = try BiasSpec.load(path: binary) }
        let valid = directory.file("valid.json")
        try FileBytes.write(Array(" {\"type\": \"LowerTriangularMask\"}\n".utf8), path: valid)
        #expect(try type(of: BiasSpec.load(path: valid)) == LowerTriangularMask.self)
    }
}
