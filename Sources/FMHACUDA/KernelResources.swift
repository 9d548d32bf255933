/// What one compiled function uses, as ptxas reports it under `-Xptxas -v`: registers per thread,
/// static shared memory, stack and spills.
public struct KernelResources: Sendable, Hashable {
    /// The function's (mangled or `extern "C"`) name.
    public var function: String
    /// Registers per thread (0 when ptxas reported none, e.g. for a non-entry function).
    public var registers: Int = 0
    /// Static shared memory per block, in bytes.
    public var sharedMemoryBytes: Int = 0
    /// Per-thread stack frame, in bytes.
    public var stackFrameBytes: Int = 0
    /// Bytes of registers spilled to local memory (stores).
    public var spillStoreBytes: Int = 0
    /// Bytes of spilled registers read back from local memory (loads).
    public var spillLoadBytes: Int = 0

    /// Resources of `function` with every count zero.
    public init(function: String) {
        self.function = function
    }

    /// Whether ptxas spilled any register of this function.
    public var spills: Bool { spillStoreBytes > 0 || spillLoadBytes > 0 }

    /// Whether the spills (stores or loads) exceed `tolerated` bytes (a variant's
    /// `toleratedSpillBytes`).
    public func spills(moreThan tolerated: Int) -> Bool { max(spillStoreBytes, spillLoadBytes) > tolerated }

    /// The functions in a ptxas `-v` log, in the order the log first names them.
    ///
    /// Understands the lines ptxas writes per function:
    /// ```
    /// ptxas info    : Compiling entry function 'fmha_dropout_keep' for 'sm_90'
    /// ptxas info    : Function properties for fmha_dropout_keep
    /// ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    /// ptxas info    : Used 32 registers, 0 bytes smem, 380 bytes cmem[0]
    /// ```
    /// Counts before the first function line (such as `0 bytes gmem`) and unknown lines are ignored.
    public static func parse(ptxasLog log: String) -> [KernelResources] {
        var functions = [KernelResources]()
        var current: Int?
        for line in log.split(whereSeparator: \.isNewline) {
            if let name = quotedName(after: "Compiling entry function '", in: line)
                ?? name(after: "Function properties for ", in: line) {
                if let known = functions.firstIndex(where: { $0.function == name }) {
                    current = known
                } else {
                    functions.append(KernelResources(function: name))
                    current = functions.count - 1
                }
                continue
            }
            guard let index = current else { continue }
            functions[index].read(counts: line)
        }
        return functions
    }

    /// Adds the counts that `line` reports ("Used N registers", "N bytes smem", ...).
    private mutating func read(counts line: Substring) {
        let words = line.split { $0 == " " || $0 == "," || $0 == "\t" }
        for (position, word) in words.enumerated() {
            guard let count = Int(word) else { continue }
            let following = words.dropFirst(position + 1).prefix(3).joined(separator: " ")
            if position > 0, words[position - 1] == "Used", following.hasPrefix("registers") {
                registers = count
            } else if following.hasPrefix("bytes smem") {
                sharedMemoryBytes = count
            } else if following.hasPrefix("bytes stack frame") {
                stackFrameBytes = count
            } else if following.hasPrefix("bytes spill stores") {
                spillStoreBytes = count
            } else if following.hasPrefix("bytes spill loads") {
                spillLoadBytes = count
            }
        }
    }

    /// The text between `prefix` and the next `'` in `line`, if `line` contains `prefix`.
    private static func quotedName(after prefix: String, in line: Substring) -> String? {
        guard let start = line.firstRange(of: prefix)?.upperBound else { return nil }
        return String(line[start...].prefix { $0 != "'" })
    }

    /// The word after `prefix` in `line`, if `line` contains `prefix`.
    private static func name(after prefix: String, in line: Substring) -> String? {
        guard let start = line.firstRange(of: prefix)?.upperBound else { return nil }
        let name = line[start...].prefix { !$0.isWhitespace }
        return name.isEmpty ? nil : String(name)
    }
}
