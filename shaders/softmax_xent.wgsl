// softmax_xent: SoftMax, cross-entropy loss, its gradient, and accuracy, for a whole batch.
//
//   per row r, with z = logits[r, :] and y = labels[r]:
//     p[c]          = exp(z[c] − max z) / Σ_j exp(z[j] − max z)     (stable: no overflow)
//     loss[r]       = −ln p[y] = ln Σ_j exp(z[j] − max z) − (z[y] − max z)
//     correct[r]    = 1 if argmax z = y (first maximum wins) else 0
//     divisor > 0:  dlogits[r, c] = (p[c] − onehot(y)[c]) / divisor · scale
//                   (the gradient of the mean loss; scale is mixed precision's loss scale, 1 here
//                   unless a caller asks otherwise)
//   divisor is the GLOBAL batch: this batch's rows on one device, or the rows of every replica
//   together in a data-parallel step, so that summing the replicas' gradients gives the mean
//   over the whole global batch even when the last batch is split unevenly. 0: evaluation.
//   accum[at]     += Σ_r loss[r]
//   accum[at + 1] += Σ_r correct[r]
//
// Shapes: logits (rows, classes) f32, dlogits (rows, classes) Elem, labels (rows) u32, accum a
// few f32 totals that stay on the GPU for a whole epoch and are read back once.
// Written over the element type `Elem` (f32, or f16 under --precision f16), which a
// one-line prelude chosen at pipeline creation defines (abi::Elems::prelude).
// Under f16 the SoftMax, loss and accuracy are the same f32 arithmetic; only δ2 is stored in
// f16, scaled by the loss scale.
// Why scale: δ2 is divided by the batch, so many of its values are below f16's smallest normal
// number (6.1e-5) and would round to 0 (or lose bits as subnormals), and with them the gradients
// computed from them. Multiplying by a large scale (2^16 at first) keeps them in f16's range;
// the host divides the f32 gradients by the same scale before the update, and if a scaled value
// overflowed to infinity the step is skipped and the scale halved (dynamic loss scaling, as
// PyTorch's GradScaler does it).

// (Loading each row into a private array first, and computing each exponential once, measured
// slower on an H200: 7.7 against 6.0-7.0 µs a call.)
// A single workgroup does the whole batch: thread t takes rows t, t+WORKGROUP, ..., then the
// workgroup adds up its threads' totals in workgroup memory, so accum needs no atomics and the
// sum is the same on every run.

struct Params {
    rows: u32,
    classes: u32,
    divisor: u32,
    at: u32,
    // dlogits are multiplied by it (1: the plain gradient).
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// 64 threads: one row each for the default batch of 64; a power of two for the tree sum below.
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> dlogits: array<Elem>;
@group(0) @binding(3) var<storage, read_write> accum: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

var<workgroup> loss_part: array<f32, WORKGROUP>;
var<workgroup> correct_part: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let k = params.classes;
    var loss = 0.0;
    var correct = 0.0;
    for (var r = t; r < params.rows; r += WORKGROUP) {
        let row = r * k;
        var best = 0u;
        var max_z = logits[row];
        for (var c = 1u; c < k; c++) {
            if logits[row + c] > max_z {
                max_z = logits[row + c];
                best = c;
            }
        }
        var sum = 0.0;
        for (var c = 0u; c < k; c++) {
            sum += exp(logits[row + c] - max_z);
        }
        let y = labels[r];
        loss += log(sum) - (logits[row + y] - max_z);
        if best == y {
            correct += 1.0;
        }
        if params.divisor != 0u {
            for (var c = 0u; c < k; c++) {
                var onehot = 0.0;
                if c == y {
                    onehot = 1.0;
                }
                let p = exp(logits[row + c] - max_z) / sum;
                dlogits[row + c] = Elem((p - onehot) / f32(params.divisor) * params.scale);
            }
        }
    }
    loss_part[t] = loss;
    correct_part[t] = correct;
    workgroupBarrier();
    for (var s = WORKGROUP / 2u; s > 0u; s = s / 2u) {
        if t < s {
            loss_part[t] += loss_part[t + s];
            correct_part[t] += correct_part[t + s];
        }
        workgroupBarrier();
    }
    if t == 0u {
        accum[params.at] += loss_part[0];
        accum[params.at + 1u] += correct_part[0];
    }
}
