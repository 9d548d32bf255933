#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

import FMHA

/// Whole-file reads and writes with the C library, so that the command needs no Foundation.
///
/// Every failure is an `FMHAError` naming the path and the system's reason (`strerror`).
enum FileBytes {
    /// Size of each `fread` when the file size is not known up front.
    private static let chunkSize = 1 << 16
    /// The most `read` reserves up front; larger files grow the buffer as they are read.
    private static let maximumReservation = 1 << 30

    /// Every byte of the file at `path`.
    static func read(path: String) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw failure("cannot open", path: path, code: errno)
        }
        defer { fclose(file) }
        var result = [UInt8]()
        // Reserve the size of a regular file (capped: the size is a hint, not a promise). Other
        // files get no hint: a directory's "size" from lseek can be Int.max.
        var status = stat()
        if fstat(fileno(file), &status) == 0, status.st_mode & mode_t(S_IFMT) == mode_t(S_IFREG), status.st_size > 0 {
            result.reserveCapacity(Int(min(status.st_size, off_t(maximumReservation))))
        }
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        while true {
            let received = chunk.withUnsafeMutableBytes { buffer in
                fread(buffer.baseAddress, 1, buffer.count, file)
            }
            let code = errno
            result.append(contentsOf: chunk[0..<received])
            if received < chunk.count {
                if ferror(file) != 0 { throw failure("cannot read", path: path, code: code) }
                return result
            }
        }
    }

    /// Replaces the file at `path` (creating it when needed) with `bytes`.
    static func write(_ bytes: [UInt8], path: String) throws {
        guard let file = fopen(path, "wb") else {
            throw failure("cannot create", path: path, code: errno)
        }
        let written = bytes.withUnsafeBytes { buffer in
            buffer.isEmpty ? 0 : fwrite(buffer.baseAddress, 1, buffer.count, file)
        }
        let writeCode = errno
        let closed = fclose(file)
        let closeCode = errno
        guard written == bytes.count else {
            throw failure("cannot write", path: path, code: writeCode)
        }
        guard closed == 0 else {
            throw failure("cannot finish writing", path: path, code: closeCode)
        }
    }

    /// "cannot open 'path': No such file or directory".
    private static func failure(_ action: String, path: String, code: Int32) -> FMHAError {
        FMHAError(.invalidArgument, "\(action) '\(path)': \(systemMessage(code))")
    }

    /// The C library's text for the error number `code`.
    static func systemMessage(_ code: Int32) -> String {
        guard code != 0, let text = strerror(code) else { return "unknown error" }
        return String(cString: text)
    }
}
