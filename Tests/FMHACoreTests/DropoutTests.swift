import Testing
import FMHATestSupport
@testable import FMHACore

/// Philox4x32-10 against Random123's known answers, and the dropout mask built on it.
@Suite struct DropoutTests {
    @Test(arguments: [
        (SIMD4<UInt32>(0, 0, 0, 0), SIMD2<UInt32>(0, 0), SIMD4<UInt32>(0x6627_E8D5, 0xE169_C58D, 0xBC57_AC4C, 0x9B00_DBD8)),
        (SIMD4<UInt32>(repeating: .max), SIMD2<UInt32>(repeating: .max),
         SIMD4<UInt32>(0x408F_276D, 0x41C8_3B0E, 0xA20B_C7C6, 0x6D54_51FD)),
        (SIMD4<UInt32>(0x243F_6A88, 0x85A3_08D3, 0x1319_8A2E, 0x0370_7344), SIMD2<UInt32>(0xA409_3822, 0x299F_31D0),
         SIMD4<UInt32>(0xD16C_FE09, 0x94FD_CCEB, 0x5001_E420, 0x2412_6EA1)),
    ])
    func philoxMatchesKnownAnswers(counter: SIMD4<UInt32>, key: SIMD2<UInt32>, expected: SIMD4<UInt32>) {
        #expect(Philox.generate(counter: counter, key: key) == expected)
    }

    @Test func keepRateMatchesOneMinusP() {
        for p in [0.0, 0.1, 0.5, 0.9] {
            let mask = DropoutMask(DropoutState(p: p, seed: 1234, offset: 3))
            var kept = 0
            let total = 64 * 500
            for query in 0..<64 { for key in 0..<500 where mask.isKept(head: 5, query: query, key: key) { kept += 1 } }
            let rate = Double(kept) / Double(total)
            // Binomial standard deviation is at most 0.5/sqrt(total) ≈ 0.0028; allow 5 of them.
            #expect(abs(rate - (1 - p)) < 0.014, "p = \(p): kept \(rate)")
        }
    }

    @Test func maskIsAPureFunctionOfItsIndices() {
        let mask = DropoutMask(DropoutState(p: 0.3, seed: 99))
        let again = DropoutMask(DropoutState(p: 0.3, seed: 99))
        let otherSeed = DropoutMask(DropoutState(p: 0.3, seed: 100))
        let otherOffset = DropoutMask(DropoutState(p: 0.3, seed: 99, offset: 1))
        var differsBySeed = 0, differsByOffset = 0, differsByHead = 0
        for query in 0..<16 {
            for key in 0..<37 {
                #expect(mask.isKept(head: 2, query: query, key: key) == again.isKept(head: 2, query: query, key: key))
                if mask.isKept(head: 2, query: query, key: key) != otherSeed.isKept(head: 2, query: query, key: key) { differsBySeed += 1 }
                if mask.isKept(head: 2, query: query, key: key) != otherOffset.isKept(head: 2, query: query, key: key) { differsByOffset += 1 }
                if mask.isKept(head: 2, query: query, key: key) != mask.isKept(head: 3, query: query, key: key) { differsByHead += 1 }
            }
        }
        // Independent masks with keep rate 0.7 differ on about 42% of 592 elements.
        #expect(differsBySeed > 150 && differsByOffset > 150 && differsByHead > 150)
    }

    @Test func thresholdEdges() {
        #expect(DropoutMask(DropoutState(p: 0, seed: 0)).threshold == 0)
        #expect(DropoutMask(DropoutState(p: 0.5, seed: 0)).threshold == 0x8000_0000)
        #expect(DropoutMask(DropoutState(p: 0.999_999_999_99, seed: 0)).threshold == .max)
        #expect(DropoutMask(DropoutState(p: 0.5, seed: 0)).keptScale == 2)
    }
}
