#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

import Synchronization

/// Host memory for tensors, taken so that a request the machine cannot hold throws an
/// `FMHAError` of kind `.outOfMemory` instead of trapping.
///
/// `posix_memalign` reports failure instead of trapping. Linux may still overcommit (promise
/// memory that faults, or gets the process killed, only when touched), so a request is also
/// refused when it and the bytes that live host tensors hold together exceed the machine's
/// physical memory. Blocks are zero-filled with `memset`: `calloc`'s fresh zero pages for large
/// blocks made every call fault its outputs in again (the CPU backward ran ~20 % slower).
package enum HostMemory {
    /// Alignment of every block `allocate` hands out, in bytes.
    static let alignment = 64

    /// Physical memory in bytes (`sysconf`); `Int.max` when the system does not say.
    package static let capacity: Int = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageSize > 0 else { return Int.max }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: pageSize)
        return overflow ? Int.max : bytes
    }()

    /// Bytes held by live host `TensorStorage`s.
    private static let held = Atomic<Int>(0)

    /// Throws unless an array of `shape` with elements of `elementSize` bytes fits beside what
    /// live host tensors hold: the check before a Swift array sized from a caller's shapes, which
    /// would trap where it cannot be allocated. `argument` and `what` name the array in the error
    /// ("query/value", "a float64 output of shape").
    package static func checkFits(shape: [Int], elementSize: Int, argument: String, what: String) throws {
        let (bytes, overflow) = try Tensor.checkedCount(shape, argument: argument).multipliedReportingOverflow(by: elementSize)
        let available = capacity - held.load(ordering: .relaxed)
        guard !overflow, bytes <= available else {
            throw error(argument: argument, given: "\(what) \(shape)", bytes: overflow ? nil : bytes, free: available)
        }
    }

    /// A zero-filled block of `byteCount` bytes (at least 1), aligned to `alignment`, counted as
    /// held until `release`d; `argument` and `given` name the request in the error.
    static func allocate(byteCount: Int, argument: String, given: String) throws -> Block {
        let available = capacity - held.load(ordering: .relaxed)
        guard byteCount <= available - alignment else {
            throw error(argument: argument, given: given, bytes: byteCount, free: available)
        }
        let total = held.add(byteCount, ordering: .relaxed).newValue
        var raw: UnsafeMutableRawPointer?
        guard total <= capacity, posix_memalign(&raw, alignment, max(byteCount, 1)) == 0, let start = raw else {
            held.subtract(byteCount, ordering: .relaxed)
            throw error(argument: argument, given: given, bytes: byteCount, free: capacity - total + byteCount)
        }
        memset(start, 0, max(byteCount, 1))
        return Block(address: start, byteCount: byteCount)
    }

    /// Frees `block` and stops counting its bytes as held.
    static func release(_ block: Block) {
        free(block.address)
        held.subtract(block.byteCount, ordering: .relaxed)
    }

    /// A block from `allocate`.
    struct Block {
        /// The first byte (64-byte aligned): where the data lives, and what `free` takes.
        let address: UnsafeMutableRawPointer
        /// Bytes requested.
        let byteCount: Int
    }

    /// "shape: expected at most N bytes of host memory (…), got … (M bytes)".
    private static func error(argument: String, given: String, bytes: Int?, free: Int) -> FMHAError {
        let size = bytes.map { "\($0) bytes" } ?? "more bytes than fit in Int"
        let limit = capacity == Int.max ? "what the system can allocate"
            : "at most \(max(free, 0)) bytes of host memory (\(capacity) of physical memory, less \(capacity - free) "
              + "held by live tensors)"
        return FMHAError(.outOfMemory, "\(argument): expected \(limit), got \(given) needing \(size)")
    }
}
