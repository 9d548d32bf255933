#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

import CUDADriver

/// Writing to standard error (file descriptor 2) without Foundation, for the `fmha` command.
package enum StandardError {
    /// Writes `text` as it is.
    package static func write(_ text: String) {
        DescriptorWriter.writeAll(Array(text.utf8), to: 2)
    }

    /// Writes `text` and a newline.
    package static func writeLine(_ text: String) {
        write(text + "\n")
    }

    /// Whether standard error is a terminal (for progress lines).
    package static var isTerminal: Bool { isatty(2) == 1 }
}
