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
    /// Every byte of the file at `path`, which may hold at most `limit` bytes (64 MiB unless
    /// given): a larger or endless file (`/dev/zero`) is refused once `limit` bytes are read.
    static func read(path: String, limit: Int = 1 << 26) throws -> [UInt8] {
        var file = try InputFile(path: path)
        if let size = file.size, size > limit { throw tooLarge(path: path, size: "\(size) bytes", limit: limit) }
        let bytes = try file.read(limit)
        guard try file.isAtEnd() else { throw tooLarge(path: path, size: "more", limit: limit) }
        return bytes
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

    /// Writes every `(bytes, path)` or none: each goes to a temporary file beside its path, and
    /// only when all are written are they renamed into place (a failed write removes the
    /// temporary files and leaves every path as it was).
    static func writeAll(_ files: [(bytes: [UInt8], path: String)]) throws {
        let temporary = files.map { $0.path + ".fmha-partial-\(getpid())" }
        do {
            for (file, staging) in zip(files, temporary) { try write(file.bytes, path: staging) }
            for (file, staging) in zip(files, temporary) where rename(staging, file.path) != 0 {
                throw failure("cannot move the new file into place at", path: file.path, code: errno)
            }
        } catch {
            for staging in temporary { unlink(staging) }
            throw error
        }
    }

    /// "'path': expected a file of at most N bytes, got M bytes".
    private static func tooLarge(path: String, size: String, limit: Int) -> FMHAError {
        FMHAError.invalidArgument("'\(path)'", expected: "a file of at most \(limit) bytes", got: size)
    }

    /// "cannot open 'path': No such file or directory".
    static func failure(_ action: String, path: String, code: Int32) -> FMHAError {
        FMHAError(.invalidArgument, "\(action) '\(path)': \(systemMessage(code))")
    }

    /// The C library's text for the error number `code`.
    static func systemMessage(_ code: Int32) -> String {
        guard code != 0, let text = strerror(code) else { return "unknown error" }
        return String(cString: text)
    }
}
