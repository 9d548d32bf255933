import FMHACore

/// Everything a compiled kernel depends on, as the compiler sees it: which kernel source, for which
/// GPU architecture, with which compile-time constants. A `KernelVariantDescriptor` produces it
/// from its typed fields; it expands to the source text and compiler options that NVRTC compiles
/// and the disk cache keys on.
///
/// Sequence lengths, strides and pointers are kernel arguments and never belong here.
public struct KernelDescriptor: Hashable, Sendable, CustomStringConvertible {
    /// The kernel's source file in `Sources/FMHACUDA/Kernels` without `.cu`, e.g. `"dropout_mask"`.
    public var sourceName: String
    /// The GPU architecture NVRTC compiles for: `"sm_80"`, `"sm_90"`, `"sm_90a"`, ...
    public var architecture: String
    /// Compile-time constants, emitted as `#define name value` ahead of the source (name order).
    public var defines: [String: String]
    /// Shared kernel files (names without `.cu`) compiled between `prelude.cu` and the kernel,
    /// e.g. `["tensor_core"]`.
    public var headers: [String]

    /// A descriptor of `sourceName` for `architecture` with `defines`, after `headers`.
    public init(sourceName: String, architecture: String, defines: [String: String] = [:], headers: [String] = []) {
        self.sourceName = sourceName
        self.architecture = architecture
        self.defines = defines
        self.headers = headers
    }

    /// `sourceName`, `architecture` and the defines, e.g. `dropout_mask sm_90 [BLOCK=128]`.
    public var description: String {
        let definitions = defines.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return "\(sourceName) \(architecture)" + (definitions.isEmpty ? "" : " [\(definitions.joined(separator: ", "))]")
    }

    /// The whole translation unit NVRTC compiles: the defines, `prelude.cu`, the headers, then the
    /// kernel file, each file introduced by a `#line` directive so that compiler messages name it.
    public func source() throws(FMHAError) -> String {
        guard let kernel = KernelSources.byFileName[sourceName + ".cu"], sourceName != "prelude" else {
            let known = KernelSources.byFileName.keys.filter { $0 != "prelude.cu" }.sorted()
            throw .invalidArgument("KernelDescriptor.sourceName", expected: "one of \(known)", got: "\"\(sourceName)\"")
        }
        var text = "// FMHA kernel \(self)\n"
        for (name, value) in defines.sorted(by: { $0.key < $1.key }) {
            guard Self.isIdentifier(name) else {
                throw .invalidArgument("KernelDescriptor.defines", expected: "C identifiers as names", got: "\"\(name)\"")
            }
            guard !value.contains(where: \.isNewline) else {
                throw .invalidArgument("KernelDescriptor.defines[\(name)]", expected: "a one-line value", got: "\"\(value)\"")
            }
            text += "#define \(name) \(value)\n"
        }
        var files = [("prelude.cu", KernelSources.prelude)]
        for header in headers {
            guard let contents = KernelSources.byFileName[header + ".cu"] else {
                throw .invalidArgument("KernelDescriptor.headers", expected: "kernel file names without .cu", got: "\"\(header)\"")
            }
            files.append((header + ".cu", contents))
        }
        for (fileName, contents) in files + [(sourceName + ".cu", kernel)] {
            text += "#line 1 \"\(fileName)\"\n" + contents
            if !contents.hasSuffix("\n") { text += "\n" }
        }
        return text
    }

    /// NVRTC's options: the architecture (a cubin, not PTX, since it names a real `sm_`), C++17,
    /// device code by default, and ptxas' resource report (`CompiledKernel.resources`).
    public func options() throws(FMHAError) -> [String] {
        let number = architectureDigits
        let variant = architecture.utf8.dropFirst(3 + number.count)
        guard architecture.hasPrefix("sm_"), !number.isEmpty, variant.isEmpty || variant.elementsEqual("a".utf8) else {
            throw .invalidArgument("KernelDescriptor.architecture", expected: "sm_<digits> or sm_<digits>a, e.g. sm_90",
                                   got: "\"\(architecture)\"")
        }
        return ["--gpu-architecture=\(architecture)", "--std=c++17", "-default-device", "-Xptxas", "-v"]
    }

    /// The compute capability's major number of `architecture` ("sm_90a" → 9, "sm_120" → 12), or
    /// nil when it is not `sm_<digits>[a]`.
    var architectureMajor: Int? {
        let number = architectureDigits
        guard architecture.hasPrefix("sm_"), number.count >= 2, let value = Int(String(decoding: number, as: UTF8.self)) else {
            return nil
        }
        return value / 10
    }

    /// The digits after `sm_` (or after any three characters: callers check the prefix).
    private var architectureDigits: Substring.UTF8View {
        architecture.utf8.dropFirst(3).prefix(while: Self.isDigit)
    }

    /// Whether `name` is a C identifier (ASCII letters, digits and `_`, not starting with a digit).
    static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, !isDigit(first) else { return false }
        return name.utf8.allSatisfy { byte in
            byte == UInt8(ascii: "_") || isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
        }
    }

    /// Whether `byte` is an ASCII digit.
    private static func isDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
