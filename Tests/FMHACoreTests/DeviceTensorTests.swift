import CUDADriver
import Testing
import FMHATestSupport
@testable import FMHACore

/// Tensors on a CUDA device: creation, copies both ways (strided views too), conversions, and
/// validation across devices. Enabled only where a CUDA device is present; without one, asking
/// for CUDA storage must fail with the driver's reason.
@Suite struct DeviceTensorTests {
    static let hasDevice: Bool = ((try? CUDADriver.shared().deviceCount()) ?? 0) > 0

    @Test(.enabled(if: !hasDevice, "a CUDA device is present"))
    func withoutADeviceCUDAStorageSaysWhy() {
        let error = #expect(throws: FMHAError.self) { try Tensor.zeros([4], device: .cuda(0)) }
        #expect(error?.kind == .deviceUnavailable || error?.kind == .invalidArgument)
        #expect(error?.message.contains("cuda:0") == true)
    }

    @Test(.enabled(if: hasDevice, "no CUDA device"), arguments: DType.floatingPointCases)
    func creationAndCopiesRoundTrip(dtype: DType) throws {
        let host = try Tensor.randn([3, 5, 7], dtype: dtype, seed: 11)
        let device = try Tensor.randn([3, 5, 7], dtype: dtype, device: .cuda(0), seed: 11)
        #expect(device.device == .cuda(0))
        #expect(try device.toArray() == host.toArray())
        #expect(try host.to(.cuda(0)).to(.cpu).toArray() == host.toArray())
        #expect(try Tensor.zeros([9], dtype: dtype, device: .cuda(0)).toArray() == [Float](repeating: 0, count: 9))
        #expect(try Tensor.full([4], value: .nan, dtype: dtype, device: .cuda(0)).toArray().allSatisfy { $0.isNaN })
        #expect(try Tensor(shape: [2], scalars: [1.5, -2], dtype: dtype, device: .cuda(0)).toArray() == [1.5, -2])
    }

    @Test(.enabled(if: hasDevice, "no CUDA device"))
    func stridedViewsCrossDevices() throws {
        let host = try Tensor.randn([4, 6, 8], seed: 12)
        // Host view → device: copied contiguously.
        let transposed = try host.transposed(0, 2)
        let onDevice = try transposed.to(.cuda(0))
        #expect(onDevice.isContiguous && onDevice.shape == [8, 6, 4])
        #expect(try onDevice.toArray() == transposed.toArray())
        // Device view → host: the view's strides and offset are kept.
        let deviceSlice = try host.to(.cuda(0)).slice(dimension: 1, range: 2..<5).expanded(to: [2, 4, 3, 8])
        #expect(try deviceSlice.toArray() == host.slice(dimension: 1, range: 2..<5).expanded(to: [2, 4, 3, 8]).toArray())
        #expect(try deviceSlice.contiguous().device == .cuda(0))
        // Broadcast dimensions stay broadcast on the device.
        let keys = try host.slice(dimension: 0, range: 0..<1).expanded(to: [3, 6, 8]).unsqueezed(at: 2).expanded(to: [3, 6, 5, 8])
        let keysOnDevice = try keys.to(.cuda(0))
        #expect(keysOnDevice.strides[0] == 0 && keysOnDevice.strides[2] == 0)
        #expect(try keysOnDevice.toArray() == keys.toArray())
        #expect(try deviceSlice.converted(to: .bfloat16).toArray()
                == host.slice(dimension: 1, range: 2..<5).expanded(to: [2, 4, 3, 8]).converted(to: .bfloat16).toArray())
    }

    @Test(.enabled(if: hasDevice, "no CUDA device"))
    func masksMaterializeOnTheDevice() throws {
        let mask = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [3, 5])
        let onDevice = try mask.materialize(shape: [2, 8, 8], device: .cuda(0))
        #expect(onDevice.device == .cuda(0))
        #expect(try onDevice.toArray() == mask.materialize(shape: [2, 8, 8]).toArray())
    }

    @Test(.enabled(if: hasDevice, "no CUDA device"))
    func validationNeedsOneDevice() throws {
        let query = try Tensor.randn([1, 4, 2, 8], seed: 1)
        let key = try Tensor.randn([1, 4, 2, 8], device: .cuda(0), seed: 2)
        let error = #expect(throws: FMHAError.self) { try Inputs(query: query, key: key, value: key).validate() }
        #expect(error?.message.contains("one device") == true && error?.message.contains("cuda:0") == true)
        let badOrdinal = #expect(throws: FMHAError.self) { try Tensor.zeros([1], device: .cuda(999)) }
        #expect(badOrdinal?.kind == .invalidArgument)
    }
}
