import ArgumentParser
import FMHA

/// The `fmha` command: attention from the shell.
public struct FMHACommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fmha",
        abstract: "Memory-efficient attention (xFormers' fmha) from the shell.",
        subcommands: [InfoCommand.self, RunCommand.self, CheckCommand.self, BenchCommand.self])

    public init() {}

    /// Runs the command line `arguments` (without the program's name) and returns the exit code:
    /// 0 when it succeeds (and after printing `--help`), 2 with one line on standard error for a
    /// usage error or bad input, or the code a subcommand chose (1 when `fmha check` finds a failure).
    public static func run(arguments: [String]) -> Int32 {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            return 0
        } catch let code as ExitCode {
            return code.rawValue
        } catch let error as FMHAError {
            StandardError.writeLine("fmha: " + oneLine(error.message))
            return 2
        } catch {
            if exitCode(for: error) == .success {
                print(fullMessage(for: error))
                return 0
            }
            StandardError.writeLine("fmha: " + oneLine(message(for: error)))
            return 2
        }
    }

    /// `text` on one line: its lines joined by " | ".
    static func oneLine(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: true).joined(separator: " | ")
    }
}

extension ParsableCommand {
    /// Runs `body`; an `FMHAError` (bad input, or a request too large for memory) becomes one
    /// line on standard error, `fmha <command>: <message>`, and exit code 2.
    func exitingWithCodeTwoOnFMHAError(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as FMHAError {
            let name = Self.configuration.commandName ?? "fmha"
            StandardError.writeLine("fmha \(name): " + FMHACommand.oneLine(error.message))
            throw ExitCode(2)
        }
    }
}
