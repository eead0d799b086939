// Experiment (not in the trainer): 4x8 outputs a thread (block 32x64), addresses clamped once.
// Measured against matmul_reg8x4.wgsl in BENCHMARKS.md (software adapters).
