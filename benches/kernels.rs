//! `cargo bench --bench kernels`: each kernel of a training step, on this model's shapes
//! (batch 64), timed on GPU adapter 0 by wall clock: `reps` dispatches recorded into one
//! compute pass, one submit, one wait, divided by `reps`. That includes the per-dispatch
//! overhead, which is what a step pays. Prints µs per call and achieved GFLOP/s or GB/s.
//! Figures go in BENCHMARKS.md; nothing here asserts a speed.

use gpu_train::gpu::kernels::Kernels;
use gpu_train::gpu::dispatch::{groups_1d, run_now, storage, Dispatch};
use gpu_train::abi::{row_major, transposed, MatmulParams};
use gpu_train::gpu::context::Gpu;
use std::time::Instant;

fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    b.as_entire_binding()
}

fn time(g: &Gpu, d: &Dispatch, reps: usize) -> f64 {
    run_now(g, &[d]).expect("warm-up");
    let list: Vec<&Dispatch> = std::iter::repeat_n(d, reps).collect();
    let start = Instant::now();
    run_now(g, &list).expect("timed run");
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let Some(g) = Gpu::for_tests() else {
        eprintln!(
            "no GPU adapter: nothing to benchmark (install mesa-vulkan-drivers for lavapipe)"
        );
        return;
    };
    let reps = if g.is_software() { 20 } else { 2000 };
    println!(
        "adapter: {} ({:?}), {reps} dispatches per measurement",
        g.info.name, g.info.backend
    );
    let d = &g.device;
    let k = Kernels::new(d, &gpu_train::gpu::matmul::matmul_variants()[0]);
    let (b, hid, pix, cls) = (64u32, 128u32, 784u32, 10u32);
    let buf = |n: u32| storage(d, "buf", &vec![0.5f32; n as usize]);
    let (x, w1, b1, h, partial) = (
        buf(b * pix),
        buf(hid * pix),
        buf(hid),
        buf(b * hid),
        buf(16 * b * hid),
    );
    let mask = buf(hid * pix);
    let mm = |p: MatmulParams, a: &wgpu::Buffer, bb: &wgpu::Buffer, c: &wgpu::Buffer| {
        Dispatch::matmul(
            d,
            "mm",
            &k.matmul[0],
            [whole(a), whole(bb), whole(&b1), whole(&mask), whole(c)],
            [None; 3],
            &p,
        )
    };
    println!(
        "{:<44} {:>10} {:>12}",
        "kernel (shape)", "µs/call", "GFLOP/s"
    );
    let report = |name: &str, secs: f64, flops: f64| {
        println!(
            "{name:<44} {:>10.2} {:>12.1}",
            secs * 1e6,
            flops / secs / 1e9
        );
    };
    // A split-K product writes its slices' partial sums; head adds them up (its consumer).
    let split_time = |p: MatmulParams, a: &wgpu::Buffer, bm: &wgpu::Buffer| {
        time(&g, &mm(p, a, bm, &partial), reps)
    };
    let fwd_flops = 2.0 * (b * hid * pix) as f64;
    let one = MatmulParams::new(
        (b, hid, pix),
        row_major(pix),
        transposed(pix),
        1.0,
        0.0,
        gpu_train::abi::HAS_BIAS | gpu_train::abi::RELU,
        1,
    );
    report(
        "matmul hidden, no split (64x784 · 784x128)",
        time(&g, &mm(one, &x, &w1, &h), reps),
        fwd_flops,
    );
    for splits in [4, 7, 13] {
        let p = MatmulParams::new(
            (b, hid, pix),
            row_major(pix),
            transposed(pix),
            1.0,
            0.0,
            gpu_train::abi::HAS_BIAS | gpu_train::abi::RELU,
            splits,
        );
        report(
            &format!("matmul hidden, split K x{} (slices only)", p.splits),
            split_time(p, &x, &w1),
            fwd_flops,
        );
    }
    let upd = MatmulParams::new(
        (hid, pix, b),
        transposed(hid),
        row_major(pix),
        -0.1,
        1.0,
        0,
        1,
    );
    report(
        "matmul W1 update (128x64 · 64x784, beta 1)",
        time(&g, &mm(upd, &h, &x, &w1), reps),
        fwd_flops,
    );
    // The fused kernels (one workgroup; hidden + 10 threads): the output layer, SoftMax and δ2,
    // then δ1 with ∂W2, ∂b2 and ∂b1 (as the fused update).
    let (params, labels) = (buf(hid * pix + hid + cls * hid + cls), storage(d, "labels", &vec![3u32; b as usize]));
    let (dz, dh, acc) = (buf(b * cls), buf(b * hid), buf(4));
    let out_flops = 2.0 * (b * cls * hid) as f64;
    for splits in [1u32, 7] {
        let hp = gpu_train::abi::HeadParams {
            rows: b,
            hidden: hid,
            divisor: b,
            at: 0,
            scale: 1.0,
            splits,
            w2_at: hid * pix + hid,
            b2_at: hid * pix + hid + cls * hid,
            b1_at: hid * pix,
            _pad: [0; 3],
        };
        let head = Dispatch::new(
            d,
            "head",
            &k.head,
            &[whole(&h), whole(&params), whole(&partial), whole(&labels), whole(&dz), whole(&acc)],
            &hp,
            (1, 1, 1),
        );
        let name = match splits {
            1 => "head: h·W2ᵀ + b2, SoftMax, δ2 (64x128x10)".to_string(),
            s => format!("head, adding {s} K-slices of h first"),
        };
        report(&name, time(&g, &head, reps), out_flops);
    }
    let bp = gpu_train::abi::BackwardParams {
        rows: b,
        hidden: hid,
        alpha: -0.1,
        beta: 1.0,
        in_place: 1,
        w2_at: 0,
        t_w2_at: hid * pix + hid,
        t_b2_at: hid * pix + hid + cls * hid,
        t_b1_at: hid * pix,
        _pad: [0; 3],
    };
    let back = Dispatch::new(
        d,
        "backward",
        &k.backward,
        &[whole(&dz), whole(&h), whole(&x), whole(&dh), whole(&params)],
        &bp,
        groups_1d(hid + cls),
    );
    report("backward: δ1; W2, b2, b1 −= lr·∂ (64 rows)", time(&g, &back, reps), 2.0 * out_flops);
}
