//! Every WGSL kernel against its CPU twin on random inputs, with sizes that are not multiples
//! of the workgroup size.

mod common;
use common::{assert_close, gpu, random_f32, rng};
use gpu_train::cpu::twins;
use gpu_train::engine::Precision;
use gpu_train::gpu::kernels::{self, Blocking, Kernels};
use gpu_train::gpu::dispatch::{groups_1d, run_now, storage, Dispatch};
use gpu_train::gpu::matmul::{matmul_variants, MatmulVariant};
use gpu_train::abi::{MatmulParams, Site};
use gpu_train::gpu::mirror::Mirror;
use gpu_train::gpu::context::Gpu;
use rand::Rng;

fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    b.as_entire_binding()
}

/// Of `variants`, those this adapter can run (the subgroup ones need subgroups of exactly 8
/// lanes, and are never offered elsewhere), naming the ones left out. None left is a failure:
/// a loop over nothing checks nothing.
fn runnable_here(
    g: &Gpu,
    test: &str,
    variants: Vec<&'static MatmulVariant>,
) -> Vec<&'static MatmulVariant> {
    assert!(!variants.is_empty(), "{test}: no variant to check");
    let (run, left): (Vec<_>, Vec<_>) = variants
        .into_iter()
        .partition(|v| !v.subgroup8 || g.has_subgroups_of(8));
    if !left.is_empty() {
        let names: Vec<&str> = left.iter().map(|v| v.name).collect();
        eprintln!(
            "NOTE {test}: {names:?} not checked: {} has no subgroups of exactly 8 lanes, so they are never offered on it",
            g.info.name
        );
    }
    assert!(
        !run.is_empty(),
        "{test}: none of the variants runs on {}",
        g.info.name
    );
    run
}

#[test]
fn unpack_batch_matches_twin() {
    let Some(g) = gpu("unpack_batch_matches_twin") else {
        return;
    };
    let k = Kernels::new(&g.device, &matmul_variants()[0]);
    let mut r = rng(1);
    let (images, rows, words) = (9usize, 5u32, 196u32);
    let pixels: Vec<u8> = (0..images * 784).map(|_| r.random()).collect();
    let labels: Vec<u32> = (0..images).map(|_| r.random_range(0..10)).collect();
    let indices: Vec<u32> = (0..rows)
        .map(|_| r.random_range(0..images as u32))
        .collect();
    let p = gpu_train::abi::UnpackParams {
        rows,
        words_per_image: words,
    };
    let (bp, bl, bi) = (
        storage(&g.device, "p", &pixels),
        storage(&g.device, "l", &labels),
        storage(&g.device, "i", &indices),
    );
    let bx = storage(&g.device, "x", &vec![0f32; rows as usize * 784]);
    let by = storage(&g.device, "y", &vec![0u32; rows as usize]);
    let d = Dispatch::new(
        &g.device,
        "unpack",
        &k.unpack,
        &[whole(&bp), whole(&bl), whole(&bi), whole(&bx), whole(&by)],
        &p,
        groups_1d(rows * words),
    );
    run_now(&g, &[&d]).unwrap();
    let (mut x, mut y) = (vec![0f32; rows as usize * 784], vec![0u32; rows as usize]);
    twins::unpack_batch(&pixels, &labels, &indices, &mut x, &mut y, &p);
    // unorm8 → float is exact to within one rounding of p/255.
    let worst = assert_close("unpack_batch x", &g.read_f32(&bx).unwrap(), &x, 1e-7, 1e-6);
    let got_y: Vec<u32> = bytemuck::pod_collect_to_vec(&g.read_bytes(&by, 0, by.size()).unwrap());
    assert_eq!(got_y, y);
    eprintln!("unpack_batch worst relative error {worst:e}");
}

