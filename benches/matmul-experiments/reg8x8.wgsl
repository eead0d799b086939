// Experiment (not in the trainer): 8x8 outputs a thread (block 64x64): too many registers, spills.
// Measured against matmul_reg8x4.wgsl in BENCHMARKS.md (software adapters).
