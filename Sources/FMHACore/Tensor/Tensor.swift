/// A strided view of elements in reference-counted `TensorStorage`.
///
/// Shape and strides are in elements. Strides are never negative; a stride of 0 repeats one element
/// along that dimension (the form `expanded(to:)` gives, used for grouped-query K/V). Views share
/// storage: `reshaped`, `expanded`, `transposed` and `slice` copy nothing when they can avoid it.
/// Every function that takes a caller's shape, dimension or range validates it and throws
/// `FMHAError` rather than trapping.
public struct Tensor: Sendable {
    /// The memory this view reads.
    public let storage: TensorStorage
    /// Size of each dimension.
    public let shape: [Int]
    /// Distance in elements between neighbours along each dimension.
    public let strides: [Int]
    /// Index, in elements, of the view's first element inside `storage`.
    public let offset: Int
    /// Element type.
    public let dtype: DType

    /// Where the elements live.
    public var device: Device { storage.device }
    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Number of logical elements (the product of `shape`; 1 for rank 0).
    public var count: Int { shape.reduce(1, &*) }
    /// True when the elements are laid out densely in row-major order.
    public var isContiguous: Bool { Tensor.isRowMajor(shape: shape, strides: strides) }

    /// Wraps existing storage in a view, checking that every element it can reach lies inside.
    public init(storage: TensorStorage, shape: [Int], strides: [Int], offset: Int = 0, dtype: DType) throws {
        guard shape.count == strides.count else {
            throw FMHAError.invalidArgument("strides", expected: "\(shape.count) strides for shape \(shape)",
                                            got: "\(strides)")
        }
        guard strides.allSatisfy({ $0 >= 0 }) else {
            throw FMHAError.invalidArgument("strides", expected: "strides ≥ 0", got: "\(strides)")
        }
        guard offset >= 0 else {
            throw FMHAError.invalidArgument("offset", expected: "an offset ≥ 0", got: "\(offset)")
        }
        let count = try Tensor.checkedCount(shape, argument: "shape")
        if count > 0 {
            var last = offset
            for (size, stride) in zip(shape, strides) {
                let (step, overflow1) = (size - 1).multipliedReportingOverflow(by: stride)
                let (sum, overflow2) = last.addingReportingOverflow(step)
                guard !overflow1, !overflow2 else {
                    throw FMHAError.invalidArgument("strides", expected: "a view whose extent fits in Int",
                                                    got: "shape \(shape), strides \(strides)")
                }
                last = sum
            }
            let capacity = storage.byteCount / dtype.byteSize
            guard last < capacity else {
                throw FMHAError.invalidArgument(
                    "shape/strides/offset",
                    expected: "a view inside the storage's \(capacity) \(dtype) elements",
                    got: "shape \(shape), strides \(strides), offset \(offset) reaching element \(last)")
            }
        }
        self.init(unchecked: storage, shape: shape, strides: strides, offset: offset, dtype: dtype)
    }

    /// Builds a view the caller has already checked.
    init(unchecked storage: TensorStorage, shape: [Int], strides: [Int], offset: Int, dtype: DType) {
        self.storage = storage
        self.shape = shape
        self.strides = strides
        self.offset = offset
        self.dtype = dtype
    }

    /// Allocates a contiguous tensor, zero-filled unless `zeroed` is false (see `TensorStorage`).
    init(allocating shape: [Int], dtype: DType, device: Device, zeroed: Bool = true) throws {
        let count = try Tensor.checkedCount(shape, argument: "shape")
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else {
            throw FMHAError.invalidArgument("shape", expected: "a size that fits in memory", got: "\(shape)")
        }
        let storage = try TensorStorage(byteCount: bytes, device: device, zeroed: zeroed, argument: "shape",
                                        given: "\(shape) of \(dtype)")
        self.init(unchecked: storage, shape: shape, strides: Tensor.contiguousStrides(for: shape), offset: 0,
                  dtype: dtype)
    }

    /// Row-major strides for `shape`.
    public static func contiguousStrides(for shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var running = 1
        for dimension in shape.indices.reversed() {
            strides[dimension] = running
            running = running &* max(shape[dimension], 1)
        }
        return strides
    }

    /// True when `strides` describe a dense row-major layout of `shape` (size-1 dimensions may
    /// have any stride; an empty tensor is contiguous).
    static func isRowMajor(shape: [Int], strides: [Int]) -> Bool {
        if shape.contains(0) { return true }
        var expected = 1
        for dimension in shape.indices.reversed() where shape[dimension] != 1 {
            if strides[dimension] != expected { return false }
            expected &*= shape[dimension]
        }
        return true
    }

    /// The element count of `shape`, or a thrown error for negative sizes or overflow.
    static func checkedCount(_ shape: [Int], argument: String) throws -> Int {
        var count = 1
        for size in shape {
            guard size >= 0 else {
                throw FMHAError.invalidArgument(argument, expected: "sizes ≥ 0", got: "\(shape)")
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow else {
                throw FMHAError.invalidArgument(argument, expected: "an element count that fits in Int",
                                                got: "\(shape)")
            }
            count = product
        }
        return count
    }

    /// `dimension` counted from the end when negative; throws when out of range.
    func normalizedDimension(_ dimension: Int, argument: String = "dimension") throws -> Int {
        let resolved = dimension < 0 ? dimension + rank : dimension
        guard resolved >= 0, resolved < rank else {
            throw FMHAError.invalidArgument(argument, expected: "a dimension in -\(rank)..<\(rank) for shape \(shape)",
                                            got: "\(dimension)")
        }
        return resolved
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        "Tensor(\(dtype), \(device), shape: \(shape), strides: \(strides)\(offset == 0 ? "" : ", offset: \(offset)"))"
    }
}
