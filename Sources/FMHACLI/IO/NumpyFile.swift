import FMHA

/// NumPy's `.npy` file format, for the command's tensor inputs and outputs.
///
/// Reading accepts format versions 1.0, 2.0 and 3.0 holding little-endian (or native, on a
/// little-endian host) float16, float32 or float64 data in C order, of any shape (0-d and empty
/// included), and gives a contiguous CPU tensor of the matching dtype with the exact values.
/// Writing always produces float32 (`'<f4'`), C order, version 1.0, with the header padded so that
/// the data starts at a multiple of 64 bytes, byte for byte what `numpy.save` writes.
///
/// Every malformed input throws an `FMHAError` whose message names the file; no byte sequence
/// makes decoding crash.
public enum NumpyFile {
    /// The six bytes every `.npy` file starts with: `\x93NUMPY`.
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
    /// The data of files we write starts at a multiple of this many bytes.
    static let alignment = 64

    /// The longest header dictionary read: numpy's own reader refuses more than 10 000 bytes
    /// by default; this bounds what a pipe or device can make the reader hold.
    static let maximumHeaderLength = 1 << 20

    /// Reads the `.npy` file at `path`: the header first, then exactly the data bytes it
    /// declares. A regular file whose size does not match the header is refused before its data
    /// is read; any other file (a pipe, a device) is read up to the declared size and refused
    /// when it ends early or goes on after it.
    public static func read(path: String) throws -> Tensor {
        var file = try InputFile(path: path)
        return try read(from: &file)
    }

    /// Writes `tensor` to `path` as a float32 `.npy` file (float64 values are rounded to float32).
    public static func write(_ tensor: Tensor, path: String) throws {
        try FileBytes.write(encode(tensor), path: path)
    }

    /// The tensor stored in the `.npy` bytes `bytes`; `name` (usually the path) appears in errors.
    public static func decode(_ bytes: [UInt8], name: String) throws -> Tensor {
        var source = ByteArraySource(bytes, name: name)
        return try read(from: &source)
    }

    /// The tensor of the `.npy` input `source`, read to its end.
    static func read(from source: inout some ByteSource) throws -> Tensor {
        let name = source.name
        let header = try NumpyHeader(reading: &source)
        let (elementCount, countOverflow) = elementCount(header.shape)
        let (byteCount, byteOverflow) = elementCount.multipliedReportingOverflow(by: header.dtype.byteSize)
        guard !countOverflow, !byteOverflow else {
            throw failure(name, "the shape \(header.shapeText) is too large to fit in memory")
        }
        /// "truncated data: shape (2, 3) of float32 needs 24 data bytes, but the file has 20"; nil
        /// for "more" (an input that goes on past the data).
        func wrongSize(_ available: Int?) -> FMHAError {
            let relation = available.map { $0 < byteCount } ?? false ? "truncated data" : "unexpected bytes after the data"
            return failure(name, "\(relation): shape \(header.shapeText) of \(header.dtype) needs \(byteCount) data bytes, "
                                 + "but the file has \(available.map(String.init) ?? "more")")
        }
        if let size = source.size, size - header.dataOffset != byteCount { throw wrongSize(size - header.dataOffset) }
        let tensor: Tensor
        do {
            tensor = try Tensor.zeros(header.shape, dtype: header.dtype)
        } catch let error as FMHAError {
            throw failure(name, error.message, kind: error.kind)
        }
        let received = try tensor.withUnsafeHostAddress { try source.read(into: $0, count: byteCount) }
        guard received == byteCount else { throw wrongSize(received) }
        guard try source.isAtEnd() else { throw wrongSize(nil) }
        #if _endian(big)
        try tensor.withUnsafeHostAddress { base in
            for element in 0..<elementCount {
                UnsafeMutableRawBufferPointer(start: base + element * header.dtype.byteSize, count: header.dtype.byteSize).reverse()
            }
        }
        #endif
        return tensor
    }

