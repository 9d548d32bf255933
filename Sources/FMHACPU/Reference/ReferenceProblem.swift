#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import FMHACore

/// One attention call widened to float64 and seen as BMGHK, with the row-by-row softmax both
/// reference operators share. Written for clarity, not speed: it is the oracle.
struct ReferenceProblem {
    /// Sizes of the call.
    let dimensions: AttentionDimensions
    /// `[B, Mq, G, H, K]`, row-major.
    let query: [Double]
    /// `[B, Mkv, G, H, K]`, row-major (stride-0 K/V read as their repeated values).
    let key: [Double]
    /// `[B, Mkv, G, H, Kv]`, row-major.
    let value: [Double]
    /// The tensor bias as `[B, G, H, Mq, Mkv]`, row-major.
    let bias: [Double]?
    /// The mask part of the bias, lowered.
    let lowering: MaskLowering
    /// Factor on `q·k`.
    let scale: Double
    /// Dropout to apply to the probabilities.
    let dropout: DropoutMask?

    /// Widens `problem`.
    init(_ problem: AttentionProblem) throws {
        dimensions = problem.dimensions
        query = try problem.query.toDoubleArray()
        key = try problem.key.toDoubleArray()
        value = try problem.value.toDoubleArray()
        bias = try problem.tensorBias?.toDoubleArray()
        lowering = problem.lowering
        scale = problem.scale
        dropout = problem.dropoutMask
    }

    /// Index of the first element of one query row in `query` (use `* K`-strided layout).
    func queryOffset(batch: Int, query: Int, group: Int, head: Int) -> Int {
        let d = dimensions
        return (((batch * d.queryLength + query) * d.groups + group) * d.heads + head) * d.headDimension
    }

    /// Index of the first element of one key row in `key`.
    func keyOffset(batch: Int, key: Int, group: Int, head: Int) -> Int {
        let d = dimensions
        return (((batch * d.keyLength + key) * d.groups + group) * d.heads + head) * d.headDimension
    }

    /// Index of the first element of one value row in `value` (and of an output row, with
    /// `query` for `key`).
    func valueOffset(batch: Int, row: Int, rows: Int, group: Int, head: Int) -> Int {
        let d = dimensions
        return (((batch * rows + row) * d.groups + group) * d.heads + head) * d.valueHeadDimension
    }

    /// Index of one element of `bias`.
    func biasIndex(batch: Int, group: Int, head: Int, query: Int, key: Int) -> Int {
        let d = dimensions
        return (((batch * d.groups + group) * d.heads + head) * d.queryLength + query) * d.keyLength + key
    }

    /// Linear head index `(b·G + g)·H + h`, as the dropout counter uses it.
    func headIndex(batch: Int, group: Int, head: Int) -> Int {
        (batch * dimensions.groups + group) * dimensions.heads + head
    }

    /// The softmax of one query row over the keys it sees.
    struct Row {
        /// K/V rows with a finite score.
        var keys: [Int] = []
        /// Softmax probability of each of `keys` (before dropout).
        var probabilities: [Double] = []
        /// Log-sum-exp of the scores; −inf when the query sees no key.
        var lse = -Double.infinity
    }

    /// The softmax of query `query` of head `(batch, group, head)`.
    func row(batch: Int, group: Int, head: Int, query: Int) -> Row {
        var visible = [Int]()
        lowering.forEachVisibleKey(query: query) { visible.append($0) }
        let queryBase = queryOffset(batch: batch, query: query, group: group, head: head)
        var row = Row(), scores = [Double]()
        for keyRow in visible {
            let keyBase = keyOffset(batch: batch, key: keyRow, group: group, head: head)
            var dot = 0.0
            for channel in 0..<dimensions.headDimension { dot += self.query[queryBase + channel] * key[keyBase + channel] }
            var score = scale * dot
            if let bias { score += bias[biasIndex(batch: batch, group: group, head: head, query: query, key: keyRow)] }
            // A −inf score (from a tensor bias) hides the key like the mask does.
            if score == -.infinity { continue }
            row.keys.append(keyRow)
            scores.append(score)
        }
        // A NaN score (from NaN in the query, a key or the bias) makes the row NaN, and so does a
        // +inf one (exp(inf - inf)), as in PyTorch; `max()` alone would skip NaN.
        guard !scores.isEmpty, let largest = scores.max() else { return Row() }
        let maximum = scores.contains(where: \.isNaN) ? Double.nan : largest
        let exponentials = scores.map { exp($0 - maximum) }
        let sum = exponentials.reduce(0, +)
        row.probabilities = exponentials.map { $0 / sum }
        row.lse = maximum + log(sum)
        return row
    }

    /// The dropout factor of the weight of `query` on K/V row `keyRow`: 0, `1/(1 − p)`, or 1
    /// without dropout.
    func dropoutFactor(headIndex: Int, query: Int, keyRow: Int) -> Double {
        guard let dropout else { return 1 }
        return dropout.isKept(head: headIndex, query: query, key: keyRow) ? dropout.keptScale : 0
    }

    /// Calls `body` for every (batch, group, head, query) in row-major order.
    func forEachRow(_ body: (_ batch: Int, _ group: Int, _ head: Int, _ query: Int) throws -> Void) rethrows {
        let d = dimensions
        for batch in 0..<d.batch {
            for group in 0..<d.groups {
                for head in 0..<d.heads {
                    for query in 0..<d.queryLength { try body(batch, group, head, query) }
                }
            }
        }
    }
}
