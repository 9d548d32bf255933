// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-fmha",
    products: [
        .library(name: "FMHA", targets: ["FMHA"]),
        .executable(name: "fmha", targets: ["fmha"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // libcuda and libnvrtc loaded at run time: typed errors, wrappers that release what they own.
        // The lowest layer: FMHACore keeps CUDA tensor storage in it.
        .target(name: "CUDADriver"),
        // Tensor, DType, Device, attention biases, Inputs + validation, operator model, dropout, FMHAError.
        .target(name: "FMHACore", dependencies: ["CUDADriver"]),
        // C kernels of the fast CPU operators, compiled per instruction set with function attributes.
        .target(name: "CFMHAKernels"),
        // CPU operators: the float64 reference and the fast tiled backend.
        .target(name: "FMHACPU", dependencies: ["FMHACore", "CFMHAKernels"]),
        // CUDA operators: kernel sources (Kernels/*.cu, embedded by scripts/generate_kernel_sources.py),
        // descriptors, the NVRTC compiler with its memory and disk caches.
        .target(name: "FMHACUDA", dependencies: ["FMHACore", "CUDADriver"], exclude: ["Kernels"]),
        // The one module users import: entry points, dispatch, merge, the CUDA environment report;
        // re-exports FMHACore and the operators.
        .target(name: "FMHA", dependencies: ["CUDADriver", "FMHACore", "FMHACPU", "FMHACUDA"]),
        // The `fmha` command's implementation: subcommands, .npy files, bias JSON; reaches the
        // library only through FMHA.
        .target(name: "FMHACLI", dependencies: [
            "FMHA",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "fmha", dependencies: ["FMHACLI"]),
        // Fuzz targets for the parsers of user input (scripts/fuzz.sh builds them with libFuzzer;
        // an ordinary build replays files through them).
        .executableTarget(name: "fmha-fuzz", dependencies: ["FMHACLI"], path: "Sources/FMHAFuzz"),
        // What several test targets share: calls that validate inputs for them, generators, the mask oracle.
        .target(name: "FMHATestSupport", dependencies: ["FMHACore"], path: "Tests/FMHATestSupport"),
        .testTarget(name: "FMHACoreTests", dependencies: ["FMHACore", "CUDADriver", "FMHATestSupport"]),
        .testTarget(name: "FMHACPUTests", dependencies: ["FMHACPU", "FMHATestSupport"]),
        .testTarget(name: "FMHATests", dependencies: ["FMHA", "FMHATestSupport"]),
        .testTarget(name: "FMHACLITests", dependencies: ["FMHACLI", "CUDADriver", "FMHATestSupport"]),
        .testTarget(name: "CUDADriverTests", dependencies: ["CUDADriver"]),
        .testTarget(name: "FMHACUDATests", dependencies: ["FMHACUDA", "FMHATestSupport"]),
    ]
)
