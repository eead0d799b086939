//! Storage-buffer loads against texel fetches on one adapter: why the matmul family has members
//! that read x, W1 and δ1 through texture mirrors (gpu/mirror.rs).
//!
//! The same plain product C = A·Bᵀ (the hidden layer's: A 64×784, B 128×784), each thread an
//! R×C block of sums with vec4 loads along K, written twice: once reading A and B from storage
//! buffers, once from their mirrors (RGBA32F textures, vec4 i at texel (i % 256, i / 256), read
//! as read-only storage textures, as the family's `t` members read them).
//! Prints the time of one product each way and the first dispatch (which includes lavapipe's
//! compile), and checks both against the host.
//!
//! ```text
//! cargo bench --bench texture_loads [-- ADAPTER]
//! GALLIUM_OVERRIDE_CPU_CAPS=avx cargo bench --bench texture_loads   # llvmpipe without AVX-512
//! ```
use gpu_train::gpu::dispatch::{run_now, storage, storage_zeroed};
use gpu_train::gpu::mirror::Mirror;
use gpu_train::abi::TEXELS_PER_ROW;
use gpu_train::gpu::context::Gpu;
use std::time::Instant;

const M: u32 = 64;
const N: u32 = 128;
const K: u32 = 784;

/// The kernel: R×C sums a thread, rows row0 + 8i, columns col0 + 8j, each sum in k order.
fn kernel(textures: bool, r: u32, c: u32) -> String {
    let mut s = String::new();
    if textures {
        for (i, name) in ["a", "b"].iter().enumerate() {
            s += &format!(
                "@group(0) @binding({i}) var t{name}: texture_storage_2d<rgba32float, read>;\n\
                 fn load_{name}(i: u32) -> vec4<f32> {{ return textureLoad(t{name}, \
                 vec2<u32>(i % {TEXELS_PER_ROW}u, i / {TEXELS_PER_ROW}u)); }}\n"
            );
        }
    } else {
        for (i, name) in ["a", "b"].iter().enumerate() {
            s += &format!(
                "@group(0) @binding({i}) var<storage, read> {name}: array<vec4<f32>>;\n\
                 fn load_{name}(i: u32) -> vec4<f32> {{ return {name}[i]; }}\n"
            );
        }
    }
    s += "@group(0) @binding(2) var<storage, read_write> out: array<f32>;\n";
    s += "@compute @workgroup_size(8, 8)\nfn main(@builtin(local_invocation_id) lid: vec3<u32>, \
          @builtin(workgroup_id) wid: vec3<u32>) {\n";
    s += &format!(
        "    let row0 = wid.y * {}u + lid.y;\n    let col0 = wid.x * {}u + lid.x;\n",
        8 * r,
        8 * c
    );
    let sums = |f: &dyn Fn(u32, u32) -> String| {
        (0..r)
            .flat_map(|i| (0..c).map(move |j| (i, j)))
            .map(|(i, j)| f(i, j))
            .collect::<String>()
    };
    s += &sums(&|i, j| format!("    var s{i}_{j} = 0.0;\n"));
    s += &format!("    for (var k = 0u; k < {}u; k++) {{\n", K / 4);
    for i in 0..r {
        s += &format!(
            "        let a{i} = load_a((row0 + {}u) * {}u + k);\n",
            8 * i,
            K / 4
        );
    }
    for j in 0..c {
        s += &format!(
            "        let b{j} = load_b((col0 + {}u) * {}u + k);\n",
            8 * j,
            K / 4
        );
    }
    s += &sums(&|i, j| {
        ["x", "y", "z", "w"]
            .map(|q| format!("        s{i}_{j} += a{i}.{q} * b{j}.{q};\n"))
            .concat()
    });
    s += "    }\n";
    s += &sums(&|i, j| {
        format!(
            "    out[(row0 + {}u) * {N}u + col0 + {}u] = s{i}_{j};\n",
            8 * i,
            8 * j
        )
    });
    s + "}\n"
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let g = Gpu::open(args.get(1).map_or(0, |s| s.parse().unwrap())).unwrap();
    let d = &g.device;
    println!("{} ({:?})", g.info.name, g.info.backend);
    let fill = |n: u32| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0)
            .collect()
    };
    let (a, b) = (fill(M * K), fill(N * K));
    let (ab, bb) = (storage(d, "A", &a), storage(d, "B", &b));
    let (ta, tb) = (
        Mirror::of(&g, &ab, a.len(), false),
        Mirror::of(&g, &bb, b.len(), false),
    );
    let out = storage_zeroed(d, "C", (M * N) as usize);
    let want: Vec<f32> = (0..M * N)
        .map(|i| {
            let (m, n) = ((i / N) as usize, (i % N) as usize);
            (0..K as usize).fold(0.0, |s, k| s + a[m * 784 + k] * b[n * 784 + k])
        })
        .collect();
    for (r, c) in [(8u32, 8u32), (8, 4), (4, 4)] {
        for textures in [false, true] {
            let t = Instant::now();
            let pipeline = gpu_train::gpu::kernels::pipeline(d, "product", &kernel(textures, r, c));
            let res = match textures {
                true => [
                    wgpu::BindingResource::TextureView(&ta.view),
                    wgpu::BindingResource::TextureView(&tb.view),
                ],
                false => [ab.as_entire_binding(), bb.as_entire_binding()],
            };
            let [r0, r1] = res;
            let bind_group = d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: r0,
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: r1,
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: out.as_entire_binding(),
                    },
                ],
            });
            let dispatch = gpu_train::gpu::dispatch::Dispatch {
                name: "product",
                pipeline,
                bind_group,
                workgroups: (N / (8 * c), M / (8 * r), 1),
                phase: "",
                flops: 0.0,
                bytes: 0.0,
                params: None,
            };
            run_now(&g, &[&dispatch]).unwrap();
            let first = t.elapsed().as_secs_f64();
            let got = g.read_f32(&out).unwrap();
            let same = got
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            let reps = 20;
            let t = Instant::now();
            run_now(&g, &vec![&dispatch; reps]).unwrap();
            let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            println!(
                "{r}x{c} a thread, {:<8}: {ms:7.3} ms a product, first dispatch {first:.2} s, {}",
                if textures { "textures" } else { "buffers" },
                if same {
                    "the host's sums bit for bit"
                } else {
                    "NOT the host's sums"
                }
            );
        }
    }
}
