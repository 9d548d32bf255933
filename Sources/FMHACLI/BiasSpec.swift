import FMHA

/// Attention biases described in JSON, for `fmha run --bias spec.json`.
///
/// The specification is an object whose `"type"` is an xFormers bias class name (any name in
/// `attentionBiasTypes`, `"Tensor"` included) and whose other keys are the arguments of that
/// class's factory in xFormers' spelling:
///
/// ```json
/// {"type": "BlockDiagonalCausalWithOffsetPaddedKeysMask", "q_seqlen": [2, 1], "kv_padding": 8, "kv_seqlen": [5, 7]}
/// {"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1, 1], "kv_seqlen": [3, 5],
///  "block_tables": [[0, 1], [2, 3]], "page_size": 4}
/// {"type": "LocalAttentionFromBottomRightMask", "window_left": 1, "window_right": 2}
/// {"type": "Tensor", "path": "bias.npy"}
/// ```
///
/// Keys: `q_seqlen`, `kv_seqlen`, `kv_padding`, `kv_seqstarts`, `block_tables`, `page_size`,
/// `window_size`, `window_left`, `window_right` and `path` (a `.npy` file, relative to the
/// specification's folder unless absolute). `kv_seqlen` is optional for the block-diagonal masks
/// built from lengths alone. `kv_seqstarts` has one entry per sequence for the paged gappy masks
/// and one more (the key total) for the unpaged ones, as upstream. Unknown or missing keys,
/// non-integer numbers and values of the wrong JSON type are refused with an `FMHAError` naming
/// the key; the factories' own checks apply after that.
public enum BiasSpec {
    /// The bias that `json` describes; relative `path`s are resolved against `baseDirectory`.
    public static func parse(_ json: JSONValue, baseDirectory: String) throws -> any AttentionBias {
        guard case .object(let members) = json else {
            throw FMHAError.invalidArgument("bias specification", expected: "a JSON object with a \"type\" key",
                                            got: json.kindDescription)
        }
        guard let typeValue = members["type"] else {
            throw FMHAError.invalidArgument("type", expected: "a bias type name (\(knownTypesText))", got: "no \"type\" key")
        }
        guard case .string(let typeName) = typeValue else {
            throw FMHAError.invalidArgument("type", expected: "a string naming a bias type", got: typeValue.kindDescription)
        }
        guard let recipe = recipes[typeName] else {
            throw FMHAError.invalidArgument("type", expected: "one of \(knownTypesText)", got: "\"\(typeName)\"")
        }
        var arguments = members
        arguments["type"] = nil
        let allowed = recipe.requiredKeys + recipe.optionalKeys
        if let unknown = arguments.keys.sorted().first(where: { !allowed.contains($0) }) {
            let takes = allowed.isEmpty ? "no keys besides \"type\""
                : (recipe.requiredKeys + recipe.optionalKeys.map { "\($0) (optional)" }).joined(separator: ", ")
            throw FMHAError(.invalidArgument, "\(unknown): unknown key for \(typeName), which takes \(takes).")
        }
        if let missing = recipe.requiredKeys.first(where: { arguments[$0] == nil }) {
            throw FMHAError(.invalidArgument, "\(missing): no \"\(missing)\" key; \(typeName) needs "
                                              + "\(recipe.requiredKeys.joined(separator: ", ")).")
        }
        do {
            return try recipe.build(BiasArguments(members: arguments, baseDirectory: baseDirectory))
        } catch let error as FMHAError {
            throw FMHAError(error.kind, jsonSpelling(error.message, keys: allowed))
        }
    }

    /// `message` (a factory's error) with the Swift names of `keys` (`qSeqlen`, `blockTables`)
    /// written as the JSON keys the user wrote (`q_seqlen`, `block_tables`).
    static func jsonSpelling(_ message: String, keys: [String]) -> String {
        var text = message
        for key in keys where key.contains("_") {
            let parts = key.split(separator: "_")
            let swiftName = String(parts[0]) + parts.dropFirst().map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
            text = replacingIdentifier(swiftName, with: key, in: text)
        }
        return text
    }

