#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

import FMHA
import Testing
@testable import FMHACLI

/// A fresh folder under /tmp (made with `mkdtemp`) whose files `remove()` deletes.
final class TemporaryDirectory {
    /// The folder's absolute path.
    let path: String
    /// Names of the files handed out by `file(_:)`.
    private var names = [String]()

    init() throws {
        var template = Array("/tmp/fmha-cli-tests-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buffer -> String? in
            guard let base = buffer.baseAddress, mkdtemp(base) != nil else { return nil }
            return String(cString: base)
        }
        guard let made else { throw FMHAError(.invalidArgument, "mkdtemp failed: \(FileBytes.systemMessage(errno))") }
        path = made
    }

    /// The absolute path of `name` in this folder, remembered for removal.
    func file(_ name: String) -> String {
        names.append(name)
        return path + "/" + name
    }

    /// Deletes every file handed out, then the folder.
    func remove() {
        for name in names { unlink(path + "/" + name) }
        rmdir(path)
    }
}

/// Records an issue unless `body` throws an `FMHAError` whose one-line message contains every
/// fragment.
func expectFMHAError(_ fragments: [String], sourceLocation: SourceLocation = #_sourceLocation,
                     _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an FMHAError containing \(fragments), but nothing was thrown", sourceLocation: sourceLocation)
    } catch let error as FMHAError {
        for fragment in fragments where !error.message.contains(fragment) {
            Issue.record("the error \"\(error.message)\" does not contain \"\(fragment)\"", sourceLocation: sourceLocation)
        }
        if error.message.contains("\n") {
            Issue.record("the error \"\(error.message)\" spans several lines", sourceLocation: sourceLocation)
        }
    } catch {
        Issue.record("expected an FMHAError, got \(error)", sourceLocation: sourceLocation)
    }
}
