//! --precision f16 (mixed precision) and --grad-dtype f16: every f16 kernel against its twin
//! within f16's precision, the GPU's f16 training against the CPU's f16 twin, dynamic loss
//! scaling skipping overflowed steps, accuracy within 0.3 points of FP32, exact resume, a clear
//! error on an adapter without f16, and f16 gradients on the wire halving the bytes.

mod common;
use common::{gpu_train, random_f32, rng};
use gpu_train::cpu::engine::CpuEngine;
use gpu_train::cpu::twins;
use gpu_train::data::{self, DataSplit};
use gpu_train::engine::{Engine, Precision};
use gpu_train::gpu::kernels::{self, Blocking, KernelsF16};
use gpu_train::gpu::matmul::{matmul_variants, MatmulVariant};
use gpu_train::abi::{row_major, transposed, Elems, MatmulParams, Site};
use gpu_train::gpu::dispatch::{run_now, storage, Dispatch};
use gpu_train::gpu::mirror::Mirror;
use gpu_train::gpu::context::Gpu;
use gpu_train::gpu::engine::state::GpuEngine;
use gpu_train::gpu::buffers::GpuOptions;
use gpu_train::model::Model;
use gpu_train::parallel::all_reduce::Identity;
use gpu_train::train::{self, Start};
use gpu_train::engine::LossScaler;
use gpu_train::train::report::Quiet;
use gpu_train::train::replicas::Replicas;
use gpu_train::config::TrainConfig;
use half::f16;
use rand::Rng;

/// Adapter 0 if it offers f16 in shaders. CI's lavapipe does, so there (GPU_TRAIN_REQUIRE_GPU
/// or CI=true) a missing one fails.
fn gpu_f16(test: &str) -> Option<Gpu> {
    let g = common::gpu(test)?;
    if g.features.contains(wgpu::Features::SHADER_F16) {
        return Some(g);
    }
    if std::env::var_os("GPU_TRAIN_REQUIRE_GPU").is_some() {
        panic!("{test}: adapter 0 ({}) offers no SHADER_F16", g.info.name);
    }
    common::skip(test, &format!("{} offers no f16 in shaders", g.info.name));
    None
}

