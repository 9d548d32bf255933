import FMHACore

/// Standard normal test data: a `shape` tensor of `dtype` on `device` whose values are fixed by
/// `seed` (the same on every device, see `Tensor.randn`).
public func randn(_ shape: [Int], _ seed: UInt64, _ dtype: DType = .float32, device: Device = .cpu) throws -> Tensor {
    try Tensor.randn(shape, dtype: dtype, device: device, seed: seed)
}
