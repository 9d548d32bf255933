import CUDADriver

/// A CUDA C++ compiler that turns one translation unit into a cubin: NVRTC in production, a stand-in
/// in tests of the caches.
public struct RuntimeCompiler: Sendable {
    /// What a compilation gives.
    public struct Output: Sendable, Hashable {
        /// The cubin.
        public var cubin: [UInt8]
        /// The compiler's log (warnings and ptxas' `-v` report).
        public var log: String

        /// An output of `cubin` and `log`.
        public init(cubin: [UInt8], log: String) {
            self.cubin = cubin
            self.log = log
        }
    }

    /// Names the compiler and its version, e.g. `nvrtc 13.0`; part of the disk cache key, so that
    /// another compiler never reuses this one's cubins.
    public let version: String
    private let compileSource: @Sendable (_ source: String, _ name: String, _ options: [String]) throws -> Output

    /// A compiler identified by `version` that runs `compile(source, name, options)`.
    public init(version: String,
                compile: @escaping @Sendable (_ source: String, _ name: String, _ options: [String]) throws -> Output) {
        self.version = version
        compileSource = compile
    }

    /// NVRTC, with its version read from the library.
    ///
    /// NVRTC 12.9 and later keep their own cache of compiled programs (shared across processes),
    /// and a program served from it comes without ptxas' `-v` report, so `resources` would be
    /// empty; it is turned off (`--no-cache`): `KernelCompiler` caches the cubin and the log.
    public static func nvrtc(_ nvrtc: NVRTC) throws -> RuntimeCompiler {
        let (major, minor) = try nvrtc.version()
        let extraOptions = (major, minor) >= (12, 9) ? ["--no-cache"] : []
        return RuntimeCompiler(version: "nvrtc \(major).\(minor)") { source, name, options in
            let output = try nvrtc.compile(source: source, name: name, options: options + extraOptions)
            return Output(cubin: output.cubin, log: output.log)
        }
    }

    /// Compiles `source` (called `name` in messages) with `options`; throws the compiler's error,
    /// with its log, on failure.
    public func compile(source: String, name: String, options: [String]) throws -> Output {
        try compileSource(source, name, options)
    }
}
