#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the CUDA libraries are looked for, in order (DESIGN.md): libcuda through the loader;
/// libnvrtc from `FMHA_NVRTC_PATH` (a file or a folder), `CUDA_HOME`/`CUDA_PATH`, `/usr/local/cuda`,
/// the `nvidia-cuda-nvrtc` wheel's folder in any Python site-packages found, then the loader.
public enum LibrarySearch {
    /// libnvrtc file names, newest first.
    static let nvrtcNames = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]

    /// Candidates for the CUDA driver.
    public static let driverCandidates = ["libcuda.so.1", "libcuda.so"]

    /// Candidates for NVRTC given the environment and the site-packages folders to look in.
    public static func nvrtcCandidates(environment: [String: String], sitePackages: [String]) -> [String] {
        var candidates = [String]()
        if let path = environment["FMHA_NVRTC_PATH"], !path.isEmpty {
            candidates += path.hasSuffix(".so") || path.contains(".so.") ? [path] : nvrtcNames.map { path + "/" + $0 }
        }
        for variable in ["CUDA_HOME", "CUDA_PATH"] {
            if let root = environment[variable], !root.isEmpty { candidates += nvrtcNames.map { root + "/lib64/" + $0 } }
        }
        candidates += nvrtcNames.map { "/usr/local/cuda/lib64/" + $0 }
        for folder in sitePackages {
            candidates.append(folder + "/nvidia/cu13/lib/libnvrtc.so.13")
            candidates.append(folder + "/nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
        }
        return candidates + nvrtcNames
    }

    /// The environment variables the search reads.
    public static var environment: [String: String] {
        variables(["FMHA_NVRTC_PATH", "CUDA_HOME", "CUDA_PATH", "VIRTUAL_ENV", "HOME"])
    }

    /// This process's values of the environment variables `names` (unset ones absent).
    package static func variables(_ names: [String]) -> [String: String] {
        var values = [String: String]()
        for name in names {
            if let value = getenv(name) { values[name] = String(cString: value) }
        }
        return values
    }

    /// Python site-packages folders on this machine: the active virtualenv's, the user's, the
    /// system's and pyenv's.
    public static func sitePackages(environment: [String: String]) -> [String] {
        var roots = ["/usr/lib", "/usr/local/lib"]
        if let venv = environment["VIRTUAL_ENV"] { roots.append(venv + "/lib") }
        if let home = environment["HOME"] {
            roots.append(home + "/.local/lib")
            roots += directoryEntries(home + "/.pyenv/versions").map { home + "/.pyenv/versions/" + $0 + "/lib" }
        }
        var folders = [String]()
        for root in roots {
            for python in directoryEntries(root) where python.hasPrefix("python3") {
                for kind in ["site-packages", "dist-packages"] where isDirectory(root + "/" + python + "/" + kind) {
                    folders.append(root + "/" + python + "/" + kind)
                }
            }
        }
        return folders
    }

    /// Names in a folder, sorted, without `.` and `..` (empty when it cannot be read).
    package static func directoryEntries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names = [String]()
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != ".", name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    package static func isDirectory(_ path: String) -> Bool {
        var information = stat()
        return stat(path, &information) == 0 && (information.st_mode & S_IFMT) == S_IFDIR
    }
}
