import Testing
import FMHATestSupport
@testable import FMHACore

/// Tensor creation, views, strides (including stride 0), copies and dtype conversion.
@Suite struct TensorTests {
    /// `[0, 1, 2, ...]` as float32 of `shape`.
    func iota(_ shape: [Int], dtype: DType = .float32) throws -> Tensor {
        let count = shape.reduce(1, *)
        return try Tensor(shape: shape, scalars: (0..<count).map(Float.init), dtype: dtype)
    }

    @Test func createsRowMajorContiguousTensors() throws {
        let tensor = try iota([2, 3, 4])
        #expect(tensor.strides == [12, 4, 1])
        #expect(tensor.isContiguous)
        #expect(tensor.count == 24)
        #expect(try tensor.toArray() == (0..<24).map(Float.init))
    }

    @Test(arguments: DType.floatingPointCases)
    func roundTripsSmallIntegersThroughEveryDType(_ dtype: DType) throws {
        let values: [Float] = [0, 1, -2, 3.5, 256, -0.25]
        #expect(try Tensor(shape: [6], scalars: values, dtype: dtype).toArray() == values)
    }

    @Test func zerosAndFull() throws {
        #expect(try Tensor.zeros([3, 2], dtype: .bfloat16).toArray() == [Float](repeating: 0, count: 6))
        // On the host, uninitialized still means zeros (only device memory skips the fill).
        let uninitialized = try Tensor.uninitialized([2, 3, 4], dtype: .float16)
        #expect(uninitialized.shape == [2, 3, 4] && uninitialized.dtype == .float16 && uninitialized.isContiguous)
        #expect(try uninitialized.toArray() == [Float](repeating: 0, count: 24))
        let poisoned = try Tensor.full([2, 2], value: .nan, dtype: .float16).toArray()
        #expect(poisoned.allSatisfy { $0.isNaN })
    }

    @Test func randnIsReproducibleAndNormal() throws {
        let first = try Tensor.randn([64, 64], seed: 7).toArray()
        #expect(try Tensor.randn([64, 64], seed: 7).toArray() == first)
        #expect(try Tensor.randn([64, 64], seed: 8).toArray() != first)
        // Element n depends only on (seed, n), whatever the shape.
        #expect(try Tensor.randn([10], seed: 7).toArray() == Array(first.prefix(10)))
        let mean = first.reduce(0, +) / Float(first.count)
        let variance = first.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(first.count)
        #expect(abs(mean) < 0.05)
        #expect(abs(variance - 1) < 0.08)
        // Other dtypes round the same samples.
        let half = try Tensor.randn([64, 64], dtype: .float16, seed: 7).toArray()
        #expect(zip(half, first).allSatisfy { Float(Float16($1)) == $0 })
    }

    @Test func rejectsMismatchedScalarCounts() throws {
        let error = #expect(throws: FMHAError.self) { try Tensor(shape: [2, 3], scalars: [1, 2]) }
        #expect(error?.message.contains("6 values") == true)
        #expect(throws: FMHAError.self) { try Tensor.zeros([2, -1]) }
        #expect(throws: FMHAError.self) { try Tensor.zeros([Int.max, 4]) }
    }

