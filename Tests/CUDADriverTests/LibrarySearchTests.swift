#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Testing
@testable import CUDADriver

/// Where libnvrtc and libcuda are looked for, and NVRTC itself where it can be loaded.
@Suite struct LibrarySearchTests {
    @Test func searchOrderFollowsTheDesign() {
        let candidates = LibrarySearch.nvrtcCandidates(
            environment: ["FMHA_NVRTC_PATH": "/opt/nvrtc/lib", "CUDA_HOME": "/opt/cuda", "CUDA_PATH": "/opt/cuda-b"],
            sitePackages: ["/venv/lib/python3.11/site-packages"])
        let firstOf = { (prefix: String) in candidates.firstIndex { $0.hasPrefix(prefix) } ?? .max }
        #expect(candidates.first == "/opt/nvrtc/lib/libnvrtc.so")
        #expect(firstOf("/opt/nvrtc") < firstOf("/opt/cuda/"))
        #expect(firstOf("/opt/cuda/") < firstOf("/opt/cuda-b/"))
        #expect(firstOf("/opt/cuda-b/") < firstOf("/usr/local/cuda/"))
        #expect(firstOf("/usr/local/cuda/") < firstOf("/venv/"))
        #expect(candidates.contains("/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libnvrtc.so.13"))
        #expect(Array(candidates.suffix(3)) == ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"])
    }

    @Test func nvrtcPathMayNameTheLibraryItself() {
        let candidates = LibrarySearch.nvrtcCandidates(environment: ["FMHA_NVRTC_PATH": "/x/libnvrtc.so.13"], sitePackages: [])
        #expect(candidates.first == "/x/libnvrtc.so.13")
    }

    @Test func driverIsFoundByItsSoname() {
        #expect(LibrarySearch.driverCandidates.first == "libcuda.so.1")
    }

    @Test func missingLibrariesSayWhy() {
        let error = #expect(throws: LibraryError.self) {
            _ = try DynamicLibrary.open(["/nonexistent/libnvrtc.so", "libfmha-no-such-library.so"], what: "NVRTC")
        }
        #expect(error?.attempts.count == 2)
        #expect(error?.attempts.first?.contains("/nonexistent/libnvrtc.so") == true)
        #expect(error?.description == "NVRTC could not be loaded: not found in 2 places searched")
    }

    @Test func cudaErrorsNameTheCall() {
        let error = CUDAError(call: "cuMemAlloc_v2", code: 2, name: "CUDA_ERROR_OUT_OF_MEMORY", message: "out of memory")
        #expect(error.description == "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory")
        #expect(CUDAError.knownNames[700] == "CUDA_ERROR_ILLEGAL_ADDRESS")
    }

    @Test func sizeClassesArePowersOfTwoFrom512() {
        #expect(CUDAContext.sizeClass(1) == 512)
        #expect(CUDAContext.sizeClass(512) == 512)
        #expect(CUDAContext.sizeClass(513) == 1024)
        #expect(CUDAContext.sizeClass(3 << 20) == 4 << 20)
        // Past the largest power of two in Int the size is its own class (no endless doubling).
        #expect(CUDAContext.sizeClass(1 << 62) == 1 << 62)
        #expect(CUDAContext.sizeClass((1 << 62) + 4) == (1 << 62) + 4)
        #expect(CUDAContext.sizeClass(Int.max) == Int.max)
    }
}

/// NVRTC compiles for several architectures without a GPU (CI installs the nvidia-cuda-nvrtc
/// wheel and sets FMHA_NVRTC_PATH; elsewhere these run when libnvrtc is found).
@Suite(.enabled(if: NVRTCAvailability.required || NVRTCAvailability.loaded != nil, "libnvrtc not found"))
struct NVRTCTests {
    static let source = """
    extern "C" __global__ void add(const float *a, const float *b, float *c, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i < n) c[i] = a[i] + b[i];
    }
    """

    @Test(arguments: ["sm_80", "sm_90", "sm_90a"])
    func compilesForArchitecture(_ architecture: String) throws {
        let nvrtc = try NVRTC()
        // NVRTC 12.9+ keeps a compile cache of its own whose hits come back without the ptxas log.
        let version = try nvrtc.version()
        let noCache = version.major > 12 || (version.major == 12 && version.minor >= 9) ? ["--no-cache"] : []
        let output = try nvrtc.compile(source: Self.source, name: "add.cu",
                                       options: ["--gpu-architecture=\(architecture)", "-Xptxas", "-v"] + noCache)
        #expect(output.cubin.count > 100)
        #expect(Array(output.cubin.prefix(4)) == [0x7F, 0x45, 0x4C, 0x46])  // an ELF cubin
        #expect(output.log.contains("registers"))
        #expect(try nvrtc.version().major >= 12)
    }

    @Test func compileErrorsCarryTheLog() throws {
        let error = #expect(throws: NVRTCError.self) {
            _ = try NVRTC().compile(source: "extern \"C\" __global__ void broken() { undeclared = 1; }", name: "broken.cu",
                                    options: ["--gpu-architecture=sm_90"])
        }
        #expect(error?.call == "nvrtcCompileProgram")
        #expect(error?.log.contains("undeclared") == true)
    }
}

/// Whether NVRTC loads here, and whether it must (CI=true).
enum NVRTCAvailability {
    static let loaded: NVRTC? = try? NVRTC()
    static var required: Bool { getenv("CI").map { String(cString: $0) } == "true" }
}
