extension DType {
    /// Reads element `index` (in elements) of an array of this dtype at `base`, exactly widened.
    @inline(__always)
    func load(_ base: UnsafeRawPointer, _ index: Int) -> Double {
        switch self {
        case .float32: Double(base.load(fromByteOffset: index &* 4, as: Float.self))
        case .float16: Double(base.load(fromByteOffset: index &* 2, as: Float16.self))
        case .bfloat16: Double(BFloat16(bitPattern: base.load(fromByteOffset: index &* 2, as: UInt16.self)).floatValue)
        case .float64: base.load(fromByteOffset: index &* 8, as: Double.self)
        case .int32: Double(base.load(fromByteOffset: index &* 4, as: Int32.self))
        }
    }

    /// Writes `value`, rounded to nearest (ties to even) in this dtype, as element `index` at `base`
    /// (int32: rounded to nearest, clamped to its range, NaN as 0).
    @inline(__always)
    func store(_ value: Double, _ base: UnsafeMutableRawPointer, _ index: Int) {
        switch self {
        case .float32: base.storeBytes(of: Float(value), toByteOffset: index &* 4, as: Float.self)
        case .float16: base.storeBytes(of: Float16(value), toByteOffset: index &* 2, as: Float16.self)
        case .bfloat16:
            base.storeBytes(of: BFloat16(value).bitPattern, toByteOffset: index &* 2, as: UInt16.self)
        case .float64: base.storeBytes(of: value, toByteOffset: index &* 8, as: Double.self)
        case .int32:
            let integer = value.isNaN ? 0 : Int32(max(-2_147_483_648, min(2_147_483_647, value.rounded(.toNearestOrEven))))
            base.storeBytes(of: integer, toByteOffset: index &* 4, as: Int32.self)
        }
    }
}

extension Tensor {
    /// Calls `body` with the storage index of every logical element, in row-major order.
    func forEachStorageIndex(_ body: (Int) -> Void) {
        let count = self.count
        guard count > 0 else { return }
        guard rank > 0 else { return body(offset) }
        var index = [Int](repeating: 0, count: rank)
        var position = offset
        let last = rank - 1
        let innerSize = shape[last], innerStride = strides[last]
        var remaining = count
        while remaining > 0 {
            var inner = position
            for _ in 0..<innerSize {
                body(inner)
                inner &+= innerStride
            }
            remaining -= innerSize
            // Advance the odometer over the outer dimensions.
            var dimension = last - 1
            while dimension >= 0 {
                index[dimension] += 1
                position &+= strides[dimension]
                if index[dimension] < shape[dimension] { break }
                position &-= strides[dimension] &* shape[dimension]
                index[dimension] = 0
                dimension -= 1
            }
        }
    }

    /// The elements in logical row-major order, widened exactly to `Double`.
    public func toDoubleArray() throws -> [Double] {
        guard device == .cpu else { return try to(.cpu).toDoubleArray() }
        let base = UnsafeRawPointer(try storage.hostAddress("toDoubleArray")), dtype = self.dtype
        // A broadcast view can have far more elements than its storage holds bytes.
        try HostMemory.checkFits(shape: shape, elementSize: MemoryLayout<Double>.size, argument: "tensor",
                                 what: "a Double array of shape")
        var result = [Double]()
        result.reserveCapacity(count)
        forEachStorageIndex { result.append(dtype.load(base, $0)) }
        return result
    }

    /// The elements in logical row-major order as `Float` (float64 values are rounded).
    public func toArray() throws -> [Float] {
        try toDoubleArray().map { Float($0) }
    }

    /// Builds a contiguous int32 tensor of `shape` from row-major `words` (a quantized cache's).
    public init(shape: [Int], words: [Int32], device: Device = .cpu) throws {
        let expected = try Tensor.checkedCount(shape, argument: "shape")
        guard expected == words.count else {
            throw FMHAError.invalidArgument("words", expected: "\(expected) values for shape \(shape)", got: "\(words.count)")
        }
        let host = try Tensor(allocating: shape, dtype: .int32, device: .cpu)
        let base = try host.storage.hostAddress("init(shape:words:)")
        words.withUnsafeBytes { bytes in
            if let source = bytes.baseAddress { base.copyMemory(from: source, byteCount: bytes.count) }
        }
        self = try host.to(device)
    }

    /// Builds a contiguous tensor of `shape` from row-major `scalars` (`Float`, `Double`,
    /// `Float16`…), each rounded once to `dtype` (ties to even).
    public init<Scalar: BinaryFloatingPoint>(shape: [Int], scalars: [Scalar], dtype: DType = .float32,
                                             device: Device = .cpu) throws {
        let expected = try Tensor.checkedCount(shape, argument: "shape")
        guard expected == scalars.count else {
            throw FMHAError.invalidArgument("scalars", expected: "\(expected) values for shape \(shape)",
                                            got: "\(scalars.count)")
        }
        let host = try Tensor(allocating: shape, dtype: dtype, device: .cpu)
        // Typed loops for the common element types: the generic one pays for unspecialized
        // generics per element when called from another module.
        let base = try host.storage.hostAddress("init(shape:scalars:)")
        switch scalars {
        case let floats as [Float]:
            if dtype == .float32 {
                floats.withUnsafeBytes { bytes in
                    if let source = bytes.baseAddress { base.copyMemory(from: source, byteCount: bytes.count) }
                }
            } else {
                for index in floats.indices { dtype.store(Double(floats[index]), base, index) }
            }
        case let doubles as [Double]:
            for index in doubles.indices { dtype.store(doubles[index], base, index) }
        default:
            for index in scalars.indices { dtype.store(Double(scalars[index]), base, index) }
        }
        self = try host.to(device)
    }