fn to16(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

fn from16(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn read16(g: &Gpu, b: &wgpu::Buffer) -> Vec<f16> {
    bytemuck::pod_collect_to_vec(&g.read_bytes(b, 0, b.size()).unwrap())
}

/// f16 has 11 significant bits: one step is 2^-10 relative (≈ 1e-3); results rounded to f16 may
/// differ by one step where the GPU rounds a halfway value the other way, and f32 sums in
/// another order by a few f32 steps.
const F16_REL: f32 = 2e-3;

fn whole(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    b.as_entire_binding()
}

#[test]
fn f16_kernels_match_their_twins() {
    let Some(g) = gpu_f16("f16_kernels_match_their_twins") else {
        return;
    };
    let d = &g.device;
    let k = KernelsF16::new(d, Blocking::GPU);
    let mut r = rng(21);
    let buf16 = |v: &[f16]| storage::<f16>(d, "f16", v);
    // matmul_f16 and matmul_f16_f32out (the variants reg8x4_f16 and reg8x4_f16_f32out): odd
    // sizes, every layout, the epilogues they serve.
    let pipeline = |name| {
        let v = MatmulVariant::by_name(name).unwrap();
        (v, kernels::matmul_pipeline(d, v))
    };
    let (mm16, mm16f32) = (pipeline("reg8x4_f16"), pipeline("reg8x4_f16_f32out"));
    for (m, n, kk, sa, sb, flags) in [
        (
            70u32,
            23u32,
            45u32,
            row_major(45),
            transposed(45),
            gpu_train::abi::HAS_BIAS | gpu_train::abi::RELU,
        ),
        (33, 128, 10, row_major(10), row_major(128), gpu_train::abi::MASK),
        (10, 77, 65, transposed(10), row_major(77), 0),
    ] {
        let p = MatmulParams::new((m, n, kk), sa, sb, 1.0, 0.0, flags, 1);
        let (a, b) = (
            to16(&random_f32(&mut r, (m * kk) as usize, 1.0)),
            to16(&random_f32(&mut r, (kk * n) as usize, 1.0)),
        );
        let (bias, mask) = (
            to16(&random_f32(&mut r, n as usize, 1.0)),
            to16(&random_f32(&mut r, (m * n) as usize, 1.0)),
        );
        let (ba, bb, bbias, bmask) = (buf16(&a), buf16(&b), buf16(&bias), buf16(&mask));
        let mut want16 = vec![f16::ZERO; (m * n) as usize];
        twins::matmul_f16(&a, &b, &bias, &mask, &mut want16, &p);
        let c16 = buf16(&want16.iter().map(|_| f16::ZERO).collect::<Vec<_>>());
        let res = || [whole(&ba), whole(&bb), whole(&bbias), whole(&bmask)];
        let [ra, rb, rbias, rmask] = res();
        let disp = Dispatch::matmul(
            d,
            "mm16",
            &mm16,
            [ra, rb, rbias, rmask, whole(&c16)],
            [None; 3],
            &p,
        );
        run_now(&g, &[&disp]).unwrap();
        common::assert_close(
            "matmul_f16",
            &from16(&read16(&g, &c16)),
            &from16(&want16),
            1e-3,
            F16_REL,
        );
        let mut want32 = vec![0.0f32; (m * n) as usize];
        twins::matmul_f16_f32out(&a, &b, &bias, &mask, &mut want32, &p);
        let c32 = storage(d, "c", &vec![0.0f32; (m * n) as usize]);
        let [ra, rb, rbias, rmask] = res();
        let disp = Dispatch::matmul(
            d,
            "mm16f32",
            &mm16f32,
            [ra, rb, rbias, rmask, whole(&c32)],
            [None; 3],
            &p,
        );
        run_now(&g, &[&disp]).unwrap();
        // An f32 result: only the order of f32 additions may differ.
        common::assert_close(
            "matmul_f16_f32out",
            &g.read_f32(&c32).unwrap(),
            &want32,
            1e-5,
            1e-4,
        );
    }
    // unpack_batch_f16: 5 of 9 images, the words of each.
    let pixels: Vec<u8> = (0..9 * 784).map(|_| r.random()).collect();
    let labels: Vec<u32> = (0..9).map(|_| r.random_range(0..10)).collect();
    let indices = vec![8u32, 0, 3, 3, 5];
    let p = gpu_train::abi::UnpackParams {
        rows: 5,
        words_per_image: 196,
    };
    let (bp, bl, bi) = (
        storage::<u8>(d, "p", &pixels),
        storage(d, "l", &labels),
        storage(d, "i", &indices),
    );
    let (bx, bbl) = (
        buf16(&vec![f16::ZERO; 5 * 784]),
        storage(d, "bl", &[0u32; 5]),
    );
    let disp = Dispatch::new(
        d,
        "unpack16",
        &k.unpack,
        &[whole(&bp), whole(&bl), whole(&bi), whole(&bx), whole(&bbl)],
        &p,
        gpu_train::gpu::dispatch::groups_1d(5 * 196),
    );
    run_now(&g, &[&disp]).unwrap();
    let (mut x, mut yl) = (vec![f16::ZERO; 5 * 784], vec![0u32; 5]);
    twins::unpack_batch_f16(&pixels, &labels, &indices, &mut x, &mut yl, &p);
    common::assert_close(
        "unpack_batch_f16",
        &from16(&read16(&g, &bx)),
        &from16(&x),
        0.0,
        1e-3,
    );
    assert_eq!(
        g.read_bytes(&bbl, 0, 20).unwrap(),
        bytemuck::cast_slice::<u32, u8>(&yl).to_vec()
    );
    // head and backward in both blockings (a GPU's, and the CPU adapters' lavapipe runs).
    let r0 = r.clone();
    for kb in [&k, &KernelsF16::new(d, Blocking::CPU)] {
        let mut r = r0.clone();
        // head under f16 with a loss scale, 70 rows of 128 (f16 h and weights, f32 sums, f16 δ2).
        let (rows, hid) = (70usize, 128usize);
        let h = to16(&random_f32(&mut r, rows * hid, 1.0).iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
        // weights: b1 at 0, W2 at 130, b2 after it (even lengths: f16 buffers are whole words).
        let (w2_at, b2_at) = (130usize, 130 + 10 * hid);
        let weights = to16(&random_f32(&mut r, b2_at + 10, 1.0));
        let lab: Vec<u32> = (0..rows as u32).map(|_| r.random_range(0..10)).collect();
        let hp = gpu_train::abi::HeadParams {
            rows: rows as u32,
            hidden: hid as u32,
            divisor: 130,
            at: 0,
            scale: 1024.0,
            splits: 1,
            w2_at: w2_at as u32,
            b2_at: b2_at as u32,
            b1_at: 0,
            _pad: [0; 3],
        };
        let (bh, bw, bpart, blab, bd, bacc) = (
            buf16(&h),
            buf16(&weights),
            storage(d, "partial", &[0.0f32; 4]),
            storage(d, "l", &lab),
            buf16(&vec![f16::ZERO; rows * 10]),
            storage(d, "a", &[0.0f32; 4]),
        );
        let res = [&bh, &bw, &bpart, &blab, &bd, &bacc].map(whole);
        let disp = Dispatch::new(d, "head16", &kb.head, &res, &hp, (1, 1, 1));
        run_now(&g, &[&disp]).unwrap();
        let (mut h_want, mut dz, mut acc) = (h.clone(), vec![f16::ZERO; rows * 10], vec![0.0f32; 4]);
        twins::head(&mut h_want, &weights, &[], &lab, &mut dz, &mut acc, &hp, kb.blocking.head_rows);
        common::assert_close("head f16 δ2", &from16(&read16(&g, &bd)), &from16(&dz), 1e-3, F16_REL);
        common::assert_close("head f16 totals", &g.read_f32(&bacc).unwrap(), &acc, 1e-3, 1e-4);
        // backward under f16: δ2 (loss-scaled, as head wrote it) and h in, f16 δ1 and f32 ∂W2,
        // ∂b2, ∂b1 out (the gradient: α = 1, β = 0).
        let bp = gpu_train::abi::BackwardParams {
            rows: rows as u32,
            hidden: hid as u32,
            alpha: 1.0,
            beta: 0.0,
            in_place: 0,
            w2_at: w2_at as u32,
            t_w2_at: 0,
            t_b2_at: (10 * hid) as u32,
            t_b1_at: (10 * hid + 10) as u32,
            _pad: [0; 3],
        };
        let dest_len = 10 * hid + 10 + hid;
        let (bdh, bdest) = (
            buf16(&vec![f16::ZERO; rows * hid]),
            storage(d, "dest", &vec![0.0f32; dest_len]),
        );
        let res = [&bd, &bh, &bw, &bdh, &bdest].map(whole);
        let disp = Dispatch::new(
            d,
            "backward16",
            &kb.backward,
            &res,
            &bp,
            kb.blocking.backward_groups(hid as u32),
        );
        run_now(&g, &[&disp]).unwrap();
        // From the GPU's own δ2 (the twin's may differ by one f16 step).
        let dz_gpu = read16(&g, &bd);
        let (mut dh, mut dest) = (vec![f16::ZERO; rows * hid], vec![0.0f32; dest_len]);
        twins::backward(&dz_gpu[..rows * 10], &h, &weights, &mut dh, &mut dest, &bp);
        common::assert_close("backward f16 δ1", &from16(&read16(&g, &bdh)), &from16(&dh), 1e-3, F16_REL);
        // f32 sums of f16 values: a sum of δ1 as stored may take another rounding of one δ1.
        common::assert_close("backward f16 ∂W2, ∂b2, ∂b1", &g.read_f32(&bdest).unwrap(), &dest, 1e-2, F16_REL);
    }
    // sgd_update_f16 over 1,037 parameters.
    let (grad, param) = (random_f32(&mut r, 1037, 1.0), random_f32(&mut r, 1037, 1.0));
    let up = gpu_train::abi::SgdParams {
        len: 1037,
        lr: 0.07,
        _pad: [0; 2],
    };
    let (bg, bpar, bp16b) = (
        storage(d, "g", &grad),
        storage(d, "p", &param),
        buf16(&vec![f16::ZERO; 1038]),
    );
    let disp = Dispatch::new(
        d,
        "sgd16",
        &k.sgd_update,
        &[whole(&bg), whole(&bpar), whole(&bp16b)],
        &up,
        gpu_train::gpu::dispatch::groups_1d(1037),
    );
    run_now(&g, &[&disp]).unwrap();
    let (mut want, mut want16) = (param.clone(), vec![f16::ZERO; 1037]);
    twins::sgd_update_f16(&grad, &mut want, &mut want16, &up);
    common::assert_close(
        "sgd_update_f16 masters",
        &g.read_f32(&bpar).unwrap(),
        &want,
        1e-7,
        1e-6,
    );
    common::assert_close(
        "sgd_update_f16 working copy",
        &from16(&read16(&g, &bp16b)[..1037]),
        &from16(&want16),
        0.0,
        1e-3,
    );
}

/// Every f16 variant this adapter offers (reg8x4's f16 siblings and the generated family's
/// f16 members), on each of the f16 step's products it can compute, at batch sizes that fill
/// no block evenly: within f16 rounding of the CPU twin, and bit for bit reg8x4_f16's (or
/// reg8x4_f16_f32out's) result: f16 widened to f32 as it is loaded, sums in k order, so the
/// search's pick never changes an f16 run's numbers either.
#[test]
fn every_f16_variant_matches_the_twin_at_every_product_and_gives_reg8x4_f16s_bits() {
    let Some(g) = gpu_f16("every_f16_variant_matches_the_twin_at_every_product") else {
        return;
    };
    let d = &g.device;
    let offered: Vec<&'static MatmulVariant> = matmul_variants()
        .iter()
        .filter(|v| v.elems != Elems::F32 && (!v.subgroup8 || g.has_subgroups_of(8)))
        .collect();
    let mut checked = std::collections::HashMap::new();
    for (seed, (rows, hidden)) in [(64u32, 128u32), (70, 100), (1, 128), (13, 36)]
        .into_iter()
        .enumerate()
    {
        for site in Site::ALL {
            let elems = site.elems(Precision::F16);
            let p = site.params(rows, hidden, (-0.1, 1.0), 1);
            let run = |v: &'static MatmulVariant| -> (Vec<f32>, Vec<f32>) {
                let mut r = rng(seed as u64 * 10 + site as u64);
                let (m, n, kk) = (p.m as usize, p.n as usize, p.k as usize);
                let [a, b, bias, mask, c0] = [m * kk, kk * n, n, m * n, m * n]
                    .map(|len| to16(&random_f32(&mut r, len, 1.0)));
                let bufs = [&a, &b, &bias, &mask].map(|x| storage(d, "x", x));
                let c = match elems {
                    Elems::F16 => storage(d, "c", &c0),
                    _ => storage(d, "c", &from16(&c0)),
                };
                let [ra, rb, rbias, rmask] = bufs.each_ref().map(|b| whole(b));
                let res = [ra, rb, rbias, rmask, whole(&c)];
                // RGBA16F mirrors of A and B where the engine keeps them for this product.
                let [ma, mb] = [(0, a.len()), (1, b.len())].map(|(i, len)| {
                    site.mirrored()[i].map(|_| Mirror::of(&g, &bufs[i], len - len % 4, true))
                });
                // No f16 member reads C through a mirror (gpu/variants.rs).
                assert!(!v.textures[2], "{}", v.name);
                let mirrors = [ma.as_ref(), mb.as_ref(), None];
                let mm = (v, kernels::matmul_pipeline(d, v));
                let disp = Dispatch::matmul(d, "mm", &mm, res, mirrors, &p);
                run_now(&g, &[&disp]).unwrap();
                match elems {
                    Elems::F16 => {
                        let mut want = c0.clone();
                        twins::matmul_f16(&a, &b, &bias, &mask, &mut want, &p);
                        (from16(&read16(&g, &c)[..m * n]), from16(&want))
                    }
                    _ => {
                        let mut want = from16(&c0);
                        twins::matmul_f16_f32out(&a, &b, &bias, &mask, &mut want, &p);
                        (g.read_f32(&c).unwrap(), want)
                    }
                }
            };
            let fixed = MatmulVariant::by_name("reg8x4")
                .unwrap()
                .sibling(elems)
                .unwrap();
            let (fixed_bits, _) = run(fixed);
            for &v in offered
                .iter()
                .filter(|v| v.fits_at(site, Precision::F16, &p))
            {
                let (got, want) = run(v);
                let what = format!(
                    "{} on {} at {rows} rows, {hidden} hidden",
                    v.name,
                    site.name()
                );
                common::assert_close(&what, &got, &want, 1e-3, F16_REL);
                let same = got
                    .iter()
                    .zip(&fixed_bits)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}: not bit for bit {}'s result", fixed.name);
                *checked.entry(v.name).or_insert(0) += 1;
            }
        }
    }
    for v in &offered {
        assert!(
            checked.contains_key(v.name),
            "{} fit none of the f16 step's products",
            v.name
        );
    }
    eprintln!("f16 variants checked per product and shape: {checked:?}");
}

fn sample(n: usize) -> DataSplit {
    let mut d = data::load_dir(&data::bundled_dir()).unwrap();
    d.train = d.train.take(n);
    d
}

/// Trains `engine` alone through the separated step with loss scaling from `scale`.
fn run_f16(
    engine: &mut dyn Engine,
    data: &DataSplit,
    cfg: &TrainConfig,
    scale: f32,
) -> Vec<gpu_train::train::report::EpochReport> {
    let mut r = Replicas::data_parallel(vec![engine], Box::new(Identity), false, gpu_train::model::HIDDEN)
        .unwrap()
        .with_loss_scaling(LossScaler::new(scale));
    train::train_from(&mut r, data, cfg, Start::FRESH, None, &mut Quiet).unwrap()
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        lr: 0.1,
        seed: 42,
    }
}

