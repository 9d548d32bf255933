extension Tensor {
    /// The same elements with a new shape. One entry may be -1 and is then inferred. A view when
    /// `self` is contiguous, otherwise a contiguous copy first (like `torch.reshape`).
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        let inferred = newShape.indices.filter { newShape[$0] == -1 }
        guard inferred.count <= 1, newShape.allSatisfy({ $0 >= -1 }) else {
            throw FMHAError.invalidArgument("shape", expected: "sizes ≥ 0 with at most one -1", got: "\(newShape)")
        }
        var resolved = newShape
        if let position = inferred.first {
            let known = try Tensor.checkedCount(newShape.filter { $0 != -1 }, argument: "shape")
            guard known > 0, count % known == 0 else {
                throw FMHAError.invalidArgument("shape", expected: "a shape with \(count) elements (from \(shape))",
                                                got: "\(newShape)")
            }
            resolved[position] = count / known
        }
        guard try Tensor.checkedCount(resolved, argument: "shape") == count else {
            throw FMHAError.invalidArgument("shape", expected: "a shape with \(count) elements (from \(shape))",
                                            got: "\(newShape)")
        }
        let source = try contiguous()
        return Tensor(unchecked: source.storage, shape: resolved, strides: Tensor.contiguousStrides(for: resolved),
                      offset: source.offset, dtype: dtype)
    }

    /// A view broadcast to `newShape` without copying, with `torch.expand`'s rules: new leading
    /// dimensions and size-1 dimensions get stride 0; -1 keeps a dimension's size.
    public func expanded(to newShape: [Int]) throws -> Tensor {
        guard newShape.count >= rank else {
            throw FMHAError.invalidArgument("shape", expected: "at least \(rank) dimensions to expand \(shape)",
                                            got: "\(newShape)")
        }
        let lead = newShape.count - rank
        var resolvedShape = newShape, resolvedStrides = [Int](repeating: 0, count: newShape.count)
        for position in newShape.indices {
            let target = newShape[position]
            if position < lead {
                guard target >= 0 else {
                    throw FMHAError.invalidArgument("shape", expected: "a size ≥ 0 for new dimension \(position)",
                                                    got: "\(newShape)")
                }
                continue
            }
            let size = shape[position - lead], stride = strides[position - lead]
            if target == -1 || target == size {
                resolvedShape[position] = size
                resolvedStrides[position] = stride
            } else if size == 1, target >= 0 {
                resolvedStrides[position] = 0
            } else {
                throw FMHAError.invalidArgument("shape", expected: "sizes that \(shape) can expand to (equal, or from 1)",
                                                got: "\(newShape)")
            }
        }
        _ = try Tensor.checkedCount(resolvedShape, argument: "shape")
        return Tensor(unchecked: storage, shape: resolvedShape, strides: resolvedStrides, offset: offset, dtype: dtype)
    }

    /// A view with the dimensions reordered: dimension `i` of the result is `order[i]` of `self`.
    public func permuted(_ order: [Int]) throws -> Tensor {
        let resolved = try order.map { try normalizedDimension($0, argument: "order") }
        guard resolved.count == rank, Set(resolved).count == rank else {
            throw FMHAError.invalidArgument("order", expected: "a permutation of 0..<\(rank)", got: "\(order)")
        }
        return Tensor(unchecked: storage, shape: resolved.map { shape[$0] }, strides: resolved.map { strides[$0] },
                      offset: offset, dtype: dtype)
    }

    /// A view with dimensions `first` and `second` swapped (negative values count from the end).
    public func transposed(_ first: Int, _ second: Int) throws -> Tensor {
        var order = Array(0..<rank)
        order.swapAt(try normalizedDimension(first), try normalizedDimension(second))
        return try permuted(order)
    }

    /// A view of the elements whose index along `dimension` lies in `range`.
    public func slice(dimension: Int, range: Range<Int>) throws -> Tensor {
        let resolved = try normalizedDimension(dimension)
        guard range.lowerBound >= 0, range.upperBound <= shape[resolved] else {
            throw FMHAError.invalidArgument("range", expected: "a range inside 0..<\(shape[resolved]) (dimension \(resolved) of \(shape))",
                                            got: "\(range)")
        }
        var newShape = shape
        newShape[resolved] = range.count
        let start = range.isEmpty ? offset : offset + range.lowerBound * strides[resolved]
        return Tensor(unchecked: storage, shape: newShape, strides: strides, offset: start, dtype: dtype)
    }

    /// Joins tensors of one dtype and device along `dimension`; all other sizes must match.
    public static func concatenated(_ tensors: [Tensor], dimension: Int) throws -> Tensor {
        guard let first = tensors.first else {
            throw FMHAError.invalidArgument("tensors", expected: "at least one tensor", got: "an empty list")
        }
        let axis = try first.normalizedDimension(dimension)
        for (position, tensor) in tensors.enumerated() {
            guard tensor.dtype == first.dtype, tensor.device == first.device else {
                throw FMHAError.invalidArgument("tensors[\(position)]", expected: "\(first.dtype) on \(first.device)",
                                                got: "\(tensor.dtype) on \(tensor.device)")
            }
            var other = tensor.shape, reference = first.shape
            guard other.count == reference.count else {
                throw FMHAError.invalidArgument("tensors[\(position)]", expected: "rank \(first.rank)",
                                                got: "shape \(tensor.shape)")
            }
            other[axis] = 0
            reference[axis] = 0
            guard other == reference else {
                throw FMHAError.invalidArgument("tensors[\(position)]",
                                                expected: "the sizes of \(first.shape) outside dimension \(axis)",
                                                got: "shape \(tensor.shape)")
            }
        }
        var shape = first.shape
        shape[axis] = tensors.reduce(0) { $0 + $1.shape[axis] }
        let result = try Tensor(allocating: shape, dtype: first.dtype, device: .cpu)
        var start = 0
        for tensor in tensors {
            let size = tensor.shape[axis]
            try result.slice(dimension: axis, range: start..<start + size).assign(from: tensor)
            start += size
        }
        return try result.to(first.device)
    }

    /// Copies `source`'s elements (same shape) into this view, converting the dtype.
    func assign(from source: Tensor) throws {
        guard source.shape == shape else {
            throw FMHAError.invalidArgument("source", expected: "shape \(shape)", got: "\(source.shape)")
        }
        let values = try source.toDoubleArray()
        let base = try storage.hostAddress("assigning into a tensor"), dtype = self.dtype
        var next = 0
        forEachStorageIndex { index in
            dtype.store(values[next], base, index)
            next &+= 1
        }
    }
}

extension Tensor {
    /// A view with a new dimension of size 1 inserted at `dimension` (0...rank); never copies.
    public func unsqueezed(at dimension: Int) throws -> Tensor {
        guard dimension >= 0, dimension <= rank else {
            throw FMHAError.invalidArgument("dimension", expected: "a position in 0...\(rank) for shape \(shape)",
                                            got: "\(dimension)")
        }
        var newShape = shape, newStrides = strides
        newShape.insert(1, at: dimension)
        newStrides.insert(0, at: dimension)
        return Tensor(unchecked: storage, shape: newShape, strides: newStrides, offset: offset, dtype: dtype)
    }

    /// Calls `body` with the address of the view's first element in host memory. The address is
    /// valid only inside `body`; elements are at `offset + Σ index·stride` elements from the
    /// storage start, i.e. `Σ index·stride` elements from this address, and writing through it
    /// changes every view of the same storage.
    public func withUnsafeHostAddress<Result>(_ body: (UnsafeMutableRawPointer) throws -> Result) throws -> Result {
        let base = try storage.hostAddress("host access")
        return try withExtendedLifetime(storage) {
            try body(base + offset * dtype.byteSize)
        }
    }
}
