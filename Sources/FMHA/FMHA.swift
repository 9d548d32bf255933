// FMHA is the module users import. It re-exports the core types (Tensor, DType, Device, every
// attention bias, Inputs and FMHAError); the operators and entry points build on them.
@_exported import FMHACore
