// bias_grad_f16: bias_update.wgsl reading f16 error terms (--precision f16): a layer's bias
// gradient, summed in f32 into the f32 gradient buffer.
//
//   out[n] = alpha · Σ_r f32(delta[r, n])  (+ beta · out[n])        alpha = 1, beta = 0 here
//
// Shapes: delta (rows, cols) f16, out (cols) f32. One workgroup: one bias, a tree sum, exactly
// as bias_update.wgsl.

enable f16;

struct Params {
    rows: u32,
    cols: u32,
    alpha: f32,
    beta: f32,
}

// 64 threads: one row each for the default batch of 64; a power of two for the tree sum.
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> delta: array<f16>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> part: array<f32, WORKGROUP>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let n = wid.x;
    if n >= params.cols {
        return;
    }
    let t = lid.x;
    var sum = 0.0;
    for (var r = t; r < params.rows; r += WORKGROUP) {
        sum += f32(delta[r * params.cols + n]);
    }
    part[t] = sum;
    workgroupBarrier();
    for (var s = WORKGROUP / 2u; s > 0u; s = s / 2u) {
        if t < s {
            part[t] += part[t + s];
        }
        workgroupBarrier();
    }
    if t == 0u {
        var v = params.alpha * part[0];
        if params.beta != 0.0 {
            v += params.beta * out[n];
        }
        out[n] = v;
    }
}
