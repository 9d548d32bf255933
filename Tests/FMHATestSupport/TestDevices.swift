import FMHACore

/// Whether this machine has a CUDA device that can hold tensors.
public let cudaDeviceAvailable = (try? Tensor.zeros([1], device: .cuda(0))) != nil

/// The devices a property runs on here: the CPU, and the first CUDA device where there is one.
public let testDevices: [Device] = [.cpu] + (cudaDeviceAvailable ? [.cuda(0)] : [])

extension Inputs {
    /// The same inputs with the query, key, value and a tensor bias copied to `device` (masks
    /// hold no tensor and stay as they are).
    public func to(_ device: Device) throws -> Inputs {
        var moved = self
        moved.query = try query.to(device)
        moved.key = try key.to(device)
        moved.value = try value.to(device)
        if let tensor = bias as? Tensor { moved.bias = try tensor.to(device) }
        return moved
    }
}
