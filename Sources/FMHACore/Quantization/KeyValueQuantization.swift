extension KeyValueFormat {
    /// `tensor` (`[..., K]`, floating point, any device) quantized into this format: the int32
    /// words `[..., wordsPerRow(K)]` and, for fp8, the per-row scale/shift words `[...]` (nil for
    /// int4), on the tensor's device. An int4 group takes scale (max − min)/15 and shift min, an fp8
    /// row shift (max + min)/2 and scale max |x − shift| / 448, each rounded to float16; elements
    /// take the nearest step (int4 clamped to 0...15, fp8 saturating). Runs on the host element by
    /// element: for filling caches and for tests.
    public func quantize(_ tensor: Tensor) throws -> (values: Tensor, scaleShift: Tensor?) {
        guard tensor.dtype.isFloatingPoint, tensor.rank >= 1 else {
            throw FMHAError.invalidArgument("tensor", expected: "a floating-point tensor [..., K] to quantize",
                                            got: "\(tensor.dtype) of shape \(tensor.shape)")
        }
        let headDimension = tensor.shape[tensor.rank - 1]
        if let problem = headDimensionProblem(headDimension) {
            throw FMHAError.invalidArgument("tensor", expected: problem, got: "shape \(tensor.shape)")
        }
        let elements = try tensor.toDoubleArray().map(Float.init)
        let rows = headDimension == 0 ? 0 : elements.count / headDimension, words = wordsPerRow(headDimension: headDimension)
        var packed = [UInt32](repeating: 0, count: rows * words), scaleShifts = [UInt32]()
        for row in 0..<rows {
            let values = elements[row * headDimension ..< (row + 1) * headDimension]
            switch self {
            case .int4(let groups):
                let size = headDimension / groups
                for group in 0..<groups {
                    let part = values.dropFirst(group * size).prefix(size)
                    let low = part.min() ?? 0, high = part.max() ?? 0
                    let pair = Self.halfPair(scale: (high - low) / 15, shift: low)
                    packed[row * words + group] = pair.bits
                    for (index, x) in zip(part.indices, part) {
                        let step = pair.scale == 0 ? 0 : UInt32(max(0, min(15, ((x - pair.shift) / pair.scale).rounded(.toNearestOrEven))))
                        let element = index - row * headDimension
                        packed[row * words + groups + element / 8] |= step << (4 * UInt32(element % 8))
                    }
                }
            case .fp8:
                let low = values.min() ?? 0, high = values.max() ?? 0, middle = Float(Float16((high + low) / 2))
                let reach = values.map { abs($0 - middle) }.max() ?? 0
                let pair = Self.halfPair(scale: reach / 448, shift: middle, roundScaleUp: true)
                scaleShifts.append(pair.bits)
                for (element, x) in values.enumerated() {
                    let byte = pair.scale == 0 ? 0 : UInt32(FP8E4M3.encode((x - pair.shift) / pair.scale))
                    packed[row * words + element / 4] |= byte << (8 * UInt32(element % 4))
                }
            }
        }
        let leading = Array(tensor.shape.dropLast())
        let values = try Tensor(shape: leading + [words], words: packed.map { Int32(bitPattern: $0) }, device: tensor.device)
        let scaleShift = self == .fp8 ? try Tensor(shape: leading, words: scaleShifts.map { Int32(bitPattern: $0) }, device: tensor.device) : nil
        return (values, scaleShift)
    }

    /// The float16 scale and shift as stored (scale in the low half), and their values; the
    /// scale rounded up when `roundScaleUp`, so that no element overflows the format's range.
    private static func halfPair(scale: Float, shift: Float, roundScaleUp: Bool = false) -> (bits: UInt32, scale: Float, shift: Float) {
        var halfScale = Float16(scale)
        if roundScaleUp, Float(halfScale) < scale { halfScale = halfScale.nextUp }
        let halfShift = Float16(shift)
        return (UInt32(halfScale.bitPattern) | UInt32(halfShift.bitPattern) << 16, Float(halfScale), Float(halfShift))
    }

    /// `x·scale + shift` exactly, as a double: x has at most 4 significant bits and scale at most
    /// 11, so their product is exact, and so is its sum with shift unless their exponents lie more
    /// than ~38 bits apart; then the product sits far below the rounding point of shift in any
    /// 16- or 32-bit type, and rounding the double gives what rounding the exact sum would.
    @inline(__always)
    static func exactProduct(_ x: Float, _ scale: Float, _ shift: Float) -> Double {
        Double(x) * Double(scale) + Double(shift)
    }

    /// The scale and shift packed in `word` (scale in the low 16 bits) rounded to `dtype` (exact
    /// but for bfloat16, which keeps 8 of float16's 11 significant bits), as floats.
    static func scaleAndShift(_ word: UInt32, dtype: DType) -> (scale: Float, shift: Float) {
        let scale = Float(Float16(bitPattern: UInt16(word & 0xFFFF))), shift = Float(Float16(bitPattern: UInt16(word >> 16)))
        return dtype == .bfloat16 ? (BFloat16(scale).floatValue, BFloat16(shift).floatValue) : (scale, shift)
    }

    /// Quantized `values` (`[..., words]`, int32) and, for fp8, their `scaleShift` words (`[...]`)
    /// dequantized into a contiguous `[..., headDimension]` tensor of `dtype` on the host: each
    /// element `x·scale + shift` with scale and shift rounded to `dtype`, computed exactly and
    /// rounded once to `dtype` (KeyValueFormat's rule, which the kernels follow bit for bit).
    public func dequantize(_ values: Tensor, scaleShift: Tensor?, headDimension: Int, dtype: DType) throws -> Tensor {
        let words = wordsPerRow(headDimension: headDimension)
        guard values.dtype == .int32, values.rank >= 1, values.shape[values.rank - 1] == words else {
            throw FMHAError.invalidArgument("values", expected: "int32 words [..., \(words)] of \(self) rows of \(headDimension) elements",
                                            got: "\(values.dtype) of shape \(values.shape)")
        }
        let leading = Array(values.shape.dropLast())
        let packed = try values.words()
        var pairs = [UInt32]()
        if self == .fp8 {
            guard let scaleShift, scaleShift.dtype == .int32, scaleShift.shape == leading else {
                throw FMHAError.invalidArgument("scaleShift", expected: "int32 scale/shift words of shape \(leading) for fp8",
                                                got: scaleShift.map { "\($0.dtype) of shape \($0.shape)" } ?? "none")
            }
            pairs = try scaleShift.words()
        }
        let rows = words == 0 ? 0 : packed.count / words
        let tensor = try Tensor.uninitialized(leading + [headDimension], dtype: dtype)
        try tensor.withUnsafeHostAddress { base in
            switch dtype {
            case .bfloat16:
                let target = base.assumingMemoryBound(to: UInt16.self)
                fill(packed, pairs, rows: rows, headDimension: headDimension, dtype: dtype) { target[$0] = BFloat16($1).bitPattern }
            case .float16:
                let target = base.assumingMemoryBound(to: Float16.self)
                fill(packed, pairs, rows: rows, headDimension: headDimension, dtype: dtype) { target[$0] = Float16(Float.roundedToOdd($1)) }
            case .float32:
                let target = base.assumingMemoryBound(to: Float.self)
                fill(packed, pairs, rows: rows, headDimension: headDimension, dtype: dtype) { target[$0] = Float($1) }
            default:
                fill(packed, pairs, rows: rows, headDimension: headDimension, dtype: dtype) { dtype.store($1, base, $0) }
            }
        }
        return tensor
    }

    /// Calls `store(index, value)` with every element's exact value (`exactProduct`) in row-major
    /// order; `pairs` holds the fp8 rows' scale/shift words.
    @inline(__always)
    private func fill(_ packed: [UInt32], _ pairs: [UInt32], rows: Int, headDimension: Int, dtype: DType,
                      store: (Int, Double) -> Void) {
        let words = wordsPerRow(headDimension: headDimension)
        let table = FP8E4M3.values
        packed.withUnsafeBufferPointer { packed in
            for row in 0..<rows {
                let base = row * words, first = row * headDimension
                switch self {
                case .int4(let groups):
                    let groupSize = headDimension / groups
                    for group in 0..<groups {
                        let pair = Self.scaleAndShift(packed[base + group], dtype: dtype)
                        for element in group * groupSize ..< (group + 1) * groupSize {
                            let x = Float((packed[base + groups + element / 8] >> (4 * UInt32(element % 8))) & 0xF)
                            store(first + element, Self.exactProduct(x, pair.scale, pair.shift))
                        }
                    }
                case .fp8:
                    let pair = Self.scaleAndShift(pairs[row], dtype: dtype)
                    for element in 0..<headDimension {
                        let x = table[Int((packed[base + element / 4] >> (8 * UInt32(element % 4))) & 0xFF)]
                        store(first + element, Self.exactProduct(x, pair.scale, pair.shift))
                    }
                }
            }
        }
    }
}

extension Tensor {
    /// The elements of an int32 tensor in logical row-major order, as their bit patterns.
    func words() throws -> [UInt32] {
        let host = try (isContiguous ? self : contiguous()).to(.cpu)
        var result = [UInt32](repeating: 0, count: host.count)
        try host.withUnsafeHostAddress { base in
            result.withUnsafeMutableBytes { bytes in
                if let target = bytes.baseAddress { target.copyMemory(from: base, byteCount: bytes.count) }
            }
        }
        return result
    }
}
