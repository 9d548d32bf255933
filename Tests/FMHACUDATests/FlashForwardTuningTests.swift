@testable import FMHACUDA
import Testing

/// The tuning table's choices, pinned: the tile shape of every compiled width, for Ampere/Ada
/// (compute capability 8.x) and Hopper (9.x), with and without the extras (tensor bias or
/// dropout). The names were taken from the table as it stood when it was branching code; a
/// shape's name spells all of its fields (warps, tiles per warp, keys, Q in shared memory, blocks
/// per SM, stages), so equal names are equal shapes.
@Suite struct FlashForwardTuningTests {
    /// Per (major, extras): the shape names for `CUDAFlashForward.widths` in order
    /// (16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256).
    static let pinned: [(major: Int, extras: Bool, names: [String])] = [
        (8, false, Array(repeating: "w4x2n64qb2", count: 4) + Array(repeating: "w8x1n64qb1", count: 4)
            + Array(repeating: "w8x1n32qb1", count: 3) + ["w8x1n16qb1"]),
        (8, true, Array(repeating: "w8x1n64qb1", count: 8) + Array(repeating: "w8x1n32qb1", count: 3) + ["w8x1n16qb1"]),
        (9, false, Array(repeating: "w4x2n128qb2", count: 4) + Array(repeating: "w4x2n64qb2", count: 4)
            + Array(repeating: "w8x1n64qb1s2", count: 4)),
        (9, true, Array(repeating: "w8x1n64qb1", count: 8) + Array(repeating: "w8x1n32qb1", count: 4)),
    ]

    @Test func tableChoosesTheShapesItChoseAsCode() {
        #expect(CUDAFlashForward.widths == [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256])
        for (major, extras, names) in Self.pinned {
            let chosen = CUDAFlashForward.widths.map { CUDAFlashForward.tileShape(width: $0, major: major, extras: extras).name }
            #expect(chosen == names, "sm_\(major)x, extras \(extras)")
        }
    }

    @Test func otherMajorsFollowTheirFamily() {
        // An architecture without a major (0) takes the table below Hopper; Blackwell's take Hopper's.
        for (major, family) in [(0, 8), (10, 9), (12, 9)] {
            for extras in [false, true] {
                for width in CUDAFlashForward.widths {
                    #expect(CUDAFlashForward.tileShape(width: width, major: major, extras: extras)
                            == CUDAFlashForward.tileShape(width: width, major: family, extras: extras),
                            "sm_\(major)x width \(width) extras \(extras)")
                }
            }
        }
    }
}

/// The tuning table as data: one row for every (major, width, build), each with its measurement.
@Suite struct FlashForwardTuningTableTests {
    @Test func everyCaseHasExactlyOneRow() {
        for major in 0...12 {
            for width in CUDAFlashForward.widths {
                for extras in [false, true] {
                    let rows = CUDAFlashForward.tuningTable.filter { $0.matches(width: width, major: major, extras: extras) }
                    #expect(rows.count == 1, "sm_\(major)x width \(width) extras \(extras): \(rows.map(\.tileShape.name))")
                }
            }
        }
    }

    @Test func everyRowIsUsedAndSaysWhatChoseIt() {
        let widths = CUDAFlashForward.widths
        for row in CUDAFlashForward.tuningTable {
            #expect(widths.contains(where: row.widths.contains), "\(row.tileShape.name): no width in \(row.widths)")
            #expect(!row.measured.isEmpty, "\(row.tileShape.name) for \(row.widths)")
        }
    }
}
