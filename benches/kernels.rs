//! `cargo bench --bench kernels`: each kernel of a training step, on this model's shapes
//! (batch 64), timed on GPU adapter 0 by wall clock: `reps` dispatches recorded into one
//! compute pass, one submit, one wait, divided by `reps`. That includes the per-dispatch
//! overhead, which is what a step pays. Prints µs per call and achieved GFLOP/s or GB/s.
//! Figures go in BENCHMARKS.md; nothing here asserts a speed.

use gpu_train::gpu::kernels::{self, Kernels};
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
            [None, None],
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
    // Time of a split-K product into the partial sums plus the reduce into `out`.
    let split_time = |p: MatmulParams, a: &wgpu::Buffer, bm: &wgpu::Buffer, out: &wgpu::Buffer| {
        let red = Dispatch::new(
            d,
            "reduce",
            &k.splitk_reduce,
            &[whole(&partial), whole(&b1), whole(&x), whole(out)],
            &p,
            groups_1d(p.m * p.n),
        );
        time(&g, &mm(p, a, bm, &partial), reps) + time(&g, &red, reps)
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
            &format!("matmul hidden, split K x{} (+ reduce)", p.splits),
            split_time(p, &x, &w1, &h),
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
    // The output layer, z (64,10) = h (64,128) · W2ᵀ: too few outputs for many workgroups.
    let (w2, z) = (buf(cls * hid), buf(b * cls));
    let out_flops = 2.0 * (b * cls * hid) as f64;
    for splits in [1, 4, 8] {
        let p = MatmulParams::new(
            (b, cls, hid),
            row_major(hid),
            transposed(hid),
            1.0,
            0.0,
            gpu_train::abi::HAS_BIAS,
            splits,
        );
        if p.splits == 1 {
            report(
                "matmul output, no split (64x128 · 128x10)",
                time(&g, &mm(p, &h, &w2, &z), reps),
                out_flops,
            );
        } else {
            report(
                &format!("matmul output, split K x{} (+ reduce)", p.splits),
                split_time(p, &h, &w2, &z),
                out_flops,
            );
        }
    }
    let bp = gpu_train::abi::BiasParams {
        rows: b,
        cols: hid,
        alpha: -0.1,
        beta: 1.0,
    };
    let bias = Dispatch::new(
        d,
        "bias",
        &k.bias_update,
        &[whole(&h), whole(&b1)],
        &bp,
        (hid, 1, 1),
    );
    report(
        "bias_update (64 rows, 128 biases)",
        time(&g, &bias, reps),
        (b * hid) as f64,
    );
    let serial = kernels::pipeline(
        d,
        "bias_update_serial",
        include_str!("../shaders/bias_update_serial.wgsl"),
    );
    let bias = Dispatch::new(
        d,
        "bias, serial",
        &serial,
        &[whole(&h), whole(&b1)],
        &bp,
        kernels::BiasSum::Serial.workgroups(hid),
    );
    report(
        "bias_update_serial (64 rows, 128 biases)",
        time(&g, &bias, reps),
        (b * hid) as f64,
    );
    let sp = gpu_train::abi::SoftmaxParams {
        rows: b,
        classes: cls,
        divisor: b,
        at: 0,
        scale: 1.0,
        _pad: [0; 3],
    };
    let labels = storage(d, "labels", &vec![3u32; b as usize]);
    let (dz, acc) = (buf(b * cls), buf(4));
    let soft = Dispatch::new(
        d,
        "softmax",
        &k.softmax_xent,
        &[whole(&z), whole(&labels), whole(&dz), whole(&acc)],
        &sp,
        (1, 1, 1),
    );
    report("softmax_xent (64x10)", time(&g, &soft, reps), 0.0);
}
