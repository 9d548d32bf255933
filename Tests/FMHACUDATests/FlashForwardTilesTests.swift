@testable import FMHACUDA
import Testing

/// The work list of `cuda-flash`: tiles of 64 queries that never straddle two mask blocks.
struct FlashForwardTilesTests {
    @Test func tilesCoverEveryQueryOnceWithinItsBlock() {
        // One block of 130 queries: three tiles.
        #expect(CUDAFlashForward.tiles(queryStarts: [0, 130], tileQueries: 64) == [0, 0, 0, 64, 0, 128])
        // Empty blocks first, in the middle and last get no tile; a block of 65 gets two.
        #expect(CUDAFlashForward.tiles(queryStarts: [0, 0, 65, 65, 66, 66], tileQueries: 64) == [1, 0, 1, 64, 3, 65])
        #expect(CUDAFlashForward.tiles(queryStarts: [0, 0], tileQueries: 128).isEmpty)
    }
}
