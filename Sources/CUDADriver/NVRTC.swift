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

    /// Loads NVRTC from the first candidate that loads.
    public init(candidates: [String] = LibrarySearch.nvrtcCandidates(
        environment: LibrarySearch.environment, sitePackages: LibrarySearch.sitePackages(environment: LibrarySearch.environment))) throws {
        library = try DynamicLibrary.open(candidates, what: "NVRTC (libnvrtc)",
                                          hint: "install the nvidia-cuda-nvrtc wheel or a CUDA toolkit, or set FMHA_NVRTC_PATH to its folder")
    }

    /// NVRTC's version, e.g. (13, 0).
    public func version() throws -> (major: Int, minor: Int) {
        var major: Int32 = 0, minor: Int32 = 0
        try call(\.nvrtcVersion) { $0(&major, &minor) }
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
        try call(\.nvrtcCreateProgram) { $0(&program, source, name, 0, nil, nil) }
        defer { try? call(\.nvrtcDestroyProgram) { $0(&program) } }
        var compileResult: Int32 = 0
        try withCStrings(options) { pointers in
            compileResult = try resolve(\.nvrtcCompileProgram)(program, Int32(options.count), pointers)
        }
        let log = try programText(program, size: \.nvrtcGetProgramLogSize, bytes: \.nvrtcGetProgramLog)
        try check(\.nvrtcCompileProgram, compileResult, log: log)
        let cubin = try programBytes(program, size: \.nvrtcGetCUBINSize, bytes: \.nvrtcGetCUBIN)
        return Output(cubin: cubin, log: log)
    }

    private func programBytes(_ program: OpaquePointer?, size: NVRTCFunctions.Entry<NVRTCFunctions.GetSize>,
                              bytes: NVRTCFunctions.Entry<NVRTCFunctions.GetBytes>) throws -> [UInt8] {
        var count = 0
        try call(size) { $0(program, &count) }
        var buffer = [CChar](repeating: 0, count: max(count, 1))
        try call(bytes) { $0(program, &buffer) }
        return buffer.prefix(count).map { UInt8(bitPattern: $0) }
    }

    private func programText(_ program: OpaquePointer?, size: NVRTCFunctions.Entry<NVRTCFunctions.GetSize>,
                             bytes: NVRTCFunctions.Entry<NVRTCFunctions.GetBytes>) throws -> String {
        let raw = try programBytes(program, size: size, bytes: bytes)
        return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// NVRTC function `function` (an `NVRTCFunctions` entry, e.g. `\.nvrtcVersion`).
    private func resolve<Function>(_ function: NVRTCFunctions.Entry<Function>) throws -> Function {
        try function(NVRTCFunctions.table).resolve(in: library)
    }

    /// Calls NVRTC function `function` through `invoke`, which passes the arguments; throws
    /// `NVRTCError` unless it returns NVRTC_SUCCESS (0).
    private func call<Function>(_ function: NVRTCFunctions.Entry<Function>, _ invoke: (Function) throws -> Int32) throws {
        try check(function, try invoke(try resolve(function)))
    }

    /// Throws `NVRTCError`, naming `function`, unless `result` is NVRTC_SUCCESS (0).
    private func check<Function>(_ function: NVRTCFunctions.Entry<Function>, _ result: Int32, log: String = "") throws {
        guard result != 0 else { return }
        let message = (try? resolve(\.nvrtcGetErrorString)).flatMap { $0(result) }.map { String(cString: $0) } ?? "NVRTC error \(result)"
        throw NVRTCError(call: function(NVRTCFunctions.table).name, code: result, message: message, log: log)
    }
}

/// The NVRTC functions this package calls, each declared once with its C name and type. Every one
/// but `nvrtcGetErrorString` returns an `nvrtcResult` (`Int32`); programs are `OpaquePointer`.
struct NVRTCFunctions: Sendable {
    /// The one table.
    static let table = NVRTCFunctions()
    /// How a call names its function: a key path such as `\.nvrtcVersion`.
    typealias Entry<Function> = @Sendable (NVRTCFunctions) -> LibraryFunction<Function>

    typealias Program = OpaquePointer?
    typealias CStrings = UnsafePointer<UnsafePointer<CChar>?>?
    /// The size of a program's log or cubin.
    typealias GetSize = @convention(c) (Program, UnsafeMutablePointer<Int>?) -> Int32
    /// A program's log or cubin, into a buffer of that size.
    typealias GetBytes = @convention(c) (Program, UnsafeMutablePointer<CChar>?) -> Int32

    let nvrtcVersion = LibraryFunction<@convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<Int32>?) -> Int32>("nvrtcVersion")
    let nvrtcGetErrorString = LibraryFunction<@convention(c) (Int32) -> UnsafePointer<CChar>?>("nvrtcGetErrorString")
    let nvrtcCreateProgram = LibraryFunction<@convention(c) (UnsafeMutablePointer<Program>?, UnsafePointer<CChar>?, UnsafePointer<CChar>?,
                                                            Int32, CStrings, CStrings) -> Int32>("nvrtcCreateProgram")
    let nvrtcCompileProgram = LibraryFunction<@convention(c) (Program, Int32, CStrings) -> Int32>("nvrtcCompileProgram")
    let nvrtcDestroyProgram = LibraryFunction<@convention(c) (UnsafeMutablePointer<Program>?) -> Int32>("nvrtcDestroyProgram")
    let nvrtcGetProgramLogSize = LibraryFunction<GetSize>("nvrtcGetProgramLogSize")
    let nvrtcGetProgramLog = LibraryFunction<GetBytes>("nvrtcGetProgramLog")
    let nvrtcGetCUBINSize = LibraryFunction<GetSize>("nvrtcGetCUBINSize")
    let nvrtcGetCUBIN = LibraryFunction<GetBytes>("nvrtcGetCUBIN")
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
