// unpack_batch_f16: unpack_batch.wgsl for half precision: the batch's pixels become f16.
//
//   x[r, 4w + i]    = f16(byte i of pixels[indices[r] * words_per_image + w] / 255)
//   batch_labels[r] = labels[indices[r]]
//
// A pixel p/255 needs 8 significant bits; f16 has 11, so the f16 input is exact to within
// half a step of 1/2048 (the CPU twin rounds the same value with the half crate).
// Shapes and bindings as unpack_batch.wgsl, with x (rows, 784) in f16: half the bytes.
// One thread: one u32 word = four pixels of one image row.

enable f16;

struct Params {
    rows: u32,
    words_per_image: u32,
}

// 64 threads, as unpack_batch.wgsl.
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> pixels: array<u32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
// x as vec4s: four pixels of a row, x[r, 4w .. 4w + 3] (784 = 4 · 196, so rows stay whole).
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read_write> batch_labels: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if t >= params.rows * params.words_per_image {
        return;
    }
    let r = t / params.words_per_image;
    let w = t % params.words_per_image;
    let src = indices[r];
    let v = unpack4x8unorm(pixels[src * params.words_per_image + w]);
    // One vec4 store, not four: on lavapipe every store is a loop over the lanes.
    x[t] = vec4<f16>(v);
    if w == 0u {
        batch_labels[r] = labels[src];
    }
}
