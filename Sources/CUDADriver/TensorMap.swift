/// A tensor map for Hopper's tensor memory accelerator (`CUtensorMap`, made by
/// `cuTensorMapEncodeTiled`): how a kernel's `cp.async.bulk.tensor` copies boxes of a tensor in
/// device memory into shared memory. 128 opaque bytes, passed to a kernel by value
/// (`KernelArguments.append(words:)`, a `__grid_constant__` parameter).
public struct TensorMap: Sendable, Equatable {
    /// The encoded map.
    public let words: [Int64]

    /// Element types (`CUtensorMapDataType`).
    public enum ElementType: Int32, Sendable {
        case float16 = 6
        case bfloat16 = 9
    }

    /// A tiled map over the tensor at `address` with `extents` elements per dimension, innermost
    /// first (that dimension contiguous), `strides` bytes between consecutive elements of the
    /// other dimensions (multiples of 16), boxes of `box` elements per dimension (the innermost
    /// box 128 bytes at most: it is copied with 128-byte swizzling, the layout wgmma reads), and
    /// zeros for elements outside the tensor. The driver checks the rest and throws `CUDAError`
    /// when it refuses them.
    public init(driver: CUDADriver, elementType: ElementType, address: UInt64, extents: [UInt64], strides: [UInt64],
                box: [UInt32]) throws {
        precondition(extents.count == box.count && strides.count == extents.count - 1 && (1...5).contains(extents.count),
                     "a tensor map of 1 to 5 dimensions, a stride for each but the innermost")
        var encoded = [Int64](repeating: 0, count: 16)
        let elementStrides = [UInt32](repeating: 1, count: extents.count)
        try encoded.withUnsafeMutableBytes { map in
            try driver.call(\.cuTensorMapEncodeTiled) {
                // No interleave, 128-byte swizzle (3), L2 promotion of 128 bytes (2), zero fill (0).
                $0(map.baseAddress, elementType.rawValue, UInt32(extents.count), UnsafeMutableRawPointer(bitPattern: UInt(address)),
                   extents, strides, box, elementStrides, 0, 3, 2, 0)
            }
        }
        words = encoded
    }
}