    /// A contiguous tensor of zeros.
    public static func zeros(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) throws -> Tensor {
        try Tensor(allocating: shape, dtype: dtype, device: device)
    }

    /// A contiguous tensor for a kernel to overwrite in full: zeros on the host; on a device, whatever
    /// the allocator's memory held (no fill, which would cost a pass over it on the GPU).
    public static func uninitialized(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu) throws -> Tensor {
        try Tensor(allocating: shape, dtype: dtype, device: device, zeroed: false)
    }

    /// A contiguous tensor with every element set to `value` (rounded to `dtype`), e.g. NaN to
    /// poison an output before a kernel writes it.
    public static func full(_ shape: [Int], value: Double, dtype: DType = .float32, device: Device = .cpu) throws -> Tensor {
        let tensor = try Tensor(allocating: shape, dtype: dtype, device: .cpu)
        let base = try tensor.storage.hostAddress("full")
        for index in 0..<tensor.count { dtype.store(value, base, index) }
        return try tensor.to(device)
    }

    /// Standard normal samples, rounded to `dtype`. Element `n` (row-major) is a pure function of
    /// `(seed, n)`, so the same seed gives the same values for any shape prefix and on any device
    /// (they are drawn on the host and copied).
    public static func randn(_ shape: [Int], dtype: DType = .float32, device: Device = .cpu, seed: UInt64 = 0) throws -> Tensor {
        let tensor = try Tensor(allocating: shape, dtype: dtype, device: .cpu)
        let base = try tensor.storage.hostAddress("randn")
        for index in 0..<tensor.count { dtype.store(StandardNormal.sample(seed: seed, index: index), base, index) }
        return try tensor.to(device)
    }

    /// Copies the elements into a new contiguous tensor of `dtype` on the same device (device
    /// tensors go through host memory for now).
    func copied(as dtype: DType) throws -> Tensor {
        guard device == .cpu else { return try to(.cpu).copied(as: dtype).to(device) }
        let result = try Tensor(allocating: shape, dtype: dtype, device: device)
        let source = UnsafeRawPointer(try storage.hostAddress("copying a tensor"))
        let target = try result.storage.hostAddress("copying a tensor")
        let sourceType = self.dtype
        var next = 0
        forEachStorageIndex { index in
            dtype.store(sourceType.load(source, index), target, next)
            next &+= 1
        }
        return result
    }

    /// This tensor if it is already contiguous, otherwise a contiguous copy.
    public func contiguous() throws -> Tensor {
        isContiguous ? self : try copied(as: dtype)
    }

    /// A contiguous copy with elements rounded to `dtype` (ties to even); `self` when the dtype is
    /// already `dtype`.
    public func converted(to dtype: DType) throws -> Tensor {
        dtype == self.dtype ? self : try copied(as: dtype)
    }
}

extension Tensor {
    /// This tensor on `device`: `self` when it is already there; otherwise a copy. Host → device
    /// copies the elements contiguously, except that broadcast (stride-0) dimensions stay
    /// broadcast: one slice is copied and expanded again, so grouped-query K/V keep their form;
    /// device → host copies the whole storage and keeps the view's shape, strides and offset.
    public func to(_ device: Device) throws -> Tensor {
        if device == self.device { return self }
        switch (self.device, device) {
        case (.cpu, .cuda):
            var base = self
            for dimension in shape.indices where strides[dimension] == 0 && shape[dimension] > 1 {
                base = try base.slice(dimension: dimension, range: 0..<1)
            }
            let source = try base.contiguous()
            let target = try Tensor(allocating: source.shape, dtype: dtype, device: device)
            let bytes = source.count * dtype.byteSize
            if bytes > 0, let buffer = target.storage.deviceBuffer {
                let address = try source.storage.hostAddress("to(\(device))") + source.offset * dtype.byteSize
                try CUDAContexts.translatingErrors(device: device) { try buffer.copy(from: address, bytes: bytes) }
            }
            return try target.expanded(to: shape)
        case (.cuda, .cpu):
            let host = try TensorStorage(byteCount: storage.byteCount, device: .cpu)
            if storage.byteCount > 0, let buffer = storage.deviceBuffer {
                let base = try host.hostAddress("to(.cpu)")
                try CUDAContexts.translatingErrors(device: self.device) { try buffer.copy(to: base, bytes: storage.byteCount) }
            }
            return Tensor(unchecked: host, shape: shape, strides: strides, offset: offset, dtype: dtype)
        default:
            return try to(.cpu).to(device)
        }
    }
}
