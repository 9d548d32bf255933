/// What an operator supports, as data (like xFormers' `AttentionOpBase` class attributes).
/// `AttentionOperator.notSupportedReasons` turns it into reasons a user can act on.
public struct OperatorCapabilities: Sendable {
    /// Kinds of device the operator runs on.
    public var devices: Set<DeviceKind>
    /// Input dtypes it accepts (query, key and value share one).
    public var dtypes: Set<DType>
    /// Largest query/key and value head dimension.
    public var maxHeadDimension: Int
    /// The exact bias types it supports (no bias is always supported), matched by type, never
    /// by protocol: a type not listed is refused.
    public var biasTypes: [any AttentionBias.Type]
    /// Dropout with p > 0.
    public var supportsDropout: Bool
    /// A scale other than `1/sqrt(K)`.
    public var supportsCustomScale: Bool
    /// Value head dimension different from the query's (K ≠ Kv).
    public var supportsDifferentValueHeadDimension: Bool
    /// Five-dimensional grouped-query inputs `[B, M, G, H, K]`.
    public var supportsBMGHK: Bool
    /// Partial attention (`memoryEfficientAttentionPartial`), whose LSE feeds `mergeAttentions`.
    public var supportsPartial: Bool
    /// An output dtype other than the query's.
    public var supportsOutputDType: Bool
    /// The same bits every run, whatever the thread count.
    public var isDeterministic: Bool
    /// The gradient of a tensor bias (backward operators).
    public var supportsBiasGradient: Bool
    /// The least CUDA compute capability, for CUDA operators.
    public var minimumComputeCapability: ComputeCapability?
    /// Quantized K/V caches (`KeyValueFormat`: int4, fp8) with a floating-point query.
    public var supportsQuantizedKeyValue: Bool

    /// Capabilities with everything optional switched off; set what the operator has.
    public init(devices: Set<DeviceKind>, dtypes: Set<DType>, maxHeadDimension: Int, biasTypes: [any AttentionBias.Type],
                supportsDropout: Bool = false, supportsCustomScale: Bool = false,
                supportsDifferentValueHeadDimension: Bool = false, supportsBMGHK: Bool = false,
                supportsPartial: Bool = false, supportsOutputDType: Bool = false, isDeterministic: Bool = false,
                supportsBiasGradient: Bool = false, minimumComputeCapability: ComputeCapability? = nil,
                supportsQuantizedKeyValue: Bool = false) {
        self.devices = devices
        self.dtypes = dtypes
        self.maxHeadDimension = maxHeadDimension
        self.biasTypes = biasTypes
        self.supportsDropout = supportsDropout
        self.supportsCustomScale = supportsCustomScale
        self.supportsDifferentValueHeadDimension = supportsDifferentValueHeadDimension
        self.supportsBMGHK = supportsBMGHK
        self.supportsPartial = supportsPartial
        self.supportsOutputDType = supportsOutputDType
        self.isDeterministic = isDeterministic
        self.supportsBiasGradient = supportsBiasGradient
        self.minimumComputeCapability = minimumComputeCapability
        self.supportsQuantizedKeyValue = supportsQuantizedKeyValue
    }

    /// True when `biasTypes` lists the exact type of `bias`.
    public func supportsBiasType(of bias: any AttentionBias) -> Bool {
        let identifier = ObjectIdentifier(type(of: bias))
        return biasTypes.contains { ObjectIdentifier($0) == identifier }
    }
}

/// The kind of a `Device`, without its ordinal.
public enum DeviceKind: String, Sendable, Hashable, CaseIterable {
    /// Host.
    case cpu
    /// NVIDIA GPU.
    case cuda
}

extension Device {
    /// The kind of device.
    public var kind: DeviceKind {
        switch self {
        case .cpu: .cpu
        case .cuda: .cuda
        }
    }
}

/// A CUDA compute capability such as 9.0.
public struct ComputeCapability: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Major version.
    public var major: Int
    /// Minor version.
    public var minor: Int

    /// `major.minor`.
    public init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }

    public static func < (lhs: ComputeCapability, rhs: ComputeCapability) -> Bool {
        (lhs.major, lhs.minor) < (rhs.major, rhs.minor)
    }

    public var description: String { "\(major).\(minor)" }
}
