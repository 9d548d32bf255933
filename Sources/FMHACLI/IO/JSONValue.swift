import FMHA

/// A JSON value, as read by the small strict parser the command uses for bias specifications.
public enum JSONValue: Equatable, Sendable {
    /// `null`.
    case null
    /// `true` or `false`.
    case bool(Bool)
    /// A number; every JSON number is read as the nearest `Double`.
    case number(Double)
    /// A string, escapes decoded.
    case string(String)
    /// An array.
    case array([JSONValue])
    /// An object; keys are unique.
    case object([String: JSONValue])

    /// The deepest nesting of arrays and objects `parse` accepts.
    public static let maximumDepth = 512

    /// Parses `text` as one JSON value (RFC 8259), surrounded by optional whitespace.
    ///
    /// Strict: no comments, trailing commas, single quotes, leading zeros, lone surrogates,
    /// unescaped control characters, duplicate object keys, numbers beyond `Double`'s range, or
    /// nesting deeper than `maximumDepth`. Errors give the byte offset and what was expected.
    public static func parse(_ text: String) throws -> JSONValue {
        var parser = JSONParser(bytes: Array(text.utf8))
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.position == parser.bytes.count else {
            throw parser.syntaxError("the end of the input after the JSON value")
        }
        return value
    }

    /// "an array", "a number 1.5"…: what this value is, for error messages.
    var kindDescription: String {
        switch self {
        case .null: "null"
        case .bool(let value): "the boolean \(value)"
        case .number(let value): "the number \(JSONValue.numberText(value))"
        case .string(let value): "the string \"\(value)\""
        case .array: "an array"
        case .object: "an object"
        }
    }
}

extension JSONValue {
    /// `value` as JSON would write it: integers without a fraction (`3`, not `3.0`).
    static func numberText(_ value: Double) -> String {
        if value.rounded(.towardZero) == value, abs(value) < 1e18 { return String(Int64(value)) }
        return "\(value)"
    }
}

/// Recursive-descent parser over the UTF-8 bytes of the text.
private struct JSONParser {
    let bytes: [UInt8]
    var position = 0

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    mutating func parseValue(depth: Int) throws -> JSONValue {
        guard let byte = peek() else {
            throw syntaxError("a JSON value (object, array, string, number, true, false or null)")
        }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectWord("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectWord("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectWord("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .number(try parseNumber())
        default:
            throw syntaxError("a JSON value (object, array, string, number, true, false or null)")
        }
    }

    private mutating func parseObject(depth: Int) throws -> JSONValue {
        try checkDepth(depth)
        position += 1
        var members = [String: JSONValue]()
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            guard peek() == UInt8(ascii: "\"") else { throw syntaxError("a string key") }
            let keyOffset = position
            let key = try parseString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':' after an object key")
            skipWhitespace()
            let value = try parseValue(depth: depth)
            guard members.updateValue(value, forKey: key) == nil else {
                throw FMHAError(.invalidArgument, "invalid JSON at byte \(keyOffset): duplicate object key \"\(key)\"")
            }
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
            case UInt8(ascii: "}"):
                position += 1
                return .object(members)
            default:
                throw syntaxError("',' or '}' after an object member")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws -> JSONValue {
        try checkDepth(depth)
        position += 1
        var elements = [JSONValue]()
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            elements.append(try parseValue(depth: depth))
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
            case UInt8(ascii: "]"):
                position += 1
                return .array(elements)
            default:
                throw syntaxError("',' or ']' after an array element")
            }
        }
    }

    private func checkDepth(_ depth: Int) throws {
        guard depth <= JSONValue.maximumDepth else {
            throw FMHAError(.invalidArgument,
                            "invalid JSON at byte \(position): arrays and objects nested deeper than \(JSONValue.maximumDepth) levels")
        }
    }

