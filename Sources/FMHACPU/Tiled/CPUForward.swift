import CFMHAKernels
import Dispatch
import FMHACore

/// The fast CPU forward operator: FlashAttention's algorithm over tiles of 32 queries and 64
/// keys with an online softmax, in float32 registers, on every core.
///
/// Extra memory is one workspace per thread (a few tiles); K/V are read in place, including
/// stride-0 (grouped-query) layouts, and converted from float16/bfloat16 tile by tile. Tiles that
/// the mask hides are never visited (`MaskLowering.tiles`); partial tiles are masked per element. The inner
/// loops are C (`CFMHAKernels`) compiled for AVX2/FMA and chosen at run time, with a baseline
/// build for other CPUs. Quantized K/V caches are dequantized into the query's dtype first (a pass
/// over the cache's distinct rows per call, and their size in memory).
public struct CPUForward: ForwardOperator {
    /// Which compiled kernels run.
    public let kernels: CPUKernels

    /// The operator with the best kernels this CPU runs (or `kernels`, e.g. `.generic` in tests).
    public init(kernels: CPUKernels = .best) {
        self.kernels = kernels
    }

    public var name: String { kernels.operatorName }

    public var capabilities: OperatorCapabilities { CPUTiledCapabilities.forward }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        var reasons = capabilityReasons(problem)
        if problem.outputDType == .float64 { reasons.append("a float64 output is not supported") }
        reasons += kernels.unavailableReasons
        return reasons
    }

    public func forward(_ problem: AttentionProblem) throws -> ForwardOutput {
        try requireSupport(problem)
        let problem = try problem.dequantized()
        let d = problem.dimensions
        let biasView = problem.tensorBias
        let output = try Tensor.zeros(d.outputShape, dtype: problem.outputDType)
        let lse = try Tensor.zeros(d.lseShape, dtype: .float32)
        let plan = HostLowering(problem.lowering, tileRows: Int(FMHA_TILE_QUERIES))
        let heads = d.batch * d.groups * d.heads
        let items = heads * plan.tiles.count
        guard items > 0 else { return ForwardOutput(output: output, lse: lse) }
        let mask = problem.dropoutMask
        let kernel = kernels.forwardTile(dtype: problem.dtype, outputDType: output.dtype, headDimension: d.headDimension)
        let query = problem.query, key = problem.key, value = problem.value
        let tensors = [query, key, value, output, lse] + (biasView.map { [$0] } ?? [])
        try HostAddresses.with(tensors) { addresses in
            let workspaceFloats = fmha_forward_workspace_floats(Int32(d.headDimension), Int32(d.valueHeadDimension))
            plan.withRowRanges { rowLo, rowHi in
                // (Products per visited pair: Q·K and P·V.)
                CPUThreads.run(items: items, threads: plan.threads(heads: heads, products: d.headDimension + d.valueHeadDimension)) { assigned in
                  Workspace.with(floats: workspaceFloats) { aligned in
                    for item in assigned {
                        let headIndex = item / plan.tiles.count, tile = plan.tiles[item % plan.tiles.count]
                        let h = headIndex % d.heads, g = (headIndex / d.heads) % d.groups, b = headIndex / (d.heads * d.groups)
                        plan.withPageRow(tile.block) { pages in
                            var t = fmha_forward_tile()
                            t.rows = Int32(tile.rows)
                            t.head_dim = Int32(d.headDimension)
                            t.value_dim = Int32(d.valueHeadDimension)
                            t.dtype = query.dtype.kernelCode
                            t.out_dtype = output.dtype.kernelCode
                            t.q = UnsafeRawPointer(addresses[0] + query.elementOffset(b, tile.start, g, h) * query.dtype.byteSize)
                            t.q_row_stride = Int64(query.strides[1])
                            t.k = UnsafeRawPointer(addresses[1] + key.elementOffset(b, 0, g, h) * key.dtype.byteSize)
                            t.k_row_stride = Int64(key.strides[1])
                            t.v = UnsafeRawPointer(addresses[2] + value.elementOffset(b, 0, g, h) * value.dtype.byteSize)
                            t.v_row_stride = Int64(value.strides[1])
                            t.key_begin = Int64(tile.keys.lowerBound)
                            t.key_end = Int64(tile.keys.upperBound)
                            t.key_row_offset = 0
                            t.pages = pages
                            t.page_size = Int64(plan.pageSize)
                            t.row_lo = rowLo + tile.start
                            t.row_hi = rowHi + tile.start
                            if let bias = biasView {
                                let biasAddress = addresses[5]
                                t.bias = UnsafeRawPointer(biasAddress + bias.elementOffset(b, g, h, tile.start) * bias.dtype.byteSize)
                                t.bias_row_stride = Int64(bias.strides[3])
                                t.bias_col_stride = Int64(bias.strides[4])
                            }
                            t.scale = Float(problem.scale)
                            if let mask {
                                t.dropout = 1
                                t.dropout_threshold = mask.threshold
                                t.dropout_keep_scale = Float(mask.keptScale)
                                t.dropout_seed = mask.state.seed
                                t.dropout_offset = mask.state.offset
                                t.dropout_head = UInt32(truncatingIfNeeded: headIndex)
                                t.dropout_query0 = Int64(tile.start)
                            }
                            let outputRow = ((b * d.queryLength + tile.start) * d.groups + g) * d.heads + h
                            t.out = addresses[3] + outputRow * d.valueHeadDimension * output.dtype.byteSize
                            t.out_row_stride = Int64(d.groups * d.heads * d.valueHeadDimension)
                            t.lse = (addresses[4] + (headIndex * d.queryLength + tile.start) * 4).assumingMemoryBound(to: Float.self)
                            t.workspace = aligned
                            kernel(&t)
                        }
                    }
                  }
                }
            }
        }
        return ForwardOutput(output: output, lse: lse)
    }
}
