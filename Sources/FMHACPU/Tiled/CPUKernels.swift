import CFMHAKernels
import FMHACore

/// Which build of the C kernels a tiled CPU operator runs.
public enum CPUKernels: String, Sendable, Hashable, CaseIterable {
    /// The widest build this CPU runs: AVX-512, else AVX2 + FMA + F16C, else the baseline.
    case best
    /// The AVX-512 (F, VL, BW, DQ) build: 16-lane vectors, 32 registers (x86-64 only).
    case avx512
    /// The AVX2 + FMA + F16C build (x86-64 only).
    case avx2
    /// The baseline build: correct on every CPU, without wide vectors or FMA on x86-64.
    case generic

    /// Whether this CPU runs the AVX2 kernels.
    public static let cpuHasAVX2: Bool = fmha_cpu_has_avx2_fma() != 0
    /// Whether this CPU runs the AVX-512 kernels.
    public static let cpuHasAVX512: Bool = fmha_cpu_has_avx512() != 0
    /// Whether this CPU also has AVX-512 BF16 dot products (used for bfloat16 inputs).
    public static let cpuHasAVX512BF16: Bool = fmha_cpu_has_avx512_bf16() != 0

    /// The builds this CPU runs, widest first.
    public static var available: [CPUKernels] {
        (cpuHasAVX512 ? [.avx512] : []) + (cpuHasAVX2 ? [.avx2] : []) + [.generic]
    }

    /// The name of the tiled operators running this build: `cpu-tiled` for `.best`, else
    /// `cpu-tiled-<build>`.
    var operatorName: String { self == .best ? "cpu-tiled" : "cpu-tiled-\(rawValue)" }

    /// The build `.best` stands for on this CPU.
    var resolved: CPUKernels {
        self == .best ? Self.available[0] : self
    }

    /// Why these kernels cannot run here.
    var unavailableReasons: [String] {
        switch self {
        case .avx512 where !Self.cpuHasAVX512: ["this CPU lacks AVX-512 (F, VL, BW, DQ)"]
        case .avx2 where !Self.cpuHasAVX2: ["this CPU lacks AVX2, FMA or F16C"]
        default: []
        }
    }

    typealias ForwardTile = @convention(c) (UnsafePointer<fmha_forward_tile>?) -> Void

    typealias BackwardQuery = @convention(c) (UnsafePointer<fmha_backward_common>?, UnsafePointer<fmha_backward_query_tile>?,
                                              Int64, Int64) -> Void
    typealias BackwardKeys = @convention(c) (UnsafePointer<fmha_backward_common>?, UnsafePointer<fmha_backward_query_tile>?,
                                             Int32, Int64, Int64, UnsafeMutablePointer<Float>?, Int64,
                                             UnsafeMutablePointer<Float>?, Int64) -> Void

    /// The one of three functions that belongs to this build.
    private func pick<Function>(_ avx512: Function, _ avx2: Function, _ generic: Function) -> Function {
        switch resolved {
        case .avx512: avx512
        case .avx2: avx2
        default: generic
        }
    }

    /// Whether the BF16 dot-product kernels take these inputs: bfloat16, even head dimensions, on
    /// the AVX-512 build of a CPU that has them.
    private func usesBF16Products(dtype: DType, dimensions: Int...) -> Bool {
        resolved == .avx512 && dtype == .bfloat16 && Self.cpuHasAVX512BF16 && dimensions.allSatisfy { $0 % 2 == 0 }
    }

    /// The backward dQ kernel of this build for these inputs (their score-like products need no
    /// rounding, so bfloat16 inputs always take the dot products when they can).
    func backwardQuery(dtype: DType, headDimension: Int, valueHeadDimension: Int) -> BackwardQuery {
        if usesBF16Products(dtype: dtype, dimensions: headDimension, valueHeadDimension) { return fmha_backward_dq_avx512bf16 }
        return pick(fmha_backward_dq_avx512, fmha_backward_dq_avx2, fmha_backward_dq_generic)
    }

    /// The backward dK/dV kernel of this build for these inputs.
    func backwardKeys(dtype: DType, headDimension: Int, valueHeadDimension: Int) -> BackwardKeys {
        if usesBF16Products(dtype: dtype, dimensions: headDimension, valueHeadDimension) {
            return fmha_backward_dkdv_avx512bf16
        }
        return pick(fmha_backward_dkdv_avx512, fmha_backward_dkdv_avx2, fmha_backward_dkdv_generic)
    }

    typealias RowDots = @convention(c) (UnsafeRawPointer?, Int64, Int32, UnsafeRawPointer?, Int64, Int32, Int32, Int32,
                                        UnsafeMutablePointer<Float>?) -> Void
    typealias StoreFloats = @convention(c) (UnsafePointer<Float>?, UnsafeMutableRawPointer?, Int64, Int32) -> Void

    /// D = rowsum(dO∘O) of this build.
    var rowDots: RowDots {
        pick(fmha_row_dots_avx512, fmha_row_dots_avx2, fmha_row_dots_generic)
    }

    /// Float32 values rounded into an array of another dtype, of this build.
    var storeFloats: StoreFloats {
        pick(fmha_store_floats_avx512, fmha_store_floats_avx2, fmha_store_floats_generic)
    }

    /// The forward tile kernel of this build: the AVX-512 build takes bfloat16 inputs with an even
    /// head dimension and a 16-bit output through BF16 dot products where the CPU has them (they
    /// round the probabilities to bfloat16 before P·V, too coarse for a float32 output).
    func forwardTile(dtype: DType, outputDType: DType, headDimension: Int) -> ForwardTile {
        if outputDType != .float32, usesBF16Products(dtype: dtype, dimensions: headDimension) {
            return fmha_forward_tile_avx512bf16
        }
        return pick(fmha_forward_tile_avx512, fmha_forward_tile_avx2, fmha_forward_tile_generic)
    }
}

/// What the tiled CPU operators support.
enum CPUTiledCapabilities {
    static let forward = OperatorCapabilities(
        devices: [.cpu], dtypes: [.float32, .float16, .bfloat16], maxHeadDimension: 4096,
        biasTypes: attentionBiasTypes, supportsDropout: true, supportsCustomScale: true,
        supportsDifferentValueHeadDimension: true, supportsBMGHK: true, supportsPartial: true,
        supportsOutputDType: true, isDeterministic: true, supportsQuantizedKeyValue: true)
    static let backward = OperatorCapabilities(
        devices: [.cpu], dtypes: [.float32, .float16, .bfloat16], maxHeadDimension: 4096,
        biasTypes: attentionBiasTypes, supportsDropout: true, supportsCustomScale: true,
        supportsDifferentValueHeadDimension: true, supportsBMGHK: true, isDeterministic: true,
        supportsBiasGradient: true)
}

extension DType {
    /// The kernels' code for this dtype (float64 and int32 have none: the tiled operators refuse them).
    var kernelCode: Int32 {
        switch self {
        case .float16: Int32(FMHA_DTYPE_F16)
        case .bfloat16: Int32(FMHA_DTYPE_BF16)
        case .float32, .float64, .int32: Int32(FMHA_DTYPE_F32)
        }
    }
}
