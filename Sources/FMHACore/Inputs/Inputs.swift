/// Everything one attention call is given, as xFormers' `Inputs`: query, key, value, an
/// optional bias, dropout, scale and output dtype. `validate()` turns it into the
/// `AttentionProblem` that operators run.
///
/// Layouts (no broadcasting; expand K/V with stride 0 for grouped-query attention):
///
/// | layout | query | key | value | output |
/// |---|---|---|---|---|
/// | BMK | `[B, Mq, K]` | `[B, Mkv, K]` | `[B, Mkv, Kv]` | `[B, Mq, Kv]` |
/// | BMHK | `[B, Mq, H, K]` | `[B, Mkv, H, K]` | `[B, Mkv, H, Kv]` | `[B, Mq, H, Kv]` |
/// | BMGHK | `[B, Mq, G, H, K]` | `[B, Mkv, G, H, K]` | `[B, Mkv, G, H, Kv]` | `[B, Mq, G, H, Kv]` |
///
/// Quantized K/V caches (`KeyValueFormat`, as xFormers' split-K decoder takes them) are int32
/// key and value tensors whose last dimension holds a row's packed words, Kv = K: int4 when no
/// scale/shift tensors are given (its group count read from the last dimension, groups + K/8),
/// fp8 with `keyScaleShift` and `valueScaleShift`.
public struct Inputs: Sendable {
    /// Queries.
    public var query: Tensor
    /// Keys.
    public var key: Tensor
    /// Values.
    public var value: Tensor
    /// Additive bias on the scores: a mask, a `Tensor`, or both; `nil` for none.
    public var bias: (any AttentionBias)?
    /// The dropout to apply (probability, seed and offset); `nil` for none. The probability
    /// lives here only: `p` reads and writes it.
    public var dropout: DropoutState?
    /// Factor on `Q·Kᵀ`; `nil` means `1/sqrt(K)`.
    public var scale: Double?
    /// Dtype of the output; `nil` means the query's (float32 in partial mode).
    public var outputDType: DType?
    /// Partial attention over one chunk of keys, for `mergeAttentions`: the output defaults to
    /// float32 (float64 for float64 inputs) and only operators that support it qualify.
    public var isPartial: Bool
    /// Only operators that give the same bits every run qualify.
    public var requiresDeterminism: Bool
    /// For an fp8 key cache: each key row's float16 scale and shift packed in one int32 word, shaped
    /// like `key` without its last dimension; `nil` otherwise.
    public var keyScaleShift: Tensor?
    /// For an fp8 value cache: as `keyScaleShift`, for `value`.
    public var valueScaleShift: Tensor?

    /// Gathers the inputs of one call; `validate()` checks them. Dropout with probability `p`
    /// draws from `seed` (a random one when `nil`). `keyScaleShift` and `valueScaleShift` go with
    /// fp8 K/V caches.
    public init(query: Tensor, key: Tensor, value: Tensor, bias: (any AttentionBias)? = nil, p: Double = 0,
                seed: UInt64? = nil, scale: Double? = nil, outputDType: DType? = nil, isPartial: Bool = false,
                requiresDeterminism: Bool = false, keyScaleShift: Tensor? = nil, valueScaleShift: Tensor? = nil) {
        self.init(query: query, key: key, value: value, bias: bias, dropout: Self.dropout(p: p, seed: seed), scale: scale,
                  outputDType: outputDType, isPartial: isPartial, requiresDeterminism: requiresDeterminism)
        self.keyScaleShift = keyScaleShift
        self.valueScaleShift = valueScaleShift
    }

    /// Gathers the inputs of one call with the dropout state to replay (a backward pass's).
    public init(query: Tensor, key: Tensor, value: Tensor, bias: (any AttentionBias)? = nil, dropout: DropoutState?,
                scale: Double? = nil, outputDType: DType? = nil, isPartial: Bool = false,
                requiresDeterminism: Bool = false) {
        self.query = query
        self.key = key
        self.value = value
        self.bias = bias
        self.dropout = dropout
        self.scale = scale
        self.outputDType = outputDType
        self.isPartial = isPartial
        self.requiresDeterminism = requiresDeterminism
    }

    /// Dropout probability on the attention weights, in `[0, 1)` (0: no dropout). Setting it keeps
    /// the seed and offset of the current dropout, or draws a random seed.
    public var p: Double {
        get { dropout?.p ?? 0 }
        set { dropout = Self.dropout(p: newValue, seed: dropout?.seed, offset: dropout?.offset ?? 0) }
    }

