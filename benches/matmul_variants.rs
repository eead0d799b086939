//! Times one matmul WGSL file (any file with matmul.wgsl's bindings and Params) on the model's
//! two large products at batch 64: the hidden layer's forward product x·W1ᵀ and its weight
//! product δ1ᵀ·x. How the variants in shaders/ and their register-block shapes were compared
//! (BENCHMARKS.md):
//!
//! ```text
//! cargo bench --bench matmul_variants -- FILE.wgsl BLOCK_MxBLOCK_N SPLITS [ADAPTER]
//! cargo bench --bench matmul_variants -- shaders/matmul_reg8x4.wgsl 64x32 1
//! UNCHECKED=1 cargo bench ...   # compiled without wgpu's runtime bounds checks
//! R=4 CC=8 UNCHECKED=1 cargo bench --bench matmul_variants -- shaders/matmul_reg8x4.wgsl 32x64 1
//! ```
//! `R` and `CC` (environment) replace the file's `const R` and `const CC`: one template for
//! every register-block shape (its block is 8·R × 8·CC), no copies of the kernel to drift.
use gpu_train::abi::{row_major, transposed, MatmulParams};
use gpu_train::gpu::dispatch::{run_now, storage, Dispatch};
use gpu_train::gpu::context::Gpu;
use std::time::Instant;
fn main() {
    // cargo bench passes "--bench" first; the file is the first argument ending in .wgsl.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let Some(path) = args.get(1).cloned() else {
        eprintln!("usage: cargo bench --bench matmul_variants -- FILE.wgsl BLOCKMxBLOCKN SPLITS [ADAPTER]");
        return;
    };
    let bs: Vec<u32> = args[2].split('x').map(|s| s.parse().unwrap()).collect();
    let (bm, bn) = (bs[0], bs[bs.len() - 1]);
    let splits: u32 = args[3].parse().unwrap();
    // (cargo passes "--bench" among the arguments: `args` is without it.)
    let g = Gpu::open(args.get(4).map(|s| s.parse().unwrap()).unwrap_or(0)).unwrap();
    let mut src = std::fs::read_to_string(&path).unwrap();
    for name in ["R", "CC"] {
        if let Ok(v) = std::env::var(name) {
            let v: u32 = v.parse().expect("R and CC are whole numbers");
            let (from, to) = (
                src.lines()
                    .find(|l| l.starts_with(&format!("const {name}: u32 = ")))
                    .unwrap_or_else(|| panic!("{path} has no `const {name}` to replace"))
                    .to_string(),
                format!("const {name}: u32 = {v}u;"),
            );
            src = src.replace(&from, &to);
            eprintln!("{to}");
        }
    }
    let d = &g.device;
    let desc = wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    };
    let module = if std::env::var_os("UNCHECKED").is_some() {
        unsafe { d.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    } else {
        d.create_shader_module(desc)
    };
    let pipe = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let (b, hid, pix) = (64u32, 128u32, 784u32);
    let buf = |n: u32| {
        storage(
            d,
            "buf",
            &(0..n)
                .map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0)
                .collect::<Vec<f32>>(),
        )
    };
    let (x, w1, b1, h, dh, part, mk) = (
        buf(b * pix),
        buf(hid * pix),
        buf(hid),
        buf(b * hid),
        buf(b * hid),
        buf(16 * b * hid),
        buf(hid * pix),
    );
    let wb = |p: &MatmulParams| (p.n.div_ceil(bn), p.m.div_ceil(bm), p.splits);
    for (name, p, a, bb, c) in [
        (
            "hidden x·W1ᵀ",
            MatmulParams::new(
                (b, hid, pix),
                row_major(pix),
                transposed(pix),
                1.0,
                0.0,
                gpu_train::abi::HAS_BIAS | gpu_train::abi::RELU,
                splits,
            ),
            &x,
            &w1,
            if splits > 1 { &part } else { &h },
        ),
        (
            "W1 update δ1ᵀ·x",
            MatmulParams::new(
                (hid, pix, b),
                transposed(hid),
                row_major(pix),
                -0.1,
                1.0,
                0,
                1,
            ),
            &dh,
            &x,
            &w1,
        ),
    ] {
        let disp = Dispatch::new(
            d,
            "mm",
            &pipe,
            &[
                a.as_entire_binding(),
                bb.as_entire_binding(),
                b1.as_entire_binding(),
                mk.as_entire_binding(),
                c.as_entire_binding(),
            ],
            &p,
            wb(&p),
        );
        run_now(&g, &[&disp]).unwrap();
        let reps = 20;
        let list: Vec<&Dispatch> = std::iter::repeat_n(&disp, reps).collect();
        let t = Instant::now();
        run_now(&g, &list).unwrap();
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{name}: {:.0} µs, {:.2} GFLOP/s",
            s * 1e6,
            p.work().0 / s / 1e9
        );
    }
}
