import ArgumentParser
import FMHA

extension DType: ExpressibleByArgument {
    /// A floating-point dtype by name (int32 is storage for quantized caches, not a compute dtype).
    public init?(argument: String) {
        guard let dtype = DType(rawValue: argument), dtype.isFloatingPoint else { return nil }
        self = dtype
    }

    public static var allValueStrings: [String] { floatingPointCases.map(\.rawValue) }
}

/// `--device cpu|cuda[:N]`.
struct DeviceArgument: ExpressibleByArgument {
    /// The device named.
    var device: Device

    static let cpu = DeviceArgument(device: .cpu)

    init(device: Device) {
        self.device = device
    }

    init?(argument: String) {
        if argument == "cpu" {
            device = .cpu
        } else if argument == "cuda" {
            device = .cuda(0)
        } else if argument.hasPrefix("cuda:"), let ordinal = Int(argument.dropFirst(5)), ordinal >= 0 {
            device = .cuda(ordinal)
        } else {
            return nil
        }
    }

    var defaultValueDescription: String { device.description }
}