    /// The state of dropout with probability `p` (none for exactly 0; any other value is kept for
    /// `validate()` to check).
    private static func dropout(p: Double, seed: UInt64?, offset: UInt32 = 0) -> DropoutState? {
        p == 0 ? nil : DropoutState(p: p, seed: seed ?? UInt64.random(in: .min ... .max), offset: offset)
    }
}

/// The tensor layout of an attention call, from the query's rank.
public enum AttentionLayout: String, Sendable, Hashable {
    /// `[B, M, K]`: one head.
    case bmk = "BMK"
    /// `[B, M, H, K]`.
    case bmhk = "BMHK"
    /// `[B, M, G, H, K]`: grouped-query attention.
    case bmghk = "BMGHK"

    /// A BMGHK shape back in this layout's rank (dropping the G/H dimensions BMHK and BMK lack).
    public func shape(fromBMGHK shape: [Int]) -> [Int] {
        switch self {
        case .bmk: [shape[0], shape[1], shape[4]]
        case .bmhk: [shape[0], shape[1], shape[3], shape[4]]
        case .bmghk: shape
        }
    }
}

/// The sizes of a validated attention call, as `Inputs.validate()` returns them.
public struct AttentionDimensions: Sendable, Hashable {
    /// Layout of query, key, value and output.
    public var layout: AttentionLayout
    /// Batch size B.
    public var batch: Int
    /// Queries per batch element, Mq.
    public var queryLength: Int
    /// Keys per batch element, Mkv.
    public var keyLength: Int
    /// Head groups G (1 unless BMGHK).
    public var groups: Int
    /// Heads per group H (1 for BMK).
    public var heads: Int
    /// Query/key head dimension K.
    public var headDimension: Int
    /// Value head dimension Kv.
    public var valueHeadDimension: Int

    /// Shape of the output, in the inputs' layout.
    public var outputShape: [Int] { [batch, queryLength] + headDims + [valueHeadDimension] }
    /// Shape of a dense tensor bias: `[B, Mq, Mkv]`, `[B, H, Mq, Mkv]` or `[B, G, H, Mq, Mkv]`.
    public var biasShape: [Int] { [batch] + headDims + [queryLength, keyLength] }

    /// Shape of the LSE: `[B, G, H, Mq]` for BMGHK, `[B, H, Mq]` for BMHK, `[B, 1, Mq]` for BMK.
    public var lseShape: [Int] { [batch] + (layout == .bmk ? [1] : headDims) + [queryLength] }
    /// Query/key shape seen as BMGHK: `[B, Mq, G, H, K]` (G = 1 and H = 1 fill in for BMHK and BMK).
    public var queryShape5D: [Int] { [batch, queryLength, groups, heads, headDimension] }
    /// Key shape seen as BMGHK.
    public var keyShape5D: [Int] { [batch, keyLength, groups, heads, headDimension] }
    /// Value shape seen as BMGHK.
    public var valueShape5D: [Int] { [batch, keyLength, groups, heads, valueHeadDimension] }
    /// Output shape seen as BMGHK.
    public var outputShape5D: [Int] { [batch, queryLength, groups, heads, valueHeadDimension] }
    /// Tensor-bias shape seen as BMGHK: `[B, G, H, Mq, Mkv]`.
    public var biasShape5D: [Int] { [batch, groups, heads, queryLength, keyLength] }

    /// `[H]`, `[G, H]`, or nothing for BMK.
    var headDims: [Int] {
        switch layout {
        case .bmk: []
        case .bmhk: [heads]
        case .bmghk: [groups, heads]
        }
    }
}

extension Inputs {
    /// A `[B, M, ..., K]` tensor of rank 3, 4 or 5 (query, key, value, output or its gradient) as a
    /// BMGHK view, without copying.
    public static func bmghkView(_ tensor: Tensor) throws -> Tensor {
        switch tensor.rank {
        case 3: try tensor.unsqueezed(at: 2).unsqueezed(at: 2)
        case 4: try tensor.unsqueezed(at: 2)
        default: tensor
        }
    }

    /// A tensor bias of rank 3, 4 or 5 as a `[B, G, H, Mq, Mkv]` view, without copying.
    static func bmghkBiasView(_ tensor: Tensor) throws -> Tensor {
        switch tensor.rank {
        case 3: try tensor.unsqueezed(at: 1).unsqueezed(at: 1)
        case 4: try tensor.unsqueezed(at: 1)
        default: tensor
        }
    }
}
