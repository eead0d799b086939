// head: the output layer, SoftMax, the cross-entropy loss, its gradient and accuracy, for a
// whole batch, in one dispatch (it was three: the output product, a split-K reduction, and
// softmax_xent).
//
//   per row r, with y = labels[r]:
//     splits > 1:  h[r, j] = ReLU(Σ_s partial[s, r, j] + b1[j])     (finishes the hidden layer's
//                  split-K product: its reduction lives here, in its consumer)
//     z[c]       = Σ_j h[r, j] · W2[c, j] + b2[c]                    (j ascending, in f32)
//     p[c]       = exp(z[c] − max z) / Σ_j exp(z[j] − max z)         (stable: no overflow)
//     loss[r]    = −ln p[y] = ln Σ_j exp(z[j] − max z) − (z[y] − max z)
//     correct[r] = 1 if argmax z = y (first maximum wins) else 0
//     divisor > 0: dlogits[r, c] = (p[c] − onehot(y)[c]) / divisor · scale
//   accum[at]     += Σ_r loss[r]
//   accum[at + 1] += Σ_r correct[r]
//
// divisor is the GLOBAL batch: this batch's rows on one device, or the rows of every replica
// together in a data-parallel step, so that summing the replicas' gradients gives the mean over
// the whole global batch even when the last batch is split unevenly. 0: evaluation (no δ2).
// scale is mixed precision's loss scale (1 in f32): δ2 is divided by the batch, so many of its
// values are below f16's smallest normal number (6.1e-5) and would round to 0; multiplied by a
// large scale (2^16 at first) they keep their bits, and the host divides the f32 gradients by
// the same scale before the update (dynamic loss scaling, as PyTorch's GradScaler does it).
//
// Why one kernel: at batch 64 the output layer is 64 × 10 sums of 128 products, 82 thousand
// multiply-adds, far too little work to fill even one multiprocessor. As three dispatches each
// waited for the one before (a few µs each on an H200, most of a step); here each thread takes
// ROWS_PER_THREAD rows at a time (rows t·R .. t·R + R − 1, then 64·R further on), keeps their
// logits in registers, and nothing leaves the workgroup but δ2 and the totals. A single
// workgroup does the whole batch, so the totals are added in workgroup memory: accum needs no
// atomics and the sum is the same on every run.
// ROWS_PER_THREAD is 1 in the hardware family (64 rows side by side) and 8 in the family made
// for CPU adapters (gpu/kernels.rs sets it), where a load costs more than a multiply-add
// (gpu/variants.rs): each weight loaded then serves 8 rows. Every logit is the same sum in the same order either way.

// Shapes: h (rows, hidden) Elem; weights the parameters in the working precision, W2 at w2_at
// (10, hidden) row-major, b2 at b2_at, b1 at b1_at; partial (splits, rows, hidden) f32 (split-K's
// slices, read only when splits > 1, which only f32 steps use); labels (rows) u32; dlogits (rows,
// 10) Elem; accum a few f32 totals that stay on the GPU for a whole epoch and are read back once.
// Written over the element type `Elem` (f32, or f16 under --precision f16), which a one-line
// prelude chosen at pipeline creation defines (abi::Elems::prelude). Every sum is f32.

struct Params {
    rows: u32,
    hidden: u32,
    divisor: u32,
    at: u32,
    // dlogits are multiplied by it (1: the plain gradient).
    scale: f32,
    splits: u32,
    w2_at: u32,
    b2_at: u32,
    b1_at: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// The output layer's width (data::CLASSES): a row's logits live in one thread's registers.
const CLASSES: u32 = 10u;
// 64 threads: one row each for the default batch of 64; a power of two for the tree sum below.
const WORKGROUP: u32 = 64u;
// Rows a thread computes together (the line gpu/kernels.rs rewrites for CPU adapters).
const ROWS_PER_THREAD: u32 = 1u;

@group(0) @binding(0) var<storage, read_write> h: array<Elem>;
@group(0) @binding(1) var<storage, read> weights: array<Elem>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<u32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<Elem>;
@group(0) @binding(5) var<storage, read_write> accum: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

var<workgroup> loss_part: array<f32, WORKGROUP>;
var<workgroup> correct_part: array<f32, WORKGROUP>;

// The loss, accuracy and (training) δ2 of row r from its logits z.
fn finish(r: u32, z: array<f32, CLASSES>) -> vec2<f32> {
    var best = 0u;
    var max_z = z[0];
    for (var c = 1u; c < CLASSES; c++) {
        if z[c] > max_z {
            max_z = z[c];
            best = c;
        }
    }
    var sum = 0.0;
    for (var c = 0u; c < CLASSES; c++) {
        sum += exp(z[c] - max_z);
    }
    let y = labels[r];
    var correct = 0.0;
    if best == y {
        correct = 1.0;
    }
    if params.divisor != 0u {
        for (var c = 0u; c < CLASSES; c++) {
            var onehot = 0.0;
            if c == y {
                onehot = 1.0;
            }
            let p = exp(z[c] - max_z) / sum;
            dlogits[r * CLASSES + c] = Elem((p - onehot) / f32(params.divisor) * params.scale);
        }
    }
    return vec2<f32>(log(sum) - (z[y] - max_z), correct);
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    let hid = params.hidden;
    var loss = 0.0;
    var correct = 0.0;
    for (var r0 = t * ROWS_PER_THREAD; r0 < params.rows; r0 += WORKGROUP * ROWS_PER_THREAD) {
        let n = min(ROWS_PER_THREAD, params.rows - r0);
        // The hidden layer's split-K reduction (matmul.wgsl's epilogue, once the slices are
        // summed: + b1, ReLU).
        if params.splits > 1u {
            let size = params.rows * hid;
            for (var i = 0u; i < n; i++) {
                let hrow = (r0 + i) * hid;
                for (var j = 0u; j < hid; j++) {
                    var acc = 0.0;
                    for (var s = 0u; s < params.splits; s++) {
                        acc += partial[s * size + hrow + j];
                    }
                    h[hrow + j] = Elem(max(acc + f32(weights[params.b1_at + j]), 0.0));
                }
            }
        }
        // The rows' logits: z = h · W2ᵀ + b2, each sum over j in ascending order.
        var acc: array<array<f32, CLASSES>, ROWS_PER_THREAD>;
        for (var j = 0u; j < hid; j++) {
            var hv: array<f32, ROWS_PER_THREAD>;
            for (var i = 0u; i < ROWS_PER_THREAD; i++) {
                if i < n {
                    hv[i] = f32(h[(r0 + i) * hid + j]);
                }
            }
            for (var c = 0u; c < CLASSES; c++) {
                let w = f32(weights[params.w2_at + c * hid + j]);
                for (var i = 0u; i < ROWS_PER_THREAD; i++) {
                    acc[i][c] += hv[i] * w;
                }
            }
        }
        for (var i = 0u; i < n; i++) {
            var z: array<f32, CLASSES>;
            for (var c = 0u; c < CLASSES; c++) {
                z[c] = acc[i][c] + f32(weights[params.b2_at + c]);
            }
            let lc = finish(r0 + i, z);
            loss += lc.x;
            correct += lc.y;
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