    /// The `.npy` bytes of `tensor` as float32, C order, format version 1.0.
    static func encode(_ tensor: Tensor) throws -> [UInt8] {
        let values = try tensor.toArray()
        let shapeText = NumpyHeader.shapeText(tensor.shape)
        var dictionary = Array("{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        // As numpy: pad with spaces, then '\n', so that magic + version + length + header is a
        // multiple of `alignment` (between 1 and `alignment` spaces).
        let prefixLength = magic.count + 2 + 2
        let padding = alignment - (prefixLength + dictionary.count + 1) % alignment
        dictionary += [UInt8](repeating: 0x20, count: padding)
        dictionary.append(0x0A)
        guard dictionary.count <= Int(UInt16.max) else {
            throw FMHAError.invalidArgument("tensor", expected: "a shape whose .npy header fits in 65535 bytes (format 1.0)",
                                            got: "\(tensor.rank) dimensions")
        }
        var bytes = magic + [1, 0]
        bytes.reserveCapacity(prefixLength + dictionary.count + values.count * 4)
        bytes += [UInt8(dictionary.count & 0xFF), UInt8(dictionary.count >> 8)]
        bytes += dictionary
        for value in values {
            let bits = value.bitPattern
            bytes += [UInt8(truncatingIfNeeded: bits), UInt8(truncatingIfNeeded: bits >> 8),
                      UInt8(truncatingIfNeeded: bits >> 16), UInt8(truncatingIfNeeded: bits >> 24)]
        }
        return bytes
    }

    /// The product of `shape`, and whether it overflowed.
    private static func elementCount(_ shape: [Int]) -> (Int, Bool) {
        var count = 1
        for size in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            if overflow { return (0, true) }
            count = product
        }
        return (count, false)
    }

    /// "file.npy: what went wrong".
    static func failure(_ name: String, _ text: String, kind: FMHAError.Kind = .invalidArgument) -> FMHAError {
        FMHAError(kind, "\(name): \(text).")
    }
}

/// The parsed preamble of a `.npy` file: element type, shape and where the data starts.
struct NumpyHeader {
    /// Element type of the data.
    let dtype: DType
    /// Size of each dimension, in C order.
    let shape: [Int]
    /// Index of the first data byte in the file.
    let dataOffset: Int

    /// Reads and parses magic, version, header length and the header dictionary from the start
    /// of `source`, reading no byte past the header.
    init(reading source: inout some ByteSource) throws {
        let name = source.name, magic = NumpyFile.magic
        let preamble = try source.read(magic.count + 2)
        guard preamble.count >= magic.count, Array(preamble[0..<magic.count]) == magic else {
            throw NumpyFile.failure(name, "not a .npy file (it does not start with the magic string \\x93NUMPY)")
        }
        guard preamble.count == magic.count + 2 else {
            throw NumpyFile.failure(name, "truncated header: the file ends before the format version")
        }
        let major = preamble[magic.count], minor = preamble[magic.count + 1]
        let lengthSize: Int
        switch (major, minor) {
        case (1, 0): lengthSize = 2
        case (2, 0), (3, 0): lengthSize = 4
        default:
            throw NumpyFile.failure(name, "unsupported .npy format version \(major).\(minor) (expected 1.0, 2.0 or 3.0)",
                                    kind: .unsupported)
        }
        let lengthBytes = try source.read(lengthSize)
        guard lengthBytes.count == lengthSize else {
            throw NumpyFile.failure(name, "truncated header: the file ends inside the header length")
        }
        let headerStart = preamble.count + lengthSize
        let headerLength = lengthSize == 2
            ? Int(UInt16(littleEndianAt: 0, in: lengthBytes))
            : Int(UInt32(littleEndianAt: 0, in: lengthBytes))
        func truncated(_ available: Int) -> FMHAError {
            NumpyFile.failure(name, "truncated header: it declares \(headerLength) header bytes, "
                                    + "but the file has \(available) after the length")
        }
        if let size = source.size, headerLength > size - headerStart { throw truncated(size - headerStart) }
        guard headerLength <= NumpyFile.maximumHeaderLength else {
            throw NumpyFile.failure(name, "the header declares \(headerLength) header bytes, more than the "
                                          + "\(NumpyFile.maximumHeaderLength) this reader accepts")
        }
        let header = try source.read(headerLength)
        guard header.count == headerLength else { throw truncated(header.count) }
        dataOffset = headerStart + headerLength
        var parser = NumpyHeaderParser(bytes: header, name: name)
        let entries = try parser.parseDictionary()

        let expectedKeys: Set<String> = ["descr", "fortran_order", "shape"]
        if let unknown = entries.keys.sorted().first(where: { !expectedKeys.contains($0) }) {
            throw NumpyFile.failure(name, "unexpected key '\(unknown)' in the .npy header (expected 'descr', 'fortran_order' and 'shape')")
        }
        if let missing = expectedKeys.sorted().first(where: { entries[$0] == nil }) {
            throw NumpyFile.failure(name, "the .npy header has no '\(missing)' key")
        }
        guard case .string(let descr)? = entries["descr"] else {
            throw NumpyFile.failure(name, "the .npy header's 'descr' is not a string (structured dtypes are not supported)",
                                    kind: .unsupported)
        }
        dtype = try NumpyHeader.dtype(descr: descr, name: name)
        guard case .boolean(let fortranOrder)? = entries["fortran_order"] else {
            throw NumpyFile.failure(name, "the .npy header's 'fortran_order' is not True or False")
        }
        guard !fortranOrder else {
            throw NumpyFile.failure(name, "Fortran-order data (fortran_order: True) is not supported; "
                                          + "save a C-contiguous array (numpy.ascontiguousarray)", kind: .unsupported)
        }
        guard case .tuple(let shape)? = entries["shape"] else {
            throw NumpyFile.failure(name, "the .npy header's 'shape' is not a tuple of integers")
        }
        self.shape = shape
    }

