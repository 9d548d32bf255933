import FMHATestSupport
import FMHACUDA
import Testing

/// Reading ptxas' `-v` report.
@Suite struct KernelResourcesTests {
    @Test func parsesTheClassicFormat() {
        let log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function 'fmha_forward' for 'sm_80'
            ptxas info    : Function properties for fmha_forward
                0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 32 registers, 0 bytes smem, 380 bytes cmem[0]
            """
        var expected = KernelResources(function: "fmha_forward")
        expected.registers = 32
        #expect(KernelResources.parse(ptxasLog: log) == [expected])
    }

    @Test func parsesNVRTC13WithSharedMemorySpillsAndTwoKernels() {
        let log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function 'first' for 'sm_90'
            ptxas info    : Function properties for first
            ptxas         .     16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
            ptxas info    : Used 255 registers, used 1 barriers, 49152 bytes smem
            ptxas info    : Compile time = 15.705 ms
            ptxas info    : Compiling entry function 'second' for 'sm_90'
            ptxas info    : Function properties for second
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 24 registers, used 0 barriers
            """
        let resources = KernelResources.parse(ptxasLog: log)
        #expect(resources.map(\.function) == ["first", "second"])
        #expect(resources.map(\.registers) == [255, 24])
        #expect(resources.map(\.sharedMemoryBytes) == [49152, 0])
        #expect(resources.map(\.stackFrameBytes) == [16, 0])
        #expect(resources.map(\.spillStoreBytes) == [12, 0])
        #expect(resources.map(\.spillLoadBytes) == [8, 0])
        #expect(resources.map(\.spills) == [true, false])
        // The larger of stores (12) and loads (8) counts.
        #expect(resources.map { $0.spills(moreThan: 11) } == [true, false] && !resources[0].spills(moreThan: 12))
    }

    @Test func anEmptyOrForeignLogHasNoFunctions() {
        #expect(KernelResources.parse(ptxasLog: "").isEmpty)
        #expect(KernelResources.parse(ptxasLog: "ptxas info    : 0 bytes gmem\nwarning: something").isEmpty)
    }
}
