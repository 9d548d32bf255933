import ArgumentParser
import FMHA

/// The `fmha` command: attention from the shell.
public struct FMHACommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "fmha",
        abstract: "Memory-efficient attention (xFormers' fmha) from the shell.",
        subcommands: [InfoCommand.self, RunCommand.self, CheckCommand.self, BenchCommand.self])

    public init() {}
}

extension ParsableCommand {
    /// Runs `body`; an `FMHAError` (bad input, or a request too large for memory) becomes one
    /// line on standard error, `fmha <command>: <message>`, and exit code 2.
    func exitingWithCodeTwoOnFMHAError(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as FMHAError {
            let name = Self.configuration.commandName ?? "fmha"
            StandardError.writeLine("fmha \(name): " + error.message.split(separator: "\n").joined(separator: " | "))
            throw ExitCode(2)
        }
    }
}
