import FMHACore
import Testing
@testable import FMHACUDA

/// The device encoding of masks: the layout the CUDA kernels read (reference_forward.cu).
@Suite struct DeviceMaskTests {
    @Test func noMaskSeesEveryKey() {
        #expect(DeviceMask.encode(nil) == [0, -1, -1, 0, 0, 0, 0])
    }

    @Test func denseMasksCarryTheirBand() throws {
        #expect(DeviceMask.encode(LowerTriangularMask().maskLayout) == [0, -1, 0, 0, 0, 0, 0])
        #expect(DeviceMask.encode(try LocalAttentionFromBottomRightMask(windowLeft: 2, windowRight: 3).maskLayout)
                == [1, 2, 3, 0, 0, 0, 0])
        #expect(DeviceMask.encode(try LowerTriangularFromBottomRightMask().makeLocalAttention(windowSize: 4).maskLayout)
                == [1, 3, 0, 0, 0, 0, 0])
    }

    @Test func blocksAndPagesFollowTheHeader() throws {
        let padded = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 0, 3], kvPadding: 8, kvSeqlen: [5, 1, 7])
        #expect(DeviceMask.encode(padded.maskLayout) == [1, -1, 0, 3, 0, 0] + [0, 2, 2, 5] + [0, 8, 16] + [5, 1, 7])
        let paged = try PagedBlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [1, 2], kvSeqstarts: [1, 0], kvSeqlen: [3, 4],
                                                                   blockTables: [[4, 2], [0, 1]], pageSize: 4)
        #expect(DeviceMask.encode(paged.maskLayout) == [0, -1, -1, 2, 4, 2] + [0, 1, 3] + [1, 0] + [3, 4] + [4, 2, 0, 1])
    }
}
