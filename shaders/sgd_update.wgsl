// sgd_update: plain SGD on every parameter of the model at once.
//
//   param[i] = param[i] − lr · grad[i]        for i < len        (f32 master weights)
//   f16 only: param16[i] = f16(param[i])      the working copy the f16 kernels read
//
// `param` and `grad` are the flat buffers of model::ParamLayout (hidden.weight, hidden.bias,
// output.weight, output.bias, same offsets in both), so one dispatch updates all 101,770
// parameters. `grad` holds the gradient of the mean loss over the GLOBAL batch: in a
// data-parallel run, the sum the all-reduce produced of every replica's gradient (each replica
// divides by the global batch, so that sum is already the mean). This kernel is the third verb
// of a step: forward+backward → all-reduce → update.
// The learning rate lives in a uniform the host writes before every step, so a schedule can
// change it without rebuilding anything.
// Under f32 there is no working copy: `HALF` (from the prelude, abi::Elems::prelude) is
// false, and a 4-byte placeholder is bound as param16, never written.
// Why keep FP32 masters: a typical step changes a weight by lr·g ≈ 1e-5 to 1e-3 of its size;
// f16 has 11 significant bits, so added to the f16 weight most such steps would round away.
// Snapshots save the masters, so a resumed f16 run continues exactly and PyTorch still loads
// them. One thread: one parameter.

struct Params {
    len: u32,
    lr: f32,
    _pad0: u32,
    _pad1: u32,
}

// 64 threads, like the other 1-D kernels: a multiple of every GPU's SIMD width (32 on NVIDIA,
// 64 on AMD, 8 on llvmpipe's AVX2 lanes).
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> param16: array<Elem>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= params.len {
        return;
    }
    let w = param[i] - params.lr * grad[i];
    param[i] = w;
    if HALF {
        param16[i] = Elem(w);
    }
}
