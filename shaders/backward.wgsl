// backward: everything the backward pass computes from δ2 except the hidden layer's weights, in
// one dispatch (it was four: the δ1 product, ∂W2's product, and the two bias sums).
//
//   hidden neuron j (its thread holds its column of W2 in registers):
//     δ1[r, j]  = (Σ_c δ2[r, c] · W2[c, j]) ⊙ [h[r, j] > 0]        c ascending (ReLU′)
//     ∂W2[c, j] = Σ_r δ2[r, c] · h[r, j]                             r ascending
//     ∂b1[j]    = Σ_r δ1[r, j]                                      r ascending, δ1 as stored
//   output neuron c (a thread each, after the neurons' threads):
//     ∂b2[c]    = Σ_r δ2[r, c]                                      r ascending
//   each written as  out = alpha · ∂ + beta · out:
//     (1, 0)    the gradient, into the f32 gradient buffer (the data-parallel step, f16)
//     (−lr, 1)  the fused update, into the f32 weights themselves: the gradient never exists
//
// Why it may update W2 while computing δ1 from W2: the thread of neuron j reads column j of W2
// into registers before anything is written, and only that thread writes column j. So δ1 uses
// the weights of the forward pass, as the chain rule wants, and no thread reads what another
// writes. ∂b1 is free here: the thread of neuron j has just computed every δ1[r, j].
//
// Why: at batch 64 these are 64·128·10 multiply-adds each, a few µs of dependent dispatches on
// a big GPU for almost no arithmetic (BENCHMARKS.md, "Where a step's time goes").
//
// COLS_PER_THREAD: neurons a thread takes (j0 .. j0 + C − 1): 1 in the hardware family, 8 in
// the family made for CPU adapters (gpu/kernels.rs rewrites the line), where each δ2 loaded then
// serves 8 neurons. Every sum is the same in the same order either way.
//
// Shapes: dlogits (rows, 10) Elem (δ2, loss-scaled under f16); h (rows, hidden) Elem; weights
// the parameters in the working precision, W2 at w2_at; dh (rows, hidden) Elem, written; dest
// f32 (the weights or their gradient), W2 at t_w2_at, b2 at t_b2_at, b1 at t_b1_at. in_place = 1:
// W2 is read from `dest` (the fused update, where dest is the weights; `weights` is then
// not read). Written over `Elem` (f32, or f16 under --precision f16: every sum f32, δ1 rounded
// to f16 as stored, and ∂b1 summed from the stored values, as the separate kernels did).

struct Params {
    rows: u32,
    hidden: u32,
    alpha: f32,
    beta: f32,
    in_place: u32,
    w2_at: u32,
    t_w2_at: u32,
    t_b2_at: u32,
    t_b1_at: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The output layer's width (data::CLASSES).
const CLASSES: u32 = 10u;
// 64 threads a workgroup: ⌈hidden / COLS_PER_THREAD⌉ threads for the neurons, then 10 for the
// output biases. 8 on CPU adapters (gpu/kernels.rs rewrites the line): there 16 threads do the
// neurons, and workgroups of 8 let both of a 2-core CPU's cores take some (no thread here
// talks to another, so the size changes nothing else).
const WORKGROUP: u32 = 64u;
// Neurons a thread computes together (the line gpu/kernels.rs rewrites for CPU adapters).
const COLS_PER_THREAD: u32 = 1u;

@group(0) @binding(0) var<storage, read> dlogits: array<Elem>;
@group(0) @binding(1) var<storage, read> h: array<Elem>;
@group(0) @binding(2) var<storage, read> weights: array<Elem>;
@group(0) @binding(3) var<storage, read_write> dh: array<Elem>;
@group(0) @binding(4) var<storage, read_write> dest: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

// out = alpha · sum + beta · out (beta = 0: out is not read, so it may hold anything).
fn store(i: u32, sum: f32) {
    var v = params.alpha * sum;
    if params.beta != 0.0 {
        v += params.beta * dest[i];
    }
    dest[i] = v;
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hid = params.hidden;
    let threads = (hid + COLS_PER_THREAD - 1u) / COLS_PER_THREAD;
    if gid.x >= threads {
        // ∂b2: one thread an output neuron.
        let c = gid.x - threads;
        if c < CLASSES {
            var acc = 0.0;
            for (var r = 0u; r < params.rows; r++) {
                acc += f32(dlogits[r * CLASSES + c]);
            }
            store(params.t_b2_at + c, acc);
        }
        return;
    }
    let j0 = gid.x * COLS_PER_THREAD;
    // Neurons past the last (hidden not a multiple of the block) are computed on column
    // `last` again and never stored: every loop below has a constant length, which lets the
    // compiler keep the blocks in registers (a CPU adapter indexes a private array through
    // memory otherwise).
    let n = min(COLS_PER_THREAD, hid - j0);
    var col: array<u32, COLS_PER_THREAD>;
    for (var jj = 0u; jj < COLS_PER_THREAD; jj++) {
        col[jj] = j0 + min(jj, n - 1u);
    }
    // Columns j0.. of W2, as the forward pass used them.
    var w: array<array<f32, CLASSES>, COLS_PER_THREAD>;
    for (var jj = 0u; jj < COLS_PER_THREAD; jj++) {
        for (var c = 0u; c < CLASSES; c++) {
            let i = c * hid + col[jj];
            if params.in_place != 0u {
                w[jj][c] = dest[params.t_w2_at + i];
            } else {
                w[jj][c] = f32(weights[params.w2_at + i]);
            }
        }
    }
    var gw: array<array<f32, CLASSES>, COLS_PER_THREAD>;
    var gb: array<f32, COLS_PER_THREAD>;
    for (var r = 0u; r < params.rows; r++) {
        var d: array<f32, CLASSES>;
        for (var c = 0u; c < CLASSES; c++) {
            d[c] = f32(dlogits[r * CLASSES + c]);
        }
        for (var jj = 0u; jj < COLS_PER_THREAD; jj++) {
            let hv = f32(h[r * hid + col[jj]]);
            var acc = 0.0;
            for (var c = 0u; c < CLASSES; c++) {
                acc += d[c] * w[jj][c];
                gw[jj][c] += d[c] * hv;
            }
            // ReLU′: h = ReLU(pre-activation) is above 0 exactly where the pre-activation was.
            var d1 = 0.0;
            if hv > 0.0 {
                d1 = acc;
            }
            let stored = Elem(d1);
            if jj < n {
                dh[r * hid + col[jj]] = stored;
            }
            gb[jj] += f32(stored);
        }
    }
    for (var jj = 0u; jj < COLS_PER_THREAD; jj++) {
        if jj < n {
            for (var c = 0u; c < CLASSES; c++) {
                store(params.t_w2_at + c * hid + col[jj], gw[jj][c]);
            }
            store(params.t_b1_at + col[jj], gb[jj]);
        }
    }
}
