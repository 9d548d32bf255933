#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import FMHATestSupport
import FMHACore
@testable import FMHACPU
import Testing

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

    /// The inputs of the long call.
    static func longInputs() throws -> Inputs {
        let shape = [1, length, 1, headDimension]
        return Inputs(query: try Tensor.randn(shape, seed: 1), key: try Tensor.randn(shape, seed: 2),
                      value: try Tensor.randn(shape, seed: 3),
                      bias: try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: window))
    }

    /// In a child process of its own (other suites allocate concurrently in this one), the peak
    /// resident size (VmHWM) during the call, less the resident size before it, stays under the
    /// limit for both kernel builds.
    @Test func longWindowedSequenceUsesLittleMemory() async {
        await #expect(processExitsWith: .success) {
            let inputs = try CPUForwardMemoryTests.longInputs()
            for kernels in CPUForwardTests.kernels {
                guard let before = CPUForwardMemoryTests.statusField("VmRSS") else { exit(3) }
                _ = try CPUForward(kernels: kernels).forward(inputs, dropout: nil)
                guard let peak = CPUForwardMemoryTests.statusField("VmHWM") else { exit(3) }
                if peak - before >= CPUForwardMemoryTests.limit { exit(1) }
            }
        }
    }

    /// The child process measures: a 32 MiB buffer shows in VmHWM − VmRSS.
    @Test func peakMeasurementSeesATouchedBuffer() async {
        await #expect(processExitsWith: .success) {
            guard let before = CPUForwardMemoryTests.statusField("VmRSS") else { exit(3) }
            let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 32 << 20)
            memset(buffer, 1, 32 << 20)
            buffer.deallocate()
            guard let peak = CPUForwardMemoryTests.statusField("VmHWM") else { exit(3) }
            exit(peak - before >= 30 << 20 ? 0 : 1)
        }
    }

    @Test(arguments: CPUForwardTests.kernels)
    func longWindowedSequenceMatchesTheReference(kernels: CPUKernels) throws {
        let inputs = try Self.longInputs(), shape = inputs.query.shape
        let query = inputs.query, key = inputs.key, value = inputs.value
        let mask = try LowerTriangularFromBottomRightLocalAttentionMask(windowSize: Self.window)
        let op = CPUForward(kernels: kernels)
        #expect(try op.notSupportedReasons(inputs).isEmpty)
        let result = try op.forward(inputs, dropout: nil)
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

