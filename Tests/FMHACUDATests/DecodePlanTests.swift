import FMHACore
@testable import FMHACUDA
import Testing

/// The decoding planner (`DecodePlan`), on the CPU: how many splits, where they fall, and the
/// work and merge lists the kernels read.
struct DecodePlanTests {
    @Test func splitsFillTheDeviceAndNoMore() {
        // Enough tiles to fill 132 SMs twice over: no split.
        #expect(DecodePlan.splits(items: 256, capacity: 132, longestKeys: 4096, minimumKeys: 512) == 1)
        // 8 tiles (B = 1, 8 K/V heads) over 131072 keys: the smallest count within 5 % of the best fill.
        let few = DecodePlan.splits(items: 8, capacity: 132, longestKeys: 131_072, minimumKeys: 512)
        #expect(few == 16, "\(few)")
        // Short keys limit the splits (each at least 512 keys).
        #expect(DecodePlan.splits(items: 1, capacity: 132, longestKeys: 1500, minimumKeys: 512) == 3)
        #expect(DecodePlan.splits(items: 1, capacity: 132, longestKeys: 512, minimumKeys: 512) == 1)
        // Never more than maximumSplits (128 fill 12.8 % of 1000 blocks; 122 is within 5 % of that).
        #expect(DecodePlan.splits(items: 1, capacity: 1000, longestKeys: 1 << 24, minimumKeys: 512) == 122)
        #expect(DecodePlan.splits(items: 0, capacity: 132, longestKeys: 4096, minimumKeys: 512) == 1)
        // Few tiles over long keys: the blocks fill at least 95 % of a wave (or of what the
        // 64 splits of 512 keys allow).
        for items in 1...40 {
            let splits = DecodePlan.splits(items: items, capacity: 132, longestKeys: 32768, minimumKeys: 512)
            #expect((1...DecodePlan.maximumSplits).contains(splits))
            #expect(items * splits >= min(132, items * 64) * 95 / 100, "\(items) items: \(splits) splits")
        }
    }

    @Test func workListCoversEveryTileKeyOnce() throws {
        // Four sequences of 3 queries (GQA 4: a tile holds 4 queries × 4 heads = 16 rows) over 0,
        // 1, 5000 and 700 keys, causal with offset.
        let mask = try BlockDiagonalCausalWithOffsetPaddedKeysMask.fromSeqlens(qSeqlen: [3, 3, 3, 3], kvPadding: 5000,
                                                                               kvSeqlen: [0, 1, 5000, 700])
        let lowering = MaskLowering(mask.maskLayout, queryLength: 12, keyLength: 20000)
        let plan = DecodePlan(lowering: lowering, heads: 4, sharedHeads: 4, batchGroups: 1, capacity: 132, roundKeys: 128)
        #expect(plan.pack == 4)
        #expect(plan.splitKeys % 128 == 0)
        let entries = stride(from: 0, to: plan.workList.count, by: DecodePlan.wordsPerEntry).map {
            Array(plan.workList[$0..<($0 + DecodePlan.wordsPerEntry)])
        }
        // Each tile's entries are consecutive, name their first entry and count, and cut its key
        // union into consecutive splits of at most splitKeys.
        let tiles = lowering.tiles(rows: 4)
        var index = 0
        for tile in tiles {
            let first = index, count = Int(entries[first][6])
            #expect(count >= 1)
            var next = tile.keys.lowerBound
            for entry in entries[first..<(first + count)] {
                #expect(entry[0] == Int64(tile.block) && entry[1] == Int64(tile.start) && entry[2] == Int64(tile.start + tile.rows))
                #expect(entry[5] == Int64(first) && entry[6] == Int64(count))
                #expect(entry[3] == Int64(next) && entry[4] - entry[3] <= Int64(plan.splitKeys))
                next = Int(entry[4])
            }
            #expect(next == max(tile.keys.upperBound, tile.keys.lowerBound))
            index += count
        }
        #expect(index == entries.count)
        // The merge list names exactly the tiles of several splits.
        let merged = stride(from: 0, to: plan.mergeList.count, by: DecodePlan.wordsPerMerge).map { Int(plan.mergeList[$0]) }
        #expect(merged == entries.indices.filter { entries[$0][5] == Int64($0) && entries[$0][6] > 1 })
        #expect(plan.mergedTiles >= 1)
    }