#[test]
fn gpu_f16_training_matches_the_cpu_f16_twin() {
    let Some(g) = gpu_f16("gpu_f16_training_matches_the_cpu_f16_twin") else {
        return;
    };
    let data = sample(320);
    let model = Model::init(5);
    let opts = GpuOptions {
        precision: Precision::F16,
        ..GpuOptions::default()
    };
    let mut gpu = GpuEngine::new(g, &model, opts, &data.train).unwrap();
    let gr = run_f16(&mut gpu, &data, &cfg(1), LossScaler::INITIAL);
    let mut cpu = CpuEngine::new(model, 1).with_precision(Precision::F16);
    let cr = run_f16(&mut cpu, &data, &cfg(1), LossScaler::INITIAL);
    let (gm, cm) = (gpu.model().unwrap(), cpu.model().unwrap());
    // Five steps from the same weights: activations rounded to f16 at the same points, sums in
    // a different order; where an f16 rounding falls differently the difference is one f16
    // step of an activation, carried into the update.
    for ((name, _, a), (_, _, b)) in gm.tensors().iter().zip(cm.tensors().iter()) {
        common::assert_close(&format!("GPU vs CPU f16: {name}"), a, b, 2e-4, 2e-2);
    }
    assert!((gr[0].test.accuracy() - cr[0].test.accuracy()).abs() <= 0.5);
}