/// Runs matmul on the GPU and the twin (with splits > 1: its K-slices' partial sums).
fn check_matmul(g: &Gpu, k: &Kernels, seed: u64, p: MatmulParams) -> f32 {
    let mut r = rng(seed);
    let (m, n, kk) = (p.m as usize, p.n as usize, p.k as usize);
    let a = random_f32(&mut r, m * kk, 1.0);
    let b = random_f32(&mut r, kk * n, 1.0);
    let bias = random_f32(&mut r, n, 1.0);
    let mask = random_f32(&mut r, m * n, 1.0);
    let c0 = random_f32(&mut r, m * n, 1.0);
    let d = &g.device;
    let (ba, bb, bbias, bmask) = (
        storage(d, "a", &a),
        storage(d, "b", &b),
        storage(d, "bias", &bias),
        storage(d, "mask", &mask),
    );
    let bc = storage(d, "c", &c0);
    let mut want = c0.clone();
    if p.splits == 1 {
        let disp = Dispatch::matmul(
            d,
            "mm",
            &k.matmul[0],
            [
                whole(&ba),
                whole(&bb),
                whole(&bbias),
                whole(&bmask),
                whole(&bc),
            ],
            [None; 3],
            &p,
        );
        run_now(g, &[&disp]).unwrap();
        twins::matmul(&a, &b, &bias, &mask, &mut want, &p);
    } else {
        let bpart = storage(d, "partial", &vec![0f32; p.splits as usize * m * n]);
        let mm = Dispatch::matmul(
            d,
            "mm",
            &k.matmul[0],
            [
                whole(&ba),
                whole(&bb),
                whole(&bbias),
                whole(&bmask),
                whole(&bpart),
            ],
            [None; 3],
            &p,
        );
        run_now(g, &[&mm]).unwrap();
        let mut partial = vec![0f32; p.splits as usize * m * n];
        twins::matmul(&a, &b, &bias, &mask, &mut partial, &p);
        // The slices' sum, bias and ReLU are head's (head_matches_twin checks them).
        return assert_close(
            "split-K partial sums",
            &g.read_f32(&bpart).unwrap(),
            &partial,
            1e-5,
            1e-4,
        );
    }
    assert_close(
        &format!("matmul {} {p:?}", k.matmul[0].0.name),
        &g.read_f32(&bc).unwrap(),
        &want,
        1e-5,
        1e-4,
    )
}

#[test]
fn matmul_matches_twin_for_every_layout_and_epilogue() {
    let Some(g) = gpu("matmul_matches_twin_for_every_layout_and_epilogue") else {
        return;
    };
    // The scalar variants (the vec4 ones need multiples of 4: the next test), on a shape that
    // is not a multiple of any block (the register variant's 64×32 included: 70 rows leave a
    // second, nearly empty block of rows).
    let scalar: Vec<&'static MatmulVariant> = matmul_variants()
        .iter()
        .filter(|v| v.load == gpu_train::abi::Load::Scalar && v.elems == gpu_train::abi::Elems::F32)
        .collect();
    let scalar = runnable_here(
        &g,
        "matmul_matches_twin_for_every_layout_and_epilogue",
        scalar,
    );
    for variant in scalar {
        let k = Kernels::new(&g.device, variant);
        let (m, n, kk) = (70u32, 23u32, 45u32);
        let mut worst = 0.0f32;
        let mut seed = 0;
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            // A (m,k) stored row-major as (m,k), or stored as its transpose (k,m).
            let sa = if ta {
                gpu_train::abi::transposed(m)
            } else {
                gpu_train::abi::row_major(kk)
            };
            let sb = if tb {
                gpu_train::abi::transposed(kk)
            } else {
                gpu_train::abi::row_major(n)
            };
            for (alpha, beta, flags) in [
                (1.0, 0.0, 0),
                (1.0, 0.0, gpu_train::abi::HAS_BIAS | gpu_train::abi::RELU),
                (1.0, 0.0, gpu_train::abi::MASK),
                (-0.1, 1.0, 0),
                (0.5, -2.0, gpu_train::abi::HAS_BIAS | gpu_train::abi::RELU | gpu_train::abi::MASK),
            ] {
                seed += 1;
                let p = MatmulParams::new((m, n, kk), sa, sb, alpha, beta, flags, 1);
                worst = worst.max(check_matmul(&g, &k, seed, p));
            }
        }
        eprintln!("matmul {} worst relative error {worst:e}", variant.name);
    }
}

