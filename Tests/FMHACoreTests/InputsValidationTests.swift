import Testing
import FMHATestSupport
@testable import FMHACore

/// `Inputs.validate()`: every rule throws an `FMHAError` whose message names the argument, what
/// was expected and what was given; valid inputs of every layout pass and report their sizes.
@Suite struct InputsValidationTests {
    func tensor(_ shape: [Int], dtype: DType = .float32) throws -> Tensor {
        try Tensor.randn(shape, dtype: dtype, seed: UInt64(shape.reduce(0, +)))
    }

    /// BMHK inputs `[B, M, H, K]` with `Mkv` keys and value head dim `valueDimension`.
    func bmhk(batch: Int = 2, queries: Int = 5, keys: Int = 7, heads: Int = 3, headDimension: Int = 8,
              valueDimension: Int = 4, dtype: DType = .float32) throws -> Inputs {
        Inputs(query: try tensor([batch, queries, heads, headDimension], dtype: dtype),
               key: try tensor([batch, keys, heads, headDimension], dtype: dtype),
               value: try tensor([batch, keys, heads, valueDimension], dtype: dtype))
    }

    /// Validation fails with a message containing every one of `fragments`.
    func expectFailure(_ inputs: Inputs, mentioning fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
        let error = #expect(throws: FMHAError.self, sourceLocation: sourceLocation) { try inputs.validate() }
        #expect(error?.kind == .invalidArgument, sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error?.message.contains(fragment) == true, "\(error?.message ?? "no error") lacks \(fragment)",
                    sourceLocation: sourceLocation)
        }
    }

    @Test func validLayoutsReportTheirSizes() throws {
        let dimensions = try bmhk().validate().dimensions
        #expect(dimensions == AttentionDimensions(layout: .bmhk, batch: 2, queryLength: 5, keyLength: 7, groups: 1,
                                                  heads: 3, headDimension: 8, valueHeadDimension: 4))
        #expect(dimensions.outputShape == [2, 5, 3, 4])
        #expect(dimensions.biasShape == [2, 3, 5, 7])
        let bmk = try Inputs(query: tensor([2, 5, 8]), key: tensor([2, 7, 8]), value: tensor([2, 7, 6])).validate().dimensions
        #expect(bmk.layout == .bmk && bmk.heads == 1 && bmk.biasShape == [2, 5, 7] && bmk.outputShape == [2, 5, 6])
        // Grouped-query attention: 2 groups of 4 query heads over 2 K/V heads, K/V expanded with stride 0.
        let keys = try tensor([1, 9, 2, 1, 16]).expanded(to: [1, 9, 2, 4, 16])
        let values = try tensor([1, 9, 2, 1, 16]).expanded(to: [1, 9, 2, 4, 16])
        let gqa = try Inputs(query: tensor([1, 3, 2, 4, 16]), key: keys, value: values).validate().dimensions
        #expect(gqa.layout == .bmghk && gqa.groups == 2 && gqa.heads == 4)
        #expect(gqa.biasShape == [1, 2, 4, 3, 9])
    }

    @Test func emptyTensorsAreValid() throws {
        for (batch, queries, keys) in [(0, 5, 7), (2, 0, 7), (2, 5, 0)] {
            #expect(throws: Never.self) { try bmhk(batch: batch, queries: queries, keys: keys).validate() }
        }
    }

    @Test func defaultScaleUsesTheQueryHeadDimension() throws {
        var inputs = try bmhk(headDimension: 16, valueDimension: 4)
        #expect(try inputs.validate().scale == 0.25)
        inputs.scale = 3
        #expect(try inputs.validate().scale == 3)
    }

    @Test func theProblemResolvesDropoutAndOutputDTypeOnce() throws {
        var inputs = try bmhk()
        #expect(try inputs.validate().dropout == nil)
        inputs.p = 0.25
        let seed = try #require(inputs.dropout?.seed)
        #expect(try inputs.validate().dropout == DropoutState(p: 0.25, seed: seed))
        inputs.p = 0.5
        #expect(inputs.dropout == DropoutState(p: 0.5, seed: seed), "a new p keeps the seed")
        inputs.p = 0
        #expect(inputs.dropout == nil && inputs.p == 0)
        #expect(Inputs(query: inputs.query, key: inputs.key, value: inputs.value, p: 0.1, seed: 9).dropout
                == DropoutState(p: 0.1, seed: 9))
        #expect(try inputs.validate().outputDType == .float32)
        inputs.isPartial = true
        inputs.query = try inputs.query.converted(to: .float64)
        inputs.key = try inputs.key.converted(to: .float64)
        inputs.value = try inputs.value.converted(to: .float64)
        #expect(try inputs.validate().outputDType == .float64)
        inputs.outputDType = .float16
        #expect(try inputs.validate().outputDType == .float16)
    }

    @Test func rejectsWrongRanks() throws {
        let good = try bmhk()
        expectFailure(Inputs(query: try tensor([2, 8]), key: try tensor([2, 8]), value: try tensor([2, 8])),
                      mentioning: "query/key/value", "BMK (3), BMHK (4) or BMGHK (5)", "[2, 8]")
        expectFailure(Inputs(query: good.query, key: try tensor([2, 7, 8]), value: good.value),
                      mentioning: "key.shape [2, 7, 8]")
        expectFailure(Inputs(query: try tensor([1, 2, 1, 1, 1, 4]), key: try tensor([1, 2, 1, 1, 1, 4]),
                             value: try tensor([1, 2, 1, 1, 1, 4])), mentioning: "[1, 2, 1, 1, 1, 4]")
    }

    @Test func rejectsMixedDTypes() throws {
        var inputs = try bmhk()
        inputs.key = try inputs.key.converted(to: .float16)
        expectFailure(inputs, mentioning: "one floating-point dtype", "key float16")
    }

    @Test func rejectsNonUnitLastStride() throws {
        var inputs = try bmhk(headDimension: 8)
        // [B, M, H, K] viewed with K and H swapped, then made contiguous in that order and swapped
        // back: logical shape unchanged, last stride 3.
        inputs.query = try inputs.query.transposed(2, 3).contiguous().transposed(2, 3)
        expectFailure(inputs, mentioning: "query", "unit stride", "[120, 24, 1, 3]")
    }

    @Test(arguments: [
        ("batch", [3, 7, 3, 8], [3, 7, 3, 4]),
        ("heads", [2, 7, 2, 8], [2, 7, 2, 4]),
        ("head dimension", [2, 7, 3, 6], [2, 7, 3, 4]),
        ("value length", [2, 7, 3, 8], [2, 6, 3, 4]),
    ])
    func rejectsIncompatibleShapes(_ label: String, keyShape: [Int], valueShape: [Int]) throws {
        let inputs = Inputs(query: try tensor([2, 5, 3, 8]), key: try tensor(keyShape), value: try tensor(valueShape))
        expectFailure(inputs, mentioning: "no broadcasting", "key.shape \(keyShape)", "value.shape \(valueShape)")
    }

    @Test func rejectsAZeroHeadDimension() throws {
        expectFailure(try bmhk(headDimension: 0), mentioning: "head dimension K ≥ 1")
    }

    @Test(arguments: [-0.1, 1.0, 1.5, Double.nan, Double.infinity])
    func rejectsDropoutOutsideTheUnitInterval(_ p: Double) throws {
        var inputs = try bmhk()
        inputs.p = p
        expectFailure(inputs, mentioning: "p:", "[0, 1)", "\(p)")
    }

    @Test func acceptsDropoutInTheUnitInterval() throws {
        var inputs = try bmhk()
        inputs.p = 0.999
        #expect(throws: Never.self) { try inputs.validate() }
    }

    @Test func rejectsNonFiniteScale() throws {
        var inputs = try bmhk()
        inputs.scale = .nan
        expectFailure(inputs, mentioning: "scale", "finite", "nan")
    }

    @Test func bmkAcceptsOnlyNoBiasTensorOrLowerTriangular() throws {
        var inputs = Inputs(query: try tensor([2, 5, 8]), key: try tensor([2, 7, 8]), value: try tensor([2, 7, 6]))
        inputs.bias = LowerTriangularMask()
        #expect(throws: Never.self) { try inputs.validate() }
        inputs.bias = try tensor([2, 5, 7])
        #expect(throws: Never.self) { try inputs.validate() }
        inputs.bias = LowerTriangularFromBottomRightMask()
        expectFailure(inputs, mentioning: "bias", "BMK", "LowerTriangularFromBottomRightMask")
        inputs.bias = LowerTriangularMask().addBias(try tensor([2, 5, 7]))
        expectFailure(inputs, mentioning: "LowerTriangularMaskWithTensorBias")
    }

    @Test func tensorBiasMustHaveTheScoresShape() throws {
        var inputs = try bmhk()
        inputs.bias = try tensor([2, 3, 5, 7])
        #expect(throws: Never.self) { try inputs.validate() }
        // Broadcasting is the caller's job, with stride 0.
        inputs.bias = try tensor([1, 1, 5, 7]).expanded(to: [2, 3, 5, 7])
        #expect(throws: Never.self) { try inputs.validate() }
        inputs.bias = try tensor([1, 1, 5, 7])
        expectFailure(inputs, mentioning: "bias", "[2, 3, 5, 7]", "[1, 1, 5, 7]")
        inputs.bias = LowerTriangularMask().addBias(try tensor([2, 3, 7, 5]))
        expectFailure(inputs, mentioning: "bias", "[2, 3, 5, 7]", "[2, 3, 7, 5]")
    }

    @Test func tensorBiasMustMatchTheQueryDType() throws {
        var inputs = try bmhk(dtype: .bfloat16)
        inputs.bias = try tensor([2, 3, 5, 7], dtype: .float32)
        expectFailure(inputs, mentioning: "bias", "bfloat16", "float32")
    }

    @Test func varlenBiasNeedsBatchOne() throws {
        var inputs = try bmhk(batch: 2, queries: 5, keys: 5)
        inputs.bias = try BlockDiagonalMask.fromSeqlens(qSeqlen: [2, 3])
        expectFailure(inputs, mentioning: "batch size 1", "BlockDiagonalMask", "[2, 5, 3, 8]")
    }

    @Test func varlenBiasNeedsItsQueryAndKeyTotals() throws {
        var inputs = try bmhk(batch: 1, queries: 5, keys: 9)
        inputs.bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [2, 3], kvSeqlen: [4, 5])
        #expect(throws: Never.self) { try inputs.validate() }
        inputs.bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [2, 4], kvSeqlen: [4, 5])
        expectFailure(inputs, mentioning: "BlockDiagonalCausalMask", "6 queries", "got 5")
        inputs.bias = try BlockDiagonalCausalMask.fromSeqlens(qSeqlen: [2, 3], kvSeqlen: [4, 4])
        expectFailure(inputs, mentioning: "8 keys", "got 9")
        // Padded keys: the key dimension is sequences × padding.
        inputs.bias = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [2, 3], kvPadding: 4,
                                                                                  kvSeqlen: [3, 4])
        expectFailure(inputs, mentioning: "8 keys", "got 9")
        // Gappy keys: the key dimension is the final seqstart.
        inputs.bias = try BlockDiagonalGappyKeysMask.fromSeqlens(qSeqlen: [2, 3], kvSeqstarts: [0, 5, 9],
                                                                 kvSeqlen: [3, 4])
        #expect(throws: Never.self) { try inputs.validate() }
    }

    @Test func pagedBiasNeedsEveryPageItNames() throws {
        var inputs = try bmhk(batch: 1, queries: 3, keys: 12)
        // Pages of 4 keys; the tables name page 2 at most, so K/V need ≥ 12 rows.
        inputs.bias = try PagedBlockDiagonalPaddedKeysMask.fromSeqlens(qSeqlen: [1, 2], kvSeqlen: [5, 3],
                                                                       blockTables: [[2, 0], [1, 0]], pageSize: 4)
        #expect(throws: Never.self) { try inputs.validate() }
        inputs.key = try tensor([1, 16, 3, 8])
        inputs.value = try tensor([1, 16, 3, 4])
        #expect(throws: Never.self) { try inputs.validate() }
        inputs.key = try tensor([1, 11, 3, 8])
        inputs.value = try tensor([1, 11, 3, 4])
        expectFailure(inputs, mentioning: "at least 12 keys", "got 11")
    }

}