/// An f16 run whose products read RGBA16F texture mirrors (x and W1 in x·W1ᵀ, δ1 and x in
/// ∂W1 = δ1ᵀ·x) ends with the same weights, bit for bit, as one through reg8x4_f16: the mirrors
/// are refreshed where the buffers change, and a texel fetch widens f16 as a load does.
#[test]
fn f16_kernels_reading_texture_mirrors_train_to_reg8x4_f16s_bits() {
    let Some(g) = gpu_f16("f16_kernels_reading_texture_mirrors_train_to_reg8x4_f16s_bits") else {
        return;
    };
    drop(g);
    let mut data = sample(200); // 3 steps of 64 and one of 8
    data.test = data.test.take(300); // a test batch of 256 and one of 44
    let model = Model::init(5);
    let run = |kernels: &'static str, site: Site| {
        let opts = GpuOptions {
            precision: Precision::F16,
            kernels: Some(kernels),
            ..GpuOptions::default()
        };
        let g = common::gpu("f16 mirrors").unwrap();
        let mut e = GpuEngine::new(g, &model, opts, &data.train).unwrap();
        let picked = e.matmul_choice().variants()[site as usize];
        assert_eq!(
            picked.base,
            kernels,
            "{kernels} is not the pick at {}",
            site.name()
        );
        let reports = run_f16(&mut e, &data, &cfg(2), LossScaler::INITIAL);
        let tested: Vec<_> = reports.iter().map(|r| (r.train, r.test)).collect();
        (e.model().unwrap(), tested)
    };
    let (want_model, want_tests) = run("reg8x4", Site::Hidden);
    assert_ne!(want_model, model, "training changed nothing");
    for (name, site) in [("tk4_8x8", Site::Hidden), ("tmn4_8x8", Site::GradW1)] {
        let (got_model, got_tests) = run(name, site);
        assert!(
            got_model == want_model,
            "{name}: weights differ from reg8x4_f16's"
        );
        assert_eq!(got_tests, want_tests, "{name}: test passes differ");
    }
}

