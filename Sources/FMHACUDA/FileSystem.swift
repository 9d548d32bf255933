#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

import CUDADriver

/// The few file operations the disk cache needs, with the C library (no Foundation). Every one
/// reports failure as `nil` or `false`: a cache that cannot be read or written is only slower.
enum FileSystem {
    /// Every byte of the regular file at `path`, or nil when it cannot be opened or read.
    static func read(path: String) -> [UInt8]? {
        guard let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var status = stat()
        guard fstat(fileno(file), &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return nil }
        var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
        let count = bytes.withUnsafeMutableBytes { buffer in
            buffer.isEmpty ? 0 : fread(buffer.baseAddress, 1, buffer.count, file)
        }
        // A file that changed size while being read is as good as corrupt.
        guard count == bytes.count, fgetc(file) == EOF, ferror(file) == 0 else { return nil }
        return bytes
    }

    /// Replaces `path` with `bytes` atomically: readers see the old file or the whole new one,
    /// never a partial write (a temporary file in the same folder, then `rename`). The file is
    /// readable by its owner only, as `mkstemp` creates it.
    @discardableResult
    static func writeAtomically(_ bytes: [UInt8], to path: String) -> Bool {
        let folderEnd = path.lastIndex(of: "/")
        let folder = folderEnd.map { String(path[..<$0]) } ?? "."
        let name = folderEnd.map { String(path[path.index(after: $0)...]) } ?? path
        var template = Array("\(folder)/.\(name).XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else { return false }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let written = DescriptorWriter.writeAll(bytes, to: descriptor)
        let closed = close(descriptor) == 0
        guard written, closed, rename(temporary, path) == 0 else {
            unlink(temporary)
            return false
        }
        return true
    }

    /// Creates `path` and any missing folders above it; true when it exists as a folder afterwards.
    @discardableResult
    static func createDirectories(_ path: String) -> Bool {
        if LibrarySearch.isDirectory(path) { return true }
        if let parentEnd = path.lastIndex(of: "/"), parentEnd != path.startIndex {
            createDirectories(String(path[..<parentEnd]))
        }
        return mkdir(path, 0o755) == 0 || LibrarySearch.isDirectory(path)
    }
}
