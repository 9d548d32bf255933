#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import FMHACLI

exit(FMHACommand.run(arguments: Array(CommandLine.arguments.dropFirst())))