    /// A string starting at the opening quote; the text is valid UTF-8 already, so bytes other
    /// than quotes, backslashes and control characters are copied through.
    private mutating func parseString() throws -> String {
        position += 1
        var scalars = [UInt8]()
        while true {
            guard let byte = peek() else { throw syntaxError("'\"' closing the string") }
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                return String(decoding: scalars, as: UTF8.self)
            case UInt8(ascii: "\\"):
                position += 1
                try parseEscape(into: &scalars)
            case 0x00..<0x20:
                throw syntaxError("a control character (U+0000–U+001F) to be escaped in a string")
            default:
                scalars.append(byte)
                position += 1
            }
        }
    }

    /// The escape after a backslash, appended to `scalars` as UTF-8.
    private mutating func parseEscape(into scalars: inout [UInt8]) throws {
        guard let byte = peek() else { throw syntaxError("an escape character after '\\'") }
        let simple: UInt8?
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): simple = byte
        case UInt8(ascii: "b"): simple = 0x08
        case UInt8(ascii: "f"): simple = 0x0C
        case UInt8(ascii: "n"): simple = 0x0A
        case UInt8(ascii: "r"): simple = 0x0D
        case UInt8(ascii: "t"): simple = 0x09
        case UInt8(ascii: "u"): simple = nil
        default: throw syntaxError("one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u after '\\'")
        }
        position += 1
        if let simple {
            scalars.append(simple)
            return
        }
        let escapeOffset = position - 2
        var code = UInt32(try parseHexQuad())
        if (0xD800...0xDBFF).contains(code) {
            guard peek() == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u") else {
                throw FMHAError(.invalidArgument,
                                "invalid JSON at byte \(escapeOffset): expected a \\uDC00–\\uDFFF low surrogate after a high surrogate")
            }
            position += 2
            let low = UInt32(try parseHexQuad())
            guard (0xDC00...0xDFFF).contains(low) else {
                throw FMHAError(.invalidArgument,
                                "invalid JSON at byte \(position - 6): expected a \\uDC00–\\uDFFF low surrogate after a high surrogate")
            }
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        } else if (0xDC00...0xDFFF).contains(code) {
            throw FMHAError(.invalidArgument, "invalid JSON at byte \(escapeOffset): a low surrogate without a high surrogate")
        }
        guard let scalar = Unicode.Scalar(code) else {
            throw FMHAError(.invalidArgument, "invalid JSON at byte \(escapeOffset): not a Unicode scalar value")
        }
        scalars.append(contentsOf: String(Character(scalar)).utf8)
    }

    private mutating func parseHexQuad() throws -> UInt16 {
        var value: UInt16 = 0
        for _ in 0..<4 {
            let digit: UInt16
            switch peek() {
            case let byte? where byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"): digit = UInt16(byte - UInt8(ascii: "0"))
            case let byte? where byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"): digit = UInt16(byte - UInt8(ascii: "a") + 10)
            case let byte? where byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "F"): digit = UInt16(byte - UInt8(ascii: "A") + 10)
            default: throw syntaxError("four hexadecimal digits after '\\u'")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func parseNumber() throws -> Double {
        let start = position
        if peek() == UInt8(ascii: "-") { position += 1 }
        if peek() == UInt8(ascii: "0") {
            position += 1
            if let byte = peek(), isDigit(byte) { throw syntaxError("no leading zeros in a number") }
        } else {
            try skipDigits(expected: "a digit")
        }
        if peek() == UInt8(ascii: ".") {
            position += 1
            try skipDigits(expected: "a digit after the decimal point")
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            position += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
            try skipDigits(expected: "a digit in the exponent")
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        guard let value = Double(text), value.isFinite else {
            throw FMHAError(.invalidArgument, "invalid JSON at byte \(start): the number \(text) is out of range")
        }
        return value
    }

    private mutating func skipDigits(expected: String) throws {
        guard let first = peek(), isDigit(first) else { throw syntaxError(expected) }
        while let byte = peek(), isDigit(byte) { position += 1 }
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    private mutating func expectWord(_ word: String) throws {
        let start = position
        for byte in word.utf8 {
            guard peek() == byte else {
                position = start
                throw syntaxError("'\(word)'")
            }
            position += 1
        }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws {
        guard peek() == byte else { throw syntaxError(what) }
        position += 1
    }

    func peek() -> UInt8? { position < bytes.count ? bytes[position] : nil }

    mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { position += 1 }
    }

    /// "invalid JSON at byte N: expected X, found Y".
    func syntaxError(_ expected: String) -> FMHAError {
        let found: String
        if let byte = peek() {
            found = byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
        } else {
            found = "the end of the input"
        }
        return FMHAError(.invalidArgument, "invalid JSON at byte \(position): expected \(expected), found \(found)")
    }
}
