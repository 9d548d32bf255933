#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Testing
@testable import CUDADriver

/// Whole-buffer writes: every byte arrives in order through a pipe; an invalid descriptor fails.
struct DescriptorWriterTests {
    @Test func writesEveryByteAndReportsFailure() throws {
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        // 40,000 bytes: more than one write may be needed, and less than a pipe's buffer (64 KiB).
        let bytes = (0..<40_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(DescriptorWriter.writeAll(bytes, to: ends[1]))
        #expect(DescriptorWriter.writeAll([], to: ends[1]))
        close(ends[1])
        var received = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(ends[0], $0.baseAddress!, $0.count) }
            if count <= 0 { break }
            received += chunk[0..<count]
        }
        #expect(received == bytes)
        // (Not the closed end: other tests running at once may have been given its number again.)
        #expect(!DescriptorWriter.writeAll([1, 2, 3], to: -1))
    }
}