#[test]
fn split_k_matmul_matches_twin() {
    let Some(g) = gpu("split_k_matmul_matches_twin") else {
        return;
    };
    // Split K is a plan's choice: every variant that may split must produce partial sums.
    let splitting = |v: &&MatmulVariant| {
        v.fits(&MatmulParams::new(
            (1, 1, 32),
            (32, 1),
            (1, 32),
            1.0,
            0.0,
            0,
            2,
        ))
    };
    let splitters: Vec<&'static MatmulVariant> =
        matmul_variants().iter().filter(splitting).collect();
    let splitters = runnable_here(&g, "split_k_matmul_matches_twin", splitters);
    for variant in splitters {
        let k = Kernels::new(&g.device, variant);
        let mut worst = 0.0f32;
        // The hidden layer's shape at a short batch, and an odd one; K is split 3 and 7 ways.
        for (seed, (m, n, kk, splits)) in [(21u32, 128u32, 784u32, 7u32), (19, 17, 100, 3)]
            .into_iter()
            .enumerate()
        {
            let p = MatmulParams::new(
                (m, n, kk),
                gpu_train::abi::row_major(kk),
                gpu_train::abi::transposed(kk),
                1.0,
                0.0,
                gpu_train::abi::HAS_BIAS | gpu_train::abi::RELU,
                splits,
            );
            assert!(p.splits > 1);
            worst = worst.max(check_matmul(&g, &k, 100 + seed as u64, p));
        }
        eprintln!(
            "split-K matmul {} worst relative error {worst:e}",
            variant.name
        );
    }
}

#[test]
fn a_matmul_that_would_read_out_of_bounds_is_refused_on_the_host() {
    // What makes the unchecked variant safe: the host check, for each operand.
    let p = MatmulParams::new(
        (4, 5, 6),
        gpu_train::abi::row_major(6),
        gpu_train::abi::row_major(5),
        1.0,
        0.0,
        gpu_train::abi::HAS_BIAS | gpu_train::abi::MASK,
        1,
    );
    assert!(p.check_fits(24, 30, 5, 20, 20).is_ok());
    assert!(p
        .check_fits(23, 30, 5, 20, 20)
        .unwrap_err()
        .contains("past A"));
    assert!(p
        .check_fits(24, 29, 5, 20, 20)
        .unwrap_err()
        .contains("past B"));
    assert!(p
        .check_fits(24, 30, 4, 20, 20)
        .unwrap_err()
        .contains("past bias"));
    assert!(p
        .check_fits(24, 30, 5, 19, 20)
        .unwrap_err()
        .contains("past mask"));
    assert!(p
        .check_fits(24, 30, 5, 20, 19)
        .unwrap_err()
        .contains("past C"));
}

/// A weights buffer laid out with gaps (so a wrong offset reads the wrong values): b1 at
/// `b1_at`, W2 (10 × hidden) at `w2_at`, b2 at `b2_at`.
fn head_weights(r: &mut impl Rng, hidden: usize, scale: f32) -> (Vec<f32>, [u32; 3]) {
    let b1_at = 5;
    let w2_at = b1_at + hidden + 3;
    let b2_at = w2_at + 10 * hidden + 1;
    let mut w = random_f32(r, b2_at + 10 + 2, 1.0);
    for v in &mut w[w2_at..b2_at + 10] {
        *v *= scale;
    }
    (w, [b1_at as u32, w2_at as u32, b2_at as u32])
}

