import Testing
import FMHATestSupport
@testable import FMHACore

/// Random biases of every type (`PropertyCase`) against the independent per-element mask oracle
/// of the §3.3 rules (`ReferenceMask`), plus the paged ↔ unpaged round trip through the block tables.
@Suite struct BiasPropertyTests {
    /// The row-major `[rows, columns]` planes of `bias` materialized as `leading + [rows, columns]`.
    static func materializedPlanes(_ bias: some AttentionBias, leading: [Int], rows: Int, columns: Int) throws -> [[Float]] {
        let shape = leading + [rows, columns]
        let tensor = try bias.materialize(shape: shape)
        #expect(tensor.shape == shape)
        let values = try tensor.toArray(), planeSize = rows * columns
        return (0..<leading.reduce(1, *)).map { Array(values[$0 * planeSize..<($0 + 1) * planeSize]) }
    }

    static func render(_ plane: [Float], columns: Int) -> String {
        guard columns > 0 else { return "(no columns)" }
        return stride(from: 0, to: plane.count, by: columns)
            .map { String(plane[$0..<$0 + columns].map(MaskRows.symbol)) }.joined(separator: "\n")
    }

    @Test func kindsCoverEveryBiasType() {
        let covered = Set(BiasKind.allCases.map { String(describing: $0.biasType) })
        #expect(covered == Set(attentionBiasTypes.map { String(describing: $0) }))
        #expect(BiasKind.allCases.count == attentionBiasTypes.count)
    }

    @Test(arguments: BiasKind.allCases)
    func materializeMatchesTheFormula(_ kind: BiasKind) throws {
        for testCase in try PropertyCase.cases(kind) {
            #expect(type(of: testCase.bias) == kind.biasType, "\(testCase.summary)")
            #expect(testCase.bias.isVariableLength == (testCase.reference.queryLengths != nil), "\(testCase.summary)")
            let expected = testCase.reference.plane(rows: testCase.rows, columns: testCase.columns)
            let planes = try Self.materializedPlanes(testCase.bias, leading: testCase.leading, rows: testCase.rows,
                                                     columns: testCase.columns)
            let mismatch = planes.firstIndex { $0 != expected }
            #expect(mismatch == nil, """
                \(testCase.summary), leading \(testCase.leading)
                expected:
                \(Self.render(expected, columns: testCase.columns))
                got:
                \(Self.render(planes[mismatch ?? 0], columns: testCase.columns))
                """)
            for equivalent in testCase.equivalents {
                let plane = try Self.materializedPlanes(equivalent, leading: [], rows: testCase.rows, columns: testCase.columns)
                let isEqual = plane == [expected]
                #expect(isEqual, "\(type(of: equivalent)) differs: \(testCase.summary)")
            }
        }
    }

    @Test(arguments: BiasKind.allCases.filter(\.isPaged))
    func pagedMaskGathersBackToTheUnpagedMask(_ kind: BiasKind) throws {
        for testCase in try PropertyCase.cases(kind) {
            let roundTrip = try #require(testCase.roundTrip)
            let pagedPlane = try Self.materializedPlanes(testCase.bias, leading: [], rows: testCase.rows,
                                                         columns: testCase.columns)[0]
            let unpagedPlane = try Self.materializedPlanes(roundTrip.unpaged, leading: [], rows: testCase.rows,
                                                           columns: roundTrip.unpagedColumns)[0]
            let gathered = roundTrip.gather(pagedPlane: pagedPlane, physicalColumns: testCase.columns)
            let isRoundTrip = gathered == unpagedPlane
            #expect(isRoundTrip, """
                \(testCase.summary)
                unpaged:
                \(Self.render(unpagedPlane, columns: roundTrip.unpagedColumns))
                gathered from the pages:
                \(Self.render(gathered, columns: roundTrip.unpagedColumns))
                """)
        }
    }
}
