import FMHATestSupport
@testable import FMHACUDA
import Testing

/// The tile table: every width has a shape whose shared memory (dynamic tiles and static row
/// ranges) fits the smallest per-block limit of its architecture family (sm_86/sm_89: 99 KiB;
/// sm_90: 227 KiB), whose warps hold one or two 16-row tiles, whose keys are a multiple of 16 and
/// whose two-stage shapes meet the kernel's conditions; every K up to 256 by 8 has a width, and
/// architecture names give their major version.
struct FlashTileTableTests {
    @Test func everyWidthFitsItsArchitecture() {
        for (major, limit) in [(8, 99 * 1024), (9, 227 * 1024)] {
            for width in CUDAFlashForward.widths {
                for extras in [false, true] {
                    let shape = CUDAFlashForward.tileShape(width: width, major: major, extras: extras)
                    #expect(shape.totalSharedMemoryBytes(width: width) <= limit, "sm_\(major)x width \(width) extras \(extras)")
                    #expect(shape.keys % 16 == 0 && [1, 2].contains(shape.warpTiles))
                    // (Two stages only with Q in shared memory and without the extras, as the kernel requires.)
                    #expect(shape.stages == 1 || (shape.stages == 2 && shape.queryInShared && !extras))
                }
            }
        }
        // Hopper's shape above K = 128: two buffers per tensor and nine mbarriers in its shared memory.
        let twoStages = CUDAFlashForward.tileShape(width: 256, major: 9, extras: false)
        #expect(twoStages.name == "w8x1n64qb1s2")
        #expect(twoStages.sharedMemoryBytes(width: 256) == (2 * 2 * 64 + 128) * 264 * 2)
        #expect(twoStages.totalSharedMemoryBytes(width: 256) == (2 * 2 * 64 + 128) * 264 * 2 + 8 * 128 + 56 + 72)
        // A tuning shape too large for the device is refused with the sizes, not launched.
        let wide = CUDAFlashForward.TileShape(warps: 4, warpTiles: 2, keys: 128, queryInShared: true, minimumBlocks: 2)
        #expect(wide.sharedMemoryProblem(width: 64, limit: 99 * 1024) == nil)
        #expect(wide.sharedMemoryProblem(width: 256, limit: 99 * 1024)
                == "tile shape w4x2n128qb2 at width 256 needs 203832 bytes of shared memory per block, this device gives at most 101376")
        // Every K up to 256 that is a multiple of 8 has a width that holds it.
        for headDimension in stride(from: 8, through: 256, by: 8) {
            #expect(CUDAFlashForward.widths.contains { $0 >= headDimension && $0 % 16 == 0 })
        }
        // sm_<major><minor>[a] → major, two-digit majors included.
        #expect(["sm_80", "sm_90a", "sm_100", "sm_120a", "sm_x"].map {
            KernelDescriptor(sourceName: "flash_forward", architecture: $0).architectureMajor
        } == [8, 9, 10, 12, nil])
    }
}
