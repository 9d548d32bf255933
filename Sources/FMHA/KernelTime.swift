import FMHACUDA

/// Runs `body` and returns the GPU milliseconds of the CUDA kernels it launched through the
/// operators that time their launches with events (`cuda-decode`, `cuda-flash` forward; 0 when
/// none ran): the kernels' time without the host's work and the synchronisation around them, as
/// PyTorch's benchmarks time theirs. For benchmarks (`fmha bench` reports it as `gpu_ms`).
public func kernelMilliseconds(_ body: () throws -> Void) throws -> Double {
    try KernelTiming.measure(body)
}
