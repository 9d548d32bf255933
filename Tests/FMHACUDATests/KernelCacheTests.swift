import CUDADriver
import FMHATestSupport
@testable import FMHACUDA
import Testing

/// The memory and disk caches of `KernelCompiler`, with a stand-in compiler (no NVRTC needed).
@Suite struct KernelCacheTests {
    let descriptor = FixedKernel(.dropoutMask, architecture: "sm_90")

    // MARK: Keys

    @Test(arguments: [("", "cbf29ce484222325"), ("a", "af63dc4c8601ec8c"), ("foobar", "85944171f73967e8")])
    func fnv1aMatchesTheReferenceVectors(text: String, expected: String) {
        var hash = FNV1a()
        hash.combine(text.utf8)
        #expect(hash.hexadecimal == expected)
    }

    @Test func keyIsStableAndCoversEveryInput() {
        let key = KernelDiskCache.key(source: "k", options: ["-a", "-b"], compilerVersion: "nvrtc 13.0", driverVersion: "13000")
        // Fixed forever for these inputs: a change here silently invalidates every user's cache.
        #expect(key == "cdcc425e701a2af0")
        #expect(key.count == 16)
        let variations = [
            KernelDiskCache.key(source: "k ", options: ["-a", "-b"], compilerVersion: "nvrtc 13.0", driverVersion: "13000"),
            KernelDiskCache.key(source: "k", options: ["-a -b"], compilerVersion: "nvrtc 13.0", driverVersion: "13000"),
            KernelDiskCache.key(source: "k", options: ["-b", "-a"], compilerVersion: "nvrtc 13.0", driverVersion: "13000"),
            KernelDiskCache.key(source: "k", options: ["-a", "-b"], compilerVersion: "nvrtc 13.5", driverVersion: "13000"),
            KernelDiskCache.key(source: "k", options: ["-a", "-b"], compilerVersion: "nvrtc 13.0", driverVersion: "none"),
        ]
        #expect(Set(variations + [key]).count == variations.count + 1)
    }

    @Test func directoryFollowsTheEnvironment() {
        #expect(KernelDiskCache.directory(environment: ["HOME": "/h"]) == "/h/.cache/fmha")
        #expect(KernelDiskCache.directory(environment: ["HOME": "/h", "XDG_CACHE_HOME": "/x"]) == "/x/fmha")
        #expect(KernelDiskCache.directory(environment: ["HOME": "/h", "XDG_CACHE_HOME": "/x", "FMHA_CACHE_DIR": "/c"]) == "/c")
        #expect(KernelDiskCache.directory(environment: ["FMHA_CACHE_DIR": "/c", "FMHA_NO_DISK_CACHE": "1"]) == nil)
        #expect(KernelDiskCache.directory(environment: ["FMHA_CACHE_DIR": "/c", "FMHA_NO_DISK_CACHE": "0"]) == "/c")
        #expect(KernelDiskCache.directory(environment: [:]) == nil)
    }

    // MARK: File format

    @Test func entriesRoundTripAndAnyDamageIsRejected() {
        let output = RuntimeCompiler.Output(cubin: [0x7F, 0x45, 0x4C, 0x46, 0, 1, 2], log: "ptxas info    : Used 8 registers")
        let bytes = KernelDiskCache.encode(output)
        #expect(KernelDiskCache.decode(bytes) == output)
        #expect(KernelDiskCache.decode([]) == nil)
        #expect(KernelDiskCache.decode(Array(bytes.dropLast())) == nil)
        #expect(KernelDiskCache.decode(bytes + [0]) == nil)
        for position in [0, KernelDiskCache.magic.count, KernelDiskCache.magic.count + 8, bytes.count - 1] {
            var damaged = bytes
            damaged[position] ^= 0x10
            #expect(KernelDiskCache.decode(damaged) == nil, "a flipped bit at byte \(position) went unnoticed")
        }
    }

    // MARK: Memory cache

    @Test func memoryCacheCompilesEachDescriptorOnce() throws {
        let counting = CountingCompiler()
        let compiler = KernelCompiler(compiler: counting.compiler, diskCache: nil)
        let first = try compiler.kernel(for: descriptor)
        let second = try compiler.kernel(for: descriptor)
        #expect(counting.compilations == 1)
        #expect(first.cubin == second.cubin)
        guard case .compiled = first.origin else { Issue.record("expected a compilation, got \(first.origin)"); return }
        #expect(first.resources.map(\.registers) == [8])
        _ = try compiler.kernel(for: FixedKernel(.dropoutMask, architecture: "sm_80"))
        #expect(counting.compilations == 2)
        // Another family's variant is another key, even where its fields hash alike.
        _ = try compiler.kernel(for: FixedKernel(.referenceForward, architecture: "sm_90"))
        #expect(counting.compilations == 3)
    }

