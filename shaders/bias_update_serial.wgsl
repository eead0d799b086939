// bias_update_serial: bias_update.wgsl for CPU adapters (lavapipe): the same sums in the same
// order, one invocation per bias instead of one workgroup.
//
//   out[n] = alpha · Σ_r f32(delta[r, n])  (+ beta · out[n])
//
// bias_update.wgsl gives each bias a workgroup of 64 threads and adds their partial sums as a
// tree in workgroup memory, a barrier between levels: right for a GPU. On lavapipe a workgroup
// is one CPU thread stepping its invocations eight lanes at a time, and every barrier switches
// between those batches (a coroutine each): 128 biases × 7 barriers made the hidden layer's
// bias 0.47-0.54 ms of a 3.4-5.2 ms step on a Zen 4 VM. Here one invocation computes the 64
// partial sums (partial t: rows t, t + 64, ...) and the same tree, level by level, in private
// memory: every addition as bias_update.wgsl makes it, so the same bits, with no barrier.
// Shapes: delta is (rows, cols), out is (cols); 64 biases a workgroup.
// delta is Elem (f32, or f16 under --precision f16), which a
// one-line prelude chosen at pipeline creation defines (abi::Elems::prelude).
// Under f16 the sums are f32 (the gradient buffer is f32): alpha = 1, beta = 0, the gradient.

struct Params {
    rows: u32,
    cols: u32,
    alpha: f32,
    beta: f32,
}

// The tree's width: bias_update.wgsl's WORKGROUP (its threads' partial sums).
const WORKGROUP: u32 = 64u;
// Biases a workgroup.
const LANES: u32 = 64u;

@group(0) @binding(0) var<storage, read> delta: array<Elem>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(LANES)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x;
    if n >= params.cols {
        return;
    }
    // Partial sum t: 0 + rows t, t + 64, ... in that order, as thread t of bias_update.wgsl
    // adds them; a block of 64 rows at a time, so every loop over t has a constant length.
    var part: array<f32, WORKGROUP>;
    for (var r0 = 0u; r0 < params.rows; r0 += WORKGROUP) {
        for (var t = 0u; t < WORKGROUP; t++) {
            if r0 + t < params.rows {
                part[t] += f32(delta[(r0 + t) * params.cols + n]);
            }
        }
    }
    // The tree's six levels, each a loop of constant length (so the compiler can unroll them
    // and keep `part` in registers).
    for (var t = 0u; t < 32u; t++) {
        part[t] += part[t + 32u];
    }
    for (var t = 0u; t < 16u; t++) {
        part[t] += part[t + 16u];
    }
    for (var t = 0u; t < 8u; t++) {
        part[t] += part[t + 8u];
    }
    for (var t = 0u; t < 4u; t++) {
        part[t] += part[t + 4u];
    }
    for (var t = 0u; t < 2u; t++) {
        part[t] += part[t + 2u];
    }
    part[0] += part[1];
    var v = params.alpha * part[0];
    if params.beta != 0.0 {
        v += params.beta * out[n];
    }
    out[n] = v;
}
