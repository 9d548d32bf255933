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
