// Experiment (not in the trainer): 4x4 outputs a thread, each load clamped with a select.
// Measured against matmul_reg8x4.wgsl in BENCHMARKS.md (software adapters).
