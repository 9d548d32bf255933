import FMHACore

/// Gradients of inputs that were broadcast with stride 0.
enum BroadcastGradient {
    /// A tensor of `input`'s shape and dtype holding `values` (row-major over `input.shape`),
    /// summed along every dimension where `input` has stride 0 and returned expanded the same way.
    static func tensor(_ values: [Double], like input: Tensor) throws -> Tensor {
        let shape = input.shape
        let broadcast = shape.indices.filter { input.strides[$0] == 0 && shape[$0] > 1 }
        guard !broadcast.isEmpty else { return try Tensor(shape: shape, scalars: values, dtype: input.dtype) }
        var reducedShape = shape
        for dimension in broadcast { reducedShape[dimension] = 1 }
        let reducedStrides = Tensor.contiguousStrides(for: reducedShape).enumerated().map {
            reducedShape[$0.offset] == 1 ? 0 : $0.element
        }
        var reduced = [Double](repeating: 0, count: reducedShape.reduce(1, *))
        var index = [Int](repeating: 0, count: shape.count)
        for value in values {
            var target = 0
            for dimension in shape.indices { target += index[dimension] * reducedStrides[dimension] }
            reduced[target] += value
            // Next row-major index.
            var dimension = shape.count - 1
            while dimension >= 0 {
                index[dimension] += 1
                if index[dimension] < shape[dimension] { break }
                index[dimension] = 0
                dimension -= 1
            }
        }
        return try Tensor(shape: reducedShape, scalars: reduced, dtype: input.dtype).expanded(to: shape)
    }
}