    /// The dtype for a numpy type string such as `'<f4'`.
    static func dtype(descr: String, name: String) throws -> DType {
        var code = Substring(descr)
        if let order = code.first, "<>=|".contains(order) {
            code = code.dropFirst()
            if order == ">" {
                throw NumpyFile.failure(name, "big-endian data ('\(descr)') is not supported; convert it with "
                                              + "array.astype('<\(code)')", kind: .unsupported)
            }
        }
        #if _endian(big)
        if descr.first != "<" {
            throw NumpyFile.failure(name, "native-order data ('\(descr)') is not supported on a big-endian host",
                                    kind: .unsupported)
        }
        #endif
        switch code {
        case "f2": return .float16
        case "f4": return .float32
        case "f8": return .float64
        default:
            throw NumpyFile.failure(name, "unsupported dtype '\(descr)' (expected float16, float32 or float64: "
                                          + "'<f2', '<f4' or '<f8')", kind: .unsupported)
        }
    }

    /// A shape as Python writes a tuple: `()`, `(3,)`, `(2, 3)`.
    static func shapeText(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }

    /// This header's shape as Python writes it.
    var shapeText: String { NumpyHeader.shapeText(shape) }
}

/// A value in a `.npy` header dictionary.
enum NumpyHeaderValue: Equatable {
    case string(String)
    case boolean(Bool)
    case tuple([Int])
}

/// Parses the Python dictionary literal of a `.npy` header, the subset numpy writes:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }` followed by spaces and `\n`.
struct NumpyHeaderParser {
    /// The header's bytes, and nothing else.
    let bytes: [UInt8]
    /// Index of the next byte to read.
    var position = 0
    /// The file's name, for errors.
    let name: String

    init(bytes: [UInt8], name: String) {
        self.bytes = bytes
        self.name = name
    }

    /// Index just past the header's last byte.
    private var end: Int { bytes.count }

    /// The dictionary, checked to be followed by nothing but whitespace.
    mutating func parseDictionary() throws -> [String: NumpyHeaderValue] {
        skipWhitespace()
        try expect(UInt8(ascii: "{"), "'{' opening the header dictionary")
        var entries = [String: NumpyHeaderValue]()
        skipWhitespace()
        while peek() != UInt8(ascii: "}") {
            let key = try parseString()
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':' after the key '\(key)'")
            skipWhitespace()
            let value = try parseValue()
            guard entries.updateValue(value, forKey: key) == nil else {
                throw NumpyFile.failure(name, "the .npy header repeats the key '\(key)'")
            }
            skipWhitespace()
            if peek() == UInt8(ascii: ",") {
                position += 1
                skipWhitespace()
            } else if peek() != UInt8(ascii: "}") {
                throw syntaxError("',' or '}' after the value of '\(key)'")
            }
        }
        position += 1
        skipWhitespace()
        guard position == end else { throw syntaxError("only whitespace after the header dictionary") }
        return entries
    }

