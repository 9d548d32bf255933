#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

import FMHA
import Testing
@testable import FMHACLI

/// Builds `.npy` bytes by hand: magic, version, little-endian header length, `header` as given
/// (padded with spaces and '\n' to a multiple of 64 unless `pad` is false), then `data`.
func npyBytes(_ header: String, version: (UInt8, UInt8) = (1, 0), pad: Bool = true, data: [UInt8] = []) -> [UInt8] {
    let lengthSize = version.0 == 1 ? 2 : 4
    var text = Array(header.utf8)
    if pad {
        let prefix = 8 + lengthSize
        text += [UInt8](repeating: 0x20, count: 64 - (prefix + text.count + 1) % 64) + [0x0A]
    }
    var bytes = NumpyFile.magic + [version.0, version.1]
    for index in 0..<lengthSize { bytes.append(UInt8(truncatingIfNeeded: text.count >> (8 * index))) }
    return bytes + text + data
}

/// The little-endian bytes of each value's bit pattern.
func littleEndianBytes<Bits: FixedWidthInteger>(_ patterns: [Bits]) -> [UInt8] {
    patterns.flatMap { pattern in (0..<(Bits.bitWidth / 8)).map { UInt8(truncatingIfNeeded: pattern >> ($0 * 8)) } }
}

/// A stream without a known size: `prefix`, then zeros up to `length` bytes in all (forever when
/// nil), like a pipe or a character device.
struct StreamSource: ByteSource {
    let name = "stream.npy"
    let size: Int? = nil
    let prefix: [UInt8]
    let length: Int?
    /// Bytes handed out so far.
    private(set) var position = 0

    init(_ prefix: [UInt8], length: Int? = nil) {
        self.prefix = prefix
        self.length = length
    }

    mutating func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        let copied = min(count, (length ?? Int.max) - position)
        for index in 0..<max(copied, 0) {
            let byte = position + index < prefix.count ? prefix[position + index] : 0
            buffer.storeBytes(of: byte, toByteOffset: index, as: UInt8.self)
        }
        position += max(copied, 0)
        return max(copied, 0)
    }
}

/// The header dictionary numpy writes for a C-order array of `descr` and `shape`.
func numpyHeader(_ descr: String, _ shape: String) -> String {
    "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
}

@Suite struct NumpyFileTests {
    // MARK: Round trips