    /// `text` with every occurrence of the identifier `name` (not part of a longer identifier)
    /// replaced by `replacement`.
    private static func replacingIdentifier(_ name: String, with replacement: String, in text: String) -> String {
        func isIdentifierCharacter(_ character: Character?) -> Bool {
            character.map { $0.isLetter || $0.isNumber || $0 == "_" } ?? false
        }
        var result = "", rest = Substring(text)
        while let range = rest.firstRange(of: name) {
            let before = range.lowerBound == rest.startIndex ? result.last : rest[rest.index(before: range.lowerBound)]
            let after = range.upperBound == rest.endIndex ? nil : rest[range.upperBound]
            result += rest[..<range.lowerBound]
            result += isIdentifierCharacter(before) || isIdentifierCharacter(after) ? name : replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }

    /// The bias described by the JSON file at `path`; relative tensor paths are resolved against
    /// the file's folder.
    public static func load(path: String) throws -> any AttentionBias {
        let bytes = try FileBytes.read(path: path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw FMHAError(.invalidArgument, "\(path): the bias specification is not valid UTF-8 text.")
        }
        let json: JSONValue
        do {
            json = try JSONValue.parse(text)
        } catch let error as FMHAError {
            throw FMHAError(error.kind, "\(path): \(error.message)")
        }
        do {
            return try parse(json, baseDirectory: directory(of: path))
        } catch let error as FMHAError where !error.message.hasPrefix(path) {
            throw FMHAError(error.kind, "\(path): \(error.message)")
        }
    }

    /// The folder part of `path` (`""` when it has none, `/` for files at the root).
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// `path` itself when absolute or when `baseDirectory` is empty, else `baseDirectory/path`.
    static func resolve(_ path: String, baseDirectory: String) -> String {
        if path.hasPrefix("/") || baseDirectory.isEmpty { return path }
        return baseDirectory.hasSuffix("/") ? baseDirectory + path : baseDirectory + "/" + path
    }

    /// Every accepted type name, in `attentionBiasTypes` order.
    static var knownTypes: [String] { attentionBiasTypes.map { $0.name }.filter { recipes[$0] != nil } }

    private static var knownTypesText: String { knownTypes.joined(separator: ", ") }

    /// How to build one bias type: its keys and a closure calling its factory.
    struct Recipe: Sendable {
        let requiredKeys: [String]
        let optionalKeys: [String]
        let build: @Sendable (BiasArguments) throws -> any AttentionBias
    }

    /// A table entry for `type`, keyed by its xFormers class name.
    private static func entry(_ type: any AttentionBias.Type, _ requiredKeys: [String], optional optionalKeys: [String] = [],
                              _ build: @escaping @Sendable (BiasArguments) throws -> any AttentionBias) -> (String, Recipe) {
        (type.name, Recipe(requiredKeys: requiredKeys, optionalKeys: optionalKeys, build: build))
    }

    private static let seqlens = ["q_seqlen"], padded = ["q_seqlen", "kv_padding", "kv_seqlen"]
    private static let paged = ["q_seqlen", "kv_seqlen", "block_tables", "page_size"]
    private static let gappy = ["q_seqlen", "kv_seqstarts", "kv_seqlen"]
    private static let pagedGappy = ["q_seqlen", "kv_seqstarts", "kv_seqlen", "block_tables", "page_size"]
    private static let sides = ["window_left", "window_right"]

    /// Type name → recipe, for every bias type.
    static let recipes: [String: Recipe] = Dictionary(uniqueKeysWithValues: [
        entry(Tensor.self, ["path"]) { try $0.tensor("path") },
        entry(LowerTriangularMask.self, []) { _ in LowerTriangularMask() },
        entry(LowerTriangularMaskWithTensorBias.self, ["path"]) { LowerTriangularMaskWithTensorBias(try $0.tensor("path")) },
        entry(LowerTriangularFromBottomRightMask.self, []) { _ in LowerTriangularFromBottomRightMask() },
        entry(LowerTriangularFromBottomRightLocalAttentionMask.self, ["window_size"]) {
            try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: $0.integer("window_size"))
        },
        entry(LocalAttentionFromBottomRightMask.self, sides) {
            try LocalAttentionFromBottomRightMask(windowLeft: $0.integer("window_left"), windowRight: $0.integer("window_right"))
        },
        entry(BlockDiagonalMask.self, seqlens, optional: ["kv_seqlen"]) {
            try BlockDiagonalMask.fromSeqlens(qSeqlen: $0.integers("q_seqlen"), kvSeqlen: $0.optionalIntegers("kv_seqlen"))
        },
        entry(BlockDiagonalCausalMask.self, seqlens, optional: ["kv_seqlen"]) {
            try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: $0.integers("q_seqlen"), kvSeqlen: $0.optionalIntegers("kv_seqlen"))
        },
        entry(BlockDiagonalCausalFromBottomRightMask.self, seqlens, optional: ["kv_seqlen"]) {
            try BlockDiagonalCausalFromBottomRightMask.fromSeqlens(qSeqlen: $0.integers("q_seqlen"),
                                                                   kvSeqlen: $0.optionalIntegers("kv_seqlen"))
        },
        entry(BlockDiagonalCausalLocalAttentionMask.self, seqlens + ["window_size"], optional: ["kv_seqlen"]) {
            try $0.blockDiagonal().makeLocalAttention(windowSize: $0.integer("window_size"))
        },
        entry(BlockDiagonalCausalLocalAttentionFromBottomRightMask.self, seqlens + ["window_size"], optional: ["kv_seqlen"]) {
            try $0.blockDiagonal().makeLocalAttentionFromBottomRight(windowSize: $0.integer("window_size"))
        },
        entry(BlockDiagonalPaddedKeysMask.self, padded) {
            try BlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: $0.integers("q_seqlen"), kvPadding: $0.integer("kv_padding"),
                                                        kvSeqlen: $0.integers("kv_seqlen"))
        },
        entry(BlockDiagonalCausalWithOffsetPaddedKeysMask.self, padded) {
            try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvPadding: $0.integer("kv_padding"), kvSeqlen: $0.integers("kv_seqlen"))
        },
        entry(BlockDiagonalLocalAttentionPaddedKeysMask.self, padded + sides) {
            try BlockDiagonalLocalAttentionPaddedKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvPadding: $0.integer("kv_padding"), kvSeqlen: $0.integers("kv_seqlen"),
                windowLeft: $0.integer("window_left"), windowRight: $0.integer("window_right"))
        },
        entry(BlockDiagonalCausalLocalAttentionPaddedKeysMask.self, padded + ["window_size"]) {
            try BlockDiagonalCausalLocalAttentionPaddedKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvPadding: $0.integer("kv_padding"), kvSeqlen: $0.integers("kv_seqlen"),
                windowSize: $0.integer("window_size"))
        },
        entry(PagedBlockDiagonalPaddedKeysMask.self, paged) {
            try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvSeqlen: $0.integers("kv_seqlen"),
                blockTables: $0.integerRows("block_tables"), pageSize: $0.integer("page_size"))
        },
        entry(PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.self, paged) {
            try PagedBlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvSeqlen: $0.integers("kv_seqlen"),
                blockTables: $0.integerRows("block_tables"), pageSize: $0.integer("page_size"))
        },
        entry(PagedBlockDiagonalCausalLocalPaddedKeysMask.self, paged + ["window_size"]) {
            try PagedBlockDiagonalCausalLocalPaddedKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvSeqlen: $0.integers("kv_seqlen"),
                blockTables: $0.integerRows("block_tables"), pageSize: $0.integer("page_size"),
                windowSize: $0.integer("window_size"))
        },
        entry(BlockDiagonalGappyKeysMask.self, gappy) {
            try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: $0.integers("q_seqlen"), kvSeqstarts: $0.integers("kv_seqstarts"),
                                                       kvSeqlen: $0.integers("kv_seqlen"))
        },
        entry(BlockDiagonalCausalWithOffsetGappyKeysMask.self, gappy) {
            try BlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvSeqstarts: $0.integers("kv_seqstarts"), kvSeqlen: $0.integers("kv_seqlen"))
        },
        entry(BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.self, gappy + sides) {
            try BlockDiagonalLocalAttentionFromBottomRightGappyKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvSeqstarts: $0.integers("kv_seqstarts"), kvSeqlen: $0.integers("kv_seqlen"),
                windowLeft: $0.integer("window_left"), windowRight: $0.integer("window_right"))
        },
        entry(PagedBlockDiagonalGappyKeysMask.self, pagedGappy) {
            try PagedBlockDiagonalGappyKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvSeqstarts: $0.integers("kv_seqstarts"), kvSeqlen: $0.integers("kv_seqlen"),
                blockTables: $0.integerRows("block_tables"), pageSize: $0.integer("page_size"))
        },
        entry(PagedBlockDiagonalCausalWithOffsetGappyKeysMask.self, pagedGappy) {
            try PagedBlockDiagonalCausalWithOffsetGappyKeysMask.fromSeqlens(
                qSeqlen: $0.integers("q_seqlen"), kvSeqstarts: $0.integers("kv_seqstarts"), kvSeqlen: $0.integers("kv_seqlen"),
                blockTables: $0.integerRows("block_tables"), pageSize: $0.integer("page_size"))
        },
    ])
}

