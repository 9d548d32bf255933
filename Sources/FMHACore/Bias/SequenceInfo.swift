/// Packed sequence lengths, like xFormers' `_SeqLenInfo`: sequence `b` occupies
/// `seqstarts[b] ..< seqstarts[b + 1]` of the packed dimension.
public struct SeqLenInfo: Sendable, Hashable {
    /// Start of each sequence plus the total at the end (`count + 1` entries, from 0).
    public let seqstarts: [Int]

    /// Lengths → starts, checking that there is at least one sequence, no length is negative and
    /// the total fits. `argument` names the caller's parameter in errors.
    public static func fromSeqlens(_ seqlens: [Int], argument: String = "seqlens") throws -> SeqLenInfo {
        try SequenceLengths.check(seqlens, argument: argument)
        var starts = [0]
        starts.reserveCapacity(seqlens.count + 1)
        for length in seqlens {
            let (next, overflow) = starts[starts.count - 1].addingReportingOverflow(length)
            guard !overflow else {
                throw FMHAError.invalidArgument(argument, expected: "lengths whose sum fits in Int", got: "\(seqlens)")
            }
            starts.append(next)
        }
        return SeqLenInfo(seqstarts: starts)
    }

    /// Number of sequences.
    public var count: Int { seqstarts.count - 1 }
    /// Length of each sequence.
    public var seqlens: [Int] { zip(seqstarts.dropFirst(), seqstarts).map { $0 - $1 } }
    /// Sum of the lengths.
    public var total: Int { seqstarts[seqstarts.count - 1] }
    /// The longest sequence.
    public var maxSeqlen: Int { seqlens.max() ?? 0 }
    /// The shortest sequence.
    public var minSeqlen: Int { seqlens.min() ?? 0 }
    /// The range of each sequence in the packed dimension.
    public func intervals() -> [Range<Int>] { zip(seqstarts, seqstarts.dropFirst()).map { $0..<$1 } }
}

/// Keys padded to a fixed stride, like xFormers' `_PaddedSeqLenInfo`: sequence `b` uses keys
/// `b·padding ..< b·padding + seqlens[b]`.
public struct PaddedSeqLenInfo: Sendable, Hashable {
    /// Keys used in each sequence.
    public let seqlens: [Int]
    /// Keys reserved per sequence.
    public let padding: Int

    /// Checks that every length is in `0...padding`.
    public static func fromSeqlens(_ seqlens: [Int], padding: Int, argument: String = "kvSeqlen",
                                   paddingArgument: String = "kvPadding") throws -> PaddedSeqLenInfo {
        guard padding >= 0 else {
            throw FMHAError.invalidArgument(paddingArgument, expected: "a padding ≥ 0", got: "\(padding)")
        }
        try SequenceLengths.check(seqlens, argument: argument)
        if let bad = seqlens.firstIndex(where: { $0 > padding }) {
            throw FMHAError.invalidArgument("\(argument)[\(bad)]", expected: "a length ≤ \(paddingArgument) (\(padding))",
                                            got: "\(seqlens[bad])")
        }
        guard padding.multipliedReportingOverflow(by: seqlens.count).overflow == false else {
            throw FMHAError.invalidArgument(paddingArgument, expected: "a padding whose total fits in Int", got: "\(padding)")
        }
        return PaddedSeqLenInfo(seqlens: seqlens, padding: padding)
    }

    /// Number of sequences.
    public var count: Int { seqlens.count }
    /// Where each sequence's keys start: `b·padding`.
    public var seqstarts: [Int] { seqlens.indices.map { $0 * padding } }
    /// The used keys of each sequence.
    public func intervals() -> [Range<Int>] { zip(seqstarts, seqlens).map { $0..<$0 + $1 } }
}

/// Keys anywhere in the key dimension, like xFormers' `_GappySeqInfo`: sequence `b` uses keys
/// `seqstarts[b] ..< seqstarts[b] + seqlens[b]` (overlaps and gaps allowed). For paged masks each
/// start is an offset inside that sequence's own logical key space.
public struct GappySeqInfo: Sendable, Hashable {
    /// Where each sequence's keys start (one entry per sequence).
    public let seqstarts: [Int]
    /// Keys used by each sequence.
    public let seqlens: [Int]

    /// Checks starts and lengths: one start per length, all ≥ 0, every end ≤ `limit`.
    static func validated(seqstarts: [Int], seqlens: [Int], limit: Int, limitDescription: String) throws -> GappySeqInfo {
        try SequenceLengths.check(seqlens, argument: "kvSeqlen")
        guard seqstarts.count == seqlens.count else {
            throw FMHAError.invalidArgument("kvSeqstarts", expected: "one start per kvSeqlen entry (\(seqlens.count))",
                                            got: "\(seqstarts.count) starts")
        }
        for (block, (start, length)) in zip(seqstarts, seqlens).enumerated() {
            guard start >= 0, start <= limit, length <= limit - start else {
                throw FMHAError.invalidArgument(
                    "kvSeqstarts[\(block)]",
                    expected: "a start ≥ 0 whose sequence (length \(length)) ends within \(limitDescription) (\(limit))",
                    got: "\(start)")
            }
        }
        return GappySeqInfo(seqstarts: seqstarts, seqlens: seqlens)
    }

    /// Number of sequences.
    public var count: Int { seqlens.count }
    /// The used keys of each sequence.
    public func intervals() -> [Range<Int>] { zip(seqstarts, seqlens).map { $0..<$0 + $1 } }
}

/// Checks shared by every list of sequence lengths.
enum SequenceLengths {
    static func check(_ seqlens: [Int], argument: String) throws {
        guard !seqlens.isEmpty else {
            throw FMHAError.invalidArgument(argument, expected: "at least one sequence length", got: "[]")
        }
        if let bad = seqlens.firstIndex(where: { $0 < 0 }) {
            throw FMHAError.invalidArgument("\(argument)[\(bad)]", expected: "a length ≥ 0", got: "\(seqlens[bad])")
        }
    }

    /// Throws unless the query and key lists describe the same number of sequences.
    static func checkSameCount(queries: Int, keys: Int, keyArgument: String) throws {
        guard queries == keys else {
            throw FMHAError.invalidArgument(keyArgument, expected: "one entry per qSeqlen entry (\(queries))",
                                            got: "\(keys) entries")
        }
    }
}
