import CFMHAKernels
import FMHACore

/// Which build of the C kernels a tiled CPU operator runs.
public enum CPUKernels: String, Sendable, Hashable, CaseIterable {
    /// AVX2 + FMA + F16C when this CPU has them, the baseline build otherwise.
    case best
    /// The AVX2 + FMA + F16C build (x86-64 only).
    case avx2
    /// The baseline build: correct on every CPU, without wide vectors or FMA on x86-64.
    case generic

    /// Whether this CPU runs the AVX2 kernels.
    public static let cpuHasAVX2: Bool = fmha_cpu_has_avx2_fma() != 0

    /// The build `.best` stands for on this CPU.
    var resolved: CPUKernels {
        self == .best ? (Self.cpuHasAVX2 ? .avx2 : .generic) : self
    }

    /// Why these kernels cannot run here.
    var unavailableReasons: [String] {
        self == .avx2 && !Self.cpuHasAVX2 ? ["this CPU lacks AVX2, FMA or F16C"] : []
    }

    typealias ForwardTile = @convention(c) (UnsafePointer<fmha_forward_tile>?) -> Void

    typealias BackwardQuery = @convention(c) (UnsafePointer<fmha_backward_common>?, UnsafePointer<fmha_backward_query_tile>?,
                                              Int64, Int64) -> Void
    typealias BackwardKeys = @convention(c) (UnsafePointer<fmha_backward_common>?, UnsafePointer<fmha_backward_query_tile>?,
                                             Int32, Int64, Int64, UnsafeMutablePointer<Float>?, Int64,
                                             UnsafeMutablePointer<Float>?, Int64) -> Void

    /// The backward dQ kernel of this build.
    var backwardQuery: BackwardQuery {
        resolved == .avx2 ? fmha_backward_dq_avx2 : fmha_backward_dq_generic
    }

    /// The backward dK/dV kernel of this build.
    var backwardKeys: BackwardKeys {
        resolved == .avx2 ? fmha_backward_dkdv_avx2 : fmha_backward_dkdv_generic
    }

    /// The forward tile kernel of this build.
    var forwardTile: ForwardTile {
        resolved == .avx2 ? fmha_forward_tile_avx2 : fmha_forward_tile_generic
    }
}

/// What the tiled CPU operators support.
enum CPUTiledCapabilities {
    static let forward = OperatorCapabilities(
        devices: [.cpu], dtypes: [.float32, .float16, .bfloat16], maxHeadDimension: 4096,
        biasTypes: attentionBiasTypes, supportsDropout: true, supportsCustomScale: true,
        supportsDifferentValueHeadDimension: true, supportsBMGHK: true, supportsPartial: true,
        supportsOutputDType: true, isDeterministic: true)
    static let backward = OperatorCapabilities(
        devices: [.cpu], dtypes: [.float32, .float16, .bfloat16], maxHeadDimension: 4096,
        biasTypes: attentionBiasTypes, supportsDropout: true, supportsCustomScale: true,
        supportsDifferentValueHeadDimension: true, supportsBMGHK: true, isDeterministic: true,
        supportsBiasGradient: true)
}

extension DType {
    /// The kernels' code for this dtype (float64 has none: the tiled operators refuse it).
    var kernelCode: Int32 {
        switch self {
        case .float16: Int32(FMHA_DTYPE_F16)
        case .bfloat16: Int32(FMHA_DTYPE_BF16)
        case .float32, .float64: Int32(FMHA_DTYPE_F32)
        }
    }
}
