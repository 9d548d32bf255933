// `package`: FMHACUDA reaches the contexts and buffers; nothing public names a CUDADriver type.
package import CUDADriver
import Synchronization

/// Reference-counted memory that one or more `Tensor` views share: 64-byte-aligned host memory,
/// or device memory from the CUDA device's caching allocator. Both start zero-filled.
public final class TensorStorage: @unchecked Sendable {
    /// Where the bytes live.
    public let device: Device
    /// Size in bytes.
    public let byteCount: Int
    /// Host memory (`device == .cpu`).
    private let hostBlock: HostMemory.Block?
    /// Device memory (`device == .cuda`).
    let deviceBuffer: DeviceBuffer?

    /// Allocates `byteCount` bytes on `device`, zeroed (on the host always; on a device when
    /// `zeroed`, else left as the allocator hands them out). A size the host cannot hold throws
    /// an `.outOfMemory` error (see `HostMemory`); on a CUDA device the error says why one cannot
    /// be used (no driver, no such device, out of memory, …).
    public convenience init(byteCount: Int, device: Device, zeroed: Bool = true) throws {
        try self.init(byteCount: byteCount, device: device, zeroed: zeroed, argument: "byteCount", given: "\(byteCount)")
    }

    /// As the public initializer, with `argument` and `given` naming the request in errors (a
    /// tensor's "shape" and "[2, 3] of float32" rather than its byte count).
    init(byteCount: Int, device: Device, zeroed: Bool = true, argument: String, given: String) throws {
        guard byteCount >= 0 else {
            throw FMHAError.invalidArgument("byteCount", expected: "a size ≥ 0", got: "\(byteCount)")
        }
        self.device = device
        self.byteCount = byteCount
        switch device {
        case .cpu:
            hostBlock = try HostMemory.allocate(byteCount: byteCount, argument: argument, given: given)
            deviceBuffer = nil
        case .cuda(let ordinal):
            let buffer = try CUDAContexts.translatingErrors(device: device) {
                let buffer = try CUDAContexts.context(ordinal).allocate(byteCount)
                if zeroed { try buffer.fill(0) }
                return buffer
            }
            hostBlock = nil
            deviceBuffer = buffer
        }
    }

    deinit {
        if let hostBlock { HostMemory.release(hostBlock) }
    }

    /// The host address of the first byte, or an error for device storage.
    func hostAddress(_ operation: String) throws -> UnsafeMutableRawPointer {
        guard let hostBlock else { throw device.hostOnlyError(operation) }
        return hostBlock.address
    }
}

/// The primary context of each CUDA device this process uses, opened on first use.
package enum CUDAContexts {
    private static let contexts = Mutex<[Int: CUDAContext]>([:])

    /// Device `ordinal`'s context.
    static func context(_ ordinal: Int) throws -> CUDAContext {
        try contexts.withLock { contexts in
            if let context = contexts[ordinal] { return context }
            let driver = try CUDADriver.shared()
            let count = try driver.deviceCount()
            guard ordinal >= 0, ordinal < count else {
                throw FMHAError.invalidArgument("device", expected: "a CUDA device ordinal in 0..<\(count)", got: "cuda:\(ordinal)")
            }
            let context = try CUDAContext(ordinal: ordinal)
            contexts[ordinal] = context
            return context
        }
    }

    /// Runs `body`, turning the driver's errors into `FMHAError`s that name the device.
    package static func translatingErrors<Result>(device: Device, _ body: () throws -> Result) throws -> Result {
        do {
            return try body()
        } catch let error as FMHAError {
            throw error
        } catch let error as LibraryError {
            throw FMHAError(.deviceUnavailable, "\(device) is not usable: \(error)")
        } catch let error as CUDAError where error.code == CUDAError.outOfMemory {
            throw FMHAError(.outOfMemory, "\(device): \(error)")
        } catch {
            throw FMHAError(.cuda, "\(device): \(error)")
        }
    }
}

extension Tensor {
    /// Calls `body` with the device address of the view's first element (`.cuda` tensors only);
    /// element (indices) is `Σ index·stride` elements further. Valid only inside `body`.
    public func withDeviceAddress<Result>(_ body: (UInt64) throws -> Result) throws -> Result {
        guard let buffer = storage.deviceBuffer else {
            throw FMHAError(.unsupported, "a device address needs a tensor on a CUDA device, got one on \(device)")
        }
        return try withExtendedLifetime(storage) { try body(buffer.address + UInt64(offset * dtype.byteSize)) }
    }
}

extension Device {
    /// The CUDA context of this device (`.cuda` only), shared by every tensor on it; for the
    /// CUDA operators (package API: FMHACore's public interface names no CUDADriver type).
    package func cudaContext() throws -> CUDAContext {
        guard case .cuda(let ordinal) = self else {
            throw FMHAError(.unsupported, "a CUDA context needs a CUDA device, got \(self)")
        }
        return try CUDAContexts.translatingErrors(device: self) { try CUDAContexts.context(ordinal) }
    }
}