/// The arguments of one bias specification, read with type checks that name the key.
struct BiasArguments {
    /// The specification's members, without `"type"`.
    let members: [String: JSONValue]
    /// Folder that relative `path`s are resolved against.
    let baseDirectory: String

    /// Integers up to 2⁵³ in magnitude are exactly representable as JSON numbers read as `Double`.
    private static let integerLimit = 9_007_199_254_740_992.0

    /// The value of `key`, which `BiasSpec.parse` has checked is present when required.
    private func value(_ key: String) throws -> JSONValue {
        guard let value = members[key] else {
            throw FMHAError.invalidArgument(key, expected: "a value", got: "no such key")
        }
        return value
    }

    /// `value` (found at `location`) as an `Int`.
    private func integer(_ value: JSONValue, at location: String) throws -> Int {
        guard case .number(let number) = value else {
            throw FMHAError.invalidArgument(location, expected: "an integer", got: value.kindDescription)
        }
        guard number.rounded(.towardZero) == number, abs(number) <= BiasArguments.integerLimit else {
            throw FMHAError.invalidArgument(location, expected: "an integer (at most 2^53 in magnitude)",
                                            got: JSONValue.numberText(number))
        }
        return Int(number)
    }

    /// `value` (found at `location`) as an array of `Int`.
    private func integers(_ value: JSONValue, at location: String) throws -> [Int] {
        guard case .array(let elements) = value else {
            throw FMHAError.invalidArgument(location, expected: "an array of integers", got: value.kindDescription)
        }
        return try elements.enumerated().map { try integer($1, at: "\(location)[\($0)]") }
    }