    @Test(arguments: [[Int](), [0, 3], [2, 3, 4], [5], [1, 0]])
    func writesThenReadsTheSameFloat32Tensor(shape: [Int]) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let count = shape.reduce(1, *)
        let values = (0..<count).map { Float($0) * 0.37 - 3 }
        let tensor = try Tensor(shape: shape, scalars: values)
        let path = directory.file("round-trip.npy")
        try NumpyFile.write(tensor, path: path)
        let read = try NumpyFile.read(path: path)
        #expect(read.shape == shape)
        #expect(read.dtype == .float32)
        #expect(read.isContiguous)
        #expect(read.device == .cpu)
        #expect(try read.toArray() == values)
        let bytes = try FileBytes.read(path: path)
        let dataOffset = 10 + Int(bytes[8]) + Int(bytes[9]) << 8
        #expect(dataOffset % 64 == 0)
        #expect(bytes[dataOffset - 1] == 0x0A)
        #expect(bytes.count == dataOffset + 4 * count)
    }

    @Test func roundTripsSpecialValuesBitForBit() throws {
        let values: [Float] = [0, -0.0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 1e-30]
        let decoded = try NumpyFile.decode(NumpyFile.encode(Tensor(shape: [8], scalars: values)), name: "special.npy")
        #expect(try decoded.toArray().map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test func writesExactlyWhatNumpySaveWrites() throws {
        let bytes = try NumpyFile.encode(Tensor(shape: [2, 3], scalars: [Float](repeating: 1, count: 6)))
        let header = numpyHeader("<f4", "(2, 3)")
        #expect(bytes.count == 128 + 24)
        #expect(Array(bytes[0..<10]) == NumpyFile.magic + [1, 0, 118, 0])
        #expect(Array(bytes[10..<(10 + header.utf8.count)]) == Array(header.utf8))
        #expect(bytes[(10 + header.utf8.count)..<127].allSatisfy { $0 == 0x20 })
        #expect(bytes[127] == 0x0A)
        #expect(Array(bytes[128..<132]) == [0x00, 0x00, 0x80, 0x3F])
        for (shape, text) in [([3], "(3,)"), ([], "()"), ([1, 2, 3, 4], "(1, 2, 3, 4)")] {
            let count = shape.reduce(1, *)
            let encoded = try NumpyFile.encode(Tensor(shape: shape, scalars: [Float](repeating: 0, count: count)))
            let expected = numpyHeader("<f4", text)
            #expect(String(decoding: encoded[10..<(10 + expected.utf8.count)], as: UTF8.self) == expected)
            #expect(encoded.count == 128 + 4 * count)
        }
    }

    @Test func writesOtherDtypesAsFloat32() throws {
        let source = try Tensor(shape: [2, 2], scalars: [1.0, 0.1, -2.5, 1e-3], dtype: .float64)
        let read = try NumpyFile.decode(NumpyFile.encode(source), name: "converted.npy")
        #expect(read.dtype == .float32)
        #expect(try read.toArray() == [1.0, Float(0.1), -2.5, Float(1e-3)])
        let strided = try Tensor(shape: [2, 3], scalars: (0..<6).map(Float.init)).transposed(0, 1)
        let transposed = try NumpyFile.decode(NumpyFile.encode(strided), name: "transposed.npy")
        #expect(transposed.shape == [3, 2])
        #expect(try transposed.toArray() == [0, 3, 1, 4, 2, 5])
    }

    // MARK: Hand-built inputs

    @Test func decodesFloat16() throws {
        let patterns: [UInt16] = [0x3C00, 0xC100, 0x7BFF, 0x0001, 0x8000, 0x7C00]
        let bytes = npyBytes(numpyHeader("<f2", "(2, 3)"), data: littleEndianBytes(patterns))
        let tensor = try NumpyFile.decode(bytes, name: "half.npy")
        #expect(tensor.dtype == .float16)
        #expect(tensor.shape == [2, 3])
        #expect(try tensor.toDoubleArray() == patterns.map { Double(Float16(bitPattern: $0)) })
        #expect(try tensor.toDoubleArray()[0...2] == [1, -2.5, 65504])
    }

    @Test func decodesFloat64Exactly() throws {
        let values: [Double] = [.pi, 1e300, -0.0, 0.1, -.leastNonzeroMagnitude]
        let bytes = npyBytes(numpyHeader("<f8", "(5,)"), data: littleEndianBytes(values.map(\.bitPattern)))
        let tensor = try NumpyFile.decode(bytes, name: "double.npy")
        #expect(tensor.dtype == .float64)
        #expect(tensor.shape == [5])
        #expect(try tensor.toDoubleArray().map(\.bitPattern) == values.map(\.bitPattern))
    }

    @Test(arguments: [(UInt8(2), UInt8(0)), (3, 0)])
    func decodesVersion2And3Headers(major: UInt8, minor: UInt8) throws {
        let data = littleEndianBytes([Float(1.5), -2, 3].map(\.bitPattern))
        let bytes = npyBytes(numpyHeader("<f4", "(1, 3)"), version: (major, minor), data: data)
        #expect((12 + Int(bytes[8]) + Int(bytes[9]) << 8) % 64 == 0)
        let tensor = try NumpyFile.decode(bytes, name: "v\(major).npy")
        #expect(tensor.shape == [1, 3])
        #expect(try tensor.toArray() == [1.5, -2, 3])
    }

    @Test func decodesZeroDimensionalAndEmptyArrays() throws {
        let scalar = try NumpyFile.decode(npyBytes(numpyHeader("<f8", "()"), data: littleEndianBytes([Double(7).bitPattern])),
                                          name: "scalar.npy")
        #expect(scalar.shape == [])
        #expect(try scalar.toDoubleArray() == [7])
        let empty = try NumpyFile.decode(npyBytes(numpyHeader("<f2", "(4, 0, 2)")), name: "empty.npy")
        #expect(empty.shape == [4, 0, 2])
        #expect(empty.dtype == .float16)
        #expect(empty.count == 0)
    }

    @Test(arguments: [
        "{'descr': '=f4', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }",
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
        "{'shape': (2L,), 'fortran_order': False, 'descr': '<f4'}",
        "  {  'descr' :'<f4','fortran_order':False,\n'shape':( 2 , ) }  ",
    ])
    func acceptsHeaderVariants(header: String) throws {
        let tensor = try NumpyFile.decode(npyBytes(header, data: littleEndianBytes([Float(1), 2].map(\.bitPattern))),
                                          name: "variant.npy")
        #expect(tensor.shape == [2])
        #expect(try tensor.toArray() == [1, 2])
    }

    @Test func acceptsAnUnpaddedHeader() throws {
        let bytes = npyBytes(numpyHeader("<f4", "(1,)"), pad: false, data: littleEndianBytes([Float(4).bitPattern]))
        #expect(try NumpyFile.decode(bytes, name: "unpadded.npy").toArray() == [4])
    }

    // MARK: Malformed inputs

    @Test func rejectsBadMagicAndVersions() {
        let valid = npyBytes(numpyHeader("<f4", "(1,)"), data: [0, 0, 0, 0])
        expectFMHAError(["bad.npy", "not a .npy file"]) { _ = try NumpyFile.decode([], name: "bad.npy") }
        expectFMHAError(["bad.npy", "not a .npy file"]) { _ = try NumpyFile.decode(Array(valid[0..<4]), name: "bad.npy") }
        expectFMHAError(["bad.npy", "not a .npy file"]) {
            _ = try NumpyFile.decode(Array("PK\u{3}\u{4} zip file, not npy".utf8), name: "bad.npy")
        }
        expectFMHAError(["bad.npy", "truncated header"]) { _ = try NumpyFile.decode(Array(valid[0..<7]), name: "bad.npy") }
        for version: (UInt8, UInt8) in [(4, 0), (1, 1), (0, 0), (255, 255)] {
            var bytes = valid
            (bytes[6], bytes[7]) = version
            expectFMHAError(["bad.npy", "unsupported .npy format version \(version.0).\(version.1)"]) {
                _ = try NumpyFile.decode(bytes, name: "bad.npy")
            }
        }
    }

    @Test func rejectsTruncatedHeaders() {
        let valid = npyBytes(numpyHeader("<f4", "(1,)"), data: [0, 0, 0, 0])
        expectFMHAError(["short.npy", "truncated header", "header length"]) {
            _ = try NumpyFile.decode(Array(valid[0..<9]), name: "short.npy")
        }
        expectFMHAError(["short.npy", "truncated header", "declares 118 header bytes"]) {
            _ = try NumpyFile.decode(Array(valid[0..<50]), name: "short.npy")
        }
        let version2 = npyBytes(numpyHeader("<f4", "(1,)"), version: (2, 0))
        expectFMHAError(["short.npy", "truncated header"]) { _ = try NumpyFile.decode(Array(version2[0..<11]), name: "short.npy") }
        var huge = version2
        huge.replaceSubrange(8..<12, with: [0xFF, 0xFF, 0xFF, 0xFF])
        expectFMHAError(["short.npy", "truncated header", "4294967295"]) { _ = try NumpyFile.decode(huge, name: "short.npy") }
    }

    @Test(arguments: [
        ("'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "'{'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "',' or '}'"),
        ("{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}", "',' or '}'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "(3,)"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': 1}", "a string, True, False or a tuple"),
        ("{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}", "a string, True, False or a tuple"),
        ("{'descr': '<f4', 'fortran_order': Fals, 'shape': (1,)}", "'False'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "a non-negative integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (01,)}", "leading zeros"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,,)}", "a non-negative integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1 2)}", "',' or ')'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "only whitespace"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}}", "only whitespace"),
        ("{'descr': '<f\\x34', 'fortran_order': False, 'shape': (1,)}", "without escapes"),
        ("{'descr: '<f4', 'fortran_order': False, 'shape': (1,)}", "':'"),
        ("{descr: '<f4'}", "a quoted string"),
        ("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,)}", "a string, True, False or a tuple"),
        ("", "'{'"),
    ])
    func rejectsUnparseableHeaderDictionaries(header: String, fragment: String) {
        let bytes = npyBytes(header, data: [0, 0, 0, 0])
        expectFMHAError(["dict.npy", "cannot parse the .npy header dictionary", fragment]) {
            _ = try NumpyFile.decode(bytes, name: "dict.npy")
        }
    }

    @Test func rejectsWrongHeaderKeysAndValues() {
        func decode(_ header: String) throws {
            _ = try NumpyFile.decode(npyBytes(header, data: [0, 0, 0, 0]), name: "keys.npy")
        }
        expectFMHAError(["keys.npy", "no 'shape' key"]) { try decode("{'descr': '<f4', 'fortran_order': False}") }
        expectFMHAError(["keys.npy", "no 'descr' key"]) { try decode("{'fortran_order': False, 'shape': (1,)}") }
        expectFMHAError(["keys.npy", "unexpected key 'extra'"]) {
            try decode("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': True}")
        }
        expectFMHAError(["keys.npy", "repeats the key 'descr'"]) {
            try decode("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}")
        }
        expectFMHAError(["keys.npy", "'descr' is not a string"]) { try decode("{'descr': (4,), 'fortran_order': False, 'shape': (1,)}") }
        expectFMHAError(["keys.npy", "'fortran_order' is not True or False"]) {
            try decode("{'descr': '<f4', 'fortran_order': 'no', 'shape': (1,)}")
        }
        expectFMHAError(["keys.npy", "'shape' is not a tuple"]) { try decode("{'descr': '<f4', 'fortran_order': False, 'shape': 'x'}") }
    }

    @Test func rejectsUnsupportedLayoutsAndDtypes() {
        func decode(_ descr: String, fortranOrder: String = "False") throws {
            let header = "{'descr': '\(descr)', 'fortran_order': \(fortranOrder), 'shape': (1,), }"
            _ = try NumpyFile.decode(npyBytes(header, data: [0, 0, 0, 0]), name: "dtype.npy")
        }
        expectFMHAError(["dtype.npy", "big-endian", "'>f4'", "astype('<f4')"]) { try decode(">f4") }
        expectFMHAError(["dtype.npy", "big-endian", "'>f8'"]) { try decode(">f8") }
        expectFMHAError(["dtype.npy", "Fortran-order", "fortran_order: True"]) { try decode("<f4", fortranOrder: "True") }
        for descr in ["<i4", "<u4", "|b1", "<c8", "<f16", "|u1", "<V4", "f", "<", ""] {
            expectFMHAError(["dtype.npy", "unsupported dtype '\(descr)'", "'<f2', '<f4' or '<f8'"]) { try decode(descr) }
        }
    }

    @Test func rejectsDataOfTheWrongSize() {
        let header = numpyHeader("<f4", "(2, 3)")
        expectFMHAError(["data.npy", "truncated data", "(2, 3)", "24 data bytes", "has 20"]) {
            _ = try NumpyFile.decode(npyBytes(header, data: [UInt8](repeating: 0, count: 20)), name: "data.npy")
        }
        expectFMHAError(["data.npy", "truncated data", "has 0"]) {
            _ = try NumpyFile.decode(npyBytes(header), name: "data.npy")
        }
        expectFMHAError(["data.npy", "unexpected bytes after the data", "has 25"]) {
            _ = try NumpyFile.decode(npyBytes(header, data: [UInt8](repeating: 0, count: 25)), name: "data.npy")
        }
        expectFMHAError(["data.npy", "truncated data", "8 data bytes"]) {
            _ = try NumpyFile.decode(npyBytes(numpyHeader("<f8", "()"), data: [0, 0, 0, 0]), name: "data.npy")
        }
    }

    @Test func rejectsShapesWhoseSizeOverflows() {
        for shape in ["(4294967296, 4294967296)", "(9223372036854775807, 2)", "(2305843009213693952,)", "(0, 99999999999999999999)"] {
            let bytes = npyBytes(numpyHeader("<f4", shape), data: [0, 0, 0, 0])
            expectFMHAError(["huge.npy"]) { _ = try NumpyFile.decode(bytes, name: "huge.npy") }
        }
        expectFMHAError(["huge.npy", "too large"]) {
            _ = try NumpyFile.decode(npyBytes(numpyHeader("<f4", "(2305843009213693952,)")), name: "huge.npy")
        }
        expectFMHAError(["huge.npy", "does not fit in a 64-bit integer"]) {
            _ = try NumpyFile.decode(npyBytes(numpyHeader("<f4", "(99999999999999999999,)")), name: "huge.npy")
        }
    }

    @Test func readAndWriteReportFileErrors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let missing = directory.path + "/missing.npy"
        expectFMHAError(["cannot open", missing, "No such file or directory"]) { _ = try NumpyFile.read(path: missing) }
        let unwritable = directory.path + "/no-such-folder/out.npy"
        expectFMHAError(["cannot create", unwritable, "No such file or directory"]) {
            try NumpyFile.write(try Tensor.zeros([1]), path: unwritable)
        }
        expectFMHAError(["cannot read", directory.path, "Is a directory"]) { _ = try NumpyFile.read(path: directory.path) }
        let garbage = directory.file("garbage.npy")
        try FileBytes.write(Array("hello".utf8), path: garbage)
        expectFMHAError([garbage, "not a .npy file"]) { _ = try NumpyFile.read(path: garbage) }
    }

    @Test func fileBytesRoundTrips() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        var generator = SplitMix64(seed: 7)
        for size in [0, 1, 65535, 65536, 65537, 200_000] {
            let bytes = (0..<size).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
            let path = directory.file("bytes-\(size).bin")
            try FileBytes.write(bytes, path: path)
            #expect(try FileBytes.read(path: path) == bytes)
        }
    }

    // MARK: Fuzzing

    /// Random, truncated and mutated byte arrays either decode or throw `FMHAError`; none crash.
    @Test func survivesRandomTruncatedAndMutatedInputs() throws {
        var generator = SplitMix64(seed: 0x5EED)
        let seeds: [[UInt8]] = [
            npyBytes(numpyHeader("<f4", "(2, 3)"), data: [UInt8](repeating: 0x3F, count: 24)),
            npyBytes(numpyHeader("<f2", "(3,)"), data: [1, 2, 3, 4, 5, 6]),
            npyBytes(numpyHeader("<f8", "()"), data: [UInt8](repeating: 0x40, count: 8)),
            npyBytes(numpyHeader("<f4", "(1, 0, 7)"), version: (2, 0)),
            npyBytes("{'shape':(1L,),'descr':'=f4','fortran_order':False}", version: (3, 0), pad: false, data: [0, 0, 0x80, 0x3F]),
        ]
        let alphabet = Array("{}()[]'\":, 0123456789LTrueFalse<>|=f248\n\\".utf8)
        var decoded = 0, rejected = 0
        for iteration in 0..<4000 {
            var bytes = seeds[iteration % seeds.count]
            switch iteration % 5 {
            case 0:  // Random bytes, half of them behind a valid magic and version.
                let length = Int.random(in: 0...96, using: &generator)
                bytes = (0..<length).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
                if iteration % 2 == 0 { bytes = NumpyFile.magic + [UInt8.random(in: 1...3, using: &generator), 0] + bytes }
            case 1:  // Truncation.
                bytes = Array(bytes[0..<Int.random(in: 0..<bytes.count, using: &generator)])
            case 2:  // Random byte changes anywhere.
                for _ in 0..<Int.random(in: 1...4, using: &generator) {
                    bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: .min ... .max, using: &generator)
                }
            case 3:  // Header-alphabet changes inside the header.
                let headerEnd = min(bytes.count, 80)
                for _ in 0..<Int.random(in: 1...3, using: &generator) {
                    bytes[Int.random(in: 10..<headerEnd, using: &generator)] = alphabet.randomElement(using: &generator)!
                }
            default:  // Header length field changes.
                let field = Int.random(in: 8...9, using: &generator)
                bytes[field] = UInt8.random(in: .min ... .max, using: &generator)
                if Bool.random(using: &generator) { bytes += [UInt8](repeating: 0x20, count: Int.random(in: 0...300, using: &generator)) }
            }
            do {
                let tensor = try NumpyFile.decode(bytes, name: "fuzz.npy")
                #expect(try tensor.toDoubleArray().count == tensor.count)
                decoded += 1
            } catch let error as FMHAError {
                #expect(error.message.hasPrefix("fuzz.npy: "))
                #expect(!error.message.contains("\n"))
                rejected += 1
            }
        }
        #expect(decoded > 0)
        #expect(rejected > 0)
    }

    // MARK: Large, endless and mis-sized files

    /// Milliseconds `body` takes.
    func milliseconds(_ body: () -> Void) -> Double {
        let elapsed = ContinuousClock().measure(body)
        return Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) * 1e-15
    }

    /// Writes `bytes` to `path`, then extends the file with a hole to `size` bytes (no disk used).
    func writeSparseFile(_ path: String, bytes: [UInt8], size: Int) throws {
        try FileBytes.write(bytes, path: path)
        try #require(truncate(path, off_t(size)) == 0, "truncate: \(FileBytes.systemMessage(errno))")
    }

    /// `/dev/zero` has no size and no end: its first six bytes are not the magic, so nothing more
    /// is read (it used to be read until memory ran out).
    @Test func refusesDevZeroAtOnce() {
        let time = milliseconds {
            expectFMHAError(["/dev/zero", "not a .npy file"]) { _ = try NumpyFile.read(path: "/dev/zero") }
        }
        #expect(time < 1000)
    }

    /// A 2 GiB sparse file is refused from its header alone: a bad magic, or a header declaring
    /// fewer or more data bytes than the file holds (both sizes named).
    @Test func refusesLargeFilesFromTheirHeader() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let size = 1 << 31
        let noMagic = directory.file("zeros.npy")
        try writeSparseFile(noMagic, bytes: [], size: size)
        let fewer = directory.file("fewer.npy"), more = directory.file("more.npy")
        let fewerHeader = npyBytes(numpyHeader("<f4", "(4,)")), moreHeader = npyBytes(numpyHeader("<f4", "(1073741824,)"))
        try writeSparseFile(fewer, bytes: fewerHeader, size: size)
        try writeSparseFile(more, bytes: moreHeader, size: size)
        let cases = [
            (noMagic, ["not a .npy file"]),
            (fewer, ["unexpected bytes after the data", "(4,)", "needs 16 data bytes", "has \(size - fewerHeader.count)"]),
            (more, ["truncated data", "needs 4294967296 data bytes", "has \(size - moreHeader.count)"]),
        ]
        for (path, fragments) in cases {
            let time = milliseconds { expectFMHAError([path] + fragments) { _ = try NumpyFile.read(path: path) } }
            #expect(time < 1000, "\(path)")
        }
        // A header length past the end of the file is refused without reading it.
        let longHeader = directory.file("long-header.npy")
        try writeSparseFile(longHeader, bytes: NumpyFile.magic + [2, 0, 0xFF, 0xFF, 0xFF, 0xFF], size: 1 << 20)
        expectFMHAError([longHeader, "truncated header", "declares 4294967295 header bytes", "has 1048564"]) {
            _ = try NumpyFile.read(path: longHeader)
        }
    }

    /// Inputs without a size (pipes, devices) are read up to what the header declares: one that
    /// goes on past the data, ends early, or declares an absurd header is refused.
    @Test func streamsAreReadOnlyAsFarAsTheHeaderDeclares() throws {
        let header = npyBytes(numpyHeader("<f4", "(2, 3)"))
        var exact = StreamSource(header + [UInt8](repeating: 0, count: 24), length: header.count + 24)
        #expect(try NumpyFile.read(from: &exact).toArray() == [Float](repeating: 0, count: 6))
        var endless = StreamSource(header)
        expectFMHAError(["stream.npy", "unexpected bytes after the data", "needs 24 data bytes", "has more"]) {
            _ = try NumpyFile.read(from: &endless)
        }
        #expect(endless.position == header.count + 25)
        var short = StreamSource(header, length: header.count + 10)
        expectFMHAError(["stream.npy", "truncated data", "needs 24 data bytes", "has 10"]) {
            _ = try NumpyFile.read(from: &short)
        }
        var longHeader = StreamSource(NumpyFile.magic + [2, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        expectFMHAError(["stream.npy", "declares 4294967295 header bytes", "more than the 1048576"]) {
            _ = try NumpyFile.read(from: &longHeader)
        }
        #expect(longHeader.position == 12)
        var endedHeader = StreamSource(NumpyFile.magic + [1, 0, 100, 0], length: 30)
        expectFMHAError(["stream.npy", "truncated header", "declares 100 header bytes", "has 20"]) {
            _ = try NumpyFile.read(from: &endedHeader)
        }
    }

    /// Whole-file reads (bias specifications) stop at their limit instead of reading on.
    @Test func wholeFileReadsHaveALimit() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        expectFMHAError(["'/dev/zero'", "expected a file of at most 1000 bytes", "got more"]) {
            _ = try FileBytes.read(path: "/dev/zero", limit: 1000)
        }
        let large = directory.file("large.json")
        try writeSparseFile(large, bytes: [], size: 1 << 31)
        expectFMHAError([large, "at most 67108864 bytes", "got 2147483648 bytes"]) { _ = try FileBytes.read(path: large) }
        let small = directory.file("small.json")
        try FileBytes.write(Array("{}".utf8), path: small)
        #expect(try FileBytes.read(path: small, limit: 2) == Array("{}".utf8))
    }
}
