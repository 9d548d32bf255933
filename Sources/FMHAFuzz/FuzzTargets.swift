// The parsers that read what users hand in, as fuzz targets: `.npy` bytes, JSON text, bias
// specifications (with their block tables and sequence lengths, lowered and walked like an
// operator would). Built with `--sanitize fuzzer --sanitize address -Xswiftc -DFUZZING`
// (scripts/fuzz.sh), libFuzzer calls `LLVMFuzzerTestOneInput`; in an ordinary build the
// executable replays files through the same targets: `fmha-fuzz TARGET FILE...`.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import FMHA
import FMHACLI

/// One parser under test: any input may be refused with an `FMHAError`, none may crash.
enum FuzzTarget: String, CaseIterable {
    /// `NumpyFile.decode`.
    case npy
    /// `JSONValue.parse`.
    case json
    /// `BiasSpec.parse`, then the mask lowered and every query's visible keys walked.
    case bias

    /// Feeds `bytes` to the parser; errors it throws are the expected outcome for bad input.
    func run(_ bytes: [UInt8]) {
        do {
            switch self {
            case .npy:
                _ = try NumpyFile.decode(bytes, name: "input")
            case .json:
                _ = try JSONValue.parse(String(decoding: bytes, as: UTF8.self))
            case .bias:
                let bias = try BiasSpec.parse(JSONValue.parse(String(decoding: bytes, as: UTF8.self)),
                                              baseDirectory: "/nonexistent-fmha-fuzz")
                try Self.walk(bias)
            }
        } catch is FMHAError {
        } catch {
            fatalError("\(self) threw a non-FMHAError: \(error)")
        }
    }

    /// Lowers `bias`'s mask for the sizes it describes (when small) and visits every visible key
    /// of every query and every tile, as the operators do.
    static func walk(_ bias: any AttentionBias) throws {
        guard let layout = bias.maskLayout else { return }
        let queries = layout.blocks?.queryCount ?? 9, keys = layout.blocks?.keyCount ?? 11
        guard queries <= 4096, keys <= 1 << 16 else { return }
        let lowering = MaskLowering(layout, queryLength: queries, keyLength: keys)
        for query in 0..<queries { lowering.forEachVisibleKey(query: query) { precondition($0 >= 0 && $0 < keys) } }
        for tile in lowering.tiles(rows: 7) { precondition(tile.keys.isEmpty || tile.keys.lowerBound >= 0) }
        _ = lowering.keyRowsOverlap
    }
}

#if FUZZING
/// The target named by `FMHA_FUZZ_TARGET` (read once).
let fuzzTarget: FuzzTarget = {
    let name = getenv("FMHA_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        fatalError("set FMHA_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue))")
    }
    return target
}()

/// libFuzzer's entry point: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzTarget.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
#else
/// Replays files through a target: `fmha-fuzz TARGET FILE...` (exit 0 when none crashed).
@main enum FuzzReplay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: fmha-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) FILE...")
            exit(2)
        }
        for path in arguments.dropFirst() {
            guard let file = fopen(path, "rb") else { continue }
            var bytes = [UInt8](), buffer = [UInt8](repeating: 0, count: 1 << 16)
            while case let count = fread(&buffer, 1, buffer.count, file), count > 0 { bytes += buffer[..<count] }
            fclose(file)
            target.run(bytes)
        }
    }
}
#endif
