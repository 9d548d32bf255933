/// Gradients of inputs that were broadcast with stride 0 (every backward operator returns them so).
public enum BroadcastGradient {
    /// The dimensions along which `input` repeats one value (stride 0, size above 1).
    public static func broadcastDimensions(of input: Tensor) -> [Int] {
        input.shape.indices.filter { input.strides[$0] == 0 && input.shape[$0] > 1 }
    }

    /// A tensor of `input`'s shape and dtype from `values`, row-major over `shape` (`input`'s shape
    /// with some broadcast dimensions already summed to 1): summed along every other dimension
    /// where `input` has stride 0, and returned expanded the same way (stride 0).
    public static func tensor<Scalar: BinaryFloatingPoint>(_ values: [Scalar], shape: [Int], like input: Tensor,
                                                           device: Device = .cpu) throws -> Tensor {
        let broadcast = broadcastDimensions(of: input)
        var reducedShape = shape
        for dimension in broadcast { reducedShape[dimension] = 1 }
        guard reducedShape != shape else {
            return try Tensor(shape: shape, scalars: values, dtype: input.dtype, device: device).expanded(to: input.shape)
        }
        let reducedStrides = Tensor.contiguousStrides(for: reducedShape).enumerated().map {
            reducedShape[$0.offset] == 1 ? 0 : $0.element
        }
        var reduced = [Double](repeating: 0, count: reducedShape.reduce(1, *))
        var index = [Int](repeating: 0, count: shape.count)
        for value in values {
            var target = 0
            for dimension in shape.indices { target += index[dimension] * reducedStrides[dimension] }
            reduced[target] += Double(value)
            // Next row-major index.
            var dimension = shape.count - 1
            while dimension >= 0 {
                index[dimension] += 1
                if index[dimension] < shape[dimension] { break }
                index[dimension] = 0
                dimension -= 1
            }
        }
        return try Tensor(shape: reducedShape, scalars: reduced, dtype: input.dtype, device: device).expanded(to: input.shape)
    }
}
