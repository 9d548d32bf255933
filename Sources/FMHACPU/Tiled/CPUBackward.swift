import CFMHAKernels
import FMHACore

/// The fast CPU backward operator: FlashAttention-2's backward over the same tiles as
/// `CPUForward`, in two passes that each own their outputs, so the bits do not depend on threads.
///
/// First D = rowsum(dO∘O). Then, per (query head, query tile), dQ (and the tensor-bias gradient)
/// over the tile's visible keys; and per (K/V head, key tile), dK and dV over every query tile of
/// every head that shares that K/V head, so grouped-query gradients are summed without expanded
/// copies. Probabilities are recomputed from the forward LSE.
public struct CPUBackward: BackwardOperator {
    /// Which compiled kernels run.
    public let kernels: CPUKernels

    /// The operator with the best kernels this CPU runs (or `kernels`).
    public init(kernels: CPUKernels = .best) {
        self.kernels = kernels
    }

    public var name: String { kernels.operatorName }

    public var capabilities: OperatorCapabilities { CPUTiledCapabilities.backward }

    public func notSupportedReasons(_ problem: AttentionProblem) -> [String] {
        capabilityReasons(problem) + kernels.unavailableReasons
    }

    public func backward(_ backward: BackwardProblem) throws -> Gradients {
        let problem = backward.attention
        try requireSupport(problem)
        let d = problem.dimensions, inputs = problem.inputs
        let views = (query: problem.query, key: problem.key, value: problem.value)
        let biasTensor = inputs.bias?.tensorBias
        let biasView = problem.tensorBias
        let gradView = try Inputs.bmghkView(backward.gradOutput.converted(to: problem.dtype))
        let plan = HostLowering(problem.lowering, tileRows: Int(FMHA_TILE_QUERIES))
        let heads = d.batch * d.groups * d.heads
        let tileRows = Int(FMHA_TILE_QUERIES)

        // D = rowsum(dO∘O) and the LSE, both [B, G, H, Mq].
        let lseValues = try backward.lse.converted(to: .float32).toArray()
        // (Products per visited pair: Q·K and dO·V again, then dV, dS·K for dQ and dS·Q for dK.)
        let threads = plan.threads(heads: heads, products: 3 * d.headDimension + 2 * d.valueHeadDimension)
        let delta = try Self.rowDots(gradView, backward.output, d, plan, threads: threads, kernels.rowDots)

        // Float32 gradients: dQ as the query ([B, Mq, G, H, K]); dK, dV over the K/V heads
        // (dimensions where both K and V have stride 0 collapse to 1).
        let shared = [0, 2, 3].map { views.key.strides[$0] == 0 && views.value.strides[$0] == 0 && views.key.shape[$0] > 1 }
        let grid = (batch: shared[0] ? 1 : d.batch, groups: shared[1] ? 1 : d.groups, heads: shared[2] ? 1 : d.heads)
        let keyGrid = [grid.batch, d.keyLength, grid.groups, grid.heads]
        for (argument, shape) in [("query", d.queryShape5D), ("key", keyGrid + [d.headDimension]),
                                  ("value", keyGrid + [d.valueHeadDimension])] {
            try HostMemory.checkFits(shape: shape, elementSize: MemoryLayout<Float>.size, argument: argument,
                                     what: "a float32 gradient of shape")
        }
        var dq = [Float](repeating: 0, count: d.queryShape5D.reduce(1, *))
        var dk = [Float](repeating: 0, count: keyGrid.reduce(1, *) * d.headDimension)
        var dv = [Float](repeating: 0, count: keyGrid.reduce(1, *) * d.valueHeadDimension)
        var dBias = [Float](repeating: 0, count: biasTensor == nil ? 0 : d.biasShape5D.reduce(1, *))
        let mask = problem.dropoutMask
        let workspaceFloats = fmha_backward_workspace_floats(Int32(d.headDimension), Int32(d.valueHeadDimension))
        let dqKernel = kernels.backwardQuery(dtype: problem.dtype, headDimension: d.headDimension,
                                             valueHeadDimension: d.valueHeadDimension)
        let dkdvKernel = kernels.backwardKeys(dtype: problem.dtype, headDimension: d.headDimension,
                                              valueHeadDimension: d.valueHeadDimension)

        let tensors = [views.query, views.key, views.value, gradView] + (biasView.map { [$0] } ?? [])
        try HostAddresses.with(tensors) { addresses -> Void in
            let query = views.query, key = views.key, value = views.value
            plan.withRowRanges { rowLo, rowHi in
                BackwardBuffers.with(dq: &dq, dk: &dk, dv: &dv, dBias: &dBias, lse: lseValues, delta: delta) { out in
                    /// The kernel's view of query tile `tileIndex` of head (b, g, h).
                    func queryTile(_ b: Int, _ g: Int, _ h: Int, _ tileIndex: Int) -> fmha_backward_query_tile {
                        let tile = plan.tiles[tileIndex], headIndex = (b * d.groups + g) * d.heads + h
                        var t = fmha_backward_query_tile()
                        t.rows = Int32(tile.rows)
                        t.q = UnsafeRawPointer(addresses[0] + query.elementOffset(b, tile.start, g, h) * query.dtype.byteSize)
                        t.q_row_stride = Int64(query.strides[1])
                        t.grad_out = UnsafeRawPointer(addresses[3] + gradView.elementOffset(b, tile.start, g, h) * gradView.dtype.byteSize)
                        t.grad_out_row_stride = Int64(gradView.strides[1])
                        t.lse = out.lse + headIndex * d.queryLength + tile.start
                        t.delta = out.delta + headIndex * d.queryLength + tile.start
                        t.row_lo = rowLo + tile.start
                        t.row_hi = rowHi + tile.start
                        if let bias = biasView {
                            t.bias = UnsafeRawPointer(addresses[4] + bias.elementOffset(b, g, h, tile.start) * bias.dtype.byteSize)
                            t.bias_row_stride = Int64(bias.strides[3])
                            t.bias_col_stride = Int64(bias.strides[4])
                            t.grad_bias = out.dBias + (headIndex * d.queryLength + tile.start) * d.keyLength
                            t.grad_bias_row_stride = Int64(d.keyLength)
                        }
                        t.dropout_head = UInt32(truncatingIfNeeded: headIndex)
                        t.dropout_query0 = Int64(tile.start)
                        t.grad_q = out.dq + (((b * d.queryLength + tile.start) * d.groups + g) * d.heads + h) * d.headDimension
                        t.grad_q_row_stride = Int64(d.groups * d.heads * d.headDimension)
                        return t
                    }
                    /// What the kernels share for head (b, g, h)'s K/V.
                    func common(_ b: Int, _ g: Int, _ h: Int, _ workspace: UnsafeMutablePointer<Float>) -> fmha_backward_common {
                        var c = fmha_backward_common()
                        c.head_dim = Int32(d.headDimension)
                        c.value_dim = Int32(d.valueHeadDimension)
                        c.dtype = query.dtype.kernelCode
                        c.k = UnsafeRawPointer(addresses[1] + key.elementOffset(b, 0, g, h) * key.dtype.byteSize)
                        c.k_row_stride = Int64(key.strides[1])
                        c.v = UnsafeRawPointer(addresses[2] + value.elementOffset(b, 0, g, h) * value.dtype.byteSize)
                        c.v_row_stride = Int64(value.strides[1])
                        c.page_size = Int64(plan.pageSize)
                        c.scale = Float(problem.scale)
                        if let mask {
                            c.dropout = 1
                            c.dropout_threshold = mask.threshold
                            c.dropout_keep_scale = Float(mask.keptScale)
                            c.dropout_seed = mask.state.seed
                            c.dropout_offset = mask.state.offset
                        }
                        c.workspace = workspace
                        return c
                    }

                    let keyTiles = plan.lowering.keyTiles(plan.tiles, tileKeys: Int(FMHA_TILE_KEYS * FMHA_BACKWARD_KEY_GROUP))
                    let gridHeads = grid.batch * grid.groups * grid.heads
                    let sharing = [shared[0] ? d.batch : 1, shared[1] ? d.groups : 1, shared[2] ? d.heads : 1]
                    let sharingHeadCount = sharing.reduce(1, *)
                    /// The query heads (b, g, h) that share K/V head `gridHead`.
                    func sharingHeads(of gridHead: Int) -> [(Int, Int, Int)] {
                        let gh = gridHead % grid.heads, gg = (gridHead / grid.heads) % grid.groups
                        let gb = gridHead / (grid.heads * grid.groups)
                        var heads = [(Int, Int, Int)]()
                        for sb in 0..<sharing[0] {
                            for sg in 0..<sharing[1] {
                                for sh in 0..<sharing[2] { heads.append((gb + sb, gg + sg, gh + sh)) }
                            }
                        }
                        return heads
                    }
                    /// dK/dV of one key tile of K/V head `gridHead` from every query tile that sees it;
                    /// `accumulators` (one K × R block per sharing head and tile) also collect dQ.
                    func keyTile(_ gridHead: Int, _ keyTile: MaskLowering.KeyTile, _ workspace: UnsafeMutablePointer<Float>,
                                 _ tiles: inout [fmha_backward_query_tile], accumulators: UnsafeMutablePointer<Float>?) {
                        let heads = sharingHeads(of: gridHead)
                        tiles.removeAll(keepingCapacity: true)
                        for (position, (b, g, h)) in heads.enumerated() {
                            for tileIndex in keyTile.queryTiles where plan.tiles[tileIndex].keys.overlaps(keyTile.keys) {
                                var t = queryTile(b, g, h, tileIndex)
                                if let accumulators {
                                    t.grad_q_transposed = accumulators + (position * plan.tiles.count + tileIndex) * d.headDimension * tileRows
                                } else {
                                    t.grad_bias = nil  // written by the dQ pass
                                }
                                tiles.append(t)
                            }
                        }
                        let (b, g, h) = heads[0]
                        let gh = gridHead % grid.heads, gg = (gridHead / grid.heads) % grid.groups
                        let kRow = ((gridHead / (grid.heads * grid.groups) * d.keyLength) * grid.groups + gg) * grid.heads + gh
                        let rowStride = grid.groups * grid.heads
                        Self.withPages(plan, block: keyTile.block, common(b, g, h, workspace)) {
                            dkdvKernel($0, tiles, Int32(tiles.count), Int64(keyTile.keys.lowerBound), Int64(keyTile.keys.upperBound),
                                       out.dk + kRow * d.headDimension, Int64(rowStride * d.headDimension),
                                       out.dv + kRow * d.valueHeadDimension, Int64(rowStride * d.valueHeadDimension))
                        }
                    }

                    if gridHeads % threads == 0 || gridHeads >= 4 * threads {
                        // One pass, one item per K/V head: it owns every key and every query of its
                        // heads, so dQ accumulates across key tiles without races (FlashAttention-2's
                        // backward: five products per tile pair).
                        let accumulatorFloats = sharingHeadCount * plan.tiles.count * d.headDimension * tileRows
                        CPUThreads.run(items: gridHeads, threads: threads) { assigned in
                            Workspace.with(floats: workspaceFloats) { workspace in
                                Workspace.with(floats: accumulatorFloats) { accumulators in
                                    var tiles = [fmha_backward_query_tile]()
                                    for gridHead in assigned {
                                        accumulators.initialize(repeating: 0, count: accumulatorFloats)
                                        for tile in keyTiles { keyTile(gridHead, tile, workspace, &tiles, accumulators: accumulators) }
                                        for (position, (b, g, h)) in sharingHeads(of: gridHead).enumerated() {
                                            for (tileIndex, tile) in plan.tiles.enumerated() {
                                                let source = accumulators + (position * plan.tiles.count + tileIndex) * d.headDimension * tileRows
                                                let target = queryTile(b, g, h, tileIndex)
                                                for row in 0..<tile.rows {
                                                    let destination = target.grad_q + row * Int(target.grad_q_row_stride)
                                                    for channel in 0..<d.headDimension {
                                                        destination[channel] = source[channel * tileRows + row] * Float(problem.scale)
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    } else {
                        // Two passes, for more parallelism than there are K/V heads. First dQ and the
                        // bias gradient, one item per (query head, query tile)...
                        CPUThreads.run(items: heads * plan.tiles.count, threads: threads) { assigned in
                            Workspace.with(floats: workspaceFloats) { workspace in
                                for item in assigned {
                                    let headIndex = item / plan.tiles.count, tileIndex = item % plan.tiles.count
                                    let h = headIndex % d.heads, g = (headIndex / d.heads) % d.groups
                                    let b = headIndex / (d.heads * d.groups)
                                    var t = queryTile(b, g, h, tileIndex)
                                    let keys = plan.tiles[tileIndex].keys
                                    Self.withPages(plan, block: plan.tiles[tileIndex].block, common(b, g, h, workspace)) {
                                        dqKernel($0, &t, Int64(keys.lowerBound), Int64(keys.upperBound))
                                    }
                                }
                            }
                        }
                        // ...then dK and dV, one item per (K/V head, key tile); key tiles of different
                        // blocks that can name the same K/V rows are not processed at once.
                        CPUThreads.run(items: gridHeads * keyTiles.count, threads: plan.lowering.keyRowsOverlap ? 1 : threads) { assigned in
                            Workspace.with(floats: workspaceFloats) { workspace in
                                var tiles = [fmha_backward_query_tile]()
                                for item in assigned {
                                    keyTile(item / keyTiles.count, keyTiles[item % keyTiles.count], workspace, &tiles,
                                            accumulators: nil)
                                }
                            }
                        }
                    }
                }
            }
        }

        let gridShape = { (channels: Int) in
            d.layout.shape(fromBMGHK: [grid.batch, d.keyLength, grid.groups, grid.heads, channels])
        }
        return Gradients(
            dq: try gradient(dq, shape: inputs.query.shape, like: inputs.query),
            dk: try gradient(dk, shape: gridShape(d.headDimension), like: inputs.key),
            dv: try gradient(dv, shape: gridShape(d.valueHeadDimension), like: inputs.value),
            dBias: try biasTensor.map { try gradient(dBias, shape: $0.shape, like: $0) })
    }

    /// The gradient of `input` from float32 `values` over `shape`: rounded to its dtype by this
    /// build's kernels when `input` broadcasts nothing, else summed along its broadcast dimensions
    /// (`BroadcastGradient`).
    private func gradient(_ values: [Float], shape: [Int], like input: Tensor) throws -> Tensor {
        guard shape == input.shape, BroadcastGradient.broadcastDimensions(of: input).isEmpty else {
            return try BroadcastGradient.tensor(values, shape: shape, like: input)
        }
        let tensor = try Tensor.zeros(shape, dtype: input.dtype)
        try tensor.withUnsafeHostAddress { address in
            values.withUnsafeBufferPointer { buffer in
                kernels.storeFloats(buffer.baseAddress, address, Int64(buffer.count), input.dtype.kernelCode)
            }
        }
        return tensor
    }

    /// Calls `body` with `common`, its `pages` pointing at the page-table row of `block` when paged.
    private static func withPages(_ plan: HostLowering, block: Int, _ common: fmha_backward_common,
                                  _ body: (UnsafePointer<fmha_backward_common>) -> Void) {
        var common = common
        plan.withPageRow(block) { pages in
            common.pages = pages
            withUnsafePointer(to: common, body)
        }
    }

    /// rowsum(dO∘O) per query, in float32, as `[B, G, H, Mq]`, one thread per (head, tile).
    private static func rowDots(_ gradOutput: Tensor, _ output: Tensor, _ d: AttentionDimensions,
                                _ plan: HostLowering, threads: Int, _ rowDots: CPUKernels.RowDots) throws -> [Float] {
        var delta = [Float](repeating: 0, count: d.batch * d.groups * d.heads * d.queryLength)
        // The kernels read float32, float16 and bfloat16; a float64 output is narrowed first.
        let gradient = try Inputs.bmghkView(gradOutput)
        let values = try Inputs.bmghkView(output.dtype == .float64 ? output.converted(to: .float32) : output)
        try HostAddresses.with([gradient, values]) { addresses in
            delta.withUnsafeMutableBufferPointer { buffer in
                let out = UncheckedSendable(buffer.baseAddress)
                CPUThreads.run(items: d.batch * d.groups * d.heads * plan.tiles.count, threads: threads) { assigned in
                    for item in assigned {
                        let headIndex = item / plan.tiles.count, tile = plan.tiles[item % plan.tiles.count]
                        let h = headIndex % d.heads, g = (headIndex / d.heads) % d.groups, b = headIndex / (d.heads * d.groups)
                        rowDots(addresses[0] + gradient.elementOffset(b, tile.start, g, h) * gradient.dtype.byteSize,
                                      Int64(gradient.strides[1]), gradient.dtype.kernelCode,
                                      addresses[1] + values.elementOffset(b, tile.start, g, h) * values.dtype.byteSize,
                                      Int64(values.strides[1]), values.dtype.kernelCode, Int32(tile.rows),
                                      Int32(d.valueHeadDimension), out.value.map { $0 + headIndex * d.queryLength + tile.start })
                    }
                }
            }
        }
        return delta
    }
}

/// Addresses of the backward pass's float buffers, valid inside one closure.
struct BackwardBuffers {
    let dq: UnsafeMutablePointer<Float>
    let dk: UnsafeMutablePointer<Float>
    let dv: UnsafeMutablePointer<Float>
    let dBias: UnsafeMutablePointer<Float>
    let lse: UnsafePointer<Float>
    let delta: UnsafePointer<Float>

    static func with(dq: inout [Float], dk: inout [Float], dv: inout [Float], dBias: inout [Float],
                     lse: [Float], delta: [Float], _ body: (BackwardBuffers) throws -> Void) rethrows {
        try dq.withUnsafeMutableBufferPointer { dq in
            try dk.withUnsafeMutableBufferPointer { dk in
                try dv.withUnsafeMutableBufferPointer { dv in
                    try dBias.withUnsafeMutableBufferPointer { dBias in
                        try lse.withUnsafeBufferPointer { lse in
                            try delta.withUnsafeBufferPointer { delta in
                                try body(BackwardBuffers(
                                    dq: dq.baseAddress!, dk: dk.baseAddress!, dv: dv.baseAddress!,
                                    dBias: dBias.baseAddress ?? dq.baseAddress!,
                                    lse: lse.baseAddress!, delta: delta.baseAddress!))
                            }
                        }
                    }
                }
            }
        }
    }
}
