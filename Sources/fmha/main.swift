import FMHA

// `fmha`: the command-line tool. It lists what this build of FMHA offers; `run`, `check` and
// `bench` arrive with the operators.
print("FMHA: memory-efficient attention in Swift")
print("dtypes: \(DType.allCases.map(\.rawValue).joined(separator: ", "))")
print("attention biases:")
for biasType in attentionBiasTypes {
    print("  \(biasType.name)")
}
