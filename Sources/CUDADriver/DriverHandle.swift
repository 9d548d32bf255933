/// The one owner of a driver object (a context, module, stream or event): its raw handle and the
/// call that destroys it, made once, when the owner is released. `Kind` is the wrapper that holds
/// it (`DriverHandle<CUDAStream>`), so that handles of different kinds are never mixed up.
final class DriverHandle<Kind>: Sendable {
    private let raw: UncheckedPointer
    private let destroy: @Sendable (OpaquePointer) -> Void

    /// The raw handle (`CUcontext`, `CUmodule`, `CUstream`, `CUevent`), valid while this owner lives.
    var pointer: OpaquePointer { OpaquePointer(raw.pointer) }

    /// Creates the object with driver function `create`, which `invoke` calls with its arguments
    /// and where to write the handle; `destroy` releases the handle when this owner goes.
    init<Create>(_ driver: CUDADriver, creating create: DriverFunctions.Entry<Create>,
                 _ invoke: (Create, UnsafeMutablePointer<OpaquePointer?>) -> Int32,
                 destroy: @escaping @Sendable (OpaquePointer) -> Void) throws {
        var handle: OpaquePointer?
        try driver.call(create) { invoke($0, &handle) }
        guard let handle else {
            throw CUDAError(call: create(DriverFunctions.table).name, code: 400, name: "CUDA_ERROR_INVALID_HANDLE",
                            message: "no handle returned")
        }
        raw = UncheckedPointer(UnsafeMutableRawPointer(handle))
        self.destroy = destroy
    }

    deinit {
        destroy(pointer)
    }
}

extension CUDAContext {
    /// A new object of this context (a module, stream or event) made by `create` with this
    /// context current, and released by `destroy`, with this context current again, when its
    /// owner goes (a failure to release is ignored: there is no one left to tell).
    func makeHandle<Kind, Create>(_ create: DriverFunctions.Entry<Create>,
                                  _ invoke: (Create, UnsafeMutablePointer<OpaquePointer?>) -> Int32,
                                  destroy: @escaping DriverFunctions.Entry<DriverFunctions.Destroy>) throws -> DriverHandle<Kind> {
        try makeCurrent()
        return try DriverHandle(driver, creating: create, invoke) { [self] handle in
            try? call(destroy) { $0(handle) }
        }
    }
}
