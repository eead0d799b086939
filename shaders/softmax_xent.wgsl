// softmax_xent: SoftMax, cross-entropy loss, its gradient, and accuracy, for a whole batch.
//
//   per row r, with z = logits[r, :] and y = labels[r]:
//     p[c]          = exp(z[c] − max z) / Σ_j exp(z[j] − max z)     (stable: no overflow)
//     loss[r]       = −ln p[y] = ln Σ_j exp(z[j] − max z) − (z[y] − max z)
//     correct[r]    = 1 if argmax z = y (first maximum wins) else 0
//     grad = 1:  dlogits[r, c] = (p[c] − onehot(y)[c]) / rows        (gradient of the mean loss)
//   accum[at]     += Σ_r loss[r]
//   accum[at + 1] += Σ_r correct[r]
//
// Shapes: logits and dlogits are (rows, classes), labels (rows) u32, accum a few f32 totals that
// stay on the GPU for a whole epoch and are read back once.
// A single workgroup does the whole batch: thread t takes rows t, t+WORKGROUP, ..., then the
// workgroup adds up its threads' totals in workgroup memory, so accum needs no atomics and the
// sum is the same on every run.

struct Params {
    rows: u32,
    classes: u32,
    grad: u32,
    at: u32,
}

// 64 threads: one row each for the default batch of 64; a power of two for the tree sum below.
const WORKGROUP: u32 = 64u;
// Room for a row of logits in registers; the host checks classes <= MAX_CLASSES.
const MAX_CLASSES: u32 = 16u;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> dlogits: array<f32>;
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
        // The row's logits into registers first: ten independent loads the GPU can have in
        // flight together, instead of a load inside every step of the loops below.
        var z: array<f32, MAX_CLASSES>;
        for (var c = 0u; c < k; c++) {
            z[c] = logits[row + c];
        }
        var best = 0u;
        for (var c = 1u; c < k; c++) {
            if z[c] > z[best] {
                best = c;
            }
        }
        let max_z = z[best];
        var sum = 0.0;
        for (var c = 0u; c < k; c++) {
            z[c] = exp(z[c] - max_z);
            sum += z[c];
        }
        let y = labels[r];
        // −ln p[y] = ln Σ exp(z − max) − (z[y] − max), from the logit itself: log(exp(·))
        // would give −∞ where exp underflows.
        loss += log(sum) - (logits[row + y] - max_z);
        if best == y {
            correct += 1.0;
        }
        if params.grad != 0u {
            for (var c = 0u; c < k; c++) {
                var onehot = 0.0;
                if c == y {
                    onehot = 1.0;
                }
                dlogits[row + c] = (z[c] / sum - onehot) / f32(params.rows);
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
