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
    /// usage error or bad input (`fmha <subcommand>: <message>`), or the code a subcommand chose
    /// (1 when `fmha check` finds a failure).
    public static func run(arguments: [String]) -> Int32 {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot(arguments)
        } catch {
            return report(error, prefix: "fmha")
        }
        do {
            try command.run()
            return 0
        } catch {
            let name = type(of: command) == FMHACommand.self ? nil : type(of: command).configuration.commandName
            return report(error, prefix: "fmha" + (name.map { " " + $0 } ?? ""))
        }
    }

    /// The exit code for `error`, after printing what the user needs: the help text (exit 0), or
    /// one line on standard error starting with `prefix` (exit 2); an `ExitCode` passes through.
    private static func report(_ error: any Error, prefix: String) -> Int32 {
        if let code = error as? ExitCode { return code.rawValue }
        if let error = error as? FMHAError {
            StandardError.writeLine(prefix + ": " + oneLine(error.message))
            return 2
        }
        if exitCode(for: error) == .success {
            print(fullMessage(for: error))
            return 0
        }
        StandardError.writeLine(prefix + ": " + oneLine(message(for: error)))
        return 2
    }

    /// `text` on one line: its lines joined by " | ".
    static func oneLine(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: true).joined(separator: " | ")
    }
}
