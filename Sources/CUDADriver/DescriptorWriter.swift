#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Whole-buffer writes to a file descriptor with the C library (no Foundation), for the package's
/// standard-error messages and the kernel cache's files.
package enum DescriptorWriter {
    /// Writes every byte of `bytes` to `descriptor`, continuing after short or interrupted writes;
    /// false when a write fails or writes nothing (the rest is then left unwritten).
    @discardableResult
    package static func writeAll(_ bytes: [UInt8], to descriptor: Int32) -> Bool {
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + written, $0.count - written) }
            if result < 0, errno == EINTR { continue }
            if result <= 0 { return false }
            written += result
        }
        return true
    }
}
