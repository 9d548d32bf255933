/// How close an operator's result must be to the float64 oracle: `|x − ref| ≤ atol + rtol·|ref|`.
/// Values are xFormers' test tolerances (`xformers-fmha.md` §6.3) for the result's dtype.
public struct Tolerance: Sendable, Hashable {
    /// Absolute part.
    public var absolute: Double
    /// Relative part.
    public var relative: Double

    /// A tolerance.
    public init(absolute: Double, relative: Double) {
        self.absolute = absolute
        self.relative = relative
    }

    /// Forward outputs in `dtype`.
    public static func forward(_ dtype: DType) -> Tolerance {
        switch dtype {
        case .float64, .int32: Tolerance(absolute: 1e-10, relative: 1e-10)
        case .float32: Tolerance(absolute: 3e-4, relative: 2e-5)
        case .float16: Tolerance(absolute: 4e-3, relative: 4e-4)
        case .bfloat16: Tolerance(absolute: 2e-2, relative: 5e-3)
        }
    }

    /// Gradients in `dtype` (calibrated for scale ≤ (1/32)^0.5, as upstream).
    public static func backward(_ dtype: DType) -> Tolerance {
        switch dtype {
        case .float64, .int32: Tolerance(absolute: 1e-9, relative: 1e-9)
        case .float32: Tolerance(absolute: 9e-4, relative: 1e-4)
        case .float16: Tolerance(absolute: 0.2, relative: 2e-2)
        case .bfloat16: Tolerance(absolute: 0.9, relative: 0.1)
        }
    }

    /// Whether `value` is close enough to `reference` (NaN never is, unless both are NaN; equal
    /// infinities are).
    public func accepts(_ value: Double, reference: Double) -> Bool {
        if value == reference { return true }
        return abs(value - reference) <= absolute + relative * abs(reference)
    }

    /// The largest error of `values` against `references` as a multiple of the allowed error:
    /// ≤ 1 passes; infinity when a value is NaN (or infinite) and its reference is not (NaN
    /// against NaN passes).
    public func worstRatio(_ values: [Double], _ references: [Double]) -> Double {
        var worst = 0.0
        for (value, reference) in zip(values, references) where value != reference && !(value.isNaN && reference.isNaN) {
            let error = abs(value - reference)
            worst = max(worst, error.isNaN ? .infinity : error / (absolute + relative * abs(reference)))
        }
        return worst
    }
}
