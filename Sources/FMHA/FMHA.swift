// FMHA is the module users import: the entry points and dispatch live here, and it re-exports
// the core types (Tensor, DType, Device, every attention bias, Inputs, operators, FMHAError) and
// the CPU and CUDA operators, so that `op: ReferenceForward()` needs no other import.
@_exported import FMHACPU
@_exported import FMHACUDA
@_exported import FMHACore
