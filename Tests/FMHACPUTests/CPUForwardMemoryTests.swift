#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Dispatch
import FMHACore
@testable import FMHACPU
import Synchronization
import Testing

/// The largest resident size a sampling thread has seen.
final class RSSSampler: Sendable {
    let running = Atomic<Bool>(true)
    let peak = Atomic<Int>(0)
}

extension Atomic where Value == Int {
    /// Raises the value to `candidate` if that is larger.
    func max(_ candidate: Int) {
        var current = load(ordering: .relaxed)
        while candidate > current {
            let (exchanged, original) = compareExchange(expected: current, desired: candidate, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}

/// The tiled forward's extra memory is a few tiles per thread plus its output: a long sequence
/// (Mq = Mkv = 32768) must not materialize anything of size Mq × Mkv.
@Suite(.serialized) struct CPUForwardMemoryTests {
    static let length = 32768, headDimension = 64, window = 64
    /// Peak extra resident memory allowed for the call (the float32 output alone is 8 MiB).
    static let limit = 64 << 20

    /// A `Name:  value kB` field of /proc/self/status, in bytes.
    static func statusField(_ name: String) -> Int? {
        guard let file = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(file) }
        var bytes = [UInt8](repeating: 0, count: 1 << 16)
        let count = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        let text = String(decoding: bytes[0..<count], as: UTF8.self)
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let fields = line.dropFirst(name.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let value = fields.first.flatMap({ Int($0) }) else { return nil }
            return fields.count > 1 && fields[1] == "kB" ? value * 1024 : value
        }
        return nil
    }

    /// Peak resident memory `body` adds over the resident size before it, sampled every half
    /// millisecond by another thread (VmHWM cannot be trusted after a reset: the kernel updates
    /// it lazily).
    static func peakExtra<Result>(_ body: () throws -> Result) throws -> (extra: Int, result: Result) {
        let before = try #require(statusField("VmRSS"))
        let sampler = RSSSampler()
        let finished = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            while sampler.running.load(ordering: .relaxed) {
                sampler.peak.max(statusField("VmRSS") ?? 0)
                usleep(500)
            }
            finished.signal()
        }
        let result = try body()
        sampler.peak.max(statusField("VmRSS") ?? 0)
        sampler.running.store(false, ordering: .relaxed)
        finished.wait()
        return (sampler.peak.load(ordering: .relaxed) - before, result)
    }

    @Test func peakRSSSamplingSeesATouchedBuffer() throws {
        // 32 MiB touched and held for 50 ms must show up.
        let (extra, _) = try Self.peakExtra { () -> Int in
            let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 32 << 20)
            defer { buffer.deallocate() }
            memset(buffer, 1, 32 << 20)
            usleep(50_000)
            return Int(buffer[12345])
        }
        #expect(extra >= 24 << 20, "extra \(extra >> 20) MiB")
    }

    @Test(arguments: CPUForwardTests.kernels)
    func longWindowedSequenceUsesLittleMemory(kernels: CPUKernels) throws {
        let shape = [1, Self.length, 1, Self.headDimension]
        let query = try Tensor.randn(shape, seed: 1), key = try Tensor.randn(shape, seed: 2)
        let value = try Tensor.randn(shape, seed: 3)
        let mask = try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: Self.window)
        let inputs = Inputs(query: query, key: key, value: value, bias: mask)
        let op = CPUForward(kernels: kernels)
        #expect(op.notSupportedReasons(inputs).isEmpty)
        // Other suites of the process may allocate at the same time: retry before failing.
        var measured = try Self.peakExtra { try op.forward(inputs, dropout: nil) }
        for _ in 0..<2 where measured.extra >= Self.limit {
            measured = try Self.peakExtra { try op.forward(inputs, dropout: nil) }
        }
        #expect(measured.extra >= 0 && measured.extra < Self.limit, "\(op.name): peak extra RSS \(measured.extra >> 20) MiB")
        let result = measured.result
        #expect(result.output.shape == shape && result.lse.shape == [1, 1, Self.length])

        // Rows against the reference on slices: with Mq = Mkv the bottom-right window is top-left,
        // query i seeing keys i − 63 ... i, so queries s..<e need keys max(0, s − 63)..<e, and the
        // same bottom-right mask on the slice aligns them (its shift is s − max(0, s − 63)).
        let output = try result.output.toDoubleArray(), lse = try result.lse.toDoubleArray()
        #expect(!output.contains { !$0.isFinite } && !lse.contains { !$0.isFinite })
        for rows in [0..<40, 16_370..<16_420, Self.length - 33..<Self.length] {
            let keys = max(0, rows.lowerBound - (Self.window - 1))..<rows.upperBound
            let slice = Inputs(query: try query.slice(dimension: 1, range: rows), key: try key.slice(dimension: 1, range: keys),
                               value: try value.slice(dimension: 1, range: keys), bias: mask)
            let reference = try ReferenceForward().forward(slice, dropout: nil)
            let expected = try reference.output.toDoubleArray()
            let actual = Array(output[rows.lowerBound * Self.headDimension..<rows.upperBound * Self.headDimension])
            #expect(Tolerance.forward(.float32).worstRatio(actual, expected) <= 1, "\(op.name): rows \(rows)")
            #expect(Tolerance(absolute: 2e-4, relative: 1e-5).worstRatio(Array(lse[rows]), try reference.lse.toDoubleArray()) <= 1,
                    "\(op.name): LSE of rows \(rows)")
        }
    }
}

