import FMHA
import Testing
@testable import FMHACLI

/// `fmha run --grad-output … --dq … --dk … --dv … [--dbias …]`: the backward from the shell, with
/// the forward's dropout replayed, equal to the library's gradients.
@Suite struct RunGradientsTests {
    @Test func gradientsMatchTheLibraryWithDropoutAndTensorBias() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let shapes = [[1, 5, 2, 8], [1, 7, 2, 8], [1, 7, 2, 4], [1, 5, 2, 4], [1, 2, 5, 7]]
        let names = ["q.npy", "k.npy", "v.npy", "do.npy", "b.npy"]
        let tensors = try zip(names, shapes).enumerated().map { index, pair in
            let tensor = try Tensor.randn(pair.1, seed: UInt64(20 + index))
            try NumpyFile.write(tensor, path: directory.file(pair.0))
            return tensor
        }
        let spec = directory.file("bias.json")
        try FileBytes.write(Array(#"{"type": "LowerTriangularMaskWithTensorBias", "path": "b.npy"}"#.utf8), path: spec)
        let bias = LowerTriangularMaskWithTensorBias(tensors[4])
        let outputs = ["out", "dq", "dk", "dv", "dbias"].map { directory.file($0 + ".npy") }
        try RunCommand.parse([
            "--query", directory.path + "/q.npy", "--key", directory.path + "/k.npy", "--value", directory.path + "/v.npy",
            "--bias", spec, "--p", "0.3", "--seed", "11", "--out", outputs[0], "--grad-output", directory.path + "/do.npy",
            "--dq", outputs[1], "--dk", outputs[2], "--dv", outputs[3], "--dbias", outputs[4],
        ]).run()

        let forward = try memoryEfficientAttentionForwardRequiresGrad(tensors[0], tensors[1], tensors[2], bias: bias, p: 0.3, seed: 11)
        let expected = try memoryEfficientAttentionBackward(tensors[3], output: forward.output, lse: forward.lse, query: tensors[0],
                                                            key: tensors[1], value: tensors[2], bias: bias, dropout: forward.dropout)
        #expect(try NumpyFile.read(path: outputs[0]).toArray() == forward.output.toArray())
        for (path, gradient) in zip(outputs.dropFirst(), [expected.dq, expected.dk, expected.dv, try #require(expected.dBias)]) {
            let written = try NumpyFile.read(path: path)
            #expect(try written.shape == gradient.shape && written.toArray() == gradient.toArray(), "\(path)")
        }
    }

    @Test func gradientOutputsNeedTheirInputs() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        for name in ["q.npy", "k.npy", "v.npy"] { try NumpyFile.write(try Tensor.randn([1, 3, 1, 8], seed: 1), path: directory.file(name)) }
        let base = ["--query", directory.path + "/q.npy", "--key", directory.path + "/k.npy", "--value", directory.path + "/v.npy",
                    "--out", directory.file("out.npy")]
        expectFMHAError(["--dq", "--grad-output"]) { try RunCommand.parse(base + ["--dq", directory.file("dq.npy")]).run() }
        try NumpyFile.write(try Tensor.randn([1, 3, 1, 8], seed: 2), path: directory.file("do.npy"))
        expectFMHAError(["--dbias", "no bias"]) {
            try RunCommand.parse(base + ["--grad-output", directory.path + "/do.npy", "--dbias", directory.file("db.npy")]).run()
        }
    }
}
