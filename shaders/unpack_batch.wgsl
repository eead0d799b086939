// unpack_batch: gather a mini-batch and turn its pixels into the floats the network sees.
//
//   x[r, 4w + i]    = byte i of pixels[indices[r] * words_per_image + w] / 255     i = 0..3
//   batch_labels[r] = labels[indices[r]]
//
// Shapes: pixels is the u8 images packed four to a u32 (784 pixels = 196 words an image),
// little-endian, exactly as the bytes sit in system RAM; x is (rows, 784) Elem, row-major.
// Written over the element type `Elem` (f32, or f16 under --precision f16), which a
// one-line prelude chosen at pipeline creation defines (abi::Elems::prelude).
// Under f16: a pixel p/255 needs 8 significant bits and f16 has 11, so x is exact to within
// half a step of 1/2048 (the CPU twin rounds the same value with the half crate), in half the
// bytes.
// The same kernel serves both data paths: with staging, `pixels` is the batch's own slot and
// `indices` is 0, 1, 2, ...; with the data set resident in VRAM, `pixels` is the whole set and
// `indices` is the batch's positions in it.
// One thread: one u32 word = four pixels of one image row.

struct Params {
    rows: u32,
    words_per_image: u32,
}

// 64 threads: a multiple of every GPU's SIMD width (32 on NVIDIA, 64 on AMD, 8-16 on lavapipe).
const WORKGROUP: u32 = 64u;

@group(0) @binding(0) var<storage, read> pixels: array<u32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
// x as vec4s: four pixels of a row, x[r, 4w .. 4w + 3] (784 = 4 · 196, so rows stay whole).
@group(0) @binding(3) var<storage, read_write> x: array<vec4<Elem>>;
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
    // unpack4x8unorm: the four bytes of a u32, lowest first, each divided by 255.
    let v = unpack4x8unorm(pixels[src * params.words_per_image + w]);
    // One vec4 store, not four: on lavapipe every store is a loop over the lanes.
    x[t] = vec4<Elem>(v);
    if w == 0u {
        batch_labels[r] = labels[src];
    }
}
