import FMHA

/// One progress line on standard error when it is a terminal, rewritten in place as work goes
/// on and erased at the end, so that long `run`, `check` and `bench` calls show what they are
/// doing; nothing is written when standard error is a file or a pipe.
struct ProgressLine {
    /// Whether the line is shown (standard error is a terminal).
    let isShown = StandardError.isTerminal

    /// Replaces the line with `text`.
    func show(_ text: String) {
        if isShown { StandardError.write("\r\u{1B}[K" + text) }
    }

    /// Erases the line.
    func clear() {
        if isShown { StandardError.write("\r\u{1B}[K") }
    }
}
