import CUDADriver

/// GPU time of the kernels the CUDA operators launch, for benchmarks: inside `measure`, each
/// operator that takes part (`cuda-decode`, `cuda-flash` forward) records CUDA events around its
/// launches (`span`), and `measure` returns the sum of those spans. Wall time of a call adds the
/// host's work and the synchronisation to it; this is the time the GPU spends on the call's
/// kernels, as PyTorch's benchmarks time theirs with events.
public enum KernelTiming {
    /// The spans recorded in this task so far (milliseconds); nil outside `measure`.
    final class Recorder: @unchecked Sendable {
        // (Only the measuring task touches it: task-local.)
        var milliseconds = 0.0
    }

    @TaskLocal static var recorder: Recorder?

    /// Runs `body` and returns the GPU milliseconds of the kernels it launched through operators
    /// that record spans (0 when none did).
    public static func measure(_ body: () throws -> Void) throws -> Double {
        let recorder = Recorder()
        try $recorder.withValue(recorder) { try body() }
        return recorder.milliseconds
    }

    /// Runs `launches` (kernel launches on `context`'s default stream) and waits for them; when a
    /// `measure` is under way, between two recorded events whose GPU time it adds (the second
    /// recorded right after the launches, so the wait for it is not counted).
    static func span(_ context: CUDAContext, _ launches: () throws -> Void) throws {
        guard let recorder else {
            try launches()
            return try context.synchronize()
        }
        let start = try CUDAEvent(context: context), end = try CUDAEvent(context: context)
        try start.record()
        try launches()
        try end.record()
        try end.synchronize()
        recorder.milliseconds += try end.milliseconds(since: start)
    }
}
