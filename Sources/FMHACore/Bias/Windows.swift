/// Checks on sliding-window arguments, shared by every local-attention mask.
enum Windows {
    /// A causal window counts the diagonal key, so it must be at least 1.
    static func checkSize(_ windowSize: Int, argument: String = "windowSize") throws {
        guard windowSize > 0 else {
            throw FMHAError.invalidArgument(argument, expected: "a window size > 0", got: "\(windowSize)")
        }
    }

    /// Two-sided windows count keys beyond the diagonal on each side, so 0 is allowed.
    static func checkSides(left: Int, right: Int) throws {
        guard left >= 0 else {
            throw FMHAError.invalidArgument("windowLeft", expected: "a window ≥ 0", got: "\(left)")
        }
        guard right >= 0 else {
            throw FMHAError.invalidArgument("windowRight", expected: "a window ≥ 0", got: "\(right)")
        }
    }
}
