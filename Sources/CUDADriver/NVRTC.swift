#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// NVRTC, CUDA's run-time compiler, loaded with `dlopen` (`LibrarySearch`): CUDA C++ source in,
/// a cubin for one architecture out, with the compiler's log.
public final class NVRTC: Sendable {
    /// The loaded library.
    public let library: DynamicLibrary

    private typealias Version = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?) -> Int32
    private typealias CreateProgram = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?, UnsafePointer<CChar>?,
                                                      UnsafePointer<CChar>?, Int32, UnsafePointer<UnsafePointer<CChar>?>?,
                                                      UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private typealias CompileProgram = @convention(c) (OpaquePointer?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
    private typealias GetSize = @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int>?) -> Int32
    private typealias GetBytes = @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?) -> Int32
    private typealias DestroyProgram = @convention(c) (UnsafeMutablePointer<OpaquePointer?>?) -> Int32
    private typealias ErrorString = @convention(c) (Int32) -> UnsafePointer<CChar>?

    /// Loads NVRTC from the first candidate that loads.
    public init(candidates: [String] = LibrarySearch.nvrtcCandidates(
        environment: LibrarySearch.environment, sitePackages: LibrarySearch.sitePackages(environment: LibrarySearch.environment))) throws {
        library = try DynamicLibrary.open(candidates, what: "NVRTC (libnvrtc)",
                                          hint: "install the nvidia-cuda-nvrtc wheel or a CUDA toolkit, or set FMHA_NVRTC_PATH to its folder")
    }

    /// NVRTC's version, e.g. (13, 0).
    public func version() throws -> (major: Int, minor: Int) {
        var major: Int32 = 0, minor: Int32 = 0
        try check("nvrtcVersion", try library.function("nvrtcVersion", as: Version.self)(&major, &minor))
        return (Int(major), Int(minor))
    }

    /// What a successful compilation gives.
    public struct Output: Sendable {
        /// The cubin for the requested architecture.
        public let cubin: [UInt8]
        /// The compiler's log (warnings; `-Xptxas -v` resource usage).
        public let log: String
    }

    /// Compiles `source` (named `name` in messages) with `options`, e.g.
    /// `["--gpu-architecture=sm_90", "-Xptxas", "-v"]`. Throws `NVRTCError` with the log on failure.
    public func compile(source: String, name: String, options: [String]) throws -> Output {
        var program: OpaquePointer?
        let create = try library.function("nvrtcCreateProgram", as: CreateProgram.self)
        try check("nvrtcCreateProgram", create(&program, source, name, 0, nil, nil))
        defer {
            if let destroy = try? library.function("nvrtcDestroyProgram", as: DestroyProgram.self) { _ = destroy(&program) }
        }
        let compileResult = try withCStrings(options) { pointers in
            try library.function("nvrtcCompileProgram", as: CompileProgram.self)(program, Int32(options.count), pointers)
        }
        let log = try programText(program, size: "nvrtcGetProgramLogSize", bytes: "nvrtcGetProgramLog")
        try check("nvrtcCompileProgram", compileResult, log: log)
        let cubin = try programBytes(program, size: "nvrtcGetCUBINSize", bytes: "nvrtcGetCUBIN")
        return Output(cubin: cubin, log: log)
    }

    private func programBytes(_ program: OpaquePointer?, size: String, bytes: String) throws -> [UInt8] {
        var count = 0
        try check(size, try library.function(size, as: GetSize.self)(program, &count))
        var buffer = [CChar](repeating: 0, count: max(count, 1))
        try check(bytes, try library.function(bytes, as: GetBytes.self)(program, &buffer))
        return buffer.prefix(count).map { UInt8(bitPattern: $0) }
    }

    private func programText(_ program: OpaquePointer?, size: String, bytes: String) throws -> String {
        let raw = try programBytes(program, size: size, bytes: bytes)
        return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// Throws `NVRTCError` unless `result` is NVRTC_SUCCESS (0).
    private func check(_ call: String, _ result: Int32, log: String = "") throws {
        guard result != 0 else { return }
        let message = (try? library.function("nvrtcGetErrorString", as: ErrorString.self))
            .flatMap { $0(result) }.map { String(cString: $0) } ?? "NVRTC error \(result)"
        throw NVRTCError(call: call, code: result, message: message, log: log)
    }
}

/// An NVRTC call that failed: the call, NVRTC's code and message, and the compile log.
public struct NVRTCError: Error, Sendable, CustomStringConvertible {
    public let call: String
    public let code: Int32
    public let message: String
    public let log: String

    public var description: String {
        "\(call) failed: \(message) (\(code))" + (log.isEmpty ? "" : "\n" + log)
    }
}

/// Calls `body` with a C array of C strings for `strings`.
func withCStrings<Result>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) throws -> Result) rethrows -> Result {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer($0) }
    return try pointers.withUnsafeBufferPointer { try body($0.baseAddress) }
}
