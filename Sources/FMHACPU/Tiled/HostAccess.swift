#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import FMHACore

/// Host addresses of several tensors at once, valid inside one closure.
enum HostAddresses {
    /// Calls `body` with the address of each tensor's first element, in order.
    static func with<Result>(_ tensors: [Tensor], _ body: ([UnsafeMutableRawPointer]) throws -> Result) throws -> Result {
        func nest(_ index: Int, _ collected: [UnsafeMutableRawPointer]) throws -> Result {
            guard index < tensors.count else { return try body(collected) }
            return try tensors[index].withUnsafeHostAddress { try nest(index + 1, collected + [$0]) }
        }
        return try nest(0, [])
    }
}

extension Tensor {
    /// Elements from the view's first element to the one at `indices` (leading dimensions).
    @inline(__always)
    func elementOffset(_ indices: Int...) -> Int {
        var offset = 0
        for (index, stride) in zip(indices, strides) { offset &+= index &* stride }
        return offset
    }
}

/// The worker threads of the tiled CPU operators.
public enum CPUThreads {
    /// Threads to use: `FMHA_NUM_THREADS` when set to a positive number, else every online CPU.
    public static var count: Int {
        requested ?? max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// `FMHA_NUM_THREADS` when it is set to a positive number.
    private static var requested: Int? {
        guard let text = getenv("FMHA_NUM_THREADS").map({ String(cString: $0) }), let value = Int(text), value > 0 else {
            return nil
        }
        return value
    }

    /// Calls smaller than this many floating-point operations run on one thread unless
    /// `FMHA_NUM_THREADS` asks for more: starting and joining a worker costs more than it saves
    /// there. Chosen on this project's 2-core AMD EPYC development machine (AVX-512), float32, ms
    /// with 1 vs 2 threads (`FMHA_NUM_THREADS`, `fmha bench --repeats 50`): forward 1,64,64,4,64
    /// (4 MFLOP) 0.043 vs 0.063, 1,192,192,4,64 (38 MFLOP) 0.250 vs 0.274, 1,512,512,8,64 (537 MFLOP)
    /// 4.27 vs 4.33 (its two vCPUs barely scale the forward); forward+backward 1,64,64,4,64 0.148 vs
    /// 0.210, 1,192,192,4,64 0.983 vs 0.957, 1,256,256,8,64 3.23 vs 2.83, 1,512,512,8,64 11.0 vs 6.1.
    /// 32 MFLOP keeps the calls that lose on two threads here on one, below where hosts with whole
    /// cores per thread would gain.
    static let minimumParallelFLOPs: Double = 32e6

    /// The threads for a call of `flops` operations: `FMHA_NUM_THREADS` when set, else 1 below
    /// `minimumParallelFLOPs` and every online CPU from there.
    static func count(forFLOPs flops: Double) -> Int {
        threads(forFLOPs: flops, requested: requested, available: count)
    }

    /// `requested` when given, else 1 below `minimumParallelFLOPs` and `available` from there.
    static func threads(forFLOPs flops: Double, requested: Int?, available: Int) -> Int {
        requested ?? (flops < minimumParallelFLOPs ? 1 : available)
    }

    /// Runs `body` on up to `count` threads; thread `t` of `T` gets items `t, t + T, t + 2T, …`,
    /// which spreads the cheap and costly tiles of masked calls evenly. The calling thread is
    /// worker 0; the others are started for the call and joined before it returns (a pool that
    /// may not wake a worker in time would run both halves on one core now and then).
    static func run(items: Int, threads: Int = count, _ body: (StrideTo<Int>) -> Void) {
        let workers = max(1, min(threads, items))
        if workers == 1 { return body(stride(from: 0, to: items, by: 1)) }
        // The workers only read shared inputs and write disjoint outputs; `body` outlives none of them.
        withoutActuallyEscaping(body) { body in
            let work = UncheckedSendable(body)
            var started = [pthread_t]()
            for worker in 1..<workers {
                let task = Unmanaged.passRetained(WorkerTask { work.value(stride(from: worker, to: items, by: workers)) })
                var thread = pthread_t()
                if pthread_create(&thread, nil, { context in
                    let task = Unmanaged<WorkerTask>.fromOpaque(context!).takeRetainedValue()
                    task.run()
                    return nil
                }, task.toOpaque()) == 0 {
                    started.append(thread)
                } else {
                    // No thread to be had: do this worker's share here.
                    task.takeRetainedValue().run()
                }
            }
            work.value(stride(from: 0, to: items, by: workers))
            for thread in started { pthread_join(thread, nil) }
        }
    }
}

/// One worker thread's share of a `CPUThreads.run` call.
final class WorkerTask: @unchecked Sendable {
    let run: () -> Void

    init(_ run: @escaping () -> Void) {
        self.run = run
    }
}

/// A value handed to worker threads that the caller guarantees is used safely.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value

    init(_ value: Value) {
        self.value = value
    }
}

/// A worker thread's kernel workspace.
enum Workspace {
    /// Calls `body` with `floats` floats of 64-byte-aligned scratch memory.
    static func with(floats: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: (floats + 16) * MemoryLayout<Float>.size, alignment: 64)
        defer { raw.deallocate() }
        body(raw.bindMemory(to: Float.self, capacity: floats + 16))
    }
}
