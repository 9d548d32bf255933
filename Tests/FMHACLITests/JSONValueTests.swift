import FMHA
import Testing
@testable import FMHACLI

@Suite struct JSONValueTests {
    @Test func parsesLiteralsAndNumbers() throws {
        #expect(try JSONValue.parse("null") == .null)
        #expect(try JSONValue.parse(" true ") == .bool(true))
        #expect(try JSONValue.parse("\n\t\rfalse") == .bool(false))
        let numbers: [(String, Double)] = [
            ("0", 0), ("-0", -0.0), ("7", 7), ("-12.25", -12.25), ("1.5e3", 1500), ("1E-2", 0.01), ("2e+2", 200),
            ("0.5", 0.5), ("123456789012", 123_456_789_012), ("1e-400", 0), ("9007199254740993", 9_007_199_254_740_992),
        ]
        for (text, value) in numbers {
            #expect(try JSONValue.parse(text) == .number(value), "\(text)")
        }
    }

    @Test func parsesStringsAndEscapes() throws {
        #expect(try JSONValue.parse(#""""#) == .string(""))
        #expect(try JSONValue.parse(#""plain text""#) == .string("plain text"))
        #expect(try JSONValue.parse(#""\" \\ \/ \b \f \n \r \t""#) == .string("\" \\ / \u{8} \u{C} \n \r \t"))
        #expect(try JSONValue.parse(#""caf\u00e9 \u00C9""#) == .string("café É"))
        #expect(try JSONValue.parse(#""\ud83d\ude00!""#) == .string("😀!"))
        #expect(try JSONValue.parse(#""\u0000""#) == .string("\u{0}"))
        #expect(try JSONValue.parse("\"naïve 日本 😀\"") == .string("naïve 日本 😀"))
    }

