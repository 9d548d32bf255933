#if canImport(Glibc)
import Glibc
/// `read(2)`, under a name that `InputFile.read` does not shadow.
private let systemRead = Glibc.read
#elseif canImport(Musl)
import Musl
/// `read(2)`, under a name that `InputFile.read` does not shadow.
private let systemRead = Musl.read
#endif

import FMHA

/// Bytes read front to back, from a file or from memory, so that a format can read its header
/// first and then exactly the data that header declares, however large or endless the input.
protocol ByteSource {
    /// The name errors give the input (usually its path).
    var name: String { get }
    /// Bytes in the whole input when known up front (an array, a regular file); nil for pipes,
    /// character devices and the like, whose end shows only once reached.
    var size: Int? { get }
    /// Copies the next bytes to `buffer`, `count` of them or fewer where the input ends, and
    /// returns how many it copied.
    mutating func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int
}

extension ByteSource {
    /// The next `count` bytes, or fewer where the input ends; read in pieces of at most 64 KiB,
    /// so that memory grows with the bytes that exist, not with the bytes asked for.
    mutating func read(_ count: Int) throws -> [UInt8] {
        let pieceSize = 1 << 16
        var bytes = [UInt8]()
        while bytes.count < count {
            let start = bytes.count, wanted = min(count - start, pieceSize)
            bytes.append(contentsOf: repeatElement(0, count: wanted))
            let received = try bytes.withUnsafeMutableBytes { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return try read(into: base + start, count: wanted)
            }
            bytes.removeLast(wanted - received)
            if received < wanted { break }
        }
        return bytes
    }

    /// Whether the input has no bytes left (reads one more byte to find out).
    mutating func isAtEnd() throws -> Bool {
        var byte: UInt8 = 0
        return try read(into: &byte, count: 1) == 0
    }
}

/// An array of bytes as a `ByteSource`.
struct ByteArraySource: ByteSource {
    let name: String
    private let bytes: [UInt8]
    /// Index of the next byte to read.
    private var position = 0

    init(_ bytes: [UInt8], name: String) {
        self.bytes = bytes
        self.name = name
    }

    var size: Int? { bytes.count }

    mutating func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        let copied = min(count, bytes.count - position)
        guard copied > 0 else { return 0 }
        bytes.withUnsafeBytes { source in
            if let base = source.baseAddress { buffer.copyMemory(from: base + position, byteCount: copied) }
        }
        position += copied
        return copied
    }
}

/// A file opened for reading with `open(2)` and closed when released. Errors are `FMHAError`s
/// naming the path and the system's reason.
final class InputFile: ByteSource {
    let name: String
    /// The size of a regular file (`fstat`); nil for anything else (device, FIFO, directory…).
    let size: Int?
    private let descriptor: Int32

    /// Opens the file at `path`.
    init(path: String) throws {
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw FileBytes.failure("cannot open", path: path, code: errno) }
        name = path
        var status = stat()
        let regular = fstat(descriptor, &status) == 0 && status.st_mode & mode_t(S_IFMT) == mode_t(S_IFREG)
        size = regular ? Int(status.st_size) : nil
    }

    deinit {
        close(descriptor)
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        var total = 0
        while total < count {
            // At most 1 GiB per call: Linux transfers no more than about 2 GiB at once anyway.
            let received = systemRead(descriptor, buffer + total, min(count - total, 1 << 30))
            if received < 0 {
                if errno == EINTR { continue }
                throw FileBytes.failure("cannot read", path: name, code: errno)
            }
            if received == 0 { break }
            total += received
        }
        return total
    }
}