    private mutating func parseValue() throws -> NumpyHeaderValue {
        switch peek() {
        case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "("): return .tuple(try parseTuple())
        case UInt8(ascii: "T"):
            try expectWord("True")
            return .boolean(true)
        case UInt8(ascii: "F"):
            try expectWord("False")
            return .boolean(false)
        default: throw syntaxError("a string, True, False or a tuple")
        }
    }

    /// A quoted string without escapes.
    private mutating func parseString() throws -> String {
        guard let quote = peek(), quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else {
            throw syntaxError("a quoted string")
        }
        let first = position + 1
        var index = first
        while index < end, bytes[index] != quote {
            guard bytes[index] != UInt8(ascii: "\\"), bytes[index] != 0x0A else {
                throw syntaxError("a string without escapes or line breaks")
            }
            index += 1
        }
        guard index < end else { throw syntaxError("a closing quote") }
        position = index + 1
        return String(decoding: bytes[first..<index], as: UTF8.self)
    }

    /// `()`, `(3,)`, `(2, 3)` or `(2, 3,)`: non-negative integers (a Python 2 `L` suffix is allowed).
    private mutating func parseTuple() throws -> [Int] {
        position += 1
        var values = [Int](), endsWithComma = false
        skipWhitespace()
        while peek() != UInt8(ascii: ")") {
            values.append(try parseInteger())
            skipWhitespace()
            endsWithComma = peek() == UInt8(ascii: ",")
            if endsWithComma {
                position += 1
                skipWhitespace()
            } else if peek() != UInt8(ascii: ")") {
                throw syntaxError("',' or ')' in the shape tuple")
            }
        }
        guard values.count != 1 || endsWithComma else {
            throw syntaxError("a ',' after the only dimension of a one-dimensional shape, as in (3,)")
        }
        position += 1
        return values
    }

    private mutating func parseInteger() throws -> Int {
        let first = position
        var value = 0
        while let byte = peek(), byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else {
                throw NumpyFile.failure(name, "a dimension in the .npy header's shape does not fit in a 64-bit integer")
            }
            value = sum
            position += 1
        }
        guard position > first else { throw syntaxError("a non-negative integer dimension") }
        guard position - first == 1 || bytes[first] != UInt8(ascii: "0") else {
            throw syntaxError("an integer without leading zeros")
        }
        if peek() == UInt8(ascii: "L") || peek() == UInt8(ascii: "l") { position += 1 }
        return value
    }

    private mutating func expectWord(_ word: String) throws {
        for byte in word.utf8 {
            guard peek() == byte else { throw syntaxError("'\(word)'") }
            position += 1
        }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws {
        guard peek() == byte else { throw syntaxError(what) }
        position += 1
    }

    private func peek() -> UInt8? { position < end ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { position += 1 }
    }

    /// "cannot parse the .npy header dictionary: expected X at header byte N".
    private func syntaxError(_ expected: String) -> FMHAError {
        let found: String
        if let byte = peek() {
            found = byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
        } else {
            found = "the end of the header"
        }
        return NumpyFile.failure(name, "cannot parse the .npy header dictionary: expected \(expected) at header byte "
                                       + "\(position), found \(found)")
    }
}

extension FixedWidthInteger where Self: UnsignedInteger {
    /// The little-endian value of `Self.bitWidth / 8` bytes of `bytes` from `offset` (the caller
    /// has checked that they exist).
    init(littleEndianAt offset: Int, in bytes: [UInt8]) {
        var value = Self.zero
        for index in 0..<(Self.bitWidth / 8) {
            value |= Self(bytes[offset + index]) << (index * 8)
        }
        self = value
    }
}
