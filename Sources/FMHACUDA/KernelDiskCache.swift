#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

import CUDADriver

/// Compiled kernels kept on disk across processes, one file per kernel.
///
/// A file's name is the kernel's source name, architecture and the FNV-1a hash of everything that
/// decides the cubin: the full source, the compiler options, the compiler's version and the
/// driver's. Its contents are the compiler log and the cubin, with a checksum: a file that is
/// missing, truncated, corrupt or unreadable is a miss, and the kernel is compiled and the file
/// rewritten. Files are written atomically, so concurrent processes never read half a file.
public struct KernelDiskCache: Sendable {
    /// The folder the files live in.
    public let directory: String

    /// A cache in `directory` (created on first store).
    public init(directory: String) {
        self.directory = directory
    }

    /// The cache folder the environment asks for, or nil when the disk cache is off:
    /// nil if `FMHA_NO_DISK_CACHE` is `1`; else `FMHA_CACHE_DIR`; else `$XDG_CACHE_HOME/fmha`;
    /// else `$HOME/.cache/fmha`; nil when none of them is set.
    public static func directory(environment: [String: String]) -> String? {
        if environment["FMHA_NO_DISK_CACHE"] == "1" { return nil }
        if let folder = environment["FMHA_CACHE_DIR"], !folder.isEmpty { return folder }
        if let folder = environment["XDG_CACHE_HOME"], !folder.isEmpty { return folder + "/fmha" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.cache/fmha" }
        return nil
    }

    /// The variables `directory(environment:)` reads, from this process's environment.
    public static var environment: [String: String] {
        LibrarySearch.variables(["FMHA_NO_DISK_CACHE", "FMHA_CACHE_DIR", "XDG_CACHE_HOME", "HOME"])
    }

    /// The cache of this process's environment, or nil when it has the disk cache off.
    public static func fromEnvironment() -> KernelDiskCache? {
        directory(environment: environment).map(KernelDiskCache.init(directory:))
    }

    /// The hash that names a kernel's file: FNV-1a over the source, each option, the compiler's
    /// version and the driver's version (each field ended by a zero byte), as 16 hex digits.
    public static func key(source: String, options: [String], compilerVersion: String, driverVersion: String) -> String {
        var hash = FNV1a()
        hash.combine(field: source)
        hash.combine(field: String(options.count))
        options.forEach { hash.combine(field: $0) }
        hash.combine(field: compilerVersion)
        hash.combine(field: driverVersion)
        return hash.hexadecimal
    }

    /// The path of the file for `descriptor` under `key`.
    public func path(for descriptor: KernelDescriptor, key: String) -> String {
        "\(directory)/\(descriptor.sourceName)-\(descriptor.architecture)-\(key).cubin"
    }

    /// The compiler output stored at `path`, or nil when the file is missing or not a valid entry.
    public func load(path: String) -> RuntimeCompiler.Output? {
        FileSystem.read(path: path).flatMap(Self.decode)
    }

    /// Stores `output` at `path`, creating the folder if needed; false when it could not.
    @discardableResult
    public func store(_ output: RuntimeCompiler.Output, path: String) -> Bool {
        FileSystem.createDirectories(directory) && FileSystem.writeAtomically(Self.encode(output), to: path)
    }

    // MARK: File format

    /// The first bytes of every cache file; bump the number when the layout changes.
    static let magic = Array("FMHA kernel cache 1\n".utf8)

    /// `magic`, then the FNV-1a of the rest (8 bytes, little-endian), then the log's length and
    /// bytes, then the cubin's length and bytes (lengths as 8 little-endian bytes).
    static func encode(_ output: RuntimeCompiler.Output) -> [UInt8] {
        var payload = [UInt8]()
        for field in [Array(output.log.utf8), output.cubin] {
            payload += littleEndianBytes(UInt64(field.count))
            payload += field
        }
        var checksum = FNV1a()
        checksum.combine(payload)
        return magic + littleEndianBytes(checksum.value) + payload
    }

    /// The output `encode` wrote into `bytes`, or nil when `bytes` is not exactly such a file.
    static func decode(_ bytes: [UInt8]) -> RuntimeCompiler.Output? {
        guard bytes.starts(with: magic) else { return nil }
        var position = magic.count
        func readNumber() -> UInt64? {
            guard bytes.count - position >= 8 else { return nil }
            defer { position += 8 }
            return bytes[position..<position + 8].reversed().reduce(0) { $0 << 8 | UInt64($1) }
        }
        func readField() -> ArraySlice<UInt8>? {
            guard let count = readNumber(), count <= UInt64(bytes.count - position) else { return nil }
            defer { position += Int(count) }
            return bytes[position..<position + Int(count)]
        }
        guard let storedChecksum = readNumber() else { return nil }
        var checksum = FNV1a()
        checksum.combine(bytes[position...])
        guard checksum.value == storedChecksum, let log = readField(), let cubin = readField(), position == bytes.count else {
            return nil
        }
        return RuntimeCompiler.Output(cubin: Array(cubin), log: String(decoding: log, as: UTF8.self))
    }

    /// `value` as 8 little-endian bytes.
    private static func littleEndianBytes(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }
}