#[test]
fn f16_reaches_fp32_accuracy_and_loss_scaling_skips_overflowed_steps() {
    let data = data::load_dir(&data::bundled_dir()).unwrap();
    let mut f32e = CpuEngine::new(Model::init(42), 2);
    let want = train::train(&mut f32e, &data, &cfg(10), &mut Quiet)
        .unwrap()
        .last()
        .unwrap()
        .test
        .accuracy();
    let mut f16e = CpuEngine::new(Model::init(42), 2).with_precision(Precision::F16);
    let reports = run_f16(&mut f16e, &data, &cfg(10), LossScaler::INITIAL);
    let got = reports.last().unwrap().test.accuracy();
    eprintln!("10 epochs: f16 {got:.2} %, f32 {want:.2} %");
    assert!(
        (got - want).abs() <= 0.3,
        "f16 {got:.2} % against f32 {want:.2} %"
    );
    // A scale of 2^40 makes δ2 overflow f16 (65,504 at most): those steps are skipped and the
    // scale halved until it fits; then training goes on as usual.
    let mut e = CpuEngine::new(Model::init(42), 2).with_precision(Precision::F16);
    let reports = run_f16(&mut e, &sample(2000), &cfg(2), 2f32.powi(40));
    // The run is deterministic (the CPU engine on 2 threads, one seed), so these are its exact
    // values. Epoch 1: 2^40 is halved once per skipped step until δ2 · scale fits f16: at 2^22 a
    // δ2 of (p − 1)/64 with p near 0 gives 65,536 > 65,504, so one step still overflows there,
    // and 19 steps are skipped, leaving 2^21 (no growth: that takes 2,000 good steps in a row).
    let first = &reports[0];
    assert_eq!(
        (first.skipped_steps, first.loss_scale),
        (19, Some(2f32.powi(40 - 19))),
        "{first:?}"
    );
    // Epoch 2: near the edge one more step overflows (the scaler doing its job), and training
    // goes on: 74.84 % on the 10,000 test images after 2 epochs of 2,000 images.
    let second = &reports[1];
    assert_eq!(
        (second.skipped_steps, second.loss_scale),
        (1, Some(2f32.powi(20))),
        "{second:?}"
    );
    assert_eq!(
        format!("{:.2}", second.test.accuracy()),
        "74.84",
        "{second:?}"
    );
}