    /// Sizes the host cannot hold throw `.outOfMemory` errors naming the shape and the bytes
    /// instead of trapping (each is far beyond physical memory, so `calloc` is never asked).
    @Test func refusesTensorsLargerThanHostMemory() throws {
        let terabytes = 1 << 40
        let requests: [(String, () throws -> Tensor)] = [
            ("4398046511104 bytes", { try Tensor.zeros([terabytes]) }),
            ("4398046511104 bytes", { try Tensor.uninitialized([terabytes]) }),
            ("2199023255552 bytes", { try Tensor.full([terabytes], value: 1, dtype: .float16) }),
            ("8796093022208 bytes", { try Tensor.randn([1 << 10, 1 << 30], dtype: .float64) }),
            ("8796093022208 bytes", { try Tensor.zeros([1]).expanded(to: [terabytes]).converted(to: .float64) }),
            ("4398046511104 bytes", { try Tensor(shape: [1], scalars: [2]).expanded(to: [terabytes]).contiguous() }),
        ]
        for (bytes, request) in requests where HostMemory.capacity < 1 << 40 {
            let error = #expect(throws: FMHAError.self) { try request() }
            #expect(error?.kind == .outOfMemory, "\(error?.message ?? "")")
            #expect(error?.message.hasPrefix("shape: expected at most ") == true, "\(error?.message ?? "")")
            #expect(error?.message.contains(bytes) == true, "\(error?.message ?? "")")
        }
        // The issue's two: 4 TiB of zeros, 64 GiB of samples (past physical memory here).
        if HostMemory.capacity < 1 << 36 {
            let error = #expect(throws: FMHAError.self) { try Tensor.randn([1 << 34]) }
            #expect(error?.kind == .outOfMemory && error?.message.contains("[17179869184] of float32") == true)
        }
        #expect(throws: FMHAError.self) { try Tensor.zeros([1 << 40]) }
        // Reading out a broadcast view with more elements than memory holds.
        let broadcast = try Tensor.zeros([1]).expanded(to: [1 << 61])
        let error = #expect(throws: FMHAError.self) { try broadcast.toDoubleArray() }
        #expect(error?.kind == .outOfMemory && error?.message.contains("tensor: expected at most") == true)
        // A mask plane sized from a shape alone.
        let plane = #expect(throws: FMHAError.self) { try LowerTriangularMask().materialize(shape: [1 << 20, 1 << 20]) }
        #expect(plane?.kind == .outOfMemory && plane?.message.contains("mask plane of shape [1048576, 1048576]") == true)
        // Freed storage is no longer counted: the same large-ish tensor can be made again and again.
        for _ in 0..<3 { #expect(try Tensor.zeros([1 << 20]).count == 1 << 20) }
    }

    @Test func transposeIsAViewAndReadsInLogicalOrder() throws {
        let tensor = try iota([2, 3])
        let transposed = try tensor.transposed(0, 1)
        #expect(transposed.shape == [3, 2])
        #expect(transposed.strides == [1, 3])
        #expect(!transposed.isContiguous)
        #expect(transposed.storage === tensor.storage)
        #expect(try transposed.toArray() == [0, 3, 1, 4, 2, 5])
        let copy = try transposed.contiguous()
        #expect(copy.isContiguous)
        #expect(try copy.toArray() == [0, 3, 1, 4, 2, 5])
        #expect(try tensor.transposed(-1, -2).shape == [3, 2])
        #expect(throws: FMHAError.self) { try tensor.transposed(0, 2) }
    }

    @Test func permuteReordersDimensions() throws {
        let tensor = try iota([2, 3, 4])
        let permuted = try tensor.permuted([2, 0, 1])
        #expect(permuted.shape == [4, 2, 3])
        let values = try permuted.toArray()
        // permuted[1, 1, 2] (flat index 11) is tensor[1, 2, 1] = 12·1 + 4·2 + 1.
        #expect(values[11] == 21)
        #expect(throws: FMHAError.self) { try tensor.permuted([0, 0, 1]) }
    }

    @Test func sliceSelectsARangeWithOffset() throws {
        let tensor = try iota([4, 5])
        let rows = try tensor.slice(dimension: 0, range: 1..<3)
        #expect(rows.offset == 5)
        #expect(try rows.toArray() == (5..<15).map(Float.init))
        let columns = try tensor.slice(dimension: -1, range: 2..<4)
        #expect(try columns.toArray() == [2, 3, 7, 8, 12, 13, 17, 18])
        #expect(try tensor.slice(dimension: 1, range: 5..<5).count == 0)
        #expect(throws: FMHAError.self) { try tensor.slice(dimension: 1, range: 3..<6) }
        #expect(throws: FMHAError.self) { try tensor.slice(dimension: 2, range: 0..<1) }
    }

    @Test func expandGivesStrideZeroWithoutCopying() throws {
        // Grouped-query attention: K/V heads [B, M, G, 1, K] expanded to [B, M, G, H, K].
        let keys = try iota([1, 3, 2, 1, 4])
        let expanded = try keys.expanded(to: [1, 3, 2, 5, 4])
        #expect(expanded.strides == [24, 8, 4, 0, 1])
        #expect(expanded.storage === keys.storage)
        let values = try expanded.toArray()
        for head in 0..<5 {
            #expect(values[(1 * 2 + 1) * 20 + head * 4 + 2] == Float(1 * 8 + 1 * 4 + 2))
        }
        let withNewLeading = try iota([3]).expanded(to: [2, -1])
        #expect(withNewLeading.strides == [0, 1])
        #expect(try withNewLeading.toArray() == [0, 1, 2, 0, 1, 2])
        #expect(throws: FMHAError.self) { try iota([3]).expanded(to: [4]) }
        #expect(throws: FMHAError.self) { try iota([2, 3]).expanded(to: [3]) }
    }

    @Test func reshapeViewsContiguousAndCopiesStrided() throws {
        let tensor = try iota([2, 6])
        let view = try tensor.reshaped([3, -1])
        #expect(view.shape == [3, 4])
        #expect(view.storage === tensor.storage)
        let strided = try tensor.transposed(0, 1).reshaped([12])
        #expect(strided.storage !== tensor.storage)
        #expect(try strided.toArray() == [0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11])
        #expect(throws: FMHAError.self) { try tensor.reshaped([5, -1]) }
        #expect(throws: FMHAError.self) { try tensor.reshaped([-1, -1]) }
        #expect(throws: FMHAError.self) { try tensor.reshaped([7]) }
    }

    @Test func stridedViewsOfPackedStorage() throws {
        // A packed QKV buffer [B, M, 3, H, K]: each of q, k, v is a non-contiguous view.
        let packed = try iota([2, 3, 3, 2, 4])
        let key = try Tensor(storage: packed.storage, shape: [2, 3, 2, 4], strides: [72, 24, 4, 1], offset: 8,
                             dtype: .float32)
        let reference = try packed.slice(dimension: 2, range: 1..<2).reshaped([2, 3, 2, 4])
        #expect(try key.toArray() == reference.toArray())
        #expect(throws: FMHAError.self) {
            try Tensor(storage: packed.storage, shape: [2, 3, 2, 4], strides: [72, 24, 4, 1], offset: 100, dtype: .float32)
        }
        #expect(throws: FMHAError.self) {
            try Tensor(storage: packed.storage, shape: [2], strides: [-1], dtype: .float32)
        }
        #expect(throws: FMHAError.self) {
            try Tensor(storage: packed.storage, shape: [2, 2], strides: [1], dtype: .float32)
        }
    }

    @Test func convertRoundsToNearestEven() throws {
        // 1 + 2⁻⁸ is a tie between two bfloat16s: it goes to the even one (1); 1 + 3·2⁻⁸ goes up.
        let values: [Float] = [1 + 0x1p-8, 1 + 3 * 0x1p-8, 1 + 0x1p-11]
        let tensor = try Tensor(shape: [3], scalars: values)
        let bfloat = try tensor.converted(to: .bfloat16)
        #expect(bfloat.dtype == .bfloat16)
        #expect(try bfloat.toArray() == [1, 1 + 4 * 0x1p-8, 1])
        let half = try tensor.converted(to: .float16)
        #expect(try half.toArray() == [1 + 0x1p-8, 1 + 3 * 0x1p-8, 1])
        #expect(try tensor.converted(to: .float32).storage === tensor.storage)
    }

    @Test func float64ToBFloat16RoundsOnce() throws {
        // Just above a bfloat16 tie, but rounding to Float first would land on the tie and then
        // round to even (down): a single rounding goes up.
        let value = 1 + 0x1p-8 + 0x1p-40
        let tensor = try Tensor(shape: [1], scalars: [value], dtype: .float64)
        #expect(try tensor.converted(to: .bfloat16).toArray() == [1 + 0x1p-7])
        #expect(try tensor.toDoubleArray() == [value])
    }

    @Test func concatenateAlongADimension() throws {
        let first = try iota([1, 2, 3]), second = try iota([1, 1, 3]).transposed(0, 1)
        let joined = try Tensor.concatenated([first, second], dimension: 1)
        #expect(joined.shape == [1, 3, 3])
        #expect(try joined.toArray() == [0, 1, 2, 3, 4, 5, 0, 1, 2])
        #expect(throws: FMHAError.self) { try Tensor.concatenated([first, try iota([1, 2, 4])], dimension: 1) }
        #expect(throws: FMHAError.self) { try Tensor.concatenated([first, try iota([1, 2, 3], dtype: .float16)], dimension: 1) }
        #expect(throws: FMHAError.self) { try Tensor.concatenated([], dimension: 0) }
    }

    @Test func emptyAndScalarTensors() throws {
        let empty = try Tensor.zeros([0, 4, 2])
        #expect(empty.count == 0)
        #expect(try empty.toArray().isEmpty)
        #expect(try empty.transposed(0, 2).contiguous().shape == [2, 4, 0])
        let scalar = try Tensor(shape: [], scalars: [3])
        #expect(try scalar.toArray() == [3])
        #expect(try scalar.expanded(to: [2, 2]).toArray() == [3, 3, 3, 3])
    }
}