    /// The integer at `key`.
    func integer(_ key: String) throws -> Int {
        try integer(value(key), at: key)
    }

    /// The array of integers at `key`.
    func integers(_ key: String) throws -> [Int] {
        try integers(value(key), at: key)
    }

    /// The array of integers at `key`, or `nil` when the key is absent.
    func optionalIntegers(_ key: String) throws -> [Int]? {
        try members[key].map { try integers($0, at: key) }
    }

    /// The array of arrays of integers at `key` (a page table).
    func integerRows(_ key: String) throws -> [[Int]] {
        let rows = try value(key)
        guard case .array(let elements) = rows else {
            throw FMHAError.invalidArgument(key, expected: "an array of arrays of integers", got: rows.kindDescription)
        }
        return try elements.enumerated().map { try integers($1, at: "\(key)[\($0)]") }
    }

    /// The tensor in the `.npy` file whose path is the string at `key`.
    func tensor(_ key: String) throws -> Tensor {
        let path = try value(key)
        guard case .string(let text) = path, !text.isEmpty else {
            throw FMHAError.invalidArgument(key, expected: "a non-empty string naming a .npy file", got: path.kindDescription)
        }
        return try NumpyFile.read(path: BiasSpec.resolve(text, baseDirectory: baseDirectory))
    }

    /// `BlockDiagonalMask.fromSeqlens` with `q_seqlen` and the optional `kv_seqlen`.
    func blockDiagonal() throws -> BlockDiagonalMask {
        try BlockDiagonalMask.fromSeqlens(qSeqlen: integers("q_seqlen"), kvSeqlen: optionalIntegers("kv_seqlen"))
    }
}
