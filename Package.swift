// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-fmha",
    products: [
        .library(name: "FMHA", targets: ["FMHA"]),
        .executable(name: "fmha", targets: ["fmha"]),
    ],
    targets: [
        // Tensor, DType, Device, attention biases, Inputs + validation, FMHAError.
        .target(name: "FMHACore"),
        // The one module users import: re-exports FMHACore (entry points come with the operators).
        .target(name: "FMHA", dependencies: ["FMHACore"]),
        // The command-line tool.
        .executableTarget(name: "fmha", dependencies: ["FMHA"]),
        .testTarget(name: "FMHACoreTests", dependencies: ["FMHACore"]),
        .testTarget(name: "FMHATests", dependencies: ["FMHA"]),
    ]
)
