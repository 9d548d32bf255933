/// The one error type FMHA throws.
///
/// Every check on caller input throws an `FMHAError` whose message names the argument, what was
/// expected and what was given. Nothing a caller passes should crash the process instead.
public struct FMHAError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, broadly; `message` has the details.
    public enum Kind: String, Sendable, Equatable {
        /// An argument has a value the function cannot accept (shape, length, window, dtype…).
        case invalidArgument
        /// The request is valid but not implemented on this device, dtype or build.
        case unsupported
        /// The device named is not usable in this process (no CUDA driver, no such device…).
        case deviceUnavailable
        /// The request is valid but needs more memory than the host or the device can give; the
        /// message says how many bytes.
        case outOfMemory
        /// A CUDA driver call failed; the message has the call, the error's name and its text.
        case cuda
    }

    /// The broad category of the failure.
    public let kind: Kind
    /// A full sentence for the user.
    public let message: String

    /// Creates an error of `kind` with a ready-made message.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// An invalid argument: "`argument`: expected `expected`, got `given`".
    public static func invalidArgument(_ argument: String, expected: String, got given: String) -> FMHAError {
        FMHAError(.invalidArgument, "\(argument): expected \(expected), got \(given)")
    }

    public var description: String { message }
}
