/// A kernel descriptor compiled to a cubin, ready for `cuModuleLoadData`.
public struct CompiledKernel: Sendable {
    /// Where a compiled kernel came from.
    public enum Origin: Sendable, Hashable {
        /// Compiled in this process, taking `duration`.
        case compiled(duration: Duration)
        /// Read from the disk cache.
        case diskCache
    }

    /// What was compiled.
    public let descriptor: KernelDescriptor
    /// The cubin for `descriptor.architecture`.
    public let cubin: [UInt8]
    /// The compiler's log, with ptxas' `-v` resource report.
    public let log: String
    /// How this process obtained it.
    public let origin: Origin

    /// A compiled kernel.
    public init(descriptor: KernelDescriptor, cubin: [UInt8], log: String, origin: Origin) {
        self.descriptor = descriptor
        self.cubin = cubin
        self.log = log
        self.origin = origin
    }

    /// Registers, shared memory, stack and spill bytes of each function in the cubin, from the log.
    public var resources: [KernelResources] { KernelResources.parse(ptxasLog: log) }
}
