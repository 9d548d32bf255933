#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What `fmha info` reports about the machine.
enum Platform {
    /// Processor architecture this binary was built for.
    static var architecture: String {
        #if arch(x86_64)
        "x86_64"
        #elseif arch(arm64)
        "arm64"
        #else
        "unknown architecture"
        #endif
    }

    /// Writes out what `print` has buffered (`fflush(nil)`: every output stream). Standard output is
    /// fully buffered when it is not a terminal, so a long `fmha bench --json` shows each case as it
    /// finishes and a run cut short keeps the cases it measured.
    static func flushStandardOutput() { fflush(nil) }

    /// Online logical processors.
    static var processorCount: Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// The CPU model and the vector features attention kernels care about, from /proc/cpuinfo.
    static func cpuDescription() -> String {
        guard let bytes = try? FileBytes.read(path: "/proc/cpuinfo") else { return "unknown (no /proc/cpuinfo)" }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        func field(_ name: String) -> String? {
            lines.first { $0.hasPrefix(name) }.flatMap { $0.split(separator: ":", maxSplits: 1).last }
                .map { String($0.drop { $0 == " " }) }
        }
        let model = field("model name") ?? "unknown model"
        let flags = Set((field("flags") ?? field("Features") ?? "").split(separator: " ").map(String.init))
        let interesting = ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16",
                           "asimd", "asimdhp", "sve", "bf16"]
        let present = interesting.filter(flags.contains)
        return "\(model); features: \(present.isEmpty ? "none of interest" : present.joined(separator: " "))"
    }
}