    @Test func packingFollowsTheSharedHeads() throws {
        let lowering = MaskLowering(nil, queryLength: 5, keyLength: 100)
        // MHA: one head per tile, 16 queries per tile.
        let mha = DecodePlan(lowering: lowering, heads: 8, sharedHeads: 1, batchGroups: 2, capacity: 132, roundKeys: 128)
        #expect(mha.pack == 1 && mha.entries == 1 && mha.headChunks == 16)
        // 32 query heads over one K/V head: tiles of 16 heads and one query, five of them.
        let mqa = DecodePlan(lowering: lowering, heads: 32, sharedHeads: 32, batchGroups: 1, capacity: 132, roundKeys: 128)
        #expect(mqa.pack == 16 && mqa.entries == 5 && mqa.headChunks == 2)
        // Three heads share a K/V head: 5 queries × 3 heads = 15 rows, one tile.
        let three = DecodePlan(lowering: lowering, heads: 3, sharedHeads: 3, batchGroups: 1, capacity: 132, roundKeys: 128)
        #expect(three.pack == 3 && three.entries == 1 && three.mergeList.isEmpty)
    }

    @Test func standardShapesFitTheDevicesSharedMemory() {
        for cache in FlashDecodeKernel.Cache.allCases {
            for width in CUDAFlashForward.widths {
                for limit in [232_448, 166_912, 101_376] {
                    let shape = FlashDecodeKernel.Shape.standard(width: width, cache: cache, sharedMemoryLimit: limit)
                    #expect(shape.totalSharedMemoryBytes(width: width, cache: cache) <= limit, "\(cache) width \(width), limit \(limit): \(shape)")
                    #expect(shape.keys == (width <= 64 ? 32 : 16) && shape.stages == 2)
                    // The most warps of the candidates that fit.
                    let more = FlashDecodeKernel.Shape.warpCounts(width: width, cache: cache).filter { $0 > shape.warps }
                        .map { FlashDecodeKernel.Shape(warps: $0, keys: shape.keys, stages: 2) }
                    #expect(more.allSatisfy { $0.totalSharedMemoryBytes(width: width, cache: cache) > limit },
                            "\(cache) width \(width), limit \(limit): \(shape)")
                }
            }
        }
        #expect(FlashDecodeKernel.Shape.standard(width: 128, cache: .int4, sharedMemoryLimit: 232_448).description == "w12n16s2")
        #expect(FlashDecodeKernel.Shape.standard(width: 192, cache: .fp8, sharedMemoryLimit: 232_448).warps == 8)
        // int4 at 128 columns: a warp's ring of 2 stages × (K, V) × 16 rows of 8 + 16 words, then its
        // dequantized K and V tiles; the Q tile.
        #expect(FlashDecodeKernel.Shape(warps: 8, keys: 16, stages: 2).sharedMemoryBytes(width: 128, cache: .int4)
                    == 8 * (2 * 2 * 16 * 24 * 4 + 2 * 16 * 136 * 2) + 16 * 136 * 2)
        #expect(FlashDecodeKernel.Shape.standard(width: 128, sharedMemoryLimit: 232_448).description == "w8n16s2")
        #expect(FlashDecodeKernel.Shape.standard(width: 256, sharedMemoryLimit: 232_448).description == "w6n16s2")
        let kernel = FlashDecodeKernel(width: 128, dtype: .bfloat16, shape: .standard(width: 128, sharedMemoryLimit: 232_448),
                                       architecture: "sm_90")
        #expect(kernel.defines == ["FMHA_HEAD_DIM": "128", "FMHA_DTYPE": "2", "FMHA_WARPS": "8", "FMHA_BLOCK_N": "16", "FMHA_STAGES": "2",
                                  "FMHA_KV_FORMAT": "0"])
        #expect(kernel.entryPoints == ["fmha_flash_decode", "fmha_decode_merge"] && kernel.headers == ["tensor_core"])
        #expect(kernel.dynamicSharedMemoryBytes == (8 * 2 * 2 * 16 + 16) * 136 * 2)
    }
}
