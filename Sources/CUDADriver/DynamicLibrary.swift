#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Synchronization

/// A shared library opened with `dlopen`, whose symbols are looked up on first use and cached
/// (its functions are declared in a table: `DriverFunctions`, `NVRTCFunctions`).
public final class DynamicLibrary: Sendable {
    /// The path or name it was opened by.
    public let path: String
    private let handle: UncheckedPointer
    private let symbols = Mutex<[String: UncheckedPointer]>([:])

    private init(path: String, handle: UnsafeMutableRawPointer) {
        self.path = path
        self.handle = UncheckedPointer(handle)
    }

    deinit {
        dlclose(handle.pointer)
    }

    /// Opens the first of `candidates` (paths or names for the loader's search path) that loads;
    /// the error lists why each one did not.
    public static func open(_ candidates: [String], what: String, hint: String = "") throws -> DynamicLibrary {
        var failures = [String]()
        for candidate in candidates {
            if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
                return DynamicLibrary(path: candidate, handle: handle)
            }
            failures.append(dlerror().map { String(cString: $0) } ?? "\(candidate): not found")
        }
        throw LibraryError(library: what, attempts: failures, hint: hint)
    }

    /// The address of `name`, or a `LibraryError` naming the symbol.
    public func address(of name: String) throws -> UnsafeMutableRawPointer {
        if let cached = symbols.withLock({ $0[name] }) { return cached.pointer }
        guard let found = dlsym(handle.pointer, name) else {
            throw LibraryError(library: path, attempts: ["symbol \(name) not found"])
        }
        symbols.withLock { $0[name] = UncheckedPointer(found) }
        return found
    }
}

/// A library or symbol that could not be loaded, with the loader's message for each attempt.
public struct LibraryError: Error, Sendable, CustomStringConvertible {
    /// What was being loaded.
    public let library: String
    /// The loader's message per candidate, in search order.
    public let attempts: [String]
    /// What the user can do about it.
    public let hint: String

    /// A failure to load `library`, with the loader's message per attempt.
    public init(library: String, attempts: [String], hint: String = "") {
        self.library = library
        self.attempts = attempts
        self.hint = hint
    }

    /// One line: the attempts that found no file are counted, the others quoted.
    public var description: String {
        let missing = attempts.filter { $0.hasSuffix("No such file or directory") }
        let other = attempts.filter { !$0.hasSuffix("No such file or directory") }
        var parts = other
        if !missing.isEmpty { parts.append("not found in \(missing.count) place\(missing.count == 1 ? "" : "s") searched") }
        return "\(library) could not be loaded: " + parts.joined(separator: "; ") + (hint.isEmpty ? "" : " (\(hint))")
    }
}

/// A raw pointer that only this module hands between threads (library handles and symbols are
/// process-wide and immutable).
struct UncheckedPointer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer

    init(_ pointer: UnsafeMutableRawPointer) {
        self.pointer = pointer
    }
}
