#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CUDADriver
import Synchronization

/// The one line a process prints on standard error when compiling kernels makes the user wait:
/// once the kernels compiled in this process (disk cache misses) have taken more than a second
/// in all, so that a first run that seems to hang says why, and later runs, served by the disk
/// cache, stay silent.
enum SlowCompilationNotice {
    /// Compile time after which the notice is printed.
    static let threshold = Duration.seconds(1)

    /// Compile time so far, and whether the notice was printed.
    private static let state = Mutex<(total: Duration, printed: Bool)>((.zero, false))

    /// Adds one compilation of `duration` for `architecture`; prints the notice if this one
    /// crosses the threshold.
    static func record(_ duration: Duration, architecture: String, cacheDirectory: String?) {
        let crossed = state.withLock { state in
            state.total += duration
            guard !state.printed, state.total > threshold else { return false }
            state.printed = true
            return true
        }
        if crossed {
            DescriptorWriter.writeAll(Array((message(architecture: architecture, cacheDirectory: cacheDirectory) + "\n").utf8),
                                      to: STDERR_FILENO)
        }
    }

    /// The notice's text, e.g. `fmha: compiling CUDA kernels for sm_90 (first use; cached in /home/me/.cache/fmha)`.
    static func message(architecture: String, cacheDirectory: String?) -> String {
        let cache = cacheDirectory.map { "cached in \($0)" } ?? "disk cache off"
        return "fmha: compiling CUDA kernels for \(architecture) (first use; \(cache))"
    }
}
