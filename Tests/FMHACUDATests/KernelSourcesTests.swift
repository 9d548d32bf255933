import CUDADriver
import FMHATestSupport
@testable import FMHACUDA
import Testing

/// `KernelSources.swift` is generated from `Kernels/*.cu` and committed: it must match them.
/// (Skipped only where the test bundle runs away from any checkout, as on the GPU machine.)
@Suite(.enabled(if: kernelsFolder != nil, "Sources/FMHACUDA/Kernels is not here"))
struct KernelSourcesTests {
    static let command = "python3 scripts/generate_kernel_sources.py"

    @Test func generatedSourcesMatchTheKernelFiles() throws {
        let folder = try #require(kernelsFolder)
        let files = LibrarySearch.directoryEntries(folder).filter { $0.hasSuffix(".cu") }
        try #require(!files.isEmpty, "no .cu files found in \(folder)")
        #expect(files == KernelSources.byFileName.keys.sorted(),
                "Sources/FMHACUDA/KernelSources.swift is stale: its files differ from Kernels/*.cu; run `\(Self.command)`")
        for file in files {
            let bytes = try #require(FileSystem.read(path: folder + "/" + file), "cannot read \(folder)/\(file)")
            // Compared without #expect's dump of both sources, which would bury the message.
            if KernelSources.byFileName[file] != String(decoding: bytes, as: UTF8.self) {
                Issue.record("Sources/FMHACUDA/KernelSources.swift is stale for Kernels/\(file): run `\(Self.command)`")
            }
        }
    }
}