#[test]
fn head_matches_twin() {
    let Some(g) = gpu("head_matches_twin") else {
        return;
    };
    let kernels = [Blocking::GPU, Blocking::CPU]
        .map(|b| Kernels::with_picks(&g.device, [&matmul_variants()[0]; 2], b));
    let mut r = rng(7);
    let mut worst = 0.0f32;
    // 70 rows: more than the 64 threads, so some threads take two rows. Large weights make
    // large logits, which test the max-subtraction. divisor: the rows themselves (one
    // device), a global batch larger than the rows (a replica's share of it), and 0
    // (evaluation: no gradient). splits > 1: h is first summed from the hidden layer's
    // K-slices (+ b1, ReLU), as split-K's consumer.
    for (rows, hidden, scale, divisor, splits) in [
        (70u32, 100u32, 5.0f32, 70u32, 1u32),
        (3, 128, 30.0, 3, 1),
        (33, 36, 1.0, 130, 3),
        (45, 128, 2.0, 0, 1),
        (64, 128, 1.0, 64, 7),
    ] {
        let (rn, hn) = (rows as usize, hidden as usize);
        let (weights, [b1_at, w2_at, b2_at]) = head_weights(&mut r, hn, scale);
        let h0 = match splits {
            1 => random_f32(&mut r, rn * hn, 1.0).iter().map(|v| v.max(0.0)).collect(),
            _ => vec![0f32; rn * hn],
        };
        let partial = random_f32(&mut r, splits as usize * rn * hn, 1.0);
        let labels: Vec<u32> = (0..rows).map(|_| r.random_range(0..10)).collect();
        let accum0 = vec![1.5f32, 2.0, 3.0, 4.0];
        let p = gpu_train::abi::HeadParams {
            rows,
            hidden,
            divisor,
            at: 2,
            // A loss scale on one case (mixed precision's; 1 is the plain gradient).
            scale: if rows == 33 { 8.0 } else { 1.0 },
            splits,
            w2_at,
            b2_at,
            b1_at,
            _pad: [0; 3],
        };
        // Each blocking (a GPU's one row a thread, a CPU adapter's 8): the same δ2 bits.
        let mut delta_bits = Vec::new();
        for k in &kernels {
        let d = &g.device;
        let bufs = [
            storage(d, "h", &h0),
            storage(d, "weights", &weights),
            storage(d, "partial", &partial),
        ];
        let bl = storage(d, "labels", &labels);
        let bd = storage(d, "dz", &vec![0f32; rn * 10]);
        let ba = storage(d, "accum", &accum0);
        let res = [whole(&bufs[0]), whole(&bufs[1]), whole(&bufs[2]), whole(&bl), whole(&bd), whole(&ba)];
        let disp = Dispatch::new(d, "head", &k.head, &res, &p, (1, 1, 1));
        run_now(&g, &[&disp]).unwrap();
        let (mut h, mut dz, mut accum) = (h0.clone(), vec![0f32; rn * 10], accum0.clone());
        twins::head(&mut h, &weights, &partial, &labels, &mut dz, &mut accum, &p, k.blocking.head_rows);
        let what = format!("head {:?}, {rows} rows, {hidden} hidden, {splits} splits", k.blocking);
        worst = worst.max(assert_close(&what, &g.read_f32(&bufs[0]).unwrap(), &h, 1e-6, 1e-5));
        worst = worst.max(assert_close(&what, &g.read_f32(&bd).unwrap(), &dz, 1e-6, 1e-4));
        let got = g.read_f32(&ba).unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "{got:?}");
        worst = worst.max(assert_close(&what, &got, &accum, 1e-4, 1e-4));
        assert_eq!(got[3], accum[3], "{what}: correct counts are integers");
        if divisor == 0 {
            assert!(dz.iter().all(|&v| v == 0.0), "evaluation writes no δ2");
        }
        delta_bits.push(g.read_f32(&bd).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        assert_eq!(delta_bits[0], delta_bits[1], "head's δ2 under both blockings, {rows} rows");
    }
    eprintln!("head worst relative error {worst:e}");
}

#[test]
fn backward_matches_twin() {
    let Some(g) = gpu("backward_matches_twin") else {
        return;
    };
    let kernels = [Blocking::GPU, Blocking::CPU]
        .map(|b| Kernels::with_picks(&g.device, [&matmul_variants()[0]; 2], b));
    let mut r = rng(11);
    let mut worst = 0.0f32;
    // Hidden sizes that are and are not multiples of the 64-thread workgroup; the fused update
    // (α = −lr, β = 1, W2 read from and written into dest) and the gradient alone (α = 1,
    // β = 0, W2 read from the weights; dest's old values must not matter).
    for (rows, hidden, alpha, beta, in_place) in [
        (33u32, 77u32, -0.3f32, 1.0f32, true),
        (150, 128, 1.0, 0.0, false),
        (64, 36, -0.1, 1.0, true),
        (1, 128, 1.0, 0.0, false),
    ] {
        let (rn, hn) = (rows as usize, hidden as usize);
        let dlogits = random_f32(&mut r, rn * 10, 0.1);
        // h = ReLU(...) in the step; here negatives too, which ReLU′ must mask like zeros.
        let mut h = random_f32(&mut r, rn * hn, 1.0);
        h[0] = 0.0;
        // dest: [gap, W2 (10 × hidden), gap, b2, gap, b1, gap].
        let (t_w2, t_b2) = (3, 3 + 10 * hn + 2);
        let t_b1 = t_b2 + 10 + 4;
        let mut dest0 = random_f32(&mut r, t_b1 + hn + 3, 1.0);
        if beta == 0.0 {
            // The gradient overwrites: what was there before must not show.
            dest0.iter_mut().for_each(|v| *v = f32::NAN);
        }
        // weights: W2 at 7; NaN when the kernel must read W2 from dest instead.
        let w2_at = 7usize;
        let mut weights = random_f32(&mut r, w2_at + 10 * hn + 5, 1.0);
        if in_place {
            for c in 0..10 {
                let col = random_f32(&mut r, hn, 1.0);
                dest0[t_w2 + c * hn..t_w2 + (c + 1) * hn].copy_from_slice(&col);
            }
            weights.iter_mut().for_each(|v| *v = f32::NAN);
        }
        let p = gpu_train::abi::BackwardParams {
            rows,
            hidden,
            alpha,
            beta,
            in_place: in_place as u32,
            w2_at: w2_at as u32,
            t_w2_at: t_w2 as u32,
            t_b2_at: t_b2 as u32,
            t_b1_at: t_b1 as u32,
            _pad: [0; 3],
        };
        // Each blocking (a GPU's one neuron a thread, a CPU adapter's 8): the same bits.
        let mut bits = Vec::new();
        for k in &kernels {
        let d = &g.device;
        let bufs = [
            storage(d, "dz", &dlogits),
            storage(d, "h", &h),
            storage(d, "weights", &weights),
            storage(d, "dh", &vec![0f32; rn * hn]),
            storage(d, "dest", &dest0),
        ];
        let res = bufs.each_ref().map(|b| whole(b));
        let groups = k.blocking.backward_groups(hidden);
        let disp = Dispatch::new(d, "backward", &k.backward, &res, &p, groups);
        run_now(&g, &[&disp]).unwrap();
        let (mut dh, mut dest) = (vec![0f32; rn * hn], dest0.clone());
        twins::backward(&dlogits, &h, &weights, &mut dh, &mut dest, &p);
        let what = format!("backward {:?}, {rows} rows, {hidden} hidden, in place {in_place}", k.blocking);
        worst = worst.max(assert_close(&what, &g.read_f32(&bufs[3]).unwrap(), &dh, 1e-6, 1e-5));
        // Only W2, b2 and b1 are written: the gaps keep their values (NaN where dest0 was).
        let got = g.read_f32(&bufs[4]).unwrap();
        let written = |i: usize| {
            (t_w2..t_w2 + 10 * hn).contains(&i) || (t_b2..t_b2 + 10).contains(&i) || (t_b1..t_b1 + hn).contains(&i)
        };
        for (i, (a, b)) in got.iter().zip(&dest).enumerate() {
            assert!(written(i) || a.to_bits() == b.to_bits(), "{what}: gap {i} changed");
        }
        let pick = |v: &[f32]| -> Vec<f32> { v.iter().enumerate().filter(|(i, _)| written(*i)).map(|(_, v)| *v).collect() };
        worst = worst.max(assert_close(&what, &pick(&got), &pick(&dest), 1e-5, 1e-4));
        let dh_got = g.read_f32(&bufs[3]).unwrap();
        bits.push(got.iter().chain(&dh_got).map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        assert_eq!(bits[0], bits[1], "backward under both blockings, {rows} rows, {hidden} hidden");
    }
    eprintln!("backward worst relative error {worst:e}");
}

#[test]
fn sgd_update_matches_twin() {
    let Some(g) = gpu("sgd_update_matches_twin") else {
        return;
    };
    let k = Kernels::new(&g.device, &matmul_variants()[0]);
    let mut r = rng(13);
    // Not a multiple of the 64-thread workgroup; the model's 101,770 parameters.
    for len in [1000u32 + 37, gpu_train::model::PARAMS as u32] {
        let grad = random_f32(&mut r, len as usize, 1.0);
        let param = random_f32(&mut r, len as usize, 1.0);
        let p = gpu_train::abi::SgdParams {
            len,
            lr: 0.07,
            _pad: [0; 2],
        };
        let (bg, bp) = (
            storage(&g.device, "g", &grad),
            storage(&g.device, "p", &param),
        );
        // The f16 working copy's binding: an f32 step binds a placeholder and never writes it.
        let copy = storage(&g.device, "no copy", &[7.0f32]);
        let disp = Dispatch::new(
            &g.device,
            "sgd",
            &k.sgd_update,
            &[whole(&bg), whole(&bp), whole(&copy)],
            &p,
            gpu_train::gpu::dispatch::groups_1d(len),
        );
        run_now(&g, &[&disp]).unwrap();
        let mut want = param.clone();
        twins::sgd_update(&grad, &mut want, &p);
        // One multiply and one subtraction: exact unless the compiler fuses them (an FMA
        // differs in the last bit), hence a tolerance of a few ulps.
        let worst = assert_close("sgd_update", &g.read_f32(&bp).unwrap(), &want, 1e-7, 1e-6);
        eprintln!("sgd_update ({len}) worst relative error {worst:e}");
        assert_eq!(g.read_f32(&copy).unwrap(), vec![7.0], "an f32 update wrote the f16 copy's placeholder");
    }
}

/// The WGSL files and the Rust side share constants and `Params` layouts with nothing but
/// this test to keep them in step (WGSL has no includes; only the element types come in a
/// prelude).
#[test]
fn wgsl_constants_and_params_match_the_rust_side() {
    use std::mem::size_of;
    let source = |name: &str| {
        kernels::SOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no shader {name}"))
            .1
    };
    // `const NAME: u32 = 16u;` -> 16
    let constant = |name: &str, file: &str| -> u32 {
        let src = source(file);
        let line = src
            .lines()
            .find(|l| l.starts_with(&format!("const {name}: u32 = ")))
            .unwrap_or_else(|| panic!("{file}.wgsl has no const {name}"));
        line.split('=')
            .nth(1)
            .unwrap()
            .trim()
            .trim_end_matches(';')
            .trim_end_matches('u')
            .parse()
            .unwrap()
    };
    // The fields of `struct Params { ... }`, as "name: type" strings.
    let params = |file: &str| -> Vec<String> {
        let src = source(file);
        let start = src
            .find("struct Params {")
            .unwrap_or_else(|| panic!("{file}: no Params"));
        let body = &src[start + "struct Params {".len()..];
        body[..body.find('}').unwrap()]
            .lines()
            .map(|l| l.trim().trim_end_matches(',').to_string())
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .collect()
    };
    assert_eq!(constant("TILE", "matmul"), gpu_train::abi::MATMUL_TILE);
    let reg = MatmulVariant::by_name("reg8x4").unwrap();
    let lanes = constant("LANES", "matmul_reg8x4");
    assert_eq!(
        (
            lanes * constant("R", "matmul_reg8x4"),
            lanes * constant("CC", "matmul_reg8x4")
        ),
        (reg.block_m, reg.block_n),
        "matmul_reg8x4.wgsl's block against its MatmulVariant"
    );
    // reg8x4's f16 members are the same source under an f16 prelude (one WGSL per kernel).
    for name in ["reg8x4_f16", "reg8x4_f16_f32out"] {
        let v = MatmulVariant::by_name(name).unwrap();
        assert_eq!(v.source, source("matmul_reg8x4"), "{name} is matmul_reg8x4.wgsl");
        assert_eq!((v.block_m, v.block_n), (reg.block_m, reg.block_n), "{name}'s block");
        assert!(v.wgsl().starts_with(v.elems.prelude()) && v.wgsl().contains("alias Elem = f16;"));
    }
    for file in ["unpack_batch", "head", "backward", "sgd_update"] {
        assert_eq!(
            constant("WORKGROUP", file),
            gpu_train::abi::WORKGROUP,
            "{file}.wgsl"
        );
    }
    // The fused kernels keep a row's logits (head) and a column of W2 (backward) in registers.
    for file in ["head", "backward"] {
        assert_eq!(constant("CLASSES", file) as usize, gpu_train::data::CLASSES, "{file}.wgsl");
    }
    for (file, flag, value) in [
        ("matmul_reg8x4", "HAS_BIAS", gpu_train::abi::HAS_BIAS),
        ("matmul_reg8x4", "RELU", gpu_train::abi::RELU),
        ("matmul_reg8x4", "MASK", gpu_train::abi::MASK),
        ("matmul", "HAS_BIAS", gpu_train::abi::HAS_BIAS),
        ("matmul", "RELU", gpu_train::abi::RELU),
        ("matmul", "MASK", gpu_train::abi::MASK),
    ] {
        assert_eq!(constant(flag, file), value, "{file}.wgsl {flag}");
    }
    // Both hand-written matmuls read the same uniform (one MatmulParams): same struct, field
    // for field.
    assert_eq!(params("matmul"), params("matmul_reg8x4"));
    // Every field is 4 bytes, so the Rust struct's size gives its field count.
    for (file, rust_size) in [
        ("unpack_batch", size_of::<gpu_train::abi::UnpackParams>()),
        ("matmul", size_of::<MatmulParams>()),
        ("head", size_of::<gpu_train::abi::HeadParams>()),
        ("backward", size_of::<gpu_train::abi::BackwardParams>()),
        ("sgd_update", size_of::<gpu_train::abi::SgdParams>()),
    ] {
        let fields = params(file);
        assert!(
            fields
                .iter()
                .all(|f| f.ends_with(": u32") || f.ends_with(": f32")),
            "{file}: {fields:?}"
        );
        assert_eq!(
            4 * fields.len(),
            rust_size,
            "{file}.wgsl Params: {fields:?}"
        );
    }
}

/// Every variant this adapter offers, on each of the step's products it can compute, at
/// batch sizes that fill no block evenly and at a hidden size that is not a power of two:
/// within rounding of the CPU twin, and the CPU-adapter family bit for bit equal to reg8x4
/// (they add each sum one k at a time in order, so the search's pick never changes a run's
/// numbers).
#[test]
fn every_variant_matches_the_twin_at_every_product_and_the_family_gives_reg8x4s_bits() {
    let Some(g) = gpu("every_variant_matches_the_twin_at_every_product") else {
        return;
    };
    let reg = MatmulVariant::by_name("reg8x4").unwrap();
    // The f32 ones (tests/f16.rs checks the f16 ones).
    let offered: Vec<&'static MatmulVariant> = matmul_variants()
        .iter()
        .filter(|v| v.elems == gpu_train::abi::Elems::F32)
        .collect();
    let offered = runnable_here(
        &g,
        "every_variant_matches_the_twin_at_every_product",
        offered,
    );
    let mut checked = std::collections::HashMap::new();
    for (seed, (rows, hidden)) in [(64u32, 128u32), (70, 100), (1, 128), (13, 36)]
        .into_iter()
        .enumerate()
    {
        for site in Site::ALL {
            let p = site.params(rows, hidden, (-0.1, 1.0), 1);
            let run = |v: &'static MatmulVariant| {
                let k = Kernels::new(&g.device, v);
                let mut r = rng(seed as u64 * 10 + site as u64);
                let (m, n, kk) = (p.m as usize, p.n as usize, p.k as usize);
                let a = random_f32(&mut r, m * kk, 1.0);
                let b = random_f32(&mut r, kk * n, 1.0);
                let bias = random_f32(&mut r, n, 1.0);
                let mask = random_f32(&mut r, m * n, 1.0);
                let c0 = random_f32(&mut r, m * n, 1.0);
                let d = &g.device;
                let bufs = [&a, &b, &bias, &mask, &c0].map(|x| storage(d, "x", x));
                let res = bufs.each_ref().map(|b| whole(b));
                // Texture mirrors of A, B and C where the engine keeps them for this product
                // (C's holding c0, as the engine's W1 mirror holds W1 before the update).
                let mirrors = [(0, a.len()), (1, b.len()), (4, c0.len())].map(|(i, len)| {
                    let at = if i == 4 { 2 } else { i };
                    site.mirrored()[at].map(|_| Mirror::of(&g, &bufs[i], len - len % 4, false))
                });
                let mirrors = mirrors.each_ref().map(Option::as_ref);
                let disp = Dispatch::matmul(d, "mm", &k.matmul[site as usize], res, mirrors, &p);
                run_now(&g, &[&disp]).unwrap();
                let mut want = c0.clone();
                twins::matmul(&a, &b, &bias, &mask, &mut want, &p);
                (g.read_f32(&bufs[4]).unwrap(), want)
            };
            let (reg_bits, _) = run(reg);
            for &v in offered
                .iter()
                .filter(|v| v.fits_at(site, Precision::F32, &p))
            {
                let (got, want) = run(v);
                let what = format!(
                    "{} on {} at {rows} rows, {hidden} hidden",
                    v.name,
                    site.name()
                );
                assert_close(&what, &got, &want, 1e-5, 1e-4);
                if v.software {
                    let same = got
                        .iter()
                        .zip(&reg_bits)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{what}: not bit for bit reg8x4's sums");
                }
                *checked.entry(v.name).or_insert(0) += 1;
            }
        }
    }
    // Every offered variant fit some product (a variant no product can use is dead weight).
    for v in &offered {
        assert!(
            checked.contains_key(v.name),
            "{} fit none of the step's products",
            v.name
        );
    }
    eprintln!("variants checked per product and shape: {checked:?}");
}