#[test]
fn cli_f16_runs_resumes_exactly_and_names_adapters_without_f16() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let base = [
        "--cpu",
        "--precision",
        "f16",
        "--limit",
        "640",
        "--epochs",
        "2",
        "--keep",
        "100",
    ];
    let (clean, resumed) = (d("clean"), d("resumed"));
    let mut a = base.to_vec();
    a.extend(["--snapshot-dir", &clean, "--snapshot-every", "3"]);
    let (code, out, err) = gpu_train(&a);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("f16: loss scale 65536"), "{out}");
    let snaps =
        gpu_train::snapshots::SnapshotDir::open(std::path::Path::new(&clean), 100).unwrap();
    let list = snaps.list().unwrap();
    let (want, _) = gpu_train::checkpoint::load(&list.last().unwrap().1).unwrap();
    let (_, mid) = gpu_train::checkpoint::load(&list[1].1).unwrap();
    assert!(mid.loss_scale.is_some() && mid.next.step != 0, "{mid:?}");
    drop(snaps);
    let mut a = base.to_vec();
    a.extend([
        "--snapshot-dir",
        &resumed,
        "--resume",
        list[1].1.to_str().unwrap(),
    ]);
    let (code, _, err) = gpu_train(&a);
    assert_eq!(code, 0, "{err}");
    let snaps =
        gpu_train::snapshots::SnapshotDir::open(std::path::Path::new(&resumed), 100).unwrap();
    let (got, _) = gpu_train::checkpoint::load(&snaps.latest().unwrap().unwrap()).unwrap();
    assert!(got == want, "an f16 run resumed mid-epoch ended elsewhere");
    // An adapter without f16 in shaders (GL llvmpipe, where present) is named, with the ways out.
    if let Some(gl) = gpu_train::gpu::context::adapters()
        .iter()
        .position(|a| !a.features().contains(wgpu::Features::SHADER_F16))
    {
        let (code, _, err) = gpu_train(&[
            "--device",
            &gl.to_string(),
            "--precision",
            "f16",
            "--epochs",
            "1",
            "--limit",
            "64",
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains("does not offer f16") && err.contains("--precision f32"),
            "{err}"
        );
    }
}

