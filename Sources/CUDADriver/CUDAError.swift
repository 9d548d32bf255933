/// A CUDA driver call that failed: the call, its `CUresult`, and the driver's name and message
/// for it (`cuGetErrorName`, `cuGetErrorString`).
public struct CUDAError: Error, Sendable, CustomStringConvertible {
    /// The driver function, e.g. `cuMemAlloc_v2`.
    public let call: String
    /// The `CUresult`.
    public let code: Int32
    /// e.g. `CUDA_ERROR_OUT_OF_MEMORY`.
    public let name: String
    /// The driver's sentence for it.
    public let message: String

    public var description: String { "\(call) failed: \(name) (\(code)): \(message)" }

    /// `CUDA_ERROR_OUT_OF_MEMORY`.
    public static let outOfMemory: Int32 = 2

    /// Names of the results a caller is most likely to meet, for when the driver cannot be asked
    /// (the library failed to load, or `cuGetErrorName` itself failed).
    static let knownNames: [Int32: String] = [
        0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY",
        3: "CUDA_ERROR_NOT_INITIALIZED", 4: "CUDA_ERROR_DEINITIALIZED", 100: "CUDA_ERROR_NO_DEVICE",
        101: "CUDA_ERROR_INVALID_DEVICE", 200: "CUDA_ERROR_INVALID_IMAGE", 201: "CUDA_ERROR_INVALID_CONTEXT",
        209: "CUDA_ERROR_NO_BINARY_FOR_GPU", 218: "CUDA_ERROR_INVALID_PTX", 400: "CUDA_ERROR_INVALID_HANDLE",
        500: "CUDA_ERROR_NOT_FOUND", 700: "CUDA_ERROR_ILLEGAL_ADDRESS", 701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
        702: "CUDA_ERROR_LAUNCH_TIMEOUT", 719: "CUDA_ERROR_LAUNCH_FAILED", 999: "CUDA_ERROR_UNKNOWN",
    ]
}