    @Test func parsesContainers() throws {
        #expect(try JSONValue.parse("[]") == .array([]))
        #expect(try JSONValue.parse("{}") == .object([:]))
        #expect(try JSONValue.parse(" [ 1 , [ 2 , { } ] , \"x\" ] ") == .array([.number(1), .array([.number(2), .object([:])]), .string("x")]))
        let object = try JSONValue.parse(#"{"type": "X", "q_seqlen": [2, 1], "nested": {"a": null, "b": [true]}}"#)
        #expect(object == .object([
            "type": .string("X"),
            "q_seqlen": .array([.number(2), .number(1)]),
            "nested": .object(["a": .null, "b": .array([.bool(true)])]),
        ]))
    }

    @Test func acceptsNestingUpToTheLimitAndNoDeeper() throws {
        let depth = JSONValue.maximumDepth
        let deepest = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        var value = try JSONValue.parse(deepest)
        for _ in 1..<depth {
            guard case .array(let elements) = value, elements.count == 1 else {
                Issue.record("unexpected structure")
                return
            }
            value = elements[0]
        }
        #expect(value == .array([]))
        let tooDeep = String(repeating: "[", count: depth + 1) + String(repeating: "]", count: depth + 1)
        expectFMHAError(["byte \(depth)", "nested deeper than \(depth)"]) { _ = try JSONValue.parse(tooDeep) }
        let tooDeepObjects = String(repeating: "{\"a\":", count: depth + 1) + "1" + String(repeating: "}", count: depth + 1)
        expectFMHAError(["nested deeper than \(depth)"]) { _ = try JSONValue.parse(tooDeepObjects) }
        // Unbalanced input far deeper than the limit is refused, not overflowing the stack.
        expectFMHAError(["nested deeper"]) { _ = try JSONValue.parse(String(repeating: "[", count: 100_000)) }
    }

    @Test(arguments: [
        ("", "byte 0", "a JSON value"),
        ("   ", "byte 3", "a JSON value"),
        ("[1,]", "byte 3", "a JSON value"),
        ("[1 2]", "byte 3", "',' or ']'"),
        ("[1,2", "byte 4", "',' or ']'"),
        ("{\"a\":1,}", "byte 7", "a string key"),
        ("{\"a\" 1}", "byte 5", "':'"),
        ("{1: 2}", "byte 1", "a string key"),
        ("{'a': 1}", "byte 1", "a string key"),
        ("{\"a\": 1 \"b\": 2}", "byte 8", "',' or '}'"),
        ("01", "byte 1", "no leading zeros"),
        ("-01", "byte 2", "no leading zeros"),
        ("1.", "byte 2", "a digit after the decimal point"),
        (".5", "byte 0", "a JSON value"),
        ("+1", "byte 0", "a JSON value"),
        ("-", "byte 1", "a digit"),
        ("--1", "byte 1", "a digit"),
        ("1e", "byte 2", "a digit in the exponent"),
        ("1e+", "byte 3", "a digit in the exponent"),
        ("1e400", "byte 0", "out of range"),
        ("-1e400", "byte 0", "out of range"),
        ("NaN", "byte 0", "a JSON value"),
        ("Infinity", "byte 0", "a JSON value"),
        ("tru", "byte 0", "'true'"),
        ("nul", "byte 0", "'null'"),
        ("True", "byte 0", "a JSON value"),
        ("\"abc", "byte 4", "'\"' closing the string"),
        ("\"a\tb\"", "byte 2", "control character"),
        ("\"a\nb\"", "byte 2", "control character"),
        ("\"\\x\"", "byte 2", "after '\\'"),
        ("\"\\", "byte 2", "an escape character"),
        ("\"\\u12G4\"", "byte 5", "four hexadecimal digits"),
        ("\"\\u12\"", "byte 5", "four hexadecimal digits"),
        ("\"\\ud800\"", "byte 1", "low surrogate"),
        ("\"\\ud800\\u0041\"", "byte 7", "low surrogate"),
        ("\"\\udc00\"", "byte 1", "a low surrogate without a high surrogate"),
        ("[1] 2", "byte 4", "the end of the input"),
        ("{} {}", "byte 3", "the end of the input"),
        ("null x", "byte 5", "the end of the input"),
        ("/* comment */ 1", "byte 0", "a JSON value"),
        ("{\"a\": 1, \"a\": 2}", "byte 9", "duplicate object key \"a\""),
        ("\u{FEFF}1", "byte 0", "a JSON value"),
    ])
    func rejectsInvalidText(text: String, offset: String, fragment: String) {
        expectFMHAError(["invalid JSON at \(offset)", fragment]) { _ = try JSONValue.parse(text) }
    }

    /// Mutated and truncated JSON either parses or throws `FMHAError`; none crash.
    @Test func survivesMutatedInputs() throws {
        var generator = SplitMix64(seed: 42)
        let seeds = [
            #"{"type": "PagedBlockDiagonalPaddedKeysMask", "q_seqlen": [1, 1], "kv_seqlen": [3, 5], "block_tables": [[0, 1], [2, 3]], "page_size": 4}"#,
            #"["\u00e9\ud83d\ude00", -1.5e-3, true, false, null, {"a": {"b": []}}]"#,
        ]
        let alphabet = Array("{}[]\",:\\u0123456789.eE+-tfn ad".utf8)
        var parsed = 0
        for iteration in 0..<3000 {
            var bytes = Array(seeds[iteration % seeds.count].utf8)
            if iteration % 3 == 0 {
                bytes = Array(bytes[0..<Int.random(in: 0...bytes.count, using: &generator)])
            } else {
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = alphabet.randomElement(using: &generator)!
                }
            }
            do {
                let value = try JSONValue.parse(String(decoding: bytes, as: UTF8.self))
                parsed += 1
                // Whatever parses must be refused or built by BiasSpec without crashing.
                _ = try? BiasSpec.parse(value, baseDirectory: "/nonexistent")
            } catch let error as FMHAError {
                #expect(error.message.hasPrefix("invalid JSON at byte "))
            }
        }
        #expect(parsed > 0)
    }
}
