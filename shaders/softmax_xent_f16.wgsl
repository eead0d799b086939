// softmax_xent_f16: softmax_xent.wgsl for --precision f16: the same SoftMax, loss and accuracy
// from f32 logits, with the output error term δ2 stored in f16 and scaled by the loss scale.
//
//   dlogits[r, c] = f16((p[c] − onehot(y)[c]) / divisor · scale)
//
// Why scale: δ2 is divided by the batch, so many of its values are below f16's smallest normal
// number (6.1e-5) and would round to 0 (or lose bits as subnormals), and with them the gradients
// computed from them. Multiplying by a large scale (2^16 at first) keeps them in f16's range;
// the host divides the f32 gradients by the same scale before the update, and if a scaled value
// overflowed to infinity the step is skipped and the scale halved (dynamic loss scaling, as
// PyTorch's GradScaler does it). Everything else as softmax_xent.wgsl.

enable f16;

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
@group(0) @binding(2) var<storage, read_write> dlogits: array<f16>;
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
                dlogits[row + c] = f16((p - onehot) / f32(params.divisor) * params.scale);
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
