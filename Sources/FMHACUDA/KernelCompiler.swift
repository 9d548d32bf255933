import FMHACore
import Synchronization

/// Turns kernel variants into cubins, each at most once per process: typed descriptor → source and
/// options (`KernelDescriptor`) → the disk cache, or the run-time compiler (NVRTC) on a miss → kept
/// in memory under the typed descriptor.
///
/// Safe to share between threads: several threads asking for the same variant at once wait for
/// one compilation; different variants compile in parallel. A failed compilation is not
/// remembered, so the next request tries again (and throws the compiler's error, with its log).
public final class KernelCompiler: Sendable {
    /// The compiler used on a cache miss.
    public let compiler: RuntimeCompiler
    /// The CUDA driver's version as text (`"none"` when compiling without a driver): part of the
    /// disk cache key, so that a driver update never runs cubins cached under the old one.
    public let driverVersion: String
    /// Where compiled kernels persist across processes; nil when the disk cache is off.
    public let diskCache: KernelDiskCache?

    /// One variant's kernel, filled by the first thread that asks for it; its lock is held while
    /// compiling, so that the others wait for it instead of compiling again.
    private final class Slot: Sendable {
        let kernel = Mutex<CompiledKernel?>(nil)
    }

    /// Each variant's slot, keyed by its typed descriptor (of any kernel family).
    private let slots = Mutex<[AnyKernelVariant: Slot]>([:])

    /// A compiler that uses `compiler` on a miss of the memory and disk caches. The disk cache
    /// defaults to the one the environment asks for (`KernelDiskCache.fromEnvironment()`).
    public init(compiler: RuntimeCompiler, driverVersion: String = "none",
                diskCache: KernelDiskCache? = KernelDiskCache.fromEnvironment()) {
        self.compiler = compiler
        self.driverVersion = driverVersion
        self.diskCache = diskCache
    }

    /// The compiled kernel of `variant`, from memory, from disk, or compiled now.
    public func kernel(for variant: some KernelVariantDescriptor) throws -> CompiledKernel {
        let key = AnyKernelVariant(variant)
        let slot = slots.withLock { slots in
            if let slot = slots[key] { return slot }
            let slot = Slot()
            slots[key] = slot
            return slot
        }
        return try slot.kernel.withLock { kernel in
            if let kernel { return kernel }
            let loaded = try load(variant.kernelDescriptor)
            kernel = loaded
            return loaded
        }
    }

    /// Reads `descriptor`'s kernel from the disk cache, or compiles it and stores it there.
    private func load(_ descriptor: KernelDescriptor) throws -> CompiledKernel {
        let source = try descriptor.source()
        let options = try descriptor.options()
        let key = KernelDiskCache.key(source: source, options: options, compilerVersion: compiler.version,
                                      driverVersion: driverVersion)
        let path = diskCache?.path(for: descriptor, key: key)
        if let path, let output = diskCache?.load(path: path) {
            return CompiledKernel(descriptor: descriptor, cubin: output.cubin, log: output.log, origin: .diskCache)
        }
        let clock = ContinuousClock()
        let start = clock.now
        let output = try compiler.compile(source: source, name: descriptor.sourceName + ".cu", options: options)
        let duration = clock.now - start
        if let path { diskCache?.store(output, path: path) }
        SlowCompilationNotice.record(duration, architecture: descriptor.architecture, cacheDirectory: diskCache?.directory)
        return CompiledKernel(descriptor: descriptor, cubin: output.cubin, log: output.log, origin: .compiled(duration: duration))
    }
}
