import FMHACore

/// Standard normal test data: a `shape` tensor of `dtype` on `device` whose values are fixed by
/// `seed` (the same on every device, see `Tensor.randn`).
public func randn(_ shape: [Int], _ seed: UInt64, _ dtype: DType = .float32, device: Device = .cpu) throws -> Tensor {
    try Tensor.randn(shape, dtype: dtype, device: device, seed: seed)
}

/// Keys for the tests that hide NaN where no query looks: a float16 [1, rows, 1, width] tensor on
/// `device` of `randn` values (drawn in float32 from `seed`), every element of the rows where
/// `isPoisoned` holds NaN.
public func keysWithNaNRows(_ rows: Int, width: Int, seed: UInt64, device: Device, where isPoisoned: (Int) -> Bool) throws -> Tensor {
    var values = try Tensor.randn([1, rows, 1, width], dtype: .float32, seed: seed).toArray()
    for row in 0..<rows where isPoisoned(row) {
        for column in 0..<width { values[row * width + column] = .nan }
    }
    return try Tensor(shape: [1, rows, 1, width], scalars: values, dtype: .float16).to(device)
}
