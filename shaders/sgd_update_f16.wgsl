// sgd_update_f16: sgd_update.wgsl for --precision f16: the FP32 master weights take the step,
// then the f16 working copy the kernels read is refreshed from them.
//
//   param[i]   = param[i] − lr · grad[i]        f32 master weights, f32 gradient
//   param16[i] = f16(param[i])                  the working copy
//
// Why keep FP32 masters: a typical step changes a weight by lr·g ≈ 1e-5 to 1e-3 of its size;
// f16 has 11 significant bits, so added to the f16 weight most such steps would round away.
// Snapshots save the masters, so a resumed f16 run continues exactly and PyTorch still loads
// them. One thread: one parameter.

enable f16;

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
@group(0) @binding(2) var<storage, read_write> param16: array<f16>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= params.len {
        return;
    }
    let w = param[i] - params.lr * grad[i];
    param[i] = w;
    param16[i] = f16(w);
}
