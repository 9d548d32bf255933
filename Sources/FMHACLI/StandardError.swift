#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Writing to standard error (file descriptor 2) without Foundation.
enum StandardError {
    /// Writes `text` as it is.
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + written, $0.count - written) }
            if result <= 0 { return }
            written += result
        }
    }

    /// Writes `text` and a newline.
    static func writeLine(_ text: String) {
        write(text + "\n")
    }

    /// Whether standard error is a terminal (for progress lines).
    static var isTerminal: Bool { isatty(2) == 1 }
}
