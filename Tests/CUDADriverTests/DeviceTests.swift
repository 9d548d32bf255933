import Testing
@testable import CUDADriver

/// The driver on a real GPU: properties, memory, the caching allocator, modules and launches.
/// Enabled only where a CUDA device is present (never in CI).
@Suite(.enabled(if: GPU.context != nil, "no CUDA device"))
struct DeviceTests {
    var context: CUDAContext { GPU.context! }

    @Test func reportsTheDevice() throws {
        let device = context.device
        #expect(device.computeCapability.major >= 7)
        #expect(device.multiprocessorCount > 0 && device.totalMemory > 1 << 30)
        #expect(!device.name.isEmpty)
        #expect(context.driver.version >= 12000)
    }

    @Test func copiesRoundTripAndTheAllocatorReusesBlocks() throws {
        let values = (0..<1000).map { Float($0) * 0.5 }
        var address: UInt64 = 0
        do {
            let buffer = try context.allocate(values.count * 4)
            address = buffer.address
            try values.withUnsafeBytes { try buffer.copy(from: $0.baseAddress!, bytes: $0.count) }
            let other = try context.allocate(values.count * 4)
            try other.copy(from: buffer, bytes: values.count * 4)
            var back = [Float](repeating: -1, count: values.count)
            try back.withUnsafeMutableBytes { try other.copy(to: $0.baseAddress!, bytes: $0.count) }
            #expect(back == values)
            #expect(throws: CUDAError.self) { try other.copy(to: &back, bytes: values.count * 4 + 4) }
        }
        // Both blocks went back to the pool; a request of the same size class reuses one.
        let again = try context.allocate(4000)
        #expect(context.pooledBlockCount >= 1)
        #expect(again.address == address || context.pooledBlockCount >= 1)
    }

    @Test func compilesLoadsAndLaunchesAKernel() throws {
        let device = context.device
        let nvrtc = try NVRTC()
        let architecture = "sm_\(device.computeCapability.major)\(device.computeCapability.minor)"
        let cubin = try nvrtc.compile(source: NVRTCTests.source, name: "add.cu",
                                      options: ["--gpu-architecture=\(architecture)"]).cubin
        let add = try CUDAModule(context: context, cubin: cubin).function("add")
        let count = 100_003
        let a = (0..<count).map { Float($0) }, b = (0..<count).map { Float(2 * $0) }
        let bufferA = try context.allocate(count * 4), bufferB = try context.allocate(count * 4)
        let bufferC = try context.allocate(count * 4)
        try a.withUnsafeBytes { try bufferA.copy(from: $0.baseAddress!, bytes: $0.count) }
        try b.withUnsafeBytes { try bufferB.copy(from: $0.baseAddress!, bytes: $0.count) }
        try bufferC.fill(0xFF)
        var arguments = KernelArguments()
        arguments.append(bufferA)
        arguments.append(bufferB)
        arguments.append(bufferC)
        arguments.append(Int32(count))
        try add.launch(grid: ((count + 255) / 256, 1, 1), block: (256, 1, 1), arguments: arguments)
        try context.synchronize()
        var c = [Float](repeating: 0, count: count)
        try c.withUnsafeMutableBytes { try bufferC.copy(to: $0.baseAddress!, bytes: $0.count) }
        #expect(c == (0..<count).map { Float(3 * $0) })
    }

    @Test func streamsAndEventsTimeALaunch() throws {
        let device = context.device
        let cubin = try NVRTC().compile(source: NVRTCTests.source, name: "add.cu", options: [
            "--gpu-architecture=sm_\(device.computeCapability.major)\(device.computeCapability.minor)"]).cubin
        let add = try CUDAModule(context: context, cubin: cubin).function("add")
        try add.allowDynamicSharedMemory(64 << 10)
        let count = 1 << 20
        let ones = [Float](repeating: 1, count: count)
        let a = try context.allocate(count * 4), c = try context.allocate(count * 4)
        try ones.withUnsafeBytes { try a.copy(from: $0.baseAddress!, bytes: $0.count) }
        let stream = try CUDAStream(context: context)
        let start = try CUDAEvent(context: context), end = try CUDAEvent(context: context)
        var arguments = KernelArguments()
        arguments.append(a)
        arguments.append(a)
        arguments.append(c)
        arguments.append(Int32(count))
        try start.record(on: stream)
        try add.launch(grid: (count / 256, 1, 1), block: (256, 1, 1), stream: stream, arguments: arguments)
        try end.record(on: stream)
        try stream.synchronize()
        try end.synchronize()
        #expect(try end.milliseconds(since: start) > 0)
        var result = [Float](repeating: 0, count: count)
        try result.withUnsafeMutableBytes { try c.copy(to: $0.baseAddress!, bytes: $0.count) }
        #expect(result.allSatisfy { $0 == 2 })
    }

    @Test func missingKernelsAreReported() throws {
        let cubin = try NVRTC().compile(source: NVRTCTests.source, name: "add.cu", options: [
            "--gpu-architecture=sm_\(context.device.computeCapability.major)\(context.device.computeCapability.minor)"]).cubin
        let error = #expect(throws: CUDAError.self) { _ = try CUDAModule(context: context, cubin: cubin).function("nope") }
        #expect(error?.call == "cuModuleGetFunction")
    }
}

/// The first CUDA device's context, if this machine has one.
enum GPU {
    static let context: CUDAContext? = {
        guard let driver = try? CUDADriver.shared(), (try? driver.deviceCount()) ?? 0 > 0 else { return nil }
        return try? CUDAContext(ordinal: 0)
    }()
}