#[test]
fn f16_gradients_on_the_wire_halve_the_bytes() {
    let run = |dtype: &str| {
        let (code, out, err) = gpu_train(&[
            "--cpu",
            "--replicas",
            "2",
            "--limit",
            "1280",
            "--epochs",
            "2",
            "--grad-dtype",
            dtype,
        ]);
        assert_eq!(code, 0, "{err}");
        // The last epoch's line and the detail lines under it (indented).
        let lines: Vec<&str> = out.lines().collect();
        let at = lines.iter().rposition(|l| l.starts_with("epoch")).unwrap();
        let line = lines[at..]
            .iter()
            .enumerate()
            .take_while(|(i, l)| *i == 0 || l.starts_with("  "))
            .map(|(_, l)| *l)
            .collect::<Vec<_>>()
            .join(" ");
        let mb: f64 = line
            .split("ring payload ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let acc: f64 = line
            .split("acc ")
            .nth(2)
            .unwrap()
            .trim_start()
            .split('%')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        (mb, acc)
    };
    let ((mb32, acc32), (mb16, acc16)) = (run("f32"), run("f16"));
    assert!(
        (mb16 * 2.0 - mb32).abs() <= 0.1,
        "{mb16} MB against {mb32} MB"
    );
    assert!((acc16 - acc32).abs() <= 1.0, "{acc16} % against {acc32} %");
}

#[test]
fn cli_trains_in_f16_on_the_gpu() {
    if gpu_f16("cli_trains_in_f16_on_the_gpu").is_none() {
        return;
    }
    let (code, out, err) = gpu_train(&["--precision", "f16", "--limit", "256", "--epochs", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mixed precision") && out.contains("f16: loss scale"),
        "{out}"
    );
}