    @Test func concurrentRequestsForOneDescriptorCompileOnce() async throws {
        let counting = CountingCompiler(delayMicroseconds: 50_000)
        let compiler = KernelCompiler(compiler: counting.compiler, diskCache: nil)
        let descriptor = descriptor
        let cubins = try await withThrowingTaskGroup(of: [UInt8].self) { group in
            for _ in 0..<8 {
                group.addTask { try compiler.kernel(for: descriptor).cubin }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(counting.compilations == 1)
        #expect(cubins.count == 8 && Set(cubins).count == 1)
    }

    @Test func aFailedCompilationIsRetriedOnTheNextRequest() throws {
        let attempts = CountingCompiler()
        let failing = RuntimeCompiler(version: "stub") { source, name, options in
            let output = try attempts.compiler.compile(source: source, name: name, options: options)
            if attempts.compilations == 1 { throw TestFailure("first attempt fails") }
            return output
        }
        let compiler = KernelCompiler(compiler: failing, diskCache: nil)
        #expect(throws: TestFailure.self) { try compiler.kernel(for: descriptor) }
        _ = try compiler.kernel(for: descriptor)
        #expect(attempts.compilations == 2)
    }

    // MARK: Disk cache

    @Test func diskCacheMissWritesAndTheNextProcessHits() throws {
        try withTemporaryDirectory { folder in
            let cache = KernelDiskCache(directory: folder + "/nested/fmha")
            let counting = CountingCompiler()
            let compiled = try KernelCompiler(compiler: counting.compiler, diskCache: cache).kernel(for: descriptor)
            #expect(counting.compilations == 1)
            #expect(LibrarySearch.directoryEntries(cache.directory).count == 1, "exactly the entry, no temporary file left behind")
            // A new compiler has an empty memory cache, like a new process.
            let reloaded = try KernelCompiler(compiler: counting.compiler, diskCache: cache).kernel(for: descriptor)
            #expect(counting.compilations == 1)
            #expect(reloaded.origin == .diskCache)
            #expect(reloaded.cubin == compiled.cubin && reloaded.log == compiled.log)
            // Another compiler version or driver must not reuse it.
            let other = CountingCompiler(version: "stub 2.0")
            _ = try KernelCompiler(compiler: other.compiler, diskCache: cache).kernel(for: descriptor)
            _ = try KernelCompiler(compiler: other.compiler, driverVersion: "13000", diskCache: cache).kernel(for: descriptor)
            #expect(other.compilations == 2)
            #expect(LibrarySearch.directoryEntries(cache.directory).count == 3)
        }
    }

    @Test(arguments: [[UInt8](), Array("not a cache file".utf8)])
    func aCorruptEntryIsIgnoredAndRewritten(contents: [UInt8]) throws {
        try withTemporaryDirectory { folder in
            let cache = KernelDiskCache(directory: folder)
            let counting = CountingCompiler()
            let first = try KernelCompiler(compiler: counting.compiler, diskCache: cache).kernel(for: descriptor)
            let entries = LibrarySearch.directoryEntries(folder)
            try #require(entries.count == 1)
            let path = folder + "/" + entries[0]
            #expect(FileSystem.writeAtomically(contents, to: path))
            let recompiled = try KernelCompiler(compiler: counting.compiler, diskCache: cache).kernel(for: descriptor)
            #expect(counting.compilations == 2)
            #expect(recompiled.origin != .diskCache && recompiled.cubin == first.cubin)
            #expect(cache.load(path: path)?.cubin == first.cubin, "the corrupt entry was rewritten")
        }
    }

    @Test func anUnreadableOrUnwritableEntryOnlyCostsACompilation() throws {
        try withTemporaryDirectory { folder in
            let cache = KernelDiskCache(directory: folder)
            let counting = CountingCompiler()
            _ = try KernelCompiler(compiler: counting.compiler, diskCache: cache).kernel(for: descriptor)
            let path = folder + "/" + LibrarySearch.directoryEntries(folder)[0]
            // A folder where the entry should be: it can be neither read nor replaced.
            removeRecursively(path)
            #expect(FileSystem.createDirectories(path))
            let compiled = try KernelCompiler(compiler: counting.compiler, diskCache: cache).kernel(for: descriptor)
            #expect(counting.compilations == 2 && !compiled.cubin.isEmpty)
            // A cache folder that cannot be created (its parent is a file) is no error either.
            #expect(FileSystem.writeAtomically([1], to: folder + "/file"))
            let unwritable = KernelDiskCache(directory: folder + "/file/fmha")
            _ = try KernelCompiler(compiler: counting.compiler, diskCache: unwritable).kernel(for: descriptor)
            #expect(counting.compilations == 3)
        }
    }

    @Test func slowCompilationNoticeNamesTheArchitectureAndTheCache() {
        #expect(SlowCompilationNotice.message(architecture: "sm_90", cacheDirectory: "/home/me/.cache/fmha")
                == "fmha: compiling CUDA kernels for sm_90 (first use; cached in /home/me/.cache/fmha)")
        #expect(SlowCompilationNotice.message(architecture: "sm_80", cacheDirectory: nil)
                == "fmha: compiling CUDA kernels for sm_80 (first use; disk cache off)")
    }
}
