/// Number and table formatting without Foundation.
enum Formatting {
    /// `value` with `digits` digits after the point (`inf`, `nan` spelled out).
    static func decimal(_ value: Double, digits: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let rounded = (abs(value) * scale).rounded()
        guard rounded < 9e15 else { return "\(value)" }
        let whole = Int(rounded / scale), fraction = Int(rounded) - whole * Int(scale)
        var fractionText = String(fraction)
        fractionText = String(repeating: "0", count: max(0, digits - fractionText.count)) + fractionText
        let sign = value < 0 && rounded > 0 ? "-" : ""
        return digits > 0 ? "\(sign)\(whole).\(fractionText)" : "\(sign)\(whole)"
    }
}

/// A plain-text table with left-aligned columns.
enum Table {
    static func render(header: [String], rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $1 + String(repeating: " ", count: widths[$0] - $1.count) }
                .joined(separator: "  ").trimmingTrailingSpaces()
        }
        let rule = widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
